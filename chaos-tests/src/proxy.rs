//! A fault-injecting TCP proxy for one directed link between two nodes: node A dials node B
//! through it (A's `routes` send B's address here), so every byte of the connections A opens to
//! B passes through it, B's answers included. Per direction it passes bytes, delays them (a
//! delay line: throughput is kept, latency added), or holds them (a blackhole: nothing is
//! forwarded and nothing is lost, as in a partition TCP rides out); and it can refuse the link
//! (close its connections, and every new one once accepted), as a partition the peers see as
//! closed connections.
//!
//! A one-way cut of A from B is then: refuse A->B, and hold the backward direction of B->A.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a direction of a link does with bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flow {
    /// Forward at once.
    #[default]
    Pass,
    /// Forward each chunk this long after it was read.
    Delay(Duration),
    /// Forward nothing until the flow changes (bytes wait, none are dropped).
    Hold,
}

/// The faults of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Bytes from the dialing node to the other.
    pub forward: Flow,
    /// Bytes back to the dialing node.
    pub backward: Flow,
    /// Close every connection and refuse new ones.
    pub refuse: bool,
}

impl LinkFaults {
    /// No fault.
    pub const HEALTHY: LinkFaults = LinkFaults {
        forward: Flow::Pass,
        backward: Flow::Pass,
        refuse: false,
    };
}

/// A running proxy for one link.
#[derive(Debug)]
pub struct LinkProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
}

impl LinkProxy {
    /// Starts a proxy on a free loopback port forwarding to `target` (on the current runtime).
    pub async fn start(target: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (faults, rx) = watch::channel(LinkFaults::HEALTHY);
        tokio::spawn(accept(listener, target, rx));
        Ok(LinkProxy { addr, faults })
    }

    /// Sets the link's faults (they apply to connections already open too).
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// The link's faults now.
    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, faults: watch::Receiver<LinkFaults>) {
    loop {
        // Ends when the proxy (its sender) is dropped.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = closed(faults.clone()) => return,
        };
        let Ok((client, _)) = accepted else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if faults.borrow().refuse {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let forward = pump(cr, sw, faults.clone(), |f| f.forward);
            let backward = pump(sr, cw, faults.clone(), |f| f.backward);
            // Either side ending, or the link refused, ends the connection.
            tokio::select! {
                () = forward => {}
                () = backward => {}
                () = refused(faults) => {}
            }
        });
    }
}

/// Resolves when the proxy is dropped.
async fn closed(mut faults: watch::Receiver<LinkFaults>) {
    while faults.changed().await.is_ok() {}
}

/// Resolves once the link is refused (or the proxy dropped).
async fn refused(mut faults: watch::Receiver<LinkFaults>) {
    loop {
        if faults.borrow_and_update().refuse {
            return;
        }
        if faults.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction: a reader stamps chunks as they arrive, a writer forwards each when its
/// direction's flow allows.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<LinkFaults>,
    flow: fn(&LinkFaults) -> Flow,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut faults = faults;
        while let Some((read_at, chunk)) = rx.recv().await {
            loop {
                let now = *faults.borrow_and_update();
                match flow(&now) {
                    Flow::Pass => break,
                    Flow::Delay(d) => {
                        tokio::time::sleep_until(read_at + d).await;
                        break;
                    }
                    Flow::Hold => {
                        if faults.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer may still hold chunks when the reader ends: let it finish them.
    let (_, ()) = tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> std::io::Result<SocketAddr> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        (&buf == b"ping").then(|| t.elapsed())
    }

    #[tokio::test]
    async fn the_proxy_passes_delays_holds_and_refuses() -> std::io::Result<()> {
        let echo = echo_server().await?;
        let p = LinkProxy::start(echo).await?;
        let mut s = TcpStream::connect(p.addr).await?;
        assert!(round_trip(&mut s, Duration::from_secs(5)).await.is_some());

        p.set(LinkFaults {
            forward: Flow::Delay(Duration::from_millis(150)),
            ..LinkFaults::HEALTHY
        });
        let rt = round_trip(&mut s, Duration::from_secs(5)).await;
        assert!(
            rt.is_some_and(|d| d >= Duration::from_millis(150)),
            "{rt:?}"
        );

        // Held: nothing comes back; released: what waited arrives.
        p.set(LinkFaults {
            backward: Flow::Hold,
            ..LinkFaults::HEALTHY
        });
        assert!(
            round_trip(&mut s, Duration::from_millis(300))
                .await
                .is_none()
        );
        p.set(LinkFaults::HEALTHY);
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"ping");

        // Refused: the open connection closes and a new one is dropped.
        p.set(LinkFaults {
            refuse: true,
            ..LinkFaults::HEALTHY
        });
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await?;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let mut again = TcpStream::connect(p.addr).await?;
        assert!(
            round_trip(&mut again, Duration::from_millis(300))
                .await
                .is_none()
        );
        p.set(LinkFaults::HEALTHY);
        let mut healed = TcpStream::connect(p.addr).await?;
        assert!(
            round_trip(&mut healed, Duration::from_secs(5))
                .await
                .is_some()
        );
        Ok(())
    }
}
