//! Writes the seed corpora of the fuzz targets in `protocol/fuzz/`: one valid frame per
//! opcode (several for the richer messages) for both targets, plus `HELLO` payloads for
//! `handshake`.
//!
//! ```text
//! cargo run -p tallydb-protocol --example fuzz_seeds -- protocol/fuzz/corpus
//! ```
//!
//! Existing files are overwritten; file names start with `seed-`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tallydb_protocol::fuzzing::{seed_frames, seed_hello_payloads};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn run(corpus: &Path) -> std::io::Result<usize> {
    let frames = seed_frames();
    let hellos = seed_hello_payloads();
    for (name, bytes) in &frames {
        write(&corpus.join("decode_frame"), name, bytes)?;
        write(&corpus.join("handshake"), name, bytes)?;
    }
    for (name, bytes) in &hellos {
        write(&corpus.join("handshake"), name, bytes)?;
    }
    // What a client may send before HELLO_OK: a request that must wait, then HELLO.
    let find = |wanted: &str| {
        frames
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, bytes)| bytes.as_slice())
            .unwrap_or_default()
    };
    let stream = [
        find("ping"),
        find("incr-empty"),
        find("hello"),
        find("ping"),
    ]
    .concat();
    write(
        &corpus.join("handshake"),
        "stream-ping-incr-hello-ping",
        &stream,
    )?;
    Ok(2 * frames.len() + hellos.len() + 1)
}

fn main() -> ExitCode {
    let corpus: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("protocol/fuzz/corpus"), PathBuf::from);
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
