//! Unit tests of loading, precedence and validation.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use tallydb_protocol::Role;
use tallydb_storage::FsyncPolicy;

use crate::*;

fn load(file: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config, ConfigError> {
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
        ("min_event_time", "2010-01-01"),
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
        ("limits.handshake_timeout", "2s"),
        ("limits.max_connections_per_address", "6"),
        ("limits.admin_reserved_connections", "1"),
        ("log.format", "json"),
        ("log.level", "debug"),
        ("auth.allow_remote_without_token", "true"),
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
    assert_eq!(c.limits.handshake_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.max_connections_per_address, 6);
    assert_eq!(c.limits.admin_reserved_connections, 1);
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
