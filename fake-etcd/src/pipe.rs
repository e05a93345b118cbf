//! In-process connections: the counterpart of a TCP listener with no socket
//! under it. A client's connector asks [`InProcessListener::connect`] for a
//! pipe; the server incarnation now serving takes the other end from the
//! stream [`InProcessListener::listen`] gave it.

use std::io;
use std::sync::{Mutex, Weak};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// How big an in-process pipe's buffer is, each way: a writer waits when it
/// is full, as on a socket.
const PIPE_BUFFER: usize = 256 * 1024;

/// The in-process connections an incarnation accepts.
pub(crate) type InProcessIncoming = UnboundedReceiverStream<DuplexStream>;

/// The in-process counterpart of the TCP listener: the incarnation now
/// serving takes the server ends of in-memory pipes from it. Between
/// incarnations (during a restart) a connection is refused, as a closed
/// port refuses one.
#[derive(Debug, Default)]
pub(crate) struct InProcessListener {
    serving: Mutex<Option<mpsc::UnboundedSender<DuplexStream>>>,
}

impl InProcessListener {
    /// Starts taking connections for a new incarnation, at once (before its
    /// task runs: a client may connect as soon as `start` returns). The
    /// previous incarnation's stream ends when it drops it.
    pub(crate) fn listen(&self) -> InProcessIncoming {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        UnboundedReceiverStream::new(receiver)
    }

    /// Opens a connection: the client's end of a fresh pipe.
    pub(crate) fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        match serving.as_ref().map(|incarnation| incarnation.send(server)) {
            Some(Ok(())) => Ok(client),
            _ => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "fake-etcd is not serving",
            )),
        }
    }
}

/// A tonic channel whose connections are pipes to `listener`: what
/// [`FakeEtcd::in_process_channel`](crate::FakeEtcd::in_process_channel)
/// hands a test, and what the Lock and Election services call the member's
/// own KV, Lease and Watch services through. A connection the member drops
/// is reopened on the next call, as a socket would be; once the member is
/// gone, connecting is refused.
pub(crate) fn channel(listener: Weak<InProcessListener>) -> tonic::transport::Channel {
    let connector = tower::service_fn(move |_: http::Uri| {
        let pipe = match listener.upgrade() {
            Some(listener) => listener.connect(),
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "fake-etcd was dropped",
            )),
        };
        std::future::ready(pipe.map(hyper_util::rt::TokioIo::new))
    });
    tonic::transport::Endpoint::from_static("http://fake-etcd.in-process")
        .connect_with_connector_lazy(connector)
}
