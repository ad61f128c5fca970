//! Times on the command line: milliseconds since the epoch, `now`, `now-7d`,
//! or a UTC date `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS`
//! (an optional trailing `Z`).

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

fn duration_ms(s: &str) -> Option<i64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
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

#[cfg(test)]
mod tests {
    use super::*;

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
