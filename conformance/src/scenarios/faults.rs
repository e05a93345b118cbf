//! Connection faults through a [`Bridge`](fake_etcd::Bridge), which sits in
//! front of the fake or a real etcd alike: what `etcd-client` sees when its
//! connections break, hang or lose bytes, and that it recovers with nothing
//! acknowledged lost.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use fake_etcd::Bridge;

use crate::Scenario;

async fn bridge(s: &Scenario) -> Bridge {
    crate::bridge_to(&s.endpoints()[0]).await.expect("bridge")
}

async fn through(bridge: &Bridge, timeout: Option<Duration>) -> Client {
    let options = timeout.map(|t| ConnectOptions::new().with_timeout(t));
    Client::connect([bridge.endpoint()], options)
        .await
        .expect("connect through the bridge")
}

async fn count_direct(s: &Scenario) -> usize {
    let prefix = s.prefix().to_owned();
    s.client()
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .len()
}

/// Dropped connections end the client's streams; its next calls reconnect;
/// every write acknowledged before is there.
pub async fn bridge_drops_connections(s: &mut Scenario) {
    let bridge = bridge(s).await;
    let mut client = through(&bridge, None).await;
    for i in 0..20 {
        client
            .put(s.key(&format!("k{i}")), "v", None)
            .await
            .unwrap();
    }
    let mut watch = client
        .watch(s.prefix(), Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    bridge.drop_connections();

    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    client
        .put(s.key("after"), "v", None)
        .await
        .expect("the client reconnects");
    assert_eq!(count_direct(s).await, 21);
}

/// While the bridge holds bytes, a request gets no answer (and no error);
/// once it forwards again the request completes.
pub async fn bridge_pause_holds_requests(s: &mut Scenario) {
    let bridge = bridge(s).await;
    let mut client = through(&bridge, None).await;
    client.put(s.key("before"), "v", None).await.unwrap();

    bridge.pause();
    let key = s.key("during");
    let mut held = client.clone();
    let mut write = tokio::spawn(async move { held.put(key, "v", None).await });
    super::assert_not_finished(s, &mut write, "no answer during the partition").await;

    bridge.resume();
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("answered after the partition")
        .unwrap()
        .expect("the held write succeeds");
    assert_eq!(count_direct(s).await, 2);
}

/// Into a black hole, requests time out on the client; after it closes
/// and the connection is replaced, the client works again.
pub async fn bridge_blackhole_times_out(s: &mut Scenario) {
    let bridge = bridge(s).await;
    let timeout = Duration::from_millis(if s.is_fake() { 200 } else { 500 });
    let mut client = through(&bridge, Some(timeout)).await;
    client.put(s.key("before"), "v", None).await.unwrap();

    bridge.blackhole();
    let lost = client.put(s.key("lost"), "v", None).await;
    assert!(
        lost.is_err(),
        "a request into a black hole times out: {lost:?}"
    );

    bridge.resume();
    bridge.drop_connections();
    // The first call may still go to the connection that just broke, as
    // with any etcd: clients retry.
    let mut attempts = 0;
    while let Err(err) = client.put(s.key("after"), "v", None).await {
        attempts += 1;
        assert!(attempts < 5, "still failing once the path is back: {err}");
    }
    let prefix = s.prefix().to_owned();
    let keys: Vec<String> = s
        .client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    assert!(
        keys.contains(&s.key("before")) && keys.contains(&s.key("after")),
        "{keys:?}"
    );
}
