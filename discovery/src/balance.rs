//! Balancing calls over a [`Resolver`]'s instances.
//!
//! - [`BalancedChannel`]: a tonic channel over every instance, with one
//!   connection per address made eagerly and watched, calls spread over the
//!   instances whose connection is ready ([`Policy::RoundRobin`] by default,
//!   as grpc-go's `round_robin`), and a choice for an empty service: fail
//!   fast or wait up to a deadline, never hang.
//! - [`InstanceRouter`]: a channel to one chosen instance by ID, for clients
//!   that must go back to the instance holding their state.
//! - [`pick_weighted`]: a choice in proportion to each instance's `weight`.
//! - [`HashRing`]: consistent hashing; when one instance comes or goes, only
//!   its share of keys moves.
//!
//! Anything else can read [`Snapshot`]s directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tower::{Service, ServiceExt};

use crate::backoff::{random_seed, Backoff};
use crate::{Endpoint, Error, Resolver, Snapshot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`BalancedChannel`] does with a call when no instance has a ready
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// Fail the call with `Unavailable` at once, unless a first connection
    /// to some instance is still being made (then wait for it, as grpc-go
    /// does while connecting).
    FailFast,
    /// Wait up to this long for a ready instance, then fail with
    /// `Unavailable`.
    Wait(Duration),
}

/// How a [`BalancedChannel`] chooses among the instances whose connection
/// is ready. Instances without one (still connecting, or whose connection
/// broke, as when the process was killed but its lease lives on) are never
/// chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Each call goes to the next ready instance in turn (by address), as
    /// with grpc-go's `round_robin`: an even spread.
    #[default]
    RoundRobin,
    /// Two ready instances drawn at random, and the call goes to the one
    /// with fewer calls in flight ("power of two choices"): slow instances
    /// get less.
    PowerOfTwoChoices,
}

/// A tonic channel balanced over a service's instances. Use it wherever a
/// generated client takes a `Channel`.
///
/// It keeps one connection per instance address, made as soon as the
/// instance is resolved and made again (with backoff) when it breaks, and
/// sends each call to an instance whose connection is ready, as [`Policy`]
/// says. An instance whose process died is left out as soon as its
/// connection closes, before its lease expires.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let etcd = fake_etcd::FakeEtcd::start().await?;
/// # let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
/// use etcd_grpc_discovery::balance::{BalancedChannel, Policy, WhenEmpty};
/// use etcd_grpc_discovery::Resolver;
///
/// let resolver = Resolver::builder(client, "greeter").start();
/// let channel = BalancedChannel::new(&resolver, WhenEmpty::FailFast);
/// // Or the less loaded of two:
/// let p2c = channel.clone().with_policy(Policy::PowerOfTwoChoices);
/// assert!(channel.ready_addrs().is_empty());
/// // let mut greeter = GreeterClient::new(channel);
/// # drop(p2c);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BalancedChannel {
    pool: watch::Receiver<Pool>,
    when_empty: WhenEmpty,
    policy: Policy,
    /// The round-robin position, shared by clones.
    next: Arc<AtomicUsize>,
    /// The state of the random draws of [`Policy::PowerOfTwoChoices`].
    draws: Arc<AtomicU64>,
    _pump: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connections, by address, published to the callers.
#[derive(Debug, Clone, Default)]
struct Pool {
    addrs: BTreeMap<String, Slot>,
}

#[derive(Debug, Clone)]
struct Slot {
    /// Tells the connection task of this address from an earlier one (the
    /// address went and came back) that is still being aborted.
    generation: u64,
    status: Status,
}

#[derive(Debug, Clone)]
enum Status {
    /// The first connection is being made.
    Connecting,
    /// Connected; calls may go here.
    Ready(Conn),
    /// The last attempt failed, or the connection broke; trying again
    /// after a backoff.
    Failed,
}

#[derive(Debug, Clone)]
struct Conn {
    channel: Channel,
    in_flight: Arc<AtomicUsize>,
}

impl Pool {
    fn ready(&self) -> impl Iterator<Item = (&String, &Conn)> {
        self.addrs
            .iter()
            .filter_map(|(addr, slot)| match &slot.status {
                Status::Ready(conn) => Some((addr, conn)),
                _ => None,
            })
    }

    fn has_ready(&self) -> bool {
        self.ready().next().is_some()
    }

    fn connecting(&self) -> bool {
        self.addrs
            .values()
            .any(|slot| matches!(slot.status, Status::Connecting))
    }

    /// Why no call can be made now.
    fn unavailable(&self) -> tonic::Status {
        if self.addrs.is_empty() {
            tonic::Status::unavailable("discovery: the service has no registered instances")
        } else {
            tonic::Status::unavailable(format!(
                "discovery: none of the service's {} registered instance(s) has a ready connection",
                self.addrs.len()
            ))
        }
    }
}

impl BalancedChannel {
    /// A channel over `resolver`'s instances, kept in step with it, with
    /// [`Policy::RoundRobin`].
    pub fn new(resolver: &Resolver, when_empty: WhenEmpty) -> Self {
        Self::with_endpoint(resolver, when_empty, |endpoint| {
            TonicEndpoint::from_shared(endpoint.uri()).ok()
        })
    }

    /// Like [`BalancedChannel::new`], building each instance's tonic endpoint
    /// with `configure` (timeouts, HTTP/2 settings...). An instance for which
    /// it returns `None` is left out. Connections are plain TCP made by this
    /// crate (so it can see them close); the endpoint's TCP options are not
    /// applied (`TCP_NODELAY` is always on).
    pub fn with_endpoint(
        resolver: &Resolver,
        when_empty: WhenEmpty,
        configure: impl Fn(&Endpoint) -> Option<TonicEndpoint> + Send + 'static,
    ) -> Self {
        let (pool_tx, pool) = watch::channel(Pool::default());
        let mut snapshot = resolver.subscribe();
        let mut pump = Pump {
            pool: Arc::new(pool_tx),
            configure,
            tasks: BTreeMap::new(),
            generation: 0,
        };
        // The instances known now are in the pool (connecting) before the
        // first call can look.
        pump.update(&snapshot.borrow_and_update());
        let pump = tokio::spawn(async move {
            while snapshot.changed().await.is_ok() {
                pump.update(&snapshot.borrow_and_update());
            }
        });
        Self {
            pool,
            when_empty,
            policy: Policy::default(),
            next: Arc::new(AtomicUsize::new(0)),
            draws: Arc::new(AtomicU64::new(random_seed())),
            _pump: Arc::new(AbortOnDrop(pump)),
        }
    }

    /// The same channel (same connections), choosing by `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The addresses whose connection is ready now, sorted.
    pub fn ready_addrs(&self) -> Vec<String> {
        self.pool.borrow().ready().map(|(a, _)| a.clone()).collect()
    }

    /// Waits until `condition` holds for the ready addresses (sorted), up
    /// to `timeout`; returns them.
    ///
    /// # Errors
    ///
    /// [`Error::NoEndpoints`] if the condition does not hold in time.
    pub async fn wait_for_ready(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&[String]) -> bool,
    ) -> Result<Vec<String>, Error> {
        let mut pool = self.pool.clone();
        let addrs = |p: &Pool| p.ready().map(|(a, _)| a.clone()).collect::<Vec<_>>();
        let reached = tokio::time::timeout(timeout, pool.wait_for(|p| condition(&addrs(p)))).await;
        match reached {
            Ok(Ok(p)) => Ok(addrs(&p)),
            _ => Err(Error::NoEndpoints(format!(
                "ready connections still {:?} after {timeout:?}",
                self.ready_addrs()
            ))),
        }
    }
}

/// Keeps one connection task per address of the snapshot: new addresses
/// first, then the ones gone, so a replaced instance never leaves an empty
/// window. An address listed under several keys stays while any does.
struct Pump<F> {
    pool: Arc<watch::Sender<Pool>>,
    configure: F,
    tasks: BTreeMap<String, AbortOnDrop>,
    generation: u64,
}

impl<F: Fn(&Endpoint) -> Option<TonicEndpoint>> Pump<F> {
    fn update(&mut self, snapshot: &Snapshot) {
        let wanted: BTreeMap<&str, &Endpoint> = snapshot
            .endpoints
            .values()
            .map(|e| (e.addr.as_str(), e))
            .collect();
        for (addr, endpoint) in &wanted {
            if self.tasks.contains_key(*addr) {
                continue;
            }
            let Some(tonic_endpoint) = (self.configure)(endpoint) else {
                continue;
            };
            self.generation += 1;
            let generation = self.generation;
            self.pool.send_modify(|pool| {
                let status = Status::Connecting;
                pool.addrs
                    .insert((*addr).to_owned(), Slot { generation, status });
            });
            let task = tokio::spawn(keep_connected(
                (*addr).to_owned(),
                generation,
                tonic_endpoint,
                Arc::clone(&self.pool),
            ));
            self.tasks.insert((*addr).to_owned(), AbortOnDrop(task));
        }
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|a| !wanted.contains_key(a.as_str()))
            .cloned()
            .collect();
        for addr in gone {
            self.tasks.remove(&addr);
            self.pool.send_modify(|pool| {
                pool.addrs.remove(&addr);
            });
        }
    }
}

/// Connects to `addr`, marks it ready, and when the connection closes
/// (the server went away) marks it failed at once and connects again after
/// a backoff.
async fn keep_connected(
    addr: String,
    generation: u64,
    endpoint: TonicEndpoint,
    pool: Arc<watch::Sender<Pool>>,
) {
    let set = |status: Status| {
        pool.send_if_modified(|pool| match pool.addrs.get_mut(&addr) {
            Some(slot) if slot.generation == generation => {
                slot.status = status;
                true
            }
            // Removed, or taken over by a newer task: not ours to change.
            _ => false,
        });
    };
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        random_seed(),
    );
    loop {
        let closed = Arc::new(Notify::new());
        let connector = WatchedConnector {
            closed: Arc::clone(&closed),
        };
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => {
                backoff.reset();
                set(Status::Ready(Conn {
                    channel,
                    in_flight: Arc::default(),
                }));
                closed.notified().await;
                tracing::debug!(%addr, "connection closed; leaving the instance out");
            }
            Err(err) => tracing::debug!(%addr, %err, "could not connect"),
        }
        set(Status::Failed);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Makes TCP connections whose closing is signalled on `closed`.
#[derive(Debug, Clone)]
struct WatchedConnector {
    closed: Arc<Notify>,
}

impl Service<Uri> for WatchedConnector {
    type Response = TokioIo<WatchedStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let closed = Arc::clone(&self.closed);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            // An IPv6 literal comes in brackets.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            // An address that drops packets must not hold a call for the
            // OS's connect timeout (minutes): grpc-go's 20 s, then the
            // instance counts as down.
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(WatchedStream {
                stream,
                closed: Some(closed),
            }))
        })
    }
}

/// How long a connection to an instance may take (grpc-go's default).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A TCP stream that signals when it reaches its end, fails, or is dropped
/// (hyper drops it when the connection ends): the balancer then stops
/// sending calls there, without waiting for a call to fail.
#[derive(Debug)]
struct WatchedStream {
    stream: TcpStream,
    closed: Option<Arc<Notify>>,
}

impl WatchedStream {
    fn signal_closed(&mut self) {
        if let Some(closed) = self.closed.take() {
            // Stored if nobody waits yet: the waiter still sees it.
            closed.notify_one();
        }
    }
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        self.signal_closed();
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.signal_closed();
            }
            Poll::Ready(Err(_)) => self.signal_closed(),
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Err(_))) {
            self.signal_closed();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts a call in flight on a connection until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BalancedChannel {
    /// The connection for the next call, waiting as [`WhenEmpty`] says.
    async fn pick(&self) -> Result<Conn, tonic::Status> {
        let mut pool = self.pool.clone();
        let usable = match self.when_empty {
            WhenEmpty::FailFast => pool
                .wait_for(|p| p.has_ready() || !p.connecting())
                .await
                .is_ok(),
            WhenEmpty::Wait(limit) => matches!(
                tokio::time::timeout(limit, pool.wait_for(Pool::has_ready)).await,
                Ok(Ok(_))
            ),
        };
        let pool = pool.borrow();
        let ready: Vec<&Conn> = pool.ready().map(|(_, conn)| conn).collect();
        if !usable || ready.is_empty() {
            return Err(pool.unavailable());
        }
        let chosen = match self.policy {
            Policy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % ready.len(),
            Policy::PowerOfTwoChoices if ready.len() == 1 => 0,
            Policy::PowerOfTwoChoices => {
                let draw = self.draw();
                let first = (draw % ready.len() as u64) as usize;
                // A second, different one.
                let offset = 1 + ((draw >> 32) % (ready.len() as u64 - 1)) as usize;
                let second = (first + offset) % ready.len();
                let load = |i: usize| ready[i].in_flight.load(Ordering::Relaxed);
                if load(second) < load(first) {
                    second
                } else {
                    first
                }
            }
        };
        Ok(ready[chosen].clone())
    }

    /// A uniform random number (splitmix64 over a shared counter).
    fn draw(&self) -> u64 {
        use crate::backoff::{splitmix64, SPLITMIX_STEP};
        splitmix64(
            self.draws
                .fetch_add(SPLITMIX_STEP, Ordering::Relaxed)
                .wrapping_add(SPLITMIX_STEP),
        )
    }
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call, where an empty set can be waited on
        // with a deadline instead of hanging.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // Boxed as the status itself, which tonic finds by downcasting.
            let conn = this
                .pick()
                .await
                .map_err(|status| Box::new(status) as BoxError)?;
            let _in_flight = InFlight::new(&conn.in_flight);
            let mut channel = conn.channel;
            let ready = channel.ready().await.map_err(BoxError::from)?;
            ready.call(request).await.map_err(BoxError::from)
        })
    }
}

/// Channels to chosen instances by ID, for clients that must return to the
/// instance they were on (sticky sessions, stateful streams). A channel is
/// made once per address and replaced when the instance moves.
#[derive(Debug)]
pub struct InstanceRouter {
    snapshot: watch::Receiver<Snapshot>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl InstanceRouter {
    /// A router over `resolver`'s instances.
    pub fn new(resolver: &Resolver) -> Self {
        Self {
            snapshot: resolver.subscribe(),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A channel to the instance `id`, wherever it is registered now.
    ///
    /// # Errors
    ///
    /// [`Error::NoEndpoints`] if no such instance is registered,
    /// [`Error::InvalidAddress`] if its address cannot be dialed.
    pub fn channel(&self, id: &str) -> Result<Channel, Error> {
        let endpoint = self
            .snapshot
            .borrow()
            .endpoints
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NoEndpoints(format!("instance {id:?} is not registered")))?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let live: BTreeSet<String> = self
            .snapshot
            .borrow()
            .endpoints
            .values()
            .map(|e| e.addr.clone())
            .collect();
        channels.retain(|addr, _| live.contains(addr));
        if let Some(channel) = channels.get(&endpoint.addr) {
            return Ok(channel.clone());
        }
        let channel = TonicEndpoint::from_shared(endpoint.uri())
            .map_err(|e| Error::InvalidAddress {
                id: id.to_owned(),
                addr: endpoint.addr.clone(),
                reason: e.to_string(),
            })?
            .connect_lazy();
        channels.insert(endpoint.addr, channel.clone());
        Ok(channel)
    }
}

/// Chooses an instance in proportion to its [`weight`](Endpoint::weight),
/// given a uniform random number.
///
/// # Example
///
/// ```
/// use etcd_grpc_discovery::{balance::pick_weighted, Endpoint, Snapshot};
///
/// let mut snapshot = Snapshot::default();
/// for (id, weight) in [("a", 1), ("b", 3)] {
///     let metadata = serde_json::json!({ "weight": weight });
///     snapshot.endpoints.insert(id.into(), Endpoint { id: id.into(), addr: format!("{id}:1"), metadata });
/// }
/// // Four evenly spread draws: one lands on "a", three on "b".
/// let picks = (0..4u64).map(|i| pick_weighted(&snapshot, (2 * i + 1) * (u64::MAX / 8)).unwrap().id.clone());
/// assert_eq!(picks.collect::<Vec<_>>(), ["a", "b", "b", "b"]);
/// ```
pub fn pick_weighted(snapshot: &Snapshot, random: u64) -> Option<&Endpoint> {
    let total: u64 = snapshot
        .endpoints
        .values()
        .map(|e| u64::from(e.weight()))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = ((u128::from(random) * u128::from(total)) >> 64) as u64;
    for endpoint in snapshot.endpoints.values() {
        let weight = u64::from(endpoint.weight());
        if point < weight {
            return Some(endpoint);
        }
        point -= weight;
    }
    None
}

/// A consistent-hash ring over a snapshot's instances: each instance owns
/// many points on a ring; a key goes to the owner of the first point at or
/// after its hash. Adding or removing one instance moves only the keys of
/// its own points.
#[derive(Debug, Clone)]
pub struct HashRing {
    points: BTreeMap<u64, Endpoint>,
}

impl HashRing {
    /// A ring with `points_per_instance` points for each instance (100 to
    /// 200 spreads keys evenly).
    pub fn new(snapshot: &Snapshot, points_per_instance: u32) -> Self {
        let mut points = BTreeMap::new();
        for endpoint in snapshot.endpoints.values() {
            for i in 0..points_per_instance {
                points.insert(
                    hash(format!("{}#{i}", endpoint.id).as_bytes()),
                    endpoint.clone(),
                );
            }
        }
        Self { points }
    }

    /// The instance that owns `key`.
    pub fn pick(&self, key: &[u8]) -> Option<&Endpoint> {
        let h = hash(key);
        self.points
            .range(h..)
            .next()
            .or_else(|| self.points.iter().next())
            .map(|(_, e)| e)
    }
}

/// FNV-1a, then a final mix: stable across processes and versions.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(ids: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        for id in ids {
            s.endpoints.insert(
                (*id).into(),
                Endpoint {
                    id: (*id).into(),
                    addr: format!("{id}:1"),
                    metadata: serde_json::Value::Null,
                },
            );
        }
        s
    }

    #[test]
    fn a_ring_moves_only_the_changed_instances_keys() {
        let before = HashRing::new(&snapshot_of(&["a", "b", "c", "d"]), 160);
        let after = HashRing::new(&snapshot_of(&["a", "b", "c", "d", "e"]), 160);
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut moved = 0;
        for key in &keys {
            let (was, now) = (
                before.pick(key.as_bytes()).unwrap(),
                after.pick(key.as_bytes()).unwrap(),
            );
            if was.id != now.id {
                assert_eq!(now.id, "e", "a key moved between two old instances");
                moved += 1;
            }
        }
        // About a fifth of the keys move to the new instance.
        assert!((1_200..2_800).contains(&moved), "{moved}");
        let removed = HashRing::new(&snapshot_of(&["a", "b", "d"]), 160);
        for key in &keys {
            let was = before.pick(key.as_bytes()).unwrap();
            if was.id != "c" {
                assert_eq!(removed.pick(key.as_bytes()).unwrap().id, was.id);
            }
        }
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let mut s = snapshot_of(&["a", "b"]);
        s.endpoints.get_mut("b").unwrap().metadata = serde_json::json!({"weight": 3});
        let mut counts = HashMap::new();
        for i in 0..4000u64 {
            let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            *counts
                .entry(pick_weighted(&s, r).unwrap().id.clone())
                .or_insert(0) += 1;
        }
        let (a, b) = (counts["a"], counts["b"]);
        assert!(
            (2.5..3.5).contains(&(f64::from(b) / f64::from(a))),
            "{a} {b}"
        );
        assert!(pick_weighted(&Snapshot::default(), 1).is_none());
    }
}
