//! The sim's raw guest-frame parser (`Bus::inject_raw_guest_packet`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmbus_kmcl_fuzz::raw::run(data));
