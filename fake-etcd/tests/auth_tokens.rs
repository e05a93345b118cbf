//! Auth tokens on the member's clock: simple tokens that expire unused,
//! JWTs signed with etcd's methods and refused once the auth store moves
//! on, tokens the test expires, and the auth state a test can look at.

mod common;

use std::time::Duration;

use common::within;
use etcd_proto::authpb::{permission::Type as PermType, Permission};
use etcd_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, AuthEnableRequest, AuthRoleAddRequest,
    AuthRoleGrantPermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    AuthenticateRequest, PutRequest, RangeRequest,
};
use fake_etcd::FakeEtcd;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// `root` (password `rootpw`) and `app` (password `apppw`, READWRITE on
/// `app/`), then auth enabled; made over `channel` before auth is on.
async fn users(channel: &Channel) {
    let mut auth = AuthClient::new(channel.clone());
    for (name, password) in [("root", "rootpw"), ("app", "apppw")] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .unwrap();
    auth.role_add(AuthRoleAddRequest {
        name: "app-rw".into(),
    })
    .await
    .unwrap();
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "app-rw".into(),
        perm: Some(Permission {
            perm_type: PermType::Readwrite as i32,
            key: "app/".into(),
            range_end: "app0".into(),
        }),
    })
    .await
    .unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: "app".into(),
        role: "app-rw".into(),
    })
    .await
    .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
}

async fn log_in(channel: &Channel, name: &str, password: &str) -> String {
    AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("token", token.parse().unwrap());
    request
}

/// A put of `app/k` with `token`: its status code, or OK.
async fn put_as(channel: &Channel, token: &str) -> Code {
    let put = PutRequest {
        key: "app/k".into(),
        value: "v".into(),
        ..Default::default()
    };
    match within(
        "a put",
        KvClient::new(channel.clone()).put(with_token(put, token)),
    )
    .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_simple_token_lives_its_ttl_from_its_last_use() {
    let etcd = FakeEtcd::builder()
        .bcrypt_cost(4)
        .auth_token_ttl(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let channel = etcd.in_process_channel();
    users(&channel).await;
    let token = log_in(&channel, "app", "apppw").await;
    // etcd's format: 16 letters, a dot, the raft index of the login.
    let (letters, index) = token.split_once('.').unwrap();
    assert!(letters.len() == 16 && letters.bytes().all(|b| b.is_ascii_alphabetic()));
    assert!(index.parse::<u64>().is_ok(), "{token}");

    // Each use restarts the TTL: 29 s at a time, it never lapses.
    for _ in 0..3 {
        etcd.advance(Duration::from_secs(29)).await;
        assert_eq!(put_as(&channel, &token).await, Code::Ok);
    }
    let auth = etcd.auth();
    assert_eq!(auth.tokens.len(), 1);
    assert_eq!(auth.tokens[0].user, "app");
    assert_eq!(auth.tokens[0].expires_in, Duration::from_secs(30));

    // Unused for 30 s, it is gone.
    etcd.advance(Duration::from_secs(30)).await;
    assert_eq!(put_as(&channel, &token).await, Code::Unauthenticated);
    assert!(etcd.auth().tokens.is_empty());
}

#[tokio::test]
async fn the_test_expires_tokens_by_user() {
    let etcd = FakeEtcd::builder().bcrypt_cost(4).start().await.unwrap();
    let channel = etcd.in_process_channel();
    users(&channel).await;
    let app = log_in(&channel, "app", "apppw").await;
    let root = log_in(&channel, "root", "rootpw").await;
    assert_eq!(etcd.expire_auth_tokens(Some("app")), 1);
    assert_eq!(put_as(&channel, &app).await, Code::Unauthenticated);
    assert_eq!(put_as(&channel, &root).await, Code::Ok);
    assert_eq!(etcd.expire_auth_tokens(None), 1);
    assert_eq!(put_as(&channel, &root).await, Code::Unauthenticated);
}

#[tokio::test]
async fn the_auth_state_shows_users_roles_and_the_revision() {
    let etcd = FakeEtcd::builder().bcrypt_cost(4).start().await.unwrap();
    users(&etcd.in_process_channel()).await;
    let auth = etcd.auth();
    assert!(auth.enabled);
    // 1, then two users, a grant, a role, a permission, a grant.
    assert_eq!(auth.revision, 7);
    let names: Vec<_> = auth.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["app", "root"]);
    assert_eq!(auth.users[0].roles, ["app-rw"]);
    assert_eq!(auth.roles[0].name, "app-rw");
    assert_eq!(auth.roles[0].permissions[0].kind, "READWRITE");
    assert_eq!(auth.roles[0].permissions[0].key, b"app/");
}

/// Writes `contents` to a file that lives as long as the returned handle.
fn key_file(contents: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, contents).unwrap();
    file
}

/// JWTs: signed, carrying the auth revision; any change to the auth store
/// makes them old, and they expire on the member's clock.
async fn jwt_tokens_behave_as_etcds(spec: String) {
    let etcd = FakeEtcd::builder()
        .bcrypt_cost(4)
        .auth_token(spec)
        .start()
        .await
        .unwrap();
    let channel = etcd.in_process_channel();
    users(&channel).await;
    let token = log_in(&channel, "app", "apppw").await;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(put_as(&channel, &token).await, Code::Ok);
    // Not stored, so not listed.
    assert!(etcd.auth().tokens.is_empty());

    // A change elsewhere in the auth store: the token is now old.
    let root = log_in(&channel, "root", "rootpw").await;
    AuthClient::new(channel.clone())
        .role_add(with_token(AuthRoleAddRequest { name: "x".into() }, &root))
        .await
        .unwrap();
    let put = PutRequest {
        key: "app/k".into(),
        ..Default::default()
    };
    let old = KvClient::new(channel.clone())
        .put(with_token(put, &token))
        .await
        .unwrap_err();
    assert_eq!(
        (old.code(), old.message()),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old"
        )
    );

    // A fresh one works until its 1-minute TTL has passed.
    let token = log_in(&channel, "app", "apppw").await;
    assert_eq!(put_as(&channel, &token).await, Code::Ok);
    etcd.advance(Duration::from_secs(62)).await;
    assert_eq!(put_as(&channel, &token).await, Code::Unauthenticated);
    // And garbage is no token at all.
    assert_eq!(put_as(&channel, "a.b.c").await, Code::Unauthenticated);
}

#[tokio::test]
async fn hs256_jwts() {
    let secret = key_file(b"a shared secret, as etcd reads it from priv-key");
    jwt_tokens_behave_as_etcds(format!(
        "jwt,priv-key={},sign-method=HS256,ttl=1m",
        secret.path().display()
    ))
    .await;
}

#[tokio::test]
async fn es256_jwts() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = key_file(key.serialize_pem().as_bytes());
    let public = key_file(key.public_key_pem().as_bytes());
    jwt_tokens_behave_as_etcds(format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1m",
        public.path().display(),
        private.path().display()
    ))
    .await;
}

#[tokio::test]
async fn bad_token_options_are_refused_at_start() {
    for spec in [
        "paper",
        "jwt,sign-method=HS256",
        "jwt,sign-method=XX1,priv-key=/nonexistent",
        "jwt,priv-key=/nonexistent/key,sign-method=HS256",
        "jwt,colour=blue,sign-method=HS256",
    ] {
        let err = FakeEtcd::builder()
            .auth_token(spec)
            .start()
            .await
            .expect_err(spec);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{spec}: {err}"
        );
    }
    for cost in [3, 32] {
        let err = FakeEtcd::builder()
            .bcrypt_cost(cost)
            .start()
            .await
            .expect_err("a bcrypt cost out of range");
        assert!(err.to_string().contains("from 4 to 31"), "{err}");
    }
}

#[tokio::test]
async fn a_snapshot_keeps_users_roles_and_auth_on() {
    let etcd = FakeEtcd::builder().bcrypt_cost(4).start().await.unwrap();
    users(&etcd.in_process_channel()).await;
    let file = key_file(&etcd.snapshot());
    let copy = FakeEtcd::builder()
        .restore_snapshot(file.path())
        .start()
        .await
        .unwrap();
    let (before, after) = (etcd.auth(), copy.auth());
    assert_eq!(
        (after.enabled, after.revision, &after.users, &after.roles),
        (
            before.enabled,
            before.revision,
            &before.users,
            &before.roles
        )
    );
    // Passwords came along: the same logins work, and a stranger is refused.
    let channel = copy.in_process_channel();
    let token = log_in(&channel, "app", "apppw").await;
    assert_eq!(put_as(&channel, &token).await, Code::Ok);
    let range = RangeRequest {
        key: "app/k".into(),
        ..Default::default()
    };
    let refused = KvClient::new(channel).range(range).await.unwrap_err();
    assert_eq!(refused.message(), "etcdserver: user name is empty");
}

/// `GET /metrics` on the client port (HTTP/1.0, as client test suites send
/// it): go-grpc-prometheus's counters, here the logins that succeeded.
async fn logins_counted(endpoint: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = within("a connection", tokio::net::TcpStream::connect(address))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    within("the metrics", stream.read_to_string(&mut body))
        .await
        .unwrap();
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    body.lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains(r#"grpc_method="Authenticate""#)
                && l.contains(r#"grpc_code="OK""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn logins_are_counted_on_the_metrics_page() {
    let etcd = FakeEtcd::builder().bcrypt_cost(4).start().await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(etcd.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    users(&channel).await;
    assert_eq!(logins_counted(&etcd.endpoint()).await, 0);
    log_in(&channel, "app", "apppw").await;
    log_in(&channel, "root", "rootpw").await;
    let refused = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: "app".into(),
            password: "wrong".into(),
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(logins_counted(&etcd.endpoint()).await, 2);
}
