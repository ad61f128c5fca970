//! Times as text, one reading for every tool ([`parse_time`]):
//!
//! | text | means |
//! |---|---|
//! | `now` | the `now` given by the caller |
//! | `now-7d`, `-1h`, `now+5m` | relative to `now` (units `ms s m h d w`) |
//! | `1700000000`, `1700000000.5` | unix **seconds** (below [`SECONDS_BELOW`]) |
//! | `1700000000000` | unix **milliseconds** (integers from [`SECONDS_BELOW`] on) |
//! | `2026-11-29` | midnight UTC of that date |
//! | `2026-11-29T10:00`, `2026-11-29T10:00:00Z` | UTC time (a space may replace `T`) |
//! | `2026-11-29T10:00:00.5+01:00` | RFC 3339 with fraction and offset |
//!
//! 10^11 seconds is the year 5138 and 10^11 milliseconds is March 1973, so the two
//! readings of a bare integer cannot be confused for any time a counter holds.
//! [`format_utc`] writes a time back as RFC 3339 UTC, which parses to the same value.

/// Bare numbers below this are unix seconds, from it on milliseconds.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// The time forms, for `--help` texts.
pub const TIME_SYNTAX: &str = "\
Times: now, now-7d, -1h, now+5m, unix seconds (1700000000, 1700000000.5),
  unix milliseconds (1700000000000: 10^11 and above), a UTC date 2026-11-29,
  2026-11-29T10:00, or RFC 3339 such as 2026-11-29T10:00:00.5+01:00";

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text is none of the forms of [`TIME_SYNTAX`].
    #[error("invalid time {text:?}: use now, now-7d, -1h, now+5m, unix seconds (below 10^11) or milliseconds, a date 2026-11-29, or RFC 3339 such as 2026-11-29T10:00:00Z")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// A field of a date or time is out of its range.
    #[error("invalid time {text:?}: {field} {value} is out of range")]
    OutOfRange {
        /// The text given.
        text: String,
        /// Which field (`month`, `hour` ...).
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The time does not fit in signed 64-bit milliseconds.
    #[error("invalid time {text:?}: too far from 1970 to count in milliseconds")]
    Overflow {
        /// The text given.
        text: String,
    },
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return None,
    })
}

/// A duration such as `90s`, `5m`, `1h`, `7d`, `2w`, `250ms`, in milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    n.checked_mul(unit_ms(unit)?)
}

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

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Reads a time in any form of the module table; `now_ms` is the current time.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = text.trim();
    let syntax = || TimeError::Syntax {
        text: text.to_string(),
    };
    let overflow = || TimeError::Overflow {
        text: text.to_string(),
    };
    if t == "now" {
        return Ok(now_ms);
    }
    let relative = |rest: &str, sign: i64| -> Result<i64, TimeError> {
        let d = parse_duration(rest).ok_or_else(syntax)?;
        now_ms.checked_add(sign * d).ok_or_else(overflow)
    };
    if let Some(rest) = t.strip_prefix("now-") {
        return relative(rest, -1);
    }
    if let Some(rest) = t.strip_prefix("now+") {
        return relative(rest, 1);
    }
    if let Some(rest) = t.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit()) && parse_duration(rest).is_some() {
            return relative(rest, -1);
        }
    }
    if let Ok(n) = t.parse::<i64>() {
        return if n.abs() < SECONDS_BELOW {
            n.checked_mul(1000).ok_or_else(overflow)
        } else {
            Ok(n)
        };
    }
    if let Some((whole, frac)) = t.split_once('.') {
        if let (Ok(secs), true) = (
            whole.parse::<i64>(),
            !frac.is_empty() && frac.bytes().all(|c| c.is_ascii_digit()),
        ) {
            if secs.abs() >= SECONDS_BELOW {
                return Err(syntax());
            }
            let ms = frac_ms(frac).ok_or_else(syntax)?;
            let sign = if whole.starts_with('-') { -1 } else { 1 };
            return Ok(secs * 1000 + sign * ms);
        }
    }
    parse_datetime(t, text)
}

/// Milliseconds of a fraction of a second written after the point (rounded down).
fn frac_ms(frac: &str) -> Option<i64> {
    let digits: String = frac.chars().chain("000".chars()).take(3).collect();
    digits.parse().ok()
}

/// A date, date and time, or RFC 3339 time.
fn parse_datetime(t: &str, text: &str) -> Result<i64, TimeError> {
    let syntax = || TimeError::Syntax {
        text: text.to_string(),
    };
    let range = |field: &'static str, value: i64| TimeError::OutOfRange {
        text: text.to_string(),
        field,
        value,
    };
    let (body, offset_ms) = split_offset(t).ok_or_else(syntax)?;
    let (date, time) = match body.find(['T', 't', ' ']) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, "00:00"),
    };
    let num = |x: &str| -> Result<i64, TimeError> {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return Err(syntax());
        }
        x.parse::<i64>().map_err(|_| syntax())
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d[..] else {
        return Err(syntax());
    };
    let (y, mo, da) = (num(y)?, num(mo)?, num(da)?);
    if !(1..=12).contains(&mo) {
        return Err(range("month", mo));
    }
    if !(1..=31).contains(&da) {
        return Err(range("day", da));
    }
    let (time, frac) = match time.split_once('.') {
        Some((t, f)) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            (t, frac_ms(f).ok_or_else(syntax)?)
        }
        Some(_) => return Err(syntax()),
        None => (time, 0),
    };
    let tm: Vec<&str> = time.split(':').collect();
    let (h, mi, se) = match tm[..] {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return Err(syntax()),
    };
    if h > 23 {
        return Err(range("hour", h));
    }
    if mi > 59 {
        return Err(range("minute", mi));
    }
    if se > 59 {
        return Err(range("second", se));
    }
    if y > 200_000 {
        return Err(range("year", y));
    }
    Ok(
        days_from_civil(y, mo, da) * DAY_MS + h * HOUR_MS + mi * MINUTE_MS + se * 1000 + frac
            - offset_ms,
    )
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
            if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
                return None;
            }
            Some((rest, sign * (h * HOUR_MS + m * MINUTE_MS)))
        }
        None => Some((t, 0)),
    }
}

/// `ms` as RFC 3339 UTC: `2026-11-29T10:00:00Z`, with `.mmm` only when not whole seconds.
pub fn format_utc(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let rest = ms.rem_euclid(DAY_MS);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rest / HOUR_MS,
        rest / MINUTE_MS % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if milli == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn every_form() {
        let cases: &[(&str, i64)] = &[
            ("now", NOW),
            ("-1h", NOW - 3_600_000),
            ("now-7d", NOW - 7 * 86_400_000),
            ("now+5m", NOW + 300_000),
            ("now-250ms", NOW - 250),
            ("0", 0),
            ("1700000000", 1_700_000_000_000),
            ("1700000000.123", 1_700_000_000_123),
            ("1700000000.5", 1_700_000_000_500),
            ("1700000000123", 1_700_000_000_123),
            ("100000000000", 100_000_000_000),
            ("99999999999", 99_999_999_999_000),
            ("2023-11-14T22:13:20Z", 1_700_000_000_000),
            ("2023-11-14 22:13:20", 1_700_000_000_000),
            ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500),
            ("2023-11-14T20:13:20-02:00", 1_700_000_000_000),
            ("2023-11-14", 1_699_920_000_000),
            ("2000-02-29", 951_782_400_000),
            ("1970-01-01T00:01", 60_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text, NOW), Ok(*want), "{text}");
        }
    }

    #[test]
    fn errors_name_the_rule() {
        for bad in [
            "yesterday",
            "-1x",
            "now-",
            "2023-11-14T",
            "1e9",
            "1700000000000.5",
        ] {
            assert!(
                matches!(parse_time(bad, NOW), Err(TimeError::Syntax { .. })),
                "{bad}"
            );
        }
        let e = parse_time("2023-11-14T25:00Z", NOW).expect_err("hour 25");
        assert!(e.to_string().contains("hour 25"), "{e}");
        let e = parse_time("2024-13-01", NOW).expect_err("month 13");
        assert!(e.to_string().contains("month 13"), "{e}");
        assert!(matches!(
            parse_time("now+9223372036854775000ms", NOW),
            Err(TimeError::Overflow { .. })
        ));
        assert!(matches!(
            parse_time("now-99999999999999w", NOW),
            Err(TimeError::Syntax { .. })
        ));
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1_700_000_000_250), "2023-11-14T22:13:20.250Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        for ms in [
            0,
            951_782_400_000,
            1_700_000_000_250,
            4_102_444_800_000,
            -86_400_000,
        ] {
            assert_eq!(parse_time(&format_utc(ms), 0), Ok(ms), "{ms}");
        }
    }
}
