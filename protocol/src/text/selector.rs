//! Selectors as text, one grammar for `tally`, `tally-admin` and the HTTP API
//! ([`ParsedSelector::parse`]):
//!
//! | text | selects |
//! |---|---|
//! | `*` | every series (offline tools only; a server query names a metric) |
//! | `clicks` | every series of metric `clicks`, summed |
//! | `clicks{country="US",ad!="7"}` | series of `clicks` passing every matcher, summed (as in PromQL) |
//! | `clicks{country=US} by (ad)` | matchers, one group per value of `ad` |
//! | `{__name__="clicks",country="US"}` | the PromQL spelling of `clicks{country=US}` |
//! | `{country="US"}` | series of any metric with `country=US` (at least one `=` with a non-empty value) |
//! | `metric:clicks{country=US}` | the same as `clicks{country=US}` (kept for old scripts) |
//! | `exact:clicks{ad=7,country=US}` | that one series and no other (labels in any order) |
//! | `com.example.*` | every metric under `com.example.` in the dotted hierarchy |
//! | `prefix:com.example` | `com.example` itself and every metric under it |
//! | `com.example.* by (__child__)` | one group per path segment below the prefix |
//!
//! Label values are bare (printable ASCII without space or `{}=,"\`) or quoted as
//! PromQL quotes them: `"…"` or `'…'`, with the escapes `\"`, `\'`, `\\`, `\n`, `\r`,
//! `\t` and `\uXXXX`. A missing label counts as empty for matchers. Label names
//! starting with `__` are reserved: `__name__` may only name the metric, and
//! [`CHILD_LABEL`] may only group a prefix.

use crate::request::{MatchOp, Matcher, MetricSelector, PrefixSelector, Selector};

/// The group-by name that splits a prefix selector by the next path segment of the
/// metric name: `com.example.* by (__child__)` sums `com.example.music.jazz` into
/// the group `music`.
pub const CHILD_LABEL: &str = "__child__";

/// The selector forms, for `--help` texts.
pub const SELECTOR_SYNTAX: &str = "\
Selectors:
  page_hits                         every series of metric page_hits, summed
  ad_clicks{country=US,ad!=ad007}   every ad_clicks series passing all matchers
                                    (as in PromQL; a missing label counts as empty)
  ad_clicks{country=US} by (ad)     matchers, one group per value of ad
  ad_clicks by (country,ad)         the whole metric, grouped
  hits{page=\"/search?q=café\"}       values outside [A-Za-z0-9 punctuation] quoted,
                                    PromQL escapes \\\" \\\\ \\n \\t \\uXXXX
  {__name__=\"ad_clicks\",country=\"US\"}  the PromQL form of ad_clicks{country=US}
  {country=\"US\"}                  series of any metric with country=US
  metric:ad_clicks{country=US}      the same as ad_clicks{country=US}
  exact:video_views{video=v42}      exactly that one series (labels in any order)
  com.example.*                     every metric under com.example. (dotted hierarchy)
  prefix:com.example                com.example itself and every metric under it
  com.example.* by (__child__)      one group per child of com.example.
A missing label counts as empty for matchers. Quote selectors for the shell.";

/// Why a selector could not be read; each variant names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The text does not follow the grammar at byte `at`.
    #[error("selector {text:?}: at byte {at}: expected {expected}")]
    Syntax {
        /// The selector.
        text: String,
        /// Byte offset of the problem.
        at: usize,
        /// What the grammar wants there.
        expected: &'static str,
    },
    /// A quoted value has an unknown escape or is not closed.
    #[error("selector {text:?}: at byte {at}: {problem}; quoted values use \\\", \\', \\\\, \\n, \\r, \\t and \\uXXXX")]
    Quote {
        /// The selector.
        text: String,
        /// Byte offset of the problem.
        at: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A bare value uses characters outside the plain set.
    #[error("selector {text:?}: value {value:?} must be quoted: bare values use printable ASCII without space or {{}}=,\"\\")]
    Unquoted {
        /// The selector.
        text: String,
        /// The value.
        value: String,
    },
    /// A reserved label name (`__…`) where it is not allowed.
    #[error("selector {text:?}: label name {label:?} is reserved: names starting with \"__\" belong to the system (__name__ may only name the metric, __child__ only group a prefix)")]
    Reserved {
        /// The selector.
        text: String,
        /// The label name.
        label: String,
    },
    /// A form that cannot say what the user meant.
    #[error("selector {text:?}: {rule}")]
    Form {
        /// The selector.
        text: String,
        /// The rule broken.
        rule: &'static str,
    },
}

/// A selector read from text, owning its strings; [`ParsedSelector::to_protocol`]
/// borrows it as the wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedSelector {
    /// `*`: every series (for offline tools).
    All,
    /// One series by its canonical key (labels sorted, values quoted when needed).
    Exact(String),
    /// A metric, matchers `(label, op, value)` and group-by labels.
    Metric {
        /// Metric name; empty for any metric (then a matcher `label = non-empty
        /// value` is required, as in PromQL).
        name: String,
        /// Conditions, all of which must hold.
        matchers: Vec<(String, MatchOp, String)>,
        /// Labels to group by.
        group_by: Vec<String>,
    },
    /// A metric-name prefix in the dotted hierarchy, with group-by labels
    /// (possibly [`CHILD_LABEL`]).
    Prefix {
        /// The prefix (`com.example.` for `com.example.*`).
        prefix: String,
        /// Labels to group by.
        group_by: Vec<String>,
    },
}

/// True if a label value may be written bare: printable ASCII except space and
/// `{}=,"\` (the same rule as canonical series keys).
pub fn is_plain_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && !b"{}=,\"\\".contains(&c))
}

/// Appends a value as a canonical series key writes it: bare when
/// [`is_plain_value`], else double-quoted with `"` and `\` escaped.
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

/// A cursor over the selector text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.:-".contains(c)
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.at += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.at += s.len();
            true
        } else {
            false
        }
    }

    fn syntax(&self, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            text: self.text.to_string(),
            at: self.at,
            expected,
        }
    }

    /// A run of name characters (possibly empty).
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let r = self.rest();
        let end = r.find(|c: char| !is_name_char(c)).unwrap_or(r.len());
        self.at += end;
        &r[..end]
    }

    fn label(&mut self) -> Result<&'a str, SelectorError> {
        let w = self.word();
        let ok = w
            .bytes()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit()));
        if w.is_empty() || !ok {
            return Err(self.syntax("a label name ([A-Za-z_][A-Za-z0-9_]*)"));
        }
        Ok(w)
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let r = self.rest();
        let Some(q) = r.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            let end = r.find([',', '}', ' ', '\t']).unwrap_or(r.len());
            let v = &r[..end];
            if v.is_empty() {
                return Err(self.syntax("a label value, bare or quoted"));
            }
            if !is_plain_value(v) {
                return Err(SelectorError::Unquoted {
                    text: self.text.to_string(),
                    value: v.to_string(),
                });
            }
            self.at += end;
            return Ok(v.to_string());
        };
        let quote_err = |at: usize, problem| SelectorError::Quote {
            text: self.text.to_string(),
            at,
            problem,
        };
        let start = self.at;
        let mut out = String::new();
        let mut chars = r.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.at = start + i + 1;
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((j, e)) = chars.next() else { break };
            out.push(match e {
                '"' => '"',
                '\'' => '\'',
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hex = r
                        .get(j + 1..j + 5)
                        .ok_or_else(|| quote_err(start + j, "\\u needs four hexadecimal digits"))?;
                    let ch = u32::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(char::from_u32)
                        .ok_or_else(|| {
                            quote_err(
                                start + j,
                                "\\u needs four hexadecimal digits of a character",
                            )
                        })?;
                    for _ in 0..4 {
                        chars.next();
                    }
                    ch
                }
                _ => return Err(quote_err(start + j, "unknown escape")),
            });
        }
        Err(quote_err(start, "quoted value not closed"))
    }

    /// `by (l1, l2)` if present.
    fn group_by(&mut self) -> Result<Option<Vec<String>>, SelectorError> {
        self.skip_ws();
        if self.rest().is_empty() {
            return Ok(None);
        }
        if !self.eat("by") {
            return Err(self.syntax("`by (label,…)` or the end of the selector"));
        }
        if !self.eat("(") {
            return Err(self.syntax("`(` after by"));
        }
        let mut labels = Vec::new();
        if !self.eat(")") {
            loop {
                labels.push(self.label()?.to_string());
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(self.syntax("`,` or `)` in the by list"));
                }
                if self.eat(")") {
                    break;
                }
            }
        }
        self.skip_ws();
        if !self.rest().is_empty() {
            return Err(self.syntax("the end of the selector after `by (…)`"));
        }
        Ok(Some(labels))
    }
}

impl ParsedSelector {
    /// Parses the forms of the module table.
    pub fn parse(text: &str) -> Result<ParsedSelector, SelectorError> {
        let form = |rule| SelectorError::Form {
            text: text.to_string(),
            rule,
        };
        let reserved = |label: &str| SelectorError::Reserved {
            text: text.to_string(),
            label: label.to_string(),
        };
        let mut c = Cursor { text, at: 0 };
        c.skip_ws();
        if c.rest().is_empty() {
            return Err(form("empty: name a metric, a series or a prefix"));
        }
        if c.rest().trim_end() == "*" {
            return Ok(ParsedSelector::All);
        }
        let exact = c.eat("exact:");
        let forced_metric = !exact && c.eat("metric:");
        if !exact && !forced_metric && c.eat("prefix:") {
            let p = c.word();
            if p.is_empty() || p == "." {
                return Err(form("empty prefix"));
            }
            let group_by = c.group_by()?.unwrap_or_default();
            return Self::prefix(text, p, group_by);
        }
        let name = c.word();
        if !exact && !forced_metric && c.eat("*") {
            let Some(p) = name.strip_suffix('.').filter(|p| !p.is_empty()) else {
                return Err(form(
                    "`*` is only allowed alone or as a trailing `.*` (prefix)",
                ));
            };
            let group_by = c.group_by()?.unwrap_or_default();
            return Self::prefix(text, &format!("{p}."), group_by);
        }
        let mut name = name.to_string();
        let mut matchers: Vec<(String, MatchOp, String)> = Vec::new();
        if c.eat("{") {
            while !c.eat("}") {
                let label = c.label()?;
                let op = if c.eat("!=") {
                    MatchOp::NotEq
                } else if c.eat("=") {
                    MatchOp::Eq
                } else {
                    return Err(
                        c.syntax("`=` or `!=` after the label name (label=value or label!=value)")
                    );
                };
                let value = c.value()?;
                if label == "__name__" {
                    if op != MatchOp::Eq || !name.is_empty() {
                        return Err(form(
                            "__name__ may only name the metric once, with =, when no name precedes the braces",
                        ));
                    }
                    name = value;
                } else if label.starts_with("__") {
                    return Err(reserved(label));
                } else {
                    matchers.push((label.to_string(), op, value));
                }
                if !c.eat(",") {
                    if c.eat("}") {
                        break;
                    }
                    return Err(c.syntax("`,` or `}` after a matcher"));
                }
            }
        }
        if name.is_empty() && (exact || !named_by_matcher(&matchers)) {
            return Err(form(
                "no metric name: write metric{…}, or give at least one label=\"value\" matcher with a non-empty value, as PromQL requires",
            ));
        }
        if c.rest().trim_start().starts_with('*') {
            return Err(form(
                "`*` is only allowed alone or as a trailing `.*` (prefix)",
            ));
        }
        let group_by = c.group_by()?;
        if let Some(l) = group_by.iter().flatten().find(|l| l.starts_with("__")) {
            return Err(reserved(l));
        }
        let all_eq = matchers.iter().all(|(_, op, _)| *op == MatchOp::Eq);
        if exact {
            if !all_eq || group_by.is_some() {
                return Err(form("exact: names one series: labels with = and no by"));
            }
            return Ok(ParsedSelector::Exact(canonical(&name, &matchers)));
        }
        Ok(ParsedSelector::Metric {
            name,
            matchers,
            group_by: group_by.unwrap_or_default(),
        })
    }

    fn prefix(
        text: &str,
        prefix: &str,
        group_by: Vec<String>,
    ) -> Result<ParsedSelector, SelectorError> {
        if let Some(l) = group_by
            .iter()
            .find(|l| l.starts_with("__") && *l != CHILD_LABEL)
        {
            return Err(SelectorError::Reserved {
                text: text.to_string(),
                label: l.clone(),
            });
        }
        Ok(ParsedSelector::Prefix {
            prefix: prefix.to_string(),
            group_by,
        })
    }

    /// The wire selector, borrowing from `self`; `None` for [`ParsedSelector::All`],
    /// which no server query accepts.
    pub fn to_protocol(&self) -> Option<Selector<'_>> {
        Some(match self {
            ParsedSelector::All => return None,
            ParsedSelector::Exact(k) => Selector::Exact(k),
            ParsedSelector::Prefix { prefix, group_by } if group_by.is_empty() => {
                Selector::Prefix(prefix)
            }
            ParsedSelector::Prefix { prefix, group_by } => Selector::PrefixBy(PrefixSelector {
                prefix,
                group_by: group_by.iter().map(String::as_str).collect(),
            }),
            ParsedSelector::Metric {
                name,
                matchers,
                group_by,
            } => Selector::Metric(MetricSelector {
                name,
                matchers: matchers
                    .iter()
                    .map(|(label, op, value)| Matcher {
                        label,
                        op: *op,
                        value,
                    })
                    .collect(),
                group_by: group_by.iter().map(String::as_str).collect(),
            }),
        })
    }

    /// The group-by labels (empty unless `by (…)` was given).
    pub fn group_by(&self) -> &[String] {
        match self {
            ParsedSelector::Metric { group_by, .. } | ParsedSelector::Prefix { group_by, .. } => {
                group_by
            }
            _ => &[],
        }
    }

    /// Whether a series passes this selector, given its metric name and a lookup of
    /// its label values (for tools that filter series themselves, such as an offline
    /// export). Group-by labels do not filter.
    pub fn matches<'k>(
        &self,
        canonical_key: &str,
        name: &str,
        label: impl Fn(&str) -> Option<std::borrow::Cow<'k, str>>,
    ) -> bool {
        match self {
            ParsedSelector::All => true,
            ParsedSelector::Exact(k) => canonical_key == k,
            ParsedSelector::Prefix { prefix, .. } => {
                name.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty() || prefix.ends_with('.') || rest.starts_with('.')
                })
            }
            ParsedSelector::Metric {
                name: want,
                matchers,
                ..
            } => {
                (want.is_empty() || name == want)
                    && matchers.iter().all(|(l, op, v)| {
                        let got = label(l).unwrap_or_default();
                        (got == v.as_str()) == (*op == MatchOp::Eq)
                    })
            }
        }
    }
}

/// True if a matcher `label = non-empty value` narrows a selector without a name.
fn named_by_matcher(matchers: &[(String, MatchOp, String)]) -> bool {
    matchers
        .iter()
        .any(|(_, op, v)| *op == MatchOp::Eq && !v.is_empty())
}

/// The canonical key of a name and `=` matchers: labels sorted by name, values
/// written by [`write_value`].
fn canonical(name: &str, matchers: &[(String, MatchOp, String)]) -> String {
    let mut labels: Vec<(&str, &str)> = matchers
        .iter()
        .map(|(l, _, v)| (l.as_str(), v.as_str()))
        .collect();
    labels.sort_unstable();
    let mut out = name.to_string();
    if !labels.is_empty() {
        out.push('{');
        for (i, (l, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(l);
            out.push('=');
            write_value(&mut out, v);
        }
        out.push('}');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParsedSelector as P;

    fn metric(n: &str, m: &[(&str, MatchOp, &str)], g: &[&str]) -> ParsedSelector {
        P::Metric {
            name: n.into(),
            matchers: m
                .iter()
                .map(|(l, op, v)| (l.to_string(), *op, v.to_string()))
                .collect(),
            group_by: g.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn prefix(p: &str, g: &[&str]) -> ParsedSelector {
        P::Prefix {
            prefix: p.into(),
            group_by: g.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_form() {
        use MatchOp::{Eq, NotEq};
        let cases: Vec<(&str, ParsedSelector)> = vec![
            ("*", P::All),
            ("hits", metric("hits", &[], &[])),
            (
                "clicks{country=US,ad=7}",
                metric("clicks", &[("country", Eq, "US"), ("ad", Eq, "7")], &[]),
            ),
            (
                " clicks { country = US , ad = 7 , } ",
                metric("clicks", &[("country", Eq, "US"), ("ad", Eq, "7")], &[]),
            ),
            ("clicks{}", metric("clicks", &[], &[])),
            (
                " exact: clicks { b = 2 , a = 1 } ",
                P::Exact("clicks{a=1,b=2}".into()),
            ),
            (
                "clicks{country=US,ad!=7}",
                metric("clicks", &[("country", Eq, "US"), ("ad", NotEq, "7")], &[]),
            ),
            (
                "clicks{country=US} by (ad, os)",
                metric("clicks", &[("country", Eq, "US")], &["ad", "os"]),
            ),
            ("clicks by(ad)", metric("clicks", &[], &["ad"])),
            (
                "metric:clicks{country=US}",
                metric("clicks", &[("country", Eq, "US")], &[]),
            ),
            (
                r#"{__name__="clicks",country="US"}"#,
                metric("clicks", &[("country", Eq, "US")], &[]),
            ),
            (
                r#"clicks{country="US"}"#,
                metric("clicks", &[("country", Eq, "US")], &[]),
            ),
            (
                r#"hits{page="/search?q=café"}"#,
                metric("hits", &[("page", Eq, "/search?q=café")], &[]),
            ),
            (
                r#"exact:hits{page="/search?q=café"}"#,
                P::Exact(r#"hits{page="/search?q=café"}"#.into()),
            ),
            (
                r#"{country="US"} by (ad)"#,
                metric("", &[("country", Eq, "US")], &["ad"]),
            ),
            ("com.example.*", prefix("com.example.", &[])),
            (
                "com.example.* by (__child__)",
                prefix("com.example.", &["__child__"]),
            ),
            ("prefix:com.example", prefix("com.example", &[])),
            (
                "prefix:com by (__child__, dc)",
                prefix("com", &["__child__", "dc"]),
            ),
            ("exact:clicks{b=2,a=1}", P::Exact("clicks{a=1,b=2}".into())),
        ];
        for (text, want) in cases {
            assert_eq!(P::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn every_escape() {
        for (quoted, value) in [
            (r#""a\"b""#, "a\"b"),
            (r#""a\\b""#, "a\\b"),
            (r#""a\nb""#, "a\nb"),
            (r#""a\rb""#, "a\rb"),
            (r#""a\tb""#, "a\tb"),
            (r#""a\'b""#, "a'b"),
            (r#""caf\u00e9""#, "café"),
            (r#"'it"s'"#, "it\"s"),
            (r#""x,y}=z""#, "x,y}=z"),
            (r#""""#, ""),
        ] {
            let text = format!("m{{v!={quoted}}}");
            assert_eq!(
                P::parse(&text),
                Ok(metric("m", &[("v", MatchOp::NotEq, value)], &[])),
                "{text}"
            );
        }
    }

    #[test]
    fn canonical_text_round_trips() {
        assert_eq!(P::parse("exact:m"), Ok(P::Exact("m".into())));
        for key in [
            "m{a=1,b=2}",
            r#"m{page="/search?q=café"}"#,
            r#"m{v="a\"b\\c"}"#,
            r#"m{v="with space",w=plain}"#,
        ] {
            assert_eq!(
                P::parse(&format!("exact:{key}")),
                Ok(P::Exact(key.to_string()))
            );
        }
    }

    #[test]
    fn errors_name_the_rule() {
        let err = |t: &str| P::parse(t).expect_err(t);
        assert!(matches!(
            err("clicks{__name__=x,a=1}"),
            SelectorError::Form { .. }
        ));
        assert!(matches!(
            err("clicks{__foo__=x}"),
            SelectorError::Reserved { .. }
        ));
        assert!(matches!(
            err("clicks by (__child__)"),
            SelectorError::Reserved { .. }
        ));
        assert!(matches!(
            err("com.* by (__name__)"),
            SelectorError::Reserved { .. }
        ));
        assert!(err("clicks{__foo__=x}").to_string().contains("reserved"));
        assert!(matches!(err("m{v=café}"), SelectorError::Unquoted { .. }));
        assert!(matches!(err(r#"m{v="open}"#), SelectorError::Quote { .. }));
        assert!(matches!(err(r#"m{v="a\qb"}"#), SelectorError::Quote { .. }));
        assert!(matches!(err(r#"m{v="\u00"}"#), SelectorError::Quote { .. }));
        assert!(matches!(err("clicks{a}"), SelectorError::Syntax { .. }));
        assert!(matches!(err("clicks{a=1"), SelectorError::Syntax { .. }));
        assert!(matches!(
            err("clicks{a=1} group (x)"),
            SelectorError::Syntax { .. }
        ));
        assert!(matches!(err("clicks by (a"), SelectorError::Syntax { .. }));
        for form in [
            "",
            "cl*cks",
            "prefix:",
            "{a!=\"1\"}",
            "{a=\"\"}",
            "exact:{a=\"1\"}",
            "exact:m{a!=1}",
            "*.x",
        ] {
            assert!(P::parse(form).is_err(), "{form:?} should be refused");
        }
        let SelectorError::Syntax { at, .. } = err("clicks{a=1 b=2}") else {
            panic!("syntax error expected")
        };
        assert_eq!(at, 11);
    }

    #[test]
    fn matches_filters_like_the_server() {
        let look = |k: &'static [(&'static str, &'static str)]| {
            move |l: &str| {
                k.iter()
                    .find(|(n, _)| *n == l)
                    .map(|(_, v)| std::borrow::Cow::Borrowed(*v))
            }
        };
        let us: &[(&str, &str)] = &[("ad", "7"), ("country", "US")];
        let s = P::parse("clicks{country!=FR}").expect("parses");
        assert!(s.matches("clicks{ad=7,country=US}", "clicks", look(us)));
        let s = P::parse("clicks{os!=x}").expect("parses");
        assert!(s.matches("clicks{ad=7,country=US}", "clicks", look(us)));
        let s = P::parse("prefix:com.example").expect("parses");
        assert!(s.matches("com.example.music", "com.example.music", look(&[])));
        assert!(!s.matches("com.examples", "com.examples", look(&[])));
    }

    #[test]
    fn wire_form() {
        let q = P::parse("clicks{ad!=7} by (country)").expect("parses");
        let Some(Selector::Metric(m)) = q.to_protocol() else {
            panic!("metric expected")
        };
        assert_eq!(m.matchers[0].op, MatchOp::NotEq);
        assert_eq!(m.group_by, vec!["country"]);
        let q = P::parse("com.* by (__child__)").expect("parses");
        assert_eq!(
            q.to_protocol(),
            Some(Selector::PrefixBy(PrefixSelector {
                prefix: "com.",
                group_by: vec![CHILD_LABEL]
            }))
        );
        assert_eq!(
            P::parse("com.*").expect("parses").to_protocol(),
            Some(Selector::Prefix("com."))
        );
        assert_eq!(P::All.to_protocol(), None);
    }
}
