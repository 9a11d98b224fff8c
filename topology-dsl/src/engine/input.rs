//! The receiving side of a subscription: turns a batch of the upstream's record type into a
//! batch of the bolt's input type (`In: From<X>`).

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::engine::batch::TypedCodec;
use crate::engine::{EngineError, Payload, PayloadCodec, TypedBatch};
use crate::record::Record;

/// Converts an erased batch of some upstream type into the bolt's input type.
pub(crate) trait InputAdapter<In>: Send + Sync {
    fn adapt(&self, payload: Payload) -> Result<TypedBatch<In>, EngineError>;
    /// The codec of the batches this subscription carries (of the upstream's type).
    fn codec(&self) -> Arc<dyn PayloadCodec>;
}

/// The adapter for a subscription to a stream of `X` by a bolt of input `In: From<X>`.
pub(crate) struct Convert<X, In>(PhantomData<fn(X) -> In>);

impl<X, In> Convert<X, In> {
    pub(crate) fn new() -> Self {
        Convert(PhantomData)
    }
}

impl<X: Record, In: Record + From<X>> InputAdapter<In> for Convert<X, In> {
    fn adapt(&self, payload: Payload) -> Result<TypedBatch<In>, EngineError> {
        if TypeId::of::<X>() == TypeId::of::<In>() {
            // The common case: the same type on both sides, nothing to convert.
            return payload.downcast::<In>();
        }
        let batch = payload.downcast::<X>()?;
        Ok(TypedBatch {
            values: batch.values.into_iter().map(In::from).collect(),
            ids: batch.ids,
            origins: batch.origins,
        })
    }

    fn codec(&self) -> Arc<dyn PayloadCodec> {
        Arc::new(TypedCodec::<X>::new())
    }
}

/// Turns a batch that arrived on subscription `input` into the bolt's input type, through the
/// subscription's adapter.
#[inline]
pub(crate) fn adapt<In>(
    inputs: &[Arc<dyn InputAdapter<In>>],
    input: u16,
    payload: Payload,
) -> Result<TypedBatch<In>, EngineError> {
    inputs
        .get(usize::from(input))
        .ok_or(EngineError::NoSuchInput(input))?
        .adapt(payload)
}
