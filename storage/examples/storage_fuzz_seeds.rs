//! Writes the seed corpora of the fuzz targets in `storage/fuzz/`: valid WAL files and
//! typical damage for `wal_recovery`, valid segments of every tier and both codecs for
//! `segment_open`.
//!
//! ```text
//! cargo run -p tallydb-storage --example storage_fuzz_seeds -- storage/fuzz/corpus
//! ```
//!
//! Existing files are overwritten; file names start with `seed-`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tallydb_storage::fuzzing::{seed_segments, seed_wal_files};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn run(corpus: &Path) -> std::io::Result<usize> {
    let wal = seed_wal_files();
    let segments = seed_segments();
    for (name, bytes) in &wal {
        write(&corpus.join("wal_recovery"), name, bytes)?;
    }
    for (name, bytes) in &segments {
        write(&corpus.join("segment_open"), name, bytes)?;
    }
    Ok(wal.len() + segments.len())
}

fn main() -> ExitCode {
    let corpus: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("storage/fuzz/corpus"), PathBuf::from);
    match run(&corpus) {
        Ok(n) => {
            println!("wrote {n} seed files under {}", corpus.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("writing seeds under {}: {e}", corpus.display());
            ExitCode::FAILURE
        }
    }
}
