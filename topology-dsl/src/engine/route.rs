//! A typed subscription on the sending side: its router, its key extraction and one open batch
//! per target task.

use std::any::Any;
use std::sync::Arc;

use crate::engine::{LinkId, Payload, TypedBatch};
use crate::ids::Origin;
use crate::key_hasher::KeyHasher;
use crate::record::Record;
use crate::routing::Router;
use crate::tuple::TupleIds;

/// A `key_by` closure, type-erased to a hash.
pub(crate) struct KeyFn<T>(pub(crate) Arc<dyn Fn(&T) -> u64 + Send + Sync>);

impl<T> Clone for KeyFn<T> {
    fn clone(&self) -> Self {
        KeyFn(Arc::clone(&self.0))
    }
}

/// The stored form of a `KeyFn<T>` for some `T`, kept with the subscribing bolt's inputs and
/// recovered by the sender, which knows `T`.
pub(crate) type AnyKeyFn = Arc<dyn Any + Send + Sync>;

/// How a route computes a tuple's key hash.
pub(crate) enum KeyExtract<T> {
    /// The grouping needs no key.
    None,
    /// The seedless hash of these fields, in order.
    Fields(Box<[usize]>),
    /// The hash of a `key_by` closure's result.
    Func(KeyFn<T>),
}

impl<T: Record> KeyExtract<T> {
    #[inline(always)] // On every routed tuple: W2 lost 2% when it was left out of line.
    pub(crate) fn hash(&self, value: &T) -> u64 {
        match self {
            KeyExtract::None => 0,
            KeyExtract::Fields(fields) => {
                let mut h = KeyHasher::new();
                for &f in fields.iter() {
                    value.hash_field(f, &mut h);
                }
                h.finish()
            }
            KeyExtract::Func(f) => (f.0)(value),
        }
    }

    /// Whether distinct keys always hash apart: no key, or one field that hashes as one word
    /// (an integer, a bool, a char, a float, a timestamp), which the hash maps one to one.
    pub(crate) fn is_injective(&self) -> bool {
        match self {
            KeyExtract::None => true,
            KeyExtract::Fields(fields) => match **fields {
                [f] => T::FIELDS.get(f).is_some_and(|field| field.ty.is_word()),
                _ => false,
            },
            KeyExtract::Func(_) => false,
        }
    }

    /// Writes the key's fields into `hasher` (a recording one keeps them exactly): the hash
    /// is then [`KeyExtract::hash`]'s. A `key_by` key is written as its hash (windows key by
    /// fields only).
    pub(crate) fn write(&self, value: &T, hasher: &mut KeyHasher) {
        match self {
            KeyExtract::None => {}
            KeyExtract::Fields(fields) => {
                for &f in fields.iter() {
                    value.hash_field(f, hasher);
                }
            }
            KeyExtract::Func(f) => hasher.write_u64((f.0)(value)),
        }
    }
}

/// One subscription of one stream, as seen by one sending task.
pub(crate) struct Route<T> {
    pub(crate) router: Router,
    pub(crate) key: KeyExtract<T>,
    first_link: u32,
    buckets: Vec<TypedBatch<T>>,
    /// Per bucket, the capacity to give its next batch: what the last one reached, so a
    /// trickle does not allocate full batches and a flood does not regrow them.
    capacity: Vec<usize>,
    tracked: bool,
    /// Whether records carry deterministic tuple ids (exactly-once).
    exact: bool,
}

/// The smallest capacity a batch starts with.
const MIN_CAPACITY: usize = 16;

impl<T> Route<T> {
    pub(crate) fn new(
        router: Router,
        key: KeyExtract<T>,
        first_link: LinkId,
        tasks: u32,
        tracked: bool,
        exact: bool,
    ) -> Self {
        Route {
            router,
            key,
            first_link: first_link.0,
            buckets: (0..tasks).map(|_| TypedBatch::default()).collect(),
            capacity: vec![MIN_CAPACITY; tasks as usize],
            tracked,
            exact,
        }
    }

    /// Appends a record for `target`; a batch that reaches `batch_size` goes to `ready`.
    #[inline]
    pub(crate) fn push(
        &mut self,
        target: u32,
        value: T,
        ids: TupleIds,
        origin: Origin,
        batch_size: usize,
        ready: &mut Vec<(LinkId, Payload)>,
    ) where
        T: Send + 'static,
    {
        let t = target as usize;
        let bucket = &mut self.buckets[t];
        if bucket.values.capacity() == 0 {
            let capacity = self.capacity[t].min(batch_size);
            bucket.values.reserve_exact(capacity);
            if self.tracked {
                bucket.ids.reserve_exact(capacity);
            }
            if self.exact {
                bucket.origins.reserve_exact(capacity);
            }
        }
        bucket.values.push(value);
        if self.tracked {
            bucket.ids.push(ids);
        }
        if self.exact {
            bucket.origins.push(origin);
        }
        if bucket.values.len() >= batch_size {
            self.capacity[t] = batch_size;
            let full = std::mem::take(bucket);
            ready.push((LinkId(self.first_link + target), Payload::local(full)));
        }
    }

    /// Moves every non-empty batch to `ready`.
    pub(crate) fn flush(&mut self, ready: &mut Vec<(LinkId, Payload)>)
    where
        T: Send + 'static,
    {
        for (target, bucket) in self.buckets.iter_mut().enumerate() {
            if !bucket.values.is_empty() {
                self.capacity[target] = bucket.values.len().max(MIN_CAPACITY);
                let partial = std::mem::take(bucket);
                ready.push((
                    LinkId(self.first_link + target as u32),
                    Payload::local(partial),
                ));
            }
        }
    }
}
