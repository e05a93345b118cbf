//! Large keys under watchers: a writer never waits on the watch index.

mod common;

use common::{connect, within};
use etcd_client::WatchOptions;
use fake_etcd::FakeEtcd;

/// Finding the prefix watchers of a written key once hashed every prefix of
/// the key: a 1 MB key under a prefix watcher took longer than any client
/// waits (etcd: 18 ms), and stalled the whole server meanwhile.
#[tokio::test]
async fn a_megabyte_key_under_prefix_watchers_is_written_and_delivered() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let mut watchers = Vec::new();
    // "b" matches nothing here: a length the written key is looked up at
    // all the same.
    for prefix in ["a", "ab", "b"] {
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(within("created", stream.message())
            .await
            .unwrap()
            .unwrap()
            .created());
        watchers.push(stream);
    }
    let mut key = b"ab".to_vec();
    key.resize(1_000_000, b'x');

    within("the put's answer", client.put(key.clone(), "v", None))
        .await
        .unwrap();
    within("the delete's answer", client.delete(key.clone(), None))
        .await
        .unwrap();

    for stream in &mut watchers[..2] {
        let put = within("the PUT event", stream.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(put.events()[0].kv().unwrap().key(), &key[..]);
        let delete = within("the DELETE event", stream.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(delete.events()[0].kv().unwrap().key(), &key[..]);
    }
}
