//! Batches: how tuples cross from one task to another.

use std::any::{Any, type_name};

use crate::engine::EngineError;
use crate::tuple::TupleIds;

/// A batch of records of one type, with their ack-tree ids when the topology tracks tuples
/// (`ids` is then parallel to `values`; otherwise it is empty).
#[derive(Debug)]
pub struct TypedBatch<T> {
    /// The records, in emit order.
    pub values: Vec<T>,
    /// The ack-tree ids of each record, or empty when untracked.
    pub ids: Vec<TupleIds>,
}

impl<T> Default for TypedBatch<T> {
    fn default() -> Self {
        TypedBatch {
            values: Vec::new(),
            ids: Vec::new(),
        }
    }
}

impl<T> TypedBatch<T> {
    /// The number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A batch in flight, its record type erased so that the runtime can move it without knowing
/// it. Inside one process it is the typed batch itself, never serialized.
pub struct Payload {
    len: usize,
    type_name: &'static str,
    batch: Box<dyn Any + Send>,
    /// The sender's watermark right after this batch, when it has one (a mark that rides on
    /// the batch instead of following it as a message of its own).
    mark: Option<crate::window::Mark>,
}

impl Payload {
    /// Wraps a typed batch.
    pub fn local<T: Send + 'static>(batch: TypedBatch<T>) -> Payload {
        Payload {
            len: batch.len(),
            type_name: type_name::<T>(),
            batch: Box::new(batch),
            mark: None,
        }
    }

    /// The watermark that follows this batch on its link, if any.
    pub fn mark(&self) -> Option<crate::window::Mark> {
        self.mark
    }

    /// Sets the watermark that follows this batch on its link.
    pub fn set_mark(&mut self, mark: crate::window::Mark) {
        self.mark = Some(mark);
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Unwraps the typed batch, or says which type it really holds.
    pub fn downcast<T: Send + 'static>(self) -> Result<TypedBatch<T>, EngineError> {
        let found = self.type_name;
        self.batch
            .downcast::<TypedBatch<T>>()
            .map(|b| *b)
            .map_err(|_| EngineError::PayloadType {
                expected: type_name::<T>(),
                found,
            })
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.len)
            .field("type", &self.type_name)
            .finish()
    }
}
