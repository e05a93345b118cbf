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
                "--initial-advertise-peer-urls",
                "http://10.0.0.9:2380,http://infra9.example:2380",
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

/// Runs the binary with `args`, which must make it refuse to start: its
/// output once it exits. A binary that starts serving instead is killed
/// after 10 s and the test fails, rather than waiting for ever.
fn refused(args: &[&str]) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fake-etcd");
    for _ in 0..1000 {
        if child.try_wait().expect("wait for fake-etcd").is_some() {
            return child.wait_with_output().expect("fake-etcd's output");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("fake-etcd {args:?} started instead of refusing");
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
    assert_eq!(
        members.members()[0].peer_urls(),
        ["http://10.0.0.9:2380", "http://infra9.example:2380"]
    );

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
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no lease 12345"));
    let bad = ctl(control_port, &["advance", "soon"]);
    assert!(!bad.status.success());
}

/// A refused control: non-zero, nothing on stdout, one line on stderr.
#[track_caller]
fn assert_refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("fake-etcd ctl: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr}"
    );
}

/// A typo once turned "fail twice" into "fail always"; out-of-range values
/// went through. Every bad input now gets one line naming the choices.
#[tokio::test]
async fn bad_control_input_is_refused_with_the_valid_choices() {
    let (client_port, control_port) = (free_port(), free_port());
    let _server = start(client_port, control_port).await;
    assert_refused(
        &ctl(control_port, &["fail", "rpc=Put", "cuont=2"]),
        "unknown parameter `cuont` for fail: it takes rpc, code, message, count, probability",
    );
    assert_refused(
        &ctl(control_port, &["fail", "probability=2"]),
        "`probability` must be a number from 0 to 1",
    );
    assert_refused(
        &ctl(control_port, &["fail", "count=-1"]),
        "`count` must be a whole number, 0 or more",
    );
    assert_refused(&ctl(control_port, &["delay", "by=-5s"]), "not negative");
    assert_refused(&ctl(control_port, &["advance", "-1s"]), "not negative");
    assert_refused(
        &ctl(control_port, &["fail", "rpc=Putt"]),
        "give a method such as Put",
    );
    assert_refused(
        &ctl(control_port, &["fail", "code=nope"]),
        "a number from 1 to 16",
    );
    assert_refused(&ctl(control_port, &["pause", "now=1"]), "it takes none");
    assert_refused(
        &ctl(control_port, &["frobnicate"]),
        "the controls are status, leases, advance",
    );
    // A wrong method, as another language's client could send it.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", control_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /v1/advance?by=1s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(
        response.contains("advance takes POST, not GET"),
        "{response}"
    );
    // Nothing was injected by any of it.
    let status = ctl(control_port, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"faults\":[]"));
}

#[tokio::test]
async fn status_shows_pauses_stalls_and_faults() {
    let (client_port, control_port) = (free_port(), free_port());
    let _server = start(client_port, control_port).await;
    assert!(ctl(control_port, &["fail", "rpc=Put", "count=2"])
        .status
        .success());
    assert!(ctl(control_port, &["stall-watches"]).status.success());
    assert!(ctl(control_port, &["pause"]).status.success());
    let status = ctl(control_port, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("\"paused\":true"), "{text}");
    assert!(text.contains("\"watches_stalled\":true"), "{text}");
    assert!(text.contains("fail Put: the next 2 calls"), "{text}");
}

/// `ctl auth` shows users, roles and live tokens; `ctl expire-auth-tokens`
/// expires a user's tokens, which then fail as etcd's expired ones do.
#[tokio::test]
async fn ctl_shows_auth_and_expires_tokens() {
    let (client_port, control_port) = (free_port(), free_port());
    let _server = start(client_port, control_port).await;
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let admin = Client::connect([endpoint.clone()], None).await.unwrap();
    let mut auth = admin.auth_client();
    auth.user_add("root", "pw", None).await.unwrap();
    auth.user_grant_role("root", "root").await.unwrap();
    auth.auth_enable().await.unwrap();
    let login = etcd_client::ConnectOptions::new().with_user("root", "pw");
    let mut root = Client::connect([endpoint], Some(login)).await.unwrap();
    root.put("k", "v", None).await.unwrap();

    let shown = ctl(control_port, &["auth"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("\"enabled\":true"), "{text}");
    assert!(
        text.contains("\"name\":\"root\",\"no_password\":false,\"roles\":[\"root\"]"),
        "{text}"
    );
    assert!(text.contains("\"user\":\"root\""), "a live token: {text}");

    let expired = ctl(control_port, &["expire-auth-tokens", "root"]);
    let text = String::from_utf8_lossy(&expired.stdout);
    assert!(text.contains("\"expired\":1"), "{text}");
    let err = root.put("k", "v", None).await.unwrap_err();
    assert!(err.to_string().contains("invalid auth token"), "{err}");
}

#[test]
fn ctl_help_lists_every_control_with_its_parameters() {
    let out = Command::new(BINARY)
        .args(["ctl", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for control in fake_etcd::control::CONTROLS {
        assert!(help.contains(control.name), "{} missing", control.name);
        for param in control.params {
            assert!(
                help.contains(&format!("{}=", param.name)),
                "{} missing",
                param.name
            );
        }
    }
}

#[test]
fn a_remote_control_address_needs_the_operator_to_mean_it() {
    let out = refused(&[
        "--control-listen",
        "0.0.0.0:0",
        "--listen-client-urls",
        "http://127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--control-listen-allow-remote"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_mistyped_flag_gets_the_etcd_flag_it_resembles() {
    let out = refused(&["--listen-client-url", "http://127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'--listen-client-urls'"), "{stderr}");
}

#[tokio::test]
async fn a_taken_port_is_refused_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = refused(&[
        "--listen-client-urls",
        &format!("http://127.0.0.1:{port}"),
        "--control-listen",
        "off",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("fake-etcd: cannot listen on 127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_progress_interval_out_of_range_is_refused_naming_the_flag() {
    for bad in ["0s", "400d", "soon"] {
        let output = refused(&[
            "--experimental-watch-progress-notify-interval",
            bad,
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--control-listen",
            "off",
        ]);
        assert!(!output.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--experimental-watch-progress-notify-interval"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn several_client_urls_are_refused_rather_than_half_served() {
    let out = refused(&[
        "--listen-client-urls",
        "http://127.0.0.1:0,http://127.0.0.1:0",
        "--control-listen",
        "off",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 client URLs for 1 member(s)"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The member IDs `ctl members` lists, with their states, in its order.
fn members(control_port: u16) -> Vec<(String, String, bool)> {
    let out = ctl(control_port, &["members"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    json["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
                m["leader"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn ctl_drives_the_members_of_a_cluster() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let control_port = free_port();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let _server = Running(
        Command::new(BINARY)
            .args(["--members", "3", "--listen-client-urls", &urls.join(",")])
            .args(["--control-listen", &format!("127.0.0.1:{control_port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("run fake-etcd"),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", control_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let listed = members(control_port);
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|(_, state, _)| state == "running"));
    let leader = listed.iter().find(|m| m.2).expect("a leader").0.clone();
    let follower = listed.iter().find(|m| !m.2).unwrap().0.clone();

    // Every URL serves a member of the same cluster.
    let mut ids = Vec::new();
    for url in &urls {
        let mut client = Client::connect([url.clone()], None).await.unwrap();
        let status = client.status().await.unwrap();
        ids.push(format!("{:x}", status.header().unwrap().member_id()));
        assert_eq!(format!("{:x}", status.leader()), leader);
    }
    ids.sort();
    let mut expected: Vec<String> = listed.iter().map(|m| m.0.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    assert!(ctl(control_port, &["isolate-member", &follower])
        .status
        .success());
    assert!(members(control_port).contains(&(follower.clone(), "isolated".into(), false)));
    assert!(ctl(control_port, &["heal-member", &follower])
        .status
        .success());

    assert!(ctl(control_port, &["move-leader", &follower])
        .status
        .success());
    let moved = members(control_port);
    assert!(
        moved.contains(&(follower.clone(), "running".into(), true)),
        "{moved:?}"
    );

    assert!(ctl(control_port, &["stop-member", &leader])
        .status
        .success());
    assert!(members(control_port).contains(&(leader.clone(), "stopped".into(), false)));
    let again = ctl(control_port, &["stop-member", &leader]);
    assert!(!again.status.success());
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(text.contains("is stopped: cannot stop it"), "{text}");
    assert!(ctl(control_port, &["start-member", &leader])
        .status
        .success());
    let unknown = ctl(control_port, &["pause-member", "abc"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no member abc"));
    let bad = ctl(control_port, &["pause-member", "xyz"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a member ID in hex"));
}
