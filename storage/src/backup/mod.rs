//! Backups: the `BACKUP-MANIFEST` that lists every file of a backup with its
//! size and CRC32, the crash-safe copy, and [`restore()`](restore::restore) (in [`mod@restore`]), which
//! verifies a backup and swaps it into a data directory.
//!
//! A backup is a snapshot ([`crate::Engine::snapshot`]) plus `BACKUP-MANIFEST`,
//! written after the snapshot is complete. Text, one item per line:
//!
//! ```text
//! tallydb backup manifest 1
//! created_ms 1715000000000
//! source /var/lib/tally
//! file FORMAT 31 6d0a1e44
//! file MANIFEST 100 0c2b1f9e
//! file segments/0000000000000001.seg 40212 9a8b7c6d
//! files 3
//! crc32 1f2e3d4c
//! ```
//!
//! `file <path> <size> <crc32 hex>` per file (paths relative to the backup, `/`
//! separated, sorted, without spaces); `files <n>` counts them; the last line is
//! the CRC32 of every byte before it, so a damaged manifest is itself detected.
//! `LOCK` and `BACKUP-MANIFEST` are not listed. Restore does not copy
//! `BACKUP-MANIFEST` into the data directory (it would be stale at once).

use std::path::{Path, PathBuf};

use crate::coding::crc32;
use crate::engine::{LOCK_FILE, SEGMENTS_DIR, WAL_DIR};
use crate::error::{Error, Result};
use crate::format::{self, FileKind};
use crate::fs::{write_atomic, FileSystem};

pub mod restore;
pub use restore::{is_empty_dir, restore, RestoreOptions, RestoreOutcome};

/// Name of the backup manifest inside a backup directory.
pub const BACKUP_MANIFEST_FILE: &str = "BACKUP-MANIFEST";

/// One file listed in a backup manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// Path relative to the backup directory, `/` separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// A parsed backup manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupManifest {
    /// When the manifest was written (ms since the epoch).
    pub created_ms: i64,
    /// Where the backup came from (a data directory or a server address).
    pub source: String,
    /// The files, sorted by path.
    pub files: Vec<BackupEntry>,
}

impl BackupManifest {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{}\ncreated_ms {}\nsource {}\n",
            format::text_header(FileKind::BackupManifest),
            self.created_ms,
            self.source.replace(['\n', '\r'], " ")
        );
        for f in &self.files {
            s.push_str(&format!("file {} {} {:08x}\n", f.path, f.size, f.crc32));
        }
        s.push_str(&format!("files {}\n", self.files.len()));
        let crc = crc32(&[s.as_bytes()]);
        s.push_str(&format!("crc32 {crc:08x}\n"));
        s
    }

    /// Parses the text form; errors name the byte offset of the bad line.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<BackupManifest> {
        let bad = |at: usize, why: String| Error::corrupt(path, at as u64, why);
        let text = std::str::from_utf8(bytes).map_err(|e| {
            bad(
                e.valid_up_to(),
                "backup manifest is not UTF-8 text".to_string(),
            )
        })?;
        // The checksum line: the last line, covering everything before it.
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad(0, "backup manifest has no checksum line".into()))?;
        let last = text[body_end..].trim_end_matches('\n');
        let stored = last
            .strip_prefix("crc32 ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad(body_end, format!("bad checksum line {last:?}")))?;
        let computed = crc32(&[&bytes[..body_end]]);
        if stored != computed {
            return Err(bad(
                body_end,
                format!("backup manifest checksum mismatch: stored {stored:08x}, computed {computed:08x}"),
            ));
        }
        let mut m = BackupManifest {
            created_ms: 0,
            source: String::new(),
            files: Vec::new(),
        };
        let mut at = 0usize;
        let mut count = None;
        for (i, line) in text[..body_end].split_inclusive('\n').enumerate() {
            let l = line.trim_end_matches('\n');
            let bad_line = || bad(at, format!("unreadable line {l:?}"));
            if i == 0 {
                // The checksum above covers this line: an unknown version is
                // a newer manifest, not damage.
                match format::read_text_header(l, FileKind::BackupManifest) {
                    Ok(_) => {}
                    Err(f @ format::HeaderFault::Version { .. }) => return Err(f.at(path)),
                    Err(_) => {
                        return Err(bad(0, format!("not a backup manifest (first line {l:?})")))
                    }
                }
            } else if let Some(v) = l.strip_prefix("created_ms ") {
                m.created_ms = v.parse().map_err(|_| bad_line())?;
            } else if let Some(v) = l.strip_prefix("source ") {
                m.source = v.to_string();
            } else if let Some(v) = l.strip_prefix("file ") {
                let parts: Vec<&str> = v.split(' ').collect();
                let [p, size, crc] = parts[..] else {
                    return Err(bad_line());
                };
                m.files.push(BackupEntry {
                    path: p.to_string(),
                    size: size.parse().map_err(|_| bad_line())?,
                    crc32: u32::from_str_radix(crc, 16).map_err(|_| bad_line())?,
                });
            } else if let Some(v) = l.strip_prefix("files ") {
                count = Some(v.parse::<usize>().map_err(|_| bad_line())?);
            } else {
                return Err(bad_line());
            }
            at += line.len();
        }
        if count != Some(m.files.len()) {
            return Err(bad(
                body_end,
                format!(
                    "backup manifest lists {} files but says {count:?}",
                    m.files.len()
                ),
            ));
        }
        Ok(m)
    }
}

/// Every file of a data directory or backup that belongs to the data set,
/// relative and sorted: top-level files (not `LOCK`, not `BACKUP-MANIFEST`) and
/// the files under `segments/` and `wal/`.
pub fn list_files(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in fs.list(dir).map_err(|e| Error::io("list", dir, e))? {
        if name == LOCK_FILE || name == BACKUP_MANIFEST_FILE {
            continue;
        }
        if name == SEGMENTS_DIR || name == WAL_DIR {
            let sub = dir.join(&name);
            for f in fs.list(&sub).map_err(|e| Error::io("list", &sub, e))? {
                out.push(format!("{name}/{f}"));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every file of the backup in `dir`, writes `BACKUP-MANIFEST` atomically
/// and returns it. `progress` is called with the bytes read so far.
pub fn write_backup_manifest(
    fs: &dyn FileSystem,
    dir: &Path,
    source: &str,
    created_ms: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<BackupManifest> {
    let mut files = Vec::new();
    let mut done = 0u64;
    for rel in list_files(fs, dir)? {
        let path = dir.join(&rel);
        if rel.contains(' ') || rel.contains('\n') {
            return Err(Error::InvalidOption(format!(
                "backup file name {rel:?} contains a space or newline"
            )));
        }
        let map = fs.map(&path).map_err(|e| Error::io("read", &path, e))?;
        let bytes: &[u8] = (*map).as_ref();
        files.push(BackupEntry {
            path: rel,
            size: bytes.len() as u64,
            crc32: crc32(&[bytes]),
        });
        done += bytes.len() as u64;
        progress(done);
    }
    let m = BackupManifest {
        created_ms,
        source: source.to_string(),
        files,
    };
    let path = dir.join(BACKUP_MANIFEST_FILE);
    write_atomic(fs, &path, m.encode().as_bytes())
        .map_err(|e| Error::io("write backup manifest", &path, e))?;
    Ok(m)
}

/// A difference between a backup and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupProblem {
    /// The file (relative), or `BACKUP-MANIFEST` itself.
    pub file: String,
    /// Byte offset, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

/// Checks every file against `BACKUP-MANIFEST` in `dir`: `Ok(None)` if there is
/// no manifest, else the problems found (empty when intact). `progress` is
/// called with the bytes read so far.
pub fn check_backup_manifest(
    fs: &dyn FileSystem,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<Vec<BackupProblem>>> {
    let path = dir.join(BACKUP_MANIFEST_FILE);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let bytes = fs
        .read(&path)
        .map_err(|e| Error::io("read backup manifest", &path, e))?;
    let m = match BackupManifest::decode(Path::new(BACKUP_MANIFEST_FILE), &bytes) {
        Ok(m) => m,
        Err(Error::Corrupt { offset, reason, .. }) => {
            return Ok(Some(vec![BackupProblem {
                file: BACKUP_MANIFEST_FILE.into(),
                offset: Some(offset),
                what: reason,
            }]))
        }
        Err(e) => return Err(e),
    };
    let mut problems = Vec::new();
    let present = list_files(fs, dir)?;
    let mut done = 0u64;
    for f in &m.files {
        let p = dir.join(&f.path);
        if !fs.exists(&p) {
            problems.push(BackupProblem {
                file: f.path.clone(),
                offset: None,
                what: "listed in BACKUP-MANIFEST but missing".into(),
            });
            continue;
        }
        let map = fs.map(&p).map_err(|e| Error::io("read", &p, e))?;
        let data: &[u8] = (*map).as_ref();
        done += data.len() as u64;
        progress(done);
        if data.len() as u64 != f.size {
            problems.push(BackupProblem {
                file: f.path.clone(),
                offset: Some(data.len().min(f.size as usize) as u64),
                what: format!(
                    "size {} differs from BACKUP-MANIFEST ({})",
                    data.len(),
                    f.size
                ),
            });
            continue;
        }
        let crc = crc32(&[data]);
        if crc != f.crc32 {
            problems.push(BackupProblem {
                file: f.path.clone(),
                offset: None,
                what: format!(
                    "CRC32 {crc:08x} differs from BACKUP-MANIFEST ({:08x}): the file changed after the backup",
                    f.crc32
                ),
            });
        }
    }
    for rel in present {
        if !m.files.iter().any(|f| f.path == rel) {
            problems.push(BackupProblem {
                file: rel,
                offset: None,
                what: "file not listed in BACKUP-MANIFEST".into(),
            });
        }
    }
    Ok(Some(problems))
}

/// The temporary sibling a restore into `target` copies into first.
pub fn restore_tmp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tally-data".into());
    crate::fs::parent(target).join(format!(".{name}.restore-tmp"))
}

/// Copies the data set of `from` (every file of [`list_files`], not
/// `BACKUP-MANIFEST`) into the directory `to`, fsyncing every file and
/// directory. `to` must be missing or hold no files. Returns the bytes copied.
pub fn copy_data_set(
    fs: &dyn FileSystem,
    from: &Path,
    to: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    if fs.exists(to) && !list_files(fs, to)?.is_empty() {
        return Err(Error::InvalidOption(format!(
            "{} already exists and holds files",
            to.display()
        )));
    }
    for sub in [SEGMENTS_DIR, WAL_DIR] {
        let p = to.join(sub);
        fs.create_dir_all(&p)
            .map_err(|e| Error::io("create directory", &p, e))?;
    }
    let mut done = 0u64;
    for rel in list_files(fs, from)? {
        let src = from.join(&rel);
        let dst = to.join(&rel);
        let map = fs.map(&src).map_err(|e| Error::io("read", &src, e))?;
        let data: &[u8] = (*map).as_ref();
        let mut f = fs.create(&dst).map_err(|e| Error::io("create", &dst, e))?;
        f.write_all(data)
            .and_then(|_| f.sync())
            .map_err(|e| Error::io("write", &dst, e))?;
        done += data.len() as u64;
        progress(done);
    }
    for d in [to.join(SEGMENTS_DIR), to.join(WAL_DIR), to.to_path_buf()] {
        fs.sync_dir(&d)
            .map_err(|e| Error::io("sync directory", &d, e))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_every_flipped_byte_is_caught() {
        let m = BackupManifest {
            created_ms: 1_700_000_000_000,
            source: "/var/lib/tally".into(),
            files: vec![
                BackupEntry {
                    path: "FORMAT".into(),
                    size: 31,
                    crc32: 0xdead_beef,
                },
                BackupEntry {
                    path: "segments/0000000000000001.seg".into(),
                    size: 4096,
                    crc32: 7,
                },
            ],
        };
        let text = m.encode();
        let p = Path::new(BACKUP_MANIFEST_FILE);
        assert_eq!(
            BackupManifest::decode(p, text.as_bytes()).expect("decodes"),
            m
        );
        for i in 0..text.len() {
            let mut b = text.clone().into_bytes();
            b[i] ^= 0x01;
            assert!(
                BackupManifest::decode(p, &b).is_err(),
                "flip at {i} not caught"
            );
        }
    }
}
