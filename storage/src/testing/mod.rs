//! [`FaultFs`]: an in-memory [`FileSystem`] that can lose power, fail the Nth
//! operation and fill up, for the engine's crash and fault tests.
//!
//! # The model
//!
//! Every file is an *inode* holding two byte strings:
//!
//! - `data`, what reads see now;
//! - `durable`, what survives a crash.
//!
//! [`WritableFile::write_all`] appends to `data` only; [`WritableFile::sync`]
//! sets `durable = data` for that inode. [`FileSystem::truncate`] cuts `data`
//! to the new length and cuts `durable` to it as well, but does not make any
//! unsynced bytes durable (stricter than [`crate::fs::OsFs`], whose `sync_all`
//! happens to; the trait promises only the shortening).
//!
//! Every directory maps entry names to inodes, again twice: a *current* map
//! and a *durable* map. [`create`](FileSystem::create),
//! [`rename`](FileSystem::rename) (also across directories),
//! [`remove_file`](FileSystem::remove_file) and the file that
//! [`lock`](FileSystem::lock) creates change the current map only;
//! [`sync_dir`](FileSystem::sync_dir) copies that directory's current map to
//! its durable map. So a file is safe only once its bytes were synced *and*
//! the directory entry naming it was synced: a file created, written and
//! synced, whose directory was never synced, vanishes on a crash. Directories
//! themselves are created durably by [`create_dir_all`](FileSystem::create_dir_all)
//! and are never removed. A directory can be [renamed](FileSystem::rename) onto a
//! missing path or an empty directory (which it replaces), carrying everything
//! under it; the rename becomes durable once the parent directories of both
//! names are synced, and a crash before that undoes it.
//!
//! [`FaultFs::crash`] simulates power loss: every directory's current map
//! becomes its durable map, every inode's data becomes its durable bytes,
//! inodes no directory names any more disappear, every lock is released, and
//! every [`WritableFile`] and [`DirLock`] handed out before the crash is dead:
//! writes and syncs through it fail with [`io::ErrorKind::Other`] and change
//! nothing, and dropping it releases nothing. Tests then "restart" the engine on
//! the same `FaultFs` and check what it recovers.
//!
//! As on POSIX, a removed file that still has an open [`WritableFile`] keeps its
//! inode (and its space) until the handle is dropped.
//!
//! Paths are opaque keys compared as [`Path`] compares them (so `a//b` equals
//! `a/b`, but `./a` differs from `a`); a file's directory is
//! [`crate::fs::parent`]. The directories `.` and `/` always exist.
//!
//! # Faults
//!
//! Faults can be armed at any time through `&self`; a `FaultFs` is a cheap
//! [`Clone`] sharing one state, so a test keeps one handle while the engine
//! owns another as `Arc<dyn FileSystem>`:
//!
//! - [`fail_nth_write`](FaultFs::fail_nth_write),
//!   [`fail_nth_sync`](FaultFs::fail_nth_sync),
//!   [`fail_nth_rename`](FaultFs::fail_nth_rename) and
//!   [`fail_nth_create`](FaultFs::fail_nth_create) make the Nth such call from
//!   now fail once with `EIO`, having done nothing (but see
//!   [`set_torn_writes`](FaultFs::set_torn_writes));
//! - [`set_space_limit`](FaultFs::set_space_limit) caps the bytes of all live
//!   files; a write past it fails with `ENOSPC` and writes nothing (or, with torn
//!   writes on, as much as fits, as a real file system may).
//!
//! To stop an operation sequence "after each step", arm a fault at the step,
//! run the code, [`crash`](FaultFs::crash), and check what survived; the
//! counters ([`writes`](FaultFs::writes), [`syncs`](FaultFs::syncs), ...) tell
//! how many steps a clean run takes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::parent;
#[cfg(doc)]
use crate::fs::{DirLock, FileSystem, WritableFile};

/// `errno` for an I/O error, what injected faults return.
const EIO: i32 = 5;
/// `errno` for a full disk.
const ENOSPC: i32 = 28;

type Ino = u64;

/// One file's contents.
#[derive(Default)]
struct Inode {
    /// What reads see now.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Entries naming this inode in current directory maps: 0 or 1, except
    /// that a crash between the two halves of a cross-directory rename can
    /// leave a file with two names (as on a real disk).
    links: u32,
    /// Live [`FaultFile`] handles on this inode.
    open: u32,
}

impl Inode {
    /// True if the inode occupies space: named by a directory or held open.
    fn live(&self) -> bool {
        self.links > 0 || self.open > 0
    }
}

/// The file entries of one directory (subdirectories are the keys of
/// [`State::dirs`], and always durable).
#[derive(Default)]
struct Dir {
    current: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
}

/// An armed "fail the call numbered `at`" fault, against a call counter.
type Trigger = Option<u64>;

#[derive(Default)]
struct Faults {
    write_at: Trigger,
    sync_at: Trigger,
    rename_at: Trigger,
    create_at: Trigger,
    torn_writes: bool,
    space_limit: Option<u64>,
}

#[derive(Default)]
struct Counters {
    writes: u64,
    syncs: u64,
    renames: u64,
    creates: u64,
}

struct State {
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    next_ino: Ino,
    next_lock: u64,
    inodes: HashMap<Ino, Inode>,
    dirs: HashMap<PathBuf, Dir>,
    /// Held locks: path -> token of the guard holding it.
    locks: HashMap<PathBuf, u64>,
    faults: Faults,
    counts: Counters,
    /// Directory renames not yet durable, oldest first.
    dir_renames: Vec<DirRename>,
}

/// A directory rename a crash would undo: not yet followed by a sync of both
/// parent directories.
struct DirRename {
    from: PathBuf,
    to: PathBuf,
    /// The empty directory it replaced at `to`, restored by the undo.
    replaced: Option<Dir>,
    from_synced: bool,
    to_synced: bool,
}

/// `path` with its prefix `from` replaced by `to`.
fn rebase(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
        _ => to.to_path_buf(),
    }
}

fn lock_state(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding the lock, but a panicking test thread must
    // not take every other test assertion down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn err(kind: io::ErrorKind, path: &Path, what: &str) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

/// The error injected faults return: exactly `EIO`, so callers can match on
/// [`io::Error::raw_os_error`] as they would for a real failure.
fn eio() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

/// The error for a write past the space limit: exactly `ENOSPC`.
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(ENOSPC)
}

fn dead_handle() -> io::Error {
    io::Error::other("handle from before crash")
}

/// Arms `trigger` to fire on the `n`-th call after `count` calls; 0 disarms.
fn arm(trigger: &mut Trigger, count: u64, n: u64) {
    *trigger = if n == 0 {
        None
    } else {
        Some(count.saturating_add(n))
    };
}

/// Fires (and disarms) `trigger` if call number `count` is the armed one.
fn fire(trigger: &mut Trigger, count: u64) -> bool {
    if *trigger == Some(count) {
        *trigger = None;
        true
    } else {
        false
    }
}

/// Splits `path` into its directory and entry name.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match path.file_name() {
        Some(name) => Ok((parent(path), name)),
        None => Err(err(io::ErrorKind::InvalidInput, path, "not a file name")),
    }
}

fn to_usize(n: u64, path: &Path) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| err(io::ErrorKind::InvalidInput, path, "length too large"))
}

impl State {
    fn new() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(PathBuf::from("."), Dir::default());
        dirs.insert(PathBuf::from("/"), Dir::default());
        State {
            generation: 0,
            next_ino: 1,
            next_lock: 1,
            inodes: HashMap::new(),
            dirs,
            locks: HashMap::new(),
            faults: Faults::default(),
            counts: Counters::default(),
            dir_renames: Vec::new(),
        }
    }

    /// The inode a file path currently names, if any.
    fn lookup(&self, path: &Path) -> Option<Ino> {
        let (dir, name) = split(path).ok()?;
        self.dirs.get(dir)?.current.get(name).copied()
    }

    /// The inode of an existing file, or the error `std::fs` would give.
    fn file(&self, path: &Path) -> io::Result<Ino> {
        match self.lookup(path) {
            Some(ino) => Ok(ino),
            None if self.dirs.contains_key(path) => {
                Err(err(io::ErrorKind::IsADirectory, path, "is a directory"))
            }
            None => Err(err(io::ErrorKind::NotFound, path, "no such file")),
        }
    }

    fn inode(&self, ino: Ino, path: &Path) -> io::Result<&Inode> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| err(io::ErrorKind::Other, path, "FaultFs bug: dangling inode"))
    }

    fn inode_mut(&mut self, ino: Ino, path: &Path) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| err(io::ErrorKind::Other, path, "FaultFs bug: dangling inode"))
    }

    /// Succeeds if `dir` is an existing directory.
    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        if self.dirs.contains_key(dir) {
            Ok(())
        } else if self.lookup(dir).is_some() {
            Err(err(io::ErrorKind::NotADirectory, dir, "not a directory"))
        } else {
            Err(err(io::ErrorKind::NotFound, dir, "no such directory"))
        }
    }

    /// Points `dir/name` at `ino` in the current map, unlinking what it named.
    fn link(&mut self, dir: &Path, name: &OsStr, ino: Ino) {
        let Some(d) = self.dirs.get_mut(dir) else {
            return;
        };
        let old = d.current.insert(name.to_owned(), ino);
        if let Some(i) = old.and_then(|old| self.inodes.get_mut(&old)) {
            i.links = i.links.saturating_sub(1);
        }
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.links += 1;
        }
    }

    /// Removes `dir/name` from the current map.
    fn unlink(&mut self, dir: &Path, name: &OsStr) {
        let old = self.dirs.get_mut(dir).and_then(|d| d.current.remove(name));
        if let Some(i) = old.and_then(|old| self.inodes.get_mut(&old)) {
            i.links = i.links.saturating_sub(1);
        }
    }

    fn new_inode(&mut self, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    /// Forgets inodes nothing can reach any more: not named by a current or
    /// durable entry, not held open.
    fn gc(&mut self) {
        let durable: HashSet<Ino> = self
            .dirs
            .values()
            .flat_map(|d| d.durable.values().copied())
            .collect();
        self.inodes
            .retain(|ino, i| i.live() || durable.contains(ino));
    }

    /// Bytes of all live files.
    fn used(&self) -> u64 {
        self.inodes
            .values()
            .filter(|i| i.live())
            .map(|i| i.data.len() as u64)
            .sum()
    }

    /// Bytes that may still be written, or `None` without a limit.
    fn room(&self) -> Option<u64> {
        self.faults
            .space_limit
            .map(|limit| limit.saturating_sub(self.used()))
    }

    /// Renames the directory `from` (and everything under it) to `to`, which must
    /// be missing or an empty directory; see the module documentation.
    fn rename_dir(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if from == to {
            return Ok(());
        }
        if to.starts_with(from) {
            return Err(err(
                io::ErrorKind::InvalidInput,
                to,
                "cannot move a directory into itself",
            ));
        }
        self.check_dir(parent(to))?;
        if self.lookup(to).is_some() {
            return Err(err(
                io::ErrorKind::NotADirectory,
                to,
                "a file is in the way",
            ));
        }
        let replaced = match self.dirs.get(to) {
            None => None,
            Some(d) => {
                let has_subdirs = self.dirs.keys().any(|k| k != to && parent(k) == to);
                if !d.current.is_empty() || has_subdirs {
                    return Err(err(
                        io::ErrorKind::DirectoryNotEmpty,
                        to,
                        "directory not empty",
                    ));
                }
                self.dirs.remove(to)
            }
        };
        self.move_tree(from, to);
        self.dir_renames.push(DirRename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
            from_synced: false,
            to_synced: false,
        });
        Ok(())
    }

    /// Moves every directory at or under `from` (and the locks held there) to `to`.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        let keys: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in keys {
            if let Some(d) = self.dirs.remove(&k) {
                self.dirs.insert(rebase(&k, from, to), d);
            }
        }
        let locks: Vec<PathBuf> = self
            .locks
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in locks {
            if let Some(t) = self.locks.remove(&k) {
                self.locks.insert(rebase(&k, from, to), t);
            }
        }
    }

    /// Records that `dir` was synced: directory renames whose both parents are now
    /// synced become durable.
    fn synced_dir(&mut self, dir: &Path) {
        for r in &mut self.dir_renames {
            if parent(&r.from) == dir {
                r.from_synced = true;
            }
            if parent(&r.to) == dir {
                r.to_synced = true;
            }
        }
        self.dir_renames.retain(|r| !(r.from_synced && r.to_synced));
    }

    fn crash(&mut self) {
        // Undo the directory renames that were not durable, newest first.
        while let Some(r) = self.dir_renames.pop() {
            self.move_tree(&r.to, &r.from);
            if let Some(d) = r.replaced {
                self.dirs.insert(r.to, d);
            }
        }
        self.generation += 1;
        self.locks.clear();
        for d in self.dirs.values_mut() {
            d.current = d.durable.clone();
        }
        for i in self.inodes.values_mut() {
            i.data = i.durable.clone();
            i.links = 0;
            i.open = 0;
        }
        for d in self.dirs.values() {
            for ino in d.current.values() {
                if let Some(i) = self.inodes.get_mut(ino) {
                    i.links += 1;
                }
            }
        }
        self.inodes.retain(|_, i| i.links > 0);
    }
}

/// An in-memory [`FileSystem`] with a crash button and fault injection; see the
/// [module documentation](self) for the model.
///
/// Clones share one file system.
#[derive(Clone)]
pub struct FaultFs {
    inner: Arc<Mutex<State>>,
}

impl Default for FaultFs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FaultFs");
        match self.inner.try_lock() {
            Ok(st) => s
                .field("files", &st.inodes.values().filter(|i| i.links > 0).count())
                .field("dirs", &st.dirs.len())
                .field("total_bytes", &st.used())
                .field("crashes", &st.generation),
            Err(_) => s.field("state", &"<locked>"),
        };
        s.finish_non_exhaustive()
    }
}

impl FaultFs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }
}

/// Creates `path` and its ancestors as directories, durably.
fn create_dirs(st: &mut State, path: &Path) -> io::Result<()> {
    let ancestors: Vec<&Path> = path
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    for a in &ancestors {
        if !st.dirs.contains_key(*a) && st.lookup(a).is_some() {
            let kind = if *a == path {
                io::ErrorKind::AlreadyExists
            } else {
                io::ErrorKind::NotADirectory
            };
            return Err(err(kind, a, "a file is in the way"));
        }
    }
    // Root first, so each directory's parent exists when it is added.
    for a in ancestors.into_iter().rev() {
        if st.dirs.contains_key(a) {
            continue;
        }
        // The new directory's entry is durable at once, so it also replaces a
        // durable (but removed) file entry of the same name: a crash must not
        // bring that file back beside the directory.
        if let Some(name) = a.file_name() {
            if let Some(d) = st.dirs.get_mut(parent(a)) {
                d.durable.remove(name);
            }
        }
        st.dirs.insert(a.to_path_buf(), Dir::default());
    }
    st.gc();
    Ok(())
}

mod control;
mod file_system;
#[cfg(test)]
mod tests;
