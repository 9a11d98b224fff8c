//! The handshake's pure cores driven by an attacker who does not know the cluster secret.
//!
//! Input layout: `[split, mode, rest...]`. `rest` is split at `min(split, rest.len())` into the
//! body of a `Hello` frame and the body of a `Proof` frame. `mode` bits:
//! - 0: the server has the cluster secret (else both sides run `--insecure`);
//! - 1: the client has the cluster secret;
//! - 2: the client dials as a node (else as a command-line client);
//! - 3: "reflect": the proof sent is the server's own proof (from its challenge) XORed with the
//!   proof chunk, so the fuzzer mutates around a MAC it has seen on the wire.
//!
//! Invariants: with a secret, `ServerHandshake::on_proof` and `ClientHandshake::on_challenge`
//! never accept what the attacker sent (it cannot forge HMAC-SHA256). Without one, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tempest_runtime::NodeId;
use tempest_runtime::transport::frame::{decode, encode};
use tempest_runtime::transport::handshake::{
    Challenge, ClientHandshake, Hello, PeerRole, Proof, ServerHandshake,
};
use tempest_runtime::transport::ClusterSecret;

const SECRET: &[u8] = b"the fuzzed cluster's secret, 32 bytes or so";
const SERVER_NONCE: [u8; 32] = [0x5a; 32];
const CLIENT_NONCE: [u8; 32] = [0x3c; 32];

fn secret(on: bool) -> Option<ClusterSecret> {
    on.then(|| ClusterSecret::from_bytes(SECRET).expect("the fuzz secret is long enough"))
}

/// The server's proof inside its encoded challenge: the trailing `bin8` of 32 bytes.
fn server_mac(challenge: &Challenge) -> Option<Vec<u8>> {
    let bytes = encode(challenge).expect("a challenge encodes");
    let tail = bytes.len().checked_sub(34)?;
    (bytes[tail..tail + 2] == [0xc4, 0x20]).then(|| bytes[tail + 2..].to_vec())
}

/// The rmp-serde encoding of a `Proof` holding `mac` (a one-element array of `bin`).
fn proof_bytes(mac: &[u8]) -> Vec<u8> {
    let mut out = vec![0x91, 0xc6];
    out.extend_from_slice(&(mac.len() as u32).to_be_bytes());
    out.extend_from_slice(mac);
    out
}

fuzz_target!(|data: &[u8]| {
    let [split, mode, rest @ ..] = data else {
        return;
    };
    let server_secret = mode & 1 != 0;
    let client_secret = mode & 2 != 0;
    let reflect = mode & 8 != 0;
    let (chunk1, chunk2) = rest.split_at(usize::from(*split).min(rest.len()));

    // Server side: the attacker's hello, then the attacker's proof.
    let mut server = ServerHandshake::new(secret(server_secret), NodeId(1), SERVER_NONCE);
    let challenge = decode::<Hello>(chunk1)
        .ok()
        .and_then(|hello| server.on_hello(hello).ok());
    let proof_body = match (&challenge, reflect) {
        (Some(c), true) => server_mac(c).map(|mac| {
            let mut mac = mac;
            for (m, x) in mac.iter_mut().zip(chunk2) {
                *m ^= x;
            }
            proof_bytes(&mac)
        }),
        _ => None,
    }
    .unwrap_or_else(|| chunk2.to_vec());
    if let Ok(proof) = decode::<Proof>(&proof_body) {
        let verdict = server.on_proof(&proof);
        if server_secret {
            assert!(
                verdict.is_err(),
                "a server with a secret accepted a proof from a peer without it: {verdict:?}"
            );
        }
    }

    // Client side: the attacker is the server and answers with an arbitrary challenge.
    let role = if mode & 4 != 0 {
        PeerRole::Node {
            id: NodeId(2),
            addr: "127.0.0.1:7000".into(),
        }
    } else {
        PeerRole::Client
    };
    let client = ClientHandshake::new(secret(client_secret), role, CLIENT_NONCE);
    for body in [rest, chunk1, chunk2] {
        if let Ok(c) = decode::<Challenge>(body) {
            let verdict = client.on_challenge(&c);
            if client_secret {
                assert!(
                    verdict.is_err(),
                    "a client with a secret accepted a challenge from a server without it: {verdict:?}"
                );
            }
        }
    }
});
