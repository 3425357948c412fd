//! Every misuse the types forbid fails to compile (expected diagnostics in `tests/ui/*.stderr`;
//! refresh them with `TRYBUILD=overwrite cargo test -p vmbus-kmcl --test compile_fail`).

#[test]
#[cfg_attr(miri, ignore = "runs the compiler")]
fn misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
