//! Tempest's chaos tests: real `node` processes on loopback, faults injected on a seeded
//! schedule (SIGKILL, SIGSTOP, partitions and slow links through a proxy on every link), and a
//! checker in the manner of Jepsen's total-queue checker that proves nothing acknowledged was
//! lost and the replicas agree.
//!
//! - [`topology`]: the checking topology the nodes run (registered as `chaos`).
//! - [`history`]: the files its tasks write: what was attempted, acked, delivered.
//! - [`checker`]: lost, unexpected, duplicated, recovered, replica agreement.
//! - [`proxy`]: the fault-injecting TCP proxy of one link.
//! - [`schedule`]: the scenarios and their seeded schedules.
//! - [`harness`]: runs a scenario end to end and checks it.
//!
//! `cargo run -p tempest-chaos -- run --scenario leader-kill --seed 7` runs one scenario;
//! `--scenario all`, every one; `--list` names them.

pub mod checker;
pub mod harness;
pub mod history;
pub mod proxy;
pub mod schedule;
pub mod topology;
