//! Records: the typed values that flow on streams, and what `build()` knows of their fields.
//!
//! A record is a plain Rust struct that derives [`Record`](derive@crate::Record) (plus `Clone`,
//! `Serialize` and `Deserialize`). The derive lists the struct's fields with their
//! [`FieldType`]s so that `build()` can check a fields grouping or an event-time field by name, and
//! it gives the runtime a seedless hash of any field, so every process sends a key to the same task.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tempest_dsl::{FieldType, Record};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Record)]
//! struct Click { user: String, page: u32, ts: i64 }
//!
//! assert_eq!(Click::FIELDS[0].name, "user");
//! assert_eq!(Click::FIELDS[2].ty, FieldType::Int);
//! assert_eq!(Click::field_index("page"), Some(1));
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key_hasher::KeyHasher;

/// A value that travels on a stream.
///
/// Derive it with `#[derive(Record)]`; implementing it by hand is possible but the derive keeps
/// [`Record::FIELDS`] and the accessors in step with the struct.
pub trait Record: Clone + Send + Serialize + DeserializeOwned + 'static {
    /// The record's fields in declaration order, with their types.
    const FIELDS: &'static [Field];

    /// Feeds field `index` into `hasher`. Returns `false` if the index is out of range or the
    /// field cannot be hashed (an opaque field).
    fn hash_field(&self, index: usize, hasher: &mut KeyHasher) -> bool;

    /// The value of field `index` as milliseconds since the epoch, if it is a timestamp-like field
    /// (an integer or a [`Timestamp`]) that holds a value.
    fn timestamp_field(&self, index: usize) -> Option<i64>;

    /// The position of the field called `name`, if there is one.
    fn field_index(name: &str) -> Option<usize> {
        Self::FIELDS.iter().position(|f| f.name == name)
    }
}

/// The record of a sink: a bolt that ends a topology declares `type Out = ();`, so its output
/// stream carries nothing and `show` says so.
///
/// ```
/// use tempest_dsl::Record;
///
/// assert!(<() as Record>::FIELDS.is_empty());
/// ```
impl Record for () {
    const FIELDS: &'static [Field] = &[];

    fn hash_field(&self, _index: usize, _hasher: &mut KeyHasher) -> bool {
        false
    }

    fn timestamp_field(&self, _index: usize) -> Option<i64> {
        None
    }
}

/// One field of a [`Record`]: its name and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name as written in the struct.
    pub name: &'static str,
    /// What kind of value the field holds.
    pub ty: FieldType,
}

impl Field {
    /// A field called `name` of type `ty`.
    pub const fn new(name: &'static str, ty: FieldType) -> Self {
        Field { name, ty }
    }
}

/// What kind of value a field holds, as far as groupings and event time care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// `bool`.
    Bool,
    /// A signed integer (`i8` to `i64`, `isize`).
    Int,
    /// An unsigned integer (`u8` to `u64`, `usize`).
    UInt,
    /// `f32` or `f64`.
    Float,
    /// `char`.
    Char,
    /// A string (`String`, `&'static str`, `Box<str>`, `Arc<str>`, `CompactString`).
    Str,
    /// Raw bytes (`Vec<u8>`).
    Bytes,
    /// A [`Timestamp`]: milliseconds since the epoch.
    Timestamp,
    /// `Option<T>`.
    Option,
    /// A sequence (`Vec<T>`, arrays).
    List,
    /// A nested record.
    Record,
    /// `()`.
    Unit,
    /// A field marked `#[record(opaque)]`: carried, but neither hashed nor read by the runtime.
    Opaque,
}

impl FieldType {
    /// Whether a fields grouping may hash this field.
    pub const fn is_hashable(self) -> bool {
        !matches!(self, FieldType::Opaque)
    }

    /// Whether a value of this field hashes as one 64-bit word ([`KeyHasher::write_u64`]), so
    /// that distinct values hash apart.
    pub const fn is_word(self) -> bool {
        matches!(
            self,
            FieldType::Bool
                | FieldType::Int
                | FieldType::UInt
                | FieldType::Float
                | FieldType::Char
                | FieldType::Timestamp
                | FieldType::Unit
        )
    }

    /// Whether this field can carry event time (an integer of milliseconds or a [`Timestamp`]).
    pub const fn is_timestamp(self) -> bool {
        matches!(
            self,
            FieldType::Int | FieldType::UInt | FieldType::Timestamp
        )
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            FieldType::Bool => "a bool",
            FieldType::Int => "a signed integer",
            FieldType::UInt => "an unsigned integer",
            FieldType::Float => "a float",
            FieldType::Char => "a char",
            FieldType::Str => "a string",
            FieldType::Bytes => "bytes",
            FieldType::Timestamp => "a timestamp",
            FieldType::Option => "an option",
            FieldType::List => "a list",
            FieldType::Record => "a record",
            FieldType::Unit => "a unit",
            FieldType::Opaque => "an opaque value",
        };
        f.write_str(name)
    }
}

/// Milliseconds since the Unix epoch: the natural type of an event-time field.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A type that can be a field of a [`Record`]: it has a [`FieldType`] and a stable hash.
///
/// Implemented for the standard scalar, string and collection types. A field of any other type
/// needs `#[record(opaque)]` on it, or an implementation of this trait.
pub trait FieldKind {
    /// The field type `build()` sees. A type that declares one of the one-word types
    /// ([`FieldType::is_word`]) must hash as exactly one [`KeyHasher::write_u64`] of a value
    /// that tells its values apart: windows then key by that hash alone.
    const TYPE: FieldType;

    /// Feeds the value into `hasher` in a way that is the same on every machine and every run.
    fn stable_hash(&self, hasher: &mut KeyHasher);

    /// The value as milliseconds since the epoch, if it is a timestamp-like value.
    fn as_timestamp_ms(&self) -> Option<i64> {
        None
    }
}

macro_rules! int_field {
    ($ty:ty, $kind:expr) => {
        impl FieldKind for $ty {
            const TYPE: FieldType = $kind;
            fn stable_hash(&self, hasher: &mut KeyHasher) {
                // Widened so that a key hashes alike whatever integer width carries it.
                hasher.write_u64(*self as i64 as u64);
            }
            fn as_timestamp_ms(&self) -> Option<i64> {
                i64::try_from(*self).ok()
            }
        }
    };
}
int_field!(i8, FieldType::Int);
int_field!(i16, FieldType::Int);
int_field!(i32, FieldType::Int);
int_field!(i64, FieldType::Int);
int_field!(isize, FieldType::Int);
int_field!(u8, FieldType::UInt);
int_field!(u16, FieldType::UInt);
int_field!(u32, FieldType::UInt);
int_field!(u64, FieldType::UInt);
int_field!(usize, FieldType::UInt);

impl FieldKind for bool {
    const TYPE: FieldType = FieldType::Bool;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(u64::from(*self));
    }
}

impl FieldKind for char {
    const TYPE: FieldType = FieldType::Char;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(u64::from(*self));
    }
}

impl FieldKind for f64 {
    const TYPE: FieldType = FieldType::Float;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        // -0.0 and 0.0 are equal, so they must hash alike.
        let v = if *self == 0.0 { 0.0f64 } else { *self };
        hasher.write_u64(v.to_bits());
    }
}

impl FieldKind for f32 {
    const TYPE: FieldType = FieldType::Float;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        f64::from(*self).stable_hash(hasher);
    }
}

impl FieldKind for () {
    const TYPE: FieldType = FieldType::Unit;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(0);
    }
}

impl FieldKind for Timestamp {
    const TYPE: FieldType = FieldType::Timestamp;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(self.0 as u64);
    }
    fn as_timestamp_ms(&self) -> Option<i64> {
        Some(self.0)
    }
}

impl FieldKind for str {
    const TYPE: FieldType = FieldType::Str;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_bytes(self.as_bytes());
    }
}

macro_rules! str_field {
    ($ty:ty) => {
        impl FieldKind for $ty {
            const TYPE: FieldType = FieldType::Str;
            fn stable_hash(&self, hasher: &mut KeyHasher) {
                hasher.write_bytes(AsRef::<str>::as_ref(self).as_bytes());
            }
        }
    };
}
str_field!(String);
str_field!(&'static str);
str_field!(Box<str>);
str_field!(std::sync::Arc<str>);
#[cfg(feature = "compact_str")]
str_field!(compact_str::CompactString);

impl<T: FieldKind> FieldKind for Option<T> {
    const TYPE: FieldType = FieldType::Option;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        match self {
            None => hasher.write_u64(0),
            Some(v) => {
                hasher.write_u64(1);
                v.stable_hash(hasher);
            }
        }
    }
    fn as_timestamp_ms(&self) -> Option<i64> {
        self.as_ref().and_then(FieldKind::as_timestamp_ms)
    }
}

impl<T: FieldKind> FieldKind for Vec<T> {
    const TYPE: FieldType = if matches!(T::TYPE, FieldType::UInt) && size_of::<T>() == 1 {
        FieldType::Bytes
    } else {
        FieldType::List
    };
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(self.len() as u64);
        for v in self {
            v.stable_hash(hasher);
        }
    }
}

impl<T: FieldKind, const N: usize> FieldKind for [T; N] {
    const TYPE: FieldType = FieldType::List;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        hasher.write_u64(N as u64);
        for v in self {
            v.stable_hash(hasher);
        }
    }
}

impl<T: FieldKind> FieldKind for Box<T> {
    const TYPE: FieldType = T::TYPE;
    fn stable_hash(&self, hasher: &mut KeyHasher) {
        (**self).stable_hash(hasher);
    }
    fn as_timestamp_ms(&self) -> Option<i64> {
        (**self).as_timestamp_ms()
    }
}

macro_rules! tuple_field {
    ($($name:ident : $idx:tt),+) => {
        impl<$($name: FieldKind),+> FieldKind for ($($name,)+) {
            const TYPE: FieldType = FieldType::List;
            fn stable_hash(&self, hasher: &mut KeyHasher) {
                $( self.$idx.stable_hash(hasher); )+
            }
        }
    };
}
tuple_field!(A: 0, B: 1);
tuple_field!(A: 0, B: 1, C: 2);
tuple_field!(A: 0, B: 1, C: 2, D: 3);

/// The stable hash of one value, as `key_by` groupings compute it.
pub fn stable_hash_of<K: FieldKind + ?Sized>(key: &K) -> u64 {
    let mut hasher = KeyHasher::new();
    key.stable_hash(&mut hasher);
    hasher.finish()
}
