// A key-by closure must take the upstream's record type.
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Line { text: String }
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Word { word: String }

#[derive(Clone)]
struct Lines;
impl Spout for Lines {
    type Out = Line;
    fn next(&mut self, _out: &mut SpoutEmitter<Line>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

#[derive(Clone)]
struct Echo;
impl Bolt for Echo {
    type In = Line;
    type Out = Line;
    fn execute(&mut self, _t: Tuple<Line>, _out: &mut Emitter<Line>) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {
    let mut t = TopologyBuilder::new("t");
    let lines = t.add(spout("lines", Lines));
    t.add(bolt("echo", Echo).key_by(&lines, |w: &Word| w.word.clone()));
}
