//! Load and soak: many writers, ten thousand watchers (some slow, some
//! never reading), a thousand leases kept alive and random faults, all at
//! once against the fake's binary, for a fixed number of writes. Then it
//! checks what must hold whatever the load:
//!
//! - no acknowledged write is lost (each key reads back at the revision
//!   its put was acknowledged with);
//! - every watcher that kept reading saw every acknowledged write of its
//!   prefix exactly once, in revision order, and nothing outside it;
//! - every lease kept alive is still alive (the binary runs on the real
//!   clock, with TTLs shorter than the run);
//! - the process's peak resident memory stayed under [`Soak::memory_bound`].
//!
//! A benchmark, not a test: it reports its figures (and fails the bench
//! run if a check fails), with no timing in any assertion.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
    watch_request::RequestUnion, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::targets::{self, control_call};
use crate::Error;

/// The shape of a soak run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Soak {
    pub(crate) writers: usize,
    pub(crate) puts_per_writer: usize,
    pub(crate) streams: usize,
    pub(crate) watchers_per_stream: usize,
    /// Streams whose reader sleeps between messages.
    pub(crate) slow_streams: usize,
    /// Streams that create their watchers and never read.
    pub(crate) idle_streams: usize,
    pub(crate) leases: usize,
    pub(crate) lease_ttl_secs: i64,
    /// The probability with which a put fails with an injected error.
    pub(crate) put_fault_probability: f64,
    pub(crate) memory_bound: u64,
}

impl Default for Soak {
    fn default() -> Self {
        Soak {
            writers: 64,
            puts_per_writer: 200,
            streams: 100,
            watchers_per_stream: 100,
            slow_streams: 10,
            idle_streams: 10,
            leases: 1_000,
            lease_ttl_secs: 10,
            put_fault_probability: 0.01,
            memory_bound: 256 << 20,
        }
    }
}

/// What a soak run did and found.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) wall: Duration,
    pub(crate) acknowledged: usize,
    pub(crate) failed: usize,
    /// Events the reading watchers received (and the checks looked at).
    pub(crate) events: u64,
    pub(crate) keepalives: u64,
    pub(crate) peak_resident: u64,
    /// Every check that failed; empty when all held.
    pub(crate) problems: Vec<String>,
}

/// Per watcher of a stream: the mod revisions of the events it got, and
/// the keys outside its prefix it was sent.
#[derive(Default)]
struct Seen {
    revisions: Vec<i64>,
    strays: usize,
}

/// How long any one answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// How long the run may wait for reading watchers to catch up at the end.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Runs the soak against a fresh fake binary at `path`.
pub(crate) async fn run(path: &Path, soak: Soak) -> Result<Outcome, Error> {
    let binary = targets::spawn_fake_binary(path, "real")?;
    targets::wait_serving(&binary.endpoint).await?;
    let pid = binary.process_id().ok_or("the fake binary has exited")?;
    let channel = Channel::from_shared(binary.endpoint.clone())?
        .connect()
        .await?;
    let started = Instant::now();
    let mut problems = Vec::new();

    // Leases, kept alive on one stream.
    let mut lease = LeaseClient::new(channel.clone());
    let mut leases = Vec::with_capacity(soak.leases);
    for _ in 0..soak.leases {
        let grant = LeaseGrantRequest {
            ttl: soak.lease_ttl_secs,
            id: 0,
        };
        leases.push(lease.lease_grant(grant).await?.into_inner().id);
    }
    let done = Arc::new(AtomicBool::new(false));
    let keepalives = Arc::new(AtomicU64::new(0));
    let keeper = tokio::spawn(keep_alive(
        lease.clone(),
        leases.clone(),
        Arc::clone(&done),
        Arc::clone(&keepalives),
    ));

    // Watchers: prefix `soak/<writer>/`, spread over the streams.
    let prefix_of = |writer: usize| format!("soak/{writer:02}/");
    let mut readers = Vec::new();
    let mut idle = Vec::new();
    for stream in 0..soak.streams {
        let writers: Vec<usize> = (0..soak.watchers_per_stream)
            .map(|i| (stream * soak.watchers_per_stream + i) % soak.writers)
            .collect();
        let (requests, outgoing) = mpsc::channel(soak.watchers_per_stream + 1);
        for &writer in &writers {
            let prefix = prefix_of(writer);
            let mut end = prefix.clone().into_bytes();
            *end.last_mut().expect("a prefix") += 1;
            let create = WatchCreateRequest {
                key: Bytes::from(prefix),
                range_end: Bytes::from(end),
                ..Default::default()
            };
            requests
                .send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create)),
                })
                .await?;
        }
        // A connection per stream, as separate clients have: a stream
        // that is never read fills its connection's HTTP/2 window, which
        // would stop every other stream on that connection.
        let own = Channel::from_shared(binary.endpoint.clone())?
            .connect()
            .await?;
        let mut responses = WatchClient::new(own)
            .watch(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        if stream < soak.idle_streams {
            // Never read: the server must not hold anyone else up for it.
            idle.push((requests, responses));
            continue;
        }
        let slow = stream < soak.idle_streams + soak.slow_streams;
        // The created responses come in the order of the creates.
        let mut by_id = HashMap::new();
        for &writer in &writers {
            let created = tokio::time::timeout(ANSWER, responses.message())
                .await
                .map_err(|_| "no created response within 10 s")??
                .ok_or("a watch stream ended")?;
            if !created.created || created.canceled {
                return Err(format!("a watch was not created: {created:?}").into());
            }
            by_id.insert(created.watch_id, writer);
        }
        let seen: Arc<Mutex<HashMap<i64, Seen>>> = Arc::default();
        let task = tokio::spawn(read_events(
            responses,
            by_id.clone(),
            Arc::clone(&seen),
            slow,
        ));
        readers.push((requests, by_id, seen, task));
    }

    // Put faults, then the writers.
    control_call(
        binary.control,
        &format!(
            "/v1/fail?rpc=Put&probability={}",
            soak.put_fault_probability
        ),
    )
    .await?;
    let peak = tokio::spawn(sample_memory(pid, Arc::clone(&done)));
    let mut writers = Vec::new();
    for writer in 0..soak.writers {
        let mut kv = KvClient::new(channel.clone());
        let prefix = prefix_of(writer);
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            for i in 0..soak.puts_per_writer {
                let key = format!("{prefix}{i:05}");
                let put = PutRequest {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(format!("value {i} of writer {writer}")),
                    ..Default::default()
                };
                match kv.put(put).await {
                    Ok(put) => {
                        let revision = put.into_inner().header.map_or(0, |h| h.revision);
                        acknowledged.push((key, revision));
                    }
                    Err(_) => failed += 1,
                }
            }
            (acknowledged, failed)
        }));
    }
    let mut acknowledged: Vec<Vec<(String, i64)>> = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let (acked, failures) = writer.await?;
        acknowledged.push(acked);
        failed += failures;
    }
    control_call(binary.control, "/v1/clear-faults").await?;

    // No acknowledged write lost.
    let mut kv = KvClient::new(channel.clone());
    for (key, revision) in acknowledged.iter().flatten() {
        let read = kv
            .range(RangeRequest {
                key: Bytes::from(key.clone()),
                ..Default::default()
            })
            .await?
            .into_inner();
        match read.kvs.first() {
            Some(kv) if kv.mod_revision == *revision => {}
            other => problems.push(format!(
                "the put of {key} acknowledged at {revision} reads back as {other:?}"
            )),
        }
    }

    // Every reading watcher: each acknowledged write of its prefix once,
    // in order, and nothing else it should not have.
    let want: Vec<Vec<i64>> = acknowledged
        .iter()
        .map(|acked| acked.iter().map(|&(_, revision)| revision).collect())
        .collect();
    let deadline = Instant::now() + CATCH_UP;
    let mut events = 0;
    for (_requests, by_id, seen, task) in &readers {
        loop {
            let behind = {
                let seen = seen.lock().expect("seen");
                by_id
                    .iter()
                    .filter(|(id, &writer)| {
                        seen.get(id).map_or(0, |s| s.revisions.len()) < want[writer].len()
                    })
                    .count()
            };
            if behind == 0 || Instant::now() > deadline || task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = seen.lock().expect("seen");
        for (id, &writer) in by_id {
            let got = seen.get(id).map(|s| s.revisions.as_slice()).unwrap_or(&[]);
            events += got.len() as u64;
            if let Some(problem) = check_watcher(*id, got, &want[writer]) {
                problems.push(problem);
            }
            if let Some(strays) = seen.get(id).map(|s| s.strays).filter(|&n| n > 0) {
                problems.push(format!("watch {id} got {strays} events outside its prefix"));
            }
        }
    }

    // Every lease still alive.
    for &id in &leases {
        let ttl = lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
            .await?
            .into_inner()
            .ttl;
        if ttl <= 0 {
            problems.push(format!("lease {id:x} kept alive has expired"));
        }
    }
    done.store(true, Ordering::Relaxed);
    tokio::time::timeout(ANSWER, keeper)
        .await
        .map_err(|_| "the keepalive sender did not stop")???;
    let sampled = peak.await?;
    let peak_resident = targets::peak_resident_bytes(pid).unwrap_or(0).max(sampled);
    if peak_resident > soak.memory_bound {
        problems.push(format!(
            "peak resident memory {} MiB over the bound of {} MiB",
            peak_resident >> 20,
            soak.memory_bound >> 20
        ));
    }
    problems.truncate(20);
    drop(idle);
    Ok(Outcome {
        wall: started.elapsed(),
        acknowledged: acknowledged.iter().map(Vec::len).sum(),
        failed,
        events,
        keepalives: keepalives.load(Ordering::Relaxed),
        peak_resident,
        problems,
    })
}

/// What is wrong with what one watcher got (`got`, mod revisions in
/// arrival order), given the acknowledged writes of its prefix (`want`,
/// in order). Injected faults fail a put before it reaches the store, so
/// the two must be equal: nothing missing, nothing twice, nothing extra.
fn check_watcher(id: i64, got: &[i64], want: &[i64]) -> Option<String> {
    if let Some(pair) = got.windows(2).find(|pair| pair[0] >= pair[1]) {
        return Some(format!(
            "watch {id}: event at {} after {} (out of order or twice)",
            pair[1], pair[0]
        ));
    }
    let missing = want
        .iter()
        .filter(|r| got.binary_search(r).is_err())
        .count();
    let extra = got
        .iter()
        .filter(|r| want.binary_search(r).is_err())
        .count();
    match (missing, extra) {
        (0, 0) => None,
        (0, extra) => Some(format!(
            "watch {id}: {extra} events of no acknowledged write"
        )),
        (missing, _) => Some(format!(
            "watch {id}: {missing} of {} acknowledged writes never came",
            want.len()
        )),
    }
}

/// Reads one stream's events into `seen`, by watch ID; a slow reader
/// sleeps a millisecond per message.
async fn read_events(
    mut responses: tonic::Streaming<WatchResponse>,
    by_id: HashMap<i64, usize>,
    seen: Arc<Mutex<HashMap<i64, Seen>>>,
    slow: bool,
) -> Result<(), Error> {
    while let Some(response) = responses.message().await? {
        if slow {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Some(&writer) = by_id.get(&response.watch_id) else {
            continue;
        };
        let prefix = format!("soak/{writer:02}/");
        let mut seen = seen.lock().expect("seen");
        let entry = seen.entry(response.watch_id).or_default();
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            if kv.key.starts_with(prefix.as_bytes()) {
                entry.revisions.push(kv.mod_revision);
            } else {
                entry.strays += 1;
            }
        }
    }
    Ok(())
}

/// Sends a keepalive for every lease each half second on one stream until
/// `done`, counting the answers that kept a lease alive.
async fn keep_alive(
    mut lease: LeaseClient<Channel>,
    leases: Vec<i64>,
    done: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Result<(), Error> {
    let (requests, outgoing) = mpsc::channel(leases.len() + 1);
    let mut responses = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let counter = tokio::spawn(async move {
        while let Ok(Some(response)) = responses.message().await {
            if response.ttl > 0 {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    while !done.load(Ordering::Relaxed) {
        for &id in &leases {
            tokio::time::timeout(ANSWER, requests.send(LeaseKeepAliveRequest { id }))
                .await
                .map_err(|_| "the keepalive stream takes nothing")??;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(requests);
    counter.abort();
    Ok(())
}

/// The highest resident memory of `pid` sampled every 20 ms until `done`.
async fn sample_memory(pid: u32, done: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !done.load(Ordering::Relaxed) {
        peak = peak.max(targets::resident_bytes(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::check_watcher;

    #[test]
    fn a_watcher_must_see_every_acknowledged_write_once_in_order() {
        assert_eq!(check_watcher(1, &[3, 5, 9], &[3, 5, 9]), None);
        assert!(check_watcher(1, &[3, 5, 9], &[3, 9])
            .unwrap()
            .contains("no acknowledged"));
        assert!(check_watcher(1, &[3, 9], &[3, 5, 9])
            .unwrap()
            .contains("1 of 3"));
        assert!(check_watcher(1, &[3, 5, 5, 9], &[3, 5, 9])
            .unwrap()
            .contains("twice"));
        assert!(check_watcher(1, &[5, 3], &[3, 5])
            .unwrap()
            .contains("out of order"));
    }
}
