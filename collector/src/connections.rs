//! The one accept loop of the gRPC listener, plain TCP and TLS alike: at most
//! `limits.max_connections` open (more are closed at once), handshakes off the loop, a
//! connection that sends nothing in time closed, and accept failures for lack of file
//! descriptors waited out with backoff instead of spun on (docs/limits.md).
//!
//! Must never: spin when accept() fails, log once per failed accept, or hold a connection
//! that has gone silent.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use crate::metrics::IngestMetrics;
use crate::metrics::ingest::ConnRefused;

/// First wait after accept() fails for lack of file descriptors; doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the loop enforces (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// A connection that has sent no byte by then is closed (`limits.hello_timeout`).
    pub first_byte: Duration,
    /// A connection that has sent nothing for this long is closed (`limits.idle_stream_timeout`
    /// + `limits.hello_timeout`; live clients answer the collector's HTTP/2 pings).
    pub idle: Duration,
}

/// What a handshake (none, or TLS) makes of an accepted connection; `None`: it failed, and was
/// counted and logged by the handshake itself.
pub type Handshake<S> = Pin<Box<dyn Future<Output = Option<S>> + Send>>;

/// Connections accepted on `listener` and passed through `handshake`, each holding its slot of
/// `max_connections` until it closes. Ends when the returned stream is dropped.
pub fn incoming<S, H>(
    listener: TcpListener,
    limits: ConnLimits,
    metrics: IngestMetrics,
    handshake: H,
) -> tokio_stream::wrappers::ReceiverStream<Result<Guarded<S>, io::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(TcpStream, SocketAddr) -> Handshake<S> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut exhausted = Exhaustion::default();
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => match classify(&e) {
                    AcceptError::OneConnection => {
                        tracing::debug!("accept failed for one connection: {e}");
                        continue;
                    }
                    AcceptError::Exhausted => {
                        metrics.connection_refused(ConnRefused::FdLimit);
                        let wait = exhausted.failed(&e, limits.max_connections);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                },
            };
            exhausted.recovered();
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.connection_refused(ConnRefused::MaxConnections);
                tracing::debug!(%peer, "limits.max_connections reached; closing");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let slot = Slot::new(permit, metrics.clone());
            let opened = Instant::now();
            let pending = handshake(tcp, peer);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(io) = pending.await {
                    let _ = tx.send(Ok(Guarded::new(io, slot, opened, limits))).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

enum AcceptError {
    /// The connection failed before it was accepted (reset, aborted): take the next.
    OneConnection,
    /// The process or system is out of something (file descriptors, memory): wait.
    Exhausted,
}

fn classify(e: &io::Error) -> AcceptError {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock => {
            AcceptError::OneConnection
        }
        _ => AcceptError::Exhausted,
    }
}

/// One episode of failing accepts: logged when it starts and when it ends, backed off between.
#[derive(Debug, Default)]
struct Exhaustion {
    failures: u64,
    since: Option<Instant>,
    wait: Duration,
}

impl Exhaustion {
    /// Counts a failed accept; returns how long to wait before the next.
    fn failed(&mut self, e: &io::Error, max_connections: usize) -> Duration {
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            self.wait = BACKOFF_MIN;
            let fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
            if fds {
                tracing::error!(
                    "cannot accept connections: out of file descriptors ({e}); new agents and \
                     CLIs wait until some close. Raise the limit (LimitNOFILE= in the systemd \
                     unit, ulimit -n) above limits.max_connections ({max_connections}) plus \
                     ~100, or lower limits.max_connections. Retrying with backoff; counted in \
                     gpufleet_connections_refused_total{{reason=\"fd_limit\"}}"
                );
            } else {
                tracing::error!(
                    "cannot accept connections: {e}; retrying with backoff, counted in \
                     gpufleet_connections_refused_total{{reason=\"fd_limit\"}}"
                );
            }
        } else {
            self.wait = (self.wait * 2).min(BACKOFF_MAX);
        }
        self.wait
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                failures = self.failures,
                "accepting connections again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            self.failures = 0;
        }
    }
}

/// A connection's place among `max_connections`, and in `gpufleet_connections_open`.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: IngestMetrics,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: IngestMetrics) -> Slot {
        metrics.connections_open.inc();
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

/// An accepted connection that fails its reads (so the server closes it) once its peer has
/// been silent too long: no byte within `first_byte` of being accepted, or none for `idle`.
pub struct Guarded<S> {
    io: S,
    slot: Slot,
    limits: ConnLimits,
    opened: Instant,
    last_read: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(io: S, slot: Slot, opened: Instant, limits: ConnLimits) -> Guarded<S> {
        Guarded {
            io,
            slot,
            limits,
            opened,
            last_read: None,
            deadline: Box::pin(tokio::time::sleep_until(opened + limits.first_byte)),
        }
    }

    /// When the peer's silence ends the connection.
    fn due(&self) -> Instant {
        match self.last_read {
            None => self.opened + self.limits.first_byte,
            Some(at) => at + self.limits.idle,
        }
    }
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> S::ConnectInfo {
        self.io.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    // The timer is moved only when it fires: no reset per read.
                    this.last_read = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = this.due();
                if due > Instant::now() {
                    this.deadline.as_mut().reset(due);
                    continue;
                }
                this.slot.metrics.connection_refused(ConnRefused::Idle);
                let silent = match this.last_read {
                    None => this.limits.first_byte,
                    Some(_) => this.limits.idle,
                };
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the peer sent nothing for {} s",
                        silent.as_secs_f64().round()
                    ),
                )));
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The plain-TCP handshake: none.
pub fn plain(tcp: TcpStream, _peer: SocketAddr) -> Handshake<TcpStream> {
    Box::pin(std::future::ready(Some(tcp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    fn limits(max_connections: usize) -> ConnLimits {
        ConnLimits {
            max_connections,
            first_byte: Duration::from_millis(200),
            idle: Duration::from_millis(400),
        }
    }

    #[test]
    fn backoff_doubles_to_a_second_and_an_episode_ends_on_success() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let mut x = Exhaustion::default();
        let waits: Vec<u64> = (0..6)
            .map(|_| x.failed(&emfile, 10).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(x.failures, 6);
        x.recovered();
        assert_eq!((x.failures, x.since), (0, None));
        assert_eq!(
            x.failed(&emfile, 10),
            BACKOFF_MIN,
            "a new episode starts over"
        );
        assert!(matches!(classify(&emfile), AcceptError::Exhausted));
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(matches!(classify(&reset), AcceptError::OneConnection));
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_counted_and_extra_ones_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = IngestMetrics::default();
        let mut conns = incoming(listener, limits(2), metrics.clone(), plain);

        // Accepted one at a time, so each accepted side is known.
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut silent_side = conns.next().await.unwrap().unwrap();
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut talker_side = conns.next().await.unwrap().unwrap();
        assert_eq!(metrics.connections_open.get(), 2);

        // A third is closed at once: its read ends without data.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(extra.read(&mut byte).await.unwrap_or(0), 0);
        assert_eq!(metrics.connections_refused(ConnRefused::MaxConnections), 1);

        talker.write_all(b"x").await.unwrap();
        assert_eq!(talker_side.read(&mut byte).await.unwrap(), 1);
        // The silent one fails after first_byte.
        let e = silent_side.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(metrics.connections_refused(ConnRefused::Idle), 1);
        drop(silent_side);
        assert_eq!(metrics.connections_open.get(), 1);
        // The talker, having spoken, is kept until idle passes without a word.
        let e = talker_side.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("sent nothing"), "{e}");
        assert_eq!(metrics.connections_refused(ConnRefused::Idle), 2);
        drop(talker_side);
        assert_eq!(metrics.connections_open.get(), 0);
        drop((silent, talker));
    }
}
