//! Parsers of the value syntaxes shared by the file, variables and flags: roles,
//! token digests, durations and sizes. Errors are messages for [`crate::ConfigError`].

use std::time::Duration;

use tallydb_protocol::Role;

/// Parses a role name.
pub fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "read" => Ok(Role::Read),
        "write" => Ok(Role::Write),
        "admin" => Ok(Role::Admin),
        _ => Err(format!(
            "unknown role {s:?}: expected \"read\", \"write\" or \"admin\""
        )),
    }
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            s.len()
        ));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let hi = hex_digit(pair[0]);
        let lo = hex_digit(pair[1]);
        match (hi, lo) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err("not a hex string".into()),
        }
    }
    Ok(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"7d"`, `"2w"`; `"forever"` is `None`.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t == "forever" {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a whole number and a unit (ms, s, m, h, d, w), e.g. \"30s\" or \"7d\""
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit_ms = tallydb_storage::time::unit_ms(unit).ok_or_else(bad)? as u64;
    let ms = n
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= i64::MAX as u64 / 4)
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    Ok(Some(Duration::from_millis(ms)))
}

/// Parses `"4096"`, `"64KiB"`, `"16MiB"`, `"1GiB"` (also `KB`/`MB`/`GB`, same powers of two).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("invalid size {s:?}: expected a whole number of bytes, optionally with KiB, MiB or GiB, e.g. \"16MiB\"")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Unix ms of a `min_event_time` value: an RFC 3339 time, a date (UTC midnight), or
/// `none` (no minimum).
pub fn parse_min_event_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(i64::MIN);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            format!("{s:?}: expected an RFC 3339 time, a date such as \"2000-01-01\", or \"none\"")
        })
}
