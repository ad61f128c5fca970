//! The per-connection series alias table.
//!
//! The first time a connection sends a series it defines an alias for it (event form
//! "key + define alias N"); once the server has acknowledged a batch that defined it,
//! later events send only the alias (a unit increment then costs two bytes). Rules kept
//! in step with the server (`docs/PROTOCOL.md` §6.3):
//!
//! - an alias is *pending* until an `INCR_OK` answers a batch that defined it; while
//!   pending, every batch that uses the key defines it again (harmless), because a
//!   failed batch leaves the aliases it defined undefined on the server;
//! - inside one batch, after an event defined an alias, later events use the alias;
//! - aliases stay below the server's `max_aliases` (and the client's own cap); once
//!   the table is full, new series are sent by full key;
//! - the table belongs to one connection: a reconnect starts with an empty table.

use std::collections::HashMap;
use std::sync::Arc;

use tallydb_protocol::SeriesRef;

/// One connection's aliases.
#[derive(Debug, Default)]
pub(crate) struct AliasTable {
    by_key: HashMap<Arc<str>, u32>,
    /// Indexed by alias: whether the server acknowledged a definition.
    confirmed: Vec<bool>,
    cap: u32,
}

/// Aliases defined by the batch being encoded.
#[derive(Debug, Default)]
pub(crate) struct BatchAliases {
    pub(crate) defined: Vec<u32>,
}

impl AliasTable {
    /// An empty table holding at most `cap` aliases (`0..cap`).
    pub(crate) fn new(cap: u32) -> Self {
        Self {
            by_key: HashMap::new(),
            confirmed: Vec::new(),
            cap,
        }
    }

    /// How `key` is named in the batch being encoded; records definitions in `batch`.
    pub(crate) fn series_ref<'k>(
        &mut self,
        key: &'k Arc<str>,
        batch: &mut BatchAliases,
    ) -> SeriesRef<'k> {
        if let Some(&alias) = self.by_key.get(&**key) {
            let usable = self.confirmed.get(alias as usize).copied().unwrap_or(false)
                || batch.defined.contains(&alias);
            if usable {
                return SeriesRef::Alias(alias);
            }
            batch.defined.push(alias);
            return SeriesRef::Define { key, alias };
        }
        let next = u32::try_from(self.confirmed.len()).unwrap_or(u32::MAX);
        if next >= self.cap {
            return SeriesRef::Key(key);
        }
        self.by_key.insert(Arc::clone(key), next);
        self.confirmed.push(false);
        batch.defined.push(next);
        SeriesRef::Define { key, alias: next }
    }

    /// The server acknowledged a batch that defined `aliases`.
    pub(crate) fn confirm(&mut self, aliases: &[u32]) {
        for &a in aliases {
            if let Some(c) = self.confirmed.get_mut(a as usize) {
                *c = true;
            }
        }
    }

    /// Aliases allocated.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.confirmed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn defines_once_then_uses_the_alias_after_confirmation() {
        let mut t = AliasTable::new(100);
        let a = key("a");
        let mut b1 = BatchAliases::default();
        assert_eq!(
            t.series_ref(&a, &mut b1),
            SeriesRef::Define { key: "a", alias: 0 }
        );
        // Same batch: the alias is already defined by the earlier event.
        assert_eq!(t.series_ref(&a, &mut b1), SeriesRef::Alias(0));
        assert_eq!(b1.defined, vec![0]);
        // Another batch before the first is acknowledged defines it again.
        let mut b2 = BatchAliases::default();
        assert_eq!(
            t.series_ref(&a, &mut b2),
            SeriesRef::Define { key: "a", alias: 0 }
        );
        t.confirm(&b1.defined);
        let mut b3 = BatchAliases::default();
        assert_eq!(t.series_ref(&a, &mut b3), SeriesRef::Alias(0));
        assert!(b3.defined.is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_failed_batch_leaves_its_aliases_pending() {
        let mut t = AliasTable::new(100);
        let (a, b) = (key("a"), key("b"));
        let mut failed = BatchAliases::default();
        t.series_ref(&a, &mut failed);
        t.series_ref(&b, &mut failed);
        // No confirm: the batch got ERROR. The next batch redefines both.
        let mut next = BatchAliases::default();
        assert_eq!(
            t.series_ref(&b, &mut next),
            SeriesRef::Define { key: "b", alias: 1 }
        );
        assert_eq!(
            t.series_ref(&a, &mut next),
            SeriesRef::Define { key: "a", alias: 0 }
        );
        t.confirm(&next.defined);
        let mut after = BatchAliases::default();
        assert_eq!(t.series_ref(&a, &mut after), SeriesRef::Alias(0));
        assert_eq!(t.series_ref(&b, &mut after), SeriesRef::Alias(1));
    }

    #[test]
    fn a_full_table_sends_full_keys() {
        let mut t = AliasTable::new(2);
        let mut batch = BatchAliases::default();
        for (i, k) in ["a", "b"].into_iter().enumerate() {
            let k = key(k);
            assert!(matches!(
                t.series_ref(&k, &mut batch),
                SeriesRef::Define { alias, .. } if alias as usize == i
            ));
        }
        let c = key("c");
        assert_eq!(t.series_ref(&c, &mut batch), SeriesRef::Key("c"));
        assert_eq!(t.series_ref(&c, &mut batch), SeriesRef::Key("c"));
        assert_eq!(t.len(), 2);
        let mut empty = AliasTable::new(0);
        assert_eq!(empty.series_ref(&c, &mut batch), SeriesRef::Key("c"));
    }

    #[test]
    fn a_new_table_per_connection_starts_empty() {
        let a = key("a");
        let mut old = AliasTable::new(10);
        let mut b = BatchAliases::default();
        old.series_ref(&a, &mut b);
        old.confirm(&b.defined);
        let mut fresh = AliasTable::new(10);
        let mut b = BatchAliases::default();
        assert_eq!(
            fresh.series_ref(&a, &mut b),
            SeriesRef::Define { key: "a", alias: 0 }
        );
    }
}
