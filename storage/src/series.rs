//! Series keys: a metric name plus optional labels, written canonically as
//! `ad_clicks{ad=ad001,country=US}` with labels sorted by name.
//!
//! The rules (checked by [`SeriesKey::parse`], each broken rule named in the error):
//! - metric name: 1 to 128 bytes of `[A-Za-z0-9_.:-]`, starting with a letter or `_`;
//!   dots make hierarchical names (`com.example.music`) for prefix queries;
//! - label name: 1 to 64 bytes of `[A-Za-z0-9_]`, starting with a letter or `_`; names
//!   starting with `__` (such as `__name__`) are reserved for the system;
//! - label value: 1 to 128 bytes (UTF-8) of any characters but control characters;
//! - at most 16 labels, no label name twice; the whole key at most 1024 bytes.
//!
//! A value is written bare when it only uses the plain set (printable ASCII except
//! space and `{}=,"\`), and otherwise quoted as PromQL writes strings:
//! `page="/search?q=café"`, with `\"` and `\\` inside the quotes. Keys are accepted
//! in either form (and with the escapes `\n`, `\t`, `\r`, which name control
//! characters and are therefore refused); the canonical text quotes exactly the values
//! outside the plain set, so every key of the plain set keeps its canonical text.

use std::borrow::Cow;
use std::fmt;

/// Longest metric name in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label name in bytes.
pub const MAX_LABEL_NAME_LEN: usize = 64;
/// Longest label value in bytes (UTF-8, unquoted).
pub const MAX_LABEL_VALUE_LEN: usize = 128;
/// Most labels on one series.
pub const MAX_LABELS: usize = 16;
/// Longest canonical key in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Label names starting with this are reserved for the system (`__name__`, `__child__`).
pub const RESERVED_LABEL_PREFIX: &str = "__";

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
    /// A label name starts with `__`, which is reserved.
    #[error("label name {name:?} is reserved: names starting with \"__\" (such as __name__) belong to the system")]
    ReservedLabelName {
        /// The label name.
        name: String,
    },
    /// A label value is empty, too long or has a control character.
    #[error("value {value:?} of label {label:?} is invalid: values are 1 to {MAX_LABEL_VALUE_LEN} bytes of UTF-8 without control characters")]
    BadLabelValue {
        /// The label.
        label: String,
        /// The value.
        value: String,
    },
    /// A bare value uses characters outside the plain set: it must be quoted.
    #[error("value {value:?} of label {label:?} must be quoted: bare values use printable ASCII without space or {{}}=,\"\\; write {label}=\"...\" with \\\" and \\\\ escaped")]
    UnquotedValue {
        /// The label.
        label: String,
        /// The value as written.
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
    #[error("malformed label block in {key:?}: expected name{{label=value,...}} with values bare or quoted (\"...\" with \\\" and \\\\)")]
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
    !s.is_empty() && s.len() <= MAX_LABEL_VALUE_LEN && !s.chars().any(char::is_control)
}

/// True if a value is written bare in a canonical key: printable ASCII except space
/// and `{}=,"\` (the whole value set before quoting existed).
pub fn is_plain_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && !b"{}=,\"\\".contains(&c))
}

/// Appends a label value as a canonical key writes it: bare when
/// [`is_plain_value`], else in double quotes with `"` and `\` escaped.
pub fn write_value(out: &mut String, value: &str) {
    if is_plain_value(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads one label value at the start of `s`: bare (up to `,` or `}`) or quoted
/// (escapes `\"`, `\\`, `\n`, `\t`, `\r`). Returns the value and the rest of `s`,
/// `None` if a quoted value is not closed or has an unknown escape.
pub(crate) fn read_value(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let Some(body) = s.strip_prefix('"') else {
        let end = s.find([',', '}']).unwrap_or(s.len());
        return Some((Cow::Borrowed(&s[..end]), &s[end..]));
    };
    let mut out: Option<String> = None;
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let v = out.map_or(Cow::Borrowed(&body[..i]), Cow::Owned);
                return Some((v, &body[i + 1..]));
            }
            '\\' => {
                let owned = out.get_or_insert_with(|| body[..i].to_string());
                let (_, e) = chars.next()?;
                owned.push(match e {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    _ => return None,
                });
            }
            c => {
                if let Some(o) = out.as_mut() {
                    o.push(c);
                }
            }
        }
    }
    None
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

/// Checks a label name, refusing the reserved names (`__name__`, any `__…`).
pub fn validate_label_name(label: &str) -> Result<(), SeriesError> {
    if !label_name_ok(label) {
        return Err(SeriesError::BadLabelName {
            name: label.to_string(),
        });
    }
    if label.starts_with(RESERVED_LABEL_PREFIX) {
        return Err(SeriesError::ReservedLabelName {
            name: label.to_string(),
        });
    }
    Ok(())
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
        let malformed = || SeriesError::Malformed {
            key: key.to_string(),
        };
        let mut inner = block.strip_prefix('{').ok_or_else(malformed)?;
        let mut labels: Vec<(&str, Cow<'_, str>)> = Vec::new();
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                if !after.is_empty() || (labels.is_empty() && block.len() > 2) {
                    return Err(malformed());
                }
                break;
            }
            let (l, rest) = inner.split_once('=').ok_or_else(malformed)?;
            let quoted = rest.starts_with('"');
            let (v, rest) = read_value(rest).ok_or_else(malformed)?;
            if !quoted && !v.is_empty() && !is_plain_value(&v) {
                return Err(SeriesError::UnquotedValue {
                    label: l.to_string(),
                    value: v.into_owned(),
                });
            }
            labels.push((l, v));
            inner = match rest.strip_prefix(',') {
                Some(r) if !r.starts_with('}') => r,
                Some(_) => return Err(malformed()),
                None if rest.starts_with('}') => rest,
                None => return Err(malformed()),
            };
        }
        let refs: Vec<(&str, &str)> = labels.iter().map(|(l, v)| (*l, v.as_ref())).collect();
        Self::from_parts(name, &refs)
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
                write_value(&mut canonical, v);
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

    /// The labels, sorted by name, with values unquoted.
    pub fn labels(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        self.as_key_ref().labels()
    }

    /// The value of one label (unquoted), if present.
    pub fn label(&self, name: &str) -> Option<Cow<'_, str>> {
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

    /// The labels, sorted by name, with values unquoted (borrowed unless a
    /// quoted value holds an escape).
    pub fn labels(self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> {
        let mut inner = self
            .canonical
            .get(self.name_len + 1..self.canonical.len().saturating_sub(1))
            .unwrap_or("");
        std::iter::from_fn(move || {
            let (l, rest) = inner.split_once('=')?;
            let (v, rest) = read_value(rest)?;
            inner = rest.strip_prefix(',').unwrap_or("");
            Some((l, v))
        })
    }

    /// The value of one label (unquoted), if present.
    pub fn label(self, name: &str) -> Option<Cow<'a, str>> {
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
        assert_eq!(k.label("country").as_deref(), Some("US"));
        assert_eq!(k.labels().count(), 2);
        let plain = SeriesKey::parse("com.example.music").expect("valid");
        assert_eq!(plain.labels().count(), 0);
        assert_eq!(SeriesKey::parse("x{}").expect("valid").as_str(), "x");
        let r = SeriesKeyRef::from_canonical(k.as_str());
        assert_eq!(
            (r.name(), r.label("ad").as_deref(), r.label("x").as_deref()),
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

    #[test]
    fn utf8_values_are_quoted_and_plain_keys_keep_their_text() {
        let k = SeriesKey::parse(r#"hits{page="/search?q=café",site=web}"#).expect("valid");
        assert_eq!(k.as_str(), r#"hits{page="/search?q=café",site=web}"#);
        assert_eq!(k.label("page").as_deref(), Some("/search?q=café"));
        // A quoted value of the plain set is written bare: one canonical text per key.
        let bare = SeriesKey::parse(r#"hits{site="web"}"#).expect("valid");
        assert_eq!(bare.as_str(), "hits{site=web}");
        for (written, value, canonical) in [
            (r#"m{v="a\"b"}"#, "a\"b", r#"m{v="a\"b"}"#),
            (r#"m{v="a\\b"}"#, "a\\b", r#"m{v="a\\b"}"#),
            (r#"m{v="a,b}c=d"}"#, "a,b}c=d", r#"m{v="a,b}c=d"}"#),
            (r#"m{v="with space"}"#, "with space", r#"m{v="with space"}"#),
            (r#"m{v="日本"}"#, "日本", r#"m{v="日本"}"#),
        ] {
            let k = SeriesKey::parse(written).expect(written);
            assert_eq!(k.as_str(), canonical, "{written}");
            assert_eq!(k.label("v").as_deref(), Some(value), "{written}");
            let again = SeriesKey::parse(k.as_str()).expect("canonical parses");
            assert_eq!(again, k, "round trip of {written}");
            let r = SeriesKeyRef::from_canonical(k.as_str());
            assert_eq!(r.label("v").as_deref(), Some(value));
        }
        let two = SeriesKey::parse(r#"m{b="x,y=z",a="}"}"#).expect("valid");
        assert_eq!(
            two.labels()
                .map(|(l, v)| (l.to_string(), v.into_owned()))
                .collect::<Vec<_>>(),
            vec![("a".into(), "}".into()), ("b".into(), "x,y=z".into())]
        );
    }

    #[test]
    fn quoting_rules_are_named() {
        for bad in [r#"m{v="a\nb"}"#, r#"m{v="tab\there"}"#, "m{v=\"a\u{1}\"}"] {
            assert!(
                matches!(
                    SeriesKey::parse(bad),
                    Err(SeriesError::BadLabelValue { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            SeriesKey::parse("m{v=café}"),
            Err(SeriesError::UnquotedValue { .. })
        ));
        for bad in [r#"m{v="open}"#, r#"m{v="a\qb"}"#, r#"m{v="a"b}"#] {
            assert!(
                matches!(SeriesKey::parse(bad), Err(SeriesError::Malformed { .. })),
                "{bad}"
            );
        }
        let long = format!("m{{v=\"{}\"}}", "é".repeat(65));
        assert!(matches!(
            SeriesKey::parse(&long),
            Err(SeriesError::BadLabelValue { .. })
        ));
        let err = SeriesKey::parse("m{__name__=x}").expect_err("reserved");
        assert!(matches!(err, SeriesError::ReservedLabelName { .. }));
        assert!(err.to_string().contains("reserved"), "{err}");
        assert!(matches!(
            SeriesKey::parse("m{__child__=x}"),
            Err(SeriesError::ReservedLabelName { .. })
        ));
        assert!(SeriesKey::parse("m{_private=x}").is_ok());
    }
}
