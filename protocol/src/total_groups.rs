//! `TOTAL_GROUPS_OK`: the answer to a `TOTAL` whose selector groups (`m by (label)`,
//! `com.example.* by (__child__)`): one sum and count per group. A `TOTAL` without
//! grouping keeps its `TOTAL_OK` answer, byte for byte.

use bytes::{BufMut, BytesMut};

use crate::codec::{count, i64_le, put_count, put_str, str_, u64_le, u8_, PResult};
use crate::response::{Label, Tiers};
use crate::MAX_NAME_LEN;

/// One group of a grouped total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroup<'a> {
    /// The group's labels, in the order of the query's `by` list.
    pub labels: Vec<Label<'a>>,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// `TOTAL_GROUPS_OK`: per-group totals over the range actually covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroupsOk<'a> {
    /// Start actually covered (bucket-aligned), unix milliseconds.
    pub from_ms: i64,
    /// End actually covered (exclusive), unix milliseconds.
    pub to_ms: i64,
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets at or after this time may still grow.
    pub closed_until_ms: i64,
    /// The groups, sorted by their label values.
    pub groups: Vec<TotalGroup<'a>>,
}

/// Encoded size of a group's sum and count.
const SUM_COUNT_LEN: usize = 16;

impl<'a> TotalGroupsOk<'a> {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_i64_le(self.from_ms);
        out.put_i64_le(self.to_ms);
        out.put_u8(self.tiers.0);
        out.put_i64_le(self.closed_until_ms);
        put_count(out, self.groups.len());
        for g in &self.groups {
            put_count(out, g.labels.len());
            for l in &g.labels {
                put_str(out, l.name);
                put_str(out, l.value);
            }
            out.put_i64_le(g.sum);
            out.put_u64_le(g.count);
        }
    }

    pub(crate) fn parse(i: &'a [u8]) -> PResult<'a, Self> {
        let (i, from_ms) = i64_le(i, "from")?;
        let (i, to_ms) = i64_le(i, "to")?;
        let (i, tiers) = u8_(i, "tiers")?;
        let (i, closed_until_ms) = i64_le(i, "closed until")?;
        // A group is at least a label count, a sum and a count.
        let (mut i, n) = count(i, "group count", 2 + SUM_COUNT_LEN)?;
        let mut groups = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut rest, n_labels) = count(i, "label count", 2)?;
            let mut labels = Vec::with_capacity(n_labels);
            for _ in 0..n_labels {
                let (r, name) = str_(rest, "label name", MAX_NAME_LEN)?;
                let (r, value) = str_(r, "label value", MAX_NAME_LEN)?;
                labels.push(Label { name, value });
                rest = r;
            }
            let (rest, sum) = i64_le(rest, "group sum")?;
            let (rest, count) = u64_le(rest, "group count of events")?;
            groups.push(TotalGroup { labels, sum, count });
            i = rest;
        }
        Ok((
            i,
            TotalGroupsOk {
                from_ms,
                to_ms,
                tiers: Tiers(tiers),
                closed_until_ms,
                groups,
            },
        ))
    }
}

/// One group of a grouped total, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroupResult {
    /// `(label, value)` pairs of the group.
    pub labels: Vec<(String, String)>,
    /// Sum of deltas.
    pub sum: i64,
    /// Number of events.
    pub count: u64,
}

/// A grouped total, owned (what the client crate returns from `total_by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalGroupsResult {
    /// Start actually covered (bucket-aligned), unix milliseconds.
    pub from_ms: i64,
    /// End actually covered (exclusive), unix milliseconds.
    pub to_ms: i64,
    /// Tiers that served the answer.
    pub tiers: Tiers,
    /// Buckets at or after this time may still grow.
    pub closed_until_ms: i64,
    /// The groups, sorted by their label values.
    pub groups: Vec<TotalGroupResult>,
}

impl From<TotalGroupsOk<'_>> for TotalGroupsResult {
    fn from(ok: TotalGroupsOk<'_>) -> Self {
        Self {
            from_ms: ok.from_ms,
            to_ms: ok.to_ms,
            tiers: ok.tiers,
            closed_until_ms: ok.closed_until_ms,
            groups: ok
                .groups
                .into_iter()
                .map(|g| TotalGroupResult {
                    labels: g
                        .labels
                        .iter()
                        .map(|l| (l.name.to_owned(), l.value.to_owned()))
                        .collect(),
                    sum: g.sum,
                    count: g.count,
                })
                .collect(),
        }
    }
}

impl From<crate::response::TotalOk> for TotalGroupsResult {
    /// An ungrouped total as one group without labels.
    fn from(ok: crate::response::TotalOk) -> Self {
        Self {
            from_ms: ok.from_ms,
            to_ms: ok.to_ms,
            tiers: ok.tiers,
            closed_until_ms: ok.closed_until_ms,
            groups: vec![TotalGroupResult {
                labels: Vec::new(),
                sum: ok.sum,
                count: ok.count,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode_frame, encode_request, encode_response, Answer, Message, Request, Response,
        Selector, TotalQuery,
    };

    #[test]
    fn grouped_totals_round_trip_byte_for_byte() {
        let ok = TotalGroupsOk {
            from_ms: 60_000,
            to_ms: 120_000,
            tiers: Tiers(1),
            closed_until_ms: 60_000,
            groups: vec![TotalGroup {
                labels: vec![Label {
                    name: "page",
                    value: "café",
                }],
                sum: -3,
                count: 2,
            }],
        };
        let mut buf = BytesMut::new();
        encode_response(9, &Response::TotalGroupsOk(ok.clone()), &mut buf);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "3b000000",
                "a5",
                "09000000",
                "60ea000000000000",
                "c0d4010000000000",
                "01",
                "60ea000000000000",
                "01",
                "01",
                "0470616765",
                "05636166c3a9",
                "fdffffffffffffff",
                "0200000000000000"
            )
        );
        let (frame, used) = decode_frame(&buf, 1 << 20)
            .expect("decodes")
            .expect("whole");
        assert_eq!(used, buf.len());
        let Message::Response(r) = frame.message else {
            panic!("response expected")
        };
        assert_eq!(r, Response::TotalGroupsOk(ok));
        let Answer::TotalGroupsOk(owned) = Answer::from(r) else {
            panic!("grouped total expected")
        };
        assert_eq!(owned.groups[0].labels, vec![("page".into(), "café".into())]);
        assert_eq!((owned.groups[0].sum, owned.groups[0].count), (-3, 2));
    }

    #[test]
    fn a_grouping_prefix_selector_round_trips() {
        let q = Request::Total(TotalQuery {
            selector: Selector::PrefixBy(crate::PrefixSelector {
                prefix: "com.",
                group_by: vec!["__child__"],
            }),
            from_ms: 0,
            to_ms: 1,
        });
        let mut buf = BytesMut::new();
        encode_request(1, &q, &mut buf);
        // kind 3, prefix, one group-by label.
        assert_eq!(&buf[9..22], b"\x03\x04com.\x01\x09__chi");
        let (frame, _) = decode_frame(&buf, 1 << 20)
            .expect("decodes")
            .expect("whole");
        assert_eq!(frame.message, Message::Request(q));
    }
}
