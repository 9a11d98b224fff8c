//! [`RuntimeError`]: why a run could not start or did not finish.

use tempest_dsl::TaskId;
use tempest_dsl::engine::EngineError;

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Invalid runtime options.
    #[error("invalid option `{field}` = {value}: must be {expected}")]
    Options {
        /// The option.
        field: &'static str,
        /// The value given.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The topology is too large for a local run.
    #[error(
        "the topology needs {links} links between tasks (every task links to every task of the \
         components it feeds); a local run sets up at most {max}: lower the parallelism"
    )]
    TooLarge {
        /// The links the plan needs.
        links: usize,
        /// The limit.
        max: usize,
    },
    /// A task could not be created from the topology (a bug: the plan and the topology disagree).
    #[error("could not set up task {task} of `{component}`: {source}")]
    Setup {
        /// The component.
        component: String,
        /// The task.
        task: TaskId,
        /// What went wrong.
        source: EngineError,
    },
    /// A task failed fatally (a panic, a failed `open` or `prepare`): the run was stopped.
    #[error("task {task} of `{component}` failed: {error}")]
    TaskFailed {
        /// The component.
        component: String,
        /// The task.
        task: TaskId,
        /// What happened.
        error: String,
    },
    /// The checkpoint store could not be opened or read (a run restores from it before it
    /// starts).
    #[error("checkpoints: {0}")]
    Checkpoint(#[from] crate::checkpoint::StoreError),
    /// The runtime's thread could not be started.
    #[error("could not start the runtime thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The runtime stopped without a result (its thread panicked).
    #[error("the runtime stopped unexpectedly: {0}")]
    Crashed(String),
}
