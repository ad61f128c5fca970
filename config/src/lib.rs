//! `tallyd`'s configuration: a TOML file, `TALLYD_*` environment variables and
//! command-line flags, resolved into one validated [`Config`]. Its own crate so that
//! both the server and the operator tools (`tally-admin` reads the data directory
//! and engine options from the same file) load it without the tools depending on
//! the server.
//!
//! Precedence, lowest first: built-in defaults < the file (`--config PATH`) <
//! `TALLYD_*` environment variables < command-line flags. Every scalar key has an
//! environment variable named after its dotted path: `limits.max_connections` is
//! `TALLYD_LIMITS_MAX_CONNECTIONS`. Auth tokens come from the file only.
//!
//! Everything is checked before anything is opened or bound: an unknown key, a bad
//! duration, size, address or fsync policy is a [`ConfigError`] naming the key (and,
//! for overrides, the variable or flag it came from). [`DEFAULT_CONFIG`] is the full
//! default file with every key documented; `tallyd config default` prints it.
//!
//! # Module tour
//!
//! - [`defaults`]: default values, [`DEFAULT_CONFIG`], the keys overrides may set.
//! - [`model`]: [`Config`] and its sections; [`Config::load`] layers the sources.
//! - `raw`: one layer as written, overrides, and the resolution that checks every rule.
//! - [`parse`]: roles, token digests, durations and sizes.
//! - [`error`]: [`ConfigError`], what is wrong and where.

pub mod defaults;
pub mod error;
pub mod model;
pub mod parse;
mod raw;

pub use defaults::{
    env_var_for, DEFAULT_CONFIG, DEFAULT_DATA_DIR, DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN,
    DEFAULT_MAX_FRAME_BYTES, ENV_CONFIG_FILE, ENV_PREFIX, SCALAR_KEYS,
};
pub use error::ConfigError;
pub use model::{AuthConfig, Config, LimitsConfig, LogConfig, LogFormat, TokenConfig};
pub use parse::{parse_duration, parse_hex32, parse_min_event_time, parse_role, parse_size};

#[cfg(test)]
mod tests;
