//! The binary: etcd's flags, the control API and `fake-etcd ctl`, as another
//! language's test would use them.

mod common;

use common::put_on_new_lease;

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use etcd_client::Client;

const BINARY: &str = env!("CARGO_BIN_EXE_fake-etcd");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(client_port: u16, control_port: u16) -> Running {
    let server = Running(
        Command::new(BINARY)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
            ])
            .args(["--control-listen", &format!("127.0.0.1:{control_port}")])
            .args([
                "--time",
                "virtual",
                "--data-dir",
                "ignored",
                "--name",
                "infra9",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("run fake-etcd"),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", control_port)).is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fake-etcd did not start");
}

fn ctl(control_port: u16, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(["ctl", "--control", &format!("127.0.0.1:{control_port}")])
        .args(args)
        .output()
        .expect("run fake-etcd ctl")
}

#[tokio::test]
async fn ctl_advances_virtual_time_and_injects_faults() {
    let (client_port, control_port) = (free_port(), free_port());
    let _server = start(client_port, control_port).await;
    let mut client = Client::connect([format!("http://127.0.0.1:{client_port}")], None)
        .await
        .unwrap();
    let members = client.member_list().await.unwrap();
    assert_eq!(members.members()[0].name(), "infra9");

    put_on_new_lease(&mut client, "k", 30).await;
    let out = ctl(control_port, &["advance", "31s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"elapsed_ms\":31000"));
    assert!(
        client.get("k", None).await.unwrap().kvs().is_empty(),
        "the lease expired on advance"
    );

    let out = ctl(
        control_port,
        &[
            "fail",
            "rpc=Put",
            "count=1",
            "code=unavailable",
            "message=etcdserver: leader changed",
        ],
    );
    assert!(out.status.success());
    let err = client.put("k", "v", None).await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: leader changed"),
        "{err}"
    );
    client.put("k", "v", None).await.unwrap();

    let status = ctl(control_port, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("\"revision\":") && text.contains("\"time\":\"virtual\""),
        "{text}"
    );

    let unknown = ctl(control_port, &["expire-lease", "12345"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("no lease 12345"));
    let bad = ctl(control_port, &["advance", "soon"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn a_taken_port_is_refused_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BINARY)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--control-listen",
            "off",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("fake-etcd: cannot listen on 127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_progress_interval_out_of_range_is_refused_with_one_line() {
    for bad in ["0s", "400d", "soon"] {
        let output: Output = Command::new(BINARY)
            .args(["--experimental-watch-progress-notify-interval", bad])
            .args(["--listen-client-urls", "http://127.0.0.1:0"])
            .args(["--control-listen", "off"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--experimental-watch-progress-notify-interval"),
            "{bad}: {stderr}"
        );
    }
}
