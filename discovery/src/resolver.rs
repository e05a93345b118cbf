//! The resolver: an authoritative snapshot of a service's instances, kept in
//! step with etcd.
//!
//! It lists `<service>/`, then watches from the list's revision + 1, applying
//! each watch response as one update. The snapshot is published through a
//! `tokio::sync::watch` channel, so any number of consumers see the latest
//! state and a slow one never holds the resolver back. When the watch ends
//! or fails it resumes from the last revision seen, after a jittered
//! backoff; when etcd says that revision is compacted (or the revision went
//! backwards, as after a restore) it lists again and **replaces** the
//! snapshot. Errors never empty the snapshot: the last good set stays,
//! marked stale, until etcd answers again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::{random_seed, Backoff};
use crate::codec::{Codec, Endpoint, GoNaming};
use crate::Error;

/// A service's instances as last seen in etcd.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The etcd revision this snapshot reflects.
    pub revision: i64,
    /// The instances, by ID.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Whether the resolver has listed the service at least once.
    pub synced: bool,
    /// Whether etcd is unreachable right now (the set is the last one seen).
    pub stale: bool,
}

impl Snapshot {
    /// The distinct addresses, sorted.
    pub fn addrs(&self) -> Vec<&str> {
        let mut addrs: Vec<&str> = self.endpoints.values().map(|e| e.addr.as_str()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        addrs
    }
}

/// Options for a [`Resolver`]; see [`Resolver::builder`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct ResolverBuilder {
    client: Client,
    service: String,
    codec: Arc<dyn Codec>,
    resync: Option<Duration>,
    backoff: (Duration, Duration),
    seed: Option<u64>,
}

impl ResolverBuilder {
    /// How instances are laid out ([`GoNaming`] unless set).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// Lists the service again this often, replacing the snapshot: a safety
    /// net against missed events. Off unless set.
    pub fn resync_every(mut self, every: Duration) -> Self {
        self.resync = Some(every);
        self
    }

    /// The first and the longest delay between retries (50 ms and 5 s
    /// unless set); each delay is a random share of its cap.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// Seeds the retry jitter, for runs that must replay.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts resolving in a task on the current tokio runtime.
    pub fn start(self) -> Resolver {
        let (tx, rx) = watch::channel(Snapshot::default());
        let backoff = Backoff::new(
            self.backoff.0,
            self.backoff.1,
            self.seed.unwrap_or_else(random_seed),
        );
        let run = Run {
            client: self.client,
            prefix: format!("{}/", self.service),
            service: self.service,
            codec: self.codec,
            resync: self.resync,
            backoff,
            tx,
        };
        let task = tokio::spawn(run.run());
        Resolver { snapshot: rx, task }
    }
}

/// Keeps a [`Snapshot`] of a service in step with etcd. Dropping it stops
/// the resolving.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let etcd = fake_etcd::FakeEtcd::start().await?;
/// # let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
/// use std::time::Duration;
/// use etcd_grpc_discovery::Resolver;
///
/// let resolver = Resolver::builder(client.clone(), "greeter").start();
/// let registration = etcd_grpc_discovery::Registrar::builder(client, "greeter", "10.0.0.1:50051").start();
///
/// let snapshot = resolver.wait_for_endpoints(Duration::from_secs(5)).await?;
/// assert_eq!(snapshot.addrs(), ["10.0.0.1:50051"]);
/// # drop(registration);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Resolver {
    snapshot: watch::Receiver<Snapshot>,
    task: JoinHandle<()>,
}

impl Resolver {
    /// A resolver of `service` (the key prefix without its trailing `/`;
    /// see [`service_of_target`](crate::service_of_target) for
    /// `etcd:///service` targets).
    pub fn builder(client: Client, service: impl Into<String>) -> ResolverBuilder {
        ResolverBuilder {
            client,
            service: service.into(),
            codec: Arc::new(GoNaming),
            resync: None,
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            seed: None,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot (coalesced: a slow reader
    /// skips to the latest).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// Waits until the service has at least one instance, up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::NoEndpoints`] if there is still none when the time is up.
    pub async fn wait_for_endpoints(&self, timeout: Duration) -> Result<Snapshot, Error> {
        let mut rx = self.snapshot.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(|s| !s.endpoints.is_empty())).await;
        match found {
            Ok(Ok(snapshot)) => Ok(snapshot.clone()),
            _ => Err(Error::NoEndpoints(self.service_hint())),
        }
    }

    fn service_hint(&self) -> String {
        format!(
            "no endpoints after waiting (revision {})",
            self.snapshot.borrow().revision
        )
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a watch stopped.
enum WatchEnd {
    /// Its history is gone (compaction) or etcd went back in time: list again.
    Relist(&'static str),
    /// The stream ended or failed: resume from the last revision.
    Broken,
}

struct Run {
    client: Client,
    service: String,
    prefix: String,
    codec: Arc<dyn Codec>,
    resync: Option<Duration>,
    backoff: Backoff,
    tx: watch::Sender<Snapshot>,
}

impl Run {
    async fn run(mut self) {
        loop {
            let revision = match self.list().await {
                Ok(revision) => revision,
                Err(err) => {
                    tracing::warn!(service = %self.service, %err, "list failed; keeping the last snapshot");
                    self.mark_stale();
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    continue;
                }
            };
            self.backoff.reset();
            let mut revision = revision;
            loop {
                match self.watch(&mut revision).await {
                    WatchEnd::Relist(why) => {
                        tracing::info!(service = %self.service, why, "listing again");
                        break;
                    }
                    WatchEnd::Broken => {
                        self.mark_stale();
                        tokio::time::sleep(self.backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    fn mark_stale(&self) {
        self.tx
            .send_if_modified(|s| !std::mem::replace(&mut s.stale, true));
    }

    /// Lists the service and replaces the snapshot; returns its revision.
    async fn list(&mut self) -> Result<i64, etcd_client::Error> {
        let resp = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let endpoints: BTreeMap<String, Endpoint> = resp
            .kvs()
            .iter()
            .filter_map(|kv| self.codec.decode(&self.service, kv.key(), kv.value()))
            .map(|e| (e.id.clone(), e))
            .collect();
        self.tx.send_replace(Snapshot {
            revision,
            endpoints,
            synced: true,
            stale: false,
        });
        Ok(revision)
    }

    /// Follows the service from `revision + 1`, applying each response to
    /// the snapshot as one update.
    async fn watch(&mut self, revision: &mut i64) -> WatchEnd {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1)
            .with_progress_notify();
        let mut stream = match self.client.watch(self.prefix.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(_) => return WatchEnd::Broken,
        };
        let every = self.resync;
        let resync = async move {
            match every {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(resync);
        loop {
            let message = tokio::select! {
                // In order, so a schedule replays identically in virtual time.
                biased;
                message = stream.message() => message,
                () = &mut resync => return WatchEnd::Relist("periodic resync"),
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => return WatchEnd::Broken,
            };
            if resp.compact_revision() != 0 {
                return WatchEnd::Relist("history compacted");
            }
            if resp.canceled() {
                return WatchEnd::Broken;
            }
            let header_revision = resp.header().map_or(0, |h| h.revision());
            if header_revision != 0 && header_revision < *revision {
                return WatchEnd::Relist("revision went backwards");
            }
            if resp.created() {
                self.backoff.reset();
                self.tx
                    .send_if_modified(|s| std::mem::replace(&mut s.stale, false));
                continue;
            }
            let mut latest = header_revision.max(*revision);
            self.tx.send_modify(|snapshot| {
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    latest = latest.max(kv.mod_revision());
                    match event.event_type() {
                        EventType::Put => {
                            // A value this layout skips leaves the old one, as in Go.
                            if let Some(e) = self.codec.decode(&self.service, kv.key(), kv.value())
                            {
                                snapshot.endpoints.insert(e.id.clone(), e);
                            }
                        }
                        EventType::Delete => {
                            if let Some(id) = crate::codec::instance_id(&self.service, kv.key()) {
                                snapshot.endpoints.remove(&id);
                            }
                        }
                    }
                }
                snapshot.revision = latest;
                snapshot.stale = false;
            });
            *revision = latest;
        }
    }
}

impl std::fmt::Debug for ResolverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolverBuilder")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}
