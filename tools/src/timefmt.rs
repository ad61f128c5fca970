//! Times on the command line: the shared reading of [`tallydb_protocol::text::time`]
//! (the same text means the same time in `tally`, `tally-admin` and the HTTP API).

pub use tallydb_protocol::text::time::{
    format_utc, parse_duration as duration_ms, SECONDS_BELOW, TIME_SYNTAX,
};

/// Reads a time for `tally` and `tally-admin` (every form of
/// [`tallydb_protocol::text::time`]); `now` in ms.
pub fn parse_instant(s: &str, now: i64) -> Result<i64, String> {
    tallydb_protocol::text::parse_time(s, now).map_err(|e| e.to_string())
}

/// The same reading as [`parse_instant`], under the name `tally-admin` used.
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    parse_instant(s, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_for_every_tool() {
        let now = 1_800_000_000_000;
        for text in [
            "1700000000",
            "1700000000123",
            "now-7d",
            "2023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_time(text, now), parse_instant(text, now), "{text}");
        }
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(duration_ms("90s"), Some(90_000));
        assert_eq!(format_utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
