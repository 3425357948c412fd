//! The checked-in `src/bindings.rs` must be exactly what bindgen makes of `wrapper.h` today.
//!
//! Regenerate with:
//! `VMBUS_KMCL_BLESS=1 cargo test -p vmbus-kmcl-sys --features bindgen --test freshness`
#![cfg(all(feature = "bindgen", not(vmbus_kmcl_wdk_mode)))]

#[test]
fn checked_in_bindings_match_a_fresh_generation() {
    let fresh = include_str!(concat!(env!("OUT_DIR"), "/bindings.rs"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bindings.rs");
    if std::env::var_os("VMBUS_KMCL_BLESS").is_some() {
        std::fs::write(path, fresh).expect("writing src/bindings.rs");
        return;
    }
    let checked_in = std::fs::read_to_string(path).expect("reading src/bindings.rs");
    assert!(
        fresh == checked_in,
        "src/bindings.rs is stale; regenerate it with \
         `VMBUS_KMCL_BLESS=1 cargo test -p vmbus-kmcl-sys --features bindgen --test freshness`"
    );
}
