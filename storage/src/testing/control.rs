//! [`FaultFs`]'s controls: creating one, the crash button, arming faults, the
//! counters that tell how many steps a run takes, and direct access to file bytes.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{arm, create_dirs, err, split, to_usize, FaultFs, Faults, Inode, State};
#[cfg(doc)]
use crate::fs::{FileSystem, WritableFile};

impl FaultFs {
    /// An empty file system holding only the directories `.` and `/`, with no
    /// faults armed and no space limit.
    pub fn new() -> Self {
        FaultFs {
            inner: Arc::new(Mutex::new(State::new())),
        }
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
