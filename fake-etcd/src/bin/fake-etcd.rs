//! `fake-etcd`: the in-memory etcd as a standalone server, for etcdctl and
//! clients in any language, and `fake-etcd ctl`, which drives a running one
//! through its control API. It takes etcd's own flag names where they apply.

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// An in-memory etcd v3 server, wire-compatible with etcd 3.5.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// URL to listen on for client traffic (etcd's flag; http:// or
    /// https://, the latter with --cert-file and --key-file). A cluster
    /// takes one URL per member, comma separated; members without one
    /// listen on a free loopback port (`fake-etcd ctl members` lists them).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// How many members the cluster has (1 to 7), each with its own
    /// endpoint: see `fake-etcd ctl members` and the member controls.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=7))]
    members: u64,
    /// The initial members, as etcd's flag: `infra1=http://10.0.0.1:2380,...`
    /// (names and peer URLs, from which IDs come; overrides --members).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// etcd's --initial-cluster-token, part of every member's ID.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Client URLs to advertise in `member list` (comma separated).
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// Peer URLs to advertise in `member list` (comma separated; the fake
    /// serves no peer port).
    #[arg(long, value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Human-readable name of the member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Accepted for compatibility with etcd and ignored: data lives in memory.
    #[arg(long)]
    data_dir: Option<String>,
    /// The server's TLS certificate (PEM), for https:// client URLs.
    #[arg(long, value_name = "FILE")]
    cert_file: Option<std::path::PathBuf>,
    /// The server's TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
    /// The CA that client certificates must be signed by (PEM).
    #[arg(long, value_name = "FILE")]
    trusted_ca_file: Option<std::path::PathBuf>,
    /// Require clients to present a certificate signed by --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
    /// How auth tokens are made: `simple`, or
    /// `jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256[,ttl=5m]`.
    #[arg(long, default_value = "simple")]
    auth_token: String,
    /// Seconds a simple token lives unused (each use restarts it).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    auth_token_ttl: u64,
    /// The bcrypt cost of user passwords (4 to 31).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    bcrypt_cost: u32,
    /// Start from the state in this etcd snapshot (`etcdctl snapshot save`).
    #[arg(long, value_name = "FILE")]
    restore_snapshot: Option<std::path::PathBuf>,
    /// Where the control API listens (host:port on loopback), or `off`.
    #[arg(long, default_value = "127.0.0.1:2381")]
    control_listen: String,
    /// Let the control API listen on an address other machines can reach.
    /// It can wipe the store and break every client: only on a network you
    /// trust.
    #[arg(long)]
    control_listen_allow_remote: bool,
    /// Where time comes from: the wall clock, or virtual time that moves only
    /// through the control API (`fake-etcd ctl advance 30s`).
    #[arg(long, value_enum, default_value_t = Time::Real)]
    time: Time,
    /// Seed for random fault injection (default: FAKE_ETCD_SEED, or the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// How often watchers that asked for progress notifications get one
    /// (etcd's flag; from 1ms to 365 days).
    #[arg(long, default_value = "10m", value_parser = progress_interval)]
    experimental_watch_progress_notify_interval: std::time::Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Time {
    Real,
    Virtual,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running fake-etcd through its control API, e.g.
    /// `fake-etcd ctl advance 30s`, `fake-etcd ctl fail rpc=Put count=2`,
    /// `fake-etcd ctl status`.
    #[command(after_help = fake_etcd::control::describe_controls())]
    Ctl {
        /// The control API's address.
        #[arg(long, default_value = "127.0.0.1:2381")]
        control: String,
        /// The control (see the list below).
        control_name: String,
        /// Parameters as name=value; `advance 30s` and `expire-lease ID`
        /// take theirs bare. (Values may start with `-`: the control API
        /// itself says why a negative one is refused.)
        #[arg(allow_hyphen_values = true)]
        params: Vec<String>,
    },
}

fn progress_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = fake_etcd::control::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 10m, 30s or 500ms"))?;
    fake_etcd::check_progress_interval(interval).map_err(|err| err.to_string())?;
    Ok(interval)
}

/// Refuses a control address other machines could reach, unless the
/// operator said they mean it.
fn check_control_address(address: &str, allow_remote: bool) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let resolved: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|err| format!("--control-listen: {address:?} is not host:port ({err})"))?
        .collect();
    if allow_remote || resolved.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(format!(
        "--control-listen: {address} is not a loopback address, and the control API can wipe the store; pass --control-listen-allow-remote if you mean it"
    ))
}

/// The address to listen on, and whether the URL asks for TLS.
/// Each member's client address, and whether they serve TLS (all alike).
fn listen_addrs(urls: &str) -> Result<(Vec<SocketAddr>, bool), String> {
    let mut addrs = Vec::new();
    let mut schemes = std::collections::BTreeSet::new();
    for url in urls.split(',') {
        let (addr, tls) = listen_addr(url)?;
        addrs.push(addr);
        schemes.insert(tls);
    }
    if schemes.len() > 1 {
        return Err(format!(
            "--listen-client-urls: give every member http:// or every member https://, not both: {urls}"
        ));
    }
    Ok((addrs, schemes.contains(&true)))
}

fn listen_addr(first: &str) -> Result<(SocketAddr, bool), String> {
    let (host_port, tls) = match (
        first.strip_prefix("http://"),
        first.strip_prefix("https://"),
    ) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => {
            return Err(format!(
                "--listen-client-urls: give an http:// or https:// URL, got {first:?}"
            ))
        }
    };
    let host_port = host_port
        .trim_end_matches('/')
        .replacen("localhost", "127.0.0.1", 1);
    host_port
        .parse()
        .map(|addr| (addr, tls))
        .map_err(|e| format!("--listen-client-urls: {first:?} is not host:port ({e})"))
}

/// etcd's TLS flags, checked as etcd checks them.
fn tls_options(args: &Args, https: bool) -> Result<Option<fake_etcd::tls::TlsOptions>, String> {
    let (cert, key) = match (&args.cert_file, &args.key_file, https) {
        (None, None, false) => return Ok(None),
        (Some(cert), Some(key), true) => (cert, key),
        (_, _, true) => {
            return Err(
                "--listen-client-urls: an https:// URL needs --cert-file and --key-file".into(),
            )
        }
        (_, _, false) => {
            return Err(
                "--cert-file and --key-file serve TLS: give an https:// --listen-client-urls"
                    .into(),
            )
        }
    };
    let mut options =
        fake_etcd::tls::TlsOptions::from_files(cert, key).map_err(|e| e.to_string())?;
    if let Some(ca) = &args.trusted_ca_file {
        options = options.trusted_ca_file(ca).map_err(|e| e.to_string())?;
    }
    if args.client_cert_auth && args.trusted_ca_file.is_none() {
        return Err("--client-cert-auth needs --trusted-ca-file".into());
    }
    Ok(Some(options.client_cert_auth(args.client_cert_auth)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Ctl {
            control,
            control_name,
            params,
        }) => ctl(&control, &control_name, &params),
        None => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(serve(args)),
            Err(err) => {
                eprintln!("fake-etcd: cannot start the runtime: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(dir) = &args.data_dir {
        tracing::info!(data_dir = %dir, "--data-dir ignored: fake-etcd keeps its data in memory");
    }
    let fail = |message: String| {
        eprintln!("fake-etcd: {message}");
        ExitCode::FAILURE
    };
    let (addrs, https) = match listen_addrs(&args.listen_client_urls) {
        Ok(addrs) => addrs,
        Err(message) => return fail(message),
    };
    let tls = match tls_options(&args, https) {
        Ok(tls) => tls,
        Err(message) => return fail(message),
    };
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => listeners.push(listener),
            Err(err) => return fail(format!("cannot listen on {addr}: {err}")),
        }
    }
    let control = match args.control_listen.as_str() {
        "off" => None,
        control => match check_control_address(control, args.control_listen_allow_remote) {
            Err(message) => return fail(message),
            Ok(()) => match TcpListener::bind(control).await {
                Ok(listener) => Some(listener),
                Err(err) => {
                    return fail(format!(
                        "cannot listen for the control API on {control}: {err}"
                    ))
                }
            },
        },
    };
    let time = match args.time {
        Time::Real => fake_etcd::TimeSource::Real,
        Time::Virtual => fake_etcd::TimeSource::Virtual,
    };
    let mut builder = fake_etcd::FakeEtcd::builder()
        .listeners(listeners)
        .members(args.members as usize)
        .initial_cluster_token(args.initial_cluster_token)
        .name(args.name)
        .time(time)
        .progress_notify_interval(args.experimental_watch_progress_notify_interval)
        .auth_token(args.auth_token.clone())
        .auth_token_ttl(std::time::Duration::from_secs(args.auth_token_ttl))
        .bcrypt_cost(args.bcrypt_cost)
        .advertise_client_urls(args.advertise_client_urls)
        .advertise_peer_urls(args.initial_advertise_peer_urls);
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }
    if let Some(spec) = args.initial_cluster {
        builder = builder.initial_cluster(spec);
    }
    if let Some(file) = &args.restore_snapshot {
        builder = builder.restore_snapshot(file);
    }
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let etcd = match builder.start().await {
        Ok(etcd) => Arc::new(etcd),
        Err(err) => return fail(err.to_string()),
    };
    tracing::info!(endpoint = %etcd.endpoint(), seed = etcd.seed(), time = ?time, "serving etcd v3 API");
    if etcd.members().len() > 1 {
        for member in etcd.members() {
            if let Some(endpoint) = member.endpoint {
                tracing::info!(name = %member.name, id = %format!("{:x}", member.id), %endpoint, "member");
            }
        }
        tracing::info!(endpoints = %etcd.endpoints().join(","), "cluster");
    }
    if let Some(listener) = control {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving the control API");
        }
        tokio::spawn(fake_etcd::control::serve(Arc::clone(&etcd), listener));
    }
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // If Ctrl-C cannot be watched, serve until killed.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupted => {
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
        failure = etcd.failure() => fail(failure.to_string()),
    }
}

/// One control call: a plain HTTP/1.1 request, the JSON answer printed.
fn ctl(control: &str, name: &str, params: &[String]) -> ExitCode {
    // An unknown control is sent all the same: the API's refusal lists
    // the ones there are.
    let known = fake_etcd::control::CONTROLS.iter().find(|c| c.name == name);
    let bare = known.and_then(|c| c.bare);
    let query: Vec<String> = params
        .iter()
        .map(|p| match (p.split_once('='), bare) {
            (Some(_), _) => p.clone(),
            (None, Some(key)) => format!("{key}={p}"),
            (None, None) => p.clone(),
        })
        .map(|p| percent_encoding::utf8_percent_encode(&p, QUERY).to_string())
        .collect();
    let method = known.map_or("POST", |c| c.method);
    let path = if query.is_empty() {
        format!("/v1/{name}")
    } else {
        format!("/v1/{name}?{}", query.join("&"))
    };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {control}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let response = TcpStream::connect(control).and_then(|mut stream| {
        // A port that accepts and never answers is not the control API:
        // give up rather than hang.
        stream.set_read_timeout(Some(CTL_PATIENCE))?;
        stream.set_write_timeout(Some(CTL_PATIENCE))?;
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        String::from_utf8(response).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the answer is not the control API's (is --control the control port?)",
            )
        })
    });
    match response {
        Ok(response) => {
            let ok = response.starts_with("HTTP/1.1 200");
            let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            if ok {
                print!("{body}");
                return ExitCode::SUCCESS;
            }
            // An error is one line on stderr: the API's own words.
            let error = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| body.trim().replace('\n', " "));
            eprintln!("fake-etcd ctl: {error}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("fake-etcd ctl: cannot reach the control API at {control}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long `ctl` waits for the control API's answer (an `advance` over
/// many leases included).
const CTL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// What a query value may not contain unescaped.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'#')
    .add(b'&')
    .add(b'+')
    .add(b'%')
    .add(b'"');
