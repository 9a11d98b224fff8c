// A tuple's place in an ack tree lives in one value: anchoring to a copy and acking the
// original would complete the tree while the copy's children are in flight. (`t.clone()`
// clones the record, through `Deref`.)
use tempest_dsl::{TaskId, Tuple};

fn main() {
    let t = Tuple::new_untracked(1u64, TaskId(0), 0);
    let _copy: Tuple<u64> = t.clone();
}
