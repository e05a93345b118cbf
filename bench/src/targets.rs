//! The targets, all reached through one `etcd_client::Client` each: the
//! fake in this process (over TCP and over its in-process channel), the
//! fake's binary, a real etcd, and the floor. Also the startup costs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::Client;
use etcd_proto::etcdserverpb::kv_client::KvClient;
use fake_etcd::{FakeEtcd, TimeSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::Error;

/// What a target can do beyond plain KV calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The empty KV server: no store, no leases, no watches.
    Floor,
    /// The fake in this process; its clock is advanced directly.
    FakeInProcess,
    /// The fake's binary, in virtual time, advanced through its control API.
    FakeBinary,
    /// A real etcd, waited on.
    Etcd,
}

/// One target and its client.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) client: Client,
    /// A plain tonic KV client on the same target, for responses larger
    /// than the 4 MiB `etcd-client` accepts (it has no knob for that).
    pub(crate) kv: KvClient<Channel>,
    /// The fake's handle (in-process kinds only).
    pub(crate) fake: Option<std::sync::Arc<FakeEtcd>>,
    /// The binary's control API.
    pub(crate) control: Option<SocketAddr>,
    /// The binary's process id, for its memory.
    pub(crate) pid: Option<u32>,
}

impl Target {
    /// Whether the target keeps data (everything but the floor).
    pub(crate) fn stores(&self) -> bool {
        self.kind != Kind::Floor
    }

    /// Moves a fake's clock by `by`. A real etcd's time passes by itself:
    /// nothing to do (the caller waits for what it expects to happen).
    pub(crate) async fn pass(&self, by: Duration) -> Result<(), Error> {
        match (self.kind, &self.fake, self.control) {
            (Kind::FakeInProcess, Some(fake), _) => fake.advance(by).await,
            (Kind::FakeBinary, _, Some(control)) => {
                control_call(control, &format!("/v1/advance?by={}ms", by.as_millis())).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A KV client on `channel` that takes responses of any size.
fn raw_kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// A plain tonic channel to `endpoint`.
async fn channel_to(endpoint: &str) -> Result<Channel, Error> {
    Ok(Channel::from_shared(endpoint.to_owned())?.connect().await?)
}

/// A free loopback port (bound, read and released: a race with other
/// programs is possible but harmless here).
fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The fake in this process, reached over TCP or over its in-process
/// channel; and how long it took from nothing to a first successful
/// request (the fake's startup).
pub(crate) async fn fake(in_memory: bool) -> Result<(Target, Duration), Error> {
    let started = Instant::now();
    let fake = FakeEtcd::builder()
        .time(TimeSource::Virtual)
        .start()
        .await?;
    let mut client = if in_memory {
        let channel = etcd_client::Channel::Tonic(fake.in_process_channel());
        Client::from_channel(channel, None).await?
    } else {
        Client::connect([fake.endpoint()], None).await?
    };
    client.get("warm-up", None).await?;
    let startup = started.elapsed();
    let (name, kv) = if in_memory {
        ("fake (in-memory)", raw_kv(fake.in_process_channel()))
    } else {
        ("fake", raw_kv(channel_to(&fake.endpoint()).await?))
    };
    Ok((
        Target {
            name,
            kind: Kind::FakeInProcess,
            client,
            kv,
            fake: Some(std::sync::Arc::new(fake)),
            control: None,
            pid: None,
        },
        startup,
    ))
}

/// The floor, over TCP.
pub(crate) async fn floor() -> Result<Target, Error> {
    let addr = crate::floor::start().await?;
    let endpoint = format!("http://{addr}");
    let client = Client::connect([endpoint.as_str()], None).await?;
    let kv = raw_kv(channel_to(&endpoint).await?);
    Ok(Target {
        name: "floor",
        kind: Kind::Floor,
        client,
        kv,
        fake: None,
        control: None,
        pid: None,
    })
}

/// The floor, over in-memory pipes.
pub(crate) async fn floor_in_memory() -> Result<Target, Error> {
    let channel = crate::floor::start_in_memory();
    let client = Client::from_channel(etcd_client::Channel::Tonic(channel.clone()), None).await?;
    Ok(Target {
        name: "floor (in-memory)",
        kind: Kind::Floor,
        client,
        kv: raw_kv(channel),
        fake: None,
        control: None,
        pid: None,
    })
}

/// A real etcd at `endpoints` (already running).
pub(crate) async fn etcd(endpoints: &str) -> Result<Target, Error> {
    let mut client = Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await?;
    client.get("warm-up", None).await?;
    let first = endpoints.split(',').next().unwrap_or(endpoints);
    let kv = raw_kv(channel_to(first).await?);
    Ok(Target {
        name: "etcd",
        kind: Kind::Etcd,
        client,
        kv,
        fake: None,
        control: None,
        pid: None,
    })
}

/// A process this harness started; killed when dropped.
pub(crate) struct Process {
    child: Child,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `endpoint` until a request succeeds; the time from `started`.
async fn first_success(endpoint: &str, started: Instant) -> Result<(Client, Duration), Error> {
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(mut client) = Client::connect([endpoint], None).await {
            if client.get("warm-up", None).await.is_ok() {
                return Ok((client, started.elapsed()));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{endpoint} did not answer within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the fake's binary in virtual time; the target, its process, and
/// the time from spawning to a first successful request.
pub(crate) async fn fake_binary(path: &Path) -> Result<(Target, Process, Duration), Error> {
    let started = Instant::now();
    let binary = spawn_fake_binary(path, "virtual")?;
    let (client, startup) = first_success(&binary.endpoint, started).await?;
    let kv = raw_kv(channel_to(&binary.endpoint).await?);
    Ok((
        Target {
            name: "fake (binary)",
            kind: Kind::FakeBinary,
            client,
            kv,
            fake: None,
            control: Some(binary.control),
            pid: binary.process.child.id(),
        },
        binary.process,
        startup,
    ))
}

/// A running fake binary.
pub(crate) struct FakeBinary {
    pub(crate) endpoint: String,
    pub(crate) control: SocketAddr,
    pub(crate) process: Process,
}

impl FakeBinary {
    /// Its process ID, while it runs.
    pub(crate) fn process_id(&self) -> Option<u32> {
        self.process.child.id()
    }
}

/// Spawns the fake's binary on free loopback ports with its clock `time`
/// (`virtual` or `real`); it may not serve yet.
pub(crate) fn spawn_fake_binary(path: &Path, time: &str) -> Result<FakeBinary, Error> {
    let client_port = free_port()?;
    let control_port = free_port()?;
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let child = Command::new(path)
        .args(["--listen-client-urls", &endpoint])
        .args(["--control-listen", &format!("127.0.0.1:{control_port}")])
        .args(["--time", time])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(FakeBinary {
        endpoint,
        control: ([127, 0, 0, 1], control_port).into(),
        process: Process { child, _data: None },
    })
}

/// Waits until the etcd at `endpoint` answers a request.
pub(crate) async fn wait_serving(endpoint: &str) -> Result<(), Error> {
    first_success(endpoint, Instant::now()).await.map(|_| ())
}

/// The time from spawning a real etcd (data on tmpfs when there is one,
/// no fsync, as the launcher runs it) to a first successful request.
pub(crate) async fn etcd_startup(path: &Path) -> Result<Duration, Error> {
    let client_port = free_port()?;
    let peer_port = free_port()?;
    let shm = PathBuf::from("/dev/shm");
    let data = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let started = Instant::now();
    let child = Command::new(path)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .arg("--unsafe-no-fsync")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut process = Process {
        child,
        _data: Some(data),
    };
    let result = first_success(&client_url, started).await;
    // Gone before its data directory is removed (when `process` drops).
    let _ = process.child.kill().await;
    Ok(result?.1)
}

/// One call to the binary's control API (plain HTTP/1.1).
pub(crate) async fn control_call(control: SocketAddr, path: &str) -> Result<String, Error> {
    let mut stream = tokio::net::TcpStream::connect(control).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {control}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("control call {path} failed: {answer}").into());
    }
    Ok(answer)
}

/// The resident memory of process `pid`, in bytes (Linux).
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    memory_figure(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in bytes (Linux).
pub(crate) fn peak_resident_bytes(pid: u32) -> Option<u64> {
    memory_figure(pid, "VmHWM:")
}

fn memory_figure(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
