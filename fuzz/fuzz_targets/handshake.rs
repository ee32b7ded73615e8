#![no_main]
//! See `rask_fuzz::TARGETS` and the fuzz README.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rask_fuzz::run("handshake", data));
