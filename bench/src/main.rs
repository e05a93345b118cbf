//! Benchmarks the fake side by side with a real etcd and with a floor (a
//! tonic server whose KV handlers return empty responses: the cost of a
//! gRPC round trip and nothing else). Every target is driven by the same
//! `etcd-client` code in the same run, and the report gives medians and
//! ratios, since absolute times on a shared machine are noise.
//!
//! The parts: [`floor`] is the empty server; [`targets`] starts or reaches
//! each target (the fake in this process over TCP and over its in-process
//! channel, the fake's binary, a real etcd) and times their startup;
//! [`workloads`] are the measured calls; [`soak`] loads the binary with
//! writers, watchers, keepalives and faults and checks nothing was lost;
//! [`scale`] grows the store to a
//! million keys and piles up watchers and leases; [`report`] writes the
//! Markdown.
//!
//! `scripts/bench` runs all of it against etcd 3.5.1 and rewrites
//! `BENCHMARKS.md`; by hand:
//!
//! ```sh
//! cargo build --release -p bench -p fake-etcd
//! target/release/bench                                   # no real etcd
//! scripts/real-etcd run -- target/release/bench --etcd-bin "$(scripts/real-etcd bin etcd)"
//! ```

mod floor;
mod report;
mod scale;
mod soak;
mod targets;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use report::{Report, Row};
use targets::{Kind, Target};

/// What the harness's functions fail with.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// Side-by-side benchmarks: the fake, a real etcd, and an empty gRPC server.
#[derive(Debug, Parser)]
struct Args {
    /// A real etcd's endpoints (as the test suite takes them).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
    /// A real etcd binary, to time its startup.
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// The fake's binary (default: `fake-etcd` beside this program).
    #[arg(long)]
    fake_bin: Option<PathBuf>,
    /// Write the report here as Markdown (it is printed either way).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these sections: calls, data, startup, scale, soak.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The largest store in the growth measurement.
    #[arg(long, default_value_t = 1_000_000)]
    max_keys: usize,
}

impl Args {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// Puts timed per fan-out configuration: the latency of a put among
/// 10,000 watchers varies by 2x between runs of ten.
const FAN_OUT_ROUNDS: usize = 30;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn default_fake_bin() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.with_file_name("fake-etcd");
    path.is_file().then_some(path)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let mut report = Report::new();

    let (fake, fake_startup) = targets::fake(false).await?;
    let (in_memory, _) = targets::fake(true).await?;
    let mut all: Vec<Target> = vec![
        targets::floor().await?,
        fake,
        targets::floor_in_memory().await?,
        in_memory,
    ];
    let fake_bin = args.fake_bin.clone().or_else(default_fake_bin);
    let mut processes = Vec::new();
    let mut binary_startup = None;
    match &fake_bin {
        Some(path) => {
            let (target, process, startup) = targets::fake_binary(path).await?;
            all.push(target);
            processes.push(process);
            binary_startup = Some(startup);
        }
        None => report.note("The fake's binary was not found (build it with `cargo build --release -p fake-etcd`): left out."),
    }
    match &args.etcd_endpoints {
        Some(endpoints) => all.push(targets::etcd(endpoints).await?),
        None => report.note("No real etcd (set ETCD_ENDPOINTS, or use scripts/bench): left out."),
    }
    let prefix = format!("/bench/{}/", std::process::id());

    if args.wants("calls") {
        let mut rows = vec![
            Row::new("sequential put latency (median)", "ms"),
            Row::new("sequential get latency (median)", "ms"),
            Row::new("txn with 2 compares (median)", "ms"),
            Row::new("concurrent put throughput (64 tasks)", "ops/s"),
            Row::new("concurrent get throughput (64 tasks)", "ops/s"),
        ];
        // Rounds that take the targets in turn, so a slow spell of the
        // machine hits them all; each figure is the median of its rounds.
        const ROUNDS: usize = 3;
        let mut figures = vec![vec![Vec::with_capacity(ROUNDS); rows.len()]; all.len()];
        for round in 0..ROUNDS {
            for (t, figures) in all.iter().zip(&mut figures) {
                eprintln!("calls, round {}: {}", round + 1, t.name);
                figures[0].push(ms(workloads::sequential_put(t, &prefix, 2000).await?));
                figures[1].push(ms(workloads::sequential_get(t, &prefix, 2000).await?));
                figures[2].push(ms(workloads::txn(t, &prefix, 2000).await?));
                figures[3].push(workloads::concurrent(t, &prefix, 20_000, true).await?);
                figures[4].push(workloads::concurrent(t, &prefix, 20_000, false).await?);
            }
        }
        for (t, figures) in all.iter().zip(figures) {
            for (row, mut values) in rows.iter_mut().zip(figures) {
                values.sort_by(f64::total_cmp);
                row.push(t.name, values[ROUNDS / 2]);
            }
        }
        report.table(
            "Plain calls: the fake against the floor",
            "Medians of 2,000 sequential calls; 20,000 calls over 64 tasks; each figure the median of 3 rounds that take the targets in turn. The floor answers every KV call with an empty response.",
            &all,
            rows,
            &[("fake", "floor"), ("fake (in-memory)", "floor (in-memory)"), ("fake (binary)", "floor"), ("etcd", "fake")],
        );
    }

    if args.wants("data") {
        let mut rows = vec![
            Row::new("range over 1,000 keys (median)", "ms"),
            Row::new("range over 10,000 keys (median)", "ms"),
            Row::new("range over 100,000 keys (median)", "ms"),
            Row::new("watch delivery, put to event (median)", "ms"),
            Row::new("lease grants (sequential)", "grants/s"),
            Row::new("lease keepalives (one stream, sequential)", "keepalives/s"),
            Row::new("lease expiry scenario, 10 s TTL (wall)", "ms"),
            Row::new(
                "watch fan-out: put to the last of 10,000 watchers, 1 stream (median)",
                "ms",
            ),
            Row::new(
                "watch fan-out: put to the last of 10,000 watchers, 100 streams (median)",
                "ms",
            ),
            Row::new("put latency, no watcher of its key (median)", "ms"),
            Row::new("put latency, 10,000 watchers of its key (median)", "ms"),
        ];
        for t in &all {
            eprintln!("data: {}", t.name);
            rows[0].push(t.name, ms(workloads::range(t, &prefix, 1_000, 20).await?));
            rows[1].push(t.name, ms(workloads::range(t, &prefix, 10_000, 20).await?));
            rows[2].push(t.name, ms(workloads::range(t, &prefix, 100_000, 5).await?));
            if !t.stores() {
                continue;
            }
            rows[3].push(
                t.name,
                ms(workloads::watch_delivery(t, &prefix, 500).await?),
            );
            let one_stream =
                workloads::watch_fan_out(t, &prefix, 1, 10_000, FAN_OUT_ROUNDS).await?;
            let many_streams =
                workloads::watch_fan_out(t, &prefix, 100, 100, FAN_OUT_ROUNDS).await?;
            rows[7].push(t.name, ms(one_stream.last_event));
            rows[8].push(t.name, ms(many_streams.last_event));
            rows[9].push(t.name, ms(one_stream.alone));
            rows[10].push(t.name, ms(one_stream.put));
            rows[4].push(t.name, workloads::lease_grants(t, 500).await?);
            rows[5].push(t.name, workloads::keepalives(t, 2000).await?);
            rows[6].push(
                t.name,
                ms(workloads::lease_expiry_scenario(t, &prefix).await?),
            );
        }
        let fake = &all[1];
        let (encode, decode) = workloads::range_codec_alone(fake, &prefix, 10_000).await?;
        report.record(
            "client decoding of a 10,000-key range response",
            fake.name,
            ms(decode),
        );
        report.record(
            "encoding of a 10,000-key range response",
            fake.name,
            ms(encode),
        );
        report.table(
            "Stored data, watches and leases: the fake against etcd",
            "Ranges return every key of a prefix (20 runs; 5 for 100,000 keys); the floor answers them with a canned response of the same size, so its column is what encoding, moving and decoding that many keys costs with any server. The lease expiry scenario grants a 10 s lease, puts a key on it, watches it, and waits for the delete: the fake advances its clock (the binary through its control API), etcd is waited on. Each fan-out figure is the median of 30 puts, timed at the writer and until every watcher has its event.",
            &all,
            rows,
            &[("etcd", "fake"), ("etcd", "fake (in-memory)"), ("etcd", "fake (binary)"), ("fake", "floor"), ("fake (in-memory)", "floor (in-memory)"), ("etcd", "floor")],
        );
    }

    if args.wants("startup") {
        eprintln!("startup");
        let mut tcp = Vec::new();
        let mut memory = Vec::new();
        for _ in 0..20 {
            tcp.push(targets::fake(false).await?.1);
            memory.push(targets::fake(true).await?.1);
        }
        let mut row = Row::new("startup to first successful request (median)", "ms");
        row.push("fake", ms(workloads::median(&mut tcp)));
        row.push("fake (in-memory)", ms(workloads::median(&mut memory)));
        if let Some(path) = &fake_bin {
            let mut times = binary_startup.into_iter().collect::<Vec<_>>();
            for _ in 0..4 {
                times.push(targets::fake_binary(path).await?.2);
            }
            row.push("fake (binary)", ms(workloads::median(&mut times)));
        }
        match &args.etcd_bin {
            Some(path) => {
                let mut times = Vec::new();
                for _ in 0..5 {
                    times.push(targets::etcd_startup(path).await?);
                }
                row.push("etcd", ms(workloads::median(&mut times)));
            }
            None => report.note("No etcd binary given (--etcd-bin): its startup is not timed."),
        }
        report.table(
            "Startup",
            &format!("From nothing to a first successful request, median of 20 (in this process) or 5 (processes). The first in-process start of this run took {:.2} ms.", ms(fake_startup)),
            &all,
            vec![row],
            &[("etcd", "fake"), ("etcd", "fake (in-memory)"), ("etcd", "fake (binary)")],
        );
    }

    if args.wants("scale") {
        eprintln!("scale");
        // A fresh process, so its memory is the store's alone.
        let fresh = match &fake_bin {
            Some(path) => {
                let (target, process, _) = targets::fake_binary(path).await?;
                processes.push(process);
                Some(target)
            }
            None => None,
        };
        let grown = fresh.as_ref().unwrap_or(&all[1]);
        let sizes: Vec<usize> = [1_000, 10_000, 100_000, 1_000_000]
            .into_iter()
            .filter(|&n| n <= args.max_keys)
            .collect();
        let growth = scale::store_growth(grown, &sizes).await?;
        report.growth(grown.name, &growth);
        if grown.pid.is_some() {
            let o = scale::overwrite_and_compact(grown, 1_000, 1_000).await?;
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let reused = if o.again as f64 <= o.overwritten as f64 * 1.1 {
                "what the compaction freed was used again"
            } else {
                "what the compaction freed was not used again"
            };
            report.line(&format!(
                "{} keys overwritten {} times each on `{}` (one revision a put): resident memory {:.1} MiB before, {:.1} MiB after the overwrites, {:.1} MiB after a compaction at the last revision, and {:.1} MiB after the same overwrites once more: {reused} (glibc keeps freed memory for reuse rather than returning it at once).",
                o.keys, o.times, grown.name, mib(o.before), mib(o.overwritten), mib(o.compacted), mib(o.again)
            ));
        }
        let fake = &all[1];
        let handle = fake
            .fake
            .as_ref()
            .ok_or("the in-process fake has a handle")?;
        let expiry = scale::mass_expiry(handle, &fake.client, 100_000).await?;
        let (without, with) = scale::watchers_not_matched(&fake.client).await?;
        report.record(
            "lease expiry at scale, to the last DELETE",
            fake.name,
            ms(expiry.delivered),
        );
        report.line(&format!(
            "{} leases, each with a key, expired by one `advance`: the advance took {:.1} ms, and a prefix watcher had every DELETE {:.1} ms after it began (every key gone).",
            expiry.leases,
            ms(expiry.advance),
            ms(expiry.delivered)
        ));
        report.line(&format!("Put latency with no watcher and with 10,000 watchers on other keys (one stream): {:.3} ms and {:.3} ms ({:.2}x): a write looks up only the watchers whose key or prefix it matches.", ms(without), ms(with), ms(with) / ms(without)));
    }

    if args.wants("soak") {
        match &fake_bin {
            Some(path) => {
                eprintln!("soak");
                let shape = soak::Soak::default();
                let outcome = soak::run(path, shape).await?;
                report.section(
                    "Load and soak",
                    &format!(
                        "The fake's binary on the real clock, under {} writers of {} puts each (fresh keys), {} watchers on the writers' prefixes over {} streams ({} streams read slowly, {} never read), keepalives for {} leases of {} s TTL every 500 ms, and {}% of puts failed by an injected fault, all at once. Then: every acknowledged put reads back at its revision; every watcher that kept reading got every acknowledged put of its prefix once, in order; every lease is alive; the peak resident memory (VmHWM) is under {} MiB.",
                        shape.writers,
                        shape.puts_per_writer,
                        shape.streams * shape.watchers_per_stream,
                        shape.streams,
                        shape.slow_streams,
                        shape.idle_streams,
                        shape.leases,
                        shape.lease_ttl_secs,
                        shape.put_fault_probability * 100.0,
                        shape.memory_bound >> 20,
                    ),
                );
                report.line(&format!(
                    "{} puts acknowledged, {} failed by the fault; {} events checked; {} keepalives answered; {:.1} s from the first grant to the last check.",
                    outcome.acknowledged,
                    outcome.failed,
                    outcome.events,
                    outcome.keepalives,
                    outcome.wall.as_secs_f64()
                ));
                report.line(&format!(
                    "Peak resident memory: {:.1} MiB, bound {} MiB.",
                    outcome.peak_resident as f64 / (1024.0 * 1024.0),
                    shape.memory_bound >> 20
                ));
                if outcome.problems.is_empty() {
                    report.line("Every check held.");
                } else {
                    for problem in &outcome.problems {
                        report.line(&format!("**Failed:** {problem}"));
                    }
                    let text = report.render();
                    println!("{text}");
                    return Err(
                        format!("the soak found {} problems", outcome.problems.len()).into(),
                    );
                }
            }
            None => report.note("The fake's binary was not found: the soak is left out."),
        }
    }

    // Leave a shared etcd as it was found (the fakes go with the run).
    for t in all.iter().filter(|t| t.kind == Kind::Etcd) {
        let everything = etcd_client::DeleteOptions::new().with_prefix();
        t.client
            .clone()
            .delete(prefix.as_str(), Some(everything))
            .await?;
    }

    report.targets();
    let text = report.render();
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, text)?;
        eprintln!("wrote {}", out.display());
    }
    drop(processes);
    Ok(())
}
