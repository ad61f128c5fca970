//! The file header every on-disk format shares: the magic that says what a
//! file is, the format version read into [`Version`], and the CRC32 that seals
//! the headers that carry one. The WAL, segments, the manifest, the series
//! dictionary, the dedup checkpoint and `BACKUP-MANIFEST` write and read their
//! headers here only; the byte layouts are those of docs/STORAGE.md.
//!
//! A binary header starts with a 12-byte prefix: the 8-byte magic, the version
//! as a little-endian `u16`, and two bytes each format defines (reserved zeros,
//! or a segment's tier and flags). Formats with fields of their own after it
//! (the WAL's sequence, the segment's id) end the header with a CRC32 of the
//! bytes before it ([`seal`], [`check_seal`]); the others are covered by a
//! checksum of the whole file or of each record. `BACKUP-MANIFEST` is text: its
//! first line is `tallydb backup manifest <version>`.

use std::fmt;
use std::path::Path;

use crate::coding::{crc32, put_u16, put_u32};
use crate::error::Error;

/// Bytes of the common prefix of a binary header: magic, version, two bytes.
pub const PREFIX_LEN: usize = 12;

/// Bytes of the CRC32 that ends a sealed header.
pub const SEAL_LEN: usize = 4;

/// Magic of WAL files.
pub const WAL_MAGIC: [u8; 8] = *b"TALLYWAL";
/// Magic of segment files.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TALLYSEG";
/// Magic of the manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"TALLYMAN";
/// Magic of the series dictionary.
pub const DICT_MAGIC: [u8; 8] = *b"TALLYDIC";
/// Magic of dedup checkpoints.
pub const DEDUP_MAGIC: [u8; 8] = *b"TALLYDDP";

/// A format version this build knows. Each file kind lists the versions it
/// reads in [`FileKind::supported`]; an unknown number never becomes a
/// `Version`, so code past the header matches on versions it understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Version {
    /// The first format of every file (see the format history in
    /// docs/STORAGE.md).
    V1,
}

impl Version {
    /// The number stored on disk.
    pub const fn number(self) -> u16 {
        match self {
            Version::V1 => 1,
        }
    }

    /// The version stored as `n`, if this build knows it.
    pub const fn from_number(n: u16) -> Option<Version> {
        match n {
            1 => Some(Version::V1),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The kinds of file a data directory or a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `wal/<seq>.wal`.
    Wal,
    /// `segments/<id>.seg`.
    Segment,
    /// `MANIFEST`.
    Manifest,
    /// `series.dict`.
    Dictionary,
    /// `dedup-<lsn>.state`.
    DedupCheckpoint,
    /// `BACKUP-MANIFEST` (text).
    BackupManifest,
}

impl FileKind {
    /// The bytes a file of this kind starts with: 8 bytes for the binary
    /// formats, the first line up to the version for `BACKUP-MANIFEST`.
    pub const fn magic(self) -> &'static [u8] {
        match self {
            FileKind::Wal => &WAL_MAGIC,
            FileKind::Segment => &SEGMENT_MAGIC,
            FileKind::Manifest => &MANIFEST_MAGIC,
            FileKind::Dictionary => &DICT_MAGIC,
            FileKind::DedupCheckpoint => &DEDUP_MAGIC,
            FileKind::BackupManifest => b"tallydb backup manifest ",
        }
    }

    /// What the file is, for messages ("not a WAL file").
    pub const fn what(self) -> &'static str {
        match self {
            FileKind::Wal => "WAL file",
            FileKind::Segment => "segment file",
            FileKind::Manifest => "manifest",
            FileKind::Dictionary => "series dictionary",
            FileKind::DedupCheckpoint => "dedup checkpoint",
            FileKind::BackupManifest => "backup manifest",
        }
    }

    /// The versions this build reads.
    pub const fn supported(self) -> &'static [Version] {
        &[Version::V1]
    }

    /// The version this build writes.
    pub const fn current(self) -> Version {
        Version::V1
    }
}

/// A binary header's common prefix, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The format version.
    pub version: Version,
    /// The two bytes after the version (reserved, or a segment's tier and flags).
    pub field: [u8; 2],
}

/// Why a header was refused, before the file's name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFault {
    /// Too short to hold the header.
    Short(FileKind),
    /// The magic is not the kind's.
    Magic(FileKind),
    /// A version this build does not read.
    Version {
        /// The kind of file.
        kind: FileKind,
        /// The number found.
        found: u16,
    },
    /// The header's CRC32 does not match its bytes.
    Seal {
        /// The CRC32 stored.
        stored: u32,
        /// The CRC32 of the bytes.
        computed: u32,
    },
}

impl HeaderFault {
    /// Offset of the faulty field in the file.
    pub fn offset(&self) -> u64 {
        match self {
            HeaderFault::Version { kind, .. } => kind.magic().len() as u64,
            _ => 0,
        }
    }

    /// The engine error for `file`: [`Error::UnsupportedVersion`] for an
    /// unknown version, [`Error::Corrupt`] otherwise.
    pub fn at(self, file: &Path) -> Error {
        match self {
            HeaderFault::Version { kind, found } => Error::UnsupportedVersion {
                file: file.to_path_buf(),
                what: kind.what(),
                found,
                supported: kind.supported(),
            },
            other => Error::corrupt(file, other.offset(), other.to_string()),
        }
    }

    /// [`Error::Corrupt`] for `file` whatever the fault: for headers without a
    /// checksum of their own, where an unknown version cannot be told from a
    /// damaged one.
    pub fn corrupt_at(self, file: &Path) -> Error {
        Error::corrupt(file, self.offset(), self.to_string())
    }
}

impl fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFault::Short(kind) => write!(f, "file too short for a {}", kind.what()),
            HeaderFault::Magic(kind) => write!(f, "bad magic: not a {}", kind.what()),
            HeaderFault::Version { kind, found } => write!(
                f,
                "{} format version {found}, this build reads {}",
                kind.what(),
                versions(kind.supported())
            ),
            HeaderFault::Seal { stored, computed } => write!(
                f,
                "header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// `1`, `1, 2`: a list of versions for messages.
pub fn versions(list: &[Version]) -> String {
    let v: Vec<String> = list.iter().map(|v| v.to_string()).collect();
    v.join(", ")
}

/// Appends the 12-byte prefix of a `kind` file of the current version.
pub fn put_prefix(out: &mut Vec<u8>, kind: FileKind, field: [u8; 2]) {
    out.extend_from_slice(kind.magic());
    put_u16(out, kind.current().number());
    out.extend_from_slice(&field);
}

/// Reads the prefix of a `kind` file: the magic, then the version, which
/// must be one the kind supports.
pub fn read_prefix(bytes: &[u8], kind: FileKind) -> Result<Prefix, HeaderFault> {
    let magic = kind.magic();
    let head = bytes
        .get(..magic.len() + 4)
        .ok_or(HeaderFault::Short(kind))?;
    if &head[..magic.len()] != magic {
        return Err(HeaderFault::Magic(kind));
    }
    let at = magic.len();
    let found = u16::from_le_bytes([head[at], head[at + 1]]);
    let version = Version::from_number(found)
        .filter(|v| kind.supported().contains(v))
        .ok_or(HeaderFault::Version { kind, found })?;
    Ok(Prefix {
        version,
        field: [head[at + 2], head[at + 3]],
    })
}

/// Appends the CRC32 of `header` (everything written so far) to it.
pub fn seal(header: &mut Vec<u8>) {
    let crc = crc32(&[header]);
    put_u32(header, crc);
}

/// Checks that the last [`SEAL_LEN`] bytes of `header` are the CRC32 of the
/// bytes before them (a `header` shorter than that never matches).
pub fn check_seal(header: &[u8]) -> Result<(), HeaderFault> {
    let Some(split) = header.len().checked_sub(SEAL_LEN) else {
        return Err(HeaderFault::Seal {
            stored: 0,
            computed: 0,
        });
    };
    let (body, tail) = header.split_at(split);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32(&[body]);
    if stored == computed {
        Ok(())
    } else {
        Err(HeaderFault::Seal { stored, computed })
    }
}

/// The first line of a text file of `kind` at the current version.
pub fn text_header(kind: FileKind) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(kind.magic()),
        kind.current()
    )
}

/// Reads the version from `line`, the first line of a text file of `kind`.
pub fn read_text_header(line: &str, kind: FileKind) -> Result<Version, HeaderFault> {
    let rest = line
        .as_bytes()
        .strip_prefix(kind.magic())
        .ok_or(HeaderFault::Magic(kind))?;
    let text = std::str::from_utf8(rest).map_err(|_| HeaderFault::Magic(kind))?;
    // Only plain decimal digits: "+1" or "01" is not a version this build wrote.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return Err(HeaderFault::Magic(kind));
    }
    let found = text.parse::<u16>().map_err(|_| HeaderFault::Magic(kind))?;
    Version::from_number(found)
        .filter(|v| kind.supported().contains(v))
        .ok_or(HeaderFault::Version { kind, found })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [FileKind; 5] = [
        FileKind::Wal,
        FileKind::Segment,
        FileKind::Manifest,
        FileKind::Dictionary,
        FileKind::DedupCheckpoint,
    ];

    #[test]
    fn prefixes_round_trip_and_refuse_other_kinds() {
        for kind in KINDS {
            let mut h = Vec::new();
            put_prefix(&mut h, kind, [7, 9]);
            assert_eq!(h.len(), PREFIX_LEN);
            assert_eq!(
                read_prefix(&h, kind),
                Ok(Prefix {
                    version: Version::V1,
                    field: [7, 9]
                })
            );
            assert_eq!(read_prefix(&h[..11], kind), Err(HeaderFault::Short(kind)));
            for other in KINDS.into_iter().filter(|k| *k != kind) {
                assert_eq!(read_prefix(&h, other), Err(HeaderFault::Magic(other)));
            }
        }
    }

    #[test]
    fn an_unknown_version_is_a_typed_error_naming_file_found_and_supported() {
        let mut h = Vec::new();
        put_prefix(&mut h, FileKind::Segment, [0, 0]);
        h[8] = 2;
        let fault = read_prefix(&h, FileKind::Segment).expect_err("version 2");
        assert_eq!(fault.offset(), 8);
        match fault.clone().at(Path::new("segments/x.seg")) {
            Error::UnsupportedVersion {
                file,
                what,
                found,
                supported,
            } => {
                assert_eq!(file, Path::new("segments/x.seg"));
                assert_eq!((what, found), ("segment file", 2));
                assert_eq!(supported, &[Version::V1]);
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        let msg = fault.at(Path::new("s")).to_string();
        assert!(
            msg.contains("version 2") && msg.contains("reads 1"),
            "{msg}"
        );
        assert!(matches!(
            HeaderFault::Version {
                kind: FileKind::Dictionary,
                found: 3
            }
            .corrupt_at(Path::new("d")),
            Error::Corrupt { offset: 8, .. }
        ));
    }

    #[test]
    fn seals_catch_every_flip() {
        let mut h = Vec::new();
        put_prefix(&mut h, FileKind::Wal, [0, 0]);
        h.extend_from_slice(&42u64.to_le_bytes());
        seal(&mut h);
        assert_eq!(h.len(), 24);
        assert_eq!(check_seal(&h), Ok(()));
        for i in 0..h.len() * 8 {
            let mut b = h.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(check_seal(&b).is_err(), "flip {i}");
        }
        assert!(check_seal(&h[..3]).is_err());
    }

    #[test]
    fn text_headers_read_their_version() {
        let kind = FileKind::BackupManifest;
        let line = text_header(kind);
        assert_eq!(line, "tallydb backup manifest 1");
        assert_eq!(read_text_header(&line, kind), Ok(Version::V1));
        assert_eq!(
            read_text_header("tallydb backup manifest 7", kind),
            Err(HeaderFault::Version { kind, found: 7 })
        );
        for bad in [
            "tallydb backup manifest",
            "tallydb backup manifest 01",
            "x 1",
            "",
        ] {
            assert_eq!(
                read_text_header(bad, kind),
                Err(HeaderFault::Magic(kind)),
                "{bad}"
            );
        }
    }
}
