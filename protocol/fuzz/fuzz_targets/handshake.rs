//! Bytes as a `HELLO` payload and as the frames a client sends before `HELLO_OK`, under
//! `HANDSHAKE_MAX_FRAME`. The properties live in
//! `tallydb_protocol::fuzzing::check_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallydb_protocol::fuzzing::check_handshake(data);
});
