//! openraft's storage conformance suite, run against the log store and state machine, on disk.

use crate::replication::{EntryContext, LogStore, ReplicatedState, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

#[derive(Default)]
struct Count(u64);

impl ReplicatedState for Count {
    type Answer = u64;
    fn apply(&mut self, _command: &[u8], _at: EntryContext) -> u64 {
        self.0 += 1;
        self.0
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.0.to_be_bytes().to_vec())
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = bytes.try_into().map_err(|_| "not 8 bytes".to_owned())?;
        self.0 = u64::from_be_bytes(b);
        Ok(())
    }
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<Count>, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore<Count>), openraft::StorageError<u64>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path()).expect("opens");
        let sm = StateMachineStore::open(Count::default(), dir.path()).expect("opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_stores_pass_openraft_s_suite() -> Result<(), Box<openraft::StorageError<u64>>> {
    Suite::test_all(OnDisk).map_err(Box::new)
}
