//! The echo VSP (written with the safe API) under the sim's hostile guest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmbus_kmcl_fuzz::echo::run(data));
