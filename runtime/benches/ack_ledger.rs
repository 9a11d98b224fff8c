//! The acker's pure cores under load: the ledger and the per-batch folder.
//!
//! `cargo bench -p tempest-runtime --bench ack_ledger`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tempest_dsl::engine::AckOp;
use tempest_dsl::{MsgId, RootId, TaskId};
use tempest_runtime::ack::{AckFolder, AckLedger, TreeOutcome};

/// Pseudo-random ids without a dependency: SplitMix64.
fn ids(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

fn ledger(c: &mut Criterion) {
    const TREES: usize = 10_000;
    let roots = ids(TREES, 1);
    let edges = ids(TREES * 3, 2);
    let mut group = c.benchmark_group("ack_ledger");
    // Each tree: init, then a chain of three acks (spout -> a -> b -> c), four operations.
    group.throughput(Throughput::Elements((TREES * 4) as u64));
    group.bench_function("chain_of_3", |b| {
        b.iter(|| {
            let mut ledger = AckLedger::new();
            let mut completed = 0usize;
            for (i, &r) in roots.iter().enumerate() {
                let root = RootId(r);
                let (e1, e2, e3) = (edges[3 * i], edges[3 * i + 1], edges[3 * i + 2]);
                ledger.init(root, e1, TaskId(0));
                ledger.ack(root, e1 ^ e2);
                ledger.ack(root, e2 ^ e3);
                if ledger.ack(root, e3) == Some((TaskId(0), TreeOutcome::Acked)) {
                    completed += 1;
                }
            }
            assert_eq!(completed, TREES);
            black_box(ledger.len())
        })
    });
    group.finish();
}

fn folder(c: &mut Criterion) {
    const OPS: usize = 1024;
    // A batch of word acks: ten consecutive acks per sentence, 1024 in all.
    let roots = ids(OPS / 10 + 1, 3);
    let xors = ids(OPS, 4);
    let ops: Vec<AckOp> = (0..OPS)
        .map(|i| AckOp::Ack {
            root: RootId(roots[i / 10]),
            xor: xors[i],
        })
        .collect();
    let mut group = c.benchmark_group("ack_folder");
    group.throughput(Throughput::Elements(OPS as u64));
    group.bench_function("fold_1024_into_2_ackers", |b| {
        let mut folder = AckFolder::new(2);
        b.iter(|| {
            for &op in &ops {
                folder.add(TaskId(1), op);
            }
            let mut sent = 0;
            folder.drain(|_, list| sent += list.len());
            assert!(sent <= roots.len());
            black_box(sent)
        })
    });
    group.bench_function("init_1024", |b| {
        let mut folder = AckFolder::new(2);
        b.iter(|| {
            for (i, &r) in xors.iter().enumerate() {
                folder.add(
                    TaskId(0),
                    AckOp::Init {
                        root: RootId(r),
                        xor: 1,
                        msg: MsgId(i as u64),
                    },
                );
            }
            let mut sent = 0;
            folder.drain(|_, list| sent += list.len());
            assert_eq!(sent, OPS);
            black_box(sent)
        })
    });
    group.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, ledger, folder);
}
criterion_main!(group::benches);
