//! `tally range --chart`: a horizontal bar chart on the terminal, one line per bucket,
//! drawn with Unicode block characters (eighths of a cell, so small differences show).
//!
//! ```text
//! page_hits  sum per 1m  (tiers: minute)
//! 2026-11-29 10:00  ████████████████████▌            412
//! 2026-11-29 10:01  ███████████████████████████████  620
//! 2026-11-29 10:02  ██████▏                          123 ~
//! ~ bucket still open: it starts at or after 2026-11-29T10:02:00Z and may still grow
//! ```
//!
//! Bars scale to the largest absolute value of each group; negative values are drawn
//! with `░`. Buckets at or after `closed_until` carry the `~` marker.

use tallydb_client::{RangeGroup, RangeResult};

use super::output::format_float;
use crate::timefmt::format_utc;

const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// A bar of `frac` (0..=1) of `width` cells, padded to `width`.
fn bar(frac: f64, width: usize, negative: bool) -> String {
    let eighths = (frac.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut s = String::new();
    if negative {
        s.push_str(&"░".repeat(if part > 0 { full + 1 } else { full }));
    } else {
        s.push_str(&"█".repeat(full));
        if part > 0 {
            s.push(EIGHTHS[part]);
        }
    }
    let used = s.chars().count();
    s.push_str(&" ".repeat(width.saturating_sub(used)));
    s
}

/// `2026-11-29 10:00` (seconds shown only when not zero).
fn bucket_label(ms: i64) -> String {
    let t = format_utc(ms);
    let t = t.trim_end_matches('Z').replacen('T', " ", 1);
    t.strip_suffix(":00").map_or(t.clone(), str::to_string)
}

fn group_title(title: &str, g: &RangeGroup) -> String {
    if g.labels.is_empty() {
        return title.to_string();
    }
    let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{title} {{{}}}", labels.join(","))
}

/// The chart of every group of `r`; `title` names the selector and function, `width`
/// is the bar width in cells.
pub fn render(r: &RangeResult, title: &str, width: usize) -> String {
    let width = width.max(4);
    let mut out = String::new();
    let mut any_open = false;
    let tiers = super::tier_names(r.tiers);
    for g in &r.groups {
        out.push_str(&format!("{}  (tiers: {tiers})\n", group_title(title, g)));
        if g.points.is_empty() {
            out.push_str("  (no points)\n");
            continue;
        }
        let max = g
            .points
            .iter()
            .map(|p| p.value.as_f64().abs())
            .fold(0.0_f64, f64::max);
        let values: Vec<String> = g
            .points
            .iter()
            .map(|p| match p.value {
                tallydb_client::Value::Int(v) => v.to_string(),
                tallydb_client::Value::Float(v) => format_float(v),
            })
            .collect();
        let vw = values.iter().map(String::len).max().unwrap_or(0);
        for (p, v) in g.points.iter().zip(&values) {
            let x = p.value.as_f64();
            let frac = if max > 0.0 { x.abs() / max } else { 0.0 };
            let open = p.ts_ms >= r.closed_until_ms;
            any_open |= open;
            let line = format!(
                "{}  {}  {v:>vw$}{}",
                bucket_label(p.ts_ms),
                bar(frac, width, x < 0.0),
                if open { " ~" } else { "" }
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if r.groups.is_empty() {
        out.push_str(&format!("{title}  (no data)\n"));
    }
    if any_open {
        out.push_str(&format!(
            "~ bucket still open: it starts at or after {} and may still grow\n",
            format_utc(r.closed_until_ms)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallydb_client::{RangePoint, Tiers, Value};

    #[test]
    fn bars_scale_and_mark_open_buckets() {
        let r = RangeResult {
            tiers: Tiers::MINUTE,
            closed_until_ms: 120_000,
            step_ms: 60_000,
            groups: vec![RangeGroup {
                labels: vec![],
                points: vec![
                    RangePoint {
                        ts_ms: 0,
                        value: Value::Int(4),
                    },
                    RangePoint {
                        ts_ms: 60_000,
                        value: Value::Int(8),
                    },
                    RangePoint {
                        ts_ms: 120_000,
                        value: Value::Int(-1),
                    },
                ],
            }],
        };
        let text = render(&r, "hits sum per 1m", 8);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "hits sum per 1m  (tiers: minute)");
        assert_eq!(lines[1], "1970-01-01 00:00  ████       4");
        assert_eq!(lines[2], "1970-01-01 00:01  ████████   8");
        assert_eq!(lines[3], "1970-01-01 00:02  ░         -1 ~");
        assert!(lines[4].starts_with("~ bucket still open"));
        assert_eq!(bar(0.5, 1, false), "▌");
        assert_eq!(bar(1.0 / 8.0, 1, false), "▏");
    }
}
