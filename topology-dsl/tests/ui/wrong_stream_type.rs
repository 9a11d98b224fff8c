// A bolt that takes `Word` cannot subscribe to a stream of `Line`.
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
struct Count;
impl Bolt for Count {
    type In = Word;
    type Out = Word;
    fn execute(&mut self, _t: Tuple<Word>, _out: &mut Emitter<Word>) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() {
    let mut t = TopologyBuilder::new("t");
    let lines = t.add(spout("lines", Lines));
    t.add(bolt("count", Count).shuffle(&lines));
}
