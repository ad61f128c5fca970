//! Selector resolution: which series ids a selector matches (exact key, name
//! prefix, or metric with label matchers), and their `group by` groups (label
//! values, or the path segment below a prefix for `__child__`), read from the
//! dictionary and its label index.

use rustc_hash::FxHashMap;

use crate::dict::SeriesDict;
use crate::error::Result;
use crate::query::{child_segment, Matcher, Selector, CHILD_LABEL};
use crate::series::SeriesKey;

use super::state::{read, Shared};

/// Ids of the series a selector matches, ascending.
pub(super) fn resolve_ids(dict: &SeriesDict, selector: &Selector) -> Vec<u32> {
    match selector {
        Selector::Exact(key) => SeriesKey::parse(key)
            .ok()
            .and_then(|k| dict.get(k.as_str()))
            .into_iter()
            .collect(),
        Selector::Prefix(p) | Selector::PrefixBy { prefix: p, .. } => dict.ids_under_prefix(p),
        Selector::Metric { name, matchers, .. } => {
            // An empty name is any metric: the label lists alone decide
            // (validation guarantees one `Eq` matcher).
            let mut lists: Vec<&[u32]> = Vec::new();
            if !name.is_empty() {
                lists.push(dict.ids_of_name(name));
            }
            for m in matchers {
                if let Matcher::Eq(l, v) = m {
                    lists.push(dict.ids_with_label(l, v));
                }
            }
            lists.sort_by_key(|l| l.len());
            let (first, rest) = lists
                .split_first()
                .map_or((&[][..], &[][..]), |(f, r)| (*f, r));
            let negated = matchers.iter().any(|m| matches!(m, Matcher::Ne(..)));
            first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
                .filter(|id| {
                    if !negated {
                        return true;
                    }
                    let Some(key) = dict.key(*id) else {
                        return false;
                    };
                    matchers.iter().all(|m| match m {
                        Matcher::Eq(..) => true,
                        Matcher::Ne(l, v) => key.label(l).as_deref().unwrap_or("") != v,
                    })
                })
                .collect()
        }
    }
}

/// Selected ids with their group index, and the groups' label values.
pub(super) struct Resolved {
    pub(super) ids: Vec<u32>,
    pub(super) group_of: Vec<usize>,
    pub(super) groups: Vec<Vec<(String, String)>>,
}

/// The series a selector matches, grouped by the values of the `group_by` labels
/// (one group when there are none).
pub(super) fn resolve_groups(
    dict: &SeriesDict,
    selector: &Selector,
    group_by: &[String],
) -> Resolved {
    let ids = resolve_ids(dict, selector);
    if group_by.is_empty() {
        return Resolved {
            group_of: vec![0; ids.len()],
            ids,
            groups: vec![Vec::new()],
        };
    }
    let prefix = match selector {
        Selector::PrefixBy { prefix, .. } => Some(prefix.as_str()),
        _ => None,
    };
    let mut index: FxHashMap<Vec<String>, usize> = FxHashMap::default();
    let mut groups = Vec::new();
    let mut group_of = Vec::with_capacity(ids.len());
    for id in &ids {
        let key = dict.key(*id);
        let values: Vec<String> = group_by
            .iter()
            .map(|l| match (prefix, key) {
                (Some(p), Some(k)) if l == CHILD_LABEL => child_segment(p, k.name()).to_string(),
                _ => key
                    .and_then(|k| k.label(l))
                    .map_or_else(String::new, |v| v.into_owned()),
            })
            .collect();
        let g = *index.entry(values.clone()).or_insert_with(|| {
            groups.push(group_by.iter().cloned().zip(values).collect());
            groups.len() - 1
        });
        group_of.push(g);
    }
    Resolved {
        ids,
        group_of,
        groups,
    }
}

impl Shared {
    /// Keys of the selected series, sorted, at most `limit`, and whether more matched.
    pub(crate) fn series(&self, selector: &Selector, limit: usize) -> Result<(Vec<String>, bool)> {
        selector.validate()?;
        let dict = read(&self.dict);
        let ids = resolve_ids(&dict, selector);
        let mut keys: Vec<String> = ids
            .iter()
            .filter_map(|id| dict.key(*id))
            .map(|k| k.as_str().to_string())
            .collect();
        keys.sort_unstable();
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }
}
