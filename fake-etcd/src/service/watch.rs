//! `etcdserverpb.Watch`: one task per stream reads requests; responses come
//! from that task (created, canceled, progress) and from the watch hub
//! (events), through the stream's bounded outbox.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use etcd_proto::etcdserverpb::{
    watch_request::RequestUnion, watch_server::Watch, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::core::Shared;
use crate::watch::{Context, StreamId, STREAM_BUFFER};

/// The Watch service of one member.
#[derive(Debug, Clone)]
pub(crate) struct WatchService {
    shared: Arc<Shared>,
}

impl WatchService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Responses;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (outbox, responses) = mpsc::channel(STREAM_BUFFER);
        let now = self.shared.clock.now();
        let (stream, lagging) = self.shared.lock().watchers.open_stream(outbox.clone(), now);
        // Its progress deadline may be the soonest timer now.
        self.shared.expiry_wakeup.notify_one();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(serve_requests(shared, stream, request.into_inner(), outbox));
        let stall = WatchStream::new(self.shared.faults.watches_stalled.subscribe());
        Ok(Response::new(Responses {
            responses,
            lagging,
            shared: Arc::clone(&self.shared),
            stall,
            stalled: false,
        }))
    }
}

/// Reads a stream's requests until the client goes away.
async fn serve_requests(
    shared: Arc<Shared>,
    stream: StreamId,
    mut requests: Streaming<WatchRequest>,
    outbox: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    let _close = CloseOnDrop {
        shared: Arc::clone(&shared),
        stream,
    };
    let mut end = shared.faults.end_watches.subscribe();
    loop {
        let request = tokio::select! {
            request = requests.next() => match request {
                Some(Ok(request)) => request,
                // The client's side failed (a message over the limit, say):
                // the stream ends with that error, as from etcd.
                Some(Err(status)) => {
                    let _ = outbox.send(Err(status)).await;
                    return;
                }
                None => break,
            },
            Ok(status) = end.recv() => {
                // An injected end: the stream fails with this status.
                let _ = outbox.send(Err(status)).await;
                return;
            }
        };
        let Some(request) = request.request_union else {
            continue;
        };
        // Room for the answer first, then everything under one lock: the
        // answer is queued in order with the events writes queue, and a new
        // watcher's `created` precedes its first event.
        let Ok(permit) = outbox.reserve().await else {
            return;
        };
        let mut core = shared.lock();
        let core = &mut *core;
        let ctx = Context {
            store: &core.store,
            raft_term: core.raft_term,
        };
        match request {
            RequestUnion::CreateRequest(create) => {
                let (response, started) = core.watchers.create(stream, create, ctx);
                permit.send(Ok(response));
                if let Some(id) = started {
                    core.watchers.created(stream, id, ctx);
                }
            }
            RequestUnion::CancelRequest(cancel) => {
                if let Some(response) = core.watchers.cancel(stream, cancel.watch_id, ctx) {
                    permit.send(Ok(response));
                }
            }
            RequestUnion::ProgressRequest(_) => {
                if let Some(response) = core.watchers.progress(stream, ctx) {
                    permit.send(Ok(response));
                }
            }
        }
    }
    // A client that closes its sending side still gets events (as from
    // etcd) until it goes away.
    outbox.closed().await;
}

/// Frees a stream's watchers when its request task ends, however it ends.
struct CloseOnDrop {
    shared: Arc<Shared>,
    stream: StreamId,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.shared.lock().watchers.close_stream(self.stream);
    }
}

/// A stream's responses. Each response taken makes room in the outbox, so
/// if the stream has watchers waiting for room, the syncer is woken.
pub(crate) struct Responses {
    responses: mpsc::Receiver<Result<WatchResponse, Status>>,
    lagging: Arc<AtomicBool>,
    shared: Arc<Shared>,
    /// The injected stall switch: nothing is delivered while it is on.
    stall: WatchStream<bool>,
    stalled: bool,
}

impl std::fmt::Debug for Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses").finish_non_exhaustive()
    }
}

impl Stream for Responses {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        while let Poll::Ready(Some(stalled)) = Pin::new(&mut self.stall).poll_next(cx) {
            self.stalled = stalled;
        }
        if self.stalled {
            return Poll::Pending;
        }
        let next = self.responses.poll_recv(cx);
        if matches!(next, Poll::Ready(Some(_))) && self.lagging.swap(false, Ordering::AcqRel) {
            self.shared.watch_sync.notify_one();
        }
        next
    }
}
