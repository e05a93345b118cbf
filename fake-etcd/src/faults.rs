//! Faults on demand: injected errors and latency per RPC, stalled and ended
//! streams, and the switches the connection layer obeys (drop, pause).
//!
//! [`FaultState`] is shared by the member's services and connections. The
//! [`InjectFaults`] layer sits in front of every gRPC service: it looks up the
//! request's method in the rules and fails it with the chosen status, delays
//! it, or lets it through. Streams (Watch, LeaseKeepAlive) subscribe to the
//! stall and end signals. Random failures draw from a generator seeded by
//! [`FakeEtcdBuilder::seed`](crate::FakeEtcdBuilder::seed), so a run replays
//! exactly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tower::{Layer, Service};

use crate::rng::SplitMix64;

/// An RPC of etcd's API, for aiming a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rpc {
    /// Every RPC.
    Any,
    /// `KV.Range`.
    Range,
    /// `KV.Put`.
    Put,
    /// `KV.DeleteRange`.
    DeleteRange,
    /// `KV.Txn`.
    Txn,
    /// `KV.Compact`.
    Compact,
    /// `Watch.Watch` (opening a stream).
    Watch,
    /// `Lease.LeaseGrant`.
    LeaseGrant,
    /// `Lease.LeaseRevoke`.
    LeaseRevoke,
    /// `Lease.LeaseKeepAlive` (opening a stream).
    LeaseKeepAlive,
    /// `Lease.LeaseTimeToLive`.
    LeaseTimeToLive,
    /// `Lease.LeaseLeases`.
    LeaseLeases,
    /// `Maintenance.Status`.
    Status,
    /// `Maintenance.Alarm`.
    Alarm,
    /// `Cluster.MemberList`.
    MemberList,
}

impl Rpc {
    /// The gRPC path of the method (`/etcdserverpb.KV/Put`); `None` for
    /// [`Rpc::Any`].
    pub fn path(self) -> Option<&'static str> {
        Some(match self {
            Rpc::Any => return None,
            Rpc::Range => "/etcdserverpb.KV/Range",
            Rpc::Put => "/etcdserverpb.KV/Put",
            Rpc::DeleteRange => "/etcdserverpb.KV/DeleteRange",
            Rpc::Txn => "/etcdserverpb.KV/Txn",
            Rpc::Compact => "/etcdserverpb.KV/Compact",
            Rpc::Watch => "/etcdserverpb.Watch/Watch",
            Rpc::LeaseGrant => "/etcdserverpb.Lease/LeaseGrant",
            Rpc::LeaseRevoke => "/etcdserverpb.Lease/LeaseRevoke",
            Rpc::LeaseKeepAlive => "/etcdserverpb.Lease/LeaseKeepAlive",
            Rpc::LeaseTimeToLive => "/etcdserverpb.Lease/LeaseTimeToLive",
            Rpc::LeaseLeases => "/etcdserverpb.Lease/LeaseLeases",
            Rpc::Status => "/etcdserverpb.Maintenance/Status",
            Rpc::Alarm => "/etcdserverpb.Maintenance/Alarm",
            Rpc::MemberList => "/etcdserverpb.Cluster/MemberList",
        })
    }

    /// Parses a method name as the control API takes it: `Put`, `KV/Put`,
    /// `/etcdserverpb.KV/Put`, or `any`.
    pub fn parse(name: &str) -> Option<Rpc> {
        let method = name.rsplit('/').next().unwrap_or(name);
        if method.eq_ignore_ascii_case("any") || method == "*" {
            return Some(Rpc::Any);
        }
        ALL.iter().copied().find(|rpc| {
            rpc.path()
                .is_some_and(|p| p.rsplit('/').next() == Some(method))
        })
    }

    fn matches(self, path: &str) -> bool {
        self.path().is_none_or(|p| p == path)
    }
}

const ALL: [Rpc; 15] = [
    Rpc::Any,
    Rpc::Range,
    Rpc::Put,
    Rpc::DeleteRange,
    Rpc::Txn,
    Rpc::Compact,
    Rpc::Watch,
    Rpc::LeaseGrant,
    Rpc::LeaseRevoke,
    Rpc::LeaseKeepAlive,
    Rpc::LeaseTimeToLive,
    Rpc::LeaseLeases,
    Rpc::Status,
    Rpc::Alarm,
    Rpc::MemberList,
];

/// etcd errors a test often injects, with etcd's exact code and text.
///
/// # Example
///
/// ```
/// let status = fake_etcd::errors::request_timed_out();
/// assert_eq!(status.message(), "etcdserver: request timed out");
/// ```
pub mod errors {
    use tonic::Status;

    use crate::error::EtcdError;

    /// `Unavailable "etcdserver: request timed out"`.
    pub fn request_timed_out() -> Status {
        EtcdError::RequestTimedOut.into()
    }

    /// `Unavailable "etcdserver: leader changed"`.
    pub fn leader_changed() -> Status {
        EtcdError::LeaderChanged.into()
    }

    /// `Unavailable "etcdserver: no leader"`.
    pub fn no_leader() -> Status {
        EtcdError::NoLeader.into()
    }

    /// `Unavailable "etcdserver: server stopped"`.
    pub fn server_stopped() -> Status {
        EtcdError::ServerStopped.into()
    }

    /// `ResourceExhausted "etcdserver: too many requests"`.
    pub fn too_many_requests() -> Status {
        EtcdError::TooManyRequests.into()
    }
}

/// How often a rule fires.
#[derive(Debug, Clone, Copy)]
enum Times {
    Next(usize),
    Always,
    /// With this probability, drawn from the seeded generator.
    Randomly(f64),
}

#[derive(Debug, Clone)]
enum Effect {
    Fail(Status),
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    rpc: Rpc,
    times: Times,
    effect: Effect,
}

/// What happens to one request.
enum Decision {
    Fail(Status),
    Delay(Duration),
    Pass,
}

/// The fault switches of one member.
#[derive(Debug)]
pub(crate) struct FaultState {
    rules: Mutex<Vec<Rule>>,
    rng: Mutex<SplitMix64>,
    /// True while the member is partitioned: connections neither read nor
    /// write, and new ones are held.
    pub(crate) paused: watch::Sender<bool>,
    /// True while watch streams deliver nothing.
    pub(crate) watches_stalled: watch::Sender<bool>,
    /// Ends every open watch stream with the status sent.
    pub(crate) end_watches: broadcast::Sender<Status>,
    /// Ends every open keepalive stream with the status sent.
    pub(crate) end_keepalives: broadcast::Sender<Status>,
    /// Cancelled to break every connection accepted so far; replaced by a
    /// fresh child of the serving token for later ones.
    connections: Mutex<CancellationToken>,
}

impl FaultState {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            rng: Mutex::new(SplitMix64(seed)),
            paused: watch::Sender::new(false),
            watches_stalled: watch::Sender::new(false),
            end_watches: broadcast::Sender::new(16),
            end_keepalives: broadcast::Sender::new(16),
            connections: Mutex::new(CancellationToken::new()),
        }
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn fail(
        &self,
        rpc: Rpc,
        count: Option<usize>,
        probability: Option<f64>,
        status: Status,
    ) {
        let times = match (count, probability) {
            (Some(n), _) => Times::Next(n),
            (None, Some(p)) => Times::Randomly(p.clamp(0.0, 1.0)),
            (None, None) => Times::Always,
        };
        self.rules().push(Rule {
            rpc,
            times,
            effect: Effect::Fail(status),
        });
    }

    pub(crate) fn delay(&self, rpc: Rpc, by: Duration) {
        self.rules().push(Rule {
            rpc,
            times: Times::Always,
            effect: Effect::Delay(by),
        });
    }

    pub(crate) fn clear(&self) {
        self.rules().clear();
    }

    /// Each active rule, in words: what it does, to which RPC, how often.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.rules()
            .iter()
            .map(|rule| {
                let rpc = rule
                    .rpc
                    .path()
                    .map_or("every RPC", |p| p.rsplit('/').next().unwrap_or(p));
                let times = match rule.times {
                    Times::Next(n) => format!("the next {n} calls"),
                    Times::Always => "every call".to_owned(),
                    Times::Randomly(p) => format!("each call with probability {p}"),
                };
                match &rule.effect {
                    Effect::Fail(status) => format!(
                        "fail {rpc}: {times}, with {:?} {:?}",
                        status.code(),
                        status.message()
                    ),
                    Effect::Delay(by) => format!("delay {rpc}: {times}, by {by:?}"),
                }
            })
            .collect()
    }

    fn decide(&self, path: &str) -> Decision {
        let mut rules = self.rules();
        let mut delay = Duration::ZERO;
        let mut fail = None;
        for rule in rules.iter_mut().filter(|r| r.rpc.matches(path)) {
            let fires = match &mut rule.times {
                Times::Next(0) => false,
                Times::Next(n) => {
                    *n -= 1;
                    true
                }
                Times::Always => true,
                Times::Randomly(p) => {
                    let p = *p;
                    self.rng
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .next_f64()
                        < p
                }
            };
            if fires {
                match &rule.effect {
                    Effect::Fail(status) if fail.is_none() => fail = Some(status.clone()),
                    Effect::Fail(_) => {}
                    Effect::Delay(d) => delay += *d,
                }
                if fail.is_some() {
                    break;
                }
            }
        }
        rules.retain(|r| !matches!(r.times, Times::Next(0)));
        match fail {
            Some(status) => Decision::Fail(status),
            None if !delay.is_zero() => Decision::Delay(delay),
            None => Decision::Pass,
        }
    }

    /// The token connections accepted now watch.
    pub(crate) fn connection_token(&self) -> CancellationToken {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts a new generation of connections under `serving`.
    pub(crate) fn new_generation(&self, serving: &CancellationToken) {
        *self.connections.lock().unwrap_or_else(|p| p.into_inner()) = serving.child_token();
    }

    /// Breaks every connection accepted so far; later ones are unaffected.
    pub(crate) fn drop_connections(&self, serving: &CancellationToken) {
        let old = std::mem::replace(
            &mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()),
            serving.child_token(),
        );
        old.cancel();
    }
}

/// The layer that applies injected errors and latency.
#[derive(Debug, Clone)]
pub(crate) struct InjectFaults {
    pub(crate) faults: std::sync::Arc<FaultState>,
}

impl<S> Layer<S> for InjectFaults {
    type Service = InjectFaultsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InjectFaultsService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

/// See [`InjectFaults`].
#[derive(Debug, Clone)]
pub(crate) struct InjectFaultsService<S> {
    inner: S,
    faults: std::sync::Arc<FaultState>,
}

impl<S, B, R> Service<Request<B>> for InjectFaultsService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Faulted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.faults.decide(request.uri().path()) {
            Decision::Pass => Faulted::Passed {
                inner: self.inner.call(request),
            },
            Decision::Fail(status) => Faulted::Injected {
                injected: Box::pin(async move { Ok(status.into_http()) }),
            },
            Decision::Delay(by) => {
                // The ready service goes with the request; a clone waits for
                // the next one.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Faulted::Injected {
                    injected: Box::pin(async move {
                        tokio::time::sleep(by).await;
                        ready.call(request).await
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`InjectFaultsService`]: the inner service's own future
    /// for a request let through, so that the common case allocates nothing;
    /// a boxed one for a failure or a delay.
    #[project = FaultedProjection]
    pub(crate) enum Faulted<F: Future> {
        Passed { #[pin] inner: F },
        Injected { injected: Pin<Box<dyn Future<Output = F::Output> + Send>> },
    }
}

impl<F: Future> Future for Faulted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FaultedProjection::Passed { inner } => inner.poll(cx),
            FaultedProjection::Injected { injected } => injected.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_parse_in_every_form() {
        assert_eq!(Rpc::parse("Put"), Some(Rpc::Put));
        assert_eq!(Rpc::parse("KV/Range"), Some(Rpc::Range));
        assert_eq!(
            Rpc::parse("/etcdserverpb.Lease/LeaseKeepAlive"),
            Some(Rpc::LeaseKeepAlive)
        );
        assert_eq!(Rpc::parse("any"), Some(Rpc::Any));
        assert_eq!(Rpc::parse("Nope"), None);
    }

    #[test]
    fn next_n_fires_n_times_then_goes() {
        let faults = FaultState::new(1);
        faults.fail(Rpc::Put, Some(2), None, errors::no_leader());
        let put = "/etcdserverpb.KV/Put";
        assert!(matches!(
            faults.decide("/etcdserverpb.KV/Range"),
            Decision::Pass
        ));
        assert!(matches!(faults.decide(put), Decision::Fail(_)));
        assert!(matches!(faults.decide(put), Decision::Fail(_)));
        assert!(matches!(faults.decide(put), Decision::Pass));
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn active_rules_are_described_in_words() {
        let faults = FaultState::new(1);
        faults.fail(Rpc::Put, Some(2), None, errors::no_leader());
        faults.delay(Rpc::Any, Duration::from_millis(5));
        assert_eq!(
            faults.describe(),
            [
                "fail Put: the next 2 calls, with Unavailable \"etcdserver: no leader\"",
                "delay every RPC: every call, by 5ms",
            ]
        );
    }

    #[test]
    fn random_failures_replay_from_the_seed() {
        let run = |seed| {
            let faults = FaultState::new(seed);
            faults.fail(Rpc::Any, None, Some(0.3), errors::request_timed_out());
            (0..200)
                .map(|_| matches!(faults.decide("/etcdserverpb.KV/Put"), Decision::Fail(_)))
                .collect::<Vec<_>>()
        };
        let first = run(42);
        assert_eq!(first, run(42));
        assert_ne!(first, run(43));
        let rate = first.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&rate), "about 30% of 200: {rate}");
    }
}
