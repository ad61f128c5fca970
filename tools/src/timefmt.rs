//! Times on the command line.
//!
//! [`parse_time`] (tally-admin): milliseconds since the epoch, `now`, `now-7d`, or a
//! UTC date `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` (an optional
//! trailing `Z`).
//!
//! [`parse_instant`] (tally) accepts all of those except that a bare number is unix
//! **seconds** below 10^11 and milliseconds from 10^11 on (10^11 s is the year 5138,
//! 10^11 ms is March 1973), and adds relative times `-1h` / `now+5m` and RFC 3339 with
//! fractional seconds and offsets (`2026-11-29T10:00:00.5+01:00`).
//! [`format_utc`] writes a time back as RFC 3339 UTC.

use tallydb_storage::time::{civil_from_days, unit_ms};

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration such as `90s`, `5m`, `1h`, `7d`, `2w`, `250ms`, in milliseconds.
pub fn duration_ms(s: &str) -> Option<i64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    n.checked_mul(unit_ms(unit)?)
}

/// Parses a time given on the command line; `now` is the current time in ms.
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "invalid time {s:?}: use milliseconds since the epoch, now, now-7d, or a UTC date such as 2024-05-01 or 2024-05-01T13:45Z"
        )
    };
    if t == "now" {
        return Ok(now);
    }
    if let Some(rest) = t.strip_prefix("now-") {
        return duration_ms(rest).map(|d| now - d).ok_or_else(bad);
    }
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once('T').unwrap_or((t, "00:00"));
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d[..] else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y)?, num(mo)?, num(da)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad());
    }
    let tm: Vec<&str> = time.split(':').collect();
    let (h, mi, se) = match tm[..] {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return Err(bad()),
    };
    if h > 23 || mi > 59 || se > 59 || h < 0 || mi < 0 || se < 0 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, da) * 86_400_000 + h * 3_600_000 + mi * 60_000 + se * 1000)
}

/// `ms` as RFC 3339 UTC: `2026-11-29T10:00:00Z`, with `.mmm` only when not whole seconds.
pub fn format_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if milli == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

/// Bare numbers below this are unix seconds, from it on milliseconds.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// Parses a time for `tally` (forms in the module documentation); `now` in ms.
pub fn parse_instant(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "invalid time {s:?}: use now, -1h, now-7d, now+5m, an RFC 3339 time such as \
             2026-11-29T10:00:00Z, a date 2026-11-29, or unix seconds / milliseconds"
        )
    };
    if let Some(rest) = t.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit()) && duration_ms(rest).is_some() {
            return duration_ms(rest).map(|d| now - d).ok_or_else(bad);
        }
    }
    if let Some(rest) = t.strip_prefix("now+") {
        return duration_ms(rest).map(|d| now + d).ok_or_else(bad);
    }
    if let Ok(n) = t.parse::<i64>() {
        return if n.abs() < SECONDS_BELOW {
            n.checked_mul(1000).ok_or_else(bad)
        } else {
            Ok(n)
        };
    }
    if t == "now" || t.starts_with("now-") {
        return parse_time(t, now).map_err(|_| bad());
    }
    // RFC 3339: split off an offset (`Z`, `+hh:mm`, `-hh:mm`) and fractional seconds.
    let (body, offset_ms) = split_offset(t).ok_or_else(bad)?;
    let (body, frac_ms) = match body.split_once('.') {
        Some((b, f)) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            let digits: String = f.chars().chain("000".chars()).take(3).collect();
            (b, digits.parse::<i64>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
        None => (body, 0),
    };
    let body = body.replacen(' ', "T", 1);
    let base = parse_time(&body, now).map_err(|_| bad())?;
    Ok(base + frac_ms - offset_ms)
}

/// Splits a trailing UTC offset off an RFC 3339 time: `(rest, offset in ms)`.
fn split_offset(t: &str) -> Option<(&str, i64)> {
    if let Some(rest) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        return Some((rest, 0));
    }
    // An offset needs a time part: `…THH:MM[:SS]±hh:mm`.
    let Some(tpos) = t.find(['T', 't', ' ']) else {
        return Some((t, 0));
    };
    let time = &t[tpos..];
    match time.rfind(['+', '-']) {
        Some(i) => {
            let (rest, off) = t.split_at(tpos + i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (h, m) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            Some((rest, sign * (h * 3_600_000 + m * 60_000)))
        }
        None => Some((t, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_for_tally() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_instant("now", now), Ok(now));
        assert_eq!(parse_instant("-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_instant("now-7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_instant("now+5m", now), Ok(now + 300_000));
        assert_eq!(parse_instant("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("1700000000123", now), Ok(1_700_000_000_123));
        assert_eq!(
            parse_instant("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_instant("2023-11-14T23:13:20.5+01:00", now),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_instant("2023-11-14T20:13:20-02:00", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_instant("2023-11-14", now), Ok(1_699_920_000_000));
        assert!(parse_instant("yesterday", now).is_err());
        assert!(parse_instant("-1x", now).is_err());
        assert!(parse_instant("2023-11-14T25:00Z", now).is_err());
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1_700_000_000_250), "2023-11-14T22:13:20.250Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        for ms in [0, 951_782_400_000, 1_700_000_000_000, 4_102_444_800_000] {
            assert_eq!(parse_instant(&format_utc(ms), 0), Ok(ms));
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse_time("0", 5), Ok(0));
        assert_eq!(parse_time("now", 5), Ok(5));
        assert_eq!(parse_time("now-1m", 60_005), Ok(5));
        assert_eq!(parse_time("2000-02-29", 0), Ok(951_782_400_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:01", 0), Ok(60_000));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2024-13-01", 0).is_err());
    }
}
