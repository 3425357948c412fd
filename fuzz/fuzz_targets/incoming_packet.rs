//! The wrapper's incoming-packet token: arbitrary payloads, lengths, flags and KMCL answers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmbus_kmcl_fuzz::incoming::run(data));
