//! Lock and Unlock (`v3lockpb`), as etcd runs them: keys under the lock's
//! name, waiting on earlier holders, release by lease expiry.

use etcd_client::{GetOptions, LockOptions};
use tonic::Code;

use super::{assert_not_finished, finished, status_of};
use crate::Scenario;

/// A waiter is granted the lock when the holder's lease expires; its key
/// is there, visible to everyone, while it waits.
pub async fn lock_waits_for_an_expiring_holder(s: &mut Scenario) {
    let name = s.key("lock");
    let mut holder = s.client();
    let mut waiter = s.client();
    let held_by = holder.lease_grant(2, None).await.unwrap().id();
    let waits_on = waiter.lease_grant(60, None).await.unwrap().id();

    let held = holder
        .lock(name.as_str(), Some(LockOptions::new().with_lease(held_by)))
        .await
        .expect("an unheld lock is granted at once");
    assert_eq!(held.key(), format!("{name}/{held_by:x}").as_bytes());
    let header = held.header().expect("header");
    let key = holder.get(held.key(), None).await.unwrap();
    // etcd's Mutex takes its header from a read after acquiring: the
    // put's revision, unless another client wrote since, as on a shared
    // etcd (the fake is this scenario's own).
    let created = key.kvs()[0].create_revision();
    if s.is_fake() {
        assert_eq!(header.revision(), created, "the header is the put's");
    } else {
        assert!(header.revision() >= created);
    }
    let again = holder
        .lock(name.as_str(), Some(LockOptions::new().with_lease(held_by)))
        .await
        .expect("re-entrant with the same lease");
    assert_eq!(again.key(), held.key());

    let waiting_name = name.clone();
    let mut waiting = tokio::spawn(async move {
        waiter
            .lock(
                waiting_name.as_str(),
                Some(LockOptions::new().with_lease(waits_on)),
            )
            .await
    });
    assert_not_finished(s, &mut waiting, "the lock is held").await;
    let prefix = format!("{name}/");
    let keys = holder
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys.kvs().len(), 2, "the waiter's key is there");
    let waiter_key = format!("{name}/{waits_on:x}");
    let waiter_created = keys
        .kvs()
        .iter()
        .find(|kv| kv.key() == waiter_key.as_bytes())
        .expect("the waiter's key")
        .create_revision();

    s.pass_ttl(2).await;
    let granted = finished(waiting, "granted once the holder's lease expired")
        .await
        .expect("granted");
    assert_eq!(granted.key(), format!("{name}/{waits_on:x}").as_bytes());
    assert!(
        granted.header().unwrap().revision() > waiter_created,
        "the header is that of a read after the holder's key went"
    );
    holder.unlock(granted.key()).await.expect("unlock");
    assert!(holder
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .is_empty());
    holder.lease_revoke(waits_on).await.unwrap();
}

/// Lease 0 locks on a fresh 60 s lease; errors are Unknown with etcd's
/// plain text; unlocking a missing key is fine.
pub async fn lock_leases_and_errors(s: &mut Scenario) {
    let name = s.key("lock");
    let mut client = s.client();
    let held = client.lock(name.as_str(), None).await.expect("lock");
    let kv = client.get(held.key(), None).await.unwrap().kvs()[0].clone();
    let ttl = client.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 60, "a session's lease");
    assert!(ttl.ttl() > 50 && ttl.ttl() <= 60, "{}", ttl.ttl());
    client.lease_revoke(kv.lease()).await.unwrap();

    // A lease that does not exist: found missing at the put.
    let missing = status_of(
        client
            .lock(
                name.as_str(),
                Some(LockOptions::new().with_lease(0x7e57_0000_0000_0001)),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::Unknown, "etcdserver: requested lease not found")
    );
    let empty = status_of(client.unlock("").await.unwrap_err());
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::Unknown, "etcdserver: key is not provided")
    );
    client
        .unlock(s.key("never-locked"))
        .await
        .expect("unlocking a missing key is OK");
}
