//! Large keys under watchers: a writer never waits on the watch index.

use std::time::Duration;

use etcd_client::{Client, WatchOptions};
use fake_etcd::FakeEtcd;

/// Far longer than the write needs; only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

/// Finding the prefix watchers of a written key once hashed every prefix of
/// the key: a 1 MB key under a prefix watcher took longer than any client
/// waits (etcd: 18 ms), and stalled the whole server meanwhile.
#[tokio::test]
async fn a_megabyte_key_under_prefix_watchers_is_written_and_delivered() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    let mut watchers = Vec::new();
    for prefix in ["a", "ab", "b"] {
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(stream.message().await.unwrap().unwrap().created());
        watchers.push(stream);
    }
    let mut key = b"ab".to_vec();
    key.resize(1_000_000, b'x');

    tokio::time::timeout(PATIENCE, client.put(key.clone(), "v", None))
        .await
        .expect("the put is answered")
        .unwrap();
    tokio::time::timeout(PATIENCE, client.delete(key.clone(), None))
        .await
        .expect("the delete is answered")
        .unwrap();

    for stream in &mut watchers[..2] {
        let put = stream.message().await.unwrap().unwrap();
        assert_eq!(put.events()[0].kv().unwrap().key(), &key[..]);
        let delete = stream.message().await.unwrap().unwrap();
        assert_eq!(delete.events()[0].kv().unwrap().key(), &key[..]);
    }
}
