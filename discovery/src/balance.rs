//! Balancing calls over a [`Resolver`]'s instances.
//!
//! - [`BalancedChannel`]: a tonic channel over every instance (tonic's
//!   `balance_channel`), fed from the snapshot by its own task (so the
//!   resolver never waits for it), inserts before removes, and with a choice
//!   for an empty service: fail fast or wait up to a deadline, never hang.
//! - [`InstanceRouter`]: a channel to one chosen instance by ID, for clients
//!   that must go back to the instance holding their state.
//! - [`pick_weighted`]: a choice in proportion to each instance's `weight`.
//! - [`HashRing`]: consistent hashing; when one instance comes or goes, only
//!   its share of keys moves.
//!
//! Anything else can read [`Snapshot`]s directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tower::{Service, ServiceExt};

use crate::{Endpoint, Error, Resolver, Snapshot};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`BalancedChannel`] does with a call when the service has no
/// instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// Fail the call at once with `Unavailable`.
    FailFast,
    /// Wait up to this long for an instance, then fail with `Unavailable`.
    Wait(Duration),
}

/// A tonic channel balanced over a service's instances. Use it wherever a
/// generated client takes a `Channel`.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let etcd = fake_etcd::FakeEtcd::start().await?;
/// # let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
/// use etcd_grpc_discovery::balance::{BalancedChannel, WhenEmpty};
/// use etcd_grpc_discovery::Resolver;
///
/// let resolver = Resolver::builder(client, "greeter").start();
/// let channel = BalancedChannel::new(&resolver, WhenEmpty::FailFast);
/// // let mut greeter = GreeterClient::new(channel);
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BalancedChannel {
    channel: Channel,
    snapshot: watch::Receiver<Snapshot>,
    when_empty: WhenEmpty,
    _pump: std::sync::Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl BalancedChannel {
    /// A channel over `resolver`'s instances, kept in step with it.
    pub fn new(resolver: &Resolver, when_empty: WhenEmpty) -> Self {
        Self::with_endpoint(resolver, when_empty, |endpoint| {
            TonicEndpoint::from_shared(endpoint.uri()).ok()
        })
    }

    /// Like [`BalancedChannel::new`], building each instance's tonic endpoint
    /// with `configure` (timeouts, TLS...). An instance for which it returns
    /// `None` is left out.
    pub fn with_endpoint(
        resolver: &Resolver,
        when_empty: WhenEmpty,
        configure: impl Fn(&Endpoint) -> Option<TonicEndpoint> + Send + 'static,
    ) -> Self {
        let (channel, changes) = Channel::balance_channel::<String>(64);
        let snapshot = resolver.subscribe();
        let pump = tokio::spawn(pump(snapshot.clone(), changes, configure));
        Self {
            channel,
            snapshot,
            when_empty,
            _pump: std::sync::Arc::new(AbortOnDrop(pump)),
        }
    }
}

/// Feeds snapshot changes to the balancer: new addresses first, then the
/// ones gone, so a replaced instance never leaves an empty window. An
/// address listed under several keys stays while any of them does.
async fn pump(
    mut snapshot: watch::Receiver<Snapshot>,
    changes: mpsc::Sender<Change<String, TonicEndpoint>>,
    configure: impl Fn(&Endpoint) -> Option<TonicEndpoint>,
) {
    let mut current: BTreeSet<String> = BTreeSet::new();
    loop {
        let wanted: BTreeMap<String, Endpoint> = snapshot
            .borrow_and_update()
            .endpoints
            .values()
            .map(|e| (e.addr.clone(), e.clone()))
            .collect();
        for (addr, endpoint) in &wanted {
            if !current.contains(addr) {
                if let Some(tonic_endpoint) = configure(endpoint) {
                    if changes
                        .send(Change::Insert(addr.clone(), tonic_endpoint))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    current.insert(addr.clone());
                }
            }
        }
        let gone: Vec<String> = current
            .iter()
            .filter(|a| !wanted.contains_key(*a))
            .cloned()
            .collect();
        for addr in gone {
            if changes.send(Change::Remove(addr.clone())).await.is_err() {
                return;
            }
            current.remove(&addr);
        }
        if snapshot.changed().await.is_err() {
            return;
        }
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
        let mut channel = self.channel.clone();
        let mut snapshot = self.snapshot.clone();
        let when_empty = self.when_empty;
        Box::pin(async move {
            let has_endpoints = |s: &Snapshot| !s.endpoints.is_empty();
            if !has_endpoints(&snapshot.borrow()) {
                let found = match when_empty {
                    WhenEmpty::FailFast => false,
                    WhenEmpty::Wait(limit) => {
                        matches!(
                            tokio::time::timeout(limit, snapshot.wait_for(has_endpoints)).await,
                            Ok(Ok(_))
                        )
                    }
                };
                if !found {
                    return Err(Box::new(tonic::Status::unavailable(
                        "discovery: the service has no registered instances",
                    )) as BoxError);
                }
            }
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
