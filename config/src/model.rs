//! The resolved configuration: [`Config`] and its sections, with what they mean for
//! the storage engine ([`Config::engine_options`]) and for clients
//! ([`Config::protocol_limits`]), and [`Config::load`], which layers file,
//! environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tallydb_protocol::Role;
use tallydb_storage::{FsyncPolicy, Options, Retention};

use crate::defaults::{
    env_var_for, DEFAULT_DATA_DIR, DEFAULT_MAX_FRAME_BYTES, ENV_CONFIG_FILE, ENV_PREFIX,
    SCALAR_KEYS,
};
use crate::error::ConfigError;
use crate::raw::RawConfig;

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
    /// Connections that have not completed `HELLO` are closed after this long.
    pub handshake_timeout: Duration,
    /// Most connections from one IP address.
    pub max_connections_per_address: usize,
    /// Slots beyond `max_connections` kept for the admin role.
    pub admin_reserved_connections: usize,
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
                handshake_timeout: Duration::from_secs(5),
                max_connections_per_address: 256,
                admin_reserved_connections: 8,
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

/// A duration in whole milliseconds, saturating (engine options count in `i64` ms).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
