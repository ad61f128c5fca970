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
//! and are never removed.
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

use crate::fs::{parent, DirLock, FileSystem, Mapped, WritableFile};

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

    fn crash(&mut self) {
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
    /// An empty file system holding only the directories `.` and `/`, with no
    /// faults armed and no space limit.
    pub fn new() -> Self {
        FaultFs {
            inner: Arc::new(Mutex::new(State::new())),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }

    /// Simulates power loss (see the [module documentation](self)): only
    /// durable directory entries and durable bytes remain, locks are released
    /// and every handle from before the crash is dead. Armed faults, the space
    /// limit and the counters are kept.
    pub fn crash(&self) {
        self.state().crash();
    }

    /// Makes the `n`-th [`WritableFile::write_all`] from now (1-based, counted
    /// over all live handles) fail once with `EIO`, writing nothing unless
    /// [torn writes](Self::set_torn_writes) are on. Replaces a previously
    /// armed write fault; `n == 0` disarms it.
    pub fn fail_nth_write(&self, n: u64) {
        let mut st = self.state();
        let count = st.counts.writes;
        arm(&mut st.faults.write_at, count, n);
    }

    /// Makes the `n`-th sync from now fail once with `EIO`, making nothing
    /// durable. File syncs ([`WritableFile::sync`]) and directory syncs
    /// ([`FileSystem::sync_dir`]) share one counter, so a test can fail "every
    /// fsync in turn" with one loop. `n == 0` disarms.
    pub fn fail_nth_sync(&self, n: u64) {
        let mut st = self.state();
        let count = st.counts.syncs;
        arm(&mut st.faults.sync_at, count, n);
    }

    /// Makes the `n`-th [`FileSystem::rename`] from now fail once with `EIO`,
    /// renaming nothing. `n == 0` disarms.
    pub fn fail_nth_rename(&self, n: u64) {
        let mut st = self.state();
        let count = st.counts.renames;
        arm(&mut st.faults.rename_at, count, n);
    }

    /// Makes the `n`-th [`FileSystem::create`] from now fail once with `EIO`,
    /// creating nothing. `n == 0` disarms.
    pub fn fail_nth_create(&self, n: u64) {
        let mut st = self.state();
        let count = st.counts.creates;
        arm(&mut st.faults.create_at, count, n);
    }

    /// When on, a write failed by [`fail_nth_write`](Self::fail_nth_write)
    /// first appends the first half of its buffer (as much as the space limit
    /// allows), modelling a write torn by a failing disk; and a write past the
    /// space limit appends as much as fits before failing with `ENOSPC`.
    pub fn set_torn_writes(&self, torn: bool) {
        self.state().faults.torn_writes = torn;
    }

    /// Caps the total bytes of all live files (see
    /// [`total_bytes`](Self::total_bytes)); a write or growing truncate that
    /// would exceed it fails with `ENOSPC` and changes nothing. Removing files
    /// frees space. `None` removes the cap. Lowering the cap below the current
    /// usage is allowed: only later growth fails.
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.state().faults.space_limit = limit;
    }

    /// Disarms every pending `fail_nth_*` fault, turns torn writes off and
    /// removes the space limit.
    pub fn clear_faults(&self) {
        self.state().faults = Faults::default();
    }

    /// Number of [`WritableFile::write_all`] calls on live handles so far,
    /// including failed ones.
    pub fn writes(&self) -> u64 {
        self.state().counts.writes
    }

    /// Number of syncs so far, file and directory together, including failed
    /// ones (the counter [`fail_nth_sync`](Self::fail_nth_sync) uses).
    pub fn syncs(&self) -> u64 {
        self.state().counts.syncs
    }

    /// Number of [`FileSystem::rename`] calls so far, including failed ones.
    pub fn renames(&self) -> u64 {
        self.state().counts.renames
    }

    /// Number of [`FileSystem::create`] calls so far, including failed ones.
    pub fn creates(&self) -> u64 {
        self.state().counts.creates
    }

    /// Bytes of all live files: those named by a directory now, plus removed
    /// files still held open. This is what the space limit caps.
    pub fn total_bytes(&self) -> u64 {
        self.state().used()
    }

    /// Bytes written to live files since their last sync (the sum over files
    /// of how much longer the data is than its durable copy). This ignores
    /// directory entries: a fully synced file can still vanish on a crash if
    /// its directory was not synced.
    pub fn unsynced_bytes(&self) -> u64 {
        self.state()
            .inodes
            .values()
            .filter(|i| i.live())
            .map(|i| i.data.len().saturating_sub(i.durable.len()) as u64)
            .sum()
    }

    /// XORs the byte at `offset` of the file at `path` with `xor_mask`, in both
    /// the current and the durable copy (where the durable copy is that long),
    /// so the damage survives a crash: for checksum and recovery tests.
    ///
    /// Fails with `NotFound` if there is no such file and `InvalidInput` if
    /// `offset` is past its end.
    pub fn corrupt(&self, path: &Path, offset: u64, xor_mask: u8) -> io::Result<()> {
        let mut st = self.state();
        let ino = st.file(path)?;
        let at = to_usize(offset, path)?;
        let inode = st.inode_mut(ino, path)?;
        let Some(b) = inode.data.get_mut(at) else {
            return Err(err(
                io::ErrorKind::InvalidInput,
                path,
                "offset past end of file",
            ));
        };
        *b ^= xor_mask;
        if let Some(b) = inode.durable.get_mut(at) {
            *b ^= xor_mask;
        }
        Ok(())
    }

    /// Plants a file holding `bytes` at `path`, fully durable (bytes and
    /// directory entry), creating its directories; replaces any existing file.
    /// For setting up fixtures and old-format files. Ignores the space limit
    /// and counts nothing.
    pub fn set_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut st = self.state();
        if st.dirs.contains_key(path) {
            return Err(err(io::ErrorKind::IsADirectory, path, "is a directory"));
        }
        create_dirs(&mut st, dir)?;
        let ino = st.new_inode(Inode {
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            links: 0,
            open: 0,
        });
        st.link(dir, name, ino);
        if let Some(d) = st.dirs.get_mut(dir) {
            d.durable.insert(name.to_owned(), ino);
        }
        st.gc();
        Ok(())
    }

    /// The current contents of the file at `path`, or `None` if no file is
    /// there.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        let ino = st.lookup(path)?;
        st.inodes.get(&ino).map(|i| i.data.clone())
    }

    /// What [`file`](Self::file) would return after a [`crash`](Self::crash)
    /// now: the durable contents of the inode the durable entry for `path`
    /// names, or `None` if no durable entry does.
    pub fn durable_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state();
        let (dir, name) = split(path).ok()?;
        let ino = st.dirs.get(dir)?.durable.get(name)?;
        st.inodes.get(ino).map(|i| i.durable.clone())
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

/// A [`WritableFile`] appending to one inode of a [`FaultFs`].
struct FaultFile {
    inner: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
    path: PathBuf,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl FaultFile {
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock_state(&self.inner);
        if st.generation == self.generation {
            Ok(st)
        } else {
            Err(dead_handle())
        }
    }
}

impl WritableFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.live_state()?;
        st.counts.writes += 1;
        let count = st.counts.writes;
        let failed = fire(&mut st.faults.write_at, count);
        let room = st.room();
        let room = room.map(|r| usize::try_from(r).unwrap_or(usize::MAX));
        if failed {
            if st.faults.torn_writes {
                let keep = room.map_or(buf.len() / 2, |r| r.min(buf.len() / 2));
                let inode = st.inode_mut(self.ino, &self.path)?;
                inode.data.extend_from_slice(&buf[..keep]);
            }
            return Err(eio());
        }
        if let Some(r) = room.filter(|r| buf.len() > *r) {
            if st.faults.torn_writes {
                let inode = st.inode_mut(self.ino, &self.path)?;
                inode.data.extend_from_slice(&buf[..r]);
            }
            return Err(enospc());
        }
        let inode = st.inode_mut(self.ino, &self.path)?;
        inode.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut st = self.live_state()?;
        st.counts.syncs += 1;
        let count = st.counts.syncs;
        if fire(&mut st.faults.sync_at, count) {
            return Err(eio());
        }
        let inode = st.inode_mut(self.ino, &self.path)?;
        inode.durable = inode.data.clone();
        Ok(())
    }
}

impl Drop for FaultFile {
    fn drop(&mut self) {
        let mut st = lock_state(&self.inner);
        if st.generation == self.generation {
            if let Some(i) = st.inodes.get_mut(&self.ino) {
                i.open = i.open.saturating_sub(1);
            }
        }
    }
}

/// A held [`FaultFs`] lock; releases it on drop unless a crash already did.
struct FaultLock {
    inner: Arc<Mutex<State>>,
    path: PathBuf,
    token: u64,
    generation: u64,
}

impl fmt::Debug for FaultLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLock")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DirLock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut st = lock_state(&self.inner);
        // The token alone would do; the generation check states the intent.
        if st.generation == self.generation && st.locks.get(&self.path) == Some(&self.token) {
            st.locks.remove(&self.path);
        }
    }
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        create_dirs(&mut self.state(), path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut st = self.state();
        st.counts.creates += 1;
        let count = st.counts.creates;
        if fire(&mut st.faults.create_at, count) {
            return Err(eio());
        }
        let (dir, name) = split(path)?;
        st.check_dir(dir)?;
        if st.lookup(path).is_some() || st.dirs.contains_key(path) {
            return Err(err(io::ErrorKind::AlreadyExists, path, "already exists"));
        }
        let ino = st.new_inode(Inode {
            open: 1,
            ..Inode::default()
        });
        st.link(dir, name, ino);
        Ok(Box::new(FaultFile {
            inner: Arc::clone(&self.inner),
            ino,
            generation: st.generation,
            path: path.to_path_buf(),
        }))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut st = self.state();
        let ino = st.file(path)?;
        st.inode_mut(ino, path)?.open += 1;
        Ok(Box::new(FaultFile {
            inner: Arc::clone(&self.inner),
            ino,
            generation: st.generation,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state();
        let ino = st.file(path)?;
        Ok(st.inode(ino, path)?.data.clone())
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        Ok(Arc::new(self.read(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.counts.renames += 1;
        let count = st.counts.renames;
        if fire(&mut st.faults.rename_at, count) {
            return Err(eio());
        }
        if st.dirs.contains_key(from) {
            return Err(err(
                io::ErrorKind::Unsupported,
                from,
                "FaultFs renames files only",
            ));
        }
        let ino = st.file(from)?;
        let (to_dir, to_name) = split(to)?;
        st.check_dir(to_dir)?;
        if st.dirs.contains_key(to) {
            return Err(err(io::ErrorKind::IsADirectory, to, "is a directory"));
        }
        if from == to {
            return Ok(());
        }
        let (from_dir, from_name) = split(from)?;
        st.unlink(from_dir, from_name);
        st.link(to_dir, to_name, ino);
        st.gc();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.file(path)?;
        let (dir, name) = split(path)?;
        st.unlink(dir, name);
        st.gc();
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.state();
        let ino = st.file(path)?;
        let len = to_usize(len, path)?;
        let room = st.room();
        let inode = st.inode_mut(ino, path)?;
        let growth = len.saturating_sub(inode.data.len()) as u64;
        if room.is_some_and(|r| growth > r) {
            return Err(enospc());
        }
        inode.data.resize(len, 0);
        inode.durable.truncate(len);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.counts.syncs += 1;
        let count = st.counts.syncs;
        if fire(&mut st.faults.sync_at, count) {
            return Err(eio());
        }
        st.check_dir(path)?;
        if let Some(d) = st.dirs.get_mut(path) {
            d.durable = d.current.clone();
        }
        st.gc();
        Ok(())
    }

    /// Entry names in a deterministic order that is deliberately *descending*,
    /// so code that forgets to sort (the trait promises no order) fails in tests.
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.state();
        st.check_dir(path)?;
        let subdirs = st
            .dirs
            .keys()
            .filter(|d| d.as_path() != path && parent(d) == path)
            .filter_map(|d| d.file_name());
        let files = st
            .dirs
            .get(path)
            .into_iter()
            .flat_map(|d| d.current.keys())
            .map(OsString::as_os_str);
        let mut names: Vec<String> = subdirs
            .chain(files)
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state();
        st.lookup(path).is_some() || st.dirs.contains_key(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let st = self.state();
        let ino = st.file(path)?;
        Ok(st.inode(ino, path)?.data.len() as u64)
    }

    /// Locks are per path. Like [`crate::fs::OsFs`], creates an empty file at
    /// `path` if missing (in the current directory map only).
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut st = self.state();
        let (dir, name) = split(path)?;
        st.check_dir(dir)?;
        if st.dirs.contains_key(path) {
            return Err(err(io::ErrorKind::IsADirectory, path, "is a directory"));
        }
        if st.lookup(path).is_none() {
            let ino = st.new_inode(Inode::default());
            st.link(dir, name, ino);
        }
        if st.locks.contains_key(path) {
            return Err(err(io::ErrorKind::WouldBlock, path, "already locked"));
        }
        let token = st.next_lock;
        st.next_lock += 1;
        st.locks.insert(path.to_path_buf(), token);
        Ok(Box::new(FaultLock {
            inner: Arc::clone(&self.inner),
            path: path.to_path_buf(),
            token,
            generation: st.generation,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fs::{tmp_path, write_atomic};

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// A fresh file system with directory `db`.
    fn fs_with_db() -> FaultFs {
        let fs = FaultFs::new();
        fs.create_dir_all(p("db")).unwrap();
        fs
    }

    fn is_eio(e: &io::Error) -> bool {
        e.raw_os_error() == Some(EIO)
    }

    fn is_enospc(e: &io::Error) -> bool {
        e.raw_os_error() == Some(ENOSPC)
    }

    #[test]
    fn unsynced_bytes_are_lost_on_crash() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/wal")).unwrap();
        fs.sync_dir(p("db")).unwrap();
        f.write_all(b"hello ").unwrap();
        f.sync().unwrap();
        f.write_all(b"world").unwrap();
        assert_eq!(fs.unsynced_bytes(), 5);
        assert_eq!(fs.read(p("db/wal")).unwrap(), b"hello world");
        fs.crash();
        assert_eq!(fs.read(p("db/wal")).unwrap(), b"hello ");
        assert_eq!(fs.unsynced_bytes(), 0);
        assert_eq!(fs.total_bytes(), 6);
    }

    #[test]
    fn synced_bytes_survive_crash_and_appends_continue() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/wal")).unwrap();
        f.write_all(b"abc").unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("db")).unwrap();
        drop(f);
        fs.crash();
        assert_eq!(fs.file(p("db/wal")).unwrap(), b"abc");
        let mut f = fs.append(p("db/wal")).unwrap();
        f.write_all(b"def").unwrap();
        f.sync().unwrap();
        fs.crash();
        assert_eq!(fs.read(p("db/wal")).unwrap(), b"abcdef");
        assert_eq!(fs.len(p("db/wal")).unwrap(), 6);
    }

    #[test]
    fn synced_file_vanishes_if_its_directory_was_not_synced() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/seg")).unwrap();
        f.write_all(b"data").unwrap();
        f.sync().unwrap();
        assert_eq!(fs.unsynced_bytes(), 0);
        assert!(fs.durable_file(p("db/seg")).is_none());
        fs.crash();
        assert!(!fs.exists(p("db/seg")));
        assert_eq!(fs.list(p("db")).unwrap(), Vec::<String>::new());
        assert_eq!(fs.total_bytes(), 0);
    }

    #[test]
    fn synced_directory_entry_with_unsynced_data_leaves_an_empty_file() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/seg")).unwrap();
        f.write_all(b"data").unwrap();
        fs.sync_dir(p("db")).unwrap();
        fs.crash();
        assert_eq!(fs.file(p("db/seg")).unwrap(), b"");
    }

    #[test]
    fn rename_is_not_durable_until_sync_dir() {
        let fs = fs_with_db();
        fs.set_file(p("db/cur"), b"old").unwrap();
        fs.set_file(p("db/new"), b"new").unwrap();
        fs.rename(p("db/new"), p("db/cur")).unwrap();
        assert_eq!(fs.file(p("db/cur")).unwrap(), b"new");
        assert!(!fs.exists(p("db/new")));
        assert_eq!(fs.total_bytes(), 3, "the replaced file's space is freed");
        fs.crash();
        assert_eq!(fs.file(p("db/cur")).unwrap(), b"old");
        assert_eq!(fs.file(p("db/new")).unwrap(), b"new");

        fs.rename(p("db/new"), p("db/cur")).unwrap();
        fs.sync_dir(p("db")).unwrap();
        fs.crash();
        assert_eq!(fs.file(p("db/cur")).unwrap(), b"new");
        assert!(!fs.exists(p("db/new")));
        assert_eq!(fs.renames(), 2);
    }

    #[test]
    fn rename_across_directories_needs_both_synced() {
        let fs = FaultFs::new();
        fs.create_dir_all(p("a")).unwrap();
        fs.create_dir_all(p("b")).unwrap();
        fs.set_file(p("a/f"), b"x").unwrap();
        fs.rename(p("a/f"), p("b/g")).unwrap();
        assert_eq!(fs.list(p("a")).unwrap(), Vec::<String>::new());
        assert_eq!(fs.list(p("b")).unwrap(), vec!["g"]);
        fs.sync_dir(p("b")).unwrap();
        fs.crash();
        // Only the target directory was synced: the file now has two names.
        assert_eq!(fs.file(p("a/f")).unwrap(), b"x");
        assert_eq!(fs.file(p("b/g")).unwrap(), b"x");
        assert!(fs.rename(p("a/f"), p("missing/g")).is_err());
    }

    #[test]
    fn removal_is_not_durable_until_sync_dir() {
        let fs = fs_with_db();
        fs.set_file(p("db/f"), b"12345").unwrap();
        fs.remove_file(p("db/f")).unwrap();
        assert!(!fs.exists(p("db/f")));
        assert_eq!(fs.total_bytes(), 0);
        fs.crash();
        assert_eq!(fs.file(p("db/f")).unwrap(), b"12345");
        fs.remove_file(p("db/f")).unwrap();
        fs.sync_dir(p("db")).unwrap();
        fs.crash();
        assert!(!fs.exists(p("db/f")));
        assert_eq!(
            fs.remove_file(p("db/f")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn nth_write_fails_exactly_once() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/f")).unwrap();
        f.write_all(b"0").unwrap();
        fs.fail_nth_write(3);
        f.write_all(b"1").unwrap();
        f.write_all(b"2").unwrap();
        assert!(is_eio(&f.write_all(b"3").unwrap_err()));
        f.write_all(b"4").unwrap();
        f.write_all(b"5").unwrap();
        assert_eq!(fs.file(p("db/f")).unwrap(), b"01245");
        assert_eq!(fs.writes(), 6);
    }

    #[test]
    fn torn_write_applies_half_the_buffer() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/f")).unwrap();
        fs.set_torn_writes(true);
        fs.fail_nth_write(1);
        assert!(f.write_all(b"abcdefgh").is_err());
        assert_eq!(fs.file(p("db/f")).unwrap(), b"abcd");
        f.write_all(b"!").unwrap();
        assert_eq!(fs.file(p("db/f")).unwrap(), b"abcd!");
    }

    #[test]
    fn nth_sync_fails_exactly_once_counting_file_and_dir_syncs() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/f")).unwrap();
        f.write_all(b"a").unwrap();
        fs.fail_nth_sync(3);
        f.sync().unwrap(); // 1
        fs.sync_dir(p("db")).unwrap(); // 2
        f.write_all(b"b").unwrap();
        assert!(is_eio(&f.sync().unwrap_err())); // 3: nothing made durable
        assert_eq!(fs.durable_file(p("db/f")).unwrap(), b"a");
        assert_eq!(fs.unsynced_bytes(), 1);
        f.sync().unwrap(); // 4
        assert_eq!(fs.durable_file(p("db/f")).unwrap(), b"ab");

        fs.fail_nth_sync(1);
        let mut g = fs.create(p("db/g")).unwrap();
        assert!(is_eio(&g.sync().unwrap_err())); // 5
        fs.fail_nth_sync(2);
        g.sync().unwrap(); // 6
        assert!(is_eio(&fs.sync_dir(p("db")).unwrap_err())); // 7
        fs.sync_dir(p("db")).unwrap(); // 8
        assert_eq!(fs.syncs(), 8);
    }

    #[test]
    fn nth_rename_and_nth_create_fail_exactly_once() {
        let fs = fs_with_db();
        fs.fail_nth_create(2);
        fs.create(p("db/a")).unwrap();
        assert!(is_eio(&fs.create(p("db/b")).unwrap_err()));
        assert!(!fs.exists(p("db/b")));
        fs.create(p("db/b")).unwrap();
        assert_eq!(fs.creates(), 3);

        fs.fail_nth_rename(2);
        fs.rename(p("db/a"), p("db/c")).unwrap();
        assert!(is_eio(&fs.rename(p("db/b"), p("db/d")).unwrap_err()));
        assert!(fs.exists(p("db/b")) && !fs.exists(p("db/d")));
        fs.rename(p("db/b"), p("db/d")).unwrap();
        assert_eq!(fs.renames(), 3);
    }

    #[test]
    fn zero_or_clear_faults_disarms() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/f")).unwrap();
        fs.fail_nth_write(1);
        fs.fail_nth_write(0);
        f.write_all(b"x").unwrap();
        fs.fail_nth_write(1);
        fs.fail_nth_sync(1);
        fs.set_space_limit(Some(0));
        fs.clear_faults();
        f.write_all(b"x").unwrap();
        f.sync().unwrap();
    }

    #[test]
    fn enospc_at_the_limit_and_recovery_after_removal() {
        let fs = fs_with_db();
        fs.set_space_limit(Some(10));
        let mut a = fs.create(p("db/a")).unwrap();
        a.write_all(&[1; 6]).unwrap();
        assert!(is_enospc(&a.write_all(&[2; 5]).unwrap_err()));
        assert_eq!(
            fs.len(p("db/a")).unwrap(),
            6,
            "a failed write writes nothing"
        );
        a.write_all(&[3; 4]).unwrap();
        assert_eq!(fs.total_bytes(), 10);
        let mut b = fs.create(p("db/b")).unwrap();
        assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
        b.write_all(b"").unwrap();

        // An open handle keeps a removed file's space, as on POSIX.
        fs.remove_file(p("db/a")).unwrap();
        assert_eq!(fs.total_bytes(), 10);
        assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
        drop(a);
        assert_eq!(fs.total_bytes(), 0);
        b.write_all(&[4; 10]).unwrap();
        assert!(is_enospc(&b.write_all(b"z").unwrap_err()));
        assert!(is_enospc(&fs.truncate(p("db/b"), 11).unwrap_err()));
        fs.set_space_limit(None);
        b.write_all(b"z").unwrap();
        assert_eq!(fs.total_bytes(), 11);
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let fs = fs_with_db();
        let l = fs.lock(p("db/LOCK")).unwrap();
        assert!(fs.exists(p("db/LOCK")));
        assert_eq!(
            fs.lock(p("db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let other = fs.lock(p("db/OTHER")).unwrap();
        drop(l);
        let _l2 = fs.lock(p("db/LOCK")).unwrap();
        drop(other);
        assert_eq!(
            fs.lock(p("db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(
            fs.lock(p("nodir/LOCK")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn crash_releases_locks_and_old_guards_release_nothing() {
        let fs = fs_with_db();
        let old = fs.lock(p("db/LOCK")).unwrap();
        fs.crash();
        let new = fs.lock(p("db/LOCK")).unwrap();
        drop(old);
        assert_eq!(
            fs.lock(p("db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(new);
        fs.lock(p("db/LOCK")).unwrap();
    }

    #[test]
    fn handles_from_before_a_crash_are_dead() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/f")).unwrap();
        f.write_all(b"kept").unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("db")).unwrap();
        fs.crash();
        let (writes, syncs) = (fs.writes(), fs.syncs());
        let e = f.write_all(b"lost").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(e.to_string(), "handle from before crash");
        assert_eq!(f.sync().unwrap_err().kind(), io::ErrorKind::Other);
        assert_eq!(fs.file(p("db/f")).unwrap(), b"kept");
        assert_eq!((fs.writes(), fs.syncs()), (writes, syncs));
        let mut g = fs.append(p("db/f")).unwrap();
        drop(f); // must not disturb the new handle's bookkeeping
        g.write_all(b"!").unwrap();
        fs.remove_file(p("db/f")).unwrap();
        assert_eq!(fs.total_bytes(), 5, "g still holds the inode open");
    }

    /// Runs `write_atomic` of `new` over a durable `old`, with `arm` injecting
    /// one fault, then crashes; the target must hold old or new, whole.
    fn atomic_write_then_crash(arm: impl Fn(&FaultFs), torn: bool) -> (bool, Vec<u8>) {
        let (old, new) = (b"old contents".to_vec(), b"brand new contents".to_vec());
        let target = p("db/MANIFEST");
        let fs = fs_with_db();
        fs.set_file(target, &old).unwrap();
        fs.set_torn_writes(torn);
        arm(&fs);
        let ok = write_atomic(&fs, target, &new).is_ok();
        fs.crash();
        let got = fs.file(target).unwrap();
        assert!(got == old || got == new, "torn target: {got:?}");
        // The engine can always publish again after the crash.
        fs.clear_faults();
        write_atomic(&fs, target, &new).unwrap();
        fs.crash();
        assert_eq!(fs.file(target).unwrap(), new);
        assert!(!fs.exists(&tmp_path(target)));
        (ok, got)
    }

    #[test]
    fn write_atomic_survives_a_crash_at_every_step() {
        // A clean run: one create, write, rename; two syncs (file, directory).
        let fs = fs_with_db();
        write_atomic(&fs, p("db/x"), b"v").unwrap();
        assert_eq!(
            (fs.creates(), fs.writes(), fs.renames(), fs.syncs()),
            (1, 1, 1, 2)
        );

        let new = b"brand new contents".to_vec();
        let old = b"old contents".to_vec();
        for torn in [false, true] {
            let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_create(1), torn);
            assert!(!ok && got == old);
            let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_write(1), torn);
            assert!(!ok && got == old);
            let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_sync(1), torn);
            assert!(!ok && got == old);
            let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_rename(1), torn);
            assert!(!ok && got == old);
            // The directory sync failed: the rename is not durable.
            let (ok, got) = atomic_write_then_crash(|fs| fs.fail_nth_sync(2), torn);
            assert!(!ok && got == old);
            let (ok, got) = atomic_write_then_crash(|_| (), torn);
            assert!(ok && got == new);
            // Out of space while writing the temporary file.
            let (ok, got) = atomic_write_then_crash(|fs| fs.set_space_limit(Some(15)), torn);
            assert!(!ok && got == old);
        }
    }

    #[test]
    fn write_atomic_replaces_a_durable_leftover_tmp() {
        let fs = fs_with_db();
        let target = p("db/MANIFEST");
        fs.set_file(target, b"old").unwrap();
        fs.set_file(&tmp_path(target), b"half-writ").unwrap();
        fs.fail_nth_create(1);
        write_atomic(&fs, target, b"new").unwrap_err();
        fs.crash();
        // The removal of the leftover was not durable: it is back, harmlessly.
        assert_eq!(fs.file(&tmp_path(target)).unwrap(), b"half-writ");
        assert_eq!(fs.file(target).unwrap(), b"old");
        write_atomic(&fs, target, b"new").unwrap();
        fs.crash();
        assert_eq!(fs.file(target).unwrap(), b"new");
        assert!(!fs.exists(&tmp_path(target)));
    }

    #[test]
    fn truncate_shortens_both_copies_but_syncs_nothing_new() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/wal")).unwrap();
        fs.sync_dir(p("db")).unwrap();
        f.write_all(b"0123456789").unwrap();
        f.sync().unwrap();
        f.write_all(b"abc").unwrap();
        fs.truncate(p("db/wal"), 12).unwrap();
        assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123456789ab");
        assert_eq!(fs.durable_file(p("db/wal")).unwrap(), b"0123456789");
        fs.truncate(p("db/wal"), 4).unwrap();
        assert_eq!(fs.durable_file(p("db/wal")).unwrap(), b"0123");
        fs.truncate(p("db/wal"), 6).unwrap();
        assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123\0\0");
        fs.crash();
        assert_eq!(fs.file(p("db/wal")).unwrap(), b"0123");
    }

    #[test]
    fn corrupt_flips_bits_in_both_copies() {
        let fs = fs_with_db();
        fs.set_file(p("db/seg"), &[0u8; 4]).unwrap();
        fs.corrupt(p("db/seg"), 2, 0x81).unwrap();
        assert_eq!(fs.file(p("db/seg")).unwrap(), [0, 0, 0x81, 0]);
        fs.crash();
        assert_eq!(fs.file(p("db/seg")).unwrap(), [0, 0, 0x81, 0]);
        assert_eq!(
            fs.corrupt(p("db/seg"), 4, 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            fs.corrupt(p("db/nope"), 0, 1).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn set_file_plants_durably_and_creates_directories() {
        let fs = FaultFs::new();
        fs.set_file(p("/data/db/v1/seg-0"), b"fixture").unwrap();
        fs.crash();
        assert_eq!(fs.file(p("/data/db/v1/seg-0")).unwrap(), b"fixture");
        assert!(fs.exists(p("/data/db/v1")));
        fs.set_file(p("/data/db/v1/seg-0"), b"other").unwrap();
        fs.crash();
        assert_eq!(fs.read(p("/data/db/v1/seg-0")).unwrap(), b"other");
        assert_eq!(fs.total_bytes(), 5);
        assert!(fs.set_file(p("/data/db"), b"x").is_err());
        assert!(fs.file(p("/data/db")).is_none());
    }

    #[test]
    fn namespace_errors_and_listing() {
        let fs = FaultFs::new();
        assert_eq!(
            fs.create(p("db/f")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.create_dir_all(p("db/sub/deeper")).unwrap();
        fs.create(p("db/f")).unwrap();
        fs.create(p("db/g")).unwrap();
        assert_eq!(
            fs.create(p("db/f")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            fs.create(p("db/sub")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            fs.create(p("db/f/x")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            fs.create_dir_all(p("db/f")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            fs.read(p("db/h")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.len(p("db/h")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.append(p("db/h")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.list(p("nodir")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.read(p("db/sub")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(fs.list(p("db")).unwrap(), vec!["sub", "g", "f"]);
        assert_eq!(fs.list(p(".")).unwrap(), vec!["db"]);
        assert!(fs.exists(p("db/sub/deeper")) && fs.exists(p("db/f")));
        assert!(fs.exists(p("db//f")), "paths compare as Path does");
        // Directories are durable; unsynced entries are not.
        fs.crash();
        assert_eq!(fs.list(p("db")).unwrap(), vec!["sub"]);
        // A bare name lives in `.`.
        fs.create(p("top")).unwrap();
        assert_eq!(fs.list(p(".")).unwrap(), vec!["top", "db"]);
    }

    #[test]
    fn a_new_directory_shadows_a_removed_durable_file_of_its_name() {
        let fs = fs_with_db();
        fs.set_file(p("db/x"), b"file").unwrap();
        fs.remove_file(p("db/x")).unwrap();
        fs.create_dir_all(p("db/x")).unwrap();
        fs.crash();
        assert!(fs.file(p("db/x")).is_none());
        assert_eq!(fs.list(p("db")).unwrap(), vec!["x"]);
        assert_eq!(fs.list(p("db/x")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn map_is_a_snapshot() {
        let fs = fs_with_db();
        let mut f = fs.create(p("db/seg")).unwrap();
        f.write_all(b"abc").unwrap();
        let m = fs.map(p("db/seg")).unwrap();
        f.write_all(b"def").unwrap();
        assert_eq!((*m).as_ref(), b"abc");
        assert_eq!(fs.map(p("db/seg")).unwrap().as_ref().as_ref(), b"abcdef");
    }

    #[test]
    fn clones_share_state_through_dyn_file_system() {
        let fs = fs_with_db();
        let engine: Arc<dyn FileSystem> = Arc::new(fs.clone());
        let mut f = engine.create(p("db/f")).unwrap();
        fs.fail_nth_write(1);
        assert!(f.write_all(b"x").is_err());
        f.write_all(b"y").unwrap();
        assert_eq!(fs.file(p("db/f")).unwrap(), b"y");
        fs.crash();
        assert!(!engine.exists(p("db/f")));
        assert!(format!("{fs:?}").starts_with("FaultFs"));
        assert!(format!("{f:?}").contains("db/f"));
    }

    /// Random operation sequences: whatever `durable_file` reports just before
    /// a crash is exactly what the files hold after it.
    #[test]
    fn durable_view_predicts_crash_outcome() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let paths = ["a/0", "a/1", "a/2", "b/0", "b/1"];
        for _round in 0..200 {
            let fs = FaultFs::new();
            fs.create_dir_all(p("a")).unwrap();
            fs.create_dir_all(p("b")).unwrap();
            let mut handles: Vec<Box<dyn WritableFile>> = Vec::new();
            for _step in 0..60 {
                let path = p(paths[next(paths.len() as u64) as usize]);
                let other = p(paths[next(paths.len() as u64) as usize]);
                // Errors (missing files, dead handles) are part of the game.
                match next(9) {
                    0 => {
                        if let Ok(h) = fs.create(path) {
                            handles.push(h);
                        }
                    }
                    1 => {
                        if let Ok(h) = fs.append(path) {
                            handles.push(h);
                        }
                    }
                    2 | 3 if !handles.is_empty() => {
                        let i = next(handles.len() as u64) as usize;
                        let _ = handles[i].write_all(&[next(256) as u8; 3]);
                    }
                    4 if !handles.is_empty() => {
                        let i = next(handles.len() as u64) as usize;
                        let _ = handles[i].sync();
                    }
                    5 => {
                        let _ = fs.sync_dir(parent(path));
                    }
                    6 => {
                        let _ = fs.rename(path, other);
                    }
                    7 => {
                        let _ = fs.remove_file(path);
                    }
                    _ => {
                        let _ = fs.truncate(path, next(4));
                    }
                }
                if next(10) == 0 {
                    let before: Vec<_> = paths.iter().map(|q| fs.durable_file(p(q))).collect();
                    fs.crash();
                    let after: Vec<_> = paths.iter().map(|q| fs.file(p(q))).collect();
                    assert_eq!(before, after);
                    assert_eq!(fs.unsynced_bytes(), 0);
                    // At most: a crash can split a cross-directory rename,
                    // leaving one inode with two names.
                    let sum: u64 = after.iter().flatten().map(|v| v.len() as u64).sum();
                    assert!(fs.total_bytes() <= sum);
                }
            }
        }
    }
}
