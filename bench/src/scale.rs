//! Scale on the fake: the store growing to a million keys (memory per key,
//! and whether a get or a bounded range costs more as it grows), 10,000
//! watchers that a write does not match, and 10,000 leases expiring in one
//! `advance`.

use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, EventType, GetOptions, PutOptions, WatchOptions};
use fake_etcd::FakeEtcd;

use crate::targets::{resident_bytes, Target};
use crate::workloads::{load, median};
use crate::Error;

/// The store at one size.
pub(crate) struct Growth {
    pub(crate) keys: usize,
    /// Resident memory of the fake's process (the binary only).
    pub(crate) resident: Option<u64>,
    /// Median latency of a get of one key.
    pub(crate) get: Duration,
    /// Median latency of a range of 100 keys (`[k, k + 100)`) from a
    /// spread of start keys.
    pub(crate) range_100: Duration,
}

const PREFIX: &str = "/scale/key/";

/// Grows the store to each size in `sizes` (ascending) and measures it.
/// Keys are 18 bytes, values 64.
pub(crate) async fn store_growth(t: &Target, sizes: &[usize]) -> Result<Vec<Growth>, Error> {
    let mut client = t.client.clone();
    let mut rows = Vec::new();
    let baseline = t.pid.and_then(resident_bytes);
    rows.push(measure(&mut client, t, 0).await?);
    if let (Some(row), Some(base)) = (rows.first_mut(), baseline) {
        row.resident = Some(base);
    }
    let mut loaded = 0;
    for &size in sizes {
        load(t, PREFIX, size - loaded, loaded).await?;
        loaded = size;
        rows.push(measure(&mut client, t, size).await?);
    }
    Ok(rows)
}

async fn measure(client: &mut Client, t: &Target, keys: usize) -> Result<Growth, Error> {
    // A fixed stride over the keys: spread out, and the same on every run.
    let index = |i: usize| (i * 7919) % keys.max(1);
    let pick = |i: usize| format!("{PREFIX}{:07}", index(i));
    let mut gets = Vec::with_capacity(500);
    for i in 0..500 {
        let started = Instant::now();
        client.get(pick(i), None).await?;
        gets.push(started.elapsed());
    }
    let mut ranges = Vec::with_capacity(200);
    for i in 0..200 {
        let end = format!("{PREFIX}{:07}", index(i) + 100);
        let started = Instant::now();
        let resp = client
            .get(pick(i), Some(GetOptions::new().with_range(end)))
            .await?;
        ranges.push(started.elapsed());
        if keys > 0 && index(i) + 100 <= keys && resp.kvs().len() != 100 {
            return Err(format!("range of 100 returned {}", resp.kvs().len()).into());
        }
    }
    Ok(Growth {
        keys,
        resident: t.pid.and_then(resident_bytes),
        get: median(&mut gets),
        range_100: median(&mut ranges),
    })
}

/// Resident memory while keys are overwritten and compacted.
pub(crate) struct Overwrites {
    pub(crate) keys: usize,
    pub(crate) times: usize,
    pub(crate) before: u64,
    /// After every key was overwritten `times` times.
    pub(crate) overwritten: u64,
    /// After a compaction at the last revision.
    pub(crate) compacted: u64,
    /// After the same overwrites and compaction once more: memory the first
    /// compaction freed is used again, so this stays near `overwritten`.
    pub(crate) again: u64,
}

const OVERWRITTEN: &str = "/scale/overwritten/";

/// Overwrites `keys` keys `times` times each (txns of 128 puts), compacts,
/// and does it again, reading the process's resident memory on the way.
pub(crate) async fn overwrite_and_compact(
    t: &Target,
    keys: usize,
    times: usize,
) -> Result<Overwrites, Error> {
    let pid = t.pid.ok_or("overwrites are measured on the binary")?;
    let rss = || resident_bytes(pid).ok_or("no resident memory figure");
    let mut client = t.client.clone();
    let before = rss()?;
    let mut pass = async || -> Result<(u64, u64), Error> {
        // The same 64-byte value again: every put is a new revision all
        // the same.
        for _ in 0..times {
            load(t, OVERWRITTEN, keys, 0).await?;
        }
        let overwritten = rss()?;
        let revision = client
            .get(OVERWRITTEN, None)
            .await?
            .header()
            .map_or(0, |h| h.revision());
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await?;
        Ok((overwritten, rss()?))
    };
    let (overwritten, compacted) = pass().await?;
    let (again, _) = pass().await?;
    Ok(Overwrites {
        keys,
        times,
        before,
        overwritten,
        compacted,
        again,
    })
}

/// What expiring many leases at once costs.
pub(crate) struct MassExpiry {
    pub(crate) leases: usize,
    /// The `advance` that expires them all.
    pub(crate) advance: Duration,
    /// From the start of the `advance` to a prefix watcher's last DELETE.
    pub(crate) delivered: Duration,
}

/// `leases` leases, each with a key, expired by one `advance` while a
/// prefix watcher waits for every DELETE.
pub(crate) async fn mass_expiry(
    fake: &FakeEtcd,
    client: &Client,
    leases: usize,
) -> Result<MassExpiry, Error> {
    let mut client = client.clone();
    for i in 0..leases {
        let lease = client.lease_grant(30, None).await?.id();
        client
            .put(
                format!("/scale/lease/{i:06}"),
                "v",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
    }
    let mut watch = client
        .watch("/scale/lease/", Some(WatchOptions::new().with_prefix()))
        .await?;
    watch.message().await?;
    let started = Instant::now();
    fake.advance(Duration::from_secs(31)).await;
    let advance = started.elapsed();
    let mut deleted = 0;
    while deleted < leases {
        let response = tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .map_err(|_| "no DELETE within 60 s")??
            .ok_or("the watch ended")?;
        deleted += response
            .events()
            .iter()
            .filter(|e| e.event_type() == EventType::Delete)
            .count();
    }
    let delivered = started.elapsed();
    let left = client
        .get(
            "/scale/lease/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    if left.count() != 0 {
        return Err(format!("{} keys outlived their leases", left.count()).into());
    }
    Ok(MassExpiry {
        leases,
        advance,
        delivered,
    })
}

/// Median put latency with no watcher, then with 10,000 watchers on other
/// keys (one stream): a write must find only the watchers it matches.
pub(crate) async fn watchers_not_matched(client: &Client) -> Result<(Duration, Duration), Error> {
    let mut client = client.clone();
    async fn put_cost(client: &mut Client) -> Result<Duration, Error> {
        let mut samples = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let started = Instant::now();
            client.put("/scale/watched-by-none", "v", None).await?;
            samples.push(started.elapsed());
        }
        Ok(median(&mut samples))
    }
    let without = put_cost(&mut client).await?;
    let mut stream = client.watch("/scale/w/00000", None).await?;
    stream.message().await?;
    for i in 1..10_000 {
        stream.watch(format!("/scale/w/{i:05}"), None).await?;
        stream.message().await?;
    }
    let with = put_cost(&mut client).await?;
    Ok((without, with))
}
