//! The text forms that people type: selectors ([`selector`]) and times ([`time`]),
//! parsed once here so that `tally`, `tally-admin` and the HTTP API read the same text
//! the same way. Pure functions: no I/O, and "now" is always a parameter.

pub mod selector;
pub mod time;

pub use selector::{ParsedSelector, SelectorError, CHILD_LABEL, SELECTOR_SYNTAX};
pub use time::{format_utc, parse_duration, parse_time, TimeError, SECONDS_BELOW, TIME_SYNTAX};
