//! The per-connection alias table: alias → engine series id.
//!
//! `INCR` events may bind a small integer alias to a series key (form 2) and then name
//! the series by alias alone (form 0). Aliases live as long as the connection and are
//! bounded by `max_aliases` (an alias must be `< max_aliases`), so the table holds at
//! most `max_aliases` entries.
//!
//! A batch's definitions take effect as they are read, so later events of the same
//! batch can use them; resolving an alias is one vector index. If the batch fails,
//! every alias it defined becomes undefined ([`AliasBatch::abort`]), as
//! `docs/PROTOCOL.md` tells clients to assume, so client and server can never
//! disagree about a binding.

/// Marks an alias slot with no binding.
const UNDEFINED: u32 = u32::MAX;

/// Why an alias could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// The alias is not below the connection's limit.
    #[error("alias {alias} is not below the limit of {max} aliases")]
    OutOfRange {
        /// The alias.
        alias: u32,
        /// `max_aliases`.
        max: u32,
    },
    /// The alias was never defined on this connection (or its defining batch failed).
    #[error("alias {0} is not defined on this connection")]
    Undefined(u32),
}

/// One connection's aliases: a dense vector indexed by alias (clients number
/// aliases from 0), grown on first definition and never beyond `max`.
#[derive(Debug, Clone)]
pub struct AliasTable {
    slots: Vec<u32>,
    defined: usize,
    max: u32,
}

impl AliasTable {
    /// An empty table accepting aliases `< max`.
    pub fn new(max: u32) -> Self {
        Self {
            slots: Vec::new(),
            defined: 0,
            max,
        }
    }

    /// Number of aliases defined.
    pub fn len(&self) -> usize {
        self.defined
    }

    /// Whether no alias is defined.
    pub fn is_empty(&self) -> bool {
        self.defined == 0
    }

    /// The series id bound to `alias`.
    pub fn get(&self, alias: u32) -> Option<u32> {
        self.slots
            .get(alias as usize)
            .copied()
            .filter(|s| *s != UNDEFINED)
    }

    fn set(&mut self, alias: u32, series: u32) {
        let i = alias as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, UNDEFINED);
        }
        let slot = &mut self.slots[i];
        match (*slot == UNDEFINED, series == UNDEFINED) {
            (true, false) => self.defined += 1,
            (false, true) => self.defined -= 1,
            _ => {}
        }
        *slot = series;
    }

    /// Starts the definitions of one batch.
    pub fn batch(&mut self) -> AliasBatch<'_> {
        AliasBatch {
            table: self,
            defined: Vec::new(),
        }
    }
}

/// The definitions of one `INCR` batch: in effect at once (later events of the
/// batch see them), remembered so that a failed batch can undefine them.
#[derive(Debug)]
pub struct AliasBatch<'t> {
    table: &'t mut AliasTable,
    defined: Vec<u32>,
}

impl AliasBatch<'_> {
    /// Binds `alias` to `series` for the rest of the batch and, unless the batch
    /// fails, the connection.
    pub fn define(&mut self, alias: u32, series: u32) -> Result<(), AliasError> {
        self.check(alias)?;
        self.table.set(alias, series);
        self.defined.push(alias);
        Ok(())
    }

    /// The series `alias` names at this point of the batch.
    pub fn resolve(&self, alias: u32) -> Result<u32, AliasError> {
        self.check(alias)?;
        self.table.get(alias).ok_or(AliasError::Undefined(alias))
    }

    fn check(&self, alias: u32) -> Result<(), AliasError> {
        if alias >= self.table.max {
            return Err(AliasError::OutOfRange {
                alias,
                max: self.table.max,
            });
        }
        Ok(())
    }

    /// The batch was applied: its definitions stay.
    pub fn commit(self) {}

    /// The batch failed: every alias it defined (so far) becomes undefined.
    pub fn abort(self) {
        for alias in self.defined {
            self.table.set(alias, UNDEFINED);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn definitions_take_effect_on_commit() {
        let mut t = AliasTable::new(10);
        let mut b = t.batch();
        assert_eq!(b.resolve(1), Err(AliasError::Undefined(1)));
        b.define(1, 100).unwrap();
        assert_eq!(b.resolve(1), Ok(100));
        b.define(1, 101).unwrap();
        assert_eq!(b.resolve(1), Ok(101));
        b.commit();
        assert_eq!(t.get(1), Some(101));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_failed_batch_leaves_its_aliases_undefined() {
        let mut t = AliasTable::new(10);
        let mut b = t.batch();
        b.define(1, 100).unwrap();
        b.define(2, 200).unwrap();
        b.commit();
        let mut b = t.batch();
        b.define(2, 201).unwrap();
        b.define(3, 300).unwrap();
        b.abort();
        assert_eq!(t.get(1), Some(100));
        assert_eq!(t.get(2), None);
        assert_eq!(t.get(3), None);
    }

    #[test]
    fn aliases_are_bounded() {
        let mut t = AliasTable::new(2);
        let mut b = t.batch();
        assert_eq!(
            b.define(2, 1),
            Err(AliasError::OutOfRange { alias: 2, max: 2 })
        );
        assert!(b.resolve(5).is_err());
        assert!(b.define(1, 1).is_ok());
        let mut t = AliasTable::new(0);
        assert!(t.batch().define(0, 1).is_err());
    }
}
