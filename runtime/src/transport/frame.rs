//! Frames and the messages they carry. A frame is a 4-byte big-endian length and that many
//! bytes of rmp-serde; the length is checked against the limit *before* anything is allocated
//! (tokio-util's `LengthDelimitedCodec`), and a frame that does not decode is an error, never a
//! panic. Every connection carries [`Message`]s once its handshake is done.
//!
//! ```text
//!   +----------------+-------------------------------------------+
//!   | len: u32 (BE)  | rmp-serde of Message (len bytes, <= limit) |
//!   +----------------+-------------------------------------------+
//! ```

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::ids::GroupId;

/// The default limit on one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// The limit on frames before the handshake authenticated the peer: nothing larger is needed,
/// so an unauthenticated peer cannot make a node buffer more.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 1024;

/// Who a message is for on the receiving node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Service {
    /// A Raft RPC of one group.
    Raft(GroupId),
    /// A command of a client or another node to the manager (submit, status, kill, nodes).
    Admin,
    /// A node's liveness report to the manager's leader (a request); one-way from the
    /// manager's leader, a wake: the placements changed, report now.
    Heartbeat,
    /// Tuple batches, watermarks, credits and acks between tasks.
    Data,
}

/// What travels on an authenticated connection.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A request; the peer answers with a [`Message::Response`] of the same id.
    Request {
        /// Chosen by the sender, unique on its connection.
        id: u64,
        /// Whose request it is.
        service: Service,
        /// The request, encoded by the service.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The answer to a request.
    Response {
        /// The request's id.
        id: u64,
        /// The answer, encoded by the service, or the handler's error as text.
        outcome: Result<serde_bytes::ByteBuf, String>,
    },
    /// A message that gets no answer.
    Oneway {
        /// Whose message it is.
        service: Service,
        /// The message, encoded by the service.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame's length is over the limit: refused before reading it.
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    Oversized {
        /// The length the frame announced (or at least this much).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame's bytes are not a valid message.
    #[error("a frame of {len} bytes does not decode: {why}")]
    Corrupt {
        /// The frame's length.
        len: usize,
        /// The decoder's complaint.
        why: String,
    },
    /// The message could not be encoded (a bug in the sender's types).
    #[error("a message could not be encoded: {0}")]
    Encode(String),
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// The codec of one connection, limited to `max` bytes a frame.
pub fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max)
        .new_codec()
}

/// Turns the codec's error into a [`FrameError`], recognising an oversized frame.
pub fn codec_error(e: std::io::Error, max: usize) -> FrameError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
    {
        FrameError::Oversized { len: max + 1, max }
    } else {
        FrameError::Io(e)
    }
}

/// Encodes a value with rmp-serde.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    rmp_serde::to_vec(value).map_err(|e| FrameError::Encode(e.to_string()))
}

/// Decodes a value with rmp-serde; bad bytes are an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(bytes).map_err(|e| FrameError::Corrupt {
        len: bytes.len(),
        why: e.to_string(),
    })
}

/// The read side of one connection as a pure core: bytes in, messages out, the way a
/// connection reads them (the fuzz target drives it with arbitrary bytes). It keeps the state of
/// a frame whose length it read but whose body has not all arrived, so bytes may come in any
/// pieces.
pub struct FrameReader {
    codec: LengthDelimitedCodec,
    max: usize,
}

impl FrameReader {
    /// A reader of frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            codec: codec(max),
            max,
        }
    }

    /// Reads every complete frame in `buf` as a `T` (consuming it), keeping what is left of an
    /// incomplete one for the next call. Stops at the first error (a connection then closes).
    pub fn read<T: DeserializeOwned>(&mut self, buf: &mut BytesMut) -> Result<Vec<T>, FrameError> {
        let mut out = Vec::new();
        while let Some(frame) = self
            .codec
            .decode(buf)
            .map_err(|e| codec_error(e, self.max))?
        {
            out.push(decode(&frame)?);
        }
        Ok(out)
    }
}

/// Reads every complete frame of a buffer that holds all the bytes there will be.
pub fn decode_frames<T: DeserializeOwned>(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Vec<T>, FrameError> {
    FrameReader::new(max).read(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use tokio_util::codec::Encoder;

    fn framed(msg: &Message, max: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        let body = encode(msg).expect("encodes");
        codec(max)
            .encode(bytes::Bytes::from(body), &mut buf)
            .expect("fits");
        buf
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Message::Request {
                id: 7,
                service: Service::Raft(GroupId(3)),
                body: vec![1, 2, 3],
            },
            Message::Response {
                id: 7,
                outcome: Err("no leader".into()),
            },
            Message::Oneway {
                service: Service::Data,
                body: vec![],
            },
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            buf.extend_from_slice(&framed(m, 1024));
        }
        let back: Vec<Message> = decode_frames(&mut buf, 1024).expect("decodes");
        assert_eq!(back, msgs);
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let err = decode_frames::<Message>(&mut buf, 1024).expect_err("refused");
        assert!(
            matches!(err, FrameError::Oversized { max: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_frame_waits_and_garbage_is_corrupt() {
        let whole = framed(
            &Message::Oneway {
                service: Service::Admin,
                body: vec![9; 40],
            },
            1024,
        );
        // In two pieces, the way a socket may deliver them: the message comes out whole.
        let mut reader = FrameReader::new(1024);
        let mut buf = BytesMut::from(&whole[..whole.len() - 5]);
        assert_eq!(reader.read::<Message>(&mut buf).expect("incomplete"), []);
        buf.extend_from_slice(&whole[whole.len() - 5..]);
        assert_eq!(
            reader.read::<Message>(&mut buf).expect("complete"),
            [Message::Oneway {
                service: Service::Admin,
                body: vec![9; 40],
            }]
        );
        let mut garbage = BytesMut::new();
        garbage.put_u32(4);
        garbage.extend_from_slice(&[0xc1, 0xff, 0x00, 0x13]);
        let err = decode_frames::<Message>(&mut garbage, 1024).expect_err("corrupt");
        assert!(matches!(err, FrameError::Corrupt { len: 4, .. }), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode_frames::<Message>(&mut buf, 256);
        }
    }
}
