//! Build script of vmbus-kmcl-sys.
//!
//! * Always: puts the bindings at `$OUT_DIR/bindings.rs`, where `src/lib.rs` includes them. By
//!   default that is a copy of the checked-in `src/bindings.rs`; with the `bindgen` feature they
//!   are generated from `wrapper.h`, and the header's static-inline functions are compiled with
//!   `cc` (their declarations go to `$OUT_DIR/inline_fns.rs`).
//! * WDK mode (`bindgen` feature plus `VMBUS_KMCL_WDK_INCLUDE_DIR`, the WDK's own environment,
//!   or on a Windows host the `wdk-build` feature): the WDK's directories come first on the
//!   include path, so `wrapper.h` picks up Microsoft's header; `cc` instantiates the interface
//!   GUIDs from it and reports the layout of its interface tables (`build/wdk_layout.c`), which
//!   `tests/wdk_mode.rs` compares with the Rust structures. The build sets
//!   `cfg(vmbus_kmcl_wdk_mode)`. See `build/generate.rs`.
//! * Linking: the import library override for the root-side driver.

use std::env;
use std::path::{Path, PathBuf};

#[cfg(feature = "bindgen")]
#[path = "build/generate.rs"]
mod generate;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    println!("cargo::rustc-check-cfg=cfg(vmbus_kmcl_root_lib_override)");
    println!("cargo::rustc-check-cfg=cfg(vmbus_kmcl_wdk_mode)");
    link_root_library_override();

    let bindings = out_dir.join("bindings.rs");
    #[cfg(feature = "bindgen")]
    generate::run(&manifest_dir, &out_dir, &bindings);
    #[cfg(not(feature = "bindgen"))]
    copy_checked_in(&manifest_dir, &bindings);
}

/// Default build: the checked-in bindings, copied to where `lib.rs` includes them from.
#[cfg(not(feature = "bindgen"))]
fn copy_checked_in(manifest_dir: &Path, bindings: &Path) {
    let checked_in = manifest_dir.join("src").join("bindings.rs");
    println!("cargo::rerun-if-changed={}", checked_in.display());
    std::fs::copy(&checked_in, bindings)
        .unwrap_or_else(|e| panic!("copying {} failed: {e}", checked_in.display()));
}

/// The root-side import library is not documented, so its name can be overridden: with
/// `VMBUS_KMCL_ROOT_LIB=<name>` (and optionally `VMBUS_KMCL_LIB_DIR`) the `vmbkmclr` feature links
/// that import library instead of the built-in `raw-dylib` import of `vmbkmclr.sys`.
fn link_root_library_override() {
    println!("cargo::rerun-if-env-changed=VMBUS_KMCL_ROOT_LIB");
    println!("cargo::rerun-if-env-changed=VMBUS_KMCL_LIB_DIR");
    if env::var_os("CARGO_FEATURE_VMBKMCLR").is_none() {
        return;
    }
    if let Some(lib) = env::var_os("VMBUS_KMCL_ROOT_LIB") {
        let lib = lib.to_str().expect("VMBUS_KMCL_ROOT_LIB must be UTF-8");
        println!("cargo::rustc-cfg=vmbus_kmcl_root_lib_override");
        println!("cargo::rustc-link-lib=dylib={lib}");
        if let Some(dir) = env::var_os("VMBUS_KMCL_LIB_DIR") {
            println!(
                "cargo::rustc-link-search=native={}",
                Path::new(&dir).display()
            );
        }
    }
}
