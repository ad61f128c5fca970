//! Snapshots: a consistent copy of the live data set (segments, dictionary,
//! dedup checkpoint and manifest, each fsynced) written into another directory
//! while writes continue, after a flush so the copy needs no WAL.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fs::parent;
use crate::manifest::Manifest;
use crate::segment;

use super::state::{lock, read, Shared};
use super::{
    dedup_file_name, format_file_contents, DICT_FILE, FORMAT_FILE, MANIFEST_FILE, SEGMENTS_DIR,
    WAL_DIR,
};

impl Shared {
    /// Writes a snapshot into `target`, which must be missing or empty.
    pub(crate) fn snapshot(&self, target: &Path) -> Result<Manifest> {
        fn io<'p>(op: &'static str, p: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
            move |e| Error::io(op, p, e)
        }
        let fs = self.fs();
        if fs.exists(target)
            && !fs
                .list(target)
                .map_err(|e| Error::io("list", target, e))?
                .is_empty()
        {
            return Err(Error::InvalidOption(format!(
                "snapshot target {} is not empty",
                target.display()
            )));
        }
        self.flush()?;
        let (manifest, segments, dict_bytes, dedup_bytes) = {
            let _flush = lock(&self.flush_lock);
            let m = lock(&self.manifest).clone();
            let segments = read(&self.tables).version.segments.clone();
            let dict_path = self.dir.join(DICT_FILE);
            let dict_bytes = if m.dict_len > 0 {
                let mut b = fs
                    .read(&dict_path)
                    .map_err(|e| Error::io("read", &dict_path, e))?;
                b.truncate(m.dict_len as usize);
                b
            } else {
                Vec::new()
            };
            let dedup_bytes = if m.dedup_lsn > 0 {
                let p = self.dir.join(dedup_file_name(m.dedup_lsn));
                Some(fs.read(&p).map_err(|e| Error::io("read", &p, e))?)
            } else {
                None
            };
            (m, segments, dict_bytes, dedup_bytes)
        };
        for sub in [SEGMENTS_DIR, WAL_DIR] {
            let p = target.join(sub);
            fs.create_dir_all(&p).map_err(io("create directory", &p))?;
        }
        let write_file = |path: &Path, bytes: &[u8]| -> Result<()> {
            let mut f = fs.create(path).map_err(io("create", path))?;
            f.write_all(bytes)
                .and_then(|_| f.sync())
                .map_err(io("write", path))
        };
        let seg_dir = target.join(SEGMENTS_DIR);
        for s in segments
            .iter()
            .filter(|s| manifest.segments.iter().any(|m| m.id == s.meta().id))
        {
            write_file(&seg_dir.join(segment::file_name(s.meta().id)), s.bytes())?;
        }
        fs.sync_dir(&seg_dir)
            .map_err(io("sync directory", &seg_dir))?;
        if !dict_bytes.is_empty() {
            write_file(&target.join(DICT_FILE), &dict_bytes)?;
        }
        if let Some(b) = dedup_bytes {
            write_file(&target.join(dedup_file_name(manifest.dedup_lsn)), &b)?;
        }
        write_file(&target.join(FORMAT_FILE), format_file_contents().as_bytes())?;
        let wal_dir = target.join(WAL_DIR);
        fs.sync_dir(&wal_dir)
            .map_err(io("sync directory", &wal_dir))?;
        manifest.store(fs, &target.join(MANIFEST_FILE))?;
        fs.sync_dir(parent(target))
            .map_err(io("sync directory", parent(target)))?;
        Ok(manifest)
    }
}
