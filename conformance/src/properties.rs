//! Property tests: random schedules of writes, lease expiries and
//! compactions, with etcd's watch guarantees checked on what watchers saw.
//!
//! Each case runs against the target: a fresh fake per case (many cases, in
//! virtual time), or the real etcd under `ETCD_ENDPOINTS` (few cases, real
//! waits for lease expiry, history held exclusively because cases compact).
//! Runs are seeded; a failure names the seed to replay it with
//! [`SEED_VAR`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use etcd_proto::etcdserverpb::{
    request_op::Request, CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchResponse,
};
use etcd_proto::mvccpb::{event::EventType, Event, KeyValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::scenarios::b;
use crate::scenarios::watch::RawWatch;
use crate::{Scenario, Target};

/// Set to replay a run: the seed a failing run printed.
pub const SEED_VAR: &str = "FAKE_ETCD_SEED";

/// Keys a schedule writes: few, so that writes collide.
const KEYS: u8 = 4;

/// One step of a schedule.
#[derive(Debug, Clone)]
pub enum Step {
    /// Put `k<key>` = `value`.
    Put {
        /// Which key.
        key: u8,
        /// Its new value.
        value: u8,
    },
    /// Delete `k<key>`.
    Delete {
        /// Which key.
        key: u8,
    },
    /// Delete every key of the schedule.
    DeleteAll,
    /// One txn: put `k<put>`, delete `k<delete>`.
    Txn {
        /// The key put.
        put: u8,
        /// The key deleted (another one).
        delete: u8,
    },
    /// Grant a 2 s lease and put these keys with it.
    Lease {
        /// The keys attached.
        keys: Vec<u8>,
    },
    /// Let every lease expire.
    Expire,
    /// Compact at the current revision.
    Compact,
}

/// Schedules of up to `max` steps; lease expiry (a real wait on a real etcd)
/// is rarer there.
pub fn schedule(max: usize) -> impl Strategy<Value = Vec<Step>> {
    let expire_weight = if Target::current().is_fake() { 2 } else { 1 };
    let step = prop_oneof![
        6 => (0..KEYS, any::<u8>()).prop_map(|(key, value)| Step::Put { key, value }),
        3 => (0..KEYS).prop_map(|key| Step::Delete { key }),
        1 => Just(Step::DeleteAll),
        3 => (0..KEYS, 0..KEYS).prop_filter("distinct keys", |(a, b)| a != b).prop_map(|(put, delete)| Step::Txn { put, delete }),
        2 => proptest::collection::vec(0..KEYS, 1..3).prop_map(|mut keys| { keys.sort(); keys.dedup(); Step::Lease { keys } }),
        expire_weight => Just(Step::Expire),
        1 => Just(Step::Compact),
    ];
    proptest::collection::vec(step, 1..max)
}

/// Runs `cases` random schedules (fewer on a real etcd), checking the watch
/// guarantees after each.
///
/// # Panics
///
/// When a guarantee fails, with the shrunk schedule and the seed.
pub fn watch_guarantees(cases: u32) {
    let cases = if Target::current().is_fake() {
        cases
    } else {
        cases.clamp(1, 4)
    };
    let result = run_seeded(cases, &schedule(24), false, |steps, _| {
        check_schedule(steps)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Runs `check` on `cases` values of `strategy` (`PROPTEST_CASES`
/// overrides the count, for a longer hunt), each on a fresh current-thread
/// runtime, paused if asked. The runner is seeded from [`SEED_VAR`] (or the
/// clock), and `check` gets the seed too; a failure comes back with the
/// shrunk value and the seed that replays the run.
///
/// # Errors
///
/// The shrunk failure, with how to replay it.
pub fn run_seeded<S, F, Fut>(cases: u32, strategy: &S, paused: bool, check: F) -> Result<(), String>
where
    S: Strategy,
    F: Fn(S::Value, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    run_with_seed(seed_from_env(), cases, strategy, paused, check)
}

/// [`run_seeded`] with this seed, whatever [`SEED_VAR`] says: for a fixed
/// set of seeds that a run always covers.
///
/// # Errors
///
/// The shrunk failure, with how to replay it.
pub fn run_with_seed<S, F, Fut>(
    seed: u64,
    cases: u32,
    strategy: &S,
    paused: bool,
    check: F,
) -> Result<(), String>
where
    S: Strategy,
    F: Fn(S::Value, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut runner = seeded_runner(seed, cases);
    let result = runner.run(strategy, |value| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .expect("runtime");
        runtime
            .block_on(check(value, seed))
            .map_err(TestCaseError::fail)
    });
    result.map_err(|failure| {
        format!("{failure}\nnote: rerun with {SEED_VAR}={seed} to replay this run")
    })
}

/// The seed of this run: [`SEED_VAR`] if set, else the clock.
pub fn seed_from_env() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// A proptest runner seeded with `seed`, so a failing run can be replayed
/// exactly. `PROPTEST_CASES` overrides the number of cases.
fn seeded_runner(seed: u64, cases: u32) -> TestRunner {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    // PROPTEST_CASES, proptest's own knob, asks for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    )
}

fn key(s: &Scenario, k: u8) -> String {
    s.key(&format!("k{k}"))
}

async fn current_revision(s: &Scenario) -> i64 {
    let probe = RangeRequest {
        key: b(s.key("probe")),
        ..Default::default()
    };
    s.kv()
        .range(probe)
        .await
        .expect("range")
        .into_inner()
        .header
        .expect("header")
        .revision
}

/// Applies a schedule, then checks every watcher against etcd's guarantees.
async fn check_schedule(steps: Vec<Step>) -> Result<(), String> {
    let _history = crate::exclusive_history().await;
    let s = crate::scenario("watch_guarantees").await;
    let prefix_watch = |start_revision: i64| WatchCreateRequest {
        key: b(s.prefix()),
        range_end: s.prefix_end().into(),
        start_revision,
        prev_kv: true,
        ..Default::default()
    };
    let start = current_revision(&s).await + 1;
    let mut live = RawWatch::open(&s, prefix_watch(0)).await;
    expect_created(&mut live).await?;

    let mut compacted_at = None;
    let mut leases = Vec::new();
    // A second watcher joins halfway, from the start: it catches up from
    // history while writes go on, then follows them live.
    let mut late = None;
    for (i, step) in steps.iter().enumerate() {
        if i == steps.len() / 2 {
            let from = compacted_at.map_or(start, |c: i64| c.max(start));
            let mut w = RawWatch::open(&s, prefix_watch(from)).await;
            expect_created(&mut w).await?;
            late = Some((from, w));
        }
        apply(&s, step, &mut leases, &mut compacted_at).await?;
    }
    let sentinel = s.key("~sentinel");
    let put = PutRequest {
        key: b(&sentinel),
        value: b("end"),
        ..Default::default()
    };
    let end = s
        .kv()
        .put(put)
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .header
        .unwrap()
        .revision;

    let live_responses = read_until(&mut live, end).await?;
    check_ordered_unique_atomic(&live_responses)?;
    let live_events: Vec<Event> = live_responses
        .iter()
        .flat_map(|r| r.events.clone())
        .collect();
    check_prev_kv_and_final_state(&s, &live_events, compacted_at).await?;

    if let Some((from, mut w)) = late {
        let responses = match read_until(&mut w, end).await {
            Ok(responses) => responses,
            // Still catching up when a later step compacted its history:
            // etcd cancels it then (and tells it where), the fake may have
            // caught up first. Either is right.
            // (by this compaction or an earlier one of the schedule).
            Err(Cancel(r))
                if compacted_at
                    .is_some_and(|c| r.compact_revision <= c && from < r.compact_revision) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.to_string()),
        };
        let seen: Vec<Event> = responses.into_iter().flat_map(|r| r.events).collect();
        // It may have been sent some events before a compaction (with
        // prev_kv) and some after (where etcd leaves it out).
        let mut expected = live_from(&live_events, from, compacted_at);
        let mut unpruned: Vec<Event> = live_events
            .iter()
            .filter(|e| mod_revision(e) >= from)
            .cloned()
            .collect();
        // Joining from a compaction revision: etcd before 3.5.16 has dropped
        // the tombstone at that revision (see the replays below).
        let is_tombstone_at_from =
            |e: &Event| e.r#type == EventType::Delete as i32 && mod_revision(e) == from;
        if from != start && !seen.iter().any(is_tombstone_at_from) {
            expected.retain(|e| !is_tombstone_at_from(e));
            unpruned.retain(|e| !is_tombstone_at_from(e));
        }
        let canceled_by_compaction = seen.is_empty() && compacted_at.is_some_and(|c| from < c);
        let matches = canceled_by_compaction
            || seen.len() == expected.len()
                && seen
                    .iter()
                    .zip(&expected)
                    .zip(&unpruned)
                    .all(|((s, pruned), full)| s == pruned || s == full);
        if !matches {
            return Err(format!(
                "watcher joining from {from}: saw {seen:?}\nlive {expected:?}"
            ));
        }
    }

    // Reliable and resumable: a watcher replaying history from any point
    // sees exactly what the live one saw from there on.
    let mut resume_points = vec![start];
    resume_points.extend(
        live_events
            .iter()
            .step_by(3)
            .map(|e| mod_revision(e) + 1)
            .filter(|&r| r <= end),
    );
    for from in resume_points {
        let mut replay = RawWatch::open(&s, prefix_watch(from)).await;
        expect_created(&mut replay).await?;
        match compacted_at {
            Some(c) if from < c => {
                let r = replay.next().await;
                if !(r.canceled && r.compact_revision == c) {
                    return Err(format!(
                        "resume from {from} below compaction {c}: got {r:?}"
                    ));
                }
            }
            _ => {
                let replayed: Vec<Event> = read_until(&mut replay, end)
                    .await?
                    .into_iter()
                    .flat_map(|r| r.events)
                    .collect();
                let mut expected = live_from(&live_events, from, compacted_at);
                // etcd before 3.5.16 (3.5.1 among them) drops a tombstone
                // at exactly the compaction revision, so a replay from there
                // misses that delete; later versions (and the fake) keep it.
                if let Some(c) = compacted_at {
                    let is_tombstone_at_c =
                        |e: &Event| e.r#type == EventType::Delete as i32 && mod_revision(e) == c;
                    if !replayed.iter().any(is_tombstone_at_c) {
                        expected.retain(|e| !is_tombstone_at_c(e));
                    }
                }
                if replayed != expected {
                    return Err(format!(
                        "resume from {from}: replay {replayed:?}\nlive {expected:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn apply(
    s: &Scenario,
    step: &Step,
    leases: &mut Vec<i64>,
    compacted_at: &mut Option<i64>,
) -> Result<(), String> {
    let err = |e: tonic::Status| e.to_string();
    let mut kv = s.kv();
    match step {
        Step::Put { key: k, value } => {
            kv.put(PutRequest {
                key: b(key(s, *k)),
                value: vec![*value].into(),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        }
        Step::Delete { key: k } => {
            kv.delete_range(DeleteRangeRequest {
                key: b(key(s, *k)),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        }
        Step::DeleteAll => {
            let all = DeleteRangeRequest {
                key: b(s.key("k")),
                range_end: b(s.key("l")),
                prev_kv: false,
            };
            kv.delete_range(all).await.map_err(err)?;
        }
        Step::Txn { put, delete } => {
            let txn = TxnRequest {
                success: vec![
                    RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: b(key(s, *put)),
                            value: b("t"),
                            ..Default::default()
                        })),
                    },
                    RequestOp {
                        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                            key: b(key(s, *delete)),
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            };
            kv.txn(txn).await.map_err(err)?;
        }
        Step::Lease { keys } => {
            let id = crate::scenarios::lease::grant(s, 2).await;
            for k in keys {
                kv.put(PutRequest {
                    key: b(key(s, *k)),
                    value: b("l"),
                    lease: id,
                    ..Default::default()
                })
                .await
                .map_err(err)?;
            }
            leases.push(id);
        }
        Step::Expire => {
            if !leases.is_empty() {
                s.pass_ttl(2).await;
                leases.clear();
            }
        }
        Step::Compact => {
            let rev = current_revision(s).await;
            if compacted_at.is_none_or(|c| rev > c) {
                match kv
                    .compact(CompactionRequest {
                        revision: rev,
                        physical: false,
                    })
                    .await
                {
                    Ok(_) => {}
                    // On a shared etcd an earlier test may have compacted
                    // at this very revision already.
                    Err(status)
                        if status.code() == tonic::Code::OutOfRange
                            && !Target::current().is_fake() => {}
                    Err(status) => return Err(err(status)),
                }
                *compacted_at = Some(rev);
            }
        }
    }
    Ok(())
}

async fn expect_created(w: &mut RawWatch) -> Result<(), String> {
    let r = w.next().await;
    if r.created && !r.canceled {
        Ok(())
    } else {
        Err(format!("expected a created response, got {r:?}"))
    }
}

/// The live watcher's events from revision `from` on, as a watcher replaying
/// them after a compaction at `compacted_at` gets them: etcd reads prev_kv
/// when it sends, so it is gone where the revision before is compacted.
fn live_from(live: &[Event], from: i64, compacted_at: Option<i64>) -> Vec<Event> {
    live.iter()
        .filter(|e| mod_revision(e) >= from)
        .map(|e| {
            let mut e = e.clone();
            if compacted_at.is_some_and(|c| mod_revision(&e) - 1 < c) {
                e.prev_kv = None;
            }
            e
        })
        .collect()
}

fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Why [`read_until`] stopped early.
#[derive(Debug)]
enum ReadError {
    /// The watch was canceled, with this response.
    Cancel(WatchResponse),
    /// Nothing came in time.
    Timeout,
}
use ReadError::Cancel;

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cancel(r) => write!(f, "watch canceled: {r:?}"),
            ReadError::Timeout => write!(f, "no watch response in time"),
        }
    }
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> Self {
        e.to_string()
    }
}

/// Reads responses until one holds an event at revision `end`.
async fn read_until(w: &mut RawWatch, end: i64) -> Result<Vec<WatchResponse>, ReadError> {
    let mut responses = Vec::new();
    loop {
        // The fake answers at once; a real etcd syncs watchers every 100 ms.
        let patience = if Target::current().is_fake() { 2 } else { 9 };
        let r = tokio::time::timeout(Duration::from_secs(patience), w.next())
            .await
            .map_err(|_| ReadError::Timeout)?;
        if r.canceled {
            return Err(Cancel(r));
        }
        let done = r.events.iter().any(|e| mod_revision(e) == end);
        responses.push(r);
        if done {
            return Ok(responses);
        }
    }
}

/// Ordered (revisions never go back), unique (no event twice), atomic (a
/// revision's events all in one response).
fn check_ordered_unique_atomic(responses: &[WatchResponse]) -> Result<(), String> {
    let mut last = 0;
    let mut seen = HashSet::new();
    let mut revisions_seen_in = BTreeMap::new();
    for (i, r) in responses.iter().enumerate() {
        for e in &r.events {
            let rev = mod_revision(e);
            if rev < last {
                return Err(format!("event at {rev} after {last}"));
            }
            last = rev;
            let kv = e.kv.as_ref().unwrap();
            if !seen.insert((rev, kv.key.clone())) {
                return Err(format!("event for {:?} at {rev} twice", kv.key));
            }
            if *revisions_seen_in.entry(rev).or_insert(i) != i {
                return Err(format!("revision {rev} split across responses"));
            }
        }
    }
    Ok(())
}

/// prev_kv is what the key held before each event, and replaying the events
/// gives the store's final state.
async fn check_prev_kv_and_final_state(
    s: &Scenario,
    events: &[Event],
    compacted_at: Option<i64>,
) -> Result<(), String> {
    let mut state: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    for e in events {
        let kv = e.kv.as_ref().unwrap();
        let before = state.get(&kv.key[..]);
        let is_create = e.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        let expected_prev = if is_create { None } else { before };
        // etcd reads prev_kv when it sends; a compaction in between takes
        // it away.
        let pruned = e.prev_kv.is_none() && compacted_at.is_some_and(|c| kv.mod_revision - 1 < c);
        if e.prev_kv.as_ref() != expected_prev && !pruned {
            return Err(format!("prev_kv of {e:?}: expected {expected_prev:?}"));
        }
        if e.r#type == EventType::Put as i32 {
            state.insert(kv.key.to_vec(), kv.clone());
        } else {
            state.remove(&kv.key[..]);
        }
    }
    let all = RangeRequest {
        key: b(s.prefix()),
        range_end: s.prefix_end().into(),
        ..Default::default()
    };
    let now = s
        .kv()
        .range(all)
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .kvs;
    let replayed: Vec<KeyValue> = state.into_values().collect();
    if now != replayed {
        return Err(format!(
            "store holds {now:?}\nevents replay to {replayed:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_catches_reordering_duplicates_and_splits() {
        let event = |rev: i64, key: &str| Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: b(key),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let response = |events: Vec<Event>| WatchResponse {
            events,
            ..Default::default()
        };
        assert!(
            check_ordered_unique_atomic(&[response(vec![event(2, "a"), event(3, "a")])]).is_ok()
        );
        assert!(check_ordered_unique_atomic(&[
            response(vec![event(3, "a")]),
            response(vec![event(2, "a")])
        ])
        .is_err());
        assert!(
            check_ordered_unique_atomic(&[response(vec![event(2, "a"), event(2, "a")])]).is_err()
        );
        assert!(check_ordered_unique_atomic(&[
            response(vec![event(2, "a")]),
            response(vec![event(2, "b")])
        ])
        .is_err());
    }
}
