//! `tallyd`'s configuration, loaded and validated by the `tallydb-config` crate (shared
//! with the operator tools) and re-exported here so server code names it
//! `crate::config`.

pub use tallydb_config::*;
