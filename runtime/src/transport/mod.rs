//! The transport between node processes: tokio TCP, length-delimited frames of rmp-serde
//! messages, a mutual handshake on the cluster secret before anything else is read, two
//! connections per peer (control and data), and reconnection with backoff.
//!
//! - [`frame`]: the frame limit and the [`Message`] envelope (pure, fuzzed);
//! - [`handshake`]: the HMAC challenge-response (a pure core plus its socket driver);
//! - [`secret`]: loading the cluster secret;
//! - [`endpoint`]: the [`Transport`] itself.

mod endpoint;
mod error;
pub mod frame;
pub mod handshake;
mod secret;

pub use endpoint::{Handler, Lane, Transport, TransportConfig, TransportStats};
pub use error::TransportError;
pub use frame::{FrameError, Message, Service};
pub use handshake::{HandshakeError, PeerRole};
pub use secret::{ClusterSecret, MIN_SECRET_BYTES, SecretError};
