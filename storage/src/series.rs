//! Series keys: a metric name plus optional labels, written canonically as
//! `ad_clicks{ad=ad001,country=US}` with labels sorted by name.
//!
//! The rules (checked by [`SeriesKey::parse`], each broken rule named in the error):
//! - metric name: 1 to 128 bytes of `[A-Za-z0-9_.:-]`, starting with a letter or `_`;
//!   dots make hierarchical names (`com.example.music`) for prefix queries;
//! - label name: 1 to 64 bytes of `[A-Za-z0-9_]`, starting with a letter or `_`;
//! - label value: 1 to 128 bytes of printable ASCII except space and `{}=,"\`;
//! - at most 16 labels, no label name twice; the whole key at most 1024 bytes.

use std::fmt;

/// Longest metric name in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label name in bytes.
pub const MAX_LABEL_NAME_LEN: usize = 64;
/// Longest label value in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 128;
/// Most labels on one series.
pub const MAX_LABELS: usize = 16;
/// Longest canonical key in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Which rule a series key broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeriesError {
    /// The metric name is empty.
    #[error("metric name is empty")]
    EmptyName,
    /// The metric name is longer than [`MAX_NAME_LEN`].
    #[error("metric name is {len} bytes, longer than the limit of {MAX_NAME_LEN}")]
    NameTooLong {
        /// Length found.
        len: usize,
    },
    /// The metric name has a character outside its set.
    #[error("metric name {name:?} has {ch:?} at byte {at}: names use [A-Za-z0-9_.:-] and start with a letter or '_'")]
    BadNameChar {
        /// The name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A label name is empty, too long or has a bad character.
    #[error("label name {name:?} is invalid: label names are 1 to {MAX_LABEL_NAME_LEN} bytes of [A-Za-z0-9_] starting with a letter or '_'")]
    BadLabelName {
        /// The label name.
        name: String,
    },
    /// A label value is empty, too long or has a bad character.
    #[error("value {value:?} of label {label:?} is invalid: values are 1 to {MAX_LABEL_VALUE_LEN} bytes of printable ASCII without space or {{}}=,\"\\")]
    BadLabelValue {
        /// The label.
        label: String,
        /// The value.
        value: String,
    },
    /// The same label name appears twice.
    #[error("label {label:?} appears twice")]
    DuplicateLabel {
        /// The label.
        label: String,
    },
    /// More than [`MAX_LABELS`] labels.
    #[error("{count} labels, more than the limit of {MAX_LABELS}")]
    TooManyLabels {
        /// Labels found.
        count: usize,
    },
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("series key is {len} bytes, longer than the limit of {MAX_KEY_LEN}")]
    KeyTooLong {
        /// Length found.
        len: usize,
    },
    /// The label block is not `{name=value,...}`.
    #[error("malformed label block in {key:?}: expected name{{label=value,...}}")]
    Malformed {
        /// The key as given.
        key: String,
    },
}

/// A validated series key in canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    canonical: String,
    name_len: usize,
}

fn name_char_ok(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (!first && (c.is_ascii_digit() || b".:-".contains(&c)))
}

fn label_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_NAME_LEN
        && s.bytes()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit()))
}

fn label_value_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_VALUE_LEN
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && !b"{}=,\"\\".contains(&c))
}

/// Checks a metric name (also used for prefix selectors, which may end anywhere).
pub fn validate_name(name: &str) -> Result<(), SeriesError> {
    if name.is_empty() {
        return Err(SeriesError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SeriesError::NameTooLong { len: name.len() });
    }
    for (at, c) in name.bytes().enumerate() {
        if !name_char_ok(c, at == 0) {
            let ch = name[at..].chars().next().unwrap_or('?');
            return Err(SeriesError::BadNameChar {
                name: name.to_string(),
                ch,
                at,
            });
        }
    }
    Ok(())
}

/// Checks a label name.
pub fn validate_label_name(label: &str) -> Result<(), SeriesError> {
    if label_name_ok(label) {
        Ok(())
    } else {
        Err(SeriesError::BadLabelName {
            name: label.to_string(),
        })
    }
}

impl SeriesKey {
    /// Parses and validates a key, sorting its labels into canonical order.
    pub fn parse(key: &str) -> Result<SeriesKey, SeriesError> {
        if key.len() > MAX_KEY_LEN {
            return Err(SeriesError::KeyTooLong { len: key.len() });
        }
        let (name, rest) = match key.find('{') {
            None => (key, None),
            Some(i) => (&key[..i], Some(&key[i..])),
        };
        validate_name(name)?;
        let Some(block) = rest else {
            return Ok(SeriesKey {
                canonical: key.to_string(),
                name_len: key.len(),
            });
        };
        let inner = block
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .ok_or_else(|| SeriesError::Malformed {
                key: key.to_string(),
            })?;
        let mut labels: Vec<(&str, &str)> = Vec::new();
        if !inner.is_empty() {
            for pair in inner.split(',') {
                let (l, v) = pair.split_once('=').ok_or_else(|| SeriesError::Malformed {
                    key: key.to_string(),
                })?;
                labels.push((l, v));
            }
        }
        Self::from_parts(name, &labels)
    }

    /// Builds a key from a name and labels in any order.
    pub fn from_parts(name: &str, labels: &[(&str, &str)]) -> Result<SeriesKey, SeriesError> {
        validate_name(name)?;
        if labels.len() > MAX_LABELS {
            return Err(SeriesError::TooManyLabels {
                count: labels.len(),
            });
        }
        let mut sorted: Vec<(&str, &str)> = labels.to_vec();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (i, (l, v)) in sorted.iter().enumerate() {
            validate_label_name(l)?;
            if !label_value_ok(v) {
                return Err(SeriesError::BadLabelValue {
                    label: l.to_string(),
                    value: v.to_string(),
                });
            }
            if i > 0 && sorted[i - 1].0 == *l {
                return Err(SeriesError::DuplicateLabel {
                    label: l.to_string(),
                });
            }
        }
        let mut canonical = String::with_capacity(name.len() + 2 + labels.len() * 16);
        canonical.push_str(name);
        if !sorted.is_empty() {
            canonical.push('{');
            for (i, (l, v)) in sorted.iter().enumerate() {
                if i > 0 {
                    canonical.push(',');
                }
                canonical.push_str(l);
                canonical.push('=');
                canonical.push_str(v);
            }
            canonical.push('}');
        }
        if canonical.len() > MAX_KEY_LEN {
            return Err(SeriesError::KeyTooLong {
                len: canonical.len(),
            });
        }
        Ok(SeriesKey {
            canonical,
            name_len: name.len(),
        })
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// A borrowed view of the key.
    pub fn as_key_ref(&self) -> SeriesKeyRef<'_> {
        SeriesKeyRef {
            canonical: &self.canonical,
            name_len: self.name_len,
        }
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        self.as_key_ref().name()
    }

    /// The labels, sorted by name.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.as_key_ref().labels()
    }

    /// The value of one label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.as_key_ref().label(name)
    }
}

/// A borrowed series key in canonical form: what the series dictionary hands
/// out, since it keeps every key in one shared buffer rather than one
/// [`SeriesKey`] per series.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKeyRef<'a> {
    canonical: &'a str,
    name_len: usize,
}

impl<'a> SeriesKeyRef<'a> {
    /// A view of text already known to be a canonical key (stored by the
    /// dictionary after [`SeriesKey::parse`]).
    pub(crate) fn from_canonical(canonical: &'a str) -> Self {
        SeriesKeyRef {
            canonical,
            name_len: canonical.find('{').unwrap_or(canonical.len()),
        }
    }

    /// The canonical text.
    pub fn as_str(self) -> &'a str {
        self.canonical
    }

    /// The metric name.
    pub fn name(self) -> &'a str {
        &self.canonical[..self.name_len]
    }

    /// The labels, sorted by name.
    pub fn labels(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let inner = self
            .canonical
            .get(self.name_len + 1..self.canonical.len().saturating_sub(1))
            .unwrap_or("");
        inner
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
    }

    /// The value of one label, if present.
    pub fn label(self, name: &str) -> Option<&'a str> {
        self.labels().find(|(l, _)| *l == name).map(|(_, v)| v)
    }

    /// An owned copy.
    pub fn to_key(self) -> SeriesKey {
        SeriesKey {
            canonical: self.canonical.to_string(),
            name_len: self.name_len,
        }
    }
}

impl fmt::Display for SeriesKeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical)
    }
}

impl fmt::Debug for SeriesKeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeriesKey({})", self.canonical)
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeriesKey({})", self.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_labels() {
        let k = SeriesKey::parse("ad_clicks{country=US,ad=ad001}").expect("valid");
        assert_eq!(k.as_str(), "ad_clicks{ad=ad001,country=US}");
        assert_eq!(k.name(), "ad_clicks");
        assert_eq!(k.label("country"), Some("US"));
        assert_eq!(k.labels().count(), 2);
        let plain = SeriesKey::parse("com.example.music").expect("valid");
        assert_eq!(plain.labels().count(), 0);
        assert_eq!(SeriesKey::parse("x{}").expect("valid").as_str(), "x");
        let r = SeriesKeyRef::from_canonical(k.as_str());
        assert_eq!(
            (r.name(), r.label("ad"), r.label("x")),
            ("ad_clicks", Some("ad001"), None)
        );
        assert_eq!(
            r.labels().collect::<Vec<_>>(),
            k.labels().collect::<Vec<_>>()
        );
        assert_eq!(r.to_key(), k);
        assert_eq!(SeriesKeyRef::from_canonical("a.b").name(), "a.b");
    }

    #[test]
    fn each_rule_is_named() {
        assert_eq!(SeriesKey::parse(""), Err(SeriesError::EmptyName));
        assert!(matches!(
            SeriesKey::parse("9lives"),
            Err(SeriesError::BadNameChar { ch: '9', at: 0, .. })
        ));
        assert!(matches!(
            SeriesKey::parse("a b"),
            Err(SeriesError::BadNameChar { ch: ' ', at: 1, .. })
        ));
        assert!(matches!(
            SeriesKey::parse("a{1x=2}"),
            Err(SeriesError::BadLabelName { .. })
        ));
        assert!(matches!(
            SeriesKey::parse("a{x=}"),
            Err(SeriesError::BadLabelValue { .. })
        ));
        assert!(matches!(
            SeriesKey::parse("a{x=1,x=2}"),
            Err(SeriesError::DuplicateLabel { .. })
        ));
        assert!(matches!(
            SeriesKey::parse("a{x=1"),
            Err(SeriesError::Malformed { .. })
        ));
        assert!(matches!(
            SeriesKey::parse(&"a".repeat(200)),
            Err(SeriesError::NameTooLong { len: 200 })
        ));
        let many: Vec<String> = (0..17).map(|i| format!("l{i}=v")).collect();
        assert!(matches!(
            SeriesKey::parse(&format!("m{{{}}}", many.join(","))),
            Err(SeriesError::TooManyLabels { count: 17 })
        ));
    }
}
