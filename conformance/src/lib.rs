//! One suite of etcd scenarios, two targets.
//!
//! Every scenario is an `async fn(&mut Scenario)`: it talks to etcd through
//! the [`Scenario`]'s clients and checks what etcd 3.5 answers. The target is
//! chosen once per process:
//!
//! - `ETCD_ENDPOINTS` unset: each scenario gets its own in-process
//!   [`FakeEtcd`](fake_etcd::FakeEtcd).
//! - `ETCD_ENDPOINTS=http://127.0.0.1:2379[,...]`: every scenario runs on that
//!   etcd, concurrently.
//!
//! Scenarios work under their own key prefix ([`Scenario::key`]) and reason
//! about revisions relative to those they observed, so they can share one real
//! etcd. Compaction is global on a real etcd, so a scenario that compacts
//! takes the history lock exclusively ([`run_exclusive`]) while every other
//! scenario holds it shared.
//!
//! # Layout
//!
//! - [`scenarios`]: the scenario bodies, by area.
//! - [`properties`]: property tests over random schedules (proptest).
//! - [`auth_properties`]: etcd's permission checks over random users,
//!   roles, permissions and requests, against a model of etcd's rules.
//! - [`discovery_properties`]: the registrar and resolver under random faults.
//! - [`differential`]: random request sequences sent to a real etcd and to
//!   the fake, every answer compared.
//! - [`fuzz`]: random and malformed requests that must not break the fake.
//! - [`Target`], [`Scenario`], [`run`]: choosing the target and running a
//!   scenario against it.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::run(conformance::scenarios::kv::put_versions_and_revisions).await;
//! # }
//! ```

pub mod auth_properties;
pub mod differential;
pub mod discovery_properties;
pub mod fuzz;
pub mod properties;
pub mod scenarios;

/// The README's Rust examples, compiled (and run) as doctests, so a
/// snippet a user pastes cannot drift out of compiling.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use etcd_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use fake_etcd::FakeEtcd;
use tokio::sync::RwLock;
use tonic::transport::Channel;

/// The environment variable that points the suite at a real etcd.
pub const ENDPOINTS_VAR: &str = "ETCD_ENDPOINTS";

/// Where the scenarios run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fresh in-process fake per scenario.
    Fake,
    /// A real etcd at these endpoints.
    Real(Vec<String>),
}

impl Target {
    /// The target of this process, read from [`ENDPOINTS_VAR`] once.
    pub fn current() -> &'static Target {
        static TARGET: OnceLock<Target> = OnceLock::new();
        TARGET.get_or_init(|| match std::env::var(ENDPOINTS_VAR) {
            Ok(list) if !list.trim().is_empty() => {
                Target::Real(list.split(',').map(|e| e.trim().to_owned()).collect())
            }
            _ => Target::Fake,
        })
    }

    /// Whether scenarios run against the fake.
    pub fn is_fake(&self) -> bool {
        matches!(self, Target::Fake)
    }

    /// Whether the target is a real etcd of several members.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Real(endpoints) if endpoints.len() > 1)
    }
}

/// Starts a [`Bridge`](fake_etcd::Bridge) in front of the etcd at
/// `endpoint` (`http://host:port`, as in [`ENDPOINTS_VAR`]).
///
/// # Errors
///
/// If the host does not resolve or no loopback port can be bound.
pub async fn bridge_to(endpoint: &str) -> Result<fake_etcd::Bridge, String> {
    let upstream = tokio::net::lookup_host(endpoint.trim_start_matches("http://"))
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?
        .next()
        .ok_or_else(|| format!("{endpoint}: no address"))?;
    fake_etcd::Bridge::start(upstream)
        .await
        .map_err(|e| format!("a bridge to {endpoint}: {e}"))
}

/// Serializes scenarios that compact (exclusive) against every other
/// scenario (shared), since compaction trims history for everyone.
static HISTORY: RwLock<()> = RwLock::const_new(());

/// One scenario's view of the target: clients, a key prefix of its own, and
/// the fake when the target is the fake.
pub struct Scenario {
    client: etcd_client::Client,
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    prefix: String,
    endpoints: Vec<String>,
    fake: Option<FakeEtcd>,
}

impl Scenario {
    async fn connect(name: &str) -> Self {
        let (fake, endpoints) = match Target::current() {
            Target::Fake => {
                // bcrypt at its lowest cost: the scenarios check who may log
                // in, not how slowly; etcd's cost of 10 made the auth
                // property the slowest test of the workspace.
                let fake = FakeEtcd::builder()
                    .bcrypt_cost(4)
                    .start()
                    .await
                    .expect("start the fake");
                let endpoint = fake.endpoint();
                (Some(fake), vec![endpoint])
            }
            Target::Real(endpoints) => (None, endpoints.clone()),
        };
        let client = etcd_client::Client::connect(&endpoints, None)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoints:?}: {e}"));
        let channel = Channel::from_shared(endpoints[0].clone())
            .expect("endpoint URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", endpoints[0]));
        // Large enough for the request-size scenarios to reach the server.
        let kv = KvClient::new(channel.clone())
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        Scenario {
            client,
            kv,
            maintenance: MaintenanceClient::new(channel.clone()),
            cluster: ClusterClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            prefix: unique_prefix(name),
            endpoints,
            fake,
        }
    }

    /// The `etcd-client` crate's client, as applications use it (a cheap
    /// clone of the scenario's).
    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    /// A raw KV client, for requests `etcd-client` cannot express and for
    /// checking every field of a response.
    pub fn kv(&self) -> KvClient<Channel> {
        self.kv.clone()
    }

    /// A raw Maintenance client.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        self.maintenance.clone()
    }

    /// A raw Cluster client.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        self.cluster.clone()
    }

    /// A raw Lease client.
    pub fn lease(&self) -> LeaseClient<Channel> {
        self.lease.clone()
    }

    /// A raw Watch client.
    pub fn watch(&self) -> WatchClient<Channel> {
        self.watch.clone()
    }

    /// Lets `duration` pass on the target: the fake's clock is advanced
    /// (instantly, running every expiry that falls due); a real etcd is
    /// waited on.
    pub async fn pass(&self, duration: Duration) {
        match &self.fake {
            Some(fake) => fake.advance(duration).await,
            None => tokio::time::sleep(duration).await,
        }
    }

    /// Lets a lease of `ttl` seconds, last renewed now, expire: the fake
    /// expires it exactly at its deadline; a real etcd checks every 500 ms,
    /// so it is given a margin.
    pub async fn pass_ttl(&self, ttl: i64) {
        let ttl = Duration::from_secs(ttl.unsigned_abs());
        match &self.fake {
            Some(fake) => fake.advance(ttl).await,
            None => tokio::time::sleep(ttl + Duration::from_millis(1500)).await,
        }
    }

    /// `name` under this scenario's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// This scenario's prefix; every key it writes starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The end of this scenario's prefix range (`prefix` with its last byte
    /// incremented), for range requests over all of its keys.
    pub fn prefix_end(&self) -> Vec<u8> {
        let mut end = self.prefix.clone().into_bytes();
        *end.last_mut().expect("non-empty prefix") += 1;
        end
    }

    /// The endpoints of the target.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The fake, when the target is the fake.
    pub fn fake(&self) -> Option<&FakeEtcd> {
        self.fake.as_ref()
    }

    /// Whether the target is the fake.
    pub fn is_fake(&self) -> bool {
        self.fake.is_some()
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("prefix", &self.prefix)
            .field("endpoints", &self.endpoints)
            .field("fake", &self.fake)
            .finish_non_exhaustive()
    }
}

fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/conformance/{name}/{nanos:x}-{}-{n}/", std::process::id())
}

/// A scenario's view of the target, for bodies that are not plain
/// `async fn(&mut Scenario)` (property tests build one per case).
pub async fn scenario(name: &str) -> Scenario {
    Scenario::connect(name).await
}

/// Holds the target's history shared: no compacting scenario runs meanwhile.
pub async fn shared_history() -> tokio::sync::RwLockReadGuard<'static, ()> {
    HISTORY.read().await
}

/// Holds the target's history exclusively, for bodies that compact.
pub async fn exclusive_history() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    HISTORY.write().await
}

/// Writes a line to the process's standard error directly. `eprintln!`
/// would be captured by the test harness and shown only for a failing
/// test; what this says must be seen in a passing run too.
pub fn say(line: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    // Nothing better to do if stderr is gone.
    let _ = writeln!(stderr, "{line}");
}

/// Whether a test that only makes sense on the fake should run: on a real
/// etcd it says `SKIPPED: <name>: <why>` where a passing run shows it, and
/// returns `false`.
pub fn runs_on_fake_only(name: &str, why: &str) -> bool {
    if Target::current().is_fake() {
        return true;
    }
    say(&format!(
        "SKIPPED: {name}: {why} (ETCD_ENDPOINTS names a real etcd)"
    ));
    false
}

/// Runs a scenario against the target, sharing history with other scenarios.
pub async fn run<F>(scenario: F)
where
    F: for<'s> AsyncScenario<'s>,
{
    let _shared = shared_history().await;
    connect_and_call(scenario).await;
}

/// Runs a scenario that compacts (or otherwise needs the target's history to
/// itself) with no other scenario running.
pub async fn run_exclusive<F>(scenario: F)
where
    F: for<'s> AsyncScenario<'s>,
{
    let _exclusive = exclusive_history().await;
    connect_and_call(scenario).await;
}

/// Connects a scenario named after its function, and runs it.
async fn connect_and_call<F>(scenario: F)
where
    F: for<'s> AsyncScenario<'s>,
{
    let name = std::any::type_name::<F>()
        .rsplit("::")
        .next()
        .unwrap_or("scenario");
    let mut s = Scenario::connect(name).await;
    scenario.call(&mut s).await;
}

/// An `async fn(&mut Scenario)`.
pub trait AsyncScenario<'s> {
    /// The future the scenario returns.
    type Future: Future<Output = ()> + 's;
    /// Runs the scenario.
    fn call(self, s: &'s mut Scenario) -> Self::Future;
}

impl<'s, F, Fut> AsyncScenario<'s> for F
where
    F: FnOnce(&'s mut Scenario) -> Fut,
    Fut: Future<Output = ()> + 's,
{
    type Future = Fut;
    fn call(self, s: &'s mut Scenario) -> Fut {
        self(s)
    }
}
