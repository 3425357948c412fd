//! The crate docs' table "KMCL function -> safe item" names every function `vmbus-kmcl-sys`
//! declares, once, and nothing else.

use std::collections::BTreeSet;

use vmbus_kmcl::dispatch::KmclFunction;

/// The crate root, whose `//!` docs hold the table.
const LIB: &str = include_str!("../src/lib.rs");
/// The checked-in declarations of `vmbus-kmcl-sys`.
const BINDINGS: &str = include_str!("../../vmbus-kmcl-sys/src/bindings.rs");

/// The function named in the first column of each table row, in order.
fn table_rows() -> Vec<(&'static str, &'static str)> {
    LIB.lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter(|rest| rest.starts_with("Vmb"))
        .map(|rest| {
            let (name, item) = rest.split_once('`').expect("a closing backtick");
            (name, item.trim_start_matches(" |").trim())
        })
        .collect()
}

/// Every `pub fn Vmb...` of the bindings.
fn sys_functions() -> BTreeSet<&'static str> {
    BINDINGS
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("pub fn "))
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| name.starts_with("Vmb"))
        .collect()
}

#[test]
fn the_table_names_every_sys_function_once_and_nothing_else() {
    let rows = table_rows();
    let sys = sys_functions();
    assert_eq!(
        sys.len(),
        55,
        "vmbus-kmcl-sys declares the 55 KMCL functions"
    );

    let mut seen = BTreeSet::new();
    for (name, _) in &rows {
        assert!(seen.insert(*name), "{name} has two rows");
    }
    let missing: Vec<_> = sys.difference(&seen).collect();
    let stale: Vec<_> = seen.difference(&sys).collect();
    assert!(missing.is_empty(), "functions without a row: {missing:?}");
    assert!(stale.is_empty(), "rows naming no -sys function: {stale:?}");
    assert_eq!(rows.len(), 55);
}

#[test]
fn every_row_names_an_item() {
    for (name, item) in table_rows() {
        assert!(item.contains("[`"), "{name}: no linked item in {item:?}");
        assert!(item.ends_with('|'), "{name}: row not closed");
    }
}

#[test]
fn the_dispatch_list_is_the_sys_list() {
    let dispatch: BTreeSet<&str> = KmclFunction::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(dispatch, sys_functions());
}
