//! Selectors on the command line: the shared grammar of
//! [`tallydb_protocol::text::selector`] (the same text means the same thing in
//! `tally`, `tally-admin` and the HTTP API), plus the two uses the tools make of it:
//! [`QuerySelector`] for server queries and [`Select`] to filter series offline.

use tallydb_protocol::text::ParsedSelector;
use tallydb_protocol::Selector;
use tallydb_storage::SeriesKey;

pub use tallydb_protocol::text::SELECTOR_SYNTAX as QUERY_SYNTAX;

/// A selector for a server query (`tally`): any form but `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySelector(ParsedSelector);

impl QuerySelector {
    /// Parses the forms of [`QUERY_SYNTAX`], refusing `*` (a query names a metric, a
    /// series or a prefix).
    pub fn parse(text: &str) -> Result<QuerySelector, String> {
        match ParsedSelector::parse(text).map_err(|e| e.to_string())? {
            ParsedSelector::All => Err(format!(
                "selector {text:?}: name a metric, a series or a prefix (see --help)"
            )),
            sel => Ok(QuerySelector(sel)),
        }
    }

    /// The parsed form.
    pub fn parsed(&self) -> &ParsedSelector {
        &self.0
    }

    /// The wire selector, borrowing from `self`.
    pub fn to_protocol(&self) -> Selector<'_> {
        // `parse` refuses `All`, the only form without a wire selector.
        self.0.to_protocol().unwrap_or(Selector::Prefix(""))
    }

    /// The group-by labels (empty unless `by (…)` was given).
    pub fn group_by(&self) -> &[String] {
        self.0.group_by()
    }
}

/// A selector used as a predicate over series keys (`tally-admin export`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select(ParsedSelector);

impl Select {
    /// Parses the forms of [`QUERY_SYNTAX`]; `*` (or nothing) selects every series.
    pub fn parse(s: &str) -> Result<Select, String> {
        if s.trim().is_empty() {
            return Ok(Select(ParsedSelector::All));
        }
        ParsedSelector::parse(s)
            .map(Select)
            .map_err(|e| e.to_string())
    }

    /// True if `key` is selected.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.0.matches(key.as_str(), key.name(), |l| key.label(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SeriesKey {
        SeriesKey::parse(s).expect("valid key")
    }

    #[test]
    fn every_form_selects_what_it_says() {
        let us = key("clicks{ad=7,country=US}");
        let fr = key("clicks{ad=8,country=FR}");
        let m = key("com.example.music");
        assert!(Select::parse("*").expect("parses").matches(&m));
        let s = Select::parse("clicks{country=US}").expect("parses");
        assert!(s.matches(&us) && !s.matches(&fr) && !s.matches(&m));
        let s = Select::parse("clicks{ad!=7}").expect("parses");
        assert!(!s.matches(&us) && s.matches(&fr));
        let s = Select::parse("exact:clicks{country=US,ad=7}").expect("parses");
        assert!(s.matches(&us) && !s.matches(&fr));
        let s = Select::parse("prefix:com.example").expect("parses");
        assert!(s.matches(&m) && !s.matches(&key("com.examples")));
        assert!(Select::parse("clicks{country}").is_err());
        let cafe = key(r#"hits{page="/search?q=café"}"#);
        let s = Select::parse(r#"hits{page="/search?q=caf\u00e9"}"#).expect("parses");
        assert!(s.matches(&cafe));
        let s = Select::parse(r#"exact:hits{page="/search?q=café"}"#).expect("parses");
        assert!(s.matches(&cafe));
    }

    #[test]
    fn query_selectors() {
        assert!(QuerySelector::parse("*").is_err());
        assert!(QuerySelector::parse("").is_err());
        let q = QuerySelector::parse("clicks{ad!=7} by (country)").expect("parses");
        assert_eq!(q.group_by(), ["country"]);
        let Selector::Metric(m) = q.to_protocol() else {
            panic!("metric expected")
        };
        assert_eq!(m.group_by, vec!["country"]);
    }
}
