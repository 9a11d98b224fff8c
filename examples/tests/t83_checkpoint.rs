//! Rollback recovery of a local run: `tempest local wordcount` with a stateful count and
//! checkpoints, SIGKILLed once two checkpoints completed, resumes from the newest one when
//! started again on the same directory and ends with every word counted.

#![allow(clippy::print_stderr)] // the figures go to the test's output

use std::path::Path;
use std::time::Duration;

use tempest_examples::checkpoint_bench::{Setup, kill_and_resume};
use tempest_runtime::LocalOptions;

const BIN: &str = env!("CARGO_BIN_EXE_tempest");

#[test]
fn a_killed_local_run_resumes_from_its_newest_checkpoint_and_loses_nothing() -> anyhow::Result<()> {
    let setup = Setup {
        sentences: 0,
        parallelism: 2,
        interval: Duration::from_millis(100),
        local: LocalOptions {
            workers: 2,
            ..LocalOptions::default()
        },
    };
    let sentences = 600_000;
    let k = kill_and_resume(Path::new(BIN), &setup, sentences)?;
    eprintln!("{k:?}");
    assert!(k.killed_after >= 2, "{k:?}");
    assert!(
        k.restored_from
            .is_some_and(|id| id >= 2 && id <= k.killed_after),
        "it resumed from a checkpoint it had: {k:?}"
    );
    assert_eq!(k.lost, 0, "{k:?}");
    assert!(
        k.resumed_sentences < sentences,
        "the spouts went on from their positions: {k:?}"
    );
    Ok(())
}
