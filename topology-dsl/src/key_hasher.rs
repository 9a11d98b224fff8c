//! The fixed, seedless hash behind fields and key-by groupings.
//!
//! Every process of a cluster must send a key to the same task, on every run and every machine,
//! so this hash has no random seed and depends only on the bytes of the key: integers are hashed
//! as 64-bit little-endian values, strings by their UTF-8 bytes (XXH3, a published algorithm with a
//! fixed output), and the parts of a multi-field key are mixed in order. Changing any of this
//! re-partitions every keyed state in existence: the golden values in the tests pin it.

/// Accumulates the parts of a grouping key into one stable 64-bit hash.
///
/// ```
/// use tempest_dsl::KeyHasher;
///
/// let mut h = KeyHasher::new();
/// h.write_bytes(b"word");
/// let a = h.finish();
/// let mut h = KeyHasher::new();
/// h.write_bytes(b"word");
/// assert_eq!(a, h.finish()); // no seed: the same key always hashes alike
/// ```
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    state: u64,
    /// Whether every part written is also recorded, exactly, in this thread's [`RECORDED`]
    /// ([`KeyHasher::recording`]): what windows key by, so that two keys whose hashes collide
    /// still differ. A flag rather than a buffer of its own keeps the plain hasher (routing, on
    /// every tuple) a word with no drop, which the compiler folds into its callers.
    recording: bool,
}

thread_local! {
    /// What the recording hasher of this thread recorded last.
    static RECORDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The initial state: the first 64 bits of the fractional part of pi.
const INITIAL: u64 = 0x243F_6A88_85A3_08D3;
/// An odd multiplier with good avalanche (the 64-bit golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyHasher {
    /// An empty hasher.
    pub const fn new() -> Self {
        KeyHasher {
            state: INITIAL,
            recording: false,
        }
    }

    /// A hasher that also records the parts written, exactly (the record of this thread's
    /// last recording hasher is cleared first): a word as a tag byte and its 8 bytes, a byte
    /// string as a tag byte, its length and its bytes. Two keys record the same bytes exactly
    /// when they write the same parts. Read them with [`KeyHasher::with_recorded`].
    pub(crate) fn recording() -> Self {
        RECORDED.with_borrow_mut(Vec::clear);
        KeyHasher {
            state: INITIAL,
            recording: true,
        }
    }

    /// Calls `f` with what this thread's last recording hasher recorded.
    pub(crate) fn with_recorded<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        RECORDED.with_borrow(|bytes| f(bytes))
    }

    #[inline]
    fn mix(&mut self, value: u64) {
        self.state = (self.state ^ value)
            .wrapping_mul(MULTIPLIER)
            .rotate_left(29);
    }

    /// Mixes in one 64-bit word.
    #[inline]
    pub fn write_u64(&mut self, value: u64) {
        self.mix(value);
        if self.recording {
            record(1, &value.to_le_bytes(), &[]);
        }
    }

    /// Mixes in a byte string (its XXH3 hash, then its length, so `"ab","c"` differs from
    /// `"a","bc"`).
    #[inline]
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.mix(xxhash_rust::xxh3::xxh3_64(bytes));
        self.mix(bytes.len() as u64);
        if self.recording {
            record(2, &(bytes.len() as u64).to_le_bytes(), bytes);
        }
    }

    /// The hash of everything written so far (MurmurHash3's 64-bit finaliser over the state).
    #[inline]
    pub fn finish(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^= h >> 33;
        h
    }
}

/// Appends a tag byte, a word and a byte string to this thread's record. Out of line, so that
/// the plain hasher's writes stay small.
#[inline(never)]
fn record(tag: u8, word: &[u8; 8], bytes: &[u8]) {
    RECORDED.with_borrow_mut(|exact| {
        exact.push(tag);
        exact.extend_from_slice(word);
        exact.extend_from_slice(bytes);
    });
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FieldKind, stable_hash_of};

    const GOLDEN_42: u64 = 17_505_847_787_152_258_368;

    #[test]
    fn recording_keeps_the_parts_exactly_and_hashes_alike() {
        let record = |parts: &[&str]| {
            let mut h = KeyHasher::recording();
            for p in parts {
                FieldKind::stable_hash(*p, &mut h);
            }
            (h.finish(), KeyHasher::with_recorded(<[u8]>::to_vec))
        };
        let (hash, exact) = record(&["ab", "c"]);
        let mut plain = KeyHasher::new();
        "ab".stable_hash(&mut plain);
        "c".stable_hash(&mut plain);
        assert_eq!(hash, plain.finish(), "recording does not change the hash");
        assert_eq!(
            KeyHasher::with_recorded(<[u8]>::to_vec),
            exact,
            "a plain hasher records nothing"
        );
        assert_eq!(
            exact,
            record(&["ab", "c"]).1,
            "the record was cleared first"
        );
        assert_eq!(exact[0], 2);
        assert_ne!(exact, record(&["a", "bc"]).1);
        // A word and a byte string of the same bytes differ.
        let mut w = KeyHasher::recording();
        w.write_u64(u64::from_le_bytes(*b"abcdefgh"));
        let word = KeyHasher::with_recorded(<[u8]>::to_vec);
        let mut b = KeyHasher::recording();
        b.write_bytes(b"abcdefgh");
        assert_ne!(word, KeyHasher::with_recorded(<[u8]>::to_vec));
        assert_eq!(word.len(), 9);
    }

    #[test]
    fn golden_values_never_change() {
        // These pin the partitioning of keyed state: a change here moves keys between tasks.
        assert_eq!(stable_hash_of("w42"), 7_443_692_093_719_594_847);
        assert_eq!(stable_hash_of(&42u64), GOLDEN_42);
        assert_eq!(stable_hash_of(&-1i64), stable_hash_of(&u64::MAX));
    }

    #[test]
    fn integer_width_does_not_matter() {
        assert_eq!(stable_hash_of(&7u8), stable_hash_of(&7u64));
        assert_eq!(stable_hash_of(&7i32), stable_hash_of(&7i64));
    }

    #[test]
    fn string_types_hash_alike() {
        let s = String::from("hello");
        assert_eq!(stable_hash_of(&s), stable_hash_of("hello"));
        assert_eq!(
            stable_hash_of(&compact_str::CompactString::from("hello")),
            stable_hash_of("hello")
        );
    }

    #[test]
    fn field_boundaries_matter() {
        let mut a = KeyHasher::new();
        "ab".stable_hash(&mut a);
        "c".stable_hash(&mut a);
        let mut b = KeyHasher::new();
        "a".stable_hash(&mut b);
        "bc".stable_hash(&mut b);
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn spreads_a_small_vocabulary_evenly() {
        let n = 8u64;
        let mut buckets = [0u32; 8];
        for i in 0..8000 {
            buckets[(stable_hash_of(format!("w{i}").as_str()) % n) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "uneven buckets: {buckets:?}");
        }
    }
}
