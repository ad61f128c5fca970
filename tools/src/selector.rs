//! Selectors on the command line, as a predicate over series keys:
//!
//! | text | selects |
//! |---|---|
//! | `*` | every series |
//! | `clicks` | every series of metric `clicks` |
//! | `clicks{country=US,ad!=7}` | series of `clicks` whose labels pass every matcher (a missing label counts as empty) |
//! | `exact:clicks{ad=7,country=US}` | that one series |
//! | `prefix:com.example` | names `com.example` and below in the dotted hierarchy (`com.example.music`, not `com.examples`) |

use tallydb_storage::SeriesKey;

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
                        let got = key
                            .labels()
                            .find(|(kl, _)| kl == l)
                            .map_or("", |(_, kv)| kv);
                        (got == v) == *eq
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
}
