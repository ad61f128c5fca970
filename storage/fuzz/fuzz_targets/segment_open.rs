//! Bytes as a segment file: opened, every block read, scanned and, when intact,
//! written again. The properties live in
//! `tallydb_storage::fuzzing::check_segment_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallydb_storage::fuzzing::check_segment_open(data);
});
