//! The transport between node processes: authenticated request/response and one-way messages,
//! refusal of a wrong secret before anything is handled, bad frames that close a connection
//! without a panic, and reconnection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tempest_runtime::NodeId;
use tempest_runtime::transport::handshake::{self, ClientHandshake};
use tempest_runtime::transport::{
    ClusterSecret, Handler, Lane, PeerRole, Service, Transport, TransportConfig, TransportError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Echo {
    requests: AtomicU64,
    oneways: AtomicU64,
}

impl Handler for Echo {
    fn request(
        &self,
        _from: &PeerRole,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        async move {
            if service == Service::Admin {
                Err("admin says no".to_owned())
            } else {
                Ok(body.into_iter().rev().collect())
            }
        }
        .boxed()
    }

    fn oneway(&self, _from: &PeerRole, _service: Service, _body: Vec<u8>) {
        self.oneways.fetch_add(1, Ordering::SeqCst);
    }
}

fn secret(s: &str) -> Option<ClusterSecret> {
    Some(ClusterSecret::from_bytes(s.as_bytes()).expect("long enough"))
}

const SECRET: &str = "a cluster secret for the tests";

async fn node(
    id: u64,
    key: Option<ClusterSecret>,
) -> anyhow::Result<(Transport, Arc<Echo>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let echo = Arc::new(Echo::default());
    let role = PeerRole::Node {
        id: NodeId(id),
        addr: addr.clone(),
    };
    let mut config = TransportConfig::new(role, NodeId(id), key);
    config.max_frame_bytes = 64 * 1024;
    let t = Transport::serve(listener, config, echo.clone());
    Ok((t, echo, addr))
}

async fn poll_until(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    while !f() {
        anyhow::ensure!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn requests_and_oneways_between_authenticated_nodes() -> anyhow::Result<()> {
    let (a, _, _) = node(1, secret(SECRET)).await?;
    let (_b, b_echo, b_addr) = node(2, secret(SECRET)).await?;
    let t = Duration::from_secs(5);
    let answer = a
        .request(&b_addr, Lane::Control, Service::Heartbeat, vec![1, 2, 3], t)
        .await?;
    assert_eq!(answer, [3, 2, 1]);
    let err = a
        .request(&b_addr, Lane::Control, Service::Admin, vec![], t)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, TransportError::Remote { ref message, .. } if message == "admin says no"),
        "{err}"
    );
    for _ in 0..100 {
        a.send(&b_addr, Lane::Data, Service::Data, vec![0; 100])
            .await?;
    }
    poll_until("100 oneways", t, || {
        b_echo.oneways.load(Ordering::SeqCst) == 100
    })
    .await?;
    assert_eq!(
        a.stats().dials.load(Ordering::SeqCst),
        2,
        "one connection per lane"
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_refused_before_anything_is_handled() -> anyhow::Result<()> {
    let (b, b_echo, b_addr) = node(2, secret(SECRET)).await?;
    let (wrong, _, _) = node(3, secret("another secret, just as long")).await?;
    let (insecure, _, _) = node(4, None).await?;
    let t = Duration::from_secs(5);
    for client in [&wrong, &insecure] {
        let err = client
            .request(&b_addr, Lane::Control, Service::Heartbeat, vec![1], t)
            .await
            .expect_err("refused");
        assert!(matches!(err, TransportError::Refused { .. }), "{err}");
        assert!(!err.is_transient(), "a wrong secret is not worth retrying");
        client
            .send(&b_addr, Lane::Data, Service::Data, vec![1])
            .await
            .ok();
    }
    poll_until("refusals counted", t, || {
        b.stats().handshakes_failed.load(Ordering::SeqCst) >= 2
    })
    .await?;
    assert_eq!(b_echo.requests.load(Ordering::SeqCst), 0);
    assert_eq!(b_echo.oneways.load(Ordering::SeqCst), 0);
    assert_eq!(b.stats().accepted.load(Ordering::SeqCst), 0);
    Ok(())
}

/// An authenticated raw connection to `addr`, as a node would have after its handshake.
async fn raw_authenticated(addr: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    let hs = ClientHandshake::new(secret(SECRET), PeerRole::Client, [7; 32]);
    let (framed, _) = handshake::client(stream, hs, 1 << 20).await?;
    Ok(framed.into_inner())
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_are_counted() -> anyhow::Result<()> {
    let (b, b_echo, b_addr) = node(2, secret(SECRET)).await?;
    let t = Duration::from_secs(5);
    let stats = b.stats();

    tracing::info!("--- random bytes before the handshake");
    let mut s = TcpStream::connect(&b_addr).await?;
    s.write_all(&[0x00, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
        .await?;
    poll_until("a refused handshake", t, || {
        stats.handshakes_failed.load(Ordering::SeqCst) == 1
    })
    .await?;
    let mut s = TcpStream::connect(&b_addr).await?;
    s.write_all(&u32::MAX.to_be_bytes()).await?;
    poll_until("an oversized hello refused", t, || {
        stats.handshakes_failed.load(Ordering::SeqCst) == 2
    })
    .await?;

    tracing::info!("--- an oversized frame after the handshake");
    let mut s = raw_authenticated(&b_addr).await?;
    s.write_all(&(10u32 << 20).to_be_bytes()).await?;
    poll_until("an oversized frame", t, || {
        stats.frames_oversized.load(Ordering::SeqCst) == 1
    })
    .await?;

    tracing::info!("--- a frame that is not a message");
    let mut s = raw_authenticated(&b_addr).await?;
    s.write_all(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]).await?;
    poll_until("a corrupt frame", t, || {
        stats.frames_corrupt.load(Ordering::SeqCst) == 1
    })
    .await?;

    tracing::info!("--- a truncated frame");
    let mut s = raw_authenticated(&b_addr).await?;
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).await?;
    drop(s);
    poll_until("a truncated frame", t, || {
        stats.frames_corrupt.load(Ordering::SeqCst) == 2
    })
    .await?;

    tracing::info!("--- the node still serves a good peer");
    let (a, _, _) = node(1, secret(SECRET)).await?;
    let answer = a
        .request(&b_addr, Lane::Control, Service::Heartbeat, vec![1, 2], t)
        .await?;
    assert_eq!(answer, [2, 1]);
    assert_eq!(b_echo.oneways.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test]
async fn a_peer_that_comes_back_is_redialed() -> anyhow::Result<()> {
    let (a, _, _) = node(1, secret(SECRET)).await?;
    let (b, _, b_addr) = node(2, secret(SECRET)).await?;
    let t = Duration::from_secs(5);
    a.request(&b_addr, Lane::Control, Service::Heartbeat, vec![1], t)
        .await?;

    tracing::info!("--- the peer goes away: requests fail fast");
    b.shutdown();
    drop(b);
    let end = Instant::now() + t;
    loop {
        match a
            .request(
                &b_addr,
                Lane::Control,
                Service::Heartbeat,
                vec![1],
                Duration::from_millis(200),
            )
            .await
        {
            Err(TransportError::Unreachable { .. }) => break,
            _ => anyhow::ensure!(Instant::now() < end, "never unreachable"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    tracing::info!("--- it comes back on the same address");
    let listener = TcpListener::bind(&b_addr).await?;
    let role = PeerRole::Node {
        id: NodeId(2),
        addr: b_addr.clone(),
    };
    let _b2 = Transport::serve(
        listener,
        TransportConfig::new(role, NodeId(2), secret(SECRET)),
        Arc::new(Echo::default()),
    );
    let end = Instant::now() + t;
    loop {
        match a
            .request(
                &b_addr,
                Lane::Control,
                Service::Heartbeat,
                vec![1, 2],
                Duration::from_millis(500),
            )
            .await
        {
            Ok(answer) => {
                assert_eq!(answer, [2, 1]);
                break;
            }
            Err(e) => anyhow::ensure!(Instant::now() < end, "never reconnected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.stats().dials.load(Ordering::SeqCst) >= 2);
    Ok(())
}
