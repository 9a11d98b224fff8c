// A bolt can only emit its declared output type.
use serde::{Deserialize, Serialize};
use tempest_dsl::*;

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Line { text: String }
#[derive(Clone, Debug, Serialize, Deserialize, Record)]
struct Word { word: String }

#[derive(Clone)]
struct Split;
impl Bolt for Split {
    type In = Line;
    type Out = Word;
    fn execute(&mut self, t: Tuple<Line>, out: &mut Emitter<Word>) -> Result<(), TaskError> {
        out.emit(t.into_value());
        Ok(())
    }
}

fn main() {}
