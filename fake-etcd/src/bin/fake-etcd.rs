//! `fake-etcd`: the in-memory etcd as a standalone server, for etcdctl and
//! clients in any language. It takes etcd's own flag names where they apply.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// An in-memory etcd v3 server, wire-compatible with etcd 3.5.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// URL to listen on for client traffic (etcd's flag; one URL, http only).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// Client URLs to advertise in `member list` (comma separated).
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// Human-readable name of the member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Accepted for compatibility with etcd and ignored: data lives in memory.
    #[arg(long)]
    data_dir: Option<String>,
}

fn listen_addr(url: &str) -> Result<SocketAddr, String> {
    let first = url.split(',').next().unwrap_or(url);
    let host_port = first.strip_prefix("http://").ok_or_else(|| {
        format!("--listen-client-urls: only http:// URLs are supported, got {first:?}")
    })?;
    let host_port = host_port.trim_end_matches('/');
    let host_port = host_port.replacen("localhost", "127.0.0.1", 1);
    host_port
        .parse()
        .map_err(|e| format!("--listen-client-urls: {first:?} is not host:port ({e})"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.data_dir {
        tracing::info!(data_dir = %dir, "--data-dir ignored: fake-etcd keeps its data in memory");
    }
    let addr = match listen_addr(&args.listen_client_urls) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("fake-etcd: {message}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("fake-etcd: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = fake_etcd::FakeEtcd::builder()
        .listener(listener)
        .name(args.name)
        .time(fake_etcd::TimeSource::Real)
        .advertise_client_urls(args.advertise_client_urls)
        .serve(async {
            // If Ctrl-C cannot be watched, serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fake-etcd: {err}");
            ExitCode::FAILURE
        }
    }
}
