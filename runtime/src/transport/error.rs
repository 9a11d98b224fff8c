//! [`TransportError`]: why a message could not be sent, a connection set up, or a frame read.

use std::time::Duration;

/// Why a message could not be sent, a connection set up, or a frame read.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listening socket could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer cannot be reached now (no connection, and the last attempt failed).
    #[error("{addr} is unreachable: {why}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// The last failure.
        why: String,
    },
    /// The peer refused our handshake, or we refused its (a wrong secret, another protocol).
    #[error("{addr} refused the connection: {why}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// Why.
        why: String,
    },
    /// No reply came in time.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The connection closed before the reply came.
    #[error("the connection to {addr} closed before its reply")]
    Closed {
        /// The peer's address.
        addr: String,
    },
    /// The peer handled the request and returned an error.
    #[error("{addr} answered with an error: {message}")]
    Remote {
        /// The peer's address.
        addr: String,
        /// Its error, as text.
        message: String,
    },
    /// The handshake failed: wrong secret, a different protocol, or a peer that misbehaved.
    #[error(transparent)]
    Handshake(#[from] crate::transport::handshake::HandshakeError),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] crate::transport::frame::FrameError),
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

impl TransportError {
    /// Whether retrying later may help (the peer may come back) rather than the request being
    /// wrong or refused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Timeout { .. }
                | TransportError::Closed { .. }
        )
    }
}
