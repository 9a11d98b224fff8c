//! Batches: how tuples cross from one task to another.

use std::any::{Any, type_name};
use std::marker::PhantomData;

use crate::engine::EngineError;
use crate::ids::{Origin, RootId};
use crate::record::Record;
use crate::tuple::TupleIds;

/// A batch of records of one type, with their ack-tree ids when the topology tracks tuples
/// (`ids` is then parallel to `values`; otherwise it is empty) and their deterministic ids
/// under exactly-once (`origins`, likewise).
#[derive(Debug)]
pub struct TypedBatch<T> {
    /// The records, in emit order.
    pub values: Vec<T>,
    /// The ack-tree ids of each record, or empty when untracked.
    pub ids: Vec<TupleIds>,
    /// The identity of each record under exactly-once (its deterministic id and source), or
    /// empty.
    pub origins: Vec<Origin>,
}

impl<T> Default for TypedBatch<T> {
    fn default() -> Self {
        TypedBatch {
            values: Vec::new(),
            ids: Vec::new(),
            origins: Vec::new(),
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

    /// Borrows the typed batch, or says which type it really holds.
    pub fn downcast_ref<T: Send + 'static>(&self) -> Result<&TypedBatch<T>, EngineError> {
        self.batch
            .downcast_ref::<TypedBatch<T>>()
            .ok_or(EngineError::PayloadType {
                expected: type_name::<T>(),
                found: self.type_name,
            })
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

/// Turns the batches of one subscription into bytes and back, for links between processes.
/// Written by code that knows the record type; the runtime only moves the bytes. A batch is
/// encoded once per link, with rmp-serde; the watermark riding on it travels beside it.
pub trait PayloadCodec: Send + Sync {
    /// Encodes a batch (its records and their ack-tree ids).
    fn encode(&self, payload: &Payload) -> Result<Vec<u8>, EngineError>;
    /// Decodes a batch; bad bytes are an error, never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<Payload, EngineError>;
    /// The ack trees a batch's records belong to, each once (none when untracked): what
    /// fails when the batch is lost.
    fn roots(&self, payload: &Payload) -> Result<Vec<RootId>, EngineError>;
}

/// The codec of batches of `T`.
pub(crate) struct TypedCodec<T>(PhantomData<fn() -> T>);

impl<T> TypedCodec<T> {
    pub(crate) fn new() -> Self {
        TypedCodec(PhantomData)
    }
}

impl<T: Record> PayloadCodec for TypedCodec<T> {
    fn encode(&self, payload: &Payload) -> Result<Vec<u8>, EngineError> {
        let batch = payload.downcast_ref::<T>()?;
        rmp_serde::to_vec(&(&batch.values, &batch.ids, &batch.origins)).map_err(|e| {
            EngineError::Codec {
                record: type_name::<T>(),
                action: "encode",
                why: e.to_string(),
            }
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<Payload, EngineError> {
        let codec_error = |why: String| EngineError::Codec {
            record: type_name::<T>(),
            action: "decode",
            why,
        };
        let (values, ids, origins): (Vec<T>, Vec<TupleIds>, Vec<Origin>) =
            rmp_serde::from_slice(bytes).map_err(|e| codec_error(e.to_string()))?;
        if !ids.is_empty() && ids.len() != values.len() {
            return Err(codec_error(format!(
                "{} records but {} ack-tree ids",
                values.len(),
                ids.len()
            )));
        }
        if !origins.is_empty() && origins.len() != values.len() {
            return Err(codec_error(format!(
                "{} records but {} tuple ids",
                values.len(),
                origins.len()
            )));
        }
        Ok(Payload::local(TypedBatch {
            values,
            ids,
            origins,
        }))
    }

    fn roots(&self, payload: &Payload) -> Result<Vec<RootId>, EngineError> {
        let batch = payload.downcast_ref::<T>()?;
        let mut roots: Vec<RootId> = batch
            .ids
            .iter()
            .flat_map(|ids| ids.pairs().iter().map(|(root, _)| *root))
            .collect();
        roots.sort_unstable_by_key(|r| r.0);
        roots.dedup();
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EdgeId, RootId, Source, TaskId, TupleId};

    fn origin(id: u64, source: Option<(u32, u64, u64)>) -> Origin {
        Origin {
            id: TupleId(id),
            source: source.map(|(task, msg, floor)| Source {
                task: TaskId(task),
                msg,
                floor,
            }),
        }
    }

    #[test]
    fn a_batch_round_trips_and_bad_bytes_are_errors() {
        let codec = TypedCodec::<()>::new();
        let batch = TypedBatch {
            values: vec![(), (), ()],
            ids: vec![TupleIds::One((RootId(7), EdgeId(9))); 3],
            origins: vec![
                origin(5, None),
                origin(6, Some((2, 40, 31))),
                origin(7, None),
            ],
        };
        let bytes = codec.encode(&Payload::local(batch)).expect("encodes");
        let back = codec
            .decode(&bytes)
            .expect("decodes")
            .downcast::<()>()
            .expect("unit records");
        assert_eq!(back.values.len(), 3);
        assert_eq!(back.ids[2], TupleIds::One((RootId(7), EdgeId(9))));
        assert_eq!(
            back.origins,
            [
                origin(5, None),
                origin(6, Some((2, 40, 31))),
                origin(7, None)
            ]
        );

        let wrong = codec.encode(&Payload::local(TypedBatch::<String>::default()));
        assert!(matches!(wrong, Err(EngineError::PayloadType { .. })));
        assert!(codec.decode(&[0xc1, 0x00]).is_err());
        let uneven = rmp_serde::to_vec(&(
            vec![(), ()],
            vec![TupleIds::Untracked],
            Vec::<Origin>::new(),
        ))
        .expect("encodes");
        let err = codec.decode(&uneven).expect_err("uneven ids");
        assert!(err.to_string().contains("2 records but 1"), "{err}");
        let uneven =
            rmp_serde::to_vec(&(vec![()], Vec::<TupleIds>::new(), vec![origin(1, None); 2]))
                .expect("encodes");
        let err = codec.decode(&uneven).expect_err("uneven tuple ids");
        assert!(
            err.to_string().contains("1 records but 2 tuple ids"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_names_each_of_its_trees_once() {
        let codec = TypedCodec::<()>::new();
        let batch = TypedBatch {
            values: vec![(), (), ()],
            ids: vec![
                TupleIds::One((RootId(7), EdgeId(1))),
                TupleIds::Many(Box::new([(RootId(3), EdgeId(2)), (RootId(7), EdgeId(3))])),
                TupleIds::Untracked,
            ],
            origins: Vec::new(),
        };
        let roots = codec.roots(&Payload::local(batch)).expect("unit records");
        assert_eq!(roots, [RootId(3), RootId(7)]);
        let untracked = codec.roots(&Payload::local(TypedBatch::<()>::default()));
        assert_eq!(untracked.expect("unit records"), []);
        let wrong = codec.roots(&Payload::local(TypedBatch::<String>::default()));
        assert!(matches!(wrong, Err(EngineError::PayloadType { .. })));
    }
}
