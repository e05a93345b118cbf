//! The workloads, each the same `etcd-client` code whatever the target.
//! Latencies are medians; throughputs are operations over wall time.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use etcd_proto::etcdserverpb::{PutRequest, RangeRequest};

use crate::targets::Target;
use crate::Error;

pub(crate) const VALUE: &str = "value-of-64-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The median of `samples` (sorted in place).
pub(crate) fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median latency of `n` sequential puts (100 keys, overwritten).
pub(crate) async fn sequential_put(t: &Target, prefix: &str, n: usize) -> Result<Duration, Error> {
    let mut client = t.client.clone();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}seq/{}", i % 100);
        let started = Instant::now();
        client.put(key, VALUE, None).await?;
        samples.push(started.elapsed());
    }
    Ok(median(&mut samples))
}

/// Median latency of `n` sequential gets of single keys.
pub(crate) async fn sequential_get(t: &Target, prefix: &str, n: usize) -> Result<Duration, Error> {
    let mut client = t.client.clone();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}seq/{}", i % 100);
        let started = Instant::now();
        client.get(key, None).await?;
        samples.push(started.elapsed());
    }
    Ok(median(&mut samples))
}

/// Operations per second from 64 concurrent tasks, `total` in all.
pub(crate) async fn concurrent(
    t: &Target,
    prefix: &str,
    total: usize,
    put: bool,
) -> Result<f64, Error> {
    let tasks = 64;
    let per_task = total / tasks;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let mut client = t.client.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let key = format!("{prefix}conc/{task}/{}", i % 50);
                    if put {
                        client.put(key, "v", None).await?;
                    } else {
                        client.get(key, None).await?;
                    }
                }
                Ok::<_, etcd_client::Error>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    Ok((per_task * tasks) as f64 / started.elapsed().as_secs_f64())
}

/// Median latency of a txn: compare a key's value and version, then put
/// (or get, if the compare fails). Half of them succeed.
pub(crate) async fn txn(t: &Target, prefix: &str, n: usize) -> Result<Duration, Error> {
    let mut client = t.client.clone();
    let key = format!("{prefix}txn");
    client.put(key.as_str(), "a", None).await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let expected = if i % 2 == 0 { "a" } else { "b" };
        let txn = Txn::new()
            .when([
                Compare::value(key.as_str(), CompareOp::Equal, expected),
                Compare::version(key.as_str(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key.as_str(), "a", None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let started = Instant::now();
        client.txn(txn).await?;
        samples.push(started.elapsed());
    }
    Ok(median(&mut samples))
}

/// Loads `keys` keys under `prefix` (txns of 128 puts: etcd's op limit).
pub(crate) async fn load(t: &Target, prefix: &str, keys: usize, from: usize) -> Result<(), Error> {
    let mut client = t.client.clone();
    let mut i = from;
    while i < from + keys {
        let end = (i + 128).min(from + keys);
        let ops: Vec<TxnOp> = (i..end)
            .map(|k| TxnOp::put(format!("{prefix}{k:07}"), VALUE, None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
        i = end;
    }
    Ok(())
}

/// Median time of a range over all `keys` keys of a prefix (loaded first
/// where the target stores data), from `samples` runs. Through the plain
/// KV client: 100,000 keys make a response larger than `etcd-client`
/// accepts.
pub(crate) async fn range(
    t: &Target,
    prefix: &str,
    keys: usize,
    samples: usize,
) -> Result<Duration, Error> {
    let mut kv = t.kv.clone();
    let prefix = format!("{prefix}range{keys}/");
    if t.stores() {
        load(t, &prefix, keys, 0).await?;
    }
    let mut range_end = prefix.clone().into_bytes();
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    let request = RangeRequest {
        key: prefix.into_bytes().into(),
        range_end: range_end.into(),
        ..RangeRequest::default()
    };
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let resp = kv.range(request.clone()).await?.into_inner();
        times.push(started.elapsed());
        if t.stores() && resp.kvs.len() != keys {
            return Err(format!("{}: range returned {} keys", t.name, resp.kvs.len()).into());
        }
    }
    Ok(median(&mut times))
}

/// Median times to encode and to decode, alone in this process, the
/// response of a range over the `keys` keys [`range`] loaded on `t`: the
/// decoding is a floor no server can go under, since the client must read
/// every key-value; the encoding, one every server pays.
pub(crate) async fn range_codec_alone(
    t: &Target,
    prefix: &str,
    keys: usize,
) -> Result<(Duration, Duration), Error> {
    use prost::Message;
    let prefix = format!("{prefix}range{keys}/");
    let mut range_end = prefix.clone().into_bytes();
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    let request = RangeRequest {
        key: prefix.into_bytes().into(),
        range_end: range_end.into(),
        ..RangeRequest::default()
    };
    let response = t.kv.clone().range(request).await?.into_inner();
    let mut encodings = Vec::with_capacity(20);
    let mut buffer = Vec::with_capacity(response.encoded_len());
    for _ in 0..20 {
        buffer.clear();
        let started = Instant::now();
        response.encode(&mut buffer)?;
        encodings.push(started.elapsed());
    }
    let encoded = bytes::Bytes::from(buffer);
    let mut decodings = Vec::with_capacity(20);
    for _ in 0..20 {
        let input = encoded.clone();
        let started = Instant::now();
        let decoded = etcd_proto::etcdserverpb::RangeResponse::decode(input)?;
        decodings.push(started.elapsed());
        if decoded.kvs.len() != keys {
            return Err("the decoded range lost keys".into());
        }
    }
    Ok((median(&mut encodings), median(&mut decodings)))
}

/// Median time from a put to its watch event.
pub(crate) async fn watch_delivery(t: &Target, prefix: &str, n: usize) -> Result<Duration, Error> {
    let mut client = t.client.clone();
    let key = format!("{prefix}watched");
    let mut stream = client
        .watch(key.as_str(), Some(WatchOptions::new()))
        .await?;
    stream.message().await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client.put(key.as_str(), i.to_string(), None).await?;
        loop {
            let resp = stream.message().await?.ok_or("watch ended")?;
            if !resp.events().is_empty() {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    Ok(median(&mut samples))
}

/// Lease grants per second, sequential (each revoked after the run).
pub(crate) async fn lease_grants(t: &Target, n: usize) -> Result<f64, Error> {
    let mut client = t.client.clone();
    let mut ids = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        ids.push(client.lease_grant(60, None).await?.id());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for id in ids {
        client.lease_revoke(id).await?;
    }
    Ok(rate)
}

/// Keepalives per second on one stream: send, await the answer, repeat.
pub(crate) async fn keepalives(t: &Target, n: usize) -> Result<f64, Error> {
    let mut client = t.client.clone();
    let id = client.lease_grant(60, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(id).await?;
    let started = Instant::now();
    for _ in 0..n {
        keeper.keep_alive().await?;
        let resp = responses.message().await?.ok_or("keepalive stream ended")?;
        if resp.ttl() <= 0 {
            return Err("lease lost during the keepalive run".into());
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    client.lease_revoke(id).await?;
    Ok(rate)
}

/// Wall time of a registration's life: grant a 10 s lease, put a key on
/// it, watch it, let the lease expire, see the delete. The fake moves its
/// clock; a real etcd is waited on.
pub(crate) async fn lease_expiry_scenario(t: &Target, prefix: &str) -> Result<Duration, Error> {
    let mut client = t.client.clone();
    let key = format!("{prefix}expiring");
    let started = Instant::now();
    let lease = client.lease_grant(10, None).await?.id();
    client
        .put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease)))
        .await?;
    let mut stream = client.watch(key.as_str(), None).await?;
    stream.message().await?;
    t.pass(Duration::from_secs(11)).await?;
    let delete = async {
        loop {
            let resp = stream.message().await?.ok_or("watch ended")?;
            if resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok::<_, Error>(started.elapsed());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), delete)
        .await
        .map_err(|_| format!("{}: the lease did not expire within 30 s", t.name))?
}

/// What one put costs with many watchers of its key.
pub(crate) struct FanOut {
    /// The writer's latency (median) before any watcher.
    pub(crate) alone: Duration,
    /// The writer's latency (median), with the watchers in place.
    pub(crate) put: Duration,
    /// From the put to the last watcher's event (median).
    pub(crate) last_event: Duration,
}

/// `streams × per_stream` watchers on one key; `rounds` puts of it, each
/// timed on the writer's side and until every watcher got its event. The
/// writer has its own connection, as a test's writes and the code it
/// watches for usually do; on the watchers' connection its answer would
/// also queue behind their events.
pub(crate) async fn watch_fan_out(
    t: &Target,
    prefix: &str,
    streams: usize,
    per_stream: usize,
    rounds: usize,
) -> Result<FanOut, Error> {
    let mut client = t.client.clone();
    let key = format!("{prefix}fan-out/{streams}x{per_stream}");
    let mut writer = t.kv.clone();
    let put = |round: usize| PutRequest {
        key: key.clone().into(),
        value: round.to_string().into(),
        ..Default::default()
    };
    let mut alone = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        writer.put(put(round)).await?;
        alone.push(started.elapsed());
    }
    let mut watching = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut stream = client.watch(key.as_str(), None).await?;
        stream.message().await?;
        for _ in 1..per_stream {
            stream.watch(key.as_str(), None).await?;
            stream.message().await?;
        }
        watching.push(stream);
    }
    let mut puts = Vec::with_capacity(rounds);
    let mut last_events = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        writer.put(put(round)).await?;
        puts.push(started.elapsed());
        let mut readers = Vec::with_capacity(streams);
        for mut stream in watching.drain(..) {
            readers.push(tokio::spawn(async move {
                let mut seen = 0;
                while seen < per_stream {
                    let response = tokio::time::timeout(Duration::from_secs(60), stream.message())
                        .await
                        .map_err(|_| "no watch event within 60 s")??
                        .ok_or("a watch ended")?;
                    seen += response.events().len();
                }
                Ok::<_, Error>(stream)
            }));
        }
        for reader in readers {
            watching.push(reader.await??);
        }
        last_events.push(started.elapsed());
    }
    Ok(FanOut {
        alone: median(&mut alone),
        put: median(&mut puts),
        last_event: median(&mut last_events),
    })
}
