//! The handshake that opens every connection: both sides prove they know the cluster secret
//! before any other frame is decoded. A pure core ([`ClientHandshake`], [`ServerHandshake`])
//! that takes its nonces as inputs, and [`client`] / [`server`] that run it over a socket.
//!
//! ```text
//!   client (dials)                                server (accepts)
//!     Hello { version, role, nonce_c }  ───────►
//!                                       ◄───────  Challenge { node, nonce_s, mac_s }
//!     checks mac_s = HMAC(k, "server" ‖ transcript)
//!     Proof { mac_c }                   ───────►  checks mac_c = HMAC(k, "client" ‖ transcript)
//!                                       ◄───────  Welcome
//! ```
//!
//! The transcript holds both nonces and both identities, so a proof cannot be replayed on
//! another connection or reflected back (the labels differ). The secret never travels, and the
//! MACs are compared in constant time. Frames are capped at
//! [`HANDSHAKE_MAX_FRAME_BYTES`](super::frame::HANDSHAKE_MAX_FRAME_BYTES) until the peer is
//! authenticated. The handshake authenticates; it does not encrypt what follows.
//!
//! With no secret on either side (`--insecure`) the proofs are empty and not checked; a side
//! with a secret refuses a side without one.

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::ids::NodeId;
use crate::transport::frame::{self, FrameError, HANDSHAKE_MAX_FRAME_BYTES};
use crate::transport::secret::ClusterSecret;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

const MAGIC: [u8; 4] = *b"TMPS";

/// A fresh random value per connection and side.
pub type Nonce = [u8; 32];

/// Who is dialing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRole {
    /// Another node, with the address others reach it at.
    Node {
        /// Its id.
        id: NodeId,
        /// Its advertised address.
        addr: String,
    },
    /// A command-line client (`tempest submit`, `status`, ...).
    Client,
}

/// The dialing side's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    magic: [u8; 4],
    version: u16,
    role: PeerRole,
    nonce: Nonce,
}

/// The accepting side's answer: its identity and its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    node: NodeId,
    nonce: Nonce,
    #[serde(with = "serde_bytes")]
    proof: Vec<u8>,
}

/// The dialing side's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    #[serde(with = "serde_bytes")]
    proof: Vec<u8>,
}

/// The accepting side's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Authenticated: messages follow.
    Welcome,
    /// Refused, and why (the connection closes).
    Refused(String),
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer does not speak this protocol.
    #[error("the peer does not speak the Tempest protocol")]
    NotTempest,
    /// The peer speaks another version.
    #[error("the peer speaks protocol version {theirs}, this node {PROTOCOL_VERSION}")]
    Version {
        /// The peer's version.
        theirs: u16,
    },
    /// The peer's proof is wrong: it does not know the cluster secret.
    #[error(
        "authentication failed: the peer does not know the cluster secret (check --secret-file)"
    )]
    BadProof,
    /// The peer refused us.
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    /// The peer closed the connection during the handshake.
    #[error(
        "the peer closed the connection during the handshake (a wrong secret, or not a Tempest node)"
    )]
    Closed,
    /// The handshake took too long.
    #[error("the handshake timed out")]
    Timeout,
    /// A handshake frame could not be read.
    #[error("handshake: {0}")]
    Frame(#[from] FrameError),
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: Option<&ClusterSecret>, label: &[u8], transcript: &[u8]) -> Vec<u8> {
    let Some(secret) = secret else {
        return Vec::new();
    };
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(secret.key()).expect("HMAC accepts keys of any length");
    m.update(label);
    m.update(transcript);
    m.finalize().into_bytes().to_vec()
}

fn verify(
    secret: Option<&ClusterSecret>,
    label: &[u8],
    transcript: &[u8],
    proof: &[u8],
) -> Result<(), HandshakeError> {
    match secret {
        None if proof.is_empty() => Ok(()),
        None => Err(HandshakeError::BadProof),
        Some(secret) => {
            let mut m = <HmacSha256 as Mac>::new_from_slice(secret.key())
                .expect("HMAC accepts keys of any length");
            m.update(label);
            m.update(transcript);
            m.verify_slice(proof).map_err(|_| HandshakeError::BadProof)
        }
    }
}

/// What both proofs cover: both nonces and both identities.
fn transcript(hello: &Hello, node: NodeId, server_nonce: &Nonce) -> Vec<u8> {
    let mut t = Vec::with_capacity(128);
    t.extend_from_slice(&MAGIC);
    t.extend_from_slice(&hello.version.to_be_bytes());
    t.extend_from_slice(&hello.nonce);
    t.extend_from_slice(server_nonce);
    match &hello.role {
        PeerRole::Node { id, addr } => {
            t.push(1);
            t.extend_from_slice(&id.0.to_be_bytes());
            t.extend_from_slice(&(addr.len() as u64).to_be_bytes());
            t.extend_from_slice(addr.as_bytes());
        }
        PeerRole::Client => t.push(2),
    }
    t.extend_from_slice(&node.0.to_be_bytes());
    t
}

/// The dialing side of a handshake.
pub struct ClientHandshake {
    hello: Hello,
    secret: Option<ClusterSecret>,
}

impl ClientHandshake {
    /// Starts a handshake as `role` with a fresh `nonce`.
    pub fn new(secret: Option<ClusterSecret>, role: PeerRole, nonce: Nonce) -> Self {
        ClientHandshake {
            hello: Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                role,
                nonce,
            },
            secret,
        }
    }

    /// The first frame.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Checks the server's proof and returns ours, with the server's node id.
    pub fn on_challenge(&self, c: &Challenge) -> Result<(Proof, NodeId), HandshakeError> {
        let t = transcript(&self.hello, c.node, &c.nonce);
        verify(self.secret.as_ref(), b"tempest/server", &t, &c.proof)?;
        Ok((
            Proof {
                proof: mac(self.secret.as_ref(), b"tempest/client", &t),
            },
            c.node,
        ))
    }
}

/// The accepting side of a handshake.
pub struct ServerHandshake {
    node: NodeId,
    nonce: Nonce,
    secret: Option<ClusterSecret>,
    hello: Option<Hello>,
}

impl ServerHandshake {
    /// A handshake of node `node` with a fresh `nonce`.
    pub fn new(secret: Option<ClusterSecret>, node: NodeId, nonce: Nonce) -> Self {
        ServerHandshake {
            node,
            nonce,
            secret,
            hello: None,
        }
    }

    /// Checks the client's hello and returns our challenge, which carries our proof.
    pub fn on_hello(&mut self, hello: Hello) -> Result<Challenge, HandshakeError> {
        if hello.magic != MAGIC {
            return Err(HandshakeError::NotTempest);
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                theirs: hello.version,
            });
        }
        let t = transcript(&hello, self.node, &self.nonce);
        let proof = mac(self.secret.as_ref(), b"tempest/server", &t);
        self.hello = Some(hello);
        Ok(Challenge {
            node: self.node,
            nonce: self.nonce,
            proof,
        })
    }

    /// Checks the client's proof; on success the client is who its hello said.
    pub fn on_proof(&self, p: &Proof) -> Result<PeerRole, HandshakeError> {
        let hello = self.hello.as_ref().ok_or(HandshakeError::NotTempest)?;
        let t = transcript(hello, self.node, &self.nonce);
        verify(self.secret.as_ref(), b"tempest/client", &t, &p.proof)?;
        Ok(hello.role.clone())
    }
}

async fn read<S, T>(framed: &mut Framed<S, LengthDelimitedCodec>) -> Result<T, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: serde::de::DeserializeOwned,
{
    match framed.next().await {
        None => Err(HandshakeError::Closed),
        Some(Err(e)) => Err(frame::codec_error(e, HANDSHAKE_MAX_FRAME_BYTES).into()),
        Some(Ok(bytes)) => Ok(frame::decode(&bytes)?),
    }
}

async fn write<S, T>(
    framed: &mut Framed<S, LengthDelimitedCodec>,
    value: &T,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = frame::encode(value)?;
    framed
        .send(bytes::Bytes::from(bytes))
        .await
        .map_err(|e| HandshakeError::Frame(FrameError::Io(e)))
}

/// Runs the dialing side over `stream`; returns the authenticated connection, its frame limit
/// raised to `max_frame`, and the server's node id.
pub async fn client<S>(
    stream: S,
    hs: ClientHandshake,
    max_frame: usize,
) -> Result<(Framed<S, LengthDelimitedCodec>, NodeId), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, frame::codec(HANDSHAKE_MAX_FRAME_BYTES));
    write(&mut framed, hs.hello()).await?;
    let challenge: Challenge = read(&mut framed).await?;
    let (proof, node) = hs.on_challenge(&challenge)?;
    write(&mut framed, &proof).await?;
    match read::<_, Verdict>(&mut framed).await? {
        Verdict::Welcome => {}
        Verdict::Refused(why) => return Err(HandshakeError::Refused(why)),
    }
    framed.codec_mut().set_max_frame_length(max_frame);
    Ok((framed, node))
}

/// Runs the accepting side over `stream`; returns the authenticated connection, its frame
/// limit raised to `max_frame`, and who the client is. A refused client is told why before the
/// connection closes.
pub async fn server<S>(
    stream: S,
    mut hs: ServerHandshake,
    max_frame: usize,
) -> Result<(Framed<S, LengthDelimitedCodec>, PeerRole), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, frame::codec(HANDSHAKE_MAX_FRAME_BYTES));
    let hello: Hello = read(&mut framed).await?;
    let challenge = match hs.on_hello(hello) {
        Ok(c) => c,
        Err(e) => {
            let _ = write(&mut framed, &Verdict::Refused(e.to_string())).await;
            return Err(e);
        }
    };
    write(&mut framed, &challenge).await?;
    let proof: Proof = read(&mut framed).await?;
    match hs.on_proof(&proof) {
        Ok(role) => {
            write(&mut framed, &Verdict::Welcome).await?;
            framed.codec_mut().set_max_frame_length(max_frame);
            Ok((framed, role))
        }
        Err(e) => {
            let _ = write(&mut framed, &Verdict::Refused(e.to_string())).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<ClusterSecret> {
        Some(ClusterSecret::from_bytes(s.as_bytes()).expect("long enough"))
    }

    fn run(
        client_secret: Option<ClusterSecret>,
        server_secret: Option<ClusterSecret>,
    ) -> Result<PeerRole, HandshakeError> {
        let role = PeerRole::Node {
            id: NodeId(2),
            addr: "127.0.0.1:9".into(),
        };
        let c = ClientHandshake::new(client_secret, role, [1; 32]);
        let mut s = ServerHandshake::new(server_secret, NodeId(1), [2; 32]);
        let challenge = s.on_hello(c.hello().clone())?;
        let (proof, node) = c.on_challenge(&challenge)?;
        assert_eq!(node, NodeId(1));
        s.on_proof(&proof)
    }

    #[test]
    fn the_same_secret_authenticates_both_sides() {
        let k = "a cluster secret of some length";
        let role = run(secret(k), secret(k)).expect("authenticated");
        assert!(matches!(role, PeerRole::Node { id: NodeId(2), .. }));
        run(None, None).expect("insecure on both sides");
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused_on_either_side() {
        let a = secret("the right secret, long enough");
        let b = secret("the wrong secret, long enough");
        assert!(matches!(run(a.clone(), b), Err(HandshakeError::BadProof)));
        assert!(matches!(
            run(None, a.clone()),
            Err(HandshakeError::BadProof)
        ));
        assert!(matches!(run(a, None), Err(HandshakeError::BadProof)));
    }

    #[test]
    fn a_proof_from_another_connection_or_reflected_is_refused() {
        let k = secret("a cluster secret of some length");
        let c = ClientHandshake::new(k.clone(), PeerRole::Client, [1; 32]);
        let mut s1 = ServerHandshake::new(k.clone(), NodeId(1), [2; 32]);
        let ch = s1.on_hello(c.hello().clone()).expect("hello");
        let (proof, _) = c.on_challenge(&ch).expect("server proof");
        // Replay on a connection with another server nonce.
        let mut s2 = ServerHandshake::new(k.clone(), NodeId(1), [3; 32]);
        s2.on_hello(c.hello().clone()).expect("hello");
        assert!(matches!(s2.on_proof(&proof), Err(HandshakeError::BadProof)));
        // The server's own proof reflected back as the client's.
        let reflected = Proof { proof: ch.proof };
        assert!(matches!(
            s1.on_proof(&reflected),
            Err(HandshakeError::BadProof)
        ));
    }

    #[test]
    fn another_protocol_or_version_is_refused() {
        let c = ClientHandshake::new(None, PeerRole::Client, [1; 32]);
        let mut hello = c.hello().clone();
        hello.version = 99;
        let mut s = ServerHandshake::new(None, NodeId(1), [2; 32]);
        assert!(matches!(
            s.on_hello(hello.clone()),
            Err(HandshakeError::Version { theirs: 99 })
        ));
        hello.magic = *b"HTTP";
        assert!(matches!(s.on_hello(hello), Err(HandshakeError::NotTempest)));
    }
}
