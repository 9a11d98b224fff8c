//! [`Transport`]: a node's endpoint. It accepts authenticated connections, dials peers lazily
//! (two connections per peer, one per [`Lane`], so control traffic never waits behind tuples),
//! reconnects with backoff, matches responses to requests, and hands what arrives to a
//! [`Handler`].
//!
//! Each connection has a reader task and a writer task, so a peer that reads slowly blocks only
//! our writes to it, never our reads. The writer coalesces queued frames into one flush. The
//! outgoing queue of a peer is bounded: a slow peer backpressures its senders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ids::NodeId;
use crate::transport::error::TransportError;
use crate::transport::frame::{self, DEFAULT_MAX_FRAME_BYTES, FrameError, Message, Service};
use crate::transport::handshake::{
    self, ClientHandshake, HandshakeError, PeerRole, ServerHandshake,
};
use crate::transport::secret::ClusterSecret;

/// Which of the two connections to a peer a message takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Raft RPCs, heartbeats and admin commands: small, latency-critical.
    Control,
    /// Tuple batches, watermarks, credits and acks.
    Data,
}

/// How a transport behaves.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Who we are: a node (with the address peers reach it at) or a client.
    pub role: PeerRole,
    /// The node id we answer handshakes with (clients do not accept connections).
    pub node: NodeId,
    /// The cluster secret; `None` only when the cluster runs insecure.
    pub secret: Option<ClusterSecret>,
    /// The largest frame accepted once authenticated.
    pub max_frame_bytes: usize,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// Messages queued per peer and lane before senders wait.
    pub queue_messages: usize,
    /// The first delay before redialing a peer; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest delay between dials.
    pub backoff_max: Duration,
    /// The most inbound connections at once.
    pub max_connections: usize,
    /// Where to dial a peer instead of its address (a port mapping, or a fault-injecting
    /// proxy in the chaos tests): peer address -> address to connect to. The peer is still
    /// known, and authenticated, by its own address and id.
    pub routes: std::collections::BTreeMap<String, String>,
}

impl TransportConfig {
    /// Defaults for `role`, answering as `node`.
    pub fn new(role: PeerRole, node: NodeId, secret: Option<ClusterSecret>) -> Self {
        TransportConfig {
            role,
            node,
            secret,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(5),
            queue_messages: 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_connections: 1024,
            routes: std::collections::BTreeMap::new(),
        }
    }
}

/// What a node does with what arrives. Called on the transport's tasks: it must not block.
pub trait Handler: Send + Sync + 'static {
    /// Answers a request (the future runs on its own task, so a slow one delays nothing else).
    fn request(
        &self,
        from: &PeerRole,
        service: Service,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
    /// Takes a message that needs no answer.
    fn oneway(&self, from: &PeerRole, service: Service, body: Vec<u8>);
    /// An authenticated inbound connection from `from` closed (not by this transport's
    /// shutdown). Nothing by default; [`Transport::refuses`] tells whether its process is gone.
    fn closed(&self, _from: &PeerRole) {}
}

/// Counters of a transport, for metrics and tests.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Inbound connections that completed their handshake.
    pub accepted: AtomicU64,
    /// Inbound or outbound handshakes that failed (wrong secret, not Tempest, timeout).
    pub handshakes_failed: AtomicU64,
    /// Connections closed because a frame was over the limit.
    pub frames_oversized: AtomicU64,
    /// Connections closed because a frame did not decode.
    pub frames_corrupt: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Outbound connections established (the first and every reconnection).
    pub dials: AtomicU64,
}

/// How a request ended, as its waiter learns it.
enum Reply {
    /// The peer answered.
    Answer(Result<Vec<u8>, String>),
    /// The peer could not be reached; the request was never sent.
    Unreachable(String),
    /// The handshake failed: the peer is there but one side refused the other.
    Refused(String),
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Reply>>>;

/// The outbound side of one (peer, lane).
struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    pending: Arc<Pending>,
    connected: AtomicBool,
    /// The last dial's error, while not connected: (refused by a handshake, why).
    last_error: Mutex<Option<(bool, String)>>,
    /// Stops this peer's dial loop and connection ([`Transport::forget`], or shutdown).
    cancel: CancellationToken,
}

struct Inner {
    config: TransportConfig,
    handler: Arc<dyn Handler>,
    peers: DashMap<(String, Lane), Arc<Peer>>,
    stats: Arc<TransportStats>,
    cancel: CancellationToken,
    next_id: AtomicU64,
    local_addr: Option<SocketAddr>,
}

/// A node's (or a client's) endpoint. Cheap to clone; [`Transport::shutdown`] stops every task
/// it started.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds `addr` and starts accepting (on the current tokio runtime).
    pub async fn bind(
        addr: &str,
        config: TransportConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self::serve(listener, config, handler))
    }

    /// Starts accepting on `listener`.
    pub fn serve(
        listener: TcpListener,
        config: TransportConfig,
        handler: Arc<dyn Handler>,
    ) -> Self {
        let local_addr = listener.local_addr().ok();
        let t = Self::new(config, handler, local_addr);
        let inner = Arc::clone(&t.inner);
        let span = tracing::info_span!("transport", node = %inner.config.node);
        tokio::spawn(accept_loop(listener, inner).instrument(span));
        t
    }

    /// A transport that only dials (a command-line client).
    pub fn client(config: TransportConfig, handler: Arc<dyn Handler>) -> Self {
        Self::new(config, handler, None)
    }

    fn new(
        config: TransportConfig,
        handler: Arc<dyn Handler>,
        local_addr: Option<SocketAddr>,
    ) -> Self {
        Transport {
            inner: Arc::new(Inner {
                config,
                handler,
                peers: DashMap::new(),
                stats: Arc::default(),
                cancel: CancellationToken::new(),
                next_id: AtomicU64::new(1),
                local_addr,
            }),
        }
    }

    /// The address we listen on, if we do.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The transport's counters.
    pub fn stats(&self) -> &TransportStats {
        &self.inner.stats
    }

    /// Whether the peer at `addr` (through its route, if it has one) refuses connections:
    /// its process is gone, or never started. Dials a few times a short while apart and
    /// answers yes at the first refusal: a process in the middle of dying may still complete
    /// a dial (its listening socket closes after some of its connections), so a dial that
    /// connects proves nothing on its own, and one that neither connects nor is refused (a
    /// lost host, a cut link) proves nothing either. Each dial that connects is closed at
    /// once, which a live peer logs as a failed handshake.
    pub async fn refuses(&self, addr: &str) -> bool {
        const DIALS: u32 = 4;
        const GAP: Duration = Duration::from_millis(15);
        const DIAL_TIMEOUT: Duration = Duration::from_millis(100);
        let to = self
            .inner
            .config
            .routes
            .get(addr)
            .map_or(addr, String::as_str);
        for i in 0..DIALS {
            if i > 0 {
                tokio::time::sleep(GAP).await;
            }
            if let Ok(Err(e)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(to)).await {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    return true;
                }
            }
        }
        false
    }

    /// Stops accepting, closes every connection and fails every request in flight.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.peers.clear();
    }

    fn peer(&self, addr: &str, lane: Lane) -> Result<Arc<Peer>, TransportError> {
        if self.inner.cancel.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        let key = (addr.to_owned(), lane);
        if let Some(p) = self.inner.peers.get(&key) {
            return Ok(Arc::clone(&p));
        }
        let entry = self.inner.peers.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.inner.config.queue_messages.max(1));
            let peer = Arc::new(Peer {
                addr: addr.to_owned(),
                tx,
                pending: Arc::default(),
                connected: AtomicBool::new(false),
                last_error: Mutex::new(None),
                cancel: self.inner.cancel.child_token(),
            });
            let span = tracing::debug_span!("peer", node = %self.inner.config.node, %addr, ?lane);
            tokio::spawn(
                dial_loop(Arc::clone(&self.inner), Arc::clone(&peer), rx).instrument(span),
            );
            peer
        });
        Ok(Arc::clone(&entry))
    }

    fn unreachable(peer: &Peer) -> Option<TransportError> {
        if peer.connected.load(Ordering::Acquire) {
            return None;
        }
        let (refused, why) = peer.last_error.lock().ok()?.clone()?;
        let addr = peer.addr.clone();
        Some(if refused {
            TransportError::Refused { addr, why }
        } else {
            TransportError::Unreachable { addr, why }
        })
    }

    /// Refuses a message too large for a frame here, rather than closing the connection when
    /// it is written (the envelope adds a few bytes to the body).
    fn check_size(&self, body: usize) -> Result<(), TransportError> {
        let max = self.inner.config.max_frame_bytes;
        if body.saturating_add(64) > max {
            return Err(FrameError::Oversized { len: body, max }.into());
        }
        Ok(())
    }

    /// Sends a request to the node at `addr` and waits for its answer, at most `timeout`. Fails
    /// at once when the peer is known to be down.
    pub async fn request(
        &self,
        addr: &str,
        lane: Lane,
        service: Service,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.check_size(body.len())?;
        let peer = self.peer(addr, lane)?;
        if let Some(e) = Self::unreachable(&peer) {
            return Err(e);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = peer.pending.lock() {
            p.insert(id, tx);
        }
        let sent = async {
            peer.tx
                .send(Message::Request { id, service, body })
                .await
                .map_err(|_| TransportError::Shutdown)?;
            match rx.await {
                Ok(Reply::Answer(a)) => Ok(a),
                Ok(Reply::Unreachable(why)) => Err(TransportError::Unreachable {
                    addr: addr.to_owned(),
                    why,
                }),
                Ok(Reply::Refused(why)) => Err(TransportError::Refused {
                    addr: addr.to_owned(),
                    why,
                }),
                Err(_) => Err(TransportError::Closed {
                    addr: addr.to_owned(),
                }),
            }
        };
        let outcome = match tokio::time::timeout(timeout, sent).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_owned(),
                timeout,
            }),
        };
        if outcome.is_err() {
            if let Ok(mut p) = peer.pending.lock() {
                p.remove(&id);
            }
        }
        outcome?.map_err(|message| TransportError::Remote {
            addr: addr.to_owned(),
            message,
        })
    }

    /// Queues a message that needs no answer for the node at `addr`, waiting while its queue
    /// is full, whether or not the node is reachable now: the message waits for the next
    /// connection (it is lost only if [`Transport::forget`] drops the peer, or on shutdown).
    pub async fn send_queued(
        &self,
        addr: &str,
        lane: Lane,
        service: Service,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.check_size(body.len())?;
        let peer = self.peer(addr, lane)?;
        peer.tx
            .send(Message::Oneway { service, body })
            .await
            .map_err(|_| TransportError::Closed {
                addr: addr.to_owned(),
            })
    }

    /// Drops the peer at `addr` on `lane`: its queue and its dial loop (a node that left the
    /// cluster). A later message to it starts afresh.
    pub fn forget(&self, addr: &str, lane: Lane) {
        if let Some((_, peer)) = self.inner.peers.remove(&(addr.to_owned(), lane)) {
            peer.cancel.cancel();
        }
    }

    /// Sends a message that needs no answer, waiting while the peer's queue is full. Fails at
    /// once when the peer is known to be down (the message is dropped: callers that need it
    /// delivered track it, as ack trees do).
    pub async fn send(
        &self,
        addr: &str,
        lane: Lane,
        service: Service,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        if let Some(e) = Self::unreachable(&*self.peer(addr, lane)?) {
            return Err(e);
        }
        self.send_queued(addr, lane, service, body).await
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn nonce() -> handshake::Nonce {
    rand::random()
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let permits = Arc::new(Semaphore::new(inner.config.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%remote, "too many connections: refused");
            continue;
        };
        let inner = Arc::clone(&inner);
        tokio::spawn(
            async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let hs =
                    ServerHandshake::new(inner.config.secret.clone(), inner.config.node, nonce());
                let max = inner.config.max_frame_bytes;
                let result = tokio::time::timeout(
                    inner.config.handshake_timeout,
                    handshake::server(stream, hs, max),
                )
                .await
                .unwrap_or(Err(HandshakeError::Timeout));
                let (framed, role) = match result {
                    Ok(ok) => ok,
                    Err(e) => {
                        inner
                            .stats
                            .handshakes_failed
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%remote, error = %e, "handshake refused");
                        return;
                    }
                };
                inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, ?role, "peer connected");
                let (_, mut none) = mpsc::channel(1);
                let end = run_connection(
                    &inner,
                    framed,
                    role.clone(),
                    &mut none,
                    Arc::default(),
                    &inner.cancel,
                )
                .await;
                if let Err(e) = end {
                    tracing::warn!(%remote, error = %e, "connection closed");
                }
                if !inner.cancel.is_cancelled() {
                    inner.handler.closed(&role);
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}

async fn dial_loop(inner: Arc<Inner>, peer: Arc<Peer>, mut rx: mpsc::Receiver<Message>) {
    let mut backoff = inner.config.backoff_min;
    loop {
        if peer.cancel.is_cancelled() {
            return;
        }
        let dial = async {
            let to = inner.config.routes.get(&peer.addr).unwrap_or(&peer.addr);
            let stream = TcpStream::connect(to)
                .await
                .map_err(|e| HandshakeError::Frame(FrameError::Io(e)))?;
            let _ = stream.set_nodelay(true);
            let hs = ClientHandshake::new(
                inner.config.secret.clone(),
                inner.config.role.clone(),
                nonce(),
            );
            handshake::client(stream, hs, inner.config.max_frame_bytes).await
        };
        let result = tokio::select! {
            _ = peer.cancel.cancelled() => return,
            r = tokio::time::timeout(inner.config.handshake_timeout, dial) => r.unwrap_or(Err(HandshakeError::Timeout)),
        };
        match result {
            Ok((framed, node)) => {
                inner.stats.dials.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%node, "connected");
                if let Ok(mut e) = peer.last_error.lock() {
                    *e = None;
                }
                peer.connected.store(true, Ordering::Release);
                backoff = inner.config.backoff_min;
                let role = PeerRole::Node {
                    id: node,
                    addr: peer.addr.clone(),
                };
                // The writer side runs here so the queue outlives the connection.
                let end = run_connection(
                    &inner,
                    framed,
                    role,
                    &mut rx,
                    Arc::clone(&peer.pending),
                    &peer.cancel,
                )
                .await;
                peer.connected.store(false, Ordering::Release);
                if let Err(e) = &end {
                    tracing::info!(error = %e, "connection lost");
                }
                if let Ok(mut e) = peer.last_error.lock() {
                    *e = Some((
                        false,
                        end.err()
                            .map_or_else(|| "connection closed".into(), |e| e.to_string()),
                    ));
                }
            }
            Err(e) => {
                let refused = matches!(
                    e,
                    HandshakeError::BadProof
                        | HandshakeError::Refused(_)
                        | HandshakeError::Version { .. }
                        | HandshakeError::NotTempest
                );
                if refused {
                    inner
                        .stats
                        .handshakes_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "peer refused");
                } else {
                    tracing::debug!(error = %e, "dial failed");
                }
                let why = e.to_string();
                // Requests waiting for this peer fail now rather than at their timeout;
                // one-way messages stay queued for the next connection.
                let waiting: Vec<_> = peer
                    .pending
                    .lock()
                    .map(|mut p| p.drain().collect())
                    .unwrap_or_default();
                for (_, w) in waiting {
                    let _ = w.send(if refused {
                        Reply::Refused(why.clone())
                    } else {
                        Reply::Unreachable(why.clone())
                    });
                }
                if let Ok(mut last) = peer.last_error.lock() {
                    *last = Some((refused, why));
                }
            }
        }
        // Jitter keeps nodes that lost the same peer from redialing in lockstep.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(inner.config.backoff_max);
        tokio::select! {
            _ = peer.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs one authenticated connection until it closes: reads on a task of its own, writes here
/// what comes from `rx` (our requests and messages; nothing on inbound connections) and the
/// answers to the peer's requests. Every request of ours still waiting when it ends fails.
async fn run_connection(
    inner: &Arc<Inner>,
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    role: PeerRole,
    rx: &mut mpsc::Receiver<Message>,
    pending: Arc<Pending>,
    cancel: &CancellationToken,
) -> Result<(), FrameError> {
    let (sink, stream) = framed.split();
    let (reply_tx, mut reply_rx) = mpsc::channel(inner.config.queue_messages.max(1));
    let stop = cancel.child_token();
    let reader = tokio::spawn(
        read_loop(
            Arc::clone(inner),
            stream,
            role,
            reply_tx,
            Arc::clone(&pending),
            stop.clone(),
        )
        .instrument(tracing::Span::current()),
    );
    let written = write_loop(inner, sink, rx, &mut reply_rx, &pending, &stop).await;
    stop.cancel();
    let read = reader.await.unwrap_or(Ok(()));
    if let Ok(mut p) = pending.lock() {
        // Dropping the senders fails the waiting requests with `Closed`.
        p.clear();
    }
    written.and(read)
}

async fn write_loop(
    inner: &Inner,
    mut sink: SplitSink<Framed<TcpStream, LengthDelimitedCodec>, bytes::Bytes>,
    rx: &mut mpsc::Receiver<Message>,
    replies: &mut mpsc::Receiver<Message>,
    pending: &Pending,
    stop: &CancellationToken,
) -> Result<(), FrameError> {
    // A request whose caller gave up (it timed out, or its connection failed while it was
    // queued) is not sent: nobody waits for its answer, and it may be stale by now.
    let wanted = |m: &Message| match m {
        Message::Request { id, .. } => pending.lock().is_ok_and(|p| p.contains_key(id)),
        _ => true,
    };
    loop {
        // A closed queue disables its branch: inbound connections have no queue of ours.
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(m) = replies.recv() => m,
            Some(m) = rx.recv() => m,
            else => return Ok(()),
        };
        let mut n = 0;
        if wanted(&msg) {
            sink.feed(bytes::Bytes::from(frame::encode(&msg)?)).await?;
            n += 1;
        }
        while let Ok(m) = replies.try_recv().or_else(|_| rx.try_recv()) {
            if wanted(&m) {
                sink.feed(bytes::Bytes::from(frame::encode(&m)?)).await?;
                n += 1;
            }
        }
        sink.flush().await?;
        inner.stats.messages_out.fetch_add(n, Ordering::Relaxed);
    }
}

async fn read_loop(
    inner: Arc<Inner>,
    mut stream: SplitStream<Framed<TcpStream, LengthDelimitedCodec>>,
    role: PeerRole,
    replies: mpsc::Sender<Message>,
    pending: Arc<Pending>,
    stop: CancellationToken,
) -> Result<(), FrameError> {
    let max = inner.config.max_frame_bytes;
    let result = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            n = stream.next() => n,
        };
        let bytes = match next {
            None => break Ok(()),
            Some(Err(e)) => {
                let e = frame::codec_error(e, max);
                match &e {
                    FrameError::Oversized { .. } => {
                        inner.stats.frames_oversized.fetch_add(1, Ordering::Relaxed);
                    }
                    // A frame cut short by the end of the stream.
                    FrameError::Io(io) if io.kind() == std::io::ErrorKind::Other => {
                        inner.stats.frames_corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                break Err(e);
            }
            Some(Ok(b)) => b,
        };
        let msg = match frame::decode::<Message>(&bytes) {
            Ok(m) => m,
            Err(e) => {
                inner.stats.frames_corrupt.fetch_add(1, Ordering::Relaxed);
                break Err(e);
            }
        };
        inner.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        match msg {
            Message::Request { id, service, body } => {
                let answer = inner.handler.request(&role, service, body);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = answer.await.map(serde_bytes::ByteBuf::from);
                    let _ = replies.send(Message::Response { id, outcome }).await;
                });
            }
            Message::Response { id, outcome } => {
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(w) = waiter {
                    let _ = w.send(Reply::Answer(outcome.map(serde_bytes::ByteBuf::into_vec)));
                }
            }
            Message::Oneway { service, body } => inner.handler.oneway(&role, service, body),
        }
    };
    stop.cancel();
    result
}
