//! Helpers shared by the tests that run the `tempest` binary.
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// The `tempest` binary built for these tests, logging errors only.
pub fn tempest_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tempest"));
    command.env("RUST_LOG", "error");
    command
}

/// Asserts that a command (described by `what`) was refused as bad input: exit code 2, `needle`
/// in its standard error, and no panic.
pub fn assert_refused(what: &dyn std::fmt::Debug, code: Option<i32>, stderr: &str, needle: &str) {
    assert_eq!(code, Some(2), "{what:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
