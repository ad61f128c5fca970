//! [`ConfigError`]: every way a configuration can be unusable, naming the key and
//! where its value came from.

use std::path::PathBuf;

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
