//! The series dictionary (series key <-> compact `u32` id) and the label index
//! that resolves selectors without scanning every series.
//!
//! Ids are issued densely from 0. New ids reach disk first inside the WAL record
//! of the batch that uses them, then, at each checkpoint, in the append-only
//! `series.dict` file whose committed length the manifest records.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::coding::{crc32, put_u32, Reader};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::series::{SeriesKey, MAX_KEY_LEN};

/// Magic at the start of `series.dict`.
pub const DICT_MAGIC: [u8; 8] = *b"TALLYDIC";
/// Dictionary file format version.
pub const DICT_VERSION: u16 = 1;
/// Size of the file header.
pub const DICT_HEADER_LEN: usize = 12;

/// Key <-> id map plus the label index.
#[derive(Debug, Default)]
pub struct SeriesDict {
    by_key: HashMap<String, u32>,
    keys: Vec<SeriesKey>,
    by_name: BTreeMap<String, Vec<u32>>,
    by_label: FxHashMap<(String, String), Vec<u32>>,
    label_values: BTreeMap<String, BTreeMap<String, u32>>,
}

impl SeriesDict {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of ids issued.
    pub fn len(&self) -> u32 {
        self.keys.len() as u32
    }

    /// True when no series exists.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of a key, if known.
    pub fn get(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The key of an id.
    pub fn key(&self, id: u32) -> Option<&SeriesKey> {
        self.keys.get(id as usize)
    }

    /// The id of `key`, issuing the next one if it is new.
    pub fn intern(&mut self, key: SeriesKey) -> u32 {
        if let Some(id) = self.by_key.get(key.as_str()) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.index(id, &key);
        self.by_key.insert(key.as_str().to_string(), id);
        self.keys.push(key);
        id
    }

    /// Installs a definition read back from disk: `id` must be the next id, or an
    /// existing id with the same key.
    pub fn define(&mut self, id: u32, key: &str) -> std::result::Result<(), String> {
        if let Some(k) = self.keys.get(id as usize) {
            return if k.as_str() == key {
                Ok(())
            } else {
                Err(format!("series id {id} is {k} but is redefined as {key}"))
            };
        }
        if id != self.len() {
            return Err(format!(
                "series id {id} defined out of order (next is {})",
                self.len()
            ));
        }
        let parsed =
            SeriesKey::parse(key).map_err(|e| format!("stored series key {key:?}: {e}"))?;
        if parsed.as_str() != key {
            return Err(format!("stored series key {key:?} is not canonical"));
        }
        if self.by_key.contains_key(key) {
            return Err(format!("series key {key} defined twice"));
        }
        self.intern(parsed);
        Ok(())
    }

    fn index(&mut self, id: u32, key: &SeriesKey) {
        self.by_name
            .entry(key.name().to_string())
            .or_default()
            .push(id);
        for (l, v) in key.labels() {
            self.by_label
                .entry((l.to_string(), v.to_string()))
                .or_default()
                .push(id);
            *self
                .label_values
                .entry(l.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default() += 1;
        }
    }

    /// Ids of every series of metric `name`, ascending.
    pub fn ids_of_name(&self, name: &str) -> &[u32] {
        self.by_name.get(name).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Ids of every series carrying `label=value`, ascending.
    pub fn ids_with_label(&self, label: &str, value: &str) -> &[u32] {
        self.by_label
            .get(&(label.to_string(), value.to_string()))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Ids of every series whose name is `prefix` or lies under it in the dotted
    /// hierarchy (`com.example` covers `com.example.music`), ascending.
    pub fn ids_under_prefix(&self, prefix: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (name, v) in self.by_name.range(prefix.to_string()..) {
            if !name.starts_with(prefix) {
                break;
            }
            let rest = &name[prefix.len()..];
            if rest.is_empty() || prefix.ends_with('.') || rest.starts_with('.') {
                ids.extend_from_slice(v);
            }
        }
        ids.sort_unstable();
        ids
    }

    /// Every label name with its values and the number of series carrying each.
    pub fn label_values(&self) -> &BTreeMap<String, BTreeMap<String, u32>> {
        &self.label_values
    }

    /// Every metric name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(|s| s.as_str())
    }
}

/// Encodes dictionary records for ids `from..to` of `dict`, to append to `series.dict`.
pub fn encode_records(dict: &SeriesDict, from: u32, to: u32, out: &mut Vec<u8>) {
    for id in from..to.min(dict.len()) {
        if let Some(key) = dict.key(id) {
            let mut body = Vec::with_capacity(key.as_str().len() + 8);
            put_u32(&mut body, key.as_str().len() as u32);
            put_u32(&mut body, id);
            body.extend_from_slice(key.as_str().as_bytes());
            put_u32(out, crc32(&[&body]));
            out.extend_from_slice(&body);
        }
    }
}

/// The file header of `series.dict`.
pub fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(DICT_HEADER_LEN);
    h.extend_from_slice(&DICT_MAGIC);
    h.extend_from_slice(&DICT_VERSION.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// Loads the first `committed_len` bytes of `series.dict` into a dictionary;
/// everything there must be intact. Bytes past the committed length (left by a
/// checkpoint that crashed before its manifest) are cut off.
pub fn load(fs: &dyn FileSystem, path: &Path, committed_len: u64) -> Result<SeriesDict> {
    if committed_len == 0 {
        if fs.exists(path) {
            fs.remove_file(path)
                .map_err(|e| Error::io("remove", path, e))?;
        }
        return Ok(SeriesDict::new());
    }
    let bytes = fs
        .read(path)
        .map_err(|e| Error::io("read series dictionary", path, e))?;
    if (bytes.len() as u64) < committed_len {
        return Err(Error::corrupt(
            path,
            bytes.len() as u64,
            format!(
                "file is {} bytes but the manifest committed {committed_len}",
                bytes.len()
            ),
        ));
    }
    let dict = decode(path, &bytes[..committed_len as usize])?;
    if bytes.len() as u64 > committed_len {
        fs.truncate(path, committed_len)
            .map_err(|e| Error::io("truncate series dictionary", path, e))?;
    }
    Ok(dict)
}

/// Parses the committed prefix of `series.dict` (header and records), changing
/// nothing on disk; `path` names the file in errors. Used by [`load`] and by
/// read-only checks such as [`crate::verify`].
pub fn decode(path: &Path, committed: &[u8]) -> Result<SeriesDict> {
    let mut dict = SeriesDict::new();
    if committed.len() < DICT_HEADER_LEN || committed[..8] != DICT_MAGIC {
        return Err(Error::corrupt(
            path,
            0,
            "bad magic: not a series dictionary",
        ));
    }
    let version = u16::from_le_bytes([committed[8], committed[9]]);
    if version != DICT_VERSION {
        return Err(Error::corrupt(
            path,
            8,
            format!("dictionary format version {version}, this build reads {DICT_VERSION}"),
        ));
    }
    // The header has no checksum of its own: the reserved field must read as
    // written, or a flipped bit there would go unnoticed.
    let reserved = u16::from_le_bytes([committed[10], committed[11]]);
    if reserved != 0 {
        return Err(Error::corrupt(
            path,
            10,
            format!("reserved header field is {reserved:#06x}, not 0"),
        ));
    }
    let mut r = Reader::new(&committed[DICT_HEADER_LEN..]);
    while !r.is_empty() {
        let at = (DICT_HEADER_LEN + r.position()) as u64;
        let bad = |reason: String| Error::corrupt(path, at, reason);
        let stored = r.u32().map_err(|e| bad(e.to_string()))?;
        let start = r.position();
        let len = r.u32().map_err(|e| bad(e.to_string()))?;
        let id = r.u32().map_err(|e| bad(e.to_string()))?;
        if len as usize > MAX_KEY_LEN {
            return Err(bad(format!("key length {len} exceeds {MAX_KEY_LEN}")));
        }
        let key = r.take(len as usize).map_err(|e| bad(e.to_string()))?;
        let body = &committed[DICT_HEADER_LEN + start..DICT_HEADER_LEN + r.position()];
        let crc = crc32(&[body]);
        if crc != stored {
            return Err(bad(format!(
                "record checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
            )));
        }
        let key = std::str::from_utf8(key).map_err(|_| bad("key is not UTF-8".into()))?;
        dict.define(id, key).map_err(bad)?;
    }
    Ok(dict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SeriesKey {
        SeriesKey::parse(s).expect("valid key")
    }

    #[test]
    fn index_answers_names_labels_and_prefixes() {
        let mut d = SeriesDict::new();
        let a = d.intern(key("clicks{ad=1,country=US}"));
        let b = d.intern(key("clicks{ad=2,country=FR}"));
        let c = d.intern(key("com.example.music"));
        let e = d.intern(key("com.example"));
        let f = d.intern(key("com.examples"));
        assert_eq!(d.intern(key("clicks{country=US,ad=1}")), a);
        assert_eq!(d.ids_of_name("clicks"), &[a, b]);
        assert_eq!(d.ids_with_label("country", "FR"), &[b]);
        assert_eq!(d.ids_under_prefix("com.example"), vec![c, e]);
        assert_eq!(d.ids_under_prefix("com."), vec![c, e, f]);
        assert_eq!(d.label_values()["country"].len(), 2);
        assert!(d.define(0, "other").is_err());
        assert!(d.define(9, "other").is_err());
        assert!(d.define(5, "new_one").is_ok());
    }

    #[test]
    fn every_flipped_byte_of_the_committed_part_is_refused() {
        let mut d = SeriesDict::new();
        d.intern(key("a"));
        d.intern(key("b{x=y}"));
        let mut bytes = header();
        encode_records(&d, 0, d.len(), &mut bytes);
        let fs = crate::testing::FaultFs::new();
        let p = Path::new("series.dict");
        fs.set_file(p, &bytes).expect("planted");
        let loaded = load(&fs, p, bytes.len() as u64).expect("intact");
        assert_eq!(loaded.get("b{x=y}"), Some(1));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            fs.set_file(p, &b).expect("planted");
            assert!(
                load(&fs, p, bytes.len() as u64).is_err(),
                "flip at {i} not caught"
            );
        }
    }
}
