//! `tallyd`'s configuration: a TOML file, `TALLYD_*` environment variables and
//! command-line flags, resolved into one validated [`Config`].
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tallydb_protocol::{Role, HANDSHAKE_MAX_FRAME};
use tallydb_storage::{FsyncPolicy, Options, Retention};

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";
/// The default HTTP listen address (health, `/metrics`, the Prometheus query API):
/// loopback only, the port after the protocol's.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7412";
/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./tally-data";
/// The default largest frame after the handshake: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 << 20;
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "TALLYD_";
/// The environment variable naming the config file (read by the binary's flags).
pub const ENV_CONFIG_FILE: &str = "TALLYD_CONFIG";

/// The full default configuration file, every key documented with its default.
/// Parsing it yields [`Config::default`] (a unit test holds this).
pub const DEFAULT_CONFIG: &str = r#"# tallyd configuration (TOML). Every key is optional; the value shown is the default.
# Precedence: defaults < this file < TALLYD_* environment variables < command-line flags.
# Each scalar key has a variable named after its path: limits.max_connections is
# TALLYD_LIMITS_MAX_CONNECTIONS, retention.minute is TALLYD_RETENTION_MINUTE.
#
# Durations are a whole number and a unit: ms, s, m, h, d (days) or w (weeks), e.g.
# "500ms", "30s", "10m", "7d". Retentions also accept "forever".
# Sizes are a number of bytes or a string with a unit: "64KiB", "16MiB", "1GiB".

# Address and port to listen on. The default accepts loopback clients only; use
# "0.0.0.0:7411" (and configure [auth] tokens) to serve the network.
listen = "127.0.0.1:7411"

# Address and port of the HTTP side door: /-/healthy, /-/ready, /metrics (Prometheus text
# format) and a Prometheus-compatible query API for Grafana (docs/GRAFANA.md). It uses the
# same tokens and roles as the protocol (HTTP Basic with the token as password, or
# "Authorization: Bearer <token>"). "" turns it off. If this default address is already
# in use (another tallyd on the host), tallyd logs a warning and runs without HTTP; an
# address set explicitly that cannot be bound stops the start.
http_listen = "127.0.0.1:7412"

# Data directory, created if missing. One server owns it (a lock file refuses a second).
data_dir = "./tally-data"

# When an increment is acknowledged relative to its write-ahead-log record reaching disk:
#   "always"        after the fsync that covers it (concurrent writers share one fsync);
#                   nothing acknowledged is ever lost.
#   "interval:<ms>" once buffered; the log is fsynced every <ms> (1 to 60000) milliseconds,
#                   so a power loss may lose about that much acknowledged data.
#   "never"         once buffered; written to the OS every 100 ms, fsynced only at flush and
#                   shutdown. A process crash loses at most ~100 ms; a power loss more.
fsync = "always"

# How far ahead of the server clock an event timestamp may be (else TOO_FAR_IN_FUTURE).
max_future_skew = "10m"

# Earliest event timestamp accepted (else TOO_OLD naming this limit): an RFC 3339 time
# or a date (UTC), or "none". Earlier timestamps are almost always zero or seconds sent
# as milliseconds.
min_event_time = "2000-01-01"

# How long event ids are remembered to skip duplicates.
dedup_window = "1h"

# How long an idle producer's last sequence is remembered for exactly-once retries.
producer_idle = "7d"

# Memtable size that triggers a flush to a segment file.
memtable_size = "64MiB"

# Memory for decoded segment blocks shared by all queries ("0" turns the cache off).
block_cache_size = "64MiB"

[retention]
# How long each tier keeps its cells. Data leaves a tier when it is older than the
# tier's retention, never the coarser tiers. Must not shrink from minute to hour to day.
minute = "7d"
hour = "400d"
day = "forever"

[limits]
# Most connections served at once; more are answered BUSY and closed.
max_connections = 1024
# Largest frame (request or response) after the handshake, announced in HELLO_OK.
# Between 4096 bytes and 1GiB.
max_frame_bytes = "16MiB"
# Most events in one INCR batch (more: BATCH_TOO_LARGE), announced in HELLO_OK.
max_batch_events = 100000
# Series aliases must be below this value, per connection (announced in HELLO_OK).
max_aliases = 65536
# Requests read ahead on one connection while earlier ones are being answered.
max_pipeline = 128
# A connection with no request in flight and nothing received for this long is closed.
idle_timeout = "5m"

[log]
# "text" (human-readable lines) or "json" (one JSON object per line), on stderr.
format = "text"
# Log filter, tracing's EnvFilter syntax, e.g. "info" or "info,tallydb_storage=debug".
# The RUST_LOG environment variable, when set, replaces it.
level = "info"

[auth]
# With no tokens configured, loopback clients are granted the admin role and remote
# clients are refused (UNAUTHENTICATED) unless this is true, which grants every remote
# client the admin role too.
allow_remote_without_token = false

# Tokens: each grants a role to the clients that present it in HELLO. Once any token is
# configured, every client must present one. Store only the SHA-256 of a token, as
# printed by `echo -n SECRET | tallyd hash-token`. Roles: "read" (queries, PING, STATS),
# "write" (read + INCR), "admin" (write + FLUSH, COMPACT, SNAPSHOT). No tokens by default.
#
# [[auth.tokens]]
# name = "ingest"
# role = "write"
# sha256 = "<64 hex digits>"
"#;

/// Every key that an environment variable or a flag may set, as a dotted path.
pub const SCALAR_KEYS: &[&str] = &[
    "listen",
    "http_listen",
    "data_dir",
    "fsync",
    "max_future_skew",
    "min_event_time",
    "dedup_window",
    "producer_idle",
    "memtable_size",
    "block_cache_size",
    "retention.minute",
    "retention.hour",
    "retention.day",
    "limits.max_connections",
    "limits.max_frame_bytes",
    "limits.max_batch_events",
    "limits.max_aliases",
    "limits.max_pipeline",
    "limits.idle_timeout",
    "log.format",
    "log.level",
    "auth.allow_remote_without_token",
];

/// The environment variable that overrides `key` (`limits.max_aliases` →
/// `TALLYD_LIMITS_MAX_ALIASES`).
pub fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// A configuration that cannot be used. Every variant names what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, naming the key and line.
        message: String,
    },
    /// A key has a value outside its rules.
    #[error("config key `{key}`{origin}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Where the value came from (` (from TALLYD_X)`), empty for the file.
        origin: String,
        /// The rule broken.
        message: String,
    },
    /// A `TALLYD_*` environment variable names no config key.
    #[error("unknown environment variable {name}: no config key is named so (known: {known})")]
    UnknownEnv {
        /// The variable.
        name: String,
        /// The variables that are understood.
        known: String,
    },
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format {s:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// Connection and request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Largest frame after the handshake, both directions.
    pub max_frame_bytes: u32,
    /// Most events in one `INCR`.
    pub max_batch_events: u32,
    /// Aliases must be below this value.
    pub max_aliases: u32,
    /// Requests read ahead per connection.
    pub max_pipeline: usize,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// `EnvFilter` directives.
    pub level: String,
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// A name for logs (never the token itself).
    pub name: String,
    /// The role it grants.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// Authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// Configured tokens; when any exists every client must present one.
    pub tokens: Vec<TokenConfig>,
    /// Without tokens, serve remote clients too (as admin).
    pub allow_remote_without_token: bool,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the HTTP side door; `None` when turned off.
    pub http_listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// WAL durability.
    pub fsync: FsyncPolicy,
    /// Retention per tier.
    pub retention: Retention,
    /// Largest allowed clock skew of event timestamps.
    pub max_future_skew: Duration,
    /// Earliest accepted event timestamp (unix ms; `i64::MIN` for none).
    pub min_event_ms: i64,
    /// Event-id dedup window.
    pub dedup_window: Duration,
    /// Producer state expiry.
    pub producer_idle: Duration,
    /// Memtable size that triggers a flush.
    pub memtable_bytes: u64,
    /// Memory for decoded segment blocks shared by queries (0: no cache).
    pub block_cache_bytes: u64,
    /// Connection and request limits.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication.
    pub auth: AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7411)),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7412))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            fsync: FsyncPolicy::Always,
            retention: Retention::default(),
            max_future_skew: Duration::from_secs(10 * 60),
            min_event_ms: tallydb_storage::DEFAULT_MIN_EVENT_MS,
            dedup_window: Duration::from_secs(3600),
            producer_idle: Duration::from_secs(7 * 86_400),
            memtable_bytes: 64 << 20,
            block_cache_bytes: 64 << 20,
            limits: LimitsConfig {
                max_connections: 1024,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                max_batch_events: 100_000,
                max_aliases: 65_536,
                max_pipeline: 128,
                idle_timeout: Duration::from_secs(300),
            },
            log: LogConfig {
                format: LogFormat::Text,
                level: "info".into(),
            },
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    /// Resolves the layers: the file (if any), then `env` (every `TALLYD_*` pair; pass
    /// `std::env::vars()`), then `flags` (`(dotted key, value)` from the command line).
    pub fn load<I>(
        file: Option<&Path>,
        env: I,
        flags: &[(&str, String)],
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                RawConfig::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
            None => RawConfig::default(),
        };
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != ENV_CONFIG_FILE)
            .collect();
        env.sort();
        for (name, value) in env {
            let key = SCALAR_KEYS
                .iter()
                .find(|k| env_var_for(k) == name)
                .ok_or_else(|| ConfigError::UnknownEnv {
                    name: name.clone(),
                    known: SCALAR_KEYS
                        .iter()
                        .map(|k| env_var_for(k))
                        .chain([ENV_CONFIG_FILE.to_string()])
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            raw.set(key, &value, format!("environment variable {name}"))?;
        }
        for (key, value) in flags {
            let flag = format!("--{}", key.replace(['.', '_'], "-"));
            raw.set(key, value, format!("flag {flag}"))?;
        }
        raw.resolve()
    }

    /// Parses a whole config file's text (no overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        RawConfig::parse(text)
            .map_err(|message| ConfigError::Parse {
                path: PathBuf::from("<text>"),
                message,
            })?
            .resolve()
    }

    /// The storage engine options this configuration asks for.
    pub fn engine_options(&self) -> Options {
        Options {
            fsync: self.fsync,
            retention: self.retention,
            max_future_skew_ms: millis(self.max_future_skew),
            min_event_ms: self.min_event_ms,
            dedup_window_ms: millis(self.dedup_window),
            producer_idle_ms: millis(self.producer_idle),
            memtable_bytes: usize::try_from(self.memtable_bytes).unwrap_or(usize::MAX),
            block_cache_bytes: usize::try_from(self.block_cache_bytes).unwrap_or(usize::MAX),
            max_batch_events: self.limits.max_batch_events as usize,
            ..Options::default()
        }
    }

    /// The limits announced to clients in `HELLO_OK`.
    pub fn protocol_limits(&self) -> tallydb_protocol::Limits {
        tallydb_protocol::Limits {
            max_frame: self.limits.max_frame_bytes,
            max_batch_events: self.limits.max_batch_events,
            max_aliases: self.limits.max_aliases,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A size: a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    minute: Option<String>,
    hour: Option<String>,
    day: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<u64>,
    max_frame_bytes: Option<RawSize>,
    max_batch_events: Option<u64>,
    max_aliases: Option<u64>,
    max_pipeline: Option<u64>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: String,
    sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    tokens: Vec<RawToken>,
    allow_remote_without_token: Option<bool>,
}

/// One layer of configuration as written: every key optional, values unchecked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    http_listen: Option<String>,
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    max_future_skew: Option<String>,
    min_event_time: Option<String>,
    dedup_window: Option<String>,
    producer_idle: Option<String>,
    memtable_size: Option<RawSize>,
    block_cache_size: Option<RawSize>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    auth: RawAuth,
    /// Where overridden keys came from, for error messages.
    #[serde(skip)]
    origins: BTreeMap<String, String>,
}

impl RawConfig {
    fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Sets one scalar key from a string (an environment variable or a flag).
    fn set(&mut self, key: &str, value: &str, origin: String) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: format!(" (from {origin})"),
            message,
        };
        let int = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("{value:?} is not a whole number")))
        };
        let s = || Some(value.to_string());
        match key {
            "listen" => self.listen = s(),
            "http_listen" => self.http_listen = s(),
            "data_dir" => self.data_dir = Some(PathBuf::from(value)),
            "fsync" => self.fsync = s(),
            "max_future_skew" => self.max_future_skew = s(),
            "min_event_time" => self.min_event_time = s(),
            "dedup_window" => self.dedup_window = s(),
            "producer_idle" => self.producer_idle = s(),
            "memtable_size" => self.memtable_size = Some(RawSize::Text(value.to_string())),
            "block_cache_size" => self.block_cache_size = Some(RawSize::Text(value.to_string())),
            "retention.minute" => self.retention.minute = s(),
            "retention.hour" => self.retention.hour = s(),
            "retention.day" => self.retention.day = s(),
            "limits.max_connections" => self.limits.max_connections = Some(int()?),
            "limits.max_frame_bytes" => {
                self.limits.max_frame_bytes = Some(RawSize::Text(value.to_string()))
            }
            "limits.max_batch_events" => self.limits.max_batch_events = Some(int()?),
            "limits.max_aliases" => self.limits.max_aliases = Some(int()?),
            "limits.max_pipeline" => self.limits.max_pipeline = Some(int()?),
            "limits.idle_timeout" => self.limits.idle_timeout = s(),
            "log.format" => self.log.format = s(),
            "log.level" => self.log.level = s(),
            "auth.allow_remote_without_token" => {
                self.auth.allow_remote_without_token = Some(match value.trim() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(invalid(format!("{value:?} is not true or false"))),
                })
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: key.to_string(),
                    origin: format!(" (from {origin})"),
                    message: "no such key".into(),
                })
            }
        }
        self.origins.insert(key.to_string(), origin);
        Ok(())
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            origin: self
                .origins
                .get(key)
                .map(|o| format!(" (from {o})"))
                .unwrap_or_default(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => match parse_duration(s) {
                Ok(Some(d)) => Ok(d),
                Ok(None) => Err(self.invalid(key, "\"forever\" is only allowed for retentions")),
                Err(e) => Err(self.invalid(key, e)),
            },
        }
    }

    fn retention(
        &self,
        key: &str,
        v: &Option<String>,
        default: Option<i64>,
    ) -> Result<Option<i64>, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => match parse_duration(s) {
                Ok(Some(d)) => Ok(Some(millis(d))),
                Ok(None) => Ok(None),
                Err(e) => Err(self.invalid(key, e)),
            },
        }
    }

    fn size(&self, key: &str, v: &Option<RawSize>, default: u64) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(RawSize::Bytes(n)) => Ok(*n),
            Some(RawSize::Text(s)) => parse_size(s).map_err(|e| self.invalid(key, e)),
        }
    }

    fn int(
        &self,
        key: &str,
        v: Option<u64>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let n = v.unwrap_or(default);
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(
                key,
                format!("{n} is outside {}..={}", range.start(), range.end()),
            ))
        }
    }

    /// Applies defaults and checks every rule.
    fn resolve(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let listen = match &self.listen {
            None => d.listen,
            Some(s) => s.trim().parse::<SocketAddr>().map_err(|e| {
                self.invalid(
                    "listen",
                    format!("{s:?} is not an IP address and port such as \"127.0.0.1:7411\": {e}"),
                )
            })?,
        };
        let http_listen = match self.http_listen.as_deref().map(str::trim) {
            None => d.http_listen,
            Some("") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|e| {
                self.invalid(
                    "http_listen",
                    format!(
                        "{s:?} is not an IP address and port such as \"127.0.0.1:7412\" (or \"\" to turn HTTP off): {e}"
                    ),
                )
            })?),
        };
        let data_dir = self.data_dir.clone().unwrap_or(d.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "must not be empty"));
        }
        let fsync = match &self.fsync {
            None => d.fsync,
            Some(s) => s.parse::<FsyncPolicy>().map_err(|_| {
                self.invalid(
                    "fsync",
                    format!("{s:?}: expected \"always\", \"never\" or \"interval:<ms>\" with 1 to 60000 ms"),
                )
            })?,
        };
        let retention = Retention {
            minute_ms: self.retention(
                "retention.minute",
                &self.retention.minute,
                d.retention.minute_ms,
            )?,
            hour_ms: self.retention("retention.hour", &self.retention.hour, d.retention.hour_ms)?,
            day_ms: self.retention("retention.day", &self.retention.day, d.retention.day_ms)?,
        };
        let max_future_skew =
            self.duration("max_future_skew", &self.max_future_skew, d.max_future_skew)?;
        let min_event_ms = match &self.min_event_time {
            None => d.min_event_ms,
            Some(t) => parse_min_event_time(t).map_err(|m| self.invalid("min_event_time", m))?,
        };
        let dedup_window = self.duration("dedup_window", &self.dedup_window, d.dedup_window)?;
        let producer_idle = self.duration("producer_idle", &self.producer_idle, d.producer_idle)?;
        let memtable_bytes = self.size("memtable_size", &self.memtable_size, d.memtable_bytes)?;
        if memtable_bytes < 4096 {
            return Err(self.invalid(
                "memtable_size",
                format!("{memtable_bytes} bytes is below the minimum of 4096"),
            ));
        }
        let block_cache_bytes = self.size(
            "block_cache_size",
            &self.block_cache_size,
            d.block_cache_bytes,
        )?;
        let l = &self.limits;
        let dl = &d.limits;
        let max_frame = self.size(
            "limits.max_frame_bytes",
            &l.max_frame_bytes,
            u64::from(dl.max_frame_bytes),
        )?;
        let max_frame_range = u64::from(HANDSHAKE_MAX_FRAME)..=(1 << 30);
        if !max_frame_range.contains(&max_frame) {
            return Err(self.invalid(
                "limits.max_frame_bytes",
                format!("{max_frame} bytes is outside 4096 bytes..=1GiB"),
            ));
        }
        let limits = LimitsConfig {
            max_connections: self.int(
                "limits.max_connections",
                l.max_connections,
                dl.max_connections as u64,
                1..=1_000_000,
            )? as usize,
            max_frame_bytes: u32::try_from(max_frame).unwrap_or(u32::MAX),
            max_batch_events: self.int(
                "limits.max_batch_events",
                l.max_batch_events,
                u64::from(dl.max_batch_events),
                1..=10_000_000,
            )? as u32,
            max_aliases: self.int(
                "limits.max_aliases",
                l.max_aliases,
                u64::from(dl.max_aliases),
                0..=16_777_216,
            )? as u32,
            max_pipeline: self.int(
                "limits.max_pipeline",
                l.max_pipeline,
                dl.max_pipeline as u64,
                1..=65_536,
            )? as usize,
            idle_timeout: self.duration("limits.idle_timeout", &l.idle_timeout, dl.idle_timeout)?,
        };
        if limits.idle_timeout.is_zero() {
            return Err(self.invalid("limits.idle_timeout", "must be longer than zero"));
        }
        let format = match &self.log.format {
            None => d.log.format,
            Some(s) => s
                .parse()
                .map_err(|e: String| self.invalid("log.format", e))?,
        };
        let level = self.log.level.clone().unwrap_or(d.log.level);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            return Err(self.invalid("log.level", format!("{level:?}: {e}")));
        }
        let mut tokens: Vec<TokenConfig> = Vec::with_capacity(self.auth.tokens.len());
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            if t.name.trim().is_empty() {
                return Err(self.invalid(&format!("{key}.name"), "must not be empty"));
            }
            if tokens.iter().any(|o| o.name == t.name) {
                return Err(self.invalid(
                    &format!("{key}.name"),
                    format!("{:?} is used twice", t.name),
                ));
            }
            let role = parse_role(&t.role).map_err(|e| self.invalid(&format!("{key}.role"), e))?;
            let sha256 = parse_hex32(&t.sha256).map_err(|e| {
                self.invalid(
                    &format!("{key}.sha256"),
                    format!("{e} (print one with `tallyd hash-token`)"),
                )
            })?;
            tokens.push(TokenConfig {
                name: t.name.clone(),
                role,
                sha256,
            });
        }
        let config = Config {
            listen,
            http_listen,
            data_dir,
            fsync,
            retention,
            max_future_skew,
            min_event_ms,
            dedup_window,
            producer_idle,
            memtable_bytes,
            block_cache_bytes,
            limits,
            log: LogConfig { format, level },
            auth: AuthConfig {
                tokens,
                allow_remote_without_token: self
                    .auth
                    .allow_remote_without_token
                    .unwrap_or(d.auth.allow_remote_without_token),
            },
        };
        if let Err(e) = config.engine_options().validate() {
            let key = if e.to_string().contains("retention") {
                "retention"
            } else {
                "(engine options)"
            };
            return Err(self.invalid(key, e.to_string()));
        }
        Ok(config)
    }
}

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
fn parse_min_event_time(s: &str) -> Result<i64, String> {
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

#[cfg(test)]
mod min_event_time_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn min_event_time_is_a_date_a_time_or_none() {
        assert_eq!(Config::default().min_event_ms, 946_684_800_000);
        assert_eq!(parse_min_event_time("2000-01-01").unwrap(), 946_684_800_000);
        assert_eq!(
            parse_min_event_time("2000-01-01T01:00:00+01:00").unwrap(),
            946_684_800_000
        );
        assert_eq!(parse_min_event_time("none").unwrap(), i64::MIN);
        assert!(parse_min_event_time("yesterday").is_err());
        let c = Config::from_toml("min_event_time = \"2020-01-01\"\n").unwrap();
        assert_eq!(c.engine_options().min_event_ms, 1_577_836_800_000);
        assert!(Config::from_toml("min_event_time = \"soon\"\n").is_err());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(
        file: &str,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, file).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let flags: Vec<(&str, String)> = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::load(Some(&path), env, &flags)
    }

    #[test]
    fn default_file_parses_to_the_defaults_and_documents_every_key() {
        assert_eq!(
            Config::from_toml(DEFAULT_CONFIG).unwrap(),
            Config::default()
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        for key in SCALAR_KEYS {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                DEFAULT_CONFIG.contains(&format!("\n{leaf} = ")),
                "{key} is not in the default file"
            );
        }
        let d = Config::default();
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert!(d.listen.ip().is_loopback());
        assert_eq!(d.limits.max_frame_bytes, 16 << 20);
    }

    #[test]
    fn every_scalar_key_can_be_set_by_its_variable() {
        let values = [
            ("listen", "0.0.0.0:9"),
            ("http_listen", ""),
            ("data_dir", "/x"),
            ("fsync", "never"),
            ("max_future_skew", "1m"),
            ("dedup_window", "2h"),
            ("producer_idle", "1d"),
            ("memtable_size", "1MiB"),
            ("block_cache_size", "0"),
            ("retention.minute", "1d"),
            ("retention.hour", "30d"),
            ("retention.day", "3650d"),
            ("limits.max_connections", "7"),
            ("limits.max_frame_bytes", "65536"),
            ("limits.max_batch_events", "10"),
            ("limits.max_aliases", "5"),
            ("limits.max_pipeline", "3"),
            ("limits.idle_timeout", "9s"),
            ("log.format", "json"),
            ("log.level", "debug"),
            ("auth.allow_remote_without_token", "true"),
            ("min_event_time", "2010-01-01"),
        ];
        assert_eq!(values.len(), SCALAR_KEYS.len());
        let env: Vec<(String, &str)> = values.iter().map(|(k, v)| (env_var_for(k), *v)).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let c = load("", &env, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9");
        assert_eq!(c.http_listen, None, "an empty http_listen turns HTTP off");
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.fsync, FsyncPolicy::Never);
        assert_eq!(c.max_future_skew, Duration::from_secs(60));
        assert_eq!(c.dedup_window, Duration::from_secs(7200));
        assert_eq!(c.producer_idle, Duration::from_secs(86_400));
        assert_eq!(c.memtable_bytes, 1 << 20);
        assert_eq!(c.block_cache_bytes, 0);
        assert_eq!(c.retention.minute_ms, Some(86_400_000));
        assert_eq!(c.retention.day_ms, Some(3650 * 86_400_000));
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.max_frame_bytes, 65536);
        assert_eq!(c.limits.max_batch_events, 10);
        assert_eq!(c.limits.max_aliases, 5);
        assert_eq!(c.limits.max_pipeline, 3);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(9));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        assert!(c.auth.allow_remote_without_token);
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let file = "listen = \"127.0.0.1:1000\"\nfsync = \"never\"\n[limits]\nmax_aliases = 10\n";
        let c = load(file, &[], &[]).unwrap();
        assert_eq!(c.listen.port(), 1000);
        assert_eq!(c.fsync, FsyncPolicy::Never);
        assert_eq!(c.limits.max_aliases, 10);
        assert_eq!(c.limits.max_connections, 1024); // default
        let env = [
            ("TALLYD_LISTEN", "127.0.0.1:2000"),
            ("TALLYD_FSYNC", "interval:5"),
        ];
        let c = load(file, &env, &[]).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.fsync, FsyncPolicy::Interval(5));
        assert_eq!(c.limits.max_aliases, 10);
        let c = load(file, &env, &[("listen", "127.0.0.1:3000")]).unwrap();
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.fsync, FsyncPolicy::Interval(5));
    }

    fn err(file: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> String {
        load(file, env, flags).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let e = err("lisen = \"x\"\n", &[], &[]);
        assert!(e.contains("lisen"), "{e}");
        let e = err("[limits]\nmax_conections = 3\n", &[], &[]);
        assert!(e.contains("max_conections"), "{e}");
        let e = err("[retention]\nminute = \"7x\"\n", &[], &[]);
        assert!(e.contains("retention.minute") && e.contains("7x"), "{e}");
        let e = err("listen = \"localhost\"\n", &[], &[]);
        assert!(e.contains("`listen`"), "{e}");
        let e = err("fsync = \"sometimes\"\n", &[], &[]);
        assert!(e.contains("`fsync`") && e.contains("sometimes"), "{e}");
        let e = err("", &[("TALLYD_FSYNC", "interval:0")], &[]);
        assert!(e.contains("`fsync`") && e.contains("TALLYD_FSYNC"), "{e}");
        let e = err("", &[], &[("limits.idle_timeout", "soon")]);
        assert!(
            e.contains("limits.idle_timeout") && e.contains("--limits-idle-timeout"),
            "{e}"
        );
        let e = err("", &[("TALLYD_LISEN", "x")], &[]);
        assert!(e.contains("TALLYD_LISEN"), "{e}");
        let e = err("", &[("TALLYD_LIMITS_MAX_CONNECTIONS", "many")], &[]);
        assert!(e.contains("limits.max_connections"), "{e}");
        let e = err("[limits]\nmax_frame_bytes = 100\n", &[], &[]);
        assert!(e.contains("limits.max_frame_bytes"), "{e}");
        let e = err("[retention]\nminute = \"30d\"\nhour = \"1d\"\n", &[], &[]);
        assert!(e.contains("retention"), "{e}");
        let e = err("dedup_window = \"forever\"\n", &[], &[]);
        assert!(e.contains("dedup_window"), "{e}");
        let e = err("[log]\nformat = \"xml\"\n", &[], &[]);
        assert!(e.contains("log.format"), "{e}");
        let e = err("data_dir = 5\n", &[], &[]);
        assert!(e.contains("data_dir"), "{e}");
    }

    #[test]
    fn tokens_are_parsed_and_checked() {
        let hash = "ab".repeat(32);
        let file = format!(
            "[[auth.tokens]]\nname = \"w\"\nrole = \"write\"\nsha256 = \"{hash}\"\n\
             [[auth.tokens]]\nname = \"r\"\nrole = \"read\"\nsha256 = \"{}\"\n",
            "CD".repeat(32)
        );
        let c = load(&file, &[], &[]).unwrap();
        assert_eq!(c.auth.tokens.len(), 2);
        assert_eq!(c.auth.tokens[0].role, Role::Write);
        assert_eq!(c.auth.tokens[0].sha256, [0xab; 32]);
        assert_eq!(c.auth.tokens[1].sha256, [0xcd; 32]);
        let bad = format!("[[auth.tokens]]\nname = \"w\"\nrole = \"root\"\nsha256 = \"{hash}\"\n");
        assert!(err(&bad, &[], &[]).contains("auth.tokens[0].role"));
        let bad = "[[auth.tokens]]\nname = \"w\"\nrole = \"read\"\nsha256 = \"abc\"\n";
        assert!(err(bad, &[], &[]).contains("auth.tokens[0].sha256"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Some(Duration::from_secs(14 * 86_400))
        );
        assert_eq!(parse_duration("forever").unwrap(), None);
        for bad in ["", "7", "d", "-1d", "1.5h", "1 y", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("lots").is_err());
    }
}
