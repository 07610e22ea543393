//! A TCP fault proxy: it listens on a free loopback port, forwards every
//! connection to a target, and can be told at run time to break the path
//! the way a network or a failing peer does:
//!
//! - [`Proxy::reset`]: every open connection is closed at once, both sides,
//!   with a TCP reset (a peer or a middlebox that dropped its state);
//! - [`Proxy::stall`]: for a while no byte moves either way; connections
//!   stay open, new ones are accepted but not connected to the target;
//!   afterwards everything held is delivered (a frozen peer, a congested
//!   link);
//! - [`Proxy::blackhole`]: for a while every byte is read and dropped, on
//!   open and new connections alike (a partition: requests vanish without
//!   an answer or an error); afterwards the connections that lost bytes are
//!   closed, since a stream with a hole in it cannot go on, and new
//!   connections pass again.
//!
//! A connection ends, both sides, as soon as either side closes it: the
//! protocols proxied here (PostgreSQL, Kafka) never half-close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
    Blackhole,
}

/// What the proxy and every connection task share.
struct Shared {
    target: String,
    mode: watch::Sender<Mode>,
    /// Bumped by each reset; every connection watches it.
    resets: watch::Sender<u64>,
    /// Connections accepted and not yet closed.
    open: AtomicUsize,
}

/// A running proxy; it stops accepting when dropped.
pub struct Proxy {
    /// Where it listens: 127.0.0.1 and a free port.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`
    /// (`host:port`), connecting to it for each connection accepted: the
    /// target need not listen yet.
    pub async fn start(target: impl Into<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for a proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target: target.into(),
            mode: watch::Sender::new(Mode::Forward),
            resets: watch::Sender::new(0),
            open: AtomicUsize::new(0),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    match listener.accept().await {
                        Ok((client, _)) => {
                            tokio::spawn(connection(client, shared.clone()));
                        }
                        // Out of descriptors, say: try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// The target it forwards to.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Connections open through it now.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Resets every open connection, both sides at once; new connections
    /// pass as before.
    pub fn reset(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Moves no byte for `duration`, then delivers what it held.
    pub async fn stall(&self, duration: Duration) {
        self.hold(Mode::Stall, duration).await;
    }

    /// Drops every byte for `duration`, then closes the connections that
    /// lost some and forwards again.
    pub async fn blackhole(&self, duration: Duration) {
        self.hold(Mode::Blackhole, duration).await;
    }

    async fn hold(&self, mode: Mode, duration: Duration) {
        self.shared.mode.send_replace(mode);
        tokio::time::sleep(duration).await;
        self.shared.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

/// Counts a connection open until dropped.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One client connection, from its accept to its close.
async fn connection(mut client: TcpStream, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(shared.clone());
    let mut resets = shared.resets.subscribe();
    let mut upstream = None;
    let reset = tokio::select! {
        _ = resets.changed() => true,
        () = forward(&mut client, &mut upstream, &shared) => false,
    };
    if reset {
        // A zero linger turns the close below into a reset (RST).
        let _ = client.set_zero_linger();
        if let Some(upstream) = &upstream {
            let _ = upstream.set_zero_linger();
        }
    }
    // Dropping both streams closes both sides.
}

/// Connects `client` to the target (once no stall holds it) and copies
/// both ways until either side closes or a blackhole cut the stream.
async fn forward(client: &mut TcpStream, upstream: &mut Option<TcpStream>, shared: &Shared) {
    let mut mode = shared.mode.subscribe();
    let now = match mode.wait_for(|m| *m != Mode::Stall).await {
        Ok(now) => *now,
        Err(_) => return,
    };
    if now == Mode::Blackhole {
        // Swallow what the client sends until the blackhole ends, then
        // close: it never reached the target.
        let mut sink = [0u8; 4096];
        tokio::select! {
            _ = mode.wait_for(|m| *m != Mode::Blackhole) => {}
            () = async { while client.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
        }
        return;
    }
    // A refused connection closes the client's too.
    let Ok(server) = TcpStream::connect(&shared.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let server = upstream.insert(server);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    tokio::select! {
        () = pump(&mut client_read, &mut server_write, mode.clone()) => {}
        () = pump(&mut server_read, &mut client_write, mode) => {}
    }
}

/// Copies `from` to `to` as the mode allows: during a stall nothing is
/// read (bytes wait in the kernel's buffers, then the sender's), and a
/// chunk read just before it is held; bytes read during a blackhole are
/// dropped, and the copy ends when the blackhole does. Ends on a close or
/// an error of either side.
async fn pump(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if mode.wait_for(|m| *m != Mode::Stall).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = match mode.wait_for(|m| *m != Mode::Stall).await {
            Ok(now) => *now,
            Err(_) => return,
        };
        if now == Mode::Blackhole {
            let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Sends `text` and reads as many bytes back, within `within`.
    async fn round_trip(stream: &mut TcpStream, text: &[u8], within: Duration) -> Option<Vec<u8>> {
        stream.write_all(text).await.ok()?;
        let mut back = vec![0; text.len()];
        let read = tokio::time::timeout(within, stream.read_exact(&mut back)).await;
        matches!(read, Ok(Ok(_))).then_some(back)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn it_forwards_resets_stalls_and_drops() {
        let proxy = Proxy::start(echo().await.to_string()).await;
        let short = Duration::from_millis(300);
        let mut a = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            round_trip(&mut a, b"one", short).await.as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(proxy.connections(), 1);

        // A reset closes the open connection; a new one passes.
        proxy.reset();
        assert_eq!(round_trip(&mut a, b"two", short).await, None);
        let mut b = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            round_trip(&mut b, b"two", short).await.as_deref(),
            Some(&b"two"[..])
        );

        // A stall holds the bytes, then delivers them.
        let stall = tokio::spawn(async move {
            proxy.stall(Duration::from_millis(600)).await;
            proxy
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut b, b"three", short).await, None);
        let mut rest = [0; 5];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"three");
        let proxy = stall.await.unwrap();

        // A blackhole drops them and closes the connection once over.
        let blackhole = tokio::spawn(async move {
            proxy.blackhole(Duration::from_millis(600)).await;
            proxy
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut b, b"four", short).await, None);
        let proxy = blackhole.await.unwrap();
        let mut end = [0; 1];
        assert!(matches!(b.read(&mut end).await, Ok(0) | Err(_)));
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            round_trip(&mut c, b"five", short).await.as_deref(),
            Some(&b"five"[..])
        );
    }
}
