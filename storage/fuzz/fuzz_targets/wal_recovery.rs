//! Bytes as the only WAL file of a data directory: scanned, decoded, replayed and
//! recovered by `Engine::open`, whose answers must equal the replayed events. The
//! properties live in `tallydb_storage::fuzzing::check_wal_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallydb_storage::fuzzing::check_wal_recovery(data);
});
