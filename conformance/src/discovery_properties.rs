//! Property tests of the `discovery` registrar and resolver: random
//! schedules of instances starting, stopping and dying, time passing,
//! partitions, stalled keepalives, dropped connections, restarts, watch
//! gaps with compaction, out-of-band deletes and overwrites, injected
//! errors, metadata changes and resolvers restarting. While a schedule runs, every snapshot a
//! resolver publishes must be a state etcd really held; once the schedule
//! heals, everything must converge within a bound, and stay converged.
//!
//! # Two targets
//!
//! On the fake ([`Profile::fake`]) the clients use its in-process channel
//! and the whole case runs in paused tokio time, shared by the fake's
//! leases and the registrar's timers: minutes of etcd time take
//! milliseconds, and a case replays exactly from its seed
//! ([`crate::properties::SEED_VAR`]).
//!
//! On a real etcd ([`Profile::real`]) time is real, TTLs are short, and
//! faults go through two [`Bridge`]s, one in front of the registrars and
//! one in front of the resolvers; out-of-band writes and compaction use a
//! third, direct client. Restarts and injected errors exist only on the
//! fake, so the real profile leaves them out (and says so).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use etcd_grpc_discovery::{Codec, Endpoint, GoNaming, Registrar, Registration, Resolver, Snapshot};
use fake_etcd::{errors, Bridge, FakeEtcd, Rpc, TimeSource};
use proptest::prelude::*;
use proptest::strategy::Union;
use tokio::time::Instant;

use crate::Target;

const INSTANCES: u8 = 3;
const RESOLVERS: u64 = 2;

/// One step of a schedule. Its `Debug` form reads as a sentence, so a
/// shrunk schedule can be read at a glance.
#[derive(Clone)]
pub enum Step {
    /// Start instance `i` (if it is not running).
    Start(u8),
    /// Deregister instance `i`.
    Stop(u8),
    /// Kill instance `i`: its keepalives stop; its key goes with its lease.
    Kill(u8),
    /// Let this many seconds pass.
    Wait(u8),
    /// Partition every client from etcd for this many seconds, then heal.
    Partition(u8),
    /// Break every connection.
    DropConnections,
    /// Restart the member (fake only).
    Restart,
    /// Keep the watchers away for a TTL while instance `i`'s key is deleted
    /// and history is compacted: a watch gap.
    CompactGap(u8),
    /// Instance `i` dies while the watchers are kept away; its lease
    /// expires and history is compacted before they return.
    DieInGap(u8),
    /// Delete instance `i`'s key behind its back.
    DeleteKey(u8),
    /// Fail the next few calls of every RPC (fake only).
    Errors(u8),
    /// Change instance `i`'s weight.
    Metadata(u8, u8),
    /// Every registrar's keepalives stall for this many seconds, while the
    /// instances live on (a long GC pause; on a real etcd, a partition of
    /// the registrars alone).
    StallKeepalives(u8),
    /// Overwrite instance `i`'s key with another address, behind its back.
    Overwrite(u8),
    /// Stop resolver `r` and start a new one in its place.
    RestartResolver(u8),
    /// The two members the clients do not use stop for this many seconds:
    /// no leader, so writes and keepalives wait and fail, and no lease
    /// expires (fake only: a three-member cluster).
    LoseQuorum(u8),
    /// The member the clients use is cut off from the others for this many
    /// seconds: its writes and keepalives wait and fail, its watch events
    /// are held, and the others' leader expires the leases it cannot renew
    /// (fake only).
    IsolateMember(u8),
    /// Leadership moves to the next member: term + 1, every lease renewed
    /// (fake only).
    MoveLeader,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(i) => write!(f, "start instance {i}"),
            Self::Stop(i) => write!(f, "deregister instance {i}"),
            Self::Kill(i) => write!(f, "kill instance {i}"),
            Self::Wait(s) => write!(f, "wait {s}s"),
            Self::Partition(s) => write!(f, "partition for {s}s"),
            Self::DropConnections => write!(f, "drop connections"),
            Self::Restart => write!(f, "restart etcd"),
            Self::CompactGap(i) => write!(f, "watch gap: delete instance {i}'s key, compact"),
            Self::DieInGap(i) => write!(f, "watch gap: instance {i} dies, compact"),
            Self::DeleteKey(i) => write!(f, "delete instance {i}'s key"),
            Self::Errors(n) => write!(f, "fail the next {n} calls"),
            Self::Metadata(i, w) => write!(f, "set instance {i}'s weight to {w}"),
            Self::StallKeepalives(s) => write!(f, "stall keepalives for {s}s"),
            Self::Overwrite(i) => write!(f, "overwrite instance {i}'s key"),
            Self::RestartResolver(r) => write!(f, "restart resolver {r}"),
            Self::LoseQuorum(s) => write!(f, "the other members stop for {s}s"),
            Self::IsolateMember(s) => write!(f, "the clients' member is cut off for {s}s"),
            Self::MoveLeader => write!(f, "move the leader"),
        }
    }
}

/// What a target allows and how long things take there.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The registrations' TTL, in seconds.
    pub ttl: i64,
    /// The longest backoff of registrars and resolvers.
    pub backoff_max: Duration,
    /// The longest wait or partition step, in seconds.
    pub max_pause: u8,
    /// The longest schedule.
    pub max_steps: usize,
    /// Beyond the TTL and the longest backoff, how long after healing
    /// convergence may take: the round trips of a re-registration and a
    /// re-list (nothing on the fake; real etcd checks lease expiry only
    /// every 500 ms).
    pub slack: Duration,
    /// Whether the target is the fake (restarts and injected errors exist
    /// only there).
    pub fake: bool,
}

impl Profile {
    /// The fake, in virtual time: long TTLs cost nothing.
    pub fn fake() -> Self {
        Self {
            ttl: 6,
            backoff_max: Duration::from_secs(2),
            max_pause: 20,
            max_steps: 16,
            slack: Duration::from_secs(1),
            fake: true,
        }
    }

    /// A real etcd: every second is a real one, so TTLs are short (etcd's
    /// minimum is 2 s) and schedules few and brief.
    pub fn real() -> Self {
        Self {
            ttl: 3,
            backoff_max: Duration::from_secs(1),
            max_pause: 6,
            max_steps: 6,
            slack: Duration::from_secs(3),
            fake: false,
        }
    }

    /// The profile for [`Target::current`].
    pub fn current() -> Self {
        if Target::current().is_fake() {
            Self::fake()
        } else {
            Self::real()
        }
    }

    /// After the last fault is lifted, the bound on convergence: a call
    /// hung by the fault may take up to a TTL to give up, then a backoff,
    /// then the round trips.
    pub fn recovery_bound(&self) -> Duration {
        Duration::from_secs(self.ttl as u64) + self.backoff_max + self.slack
    }

    /// The steps this profile never generates.
    pub fn left_out(&self) -> &'static [&'static str] {
        if self.fake {
            &[]
        } else {
            &[
                "restart etcd",
                "fail the next calls",
                "member faults (stopped, isolated, leader moved)",
            ]
        }
    }
}

/// Schedules of up to `profile.max_steps` steps.
pub fn schedule(profile: Profile) -> impl Strategy<Value = Vec<Step>> {
    let instance = || 0..INSTANCES;
    let pause = 1..=profile.max_pause;
    let mut steps: Vec<(u32, BoxedStrategy<Step>)> = vec![
        (4, instance().prop_map(Step::Start).boxed()),
        (1, instance().prop_map(Step::Stop).boxed()),
        (1, instance().prop_map(Step::Kill).boxed()),
        (3, pause.clone().prop_map(Step::Wait).boxed()),
        (1, pause.prop_map(Step::Partition).boxed()),
        (1, Just(Step::DropConnections).boxed()),
        (1, instance().prop_map(Step::CompactGap).boxed()),
        (1, instance().prop_map(Step::DieInGap).boxed()),
        (1, instance().prop_map(Step::DeleteKey).boxed()),
        (1, instance().prop_map(Step::Overwrite).boxed()),
        (
            1,
            (1..=profile.max_pause)
                .prop_map(Step::StallKeepalives)
                .boxed(),
        ),
        (
            1,
            (0..RESOLVERS as u8).prop_map(Step::RestartResolver).boxed(),
        ),
        (
            1,
            (instance(), 1..9u8)
                .prop_map(|(i, w)| Step::Metadata(i, w))
                .boxed(),
        ),
    ];
    if profile.fake {
        steps.push((1, Just(Step::Restart).boxed()));
        steps.push((1, (1..4u8).prop_map(Step::Errors).boxed()));
        let outage = 1..=profile.max_pause;
        steps.push((1, outage.clone().prop_map(Step::LoseQuorum).boxed()));
        steps.push((1, outage.prop_map(Step::IsolateMember).boxed()));
        steps.push((1, Just(Step::MoveLeader).boxed()));
    }
    proptest::collection::vec(Union::new_weighted(steps), 1..=profile.max_steps)
}

fn addr(i: u8) -> String {
    format!("10.0.0.{}:50051", i + 1)
}

/// Runs `cases` random schedules against [`Target::current`]: at most 3
/// on a real etcd, where each case takes seconds of real waits.
///
/// # Panics
///
/// When a property fails: with the shrunk schedule and the seed.
pub fn registrar_and_resolver_converge(cases: u32) {
    let cases = if Target::current().is_fake() {
        cases
    } else {
        cases.clamp(1, 3)
    };
    if let Err(failure) = run_property(cases, Variant::Correct) {
        panic!("{failure}");
    }
}

/// The resolver a case drives: the library's, or one flawed on purpose.
enum AnyResolver {
    Correct(Resolver),
    Flawed(flawed::FlawedResolver),
}

impl AnyResolver {
    fn snapshot(&self) -> Snapshot {
        self.subscribe().borrow().clone()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<Snapshot> {
        match self {
            Self::Correct(resolver) => resolver.subscribe(),
            Self::Flawed(resolver) => resolver.subscribe(),
        }
    }
}

/// Resolvers with a classic bug built in, to show that the property
/// catches each bug class. They are test support, so they live here and
/// not in the library: a plain list-then-watch loop on etcd-client and the
/// public [`GoNaming`] codec, correct but for its one flaw.
mod flawed {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use etcd_client::{Client, EventType, GetOptions, WatchOptions};
    use etcd_grpc_discovery::{Codec, Endpoint, GoNaming, Snapshot};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    /// The bug a [`FlawedResolver`] has.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Flaw {
        /// On listing again it merges into the old snapshot instead of
        /// replacing it, so instances deleted during a watch gap stay.
        MergeOnRelist,
        /// On an error it empties its snapshot, so every client loses
        /// every instance while etcd still has them.
        ClearOnError,
    }

    /// A resolver with a [`Flaw`]; dropping it stops it.
    pub(super) struct FlawedResolver {
        snapshot: watch::Receiver<Snapshot>,
        task: JoinHandle<()>,
    }

    impl FlawedResolver {
        pub(super) fn start(
            client: Client,
            service: &str,
            flaw: Flaw,
            backoff_max: Duration,
        ) -> Self {
            let (tx, snapshot) = watch::channel(Snapshot::default());
            let task = tokio::spawn(run(client, service.to_owned(), flaw, tx, backoff_max));
            Self { snapshot, task }
        }

        pub(super) fn subscribe(&self) -> watch::Receiver<Snapshot> {
            self.snapshot.clone()
        }
    }

    impl Drop for FlawedResolver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Lists `<service>/`, then watches from the next revision; lists again
    /// when the history is compacted, resumes the watch after any other
    /// end, with a doubling delay between failures.
    async fn run(
        mut client: Client,
        service: String,
        flaw: Flaw,
        tx: watch::Sender<Snapshot>,
        backoff_max: Duration,
    ) {
        let prefix = format!("{service}/");
        let first_delay = Duration::from_millis(50);
        let mut delay = first_delay;
        let decode = |key: &[u8], value: &[u8]| GoNaming.decode(&service, key, value);
        'list: loop {
            let listed = match client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
            {
                Ok(listed) => listed,
                Err(_) => {
                    failed(&tx, flaw);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(backoff_max);
                    continue;
                }
            };
            let mut revision = listed.header().map_or(0, |h| h.revision());
            let endpoints: BTreeMap<String, Endpoint> = listed
                .kvs()
                .iter()
                .filter_map(|kv| decode(kv.key(), kv.value()))
                .map(|e| (e.id.clone(), e))
                .collect();
            tx.send_modify(|snapshot| {
                match flaw {
                    // The flaw: instances missing from the new list stay.
                    Flaw::MergeOnRelist => snapshot.endpoints.extend(endpoints),
                    Flaw::ClearOnError => snapshot.endpoints = endpoints,
                }
                snapshot.revision = revision;
                snapshot.synced = true;
                snapshot.stale = false;
            });
            loop {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1);
                if let Ok(mut stream) = client.watch(prefix.as_str(), Some(options)).await {
                    while let Ok(Some(resp)) = stream.message().await {
                        let header_revision = resp.header().map_or(0, |h| h.revision());
                        if resp.compact_revision() != 0 || header_revision < revision {
                            continue 'list;
                        }
                        if resp.canceled() {
                            break;
                        }
                        if resp.created() {
                            delay = first_delay;
                            tx.send_if_modified(|s| std::mem::replace(&mut s.stale, false));
                            continue;
                        }
                        tx.send_modify(|snapshot| {
                            for event in resp.events() {
                                let Some(kv) = event.kv() else { continue };
                                revision = revision.max(kv.mod_revision());
                                match event.event_type() {
                                    EventType::Put => {
                                        if let Some(e) = decode(kv.key(), kv.value()) {
                                            snapshot.endpoints.insert(e.id.clone(), e);
                                        }
                                    }
                                    EventType::Delete => {
                                        let id = kv.key().strip_prefix(prefix.as_bytes());
                                        if let Some(id) =
                                            id.and_then(|id| std::str::from_utf8(id).ok())
                                        {
                                            snapshot.endpoints.remove(id);
                                        }
                                    }
                                }
                            }
                            revision = revision.max(header_revision);
                            snapshot.revision = revision;
                            snapshot.stale = false;
                        });
                    }
                }
                failed(&tx, flaw);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff_max);
            }
        }
    }

    /// A call or the watch failed: mark the snapshot stale, and (the other
    /// flaw) empty it.
    fn failed(tx: &watch::Sender<Snapshot>, flaw: Flaw) {
        tx.send_modify(|snapshot| {
            if flaw == Flaw::ClearOnError {
                snapshot.endpoints.clear();
            }
            snapshot.stale = true;
        });
    }
}

/// Which resolver the property drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The real one.
    Correct,
    /// One that merges on re-listing instead of replacing (a known bug
    /// class), to show the property catches it (built here, not in the
    /// library).
    MergesOnRelist,
    /// One that empties its snapshot on errors (another known bug class),
    /// to show the property catches flapping to an empty set.
    ClearsOnError,
}

/// The tests that run only on the fake (they replay schedules in virtual
/// time, inject errors or restart etcd). On a real etcd each one calls
/// [`skip_unless_fake`], which says so, and the last to skip prints the
/// count.
pub const FAKE_ONLY_TESTS: [&str; 7] = [
    "a_schedule_replays_identically_from_its_seed",
    "regression_key_deleted_during_a_watch_outage_is_restored",
    "an_overwritten_key_of_an_instance_that_dies_goes_away",
    "a_resolver_that_merges_on_relist_is_caught",
    "a_resolver_that_empties_on_errors_is_caught",
    "a_death_in_a_watch_gap_is_seen_only_by_replacing",
    "regression_a_failed_restore_is_retried",
];

/// Whether the fake-only test `name` must skip (the target is a real
/// etcd). A skip is never silent: it prints `SKIPPED: <name>: <why>`, past
/// the harness's capture, and the last of [`FAKE_ONLY_TESTS`] to skip
/// prints how many did.
///
/// # Panics
///
/// If `name` is not in [`FAKE_ONLY_TESTS`] (on any target, so the list
/// cannot fall behind the tests).
pub fn skip_unless_fake(name: &str) -> bool {
    static SKIPPED: AtomicU64 = AtomicU64::new(0);
    assert!(
        FAKE_ONLY_TESTS.contains(&name),
        "{name} must be listed in FAKE_ONLY_TESTS"
    );
    if Target::current().is_fake() {
        return false;
    }
    crate::say(&format!(
        "SKIPPED: {name}: runs only on the fake (ETCD_ENDPOINTS names a real etcd)"
    ));
    let skipped = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
    if skipped == FAKE_ONLY_TESTS.len() as u64 {
        crate::say(&format!(
            "SKIPPED: {skipped} of the discovery property tests, which run only on the fake: {}",
            FAKE_ONLY_TESTS.join(", ")
        ));
    }
    true
}

/// Runs the property against [`Target::current`]; `Err` holds the shrunk
/// failing schedule and the seed.
///
/// # Errors
///
/// When a schedule breaks a property.
pub fn run_property(cases: u32, variant: Variant) -> Result<(), String> {
    let profile = Profile::current();
    if !profile.left_out().is_empty() {
        crate::say(&format!(
            "discovery property on a real etcd: left out (fake only): {}",
            profile.left_out().join(", ")
        ));
    }
    crate::properties::run_seeded(
        cases,
        &schedule(profile),
        profile.fake,
        |steps, seed| async move { check(steps, seed, variant, profile).await.map(drop) },
    )
}

/// Runs one schedule against [`Target::current`] and checks the properties
/// (for regression tests of schedules the property once shrank to).
/// Against the fake it must run in paused tokio time.
///
/// # Errors
///
/// When the schedule breaks a property.
pub async fn check_schedule(steps: Vec<Step>, seed: u64, variant: Variant) -> Result<(), String> {
    check(steps, seed, variant, Profile::current())
        .await
        .map(drop)
}

/// Runs one schedule on the fake (in paused tokio time) and returns its
/// trace: every step and every snapshot a resolver published, each with
/// its virtual time. The same schedule and seed give the same trace.
///
/// # Errors
///
/// When the schedule breaks a property.
pub async fn trace_schedule(steps: Vec<Step>, seed: u64) -> Result<Vec<String>, String> {
    check(steps, seed, Variant::Correct, Profile::fake()).await
}

/// The etcd the case runs against, and how faults reach it.
enum Backend {
    Fake(Arc<FakeEtcd>),
    Real {
        /// In front of the registrars.
        registrars: Bridge,
        /// In front of the resolvers.
        resolvers: Bridge,
    },
}

/// What a case holds: the backend, its clients, and the model of which
/// instances should be registered.
struct World {
    backend: Backend,
    profile: Profile,
    service: String,
    seed: u64,
    /// The registrars' client.
    registrar_client: Client,
    /// Out-of-band writes and compaction.
    admin: Client,
    /// What etcd holds, past every fault.
    reader: Reader,
    running: BTreeMap<u8, Registration>,
    /// The weight each running instance last asked for.
    weights: BTreeMap<u8, u8>,
    trace: Trace,
}

/// Reads what etcd holds, past every fault: the fake's store directly, a
/// real etcd through the direct client.
#[derive(Clone)]
struct Reader {
    prefix: String,
    etcd: ReadFrom,
}

#[derive(Clone)]
enum ReadFrom {
    Fake(Arc<FakeEtcd>),
    Real(Box<Client>),
}

impl Reader {
    /// The instances registered at `revision` (0: now), decoded as the
    /// resolvers decode them, by key; `Ok(None)` if it is compacted.
    async fn held_at(&self, revision: i64) -> Result<Option<Instances>, String> {
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = match &self.etcd {
            ReadFrom::Fake(etcd) => match etcd.read_prefix(&self.prefix, revision) {
                Ok(kvs) => kvs,
                Err(fake_etcd::ControlError::Compacted { .. }) => return Ok(None),
                Err(err) => return Err(format!("reading the fake at {revision}: {err}")),
            },
            ReadFrom::Real(client) => {
                let options = GetOptions::new().with_prefix().with_revision(revision);
                match client
                    .clone()
                    .get(self.prefix.as_str(), Some(options))
                    .await
                {
                    Ok(resp) => resp
                        .kvs()
                        .iter()
                        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                        .collect(),
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.code() == tonic::Code::OutOfRange =>
                    {
                        return Ok(None)
                    }
                    Err(err) => return Err(format!("reading etcd at revision {revision}: {err}")),
                }
            }
        };
        let service = self.prefix.trim_end_matches('/');
        Ok(Some(
            kvs.iter()
                .filter_map(|(key, value)| GoNaming.decode(service, key, value))
                .map(|e| (e.id.clone(), e))
                .collect(),
        ))
    }

    /// [`Reader::held_at`], retried a few times: a real etcd's answer may
    /// be slow to come while the machine is busy.
    async fn held_at_patiently(&self, revision: i64) -> Result<Option<Instances>, String> {
        let mut tries = 0;
        loop {
            match self.held_at(revision).await {
                Err(_) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }
}

/// Instances by ID (the key after `<service>/`).
type Instances = BTreeMap<String, Endpoint>;

/// The case's log, shared with the resolver monitors.
#[derive(Clone)]
struct Trace {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    fn record(&self, line: impl std::fmt::Display) {
        let at = self.start.elapsed().as_millis();
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{at:>7} ms  {line}"));
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Distinguishes cases on a shared real etcd.
static CASE: AtomicU64 = AtomicU64::new(0);

async fn connect_world(seed: u64, profile: Profile) -> Result<(World, Client), String> {
    let target = Target::current();
    if profile.fake {
        // Three members: the clients use the first; the others can fail
        // under it.
        let etcd = FakeEtcd::builder()
            .members(3)
            .time(TimeSource::Tokio)
            .seed(seed)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let connect = || async {
            let channel = etcd_client::Channel::Tonic(etcd.in_process_channel());
            Client::from_channel(channel, None)
                .await
                .map_err(|e| e.to_string())
        };
        let registrar_client = connect().await?;
        let resolver_client = connect().await?;
        let admin = connect().await?;
        let etcd = Arc::new(etcd);
        let world = World {
            reader: Reader {
                prefix: "svc/".to_owned(),
                etcd: ReadFrom::Fake(Arc::clone(&etcd)),
            },
            backend: Backend::Fake(etcd),
            profile,
            service: "svc".to_owned(),
            seed,
            registrar_client,
            admin,
            running: BTreeMap::new(),
            weights: BTreeMap::new(),
            trace: Trace::new(),
        };
        return Ok((world, resolver_client));
    }
    let endpoint = match target {
        Target::Real(endpoints) => endpoints[0].as_str(),
        Target::Fake => return Err("the real profile needs a real etcd".to_owned()),
    };
    let registrars = crate::bridge_to(endpoint).await?;
    let resolvers = crate::bridge_to(endpoint).await?;
    let connect = |endpoint: String| async move {
        Client::connect([endpoint], None)
            .await
            .map_err(|e| e.to_string())
    };
    let registrar_client = connect(registrars.endpoint()).await?;
    let resolver_client = connect(resolvers.endpoint()).await?;
    let admin = connect(endpoint.to_owned()).await?;
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let service = format!("conformance-discovery-{seed}-{case}");
    let world = World {
        reader: Reader {
            prefix: format!("{service}/"),
            etcd: ReadFrom::Real(Box::new(admin.clone())),
        },
        backend: Backend::Real {
            registrars,
            resolvers,
        },
        profile,
        service,
        seed,
        registrar_client,
        admin,
        running: BTreeMap::new(),
        weights: BTreeMap::new(),
        trace: Trace::new(),
    };
    Ok((world, resolver_client))
}

impl World {
    fn ttl(&self) -> Duration {
        Duration::from_secs(self.profile.ttl as u64)
    }

    fn key(&self, i: u8) -> String {
        format!("{}/{}", self.service, addr(i))
    }

    fn start(&mut self, i: u8) {
        if self.running.contains_key(&i) {
            return;
        }
        self.weights.remove(&i);
        let registration =
            Registrar::builder(self.registrar_client.clone(), &self.service, addr(i))
                .ttl(self.profile.ttl)
                .seed(self.seed ^ u64::from(i))
                .backoff(Duration::from_millis(100), self.profile.backoff_max)
                .start();
        self.running.insert(i, registration);
    }

    /// Every client loses etcd for `seconds`.
    async fn partition(&self, seconds: u8) {
        match &self.backend {
            Backend::Fake(etcd) => etcd.pause(),
            Backend::Real {
                registrars,
                resolvers,
            } => {
                registrars.pause();
                resolvers.pause();
            }
        }
        tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
        self.heal();
    }

    fn drop_connections(&self) {
        match &self.backend {
            Backend::Fake(etcd) => etcd.drop_connections(),
            Backend::Real {
                registrars,
                resolvers,
            } => {
                registrars.drop_connections();
                resolvers.drop_connections();
            }
        }
    }

    /// No watch can be opened until [`World::heal`]; open ones end. On the
    /// fake every watch fails (the registrars' own-key watches too); on a
    /// real etcd the resolvers' connections break and new ones hang.
    fn start_watch_outage(&self) {
        match &self.backend {
            Backend::Fake(etcd) => {
                etcd.fail_always(Rpc::Watch, errors::no_leader());
                etcd.end_watch_streams(errors::leader_changed());
            }
            Backend::Real { resolvers, .. } => {
                resolvers.pause();
                resolvers.drop_connections();
            }
        }
    }

    /// Lifts every fault.
    fn heal(&self) {
        match &self.backend {
            Backend::Fake(etcd) => {
                etcd.clear_faults();
                etcd.resume();
            }
            Backend::Real {
                registrars,
                resolvers,
            } => {
                registrars.resume();
                resolvers.resume();
            }
        }
    }

    /// A fault of the cluster's members, lifted before it returns (the
    /// fake's three-member cluster; nothing on a real etcd).
    async fn member_fault(&self, step: &Step) -> Result<(), String> {
        let Backend::Fake(etcd) = &self.backend else {
            return Ok(());
        };
        let fault = |err: fake_etcd::ControlError| format!("{step:?}: {err}");
        let endpoint = etcd.endpoint();
        let members = etcd.members();
        let home = members
            .iter()
            .find(|m| m.endpoint.as_deref() == Some(endpoint.as_str()))
            .map(|m| m.id)
            .ok_or("the clients' member is not in the cluster")?;
        let others: Vec<u64> = members
            .iter()
            .map(|m| m.id)
            .filter(|&id| id != home)
            .collect();
        match *step {
            Step::LoseQuorum(seconds) => {
                for &id in &others {
                    etcd.stop_member(id).await.map_err(fault)?;
                }
                tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
                for &id in &others {
                    etcd.start_member(id).await.map_err(fault)?;
                }
            }
            Step::IsolateMember(seconds) => {
                etcd.isolate_member(home).map_err(fault)?;
                tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
                etcd.heal_member(home).map_err(fault)?;
            }
            Step::MoveLeader => {
                let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
                let leader = etcd.leader().ok_or("no leader to move")?;
                let at = ids.iter().position(|&id| id == leader).unwrap_or(0);
                etcd.move_leader(ids[(at + 1) % ids.len()]).map_err(fault)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Compacts all history up to now.
    async fn compact(&self) -> Result<(), String> {
        match &self.backend {
            // Nothing new to compact (compacted at this revision already)
            // is no failure.
            Backend::Fake(etcd) => match etcd.compact(etcd.revision()) {
                Ok(()) | Err(fake_etcd::ControlError::Compacted { .. }) => Ok(()),
                Err(err) => Err(format!("compacting the fake: {err}")),
            },
            Backend::Real { .. } => {
                let mut admin = self.admin.clone();
                let now = admin
                    .get(self.service.as_str(), None)
                    .await
                    .map_err(|e| e.to_string())?
                    .header()
                    .map_or(0, |h| h.revision());
                match admin.compact(now, None).await {
                    Ok(_) => Ok(()),
                    // Nothing was written since the last compaction.
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.code() == tonic::Code::OutOfRange =>
                    {
                        Ok(())
                    }
                    Err(err) => Err(err.to_string()),
                }
            }
        }
    }

    async fn delete_key(&self, i: u8) {
        // Under injected errors this may fail, like any client's call.
        let _ = self.admin.clone().delete(self.key(i), None).await;
    }

    async fn apply(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Start(i) => self.start(i),
            Step::Stop(i) => {
                if let Some(registration) = self.running.remove(&i) {
                    // During an outage a deregister may fail; the key then
                    // goes with its lease, like a killed instance's.
                    let _ = registration.deregister().await;
                }
            }
            Step::Kill(i) => {
                self.running.remove(&i);
            }
            Step::Wait(s) => tokio::time::sleep(Duration::from_secs(u64::from(s))).await,
            Step::Partition(s) => self.partition(s).await,
            Step::DropConnections => self.drop_connections(),
            Step::Restart => {
                if let Backend::Fake(etcd) = &self.backend {
                    etcd.restart().await.map_err(|e| e.to_string())?;
                }
            }
            Step::LoseQuorum(_) | Step::IsolateMember(_) | Step::MoveLeader => {
                self.member_fault(step).await?;
            }
            Step::CompactGap(i) => {
                self.start_watch_outage();
                // Long enough for killed instances' leases to expire unseen.
                tokio::time::sleep(self.ttl() + Duration::from_secs(1)).await;
                self.delete_key(i).await;
                self.compact().await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.heal();
            }
            Step::DieInGap(i) => {
                self.start_watch_outage();
                self.running.remove(&i);
                tokio::time::sleep(self.ttl() + Duration::from_secs(1)).await;
                self.compact().await?;
                self.heal();
            }
            Step::DeleteKey(i) => self.delete_key(i).await,
            Step::Errors(n) => {
                if let Backend::Fake(etcd) = &self.backend {
                    etcd.fail_next(Rpc::Any, usize::from(n), errors::request_timed_out());
                }
            }
            Step::StallKeepalives(s) => {
                match &self.backend {
                    Backend::Fake(etcd) => {
                        etcd.fail_always(Rpc::LeaseKeepAlive, errors::request_timed_out());
                        etcd.end_keepalive_streams(errors::request_timed_out());
                    }
                    Backend::Real { registrars, .. } => registrars.pause(),
                }
                tokio::time::sleep(Duration::from_secs(u64::from(s))).await;
                self.heal();
            }
            Step::Overwrite(i) => {
                // Only a running instance's, and on a lease of the same TTL
                // that nobody renews (another process squatting on the
                // key): if the instance dies before putting its own value
                // back, the squatter's key goes too, as etcd would have it.
                if self.running.contains_key(&i) {
                    let foreign = r#"{"Op":0,"Addr":"10.9.9.9:9999","Metadata":null}"#;
                    let mut admin = self.admin.clone();
                    if let Ok(lease) = admin.lease_grant(self.profile.ttl, None).await {
                        let on_lease = PutOptions::new().with_lease(lease.id());
                        let _ = admin.put(self.key(i), foreign, Some(on_lease)).await;
                    }
                }
            }
            Step::RestartResolver(_) => {}
            Step::Metadata(i, w) => {
                if let Some(registration) = self.running.get(&i) {
                    // Even if this fails (an outage), the registration must
                    // get the new metadata into etcd once it can.
                    let _ = registration
                        .update_metadata(serde_json::json!({ "weight": w }))
                        .await;
                    self.weights.insert(i, w);
                }
            }
        }
        Ok(())
    }

    /// The metadata instance `i` last asked for.
    fn expected_metadata(&self, i: u8) -> serde_json::Value {
        self.weights.get(&i).map_or(
            serde_json::Value::Null,
            |w| serde_json::json!({ "weight": w }),
        )
    }

    fn live(&self) -> BTreeSet<String> {
        self.running.keys().map(|i| addr(*i)).collect()
    }

    /// What keeps the world from having converged, if anything: every
    /// running registrar live, etcd holding one key per running instance
    /// and no other, every resolver seeing exactly those, and not stale.
    async fn divergence(&self, resolvers: &[AnyResolver]) -> Option<String> {
        let live = self.live();
        for (i, registration) in &self.running {
            if !registration.state().is_live() {
                return Some(format!(
                    "instance {i} is not live: {:?}",
                    registration.state()
                ));
            }
        }
        let registered = match self.reader.held_at_patiently(0).await {
            Ok(Some(registered)) => registered,
            Ok(None) => return Some("etcd cannot be read now".to_owned()),
            Err(err) => return Some(err),
        };
        let ids: BTreeSet<String> = registered.keys().cloned().collect();
        if ids != live {
            return Some(format!("etcd holds {ids:?}, live instances are {live:?}"));
        }
        for i in self.running.keys() {
            let endpoint = &registered[&addr(*i)];
            let metadata = self.expected_metadata(*i);
            if endpoint.addr != addr(*i) || endpoint.metadata != metadata {
                return Some(format!(
                    "etcd holds {endpoint:?} for instance {i}, which registered {} with {metadata}",
                    addr(*i)
                ));
            }
        }
        for (r, resolver) in resolvers.iter().enumerate() {
            let snapshot = resolver.snapshot();
            if snapshot.endpoints != registered || snapshot.stale {
                return Some(format!(
                    "resolver {r} sees {snapshot:?}, etcd holds {registered:?}"
                ));
            }
        }
        None
    }
}

/// Follows one resolver's published snapshots, recording each and
/// checking it against what etcd held at its revision: a resolver must
/// never publish a set etcd did not hold (an empty set after an error, a
/// deleted instance kept after a re-list). The first violation goes to
/// `failures`.
async fn monitor(
    reader: Reader,
    r: usize,
    snapshots: tokio::sync::watch::Receiver<Snapshot>,
    trace: Trace,
    failures: Failures,
) {
    if let Some(failure) = first_wrong_snapshot(reader, r, snapshots, trace).await {
        failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(failure);
    }
}

/// What the monitors found wrong, shared with the case.
type Failures = Arc<Mutex<Vec<String>>>;

/// The body of [`monitor`]: `Some` at the first wrong snapshot, `None` when
/// the resolver is gone.
async fn first_wrong_snapshot(
    reader: Reader,
    r: usize,
    mut snapshots: tokio::sync::watch::Receiver<Snapshot>,
    trace: Trace,
) -> Option<String> {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.synced && snapshot.revision > 0 {
            let seen: Vec<&str> = snapshot.endpoints.keys().map(String::as_str).collect();
            trace.record(format_args!(
                "resolver {r} at revision {}: {seen:?}{}",
                snapshot.revision,
                if snapshot.stale { " (stale)" } else { "" }
            ));
            // A compacted revision cannot be checked; later ones will be.
            match reader.held_at_patiently(snapshot.revision).await {
                Ok(Some(held)) if held != snapshot.endpoints => {
                    let held: Vec<&Endpoint> = held.values().collect();
                    let seen: Vec<&Endpoint> = snapshot.endpoints.values().collect();
                    return Some(format!(
                        "resolver {r} published {seen:?} at revision {}, when etcd held {held:?}",
                        snapshot.revision
                    ));
                }
                Ok(_) => {}
                Err(err) => {
                    return Some(format!("resolver {r}'s snapshot cannot be checked: {err}"))
                }
            }
        }
        if snapshots.changed().await.is_err() {
            return None;
        }
    }
}

async fn check(
    steps: Vec<Step>,
    seed: u64,
    variant: Variant,
    profile: Profile,
) -> Result<Vec<String>, String> {
    let (mut world, resolver_client) = connect_world(seed, profile).await?;
    let trace = world.trace.clone();
    let service = world.service.clone();
    let start_resolver = |generation: u64| match variant {
        Variant::Correct => AnyResolver::Correct(
            Resolver::builder(resolver_client.clone(), service.as_str())
                .seed(seed.wrapping_add(100 + generation))
                .backoff(Duration::from_millis(50), profile.backoff_max)
                .start(),
        ),
        Variant::MergesOnRelist => AnyResolver::Flawed(flawed::FlawedResolver::start(
            resolver_client.clone(),
            &service,
            flawed::Flaw::MergeOnRelist,
            profile.backoff_max,
        )),
        Variant::ClearsOnError => AnyResolver::Flawed(flawed::FlawedResolver::start(
            resolver_client.clone(),
            &service,
            flawed::Flaw::ClearOnError,
            profile.backoff_max,
        )),
    };
    let reader = world.reader.clone();
    let failures = Failures::default();
    let watch_resolver = |r: usize, resolver: &AnyResolver| {
        tokio::spawn(monitor(
            reader.clone(),
            r,
            resolver.subscribe(),
            trace.clone(),
            Arc::clone(&failures),
        ))
    };
    let mut resolvers: Vec<AnyResolver> = (0..RESOLVERS).map(start_resolver).collect();
    let mut monitors: Vec<_> = resolvers
        .iter()
        .enumerate()
        .map(|(r, resolver)| watch_resolver(r, resolver))
        .collect();
    let mut generation = RESOLVERS;
    // Monitors of resolvers that were restarted: they end with their
    // resolver, and what they found still counts.
    let mut retired = Vec::new();
    let failed = || {
        !failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    };

    for step in &steps {
        trace.record(format_args!("{step:?}"));
        if let Step::RestartResolver(r) = *step {
            let r = usize::from(r);
            resolvers[r] = start_resolver(generation);
            generation += 1;
            retired.push(std::mem::replace(
                &mut monitors[r],
                watch_resolver(r, &resolvers[r]),
            ));
        }
        world.apply(step).await?;
        if failed() {
            break;
        }
    }

    // Heal; then everything must converge within the bound, and stay so.
    let healed_at = Instant::now();
    world.heal();
    trace.record("healed");
    let bound = profile.recovery_bound();
    let converged = loop {
        if failed() {
            break Ok(());
        }
        let divergence = world.divergence(&resolvers).await;
        match divergence {
            None => break Ok(()),
            Some(why) if healed_at.elapsed() > bound => {
                break Err(format!(
                    "not converged {:?} after healing (bound: {bound:?}): {why}",
                    healed_at.elapsed()
                ))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    if converged.is_ok() {
        trace.record(format_args!(
            "converged {} ms after healing",
            healed_at.elapsed().as_millis()
        ));
        // Stay converged: no stale entry coming back, no late flapping.
        tokio::time::sleep(Duration::from_secs(profile.ttl as u64 + 1)).await;
    }
    let stays = world.divergence(&resolvers).await;

    // Without their resolvers the monitors end, once their last check is
    // done.
    drop(resolvers);
    for monitor in monitors.into_iter().chain(retired) {
        if tokio::time::timeout(Duration::from_secs(10), monitor)
            .await
            .is_err()
        {
            return Err("a resolver's monitor did not end".to_owned());
        }
    }
    let published_wrong = failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first()
        .cloned();
    if !profile.fake {
        // Leave nothing behind on a shared etcd.
        for (_, registration) in world.running {
            let _ = registration.deregister().await;
        }
    }
    if let Some(failure) = published_wrong {
        return Err(failure);
    }
    converged?;
    if let Some(why) = stays {
        return Err(format!("converged, then diverged: {why}"));
    }
    Ok(trace.lines())
}
