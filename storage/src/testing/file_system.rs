//! [`FaultFs`] as a [`FileSystem`]: its file handles ([`WritableFile`]), its locks
//! ([`DirLock`]) and every trait operation on the in-memory model.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    create_dirs, dead_handle, eio, enospc, err, fire, lock_state, split, to_usize, FaultFs, Ino,
    Inode, State,
};
use crate::fs::{parent, DirLock, FileSystem, Mapped, WritableFile};

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
        // By token, not path: a directory rename may have moved the lock.
        if st.generation == self.generation {
            let token = self.token;
            st.locks.retain(|_, t| *t != token);
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
            return st.rename_dir(from, to);
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
        st.synced_dir(path);
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
