//! [`AckFolder`]: folds a batch's ack operations per root and splits them by acker.

use rustc_hash::FxHashMap;
use tempest_dsl::engine::AckOp;
use tempest_dsl::routing::reduce;
use tempest_dsl::{RootId, TaskId};

/// The acker task (index among the ackers) that owns `root`.
#[inline]
pub fn acker_for(root: RootId, ackers: u32) -> u32 {
    reduce(root.0, ackers)
}

/// One operation for an acker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AckMsg {
    /// The tree.
    pub root: RootId,
    /// What happened.
    pub kind: AckKind,
}

impl AckMsg {
    /// The message for operation `op` recorded by task `me`, before any folding.
    pub fn from_op(me: TaskId, op: AckOp) -> AckMsg {
        let (root, kind) = match op {
            AckOp::Init { root, xor, .. } => (root, AckKind::Init { xor, spout: me }),
            AckOp::Ack { root, xor } => (root, AckKind::Ack { xor }),
            AckOp::Fail { root } => (root, AckKind::Fail),
            AckOp::Reset { root } => (root, AckKind::Reset),
            AckOp::Park { root } => (root, AckKind::Park),
        };
        AckMsg { root, kind }
    }
}

/// What an [`AckMsg`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AckKind {
    /// Spout task `spout` started the tree with first edges `xor`.
    Init {
        /// XOR of the first edges.
        xor: u64,
        /// The spout task.
        spout: TaskId,
    },
    /// Edges acked, XOR-ed with the edges created.
    Ack {
        /// The folded XOR.
        xor: u64,
    },
    /// The tree failed.
    Fail,
    /// Restart the tree's timeout.
    Reset,
    /// A window took a tuple of the tree.
    Park,
}

/// Folds the ack operations of one batch: all acks of one root become one XOR, a failure
/// absorbs the acks of its root (the tree fails anyway), and each acker gets one list.
#[derive(Debug)]
pub struct AckFolder {
    per_acker: Vec<Vec<AckMsg>>,
    /// Where the folded ack or fail of a root sits: (acker, position).
    index: FxHashMap<RootId, (u32, u32)>,
}

impl AckFolder {
    /// A folder for `ackers` ackers (at least one).
    pub fn new(ackers: u32) -> Self {
        AckFolder {
            per_acker: vec![Vec::new(); ackers.max(1) as usize],
            index: FxHashMap::default(),
        }
    }

    /// Adds one operation recorded by task `me`.
    pub fn add(&mut self, me: TaskId, op: AckOp) {
        let msg = AckMsg::from_op(me, op);
        match msg.kind {
            AckKind::Init { .. } | AckKind::Reset | AckKind::Park => {
                let a = acker_for(msg.root, self.per_acker.len() as u32) as usize;
                self.per_acker[a].push(msg);
            }
            AckKind::Ack { .. } | AckKind::Fail => self.fold(msg.root, msg.kind),
        }
    }

    fn fold(&mut self, root: RootId, kind: AckKind) {
        match self.index.get(&root) {
            Some(&(a, pos)) => {
                let slot = &mut self.per_acker[a as usize][pos as usize].kind;
                *slot = match (*slot, kind) {
                    (AckKind::Ack { xor: a }, AckKind::Ack { xor: b }) => {
                        AckKind::Ack { xor: a ^ b }
                    }
                    _ => AckKind::Fail,
                };
            }
            None => {
                let a = acker_for(root, self.per_acker.len() as u32);
                let list = &mut self.per_acker[a as usize];
                self.index.insert(root, (a, list.len() as u32));
                list.push(AckMsg { root, kind });
            }
        }
    }

    /// Whether nothing was added since the last drain.
    pub fn is_empty(&self) -> bool {
        self.per_acker.iter().all(Vec::is_empty)
    }

    /// Hands each acker its list (skipping empty ones and acks that folded to zero, which
    /// change nothing), and starts over.
    pub fn drain(&mut self, mut send: impl FnMut(u32, Vec<AckMsg>)) {
        self.index.clear();
        for (a, list) in self.per_acker.iter_mut().enumerate() {
            list.retain(|m| m.kind != AckKind::Ack { xor: 0 });
            if !list.is_empty() {
                send(a as u32, std::mem::take(list));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: TaskId = TaskId(3);

    fn drained(f: &mut AckFolder) -> Vec<(u32, Vec<AckMsg>)> {
        let mut out = Vec::new();
        f.drain(|a, list| out.push((a, list)));
        out
    }

    #[test]
    fn acks_of_one_root_fold_into_one_xor() {
        let mut f = AckFolder::new(1);
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 0b0011,
            },
        );
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(2),
                xor: 0b1000,
            },
        );
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 0b0110,
            },
        );
        assert_eq!(
            drained(&mut f),
            [(
                0,
                vec![
                    AckMsg {
                        root: RootId(1),
                        kind: AckKind::Ack { xor: 0b0101 }
                    },
                    AckMsg {
                        root: RootId(2),
                        kind: AckKind::Ack { xor: 0b1000 }
                    },
                ]
            )]
        );
        assert!(f.is_empty());
        assert!(drained(&mut f).is_empty());
    }

    #[test]
    fn a_fail_absorbs_the_acks_of_its_root() {
        let mut f = AckFolder::new(1);
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 1,
            },
        );
        f.add(ME, AckOp::Fail { root: RootId(1) });
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 2,
            },
        );
        assert_eq!(
            drained(&mut f),
            [(
                0,
                vec![AckMsg {
                    root: RootId(1),
                    kind: AckKind::Fail
                }]
            )]
        );
    }

    #[test]
    fn acks_that_cancel_out_are_not_sent() {
        let mut f = AckFolder::new(1);
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 7,
            },
        );
        f.add(
            ME,
            AckOp::Ack {
                root: RootId(1),
                xor: 7,
            },
        );
        assert!(drained(&mut f).is_empty());
    }

    #[test]
    fn each_root_goes_to_its_acker() {
        let mut f = AckFolder::new(4);
        let roots: Vec<RootId> = (0..64u64)
            .map(|i| RootId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        for &root in &roots {
            f.add(
                ME,
                AckOp::Init {
                    root,
                    xor: 1,
                    msg: tempest_dsl::MsgId(0),
                },
            );
        }
        let mut seen = 0;
        for (a, list) in drained(&mut f) {
            for m in list {
                assert_eq!(acker_for(m.root, 4), a);
                assert_eq!(m.kind, AckKind::Init { xor: 1, spout: ME });
                seen += 1;
            }
        }
        assert_eq!(seen, 64);
    }
}
