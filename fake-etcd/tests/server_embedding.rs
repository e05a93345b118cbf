//! Embedding: many fakes in one process, and drop as shutdown.

use std::time::Duration;

use fake_etcd::FakeEtcd;

#[tokio::test]
async fn many_fakes_run_side_by_side_with_their_own_data() {
    let first = FakeEtcd::start().await.unwrap();
    let second = FakeEtcd::start().await.unwrap();
    assert_ne!(first.addr(), second.addr());
    let mut a = etcd_client::Client::connect([first.endpoint()], None)
        .await
        .unwrap();
    let mut b = etcd_client::Client::connect([second.endpoint()], None)
        .await
        .unwrap();
    a.put("k", "first", None).await.unwrap();
    assert!(b.get("k", None).await.unwrap().kvs().is_empty());
    assert_eq!((first.revision(), second.revision()), (2, 1));
}

#[tokio::test]
async fn dropping_the_handle_closes_client_connections() {
    let etcd = FakeEtcd::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let mut client = etcd_client::Client::connect([endpoint.clone()], None)
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();
    drop(etcd);
    let after = tokio::time::timeout(Duration::from_secs(5), client.get("k", None)).await;
    assert!(
        matches!(after, Ok(Err(_))),
        "the request fails promptly: {after:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_builder_listener_and_name_are_used() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let etcd = FakeEtcd::builder()
        .listener(listener)
        .name("infra1")
        .member_id(42)
        .start()
        .await
        .unwrap();
    assert_eq!(etcd.addr(), addr);
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let members = client.member_list().await.unwrap();
    let member = &members.members()[0];
    assert_eq!((member.id(), member.name()), (42, "infra1"));
    assert_eq!(member.client_urls(), [etcd.endpoint()]);
}

#[tokio::test]
async fn a_fake_can_start_with_its_history_compacted_away() {
    let etcd = FakeEtcd::builder().compacted_at(900).start().await.unwrap();
    assert_eq!(etcd.revision(), 900);
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let at = |revision| Some(etcd_client::GetOptions::new().with_revision(revision));
    assert!(client.get("k", at(900)).await.unwrap().kvs().is_empty());
    let compacted = client.get("k", at(899)).await.unwrap_err().to_string();
    assert!(
        compacted.contains("required revision has been compacted"),
        "{compacted}"
    );
    let again = client.compact(900, None).await.unwrap_err().to_string();
    assert!(
        again.contains("required revision has been compacted"),
        "{again}"
    );
    assert_eq!(client.hash_kv(0).await.unwrap().compact_version(), 900);

    for (builder, why) in [
        (FakeEtcd::builder().compacted_at(0), "from 1 to"),
        (FakeEtcd::builder().compacted_at(i64::MAX), "from 1 to"),
        (
            FakeEtcd::builder()
                .compacted_at(5)
                .restore_snapshot("any.db"),
            "both say",
        ),
    ] {
        let refused = builder.start().await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(refused.to_string().contains(why), "{refused}");
    }
}
