//! The real echo VSP (drivers/echo-vsp) under the sim's hostile guest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmbus_kmcl_fuzz::echo_vsp::run(data);
});
