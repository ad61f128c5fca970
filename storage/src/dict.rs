//! The series dictionary (series key <-> compact `u32` id) and the label index
//! that resolves selectors without scanning every series.
//!
//! Ids are issued densely from 0. New ids reach disk first inside the WAL record
//! of the batch that uses them, then, at each checkpoint, in the append-only
//! `series.dict` file whose committed length the manifest records.
//!
//! Memory is a few bytes per series beyond the key text, because every series
//! must stay in memory: the keys are concatenated in one buffer; the key lookup
//! and the per-label value indexes are hash tables of bare `u32` ids that hash
//! and compare through that buffer; a label value carried by one series only (an
//! id-like label) is that series' id in the table, with no list of its own.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::path::Path;

use hashbrown::HashTable;

use crate::coding::{crc32, put_u32, Reader};
use crate::error::{Error, Result};
use crate::format::{self, FileKind, PREFIX_LEN};
use crate::fs::FileSystem;
use crate::series::{SeriesKey, SeriesKeyRef, MAX_KEY_LEN};

/// Size of the file header: the common prefix of [`crate::format`], nothing more.
pub const DICT_HEADER_LEN: usize = PREFIX_LEN;

/// Ids per block of [`Keys`]: small enough that a block's keys span less than
/// 64 KiB, so a key's start fits a `u16` offset from its block's start.
const BLOCK_IDS: usize = 32;
const _: () = assert!(BLOCK_IDS * (MAX_KEY_LEN + 1) <= u16::MAX as usize);

/// Set in a label index entry that names a posting list rather than one id.
const LIST: u32 = 1 << 31;

/// Grows `v` so it can hold `more` more items, by an eighth of its length at a
/// time (not the doubling of `Vec`), so per-series arrays keep little slack.
fn reserve_compact<T>(v: &mut Vec<T>, more: usize) {
    if v.len() + more > v.capacity() {
        v.reserve_exact(more.max(v.len() / 8).max(64));
    }
}

/// Every key's canonical text, concatenated in id order.
#[derive(Debug, Default)]
struct Keys {
    text: String,
    /// Start of each key relative to the start of its block.
    rel: Vec<u16>,
    /// Start of each block of [`BLOCK_IDS`] keys in `text`.
    blocks: Vec<usize>,
}

impl Keys {
    fn len(&self) -> usize {
        self.rel.len()
    }

    fn start(&self, id: usize) -> usize {
        self.blocks[id / BLOCK_IDS] + usize::from(self.rel[id])
    }

    fn get(&self, id: u32) -> Option<SeriesKeyRef<'_>> {
        let id = id as usize;
        if id >= self.len() {
            return None;
        }
        let end = if id + 1 < self.len() {
            self.start(id + 1)
        } else {
            self.text.len()
        };
        self.text
            .get(self.start(id)..end)
            .map(SeriesKeyRef::from_canonical)
    }

    fn push(&mut self, key: &str) {
        let id = self.len();
        if id.is_multiple_of(BLOCK_IDS) {
            reserve_compact(&mut self.blocks, 1);
            self.blocks.push(self.text.len());
        }
        let rel = self.text.len() - self.blocks[id / BLOCK_IDS];
        reserve_compact(&mut self.rel, 1);
        self.rel.push(rel as u16);
        if self.text.len() + key.len() > self.text.capacity() {
            let more = key.len().max(self.text.len() / 8).max(4096);
            self.text.reserve_exact(more);
        }
        self.text.push_str(key);
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.rel.capacity() * 2 + self.blocks.capacity() * 8
    }
}

/// The series carrying each value of one label.
#[derive(Debug, Default)]
struct LabelIndex {
    /// Per value: the one series carrying it, or [`LIST`] | an index of `lists`.
    values: HashTable<u32>,
    /// Posting lists (ascending ids) of values carried by more than one series
    /// (or by an id at or above [`LIST`]).
    lists: Vec<Vec<u32>>,
}

impl LabelIndex {
    /// A series carrying the value of entry `e`, to read the value from its key.
    fn witness(lists: &[Vec<u32>], e: u32) -> u32 {
        if e & LIST == 0 {
            e
        } else {
            lists
                .get((e & !LIST) as usize)
                .and_then(|l| l.first())
                .copied()
                .unwrap_or(u32::MAX)
        }
    }

    fn heap_bytes(&self) -> usize {
        self.values.allocation_size()
            + self.lists.capacity() * std::mem::size_of::<Vec<u32>>()
            + self.lists.iter().map(|l| l.capacity() * 4).sum::<usize>()
    }
}

/// Heap bytes held by a [`SeriesDict`], by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DictBytes {
    /// Key text and the offsets that find each key.
    pub keys: usize,
    /// The key -> id hash table.
    pub lookup: usize,
    /// Metric names with their posting lists.
    pub names: usize,
    /// The label index: per label, its values and their posting lists.
    pub labels: usize,
}

/// Key <-> id map plus the label index.
#[derive(Debug)]
pub struct SeriesDict {
    keys: Keys,
    /// Ids, hashed and compared by their key text.
    by_key: HashTable<u32>,
    by_name: BTreeMap<Box<str>, Vec<u32>>,
    by_label: BTreeMap<Box<str>, LabelIndex>,
    /// Hash function of key text and label values, seeded per dictionary.
    hasher: std::hash::RandomState,
}

impl Default for SeriesDict {
    fn default() -> Self {
        SeriesDict {
            keys: Keys::default(),
            by_key: HashTable::new(),
            by_name: BTreeMap::new(),
            by_label: BTreeMap::new(),
            hasher: std::hash::RandomState::new(),
        }
    }
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
        self.keys.len() == 0
    }

    /// The id of a key, if known.
    pub fn get(&self, key: &str) -> Option<u32> {
        let keys = &self.keys;
        self.by_key
            .find(self.hasher.hash_one(key), |&id| {
                keys.get(id).is_some_and(|k| k.as_str() == key)
            })
            .copied()
    }

    /// The key of an id.
    pub fn key(&self, id: u32) -> Option<SeriesKeyRef<'_>> {
        self.keys.get(id)
    }

    /// The id of `key`, issuing the next one if it is new.
    pub fn intern(&mut self, key: SeriesKey) -> u32 {
        if let Some(id) = self.get(key.as_str()) {
            return id;
        }
        let id = self.len();
        self.keys.push(key.as_str());
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.by_key
            .insert_unique(hasher.hash_one(key.as_str()), id, |&id| {
                hasher.hash_one(keys.get(id).map_or("", |k| k.as_str()))
            });
        self.index(id, &key);
        id
    }

    /// Installs a definition read back from disk: `id` must be the next id, or an
    /// existing id with the same key.
    pub fn define(&mut self, id: u32, key: &str) -> std::result::Result<(), String> {
        if let Some(k) = self.keys.get(id) {
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
        if self.get(key).is_some() {
            return Err(format!("series key {key} defined twice"));
        }
        self.intern(parsed);
        Ok(())
    }

    fn index(&mut self, id: u32, key: &SeriesKey) {
        match self.by_name.get_mut(key.name()) {
            Some(ids) => {
                reserve_compact(ids, 1);
                ids.push(id);
            }
            None => {
                self.by_name.insert(key.name().into(), vec![id]);
            }
        }
        for (l, v) in key.labels() {
            if !self.by_label.contains_key(l) {
                self.by_label.insert(l.into(), LabelIndex::default());
            }
            let Some(index) = self.by_label.get_mut(l) else {
                continue;
            };
            let LabelIndex { values, lists } = index;
            let (keys, hasher) = (&self.keys, &self.hasher);
            let value_of = |e: u32| {
                keys.get(LabelIndex::witness(lists, e))
                    .and_then(|k| k.label(l))
            };
            let hash = hasher.hash_one(&*v);
            match values.find_mut(hash, |&e| value_of(e).as_deref() == Some(&*v)) {
                Some(e) if *e & LIST != 0 => {
                    if let Some(list) = lists.get_mut((*e & !LIST) as usize) {
                        reserve_compact(list, 1);
                        list.push(id);
                    }
                }
                Some(e) => {
                    // A second series: the value gets a list of its own.
                    let first = *e;
                    *e = LIST | lists.len() as u32;
                    lists.push(vec![first, id]);
                }
                None => {
                    let entry = if id & LIST == 0 {
                        id
                    } else {
                        lists.push(vec![id]);
                        LIST | (lists.len() - 1) as u32
                    };
                    let lists = &*lists;
                    values.insert_unique(hash, entry, |&e| {
                        hasher.hash_one(
                            keys.get(LabelIndex::witness(lists, e))
                                .and_then(|k| k.label(l))
                                .as_deref()
                                .unwrap_or(""),
                        )
                    });
                }
            }
        }
    }

    /// Ids of every series of metric `name`, ascending.
    pub fn ids_of_name(&self, name: &str) -> &[u32] {
        self.by_name.get(name).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Ids of every series carrying `label=value`, ascending.
    pub fn ids_with_label(&self, label: &str, value: &str) -> &[u32] {
        let Some(LabelIndex { values, lists }) = self.by_label.get(label) else {
            return &[];
        };
        let keys = &self.keys;
        let found = values.find(self.hasher.hash_one(value), |&e| {
            keys.get(LabelIndex::witness(lists, e))
                .and_then(|k| k.label(label))
                .as_deref()
                == Some(value)
        });
        match found {
            None => &[],
            Some(e) if *e & LIST == 0 => std::slice::from_ref(e),
            Some(e) => lists
                .get((*e & !LIST) as usize)
                .map_or(&[], |l| l.as_slice()),
        }
    }

    /// Ids of every series whose name is `prefix` or lies under it in the dotted
    /// hierarchy (`com.example` covers `com.example.music`), ascending.
    pub fn ids_under_prefix(&self, prefix: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let from: Bound<&str> = Bound::Included(prefix);
        for (name, v) in self.by_name.range::<str, _>((from, Bound::Unbounded)) {
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
    pub fn label_values(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        let mut out = BTreeMap::new();
        for (label, LabelIndex { values, lists }) in &self.by_label {
            let mut counts = BTreeMap::new();
            for &e in values.iter() {
                let value = self
                    .keys
                    .get(LabelIndex::witness(lists, e))
                    .and_then(|k| k.label(label))
                    .map_or_else(String::new, |v| v.into_owned());
                let n = if e & LIST == 0 {
                    1
                } else {
                    lists
                        .get((e & !LIST) as usize)
                        .map_or(0, |l| l.len() as u32)
                };
                counts.insert(value, n);
            }
            out.insert(label.to_string(), counts);
        }
        out
    }

    /// Every metric name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(|s| &**s)
    }

    /// Heap bytes held, by part (capacities, as the allocator sees them).
    pub fn heap_bytes(&self) -> DictBytes {
        DictBytes {
            keys: self.keys.heap_bytes(),
            lookup: self.by_key.allocation_size(),
            names: self
                .by_name
                .iter()
                .map(|(n, ids)| n.len() + ids.capacity() * 4)
                .sum(),
            labels: self
                .by_label
                .iter()
                .map(|(l, i)| l.len() + i.heap_bytes())
                .sum(),
        }
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
    format::put_prefix(&mut h, FileKind::Dictionary, [0, 0]);
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
    // The header has no checksum of its own, so a version this build does
    // not read cannot be told from a flipped bit: both are corruption (a
    // newer directory is refused earlier, by its FORMAT file). For the same
    // reason the reserved field must read as written.
    let prefix =
        format::read_prefix(committed, FileKind::Dictionary).map_err(|f| f.corrupt_at(path))?;
    let reserved = u16::from_le_bytes(prefix.field);
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
    use proptest::prelude::*;

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

    /// Keys from a small space, so names, label values and whole keys repeat.
    fn keys() -> impl Strategy<Value = Vec<SeriesKey>> {
        let key = (
            prop::sample::select(vec!["a", "a.b", "a.b.c", "ab", "m"]),
            prop::option::of(0u8..3),
            prop::option::of(0u16..40),
        )
            .prop_map(|(name, host, id)| {
                let mut labels = Vec::new();
                let host = host.map(|h| format!("h{h}"));
                let id = id.map(|i| format!("{i:03}"));
                if let Some(h) = &host {
                    labels.push(("host", h.as_str()));
                }
                if let Some(i) = &id {
                    labels.push(("id", i.as_str()));
                }
                SeriesKey::from_parts(name, &labels).expect("valid key")
            });
        prop::collection::vec(key, 0..200)
    }

    proptest! {
        /// The dictionary answers like a brute-force scan of the keys it was
        /// given: ids, keys, names, label postings (single-series values and
        /// shared ones), prefixes and label value counts.
        #[test]
        fn answers_like_a_scan(keys in keys()) {
            let mut d = SeriesDict::new();
            let mut model: Vec<SeriesKey> = Vec::new();
            for k in keys {
                let want = match model.iter().position(|m| *m == k) {
                    Some(i) => i as u32,
                    None => {
                        model.push(k.clone());
                        (model.len() - 1) as u32
                    }
                };
                prop_assert_eq!(d.intern(k), want);
            }
            prop_assert_eq!(d.len() as usize, model.len());
            let scan = |f: &dyn Fn(&SeriesKey) -> bool| -> Vec<u32> {
                (0..model.len() as u32).filter(|&i| f(&model[i as usize])).collect()
            };
            for (i, k) in model.iter().enumerate() {
                prop_assert_eq!(d.get(k.as_str()), Some(i as u32));
                prop_assert_eq!(d.key(i as u32).map(|r| r.to_key()), Some(k.clone()));
            }
            prop_assert_eq!(d.get("zz"), None);
            prop_assert!(d.key(model.len() as u32).is_none());
            for name in ["a", "a.b", "a.b.c", "ab", "m", "x"] {
                let want = scan(&|k| k.name() == name);
                prop_assert_eq!(d.ids_of_name(name), want.as_slice());
                prop_assert_eq!(
                    d.ids_under_prefix(name),
                    scan(&|k| k.name() == name || k.name().starts_with(&format!("{name}.")))
                );
            }
            let mut values: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
            for k in &model {
                for (l, v) in k.labels() {
                    *values.entry(l.into()).or_default().entry(v.into()).or_default() += 1;
                }
            }
            for (l, vs) in &values {
                for v in vs.keys().map(String::as_str).chain(["nope"]) {
                    let want = scan(&|k| k.label(l).as_deref() == Some(v));
                    prop_assert_eq!(d.ids_with_label(l, v), want.as_slice());
                }
            }
            prop_assert_eq!(d.ids_with_label("nolabel", "1"), &[] as &[u32]);
            prop_assert_eq!(d.label_values(), values);
            let mut bytes = header();
            encode_records(&d, 0, d.len(), &mut bytes);
            let back = decode(Path::new("series.dict"), &bytes).expect("decodes");
            prop_assert_eq!(back.len(), d.len());
            for (i, k) in model.iter().enumerate() {
                prop_assert_eq!(back.get(k.as_str()), Some(i as u32));
            }
        }
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
