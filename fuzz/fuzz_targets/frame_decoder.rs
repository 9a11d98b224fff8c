//! The read side of a connection fed arbitrary bytes: `FrameReader` must return frames or an
//! error, never panic, whatever the limit and however the bytes are split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tempest_runtime::transport::Message;
use tempest_runtime::transport::frame::{self, DEFAULT_MAX_FRAME_BYTES, FrameReader, decode_frames};

/// A small limit, so that lengths over it are reachable with short inputs.
const SMALL_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The whole input at once, with a small limit and with the default 16 MiB one.
    for max in [SMALL_MAX, DEFAULT_MAX_FRAME_BYTES] {
        let mut buf = BytesMut::from(data);
        let _ = decode_frames::<Message>(&mut buf, max);
    }

    // The input as one frame body (no length prefix needed to reach the message decoder).
    let _ = frame::decode::<Message>(data);

    // The input delivered in two reads into one buffer, as a socket would: the first byte picks
    // where the rest is split.
    if let Some((&first, rest)) = data.split_first() {
        let at = rest.len() * usize::from(first) / 255;
        let (a, b) = rest.split_at(at);
        for max in [SMALL_MAX, DEFAULT_MAX_FRAME_BYTES] {
            let mut reader = FrameReader::new(max);
            let mut buf = BytesMut::new();
            buf.extend_from_slice(a);
            let Ok(first) = reader.read::<Message>(&mut buf) else {
                continue; // a connection closes on the first error
            };
            buf.extend_from_slice(b);
            let second = reader.read::<Message>(&mut buf);
            // Split or not, the same frames come out (when neither read failed).
            if let (Ok(second), Ok(whole)) =
                (second, decode_frames::<Message>(&mut BytesMut::from(rest), max))
            {
                let mut split = first;
                split.extend(second);
                assert_eq!(split, whole, "the split changed what was read");
            }
        }
    }
});
