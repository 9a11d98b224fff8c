//! Wiring mistakes the DSL promises to reject at compile time.

#[test]
fn wiring_mismatches_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
