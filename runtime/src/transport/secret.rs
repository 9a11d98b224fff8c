//! [`ClusterSecret`]: the shared key every node and client of a cluster proves it knows.

use std::path::{Path, PathBuf};

/// The fewest bytes a secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

/// The cluster's shared secret. It never leaves the process: the handshake proves knowledge of
/// it with an HMAC over fresh nonces. `Debug` does not print it.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("could not read the secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The secret is too short to be one.
    #[error(
        "the secret in {path} has {len} bytes; a cluster secret needs at least {MIN_SECRET_BYTES} \
         (for example 32 random bytes, hex-encoded)"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length after trimming.
        len: usize,
    },
}

impl ClusterSecret {
    /// Reads a secret from `path`; surrounding whitespace (a trailing newline) is not part of it.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|len| SecretError::TooShort {
            path: path.to_owned(),
            len,
        })
    }

    /// A secret from bytes (surrounding whitespace trimmed), or the trimmed length if it is too
    /// short.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, usize> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(trimmed.len());
        }
        Ok(ClusterSecret(trimmed.to_vec()))
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_missing_secrets_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").expect("write");
        let err = ClusterSecret::from_file(&short).expect_err("too short");
        assert!(err.to_string().contains("3 bytes"), "{err}");
        let err = ClusterSecret::from_file(&dir.path().join("none")).expect_err("missing");
        assert!(err.to_string().contains("could not read"), "{err}");
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123\n").expect("write");
        let s = ClusterSecret::from_file(&good).expect("good");
        assert_eq!(s.key(), b"0123456789abcdef0123");
        assert_eq!(format!("{s:?}"), "ClusterSecret(..)");
    }
}
