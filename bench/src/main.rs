//! Benchmarks the fake against a real etcd and against a floor: a tonic
//! server whose KV handlers return empty responses (the cost of a gRPC round
//! trip and nothing else). Every target is driven by the same `etcd-client`
//! code in the same run; the report gives medians and ratios, since absolute
//! times on a shared machine are noise.
//!
//! ```sh
//! cargo run --release -p bench                      # fake and floor
//! scripts/real-etcd run -- cargo run --release -p bench   # and a real etcd
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};
use etcd_proto::etcdserverpb::kv_server::{Kv, KvServer};
use etcd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use fake_etcd::FakeEtcd;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// KV handlers that do nothing: the floor.
struct Empty;

#[tonic::async_trait]
impl Kv for Empty {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse::default()))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse::default()))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse::default()))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(TxnResponse::default()))
    }
    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(CompactionResponse::default()))
    }
}

async fn start_floor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(KvServer::new(Empty))
            .serve_with_incoming(incoming),
    );
    addr
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Target {
    name: &'static str,
    client: Client,
    prefix: String,
    /// Whether the target stores data (the floor does not).
    real_store: bool,
}

async fn sequential_put(t: &Target, n: usize) -> Duration {
    let mut client = t.client.clone();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client
            .put(
                format!("{}seq/{}", t.prefix, i % 100),
                "value-of-64-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                None,
            )
            .await
            .expect("put");
        samples.push(started.elapsed());
    }
    median(samples)
}

async fn sequential_get(t: &Target, n: usize) -> Duration {
    let mut client = t.client.clone();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client
            .get(format!("{}seq/{}", t.prefix, i % 100), None)
            .await
            .expect("get");
        samples.push(started.elapsed());
    }
    median(samples)
}

/// Operations per second with 64 concurrent tasks.
async fn concurrent(t: &Target, total: usize, put: bool) -> f64 {
    let tasks = 64;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let mut client = t.client.clone();
            let prefix = t.prefix.clone();
            tokio::spawn(async move {
                for i in 0..total / tasks {
                    let key = format!("{prefix}conc/{task}/{}", i % 50);
                    if put {
                        client.put(key, "v", None).await.expect("put");
                    } else {
                        client.get(key, None).await.expect("get");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Median time of a range over `keys` keys (loaded first).
async fn range(t: &Target, keys: usize) -> Duration {
    let mut client = t.client.clone();
    let prefix = format!("{}range{keys}/", t.prefix);
    if t.real_store {
        // Loaded in txns of 100 puts to keep the load short.
        for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|i| etcd_client::TxnOp::put(format!("{prefix}{i:06}"), "v", None))
                .collect();
            client
                .txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("load");
        }
    }
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let resp = client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .expect("range");
        samples.push(started.elapsed());
        if t.real_store {
            assert_eq!(resp.kvs().len(), keys);
        }
    }
    median(samples)
}

/// Median time from a put to its watch event.
async fn watch_latency(t: &Target, n: usize) -> Duration {
    let mut client = t.client.clone();
    let key = format!("{}watched", t.prefix);
    let mut stream = client
        .watch(key.as_str(), Some(WatchOptions::new()))
        .await
        .expect("watch");
    stream.message().await.expect("created");
    let mut samples = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        client
            .put(key.as_str(), i.to_string(), None)
            .await
            .expect("put");
        loop {
            let resp = stream.message().await.expect("event").expect("open");
            if !resp.events().is_empty() {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    median(samples)
}

/// Lease grants per second (sequential).
async fn lease_grants(t: &Target, n: usize) -> f64 {
    let mut client = t.client.clone();
    let started = Instant::now();
    for _ in 0..n {
        let id = client.lease_grant(60, None).await.expect("grant").id();
        client.lease_revoke(id).await.expect("revoke");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Wall time of: register a key on a 10 s lease, let it expire, see the
/// delete. The fake advances its clock; a real etcd is waited on.
async fn lease_expiry_scenario(t: &Target, fake: Option<&FakeEtcd>) -> Duration {
    let mut client = t.client.clone();
    let key = format!("{}expiring", t.prefix);
    let started = Instant::now();
    let lease = client.lease_grant(10, None).await.expect("grant").id();
    client
        .put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    let mut stream = client
        .watch(key.as_str(), Some(WatchOptions::new()))
        .await
        .expect("watch");
    stream.message().await.expect("created");
    if let Some(fake) = fake {
        fake.advance(Duration::from_secs(11)).await;
    }
    loop {
        let resp = stream.message().await.expect("event").expect("open");
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == etcd_client::EventType::Delete)
        {
            break;
        }
    }
    started.elapsed()
}

/// Scale on the fake: 10,000 leases (each with a key) expiring in one
/// `advance`, and the cost of a put with 10,000 watchers on other keys.
async fn fake_scale(fake: &FakeEtcd, client: &Client) -> (Duration, Duration, Duration) {
    let mut client = client.clone();
    for i in 0..10_000 {
        let lease = client.lease_grant(30, None).await.expect("grant").id();
        client
            .put(
                format!("/scale/lease/{i:05}"),
                "v",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put");
    }
    let started = Instant::now();
    fake.advance(Duration::from_secs(31)).await;
    let expiry = started.elapsed();
    let left = client
        .get(
            "/scale/lease/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    assert_eq!(left.count(), 0, "every lease expired");

    let put_cost = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            let mut samples = Vec::new();
            for _ in 0..2000 {
                let started = Instant::now();
                client
                    .put("/scale/watched-by-none", "v", None)
                    .await
                    .expect("put");
                samples.push(started.elapsed());
            }
            median(samples)
        }
    };
    let without = put_cost(&mut client).await;
    let mut stream = client.watch("/scale/w/00000", None).await.expect("watch");
    stream.message().await.expect("created");
    for i in 1..10_000 {
        stream
            .watch(format!("/scale/w/{i:05}"), None)
            .await
            .expect("watch");
        stream.message().await.expect("created");
    }
    let with = put_cost(&mut client).await;
    (expiry, without, with)
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let startup = Instant::now();
    let fake = FakeEtcd::start().await?;
    let mut first = Client::connect([fake.endpoint()], None).await?;
    first.get("warmup", None).await?;
    let fake_startup = startup.elapsed();

    let floor_addr = start_floor().await;
    let run = std::process::id();
    let mut targets = vec![
        Target {
            name: "fake",
            client: first,
            prefix: format!("/bench/{run}/"),
            real_store: true,
        },
        Target {
            name: "floor",
            client: Client::connect([format!("http://{floor_addr}")], None).await?,
            prefix: format!("/bench/{run}/"),
            real_store: false,
        },
    ];
    if let Ok(endpoints) = std::env::var("ETCD_ENDPOINTS") {
        let started = Instant::now();
        let mut client = Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await?;
        client.get("warmup", None).await?;
        println!(
            "connect + first request to real etcd: {:.2} ms",
            ms(started.elapsed())
        );
        targets.push(Target {
            name: "etcd",
            client,
            prefix: format!("/bench/{run}/"),
            real_store: true,
        });
    }
    println!(
        "fake startup to first successful request (in-process): {:.2} ms",
        ms(fake_startup)
    );

    let mut rows: Vec<(String, Vec<f64>, &str)> = Vec::new();
    let mut row = |name: &str, unit: &'static str, values: Vec<f64>| {
        rows.push((name.to_owned(), values, unit))
    };

    let mut put_lat = Vec::new();
    let mut get_lat = Vec::new();
    let mut put_tput = Vec::new();
    let mut get_tput = Vec::new();
    for t in &targets {
        put_lat.push(ms(sequential_put(t, 2000).await));
        get_lat.push(ms(sequential_get(t, 2000).await));
        put_tput.push(concurrent(t, 20_000, true).await);
        get_tput.push(concurrent(t, 20_000, false).await);
    }
    row("sequential put latency (median)", "ms", put_lat);
    row("sequential get latency (median)", "ms", get_lat);
    row("concurrent put throughput (64 tasks)", "ops/s", put_tput);
    row("concurrent get throughput (64 tasks)", "ops/s", get_tput);

    let stored: Vec<&Target> = targets.iter().filter(|t| t.real_store).collect();
    let mut r1k = Vec::new();
    let mut r10k = Vec::new();
    let mut watch = Vec::new();
    let mut grants = Vec::new();
    let mut expiry = Vec::new();
    for t in &stored {
        r1k.push(ms(range(t, 1_000).await));
        r10k.push(ms(range(t, 10_000).await));
        watch.push(ms(watch_latency(t, 500).await));
        grants.push(lease_grants(t, 500).await);
        let fake_handle = (t.name == "fake").then_some(&fake);
        expiry.push(ms(lease_expiry_scenario(t, fake_handle).await));
    }

    let (expiry10k, without, with) = fake_scale(&fake, &targets[0].client).await;
    println!(
        "fake: 10,000 leases with a key each, expired by one advance: {:.2} ms",
        ms(expiry10k)
    );
    println!(
        "fake: put latency with 0 / 10,000 watchers on other keys: {:.3} / {:.3} ms (ratio {})",
        ms(without),
        ms(with),
        ratio(ms(with), ms(without))
    );

    println!();
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    println!(
        "| workload | {} | fake/floor |{}",
        names.join(" | "),
        if names.contains(&"etcd") {
            " etcd/fake |"
        } else {
            ""
        }
    );
    println!(
        "|---|{}---|{}",
        "---|".repeat(names.len()),
        if names.contains(&"etcd") { "---|" } else { "" }
    );
    for (name, values, unit) in &rows {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.3} {unit}")).collect();
        let etcd = values
            .get(2)
            .map(|e| format!(" {} |", ratio(*e, values[0])))
            .unwrap_or_default();
        println!(
            "| {name} | {} | {} |{etcd}",
            cells.join(" | "),
            ratio(values[0], values[1])
        );
    }
    let stored_names: Vec<&str> = stored.iter().map(|t| t.name).collect();
    println!();
    println!(
        "| workload | {} |{}",
        stored_names.join(" | "),
        if stored_names.len() > 1 {
            " etcd/fake |"
        } else {
            ""
        }
    );
    println!(
        "|---|{}{}",
        "---|".repeat(stored_names.len()),
        if stored_names.len() > 1 { "---|" } else { "" }
    );
    for (name, values, unit) in [
        ("range over 1,000 keys (median)", &r1k, "ms"),
        ("range over 10,000 keys (median)", &r10k, "ms"),
        ("watch delivery, put to event (median)", &watch, "ms"),
        ("lease grant + revoke (sequential)", &grants, "pairs/s"),
        ("lease expiry scenario, 10 s TTL (wall)", &expiry, "ms"),
    ] {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.3} {unit}")).collect();
        let r = values
            .get(1)
            .map(|e| format!(" {} |", ratio(*e, values[0])))
            .unwrap_or_default();
        println!("| {name} | {} |{r}", cells.join(" | "));
    }
    Ok(())
}
