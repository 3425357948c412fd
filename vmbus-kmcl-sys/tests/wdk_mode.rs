//! WDK mode, proven against the stand-in header in `tests/wdk-standin/` (CI has no WDK):
//!
//! ```sh
//! VMBUS_KMCL_WDK_INCLUDE_DIR=$PWD/vmbus-kmcl-sys/tests/wdk-standin CARGO_TARGET_DIR=target/wdk \
//!     cargo test -p vmbus-kmcl-sys --features bindgen --test wdk_mode
//! ```
//!
//! * the bindings come from the header in that directory, not from the bundled one (the
//!   stand-in's marker constant exists);
//! * `cc` instantiated the interface GUIDs from that header (the stand-in's test values);
//! * the interface tables, which bindgen takes from the bundled header, have exactly the layout
//!   the C compiler gives the header's own tables, whose embedded structures are unnamed
//!   members (`build/wdk_layout.c` reports `sizeof`/`offsetof`).
//!
//! With a real WDK, the layout test runs the same way; the marker and GUID tests are specific to
//! the stand-in and are skipped unless `VMBUS_KMCL_WDK_INCLUDE_DIR` names it.
#![cfg(vmbus_kmcl_wdk_mode)]

use core::ffi::{c_char, CStr};
use core::mem::{offset_of, size_of};

use vmbus_kmcl_sys::{
    GUID, KMCL_CLIENT_INTERFACE_V1, KMCL_SERVER_INTERFACE_V1, KMCL_SERVER_ONLY_METHODS,
};

/// Whether this build read the stand-in (rather than a real WDK).
fn built_from_standin() -> bool {
    option_env!("VMBUS_KMCL_WDK_INCLUDE_DIR")
        .is_some_and(|dir| dir.trim_end_matches('/').ends_with("tests/wdk-standin"))
}

#[test]
fn bindings_come_from_the_standin_header() {
    if !built_from_standin() {
        return;
    }
    // Only the stand-in declares this constant; it would not compile against the bundled header.
    assert_eq!(vmbus_kmcl_sys::VMBUS_KMCL_WDK_STANDIN_MARKER, 0x57D1);
}

/// The stand-in's made-up client interface GUID (see its header: test values, not the real one).
const STANDIN_CLIENT_GUID: GUID = GUID {
    Data1: 0x7e57_7e57,
    Data2: 0x0001,
    Data3: 0x57d1,
    Data4: *b"STANDIN\x01",
};

/// The stand-in's made-up server interface GUID.
const STANDIN_SERVER_GUID: GUID = GUID {
    Data1: 0x7e57_7e57,
    Data2: 0x0002,
    Data3: 0x57d1,
    Data4: *b"STANDIN\x02",
};

/// The four fields of a GUID, for comparisons and messages.
fn parts(guid: &GUID) -> (u32, u16, u16, [u8; 8]) {
    (guid.Data1, guid.Data2, guid.Data3, guid.Data4)
}

#[test]
fn cc_defines_the_interface_guids_from_the_header() {
    // SAFETY: in WDK mode `build/wdk_guids.c`, compiled by cc and linked into the crate, defines
    // the symbol as an initialised `GUID` that nothing writes (`const` in C), so the reference
    // is to a valid, unchanging value.
    let client = unsafe { &*core::ptr::addr_of!(vmbus_kmcl_sys::KMCL_CLIENT_INTERFACE_TYPE) };
    // SAFETY: as above, for the server interface GUID.
    let server = unsafe { &*core::ptr::addr_of!(vmbus_kmcl_sys::KMCL_SERVER_INTERFACE_TYPE) };
    assert_ne!(parts(client), parts(server));
    if built_from_standin() {
        assert_eq!(parts(client), parts(&STANDIN_CLIENT_GUID));
        assert_eq!(parts(server), parts(&STANDIN_SERVER_GUID));
    }
}

/// One entry of the C layout report; the twin of `struct vmbus_kmcl_layout_entry` in
/// `build/wdk_layout.c`.
#[repr(C)]
struct LayoutEntry {
    table: *const c_char,
    rust_path: *const c_char,
    offset: usize,
    size: usize,
}

extern "C" {
    /// Defined by `build/wdk_layout.c`: the entries of the report and their number.
    fn vmbus_kmcl_wdk_layout(count: *mut usize) -> *const LayoutEntry;
}

/// A layout, from C or from Rust: table, Rust field path ("" for the whole table), offset, size.
type Layout = (String, String, usize, usize);

/// The layout of the header's tables, as the C compiler reports it.
fn c_layout() -> Vec<Layout> {
    let mut count = 0;
    // SAFETY: `vmbus_kmcl_wdk_layout` only writes the entry count to the valid `count`.
    let entries = unsafe { vmbus_kmcl_wdk_layout(&mut count) };
    assert!(!entries.is_null() && count > 0);
    // SAFETY: the C function returns its static array of `count` initialised entries, laid out
    // as `LayoutEntry`, alive and unchanged for the whole program.
    let entries = unsafe { core::slice::from_raw_parts(entries, count) };
    entries
        .iter()
        .map(|e| {
            // SAFETY: the table name is a string literal of the C file: non-null,
            // NUL-terminated, static.
            let table = unsafe { CStr::from_ptr(e.table) };
            // SAFETY: the same holds for the field path.
            let path = unsafe { CStr::from_ptr(e.rust_path) };
            let table = table.to_str().expect("ASCII table name").to_owned();
            let path = path.to_str().expect("ASCII field path").to_owned();
            (table, path, e.offset, e.size)
        })
        .collect()
}

/// The size of the field that `field` selects.
fn size_of_field<T, F>(_field: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Entry of the Rust side for a whole table.
macro_rules! layout_table {
    ($table:ident) => {
        (
            stringify!($table).to_owned(),
            String::new(),
            0,
            size_of::<$table>(),
        )
    };
}

/// Entry of the Rust side for one field, named by its path.
macro_rules! layout_field {
    ($table:ident, $($field:ident).+) => {
        (
            stringify!($table).to_owned(),
            [$(stringify!($field)),+].join("."),
            offset_of!($table, $($field).+),
            size_of_field(|t: &$table| &t.$($field).+),
        )
    };
}

/// The layout of the Rust tables, for the same fields as [`c_layout`] (one list, written by the
/// build script).
fn rust_layout() -> Vec<Layout> {
    include!(concat!(env!("OUT_DIR"), "/wdk_layout_fields.rs")).into()
}

#[test]
fn interface_tables_match_the_header_layout() {
    let (c, rust) = (c_layout(), rust_layout());
    assert_eq!(c.len(), rust.len(), "the two reports list different fields");
    for (c, rust) in c.iter().zip(&rust) {
        assert_eq!(c, rust, "layout differs: WDK header (left), Rust (right)");
    }
    // The sizes the crate documents for 64-bit targets, and that the list is not trivially
    // short: the 41 client and 14 server-only function pointers, plus the 5 header fields.
    let tables: Vec<_> = c.iter().filter(|e| e.1.is_empty()).collect();
    assert_eq!(
        tables
            .iter()
            .map(|e| (e.0.as_str(), e.3))
            .collect::<Vec<_>>(),
        [
            ("KMCL_CLIENT_INTERFACE_V1", 360),
            ("KMCL_SERVER_ONLY_METHODS", 112),
            ("KMCL_SERVER_INTERFACE_V1", 472),
        ]
    );
    assert_eq!(c.len(), 3 + (5 + 41) + 14 + (5 + 41 + 14));
}

#[test]
fn rust_tables_have_the_documented_sizes() {
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V1>(), 360);
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS>(), 112);
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V1>(), 472);
}
