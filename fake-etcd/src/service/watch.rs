//! `etcdserverpb.Watch`: one task per stream reads requests; responses come
//! from that task (created, canceled, progress) and from the watch hub
//! (events, progress ticks), through the stream's bounded outbox, whose
//! items the stream's sender unpacks into responses. A stream that must end
//! with an error (the client's side failed, or a test ended it) says so
//! through a separate one-shot slot, delivered after every response queued
//! before it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use etcd_proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::authorize;
use crate::auth::permissions::Need;
use crate::auth::Credentials;
use crate::core::Core;
use crate::error::{go_status_text, EtcdError};
use crate::member::Member;
use crate::watch::{Outbox, Outgoing, StreamId, Unpacker, WatchFrame, STREAM_BUFFER};

/// The Watch service of one member.
#[derive(Debug, Clone)]
pub(crate) struct WatchService {
    member: Arc<Member>,
    /// Whether the test's watch faults (stall, end) reach this service's
    /// streams: not for the member's own client (Lock, Election), whose
    /// calls etcd makes in process.
    faults: bool,
}

impl WatchService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self {
            member,
            faults: true,
        }
    }

    /// The service the member's own client talks to.
    pub(crate) fn exempt_from_faults(member: Arc<Member>) -> Self {
        Self {
            member,
            faults: false,
        }
    }

    /// `Watch`: a stream of requests, answered by a stream of responses
    /// (see `watch_wire` for how they reach the wire).
    pub(crate) async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Responses>, Status> {
        self.member.admit_stream(&request).await?;
        let credentials = authorize::credentials(&request);
        let (outbox, responses) = mpsc::channel(STREAM_BUFFER);
        let (end, ended) = oneshot::channel();
        let now = self.member.shared.clock.now();
        let (stream, lagging) = self.member.lock().watchers.open_stream(outbox.clone(), now);
        // Its progress deadline may be the soonest timer now.
        self.member.shared.timer_wakeup.notify_one();
        let member = Arc::clone(&self.member);
        let injected_end = self
            .faults
            .then(|| self.member.faults.end_watches.subscribe());
        tokio::spawn(serve_requests(
            member,
            stream,
            credentials,
            request.into_inner(),
            outbox,
            end,
            injected_end,
        ));
        let stall = if self.faults {
            self.member.faults.watches_stalled.subscribe()
        } else {
            // A switch no one holds: never stalled.
            tokio::sync::watch::channel(false).1
        };
        let stall = WatchStream::new(stall);
        let cluster_changes = WatchStream::new(self.member.shared.changes.subscribe());
        Ok(Response::new(Responses {
            responses,
            unpacker: Unpacker::sent_by(self.member.id()),
            ended: Some(ended),
            lagging,
            member: Arc::clone(&self.member),
            stall,
            stalled: false,
            cluster_changes,
            out_of_touch: false,
            held: None,
        }))
    }
}

/// Reads a stream's requests until the client goes away.
async fn serve_requests(
    member: Arc<Member>,
    stream: StreamId,
    credentials: Credentials,
    mut requests: Streaming<WatchRequest>,
    outbox: Outbox,
    end: oneshot::Sender<Status>,
    mut injected_end: Option<tokio::sync::broadcast::Receiver<Status>>,
) {
    let _close = CloseOnDrop {
        member: Arc::clone(&member),
        stream,
    };
    loop {
        let injected = async {
            match injected_end.as_mut() {
                Some(receiver) => receiver.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        let request = tokio::select! {
            request = requests.next() => match request {
                Some(Ok(request)) => request,
                // The client's side failed (a message over the limit, say):
                // the stream ends with that error, as from etcd.
                Some(Err(status)) => {
                    let _ = end.send(status);
                    return;
                }
                None => break,
            },
            Some(status) = injected => {
                let _ = end.send(status);
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
        let now = member.shared.clock.now();
        let mut core = member.lock();
        if let RequestUnion::CreateRequest(create) = &request {
            if let Err(denied) = authorize_watch(&mut core, &credentials, create, now) {
                permit.send(denied_watch(&member, &core, &denied).into());
                continue;
            }
        }
        let (watchers, ctx) = core.watch();
        match request {
            RequestUnion::CreateRequest(create) => {
                let (response, started) = watchers.create(stream, create, ctx);
                permit.send(response.into());
                if let Some(id) = started {
                    watchers.created(stream, id, ctx);
                }
            }
            RequestUnion::CancelRequest(cancel) => {
                if let Some(response) = watchers.cancel(stream, cancel.watch_id, ctx) {
                    permit.send(response.into());
                }
            }
            RequestUnion::ProgressRequest(_) => {
                if let Some(response) = watchers.progress(stream, ctx) {
                    permit.send(response.into());
                }
            }
        }
    }
    // A client that closes its sending side still gets events (as from
    // etcd) until it goes away.
    outbox.closed().await;
}

/// What etcd checks when a watch is created: READ on its range, once
/// (events are not checked again). As the 3.5 tip, a negative start
/// revision is refused before this (by the hub), and an empty key is
/// checked as `"\0"`, the smallest key, which it stands for.
fn authorize_watch(
    core: &mut Core,
    credentials: &Credentials,
    create: &WatchCreateRequest,
    now: std::time::Duration,
) -> Result<(), EtcdError> {
    if create.start_revision < 0 {
        return Ok(());
    }
    let caller = core.auth.identify(credentials, now)?;
    let key: &[u8] = if create.key.is_empty() {
        b"\0"
    } else {
        &create.key
    };
    core.auth
        .check(caller.as_ref(), Need::Read, key, &create.range_end)?;
    Ok(())
}

/// A watch refused by auth: created and canceled at once, with the full
/// status as the reason and watch ID -1 (the 3.5 tip's answer), while the
/// stream stays open.
fn denied_watch(member: &Member, core: &Core, denied: &EtcdError) -> WatchResponse {
    WatchResponse {
        header: Some(member.header_source(core).at(core.store.revision())),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: go_status_text(&Status::from(denied.clone())),
        ..Default::default()
    }
}

/// Frees a stream's watchers when its request task ends, however it ends.
struct CloseOnDrop {
    member: Arc<Member>,
    stream: StreamId,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.member.lock().watchers.close_stream(self.stream);
    }
}

/// A stream's responses. Each item taken makes room in the outbox, so if
/// the stream has watchers waiting for room, the syncer is woken.
pub(crate) struct Responses {
    responses: mpsc::Receiver<Outgoing>,
    /// Turns the item taken last into responses.
    unpacker: Unpacker,
    /// The error the stream ends with, once every response queued before
    /// it is out.
    ended: Option<oneshot::Receiver<Status>>,
    lagging: Arc<AtomicBool>,
    member: Arc<Member>,
    /// The injected stall switch: nothing is delivered while it is on.
    stall: WatchStream<bool>,
    stalled: bool,
    /// Changes of the cluster: while the member is out of touch with the
    /// leader, events and progress notifications are held (creations and
    /// cancellations still come), as an isolated etcd member's watchers
    /// see nothing new until it is back.
    cluster_changes: WatchStream<()>,
    out_of_touch: bool,
    /// A response held while out of touch, with every later one behind it.
    held: Option<WatchFrame>,
}

impl Responses {
    /// A response as this member sends it: with its own ID in the header
    /// (the unpacker encodes shared headers with it already).
    fn as_sent_by_member(&self, mut frame: WatchFrame) -> WatchFrame {
        if let WatchFrame::Message(response) = &mut frame {
            if let Some(header) = response.header.as_mut() {
                header.member_id = self.member.id();
            }
        }
        frame
    }

    /// Takes the latest state of the stall switch and of the cluster.
    fn poll_switches(&mut self, cx: &mut std::task::Context<'_>) {
        while let Poll::Ready(Some(stalled)) = Pin::new(&mut self.stall).poll_next(cx) {
            self.stalled = stalled;
        }
        let mut cluster_changed = false;
        while let Poll::Ready(Some(())) = Pin::new(&mut self.cluster_changes).poll_next(cx) {
            cluster_changed = true;
        }
        if cluster_changed {
            let id = self.member.id();
            let in_sync = self.member.lock().cluster.in_sync(id);
            self.out_of_touch = !in_sync;
        }
    }
}

impl std::fmt::Debug for Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses").finish_non_exhaustive()
    }
}

impl Stream for Responses {
    type Item = Result<WatchFrame, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        // The switches are looked at between outbox items, not before each
        // of a delivery's responses (a write to ten thousand watchers is
        // ten thousand polls): a stall or a partition that starts while a
        // write's responses go out holds the writes after it. Each path
        // that returns `Pending` has polled them first, so their change
        // wakes the stream.
        let mut switches_polled = false;
        if self.stalled || self.out_of_touch || self.held.is_some() {
            self.poll_switches(cx);
            switches_polled = true;
        }
        if self.stalled {
            return Poll::Pending;
        }
        if let Some(held) = self.held.take() {
            if self.out_of_touch {
                self.held = Some(held);
                return Poll::Pending;
            }
            let held = self.as_sent_by_member(held);
            return Poll::Ready(Some(Ok(held)));
        }
        let closed = loop {
            if let Some(response) = self.unpacker.next_response() {
                if self.out_of_touch && !response.tells_of_a_watcher_only() {
                    self.held = Some(response);
                    return Poll::Pending;
                }
                let response = self.as_sent_by_member(response);
                return Poll::Ready(Some(Ok(response)));
            }
            // Between items: the switches' turn, once a call.
            if !switches_polled {
                self.poll_switches(cx);
                switches_polled = true;
                if self.stalled {
                    return Poll::Pending;
                }
            }
            match self.responses.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    if self.lagging.swap(false, Ordering::AcqRel) {
                        self.member.shared.watch_sync.notify_one();
                    }
                    self.unpacker.load(item);
                }
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        // Nothing queued: the stream may have ended with an error, which is
        // set before the outbox closes.
        let ended = match self.ended.as_mut() {
            Some(ended) => Pin::new(ended).poll(cx),
            None => Poll::Pending,
        };
        match ended {
            Poll::Ready(Ok(status)) => {
                self.ended = None;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Err(_)) => {
                self.ended = None;
                if closed {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            }
            Poll::Pending if closed => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
