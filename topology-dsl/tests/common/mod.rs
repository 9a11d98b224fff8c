//! Small components shared by the DSL's integration tests.
#![allow(dead_code, unreachable_pub)]

use serde::{Deserialize, Serialize};
use tempest_dsl::*;

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Line {
    pub text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Record)]
pub struct Word {
    pub word: String,
    pub ts: i64,
    #[record(opaque)]
    pub extra: Extra,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Extra(pub Vec<u8>);

#[derive(Clone)]
pub struct Lines;

impl Spout for Lines {
    type Out = Line;
    fn next(&mut self, _out: &mut SpoutEmitter<Line>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

/// Emits nothing: a source of `Word`s, which carry a timestamp.
#[derive(Clone)]
pub struct Words;

impl Spout for Words {
    type Out = Word;
    fn next(&mut self, _out: &mut SpoutEmitter<Word>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

#[derive(Clone)]
pub struct Replayable;

impl Spout for Replayable {
    type Out = Line;
    const REPLAYABLE: bool = true;
    fn next(&mut self, _out: &mut SpoutEmitter<Line>) -> Result<SpoutStatus, TaskError> {
        Ok(SpoutStatus::Done)
    }
}

#[derive(Clone)]
pub struct Split;

impl Bolt for Split {
    type In = Line;
    type Out = Word;
    fn execute(&mut self, _t: Tuple<Line>, _out: &mut Emitter<Word>) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Clone)]
pub struct WordSink;

impl Bolt for WordSink {
    type In = Word;
    type Out = Word;
    fn execute(&mut self, _t: Tuple<Word>, _out: &mut Emitter<Word>) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Clone)]
pub struct LineEcho;

impl Bolt for LineEcho {
    type In = Line;
    type Out = Line;
    // It changes nothing, however often it runs.
    const IDEMPOTENT: bool = true;
    fn execute(&mut self, _t: Tuple<Line>, _out: &mut Emitter<Line>) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Counts a window's words.
#[derive(Clone)]
pub struct WindowCount;

impl WindowedBolt for WindowCount {
    type In = Word;
    type Out = Word;
    fn on_window(
        &mut self,
        _w: &WindowView<'_, Word>,
        _out: &mut Emitter<Word>,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Counts a window's words incrementally.
#[derive(Clone)]
pub struct WordTally;

impl WindowAggregate for WordTally {
    type In = Word;
    type Acc = u64;
    type Out = Word;
    fn add(&mut self, acc: &mut u64, _w: &Word) {
        *acc += 1;
    }
    fn merge(&mut self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn emit(
        &mut self,
        _acc: &u64,
        _w: &WindowInfo,
        _out: &mut Emitter<Word>,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}
