//! Snapshots: streamed as etcd streams them, and a fake started from one,
//! whether a fake or a real etcd 3.5.1 took it.

mod common;

use std::time::Duration;

use common::{connect, within};
use etcd_client::{GetOptions, PutOptions, WatchOptions};
use fake_etcd::{ControlError, FakeEtcd};

/// A snapshot etcd 3.5.1 took (`etcdctl snapshot save`, sha256 trailer
/// kept) after: put a=1, put b=2, put a=3, del b, a 100 s lease, put c=4 on
/// it, compaction at 3. It answered HashKV with 1968128028.
const ETCD_SNAPSHOT: &[u8] = include_bytes!("data/etcd-3.5.1-snapshot.db");

/// Starts a fake from a snapshot file holding `contents` (the file is
/// gone again once it has started, or refused).
async fn start_from(name: &str, contents: &[u8]) -> std::io::Result<FakeEtcd> {
    let path = std::env::temp_dir().join(format!("fake-etcd-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let started = FakeEtcd::builder().restore_snapshot(&path).start().await;
    std::fs::remove_file(&path).unwrap();
    started
}

#[tokio::test]
async fn a_real_etcd_snapshot_is_served_as_etcd_served_it() {
    let etcd = start_from("real.db", ETCD_SNAPSHOT).await.unwrap();
    let mut client = connect(&etcd).await;

    let all = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(all.header().unwrap().revision(), 6);
    let kvs: Vec<_> = all
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect();
    assert_eq!(
        kvs,
        [
            ("a".into(), "3".into(), 2, 4, 2),
            ("c".into(), "4".into(), 6, 6, 1)
        ]
    );
    // History after the compaction at 3, and the compaction itself.
    let at_3 = client
        .get("b", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap();
    assert_eq!(at_3.kvs()[0].value(), b"2");
    assert!(client
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err()
        .to_string()
        .contains("required revision has been compacted"));
    // The same checksum of the history as the etcd that took it.
    let hash = client.hash_kv(0).await.unwrap();
    assert_eq!((hash.hash(), hash.compact_version()), (1_968_128_028, 3));

    // The lease, its TTL restarted, with its key.
    let lease = all.kvs()[1].lease();
    let info = etcd.lease(lease).expect("the lease came back");
    assert_eq!(info.granted_ttl, 100);
    assert_eq!(info.keys, vec![b"c".to_vec()]);
    etcd.advance(Duration::from_secs(101)).await;
    assert!(client.get("c", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn a_fakes_snapshot_starts_an_identical_fake() {
    let original = FakeEtcd::start().await.unwrap();
    let mut client = connect(&original).await;
    client.put("k/a", "1", None).await.unwrap();
    client.put("k/b", "2", None).await.unwrap();
    let middle = client
        .put("k/a", "3", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.delete("k/b", None).await.unwrap();
    let lease = client.lease_grant(30, None).await.unwrap().id();
    client
        .put("k/c", "4", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    original.compact(middle).unwrap();
    original.raise_no_space();

    let copy = start_from("fake.db", &original.snapshot()).await.unwrap();

    assert_eq!(copy.revision(), original.revision());
    for revision in [0, middle, middle + 1] {
        assert_eq!(
            copy.read_prefix("k/", revision),
            original.read_prefix("k/", revision),
            "at {revision}"
        );
    }
    assert!(matches!(
        copy.read_prefix("k/", middle - 1),
        Err(ControlError::Compacted { .. })
    ));
    let mut copied = connect(&copy).await;
    assert_eq!(
        copied.hash_kv(0).await.unwrap().hash(),
        client.hash_kv(0).await.unwrap().hash()
    );
    assert_eq!(
        copied
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None
            )
            .await
            .unwrap()
            .alarms()
            .len(),
        1,
        "the NOSPACE alarm came along"
    );
    // Watchers catch up from the copy's history as from the original's.
    let mut events = Vec::new();
    for etcd in [&original, &copy] {
        let mut client = connect(etcd).await;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(middle)
            .with_prev_key();
        let mut watch = client.watch("k/", Some(options)).await.unwrap();
        assert!(within("created", watch.message())
            .await
            .unwrap()
            .unwrap()
            .created());
        let caught_up = within("the catch-up", watch.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(caught_up.events().len(), 3, "put k/a, delete k/b, put k/c");
        events.push(format!("{:?}", caught_up.events()));
    }
    assert_eq!(events[0], events[1]);
    assert_eq!(copy.lease(lease).unwrap().keys, vec![b"k/c".to_vec()]);
}

#[tokio::test]
async fn the_snapshot_rpc_streams_the_database_then_its_sha256() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    // Enough data for several 32 KiB messages.
    for i in 0..200 {
        client
            .put(format!("key/{i:03}"), vec![b'v'; 1000], None)
            .await
            .unwrap();
    }
    let mut stream = client.snapshot().await.unwrap();
    let mut messages = Vec::new();
    while let Some(message) = within("a snapshot message", stream.message())
        .await
        .unwrap()
    {
        messages.push((message.remaining_bytes(), message.blob().to_vec()));
    }
    let (trailer_remaining, checksum) = messages.pop().unwrap();
    assert_eq!((trailer_remaining, checksum.len()), (0, 32));
    let database: Vec<u8> = messages.iter().flat_map(|(_, blob)| blob.clone()).collect();
    assert!(messages.len() > 2);
    assert!(messages[..messages.len() - 1]
        .iter()
        .all(|(_, blob)| blob.len() == 32 * 1024));
    let mut sent = 0;
    for (remaining, blob) in &messages {
        sent += blob.len() as u64;
        assert_eq!(*remaining, database.len() as u64 - sent);
    }
    use sha2::Digest;
    assert_eq!(
        sha2::Sha256::digest(&database).as_slice(),
        checksum.as_slice()
    );
    assert_eq!(
        database,
        etcd.snapshot(),
        "what the handle's snapshot holds"
    );
}

#[tokio::test]
async fn hash_is_stable_until_a_write() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    client.put("k", "v", None).await.unwrap();
    let first = client.hash().await.unwrap();
    assert_eq!(first.header().unwrap().revision(), 2);
    assert_eq!(client.hash().await.unwrap().hash(), first.hash());
    client.put("k", "w", None).await.unwrap();
    assert_ne!(client.hash().await.unwrap().hash(), first.hash());
}

#[tokio::test]
async fn a_file_that_is_not_a_snapshot_is_refused_with_one_line() {
    let err = start_from("junk.db", b"this is not a database")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string().starts_with("not an etcd snapshot: "),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));

    let mut damaged = ETCD_SNAPSHOT.to_vec();
    damaged[5000] ^= 0xff;
    let err = start_from("damaged.db", &damaged).await.unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");

    let missing = FakeEtcd::builder()
        .restore_snapshot("/nonexistent/snapshot.db")
        .start()
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
}
