//! Replays the fuzz corpora in `protocol/fuzz/corpus/` through the same checks as the
//! fuzz targets (`tallydb_protocol::fuzzing`), so every input the fuzzer kept — and
//! every crash it once found — is checked by `cargo test`.

use std::path::{Path, PathBuf};

use tallydb_protocol::fuzzing::{
    check_decode_frame, check_handshake, seed_frames, seed_hello_payloads,
};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()));
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("listing the corpus").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    // An empty or missing corpus would make this test pass while checking nothing.
    assert!(
        files.len() >= 10,
        "{} holds only {} files",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        // Captured, and shown by the test harness when the check below panics.
        println!("{target}: {} = {bytes:02x?}", path.display());
        check(&bytes);
    }
}

#[test]
fn decode_frame_corpus_passes() {
    replay("decode_frame", check_decode_frame);
}

#[test]
fn handshake_corpus_passes() {
    replay("handshake", check_handshake);
}

#[test]
fn seeds_pass_both_checks() {
    for (name, bytes) in seed_frames() {
        check_decode_frame(&bytes);
        check_handshake(&bytes);
        // Two frames back to back, and every strict prefix.
        let two = [&bytes[..], &bytes[..]].concat();
        check_decode_frame(&two);
        check_handshake(&two);
        for cut in 0..bytes.len() {
            check_decode_frame(&bytes[..cut]);
        }
        assert!(!name.is_empty());
    }
    for (_, payload) in seed_hello_payloads() {
        check_handshake(&payload);
    }
}
