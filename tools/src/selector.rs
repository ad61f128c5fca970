//! Selectors on the command line, as a predicate over series keys:
//!
//! | text | selects |
//! |---|---|
//! | `*` | every series |
//! | `clicks` | every series of metric `clicks` |
//! | `clicks{country=US,ad!=7}` | series of `clicks` whose labels pass every matcher (a missing label counts as empty) |
//! | `exact:clicks{ad=7,country=US}` | that one series |
//! | `prefix:com.example` | names `com.example` and below in the dotted hierarchy (`com.example.music`, not `com.examples`) |
//!
//! The `tally` query CLI sends selectors to the server, whose selectors are an exact
//! series, a metric with matchers and group-by labels, or a prefix
//! ([`QuerySelector::parse`], [`QUERY_SYNTAX`]).

use tallydb_protocol::{MatchOp, Matcher, MetricSelector, Selector};
use tallydb_storage::SeriesKey;

/// The selector syntax of `tally`, for its `--help`.
pub const QUERY_SYNTAX: &str = "\
Selectors:
  page_hits                         every series of metric page_hits, summed
  video_views{video=v42}            exactly that series (labels in any order)
  ad_clicks{country=US,ad!=ad007}   every ad_clicks series passing all matchers
                                    (any != makes it a matcher selector)
  ad_clicks{country=US} by (ad)     matchers, one group per value of ad
  ad_clicks by (country,ad)         the whole metric, grouped
  metric:ad_clicks{country=US}      matchers only (not the exact series)
  exact:ad_clicks{ad=ad001,country=US}   the exact series, spelled out
  com.example.*                     every metric under com.example. (dotted hierarchy)
  prefix:com.example                com.example itself and every metric under it
A missing label counts as empty for matchers. Quote selectors for the shell.";

/// A selector of the `tally` CLI, owned; [`QuerySelector::to_protocol`] borrows it
/// as the wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuerySelector {
    /// One series by canonical key.
    Exact(String),
    /// A metric, matchers `(label, value, equal?)` and group-by labels.
    Metric {
        /// Metric name.
        name: String,
        /// `(label, value, equal?)`, all must hold.
        matchers: Vec<(String, String, bool)>,
        /// Labels to group by.
        group_by: Vec<String>,
    },
    /// A metric-name prefix as the server understands it (dotted hierarchy).
    Prefix(String),
}

impl QuerySelector {
    /// Parses the forms of [`QUERY_SYNTAX`].
    pub fn parse(text: &str) -> Result<QuerySelector, String> {
        let s = text.trim();
        if s.is_empty() || s == "*" {
            return Err(format!(
                "selector {text:?}: name a metric, a series or a prefix (see --help)"
            ));
        }
        if let Some(k) = s.strip_prefix("exact:") {
            let key = SeriesKey::parse(k.trim()).map_err(|e| format!("selector {text:?}: {e}"))?;
            return Ok(QuerySelector::Exact(key.as_str().to_string()));
        }
        if let Some(p) = s.strip_prefix("prefix:") {
            return Self::prefix(text, p.trim());
        }
        if let Some(p) = s.strip_suffix(".*") {
            return Self::prefix(text, &format!("{p}."));
        }
        let (forced_metric, s) = match s.strip_prefix("metric:") {
            Some(rest) => (true, rest.trim()),
            None => (false, s),
        };
        // Split `head [by (l1,l2)]`, head being `name` or `name{…}`.
        let (head, tail) = match s.find('}') {
            Some(i) => (&s[..=i], s[i + 1..].trim()),
            None => match s.find(|c: char| c.is_whitespace() || c == '(') {
                Some(i) => (&s[..i], s[i..].trim()),
                None => (s, ""),
            },
        };
        let group_by = if tail.is_empty() {
            None
        } else {
            let list = tail
                .strip_prefix("by")
                .map(str::trim)
                .and_then(|l| l.strip_prefix('('))
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| {
                    format!(
                        "selector {text:?}: expected `by (label,…)` after the series, got {tail:?}"
                    )
                })?;
            Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        };
        if head.contains('*') {
            return Err(format!(
                "selector {text:?}: `*` is only allowed as a trailing `.*` (prefix)"
            ));
        }
        let Select::Metric(name, matchers) = Select::parse(head)? else {
            return Err(format!("selector {text:?}: not a metric selector"));
        };
        let exact = head.contains('{')
            && group_by.is_none()
            && !forced_metric
            && matchers.iter().all(|(_, _, eq)| *eq);
        if exact {
            let key = SeriesKey::parse(head).map_err(|e| format!("selector {text:?}: {e}"))?;
            return Ok(QuerySelector::Exact(key.as_str().to_string()));
        }
        Ok(QuerySelector::Metric {
            name,
            matchers,
            group_by: group_by.unwrap_or_default(),
        })
    }

    fn prefix(text: &str, p: &str) -> Result<QuerySelector, String> {
        if p.is_empty() || p == "." {
            return Err(format!("selector {text:?}: empty prefix"));
        }
        Ok(QuerySelector::Prefix(p.to_string()))
    }

    /// The wire selector, borrowing from `self`.
    pub fn to_protocol(&self) -> Selector<'_> {
        match self {
            QuerySelector::Exact(k) => Selector::Exact(k),
            QuerySelector::Prefix(p) => Selector::Prefix(p),
            QuerySelector::Metric {
                name,
                matchers,
                group_by,
            } => Selector::Metric(MetricSelector {
                name,
                matchers: matchers
                    .iter()
                    .map(|(l, v, eq)| Matcher {
                        label: l,
                        op: if *eq { MatchOp::Eq } else { MatchOp::NotEq },
                        value: v,
                    })
                    .collect(),
                group_by: group_by.iter().map(String::as_str).collect(),
            }),
        }
    }

    /// The group-by labels (empty unless a metric selector with `by (…)`).
    pub fn group_by(&self) -> &[String] {
        match self {
            QuerySelector::Metric { group_by, .. } => group_by,
            _ => &[],
        }
    }
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// Every series.
    All,
    /// One series by canonical key.
    Exact(String),
    /// A metric and label matchers `(label, value, equal?)`.
    Metric(String, Vec<(String, String, bool)>),
    /// A name prefix.
    Prefix(String),
}

impl Select {
    /// Parses the text forms in the module documentation.
    pub fn parse(s: &str) -> Result<Select, String> {
        let s = s.trim();
        if s == "*" || s.is_empty() {
            return Ok(Select::All);
        }
        if let Some(k) = s.strip_prefix("exact:") {
            let key = SeriesKey::parse(k).map_err(|e| format!("selector {s:?}: {e}"))?;
            return Ok(Select::Exact(key.as_str().to_string()));
        }
        if let Some(p) = s.strip_prefix("prefix:") {
            return Ok(Select::Prefix(p.to_string()));
        }
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let mut matchers = Vec::new();
        if let Some(body) = rest {
            let inner = body
                .strip_prefix('{')
                .and_then(|b| b.strip_suffix('}'))
                .ok_or_else(|| format!("selector {s:?}: labels must be written {{a=b,c!=d}}"))?;
            for m in inner.split(',').filter(|m| !m.is_empty()) {
                let (l, v, eq) = if let Some((l, v)) = m.split_once("!=") {
                    (l, v, false)
                } else if let Some((l, v)) = m.split_once('=') {
                    (l, v, true)
                } else {
                    return Err(format!(
                        "selector {s:?}: matcher {m:?} is not label=value or label!=value"
                    ));
                };
                matchers.push((l.trim().to_string(), v.trim().to_string(), eq));
            }
        }
        if name.is_empty() {
            return Err(format!("selector {s:?} has no metric name"));
        }
        Ok(Select::Metric(name.to_string(), matchers))
    }

    /// True if `key` is selected.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        match self {
            Select::All => true,
            Select::Exact(k) => key.as_str() == k,
            Select::Prefix(p) => {
                let name = key.name();
                name.strip_prefix(p.as_str()).is_some_and(|rest| {
                    rest.is_empty() || p.ends_with('.') || rest.starts_with('.')
                })
            }
            Select::Metric(name, matchers) => {
                key.name() == name
                    && matchers.iter().all(|(l, v, eq)| {
                        let got = key.label(l).unwrap_or_default();
                        (got == v.as_str()) == *eq
                    })
            }
        }
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
    }

    #[test]
    fn query_selectors() {
        use QuerySelector as Q;
        let metric = |n: &str, m: &[(&str, &str, bool)], g: &[&str]| Q::Metric {
            name: n.into(),
            matchers: m
                .iter()
                .map(|(l, v, e)| (l.to_string(), v.to_string(), *e))
                .collect(),
            group_by: g.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(Q::parse("hits"), Ok(metric("hits", &[], &[])));
        assert_eq!(
            Q::parse("clicks{country=US,ad=7}"),
            Ok(Q::Exact("clicks{ad=7,country=US}".into()))
        );
        assert_eq!(
            Q::parse("clicks{country=US,ad!=7}"),
            Ok(metric(
                "clicks",
                &[("country", "US", true), ("ad", "7", false)],
                &[]
            ))
        );
        assert_eq!(
            Q::parse("clicks{country=US} by (ad, os)"),
            Ok(metric("clicks", &[("country", "US", true)], &["ad", "os"]))
        );
        assert_eq!(
            Q::parse("clicks by(ad)"),
            Ok(metric("clicks", &[], &["ad"]))
        );
        assert_eq!(
            Q::parse("metric:clicks{country=US}"),
            Ok(metric("clicks", &[("country", "US", true)], &[]))
        );
        assert_eq!(
            Q::parse("com.example.*"),
            Ok(Q::Prefix("com.example.".into()))
        );
        assert_eq!(
            Q::parse("prefix:com.example"),
            Ok(Q::Prefix("com.example".into()))
        );
        assert_eq!(
            Q::parse("exact:clicks{b=2,a=1}"),
            Ok(Q::Exact("clicks{a=1,b=2}".into()))
        );
        for bad in [
            "",
            "*",
            "clicks{a}",
            "clicks{a=1} group (x)",
            "cl*cks",
            "prefix:",
        ] {
            assert!(Q::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let q = Q::parse("clicks{ad!=7} by (country)").expect("parses");
        let Selector::Metric(m) = q.to_protocol() else {
            panic!("metric expected")
        };
        assert_eq!(m.matchers[0].op, MatchOp::NotEq);
        assert_eq!(m.group_by, vec!["country"]);
    }
}
