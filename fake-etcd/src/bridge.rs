//! A TCP bridge: a proxy in front of any etcd (the fake or a real one) that
//! can break, hold or swallow its connections, so connection-fault tests run
//! against a real etcd too.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the bridge does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Hold them: nothing is read, so nothing moves (a partition).
    Pause,
    /// Read and drop them (a black hole: packets vanish, sockets stay up).
    Blackhole,
}

/// A TCP proxy from a loopback port to `upstream`, with switches.
///
/// # Example
///
/// ```
/// use fake_etcd::{Bridge, FakeEtcd};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let etcd = FakeEtcd::start().await?; // or any etcd's address
/// let bridge = Bridge::start(etcd.addr()).await?;
/// let mut client = etcd_client::Client::connect([bridge.endpoint()], None).await?;
/// client.put("k", "v", None).await?;
///
/// bridge.drop_connections(); // the client's connection breaks
/// // A call may meet the broken connection; the next one reconnects.
/// if client.put("k", "w", None).await.is_err() {
///     client.put("k", "w", None).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Bridge {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Cancelled to break the connections accepted so far.
    connections: Arc<Mutex<CancellationToken>>,
    shutdown: CancellationToken,
}

impl Bridge {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Bridge> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let mode = watch::Sender::new(Mode::Forward);
        let connections = Arc::new(Mutex::new(shutdown.child_token()));
        tokio::spawn(accept(
            listener,
            upstream,
            mode.subscribe(),
            Arc::clone(&connections),
            shutdown.clone(),
        ));
        Ok(Bridge {
            addr,
            mode,
            connections,
            shutdown,
        })
    }

    /// The bridge's endpoint, for a client: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bridge's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Breaks every connection through the bridge now; new ones are
    /// accepted.
    pub fn drop_connections(&self) {
        let mut current = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *current, self.shutdown.child_token());
        old.cancel();
    }

    /// Holds every byte, both ways, until [`Bridge::resume`]: connections
    /// stay open and nothing arrives (a partition).
    pub fn pause(&self) {
        self.mode.send_replace(Mode::Pause);
    }

    /// Drops every byte, both ways, until [`Bridge::resume`]: connections
    /// stay open and what is sent is lost.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    connections: Arc<Mutex<CancellationToken>>,
    shutdown: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(err) => {
                    tracing::warn!(%err, "bridge: accept failed");
                    continue;
                }
            },
        };
        let token = connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mode = mode.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let connection = token.child_token();
            // When either direction ends, the whole connection goes.
            let _guard = connection.clone().drop_guard();
            tokio::select! {
                () = pump(client_read, server_write, mode.clone(), connection.clone()) => {}
                () = pump(server_read, client_write, mode, connection.clone()) => {}
            }
        });
    }
}

/// Moves bytes one way, obeying the mode, until either side closes or the
/// connection is broken.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    broken: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Pause {
            tokio::select! {
                () = broken.cancelled() => return,
                changed = mode.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let read = tokio::select! {
            () = broken.cancelled() => return,
            changed = mode.changed() => {
                if changed.is_err() { return }
                continue;
            }
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *mode.borrow() == Mode::Blackhole {
            continue;
        }
        tokio::select! {
            () = broken.cancelled() => return,
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
        }
    }
}
