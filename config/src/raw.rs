//! One layer of configuration as written ([`RawConfig`]: every key optional, values
//! unchecked), overrides from variables and flags, and [`RawConfig::resolve`], which
//! applies the defaults and checks every rule.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tallydb_protocol::HANDSHAKE_MAX_FRAME;
use tallydb_storage::{FsyncPolicy, Retention};

use crate::error::ConfigError;
use crate::model::{millis, AuthConfig, Config, LimitsConfig, LogConfig, TokenConfig};
use crate::parse::{parse_duration, parse_hex32, parse_min_event_time, parse_role, parse_size};

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
    handshake_timeout: Option<String>,
    max_connections_per_address: Option<u64>,
    admin_reserved_connections: Option<u64>,
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
pub(crate) struct RawConfig {
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
    /// Parses one config file's text; the error names the key and line.
    pub(crate) fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Sets one scalar key from a string (an environment variable or a flag).
    pub(crate) fn set(
        &mut self,
        key: &str,
        value: &str,
        origin: String,
    ) -> Result<(), ConfigError> {
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
            "limits.handshake_timeout" => self.limits.handshake_timeout = s(),
            "limits.max_connections_per_address" => {
                self.limits.max_connections_per_address = Some(int()?)
            }
            "limits.admin_reserved_connections" => {
                self.limits.admin_reserved_connections = Some(int()?)
            }
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
    pub(crate) fn resolve(self) -> Result<Config, ConfigError> {
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
            handshake_timeout: self.duration(
                "limits.handshake_timeout",
                &l.handshake_timeout,
                dl.handshake_timeout,
            )?,
            max_connections_per_address: self.int(
                "limits.max_connections_per_address",
                l.max_connections_per_address,
                dl.max_connections_per_address as u64,
                1..=1_000_000,
            )? as usize,
            admin_reserved_connections: self.int(
                "limits.admin_reserved_connections",
                l.admin_reserved_connections,
                dl.admin_reserved_connections as u64,
                0..=1_000,
            )? as usize,
        };
        if limits.idle_timeout.is_zero() {
            return Err(self.invalid("limits.idle_timeout", "must be longer than zero"));
        }
        if limits.handshake_timeout.is_zero() {
            return Err(self.invalid("limits.handshake_timeout", "must be longer than zero"));
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
