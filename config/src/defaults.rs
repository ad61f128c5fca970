//! Built-in defaults: the default addresses and sizes, [`DEFAULT_CONFIG`] (the full
//! default file, every key documented), and the scalar keys that `TALLYD_*`
//! variables and flags may set.

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
/// Parsing it yields [`Config::default`](crate::Config::default) (a unit test holds this).
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
# A connection that has not completed HELLO within this long is closed.
handshake_timeout = "5s"
# Most connections from one IP address (a connection over it first evicts the oldest
# connection of that address still in its handshake, else is answered BUSY).
max_connections_per_address = 256
# Connections accepted beyond max_connections for the admin role only (any other role
# is answered BUSY after HELLO), so an operator can always get in.
admin_reserved_connections = 8

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
    "limits.handshake_timeout",
    "limits.max_connections_per_address",
    "limits.admin_reserved_connections",
    "log.format",
    "log.level",
    "auth.allow_remote_without_token",
];

/// The environment variable that overrides `key` (`limits.max_aliases` →
/// `TALLYD_LIMITS_MAX_ALIASES`).
pub fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}
