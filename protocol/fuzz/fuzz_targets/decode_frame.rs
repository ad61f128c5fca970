//! Arbitrary bytes through `decode_frame` and `decode_frame_with_limits` under several
//! limits; whatever decodes must re-encode to a frame that decodes to the same message.
//! The properties live in `tallydb_protocol::fuzzing::check_decode_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tallydb_protocol::fuzzing::check_decode_frame(data);
});
