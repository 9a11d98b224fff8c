// A record field of a type without `FieldKind` needs `#[record(opaque)]`.
use serde::{Deserialize, Serialize};
use tempest_dsl::Record;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Blob(Vec<u8>);

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Event { blob: Blob }

fn main() {}
