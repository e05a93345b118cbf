//! etcd snapshots: the member's state as the bbolt database etcd's backend
//! keeps, and back.
//!
//! [`save`] maps the store, the leases, the alarms and the membership to
//! etcd 3.5's buckets (`key` with revision keys and `KeyValue` values,
//! `lease`, `meta` with the raft and compaction markers, `members`,
//! `cluster`, `alarm` and the auth buckets) and writes them with [`bolt`];
//! `etcdctl snapshot status` and `etcdutl snapshot restore` read the result
//! as one of etcd's own. [`load`] reads a snapshot etcd (or the fake) took
//! back into a core. The store knows nothing of this format; this module
//! knows nothing of gRPC.
//!
//! The bbolt format is written here rather than through a bbolt crate: a
//! snapshot needs only a bulk writer and a reader of flat buckets, a few
//! hundred lines that etcd's own tools check on every CI run.

pub(crate) mod bolt;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::authpb;
use etcd_proto::etcdserverpb::AlarmMember;
use etcd_proto::mvccpb::KeyValue;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::auth::{Role, User};
use crate::core::Core;
use crate::kv::LeaseAttachments;
use crate::mvcc::Store;
use crate::revision::Revision;

/// etcd's `leasepb.Lease`, as the `lease` bucket holds it.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Why a file is not a snapshot the fake can load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a bbolt database, or a damaged one.
    #[error("not an etcd snapshot: {0}")]
    NotASnapshot(String),
    /// The sha256 trailer `etcdctl snapshot save` keeps does not match.
    #[error("not an etcd snapshot: its sha256 trailer does not match its contents")]
    HashMismatch,
}

/// A JSON string literal (the few JSON values of a snapshot are built by
/// hand: names and URLs are their only strings).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn u64_bytes(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// The buckets etcd 3.5 would hold for this member's state.
pub(crate) fn buckets(core: &Core) -> bolt::Buckets {
    let bucket = |entries: Vec<(Vec<u8>, Vec<u8>)>| entries.into_iter().collect::<BTreeMap<_, _>>();
    let mut buckets = bolt::Buckets::new();

    let alarms = core
        .alarms()
        .map(|(member_id, alarm)| (AlarmMember { member_id, alarm }.encode_to_vec(), Vec::new()))
        .collect();
    buckets.insert(b"alarm".to_vec(), bucket(alarms));
    let auth = &core.auth;
    let mut auth_bucket = vec![(b"authRevision".to_vec(), u64_bytes(auth.revision()))];
    if auth.enabled() {
        auth_bucket.push((b"authEnabled".to_vec(), vec![1]));
    }
    buckets.insert(b"auth".to_vec(), bucket(auth_bucket));
    let roles = auth
        .roles()
        .iter()
        .map(|(name, role)| {
            let record = authpb::Role {
                name: Bytes::copy_from_slice(name.as_bytes()),
                key_permission: role.permissions.clone(),
            };
            (name.as_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(b"authRoles".to_vec(), bucket(roles));
    let users = auth
        .users()
        .iter()
        .map(|(name, user)| {
            let record = authpb::User {
                name: Bytes::copy_from_slice(name.as_bytes()),
                password: Bytes::copy_from_slice(&user.password),
                roles: user.roles.clone(),
                options: Some(authpb::UserAddOptions {
                    no_password: user.no_password,
                }),
            };
            (name.as_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(b"authUsers".to_vec(), bucket(users));
    let mut cluster = vec![(
        b"clusterVersion".to_vec(),
        crate::core::cluster_version().into_bytes(),
    )];
    if let Some(downgrade) = &core.downgrade {
        let record = format!(
            "{{\"target-version\":{},\"enabled\":{}}}",
            json_string(&downgrade.target_version),
            downgrade.enabled
        );
        cluster.push((b"downgrade".to_vec(), record.into_bytes()));
    }
    buckets.insert(b"cluster".to_vec(), bucket(cluster));

    let keys = core
        .store
        .history()
        .into_iter()
        .map(|(revision, key, kv)| {
            let value = match &kv {
                Some(kv) => kv.encode_to_vec(),
                // A deletion holds only the key.
                None => KeyValue {
                    key: key.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            };
            (revision.to_bucket_key(kv.is_none()), value)
        })
        .collect();
    buckets.insert(b"key".to_vec(), bucket(keys));

    let leases = core
        .lessor
        .by_deadline()
        .map(|lease| {
            let record = LeaseRecord {
                id: lease.id,
                ttl: lease.ttl,
                remaining_ttl: 0,
            };
            (u64_bytes(lease.id as u64), record.encode_to_vec())
        })
        .collect();
    buckets.insert(b"lease".to_vec(), bucket(leases));

    // etcd's membership.Member as JSON; `isLearner` only when set.
    let members = core
        .cluster
        .members()
        .map(|m| {
            let urls: Vec<String> = m.peer_urls.iter().map(|u| json_string(u)).collect();
            let learner = if m.is_learner {
                ",\"isLearner\":true"
            } else {
                ""
            };
            let record = format!(
                "{{\"id\":{},\"peerURLs\":[{}],\"name\":{}{learner}}}",
                m.id,
                urls.join(","),
                json_string(&m.name)
            );
            // etcd's types.ID: hex, no padding.
            (format!("{:x}", m.id).into_bytes(), record.into_bytes())
        })
        .collect();
    buckets.insert(b"members".to_vec(), bucket(members));
    let removed = core
        .cluster
        .removed()
        .map(|id| (format!("{id:x}").into_bytes(), b"removed".to_vec()))
        .collect();
    buckets.insert(b"members_removed".to_vec(), bucket(removed));

    let ids = |learners: bool| -> Vec<String> {
        core.cluster
            .members()
            .filter(|m| m.is_learner == learners)
            .map(|m| m.id.to_string())
            .collect()
    };
    let (voters, learners) = (ids(false), ids(true));
    let learners = if learners.is_empty() {
        String::new()
    } else {
        format!(",\"learners\":[{}]", learners.join(","))
    };
    let mut meta = vec![
        (
            b"confState".to_vec(),
            format!(
                "{{\"voters\":[{}]{learners},\"auto_leave\":false}}",
                voters.join(",")
            )
            .into_bytes(),
        ),
        (b"consistent_index".to_vec(), u64_bytes(core.raft_index)),
        (b"term".to_vec(), u64_bytes(core.raft_term)),
    ];
    let compacted = core.store.compact_revision();
    if compacted >= 0 {
        let at = Revision::new(compacted, 0).to_bucket_key(false);
        meta.push((b"scheduledCompactRev".to_vec(), at.clone()));
        meta.push((b"finishedCompactRev".to_vec(), at));
    }
    buckets.insert(b"meta".to_vec(), bucket(meta));
    buckets
}

/// The member's state as an etcd snapshot: a bbolt database file.
pub(crate) fn save(core: &Core) -> Vec<u8> {
    // The transaction ID only orders the two meta pages.
    bolt::write(&buckets(core), core.raft_index.max(2))
}

/// The value of `Maintenance.Hash`: crc32c of every bucket's name and
/// entries, in order, leaving out the raft term and index (which differ
/// between members of one cluster).
pub(crate) fn hash(buckets: &bolt::Buckets) -> u32 {
    let mut hash = 0;
    for (name, entries) in buckets {
        hash = crc32c::crc32c_append(hash, name);
        for (key, value) in entries {
            let raft_position = name == b"meta"
                && (key.as_slice() == b"term" || key.as_slice() == b"consistent_index");
            if !raft_position {
                hash = crc32c::crc32c_append(hash, key);
                hash = crc32c::crc32c_append(hash, value);
            }
        }
    }
    hash
}

/// A snapshot's contents, ready to become a member's state.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) store: Store,
    /// `(id, TTL in seconds)` of every lease.
    pub(crate) leases: Vec<(i64, i64)>,
    pub(crate) alarms: Vec<(u64, i32)>,
    pub(crate) downgrade: Option<crate::core::Downgrade>,
    pub(crate) raft_term: Option<u64>,
    pub(crate) raft_index: Option<u64>,
    pub(crate) auth: LoadedAuth,
}

/// The auth buckets of a snapshot.
#[derive(Debug, Default)]
pub(crate) struct LoadedAuth {
    enabled: bool,
    revision: Option<u64>,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

/// Reads the `auth`, `authUsers` and `authRoles` buckets.
fn auth_of(buckets: &bolt::Buckets) -> Result<LoadedAuth, SnapshotError> {
    let auth = buckets.get(&b"auth"[..]);
    let enabled = auth
        .and_then(|auth| auth.get(&b"authEnabled"[..]))
        .is_some_and(|enabled| enabled.as_slice() == [1]);
    let revision = auth
        .and_then(|auth| auth.get(&b"authRevision"[..]))
        .and_then(|value| value.as_slice().try_into().ok().map(u64::from_be_bytes));
    let mut users = BTreeMap::new();
    for value in buckets
        .get(&b"authUsers"[..])
        .into_iter()
        .flat_map(BTreeMap::values)
    {
        let user = authpb::User::decode(value.as_slice())
            .map_err(|e| not_a_snapshot(format!("an authUsers value is not a User: {e}")))?;
        let mut roles = user.roles;
        roles.sort();
        users.insert(
            String::from_utf8_lossy(&user.name).into_owned(),
            User {
                password: user.password.to_vec(),
                roles,
                no_password: user.options.is_some_and(|o| o.no_password),
            },
        );
    }
    let mut roles = BTreeMap::new();
    for value in buckets
        .get(&b"authRoles"[..])
        .into_iter()
        .flat_map(BTreeMap::values)
    {
        let role = authpb::Role::decode(value.as_slice())
            .map_err(|e| not_a_snapshot(format!("an authRoles value is not a Role: {e}")))?;
        roles.insert(
            String::from_utf8_lossy(&role.name).into_owned(),
            Role {
                permissions: role.key_permission,
            },
        );
    }
    Ok(LoadedAuth {
        enabled,
        revision,
        users,
        roles,
    })
}

fn not_a_snapshot(why: impl Into<String>) -> SnapshotError {
    SnapshotError::NotASnapshot(why.into())
}

/// A downgrade as the cluster bucket records it:
/// `{"target-version":"3.4.0","enabled":true}`.
fn downgrade_of(record: &[u8]) -> Option<crate::core::Downgrade> {
    let text = std::str::from_utf8(record).ok()?;
    let enabled = text.contains("\"enabled\":true");
    let target = text
        .split("\"target-version\":\"")
        .nth(1)?
        .split('"')
        .next()?;
    Some(crate::core::Downgrade {
        enabled,
        target_version: target.to_owned(),
    })
}

fn revision_of(key: &[u8]) -> Option<(Revision, bool)> {
    let (main, rest) = key.split_first_chunk::<8>()?;
    let (&separator, rest) = rest.split_first()?;
    let (sub, marker) = rest.split_first_chunk::<8>()?;
    let tombstone = match marker {
        [] => false,
        [b't'] => true,
        _ => return None,
    };
    let (main, sub) = (i64::from_be_bytes(*main), i64::from_be_bytes(*sub));
    // Revisions a store can hold: a later write must still fit after them.
    let plausible = separator == b'_' && (0..i64::MAX / 2).contains(&main) && sub >= 0;
    plausible.then(|| (Revision::new(main, sub), tombstone))
}

/// Reads a snapshot taken by etcd (`etcdctl snapshot save`, with or without
/// its sha256 trailer) or by the fake.
///
/// # Errors
///
/// If the file is not an etcd snapshot, is damaged, or its trailer does not
/// match.
pub(crate) fn load(file: &[u8]) -> Result<Loaded, SnapshotError> {
    let database = match file.len() % bolt::PAGE_SIZE {
        0 => file,
        32 => {
            let (database, trailer) = file.split_at(file.len() - 32);
            if Sha256::digest(database).as_slice() != trailer {
                return Err(SnapshotError::HashMismatch);
            }
            database
        }
        _ => {
            return Err(not_a_snapshot(format!(
                "its size, {} bytes, is no whole number of 4096-byte pages",
                file.len()
            )))
        }
    };
    let buckets = bolt::read(database).map_err(|e| not_a_snapshot(e.to_string()))?;
    let (Some(key), Some(meta)) = (buckets.get(&b"key"[..]), buckets.get(&b"meta"[..])) else {
        return Err(not_a_snapshot(
            "a bbolt database without etcd's key and meta buckets",
        ));
    };

    let mut history = Vec::with_capacity(key.len());
    for (bucket_key, value) in key {
        let (revision, tombstone) = revision_of(bucket_key)
            .ok_or_else(|| not_a_snapshot("a key-bucket entry whose key is not a revision"))?;
        let kv = KeyValue::decode(value.as_slice())
            .map_err(|e| not_a_snapshot(format!("a key-bucket value is not a KeyValue: {e}")))?;
        let key = kv.key.clone();
        history.push((revision, key, (!tombstone).then_some(kv)));
    }
    let compacted = ["scheduledCompactRev", "finishedCompactRev"]
        .iter()
        .filter_map(|name| meta.get(name.as_bytes()))
        .filter_map(|value| revision_of(value))
        .map(|(revision, _)| revision.main)
        .max()
        .unwrap_or(-1);
    let u64_of = |value: &Vec<u8>| value.as_slice().try_into().ok().map(u64::from_be_bytes);

    let mut leases = Vec::new();
    for value in buckets
        .get(&b"lease"[..])
        .into_iter()
        .flat_map(BTreeMap::values)
    {
        let lease = LeaseRecord::decode(value.as_slice())
            .map_err(|e| not_a_snapshot(format!("a lease-bucket value is not a Lease: {e}")))?;
        let ttl = if lease.remaining_ttl > 0 {
            lease.remaining_ttl
        } else {
            lease.ttl
        };
        leases.push((lease.id, ttl));
    }
    let mut alarms = Vec::new();
    for alarm in buckets
        .get(&b"alarm"[..])
        .into_iter()
        .flat_map(BTreeMap::keys)
    {
        let alarm = AlarmMember::decode(alarm.as_slice())
            .map_err(|e| not_a_snapshot(format!("an alarm-bucket key is not an alarm: {e}")))?;
        alarms.push((alarm.member_id, alarm.alarm));
    }
    let downgrade = buckets
        .get(&b"cluster"[..])
        .and_then(|cluster| cluster.get(&b"downgrade"[..]))
        .and_then(|record| downgrade_of(record));
    let auth = auth_of(&buckets)?;
    Ok(Loaded {
        auth,
        store: Store::restore(history, compacted),
        leases,
        alarms,
        downgrade,
        raft_term: meta.get(&b"term"[..]).and_then(u64_of),
        raft_index: meta.get(&b"consistent_index"[..]).and_then(u64_of),
    })
}

impl Loaded {
    /// Makes a fresh core hold the snapshot's state: its store, its leases
    /// (TTLs restarted at `now`, with the keys that name them), its alarms.
    pub(crate) fn into_core(self, core: &mut Core, now: Duration) {
        core.store = self.store;
        for (id, ttl) in self.leases {
            // An ID taken twice, or a TTL past etcd's limit: the first, or
            // none, as etcd's own lessor would hold it.
            let _ = core.lessor.grant(id, ttl, now);
        }
        let attached: Vec<(i64, Bytes)> = core
            .store
            .range_at(
                &crate::mvcc::KeyRange::From(Bytes::new()),
                core.store.revision(),
            )
            .filter(|kv| kv.stored.lease != 0)
            .map(|kv| (kv.stored.lease, kv.key.clone()))
            .collect();
        for (lease, key) in attached {
            core.lessor.attach(lease, &key);
        }
        for (member, alarm) in self.alarms {
            core.raise_alarm(member, alarm);
        }
        core.downgrade = self.downgrade;
        let auth = self.auth;
        let revision = auth.revision.unwrap_or(core.auth.revision());
        core.auth
            .restore(auth.enabled, revision, auth.users, auth.roles);
        if let Some(term) = self.raft_term {
            core.raft_term = core.raft_term.max(term);
        }
        if let Some(index) = self.raft_index {
            core.raft_index = core.raft_index.max(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_parse_and_others_do_not() {
        let put = Revision::new(7, 2).to_bucket_key(false);
        assert_eq!(revision_of(&put), Some((Revision::new(7, 2), false)));
        let tombstone = Revision::new(7, 2).to_bucket_key(true);
        assert_eq!(revision_of(&tombstone), Some((Revision::new(7, 2), true)));
        assert_eq!(revision_of(b"short"), None);
        let mut odd = put.clone();
        odd[8] = b'-';
        assert_eq!(revision_of(&odd), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_is_refused_with_one_clear_error() {
        let err = load(b"hello").unwrap_err();
        assert!(
            err.to_string().starts_with("not an etcd snapshot: "),
            "{err}"
        );
        let mut other = bolt::Buckets::new();
        other.insert(b"widgets".to_vec(), BTreeMap::new());
        let err = load(&bolt::write(&other, 2)).unwrap_err();
        assert!(err.to_string().contains("key and meta buckets"), "{err}");
        let mut trailed = bolt::write(&other, 2);
        trailed.extend_from_slice(&[0; 32]);
        assert_eq!(load(&trailed).unwrap_err(), SnapshotError::HashMismatch);
    }
}
