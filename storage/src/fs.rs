//! File access behind a small trait, so tests can lose unsynced bytes, fail the
//! Nth write or fsync, and fill the disk (see `testing::FaultFs`, feature `testkit`).
//!
//! The engine never touches `std::fs` directly: every file operation goes through
//! [`FileSystem`]. [`OsFs`] is the real implementation.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Read-only bytes of a whole file; a memory map for [`OsFs`].
pub type Mapped = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A held exclusive lock on a data directory; released on drop.
pub trait DirLock: Send + Sync + Debug {}

/// An append-only file being written.
pub trait WritableFile: Send + Debug {
    /// Appends all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
}

/// The file operations the engine needs, and nothing more.
pub trait FileSystem: Send + Sync + Debug + 'static {
    /// Creates `path` and its parents if missing.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file (failing if it exists) for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for appending at its end.
    fn append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Maps a whole file read-only; the file must be complete and must never
    /// change while mapped (see the safety note in [`OsFs`]'s implementation).
    fn map(&self, path: &Path) -> io::Result<Mapped>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Shortens a file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files and directories), unsorted.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    /// True if `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Length of a file in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Takes an exclusive lock on `path` (created if missing), or fails with
    /// [`io::ErrorKind::WouldBlock`] if another process or opener holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile {
    file: std::fs::File,
}

impl WritableFile for OsFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.file, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[derive(Debug)]
struct OsLock {
    _file: std::fs::File,
}
impl DirLock for OsLock {}

struct OsMap(memmap2::Mmap);
impl AsRef<[u8]> for OsMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl FileSystem for OsFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        // Append mode: every write lands at the current end, also after a
        // `truncate` cut a partial write (the WAL's full-disk recovery).
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(OsFile { file }))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(OsFile { file }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Arc::new(Vec::<u8>::new()));
        }
        // SAFETY: a mapping is sound only while nobody changes the file. What
        // holds for every file TallyDB maps:
        // - Segments are written at their final name (not renamed into
        //   place) by a `SegmentWriter`, through the only handle ever opened
        //   for writing on that path (`create` uses `create_new`, so it is a
        //   new file). The engine maps a segment only after
        //   `SegmentWriter::finish` has written the footer and fsynced the
        //   file and the writer is dropped: a mapped segment is complete. A
        //   crash mid-write leaves a partial file no manifest names, removed
        //   at the next open before anything is mapped.
        // - No code opens a segment for writing again or truncates it; it is
        //   only ever deleted (compaction inputs after the version swap,
        //   orphans at open), and unlinking keeps existing mappings valid on
        //   every platform we support.
        // - The other callers (verify, offline reads, backup manifests,
        //   restore's copy) map files of a finished backup, or of a data
        //   directory no engine holds (their callers take its lock first),
        //   which nothing writes meanwhile.
        // What no code can rule out is another process truncating a mapped
        // file; the data directory belongs to one server alone (DESIGN.md).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Arc::new(OsMap(map)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file is written and fsynced,
/// renamed over `path`, and the directory fsynced, so a crash leaves either the
/// old file or the new one, never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp)?;
    }
    let mut f = fs.create(&tmp)?;
    f.write_all(bytes)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, path)?;
    fs.sync_dir(parent(path))
}

/// The temporary name used while publishing `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
