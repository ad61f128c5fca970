//! Replays the fuzz corpora in `storage/fuzz/corpus/` through the same checks as the
//! fuzz targets (`tallydb_storage::fuzzing`), so every input the fuzzer kept — and
//! every crash it once found — is checked by `cargo test`.

use std::path::{Path, PathBuf};

use tallydb_storage::fuzzing::{
    check_segment_open, check_wal_recovery, seed_segments, seed_wal_files,
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
        println!("{target}: {} ({} bytes)", path.display(), bytes.len());
        check(&bytes);
    }
}

#[test]
fn wal_recovery_corpus_passes() {
    replay("wal_recovery", check_wal_recovery);
}

#[test]
fn segment_open_corpus_passes() {
    replay("segment_open", check_segment_open);
}

#[test]
fn every_prefix_of_a_valid_wal_recovers() {
    let seeds = seed_wal_files();
    let (_, full) = seeds
        .iter()
        .find(|(name, _)| *name == "wal-batches")
        .expect("the wal-batches seed");
    for cut in 0..=full.len() {
        check_wal_recovery(&full[..cut]);
    }
}

#[test]
fn every_bit_flip_of_a_valid_segment_is_caught_or_harmless() {
    for (name, bytes) in seed_segments() {
        check_segment_open(&bytes);
        if name != "segment-minute-lz4" && name != "segment-day-zstd" {
            continue;
        }
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                check_segment_open(&flipped);
            }
            check_segment_open(&bytes[..at]);
        }
    }
}

#[test]
fn seeds_are_valid_where_meant() {
    // Seeds named as valid files must open cleanly, so that the fuzzer starts deep.
    for (name, bytes) in seed_wal_files() {
        check_wal_recovery(&bytes);
        let scan = tallydb_storage::wal::scan_file(Path::new("w.wal"), &bytes, 1);
        match name {
            "wal-batches" | "wal-one-batch" | "wal-far-times" => {
                let scan = scan.expect("a valid seed scans");
                assert_eq!(scan.torn_at, None, "{name}");
                assert!(!scan.records.is_empty(), "{name}");
            }
            "wal-wrong-number" | "wal-damage-before-valid" | "wal-damaged-header" => {
                assert!(scan.is_err(), "{name} is refused");
            }
            _ => {}
        }
    }
    for (name, bytes) in seed_segments() {
        let map: tallydb_storage::fs::Mapped = std::sync::Arc::new(bytes);
        let seg = tallydb_storage::segment::Segment::from_bytes(Path::new("s.seg"), map)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let codecs: Vec<u8> = seg
            .blocks()
            .iter()
            .map(|b| seg.bytes()[b.offset as usize])
            .collect();
        let want = if name.ends_with("lz4") { 1 } else { 2 };
        assert!(
            codecs.iter().all(|c| *c == want),
            "{name}: codecs {codecs:?}"
        );
        assert_eq!(
            codecs.len(),
            usize::from(name.contains("two-blocks")) + usize::from(name != "segment-empty"),
            "{name}"
        );
    }
}
