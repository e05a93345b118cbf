//! The lessor: leases by ID, and their deadlines in expiry order.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;

use crate::error::EtcdError;
use crate::kv::LeaseAttachments;

/// The longest TTL etcd grants, in seconds (`lease.MaxLeaseTTL`).
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The shortest TTL, in seconds: etcd's `3/2 × election timeout`, rounded up,
/// with its default 100 ms ticks and 1 s election timeout. Shorter requests
/// are raised to it.
pub(crate) const MIN_LEASE_TTL: i64 = 2;

/// Why a lease request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseError {
    NotFound,
    Exists,
    TtlTooLarge,
}

impl From<LeaseError> for EtcdError {
    fn from(err: LeaseError) -> Self {
        match err {
            LeaseError::NotFound => EtcdError::LeaseNotFound,
            LeaseError::Exists => EtcdError::LeaseExists,
            LeaseError::TtlTooLarge => EtcdError::LeaseTtlTooLarge,
        }
    }
}

/// One lease.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) id: i64,
    /// The granted TTL in seconds (after raising to the minimum).
    pub(crate) ttl: i64,
    /// When it expires, as time since the member started.
    pub(crate) deadline: Duration,
    /// Attached keys, in key order (the order expiry deletes them in).
    pub(crate) keys: LeaseKeys,
}

/// The keys attached to a lease, in key order.
///
/// Most leases hold one key (a registration, a lock, a session's key), so
/// one key is kept as it is, and a set made only for a second: an empty
/// `BTreeSet` costs nothing, but its first key allocates a whole node of
/// some 400 bytes, a hundred thousand of them for a test's hundred
/// thousand leases, each freed again when its lease expires.
#[derive(Debug, Clone, Default)]
pub(crate) enum LeaseKeys {
    #[default]
    None,
    One(Bytes),
    Many(BTreeSet<Bytes>),
}

impl LeaseKeys {
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::None => false,
            Self::One(one) => one[..] == *key,
            Self::Many(many) => many.contains(key),
        }
    }

    fn insert(&mut self, key: Bytes) {
        match self {
            Self::None => *self = Self::One(key),
            Self::One(one) => *self = Self::Many(BTreeSet::from([std::mem::take(one), key])),
            Self::Many(many) => {
                many.insert(key);
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        match self {
            Self::None => {}
            Self::One(one) if one[..] == *key => *self = Self::None,
            Self::One(_) => {}
            Self::Many(many) => {
                many.remove(key);
            }
        }
    }

    /// The keys, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Bytes> {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(one) => (Some(one), None),
            Self::Many(many) => (None, Some(many)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl IntoIterator for LeaseKeys {
    type Item = Bytes;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<Bytes>,
        std::iter::Flatten<std::option::IntoIter<BTreeSet<Bytes>>>,
    >;

    /// The keys, in key order.
    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(one) => (Some(one), None),
            Self::Many(many) => (None, Some(many)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// All leases, by ID and by deadline.
#[derive(Debug)]
pub(crate) struct Lessor {
    leases: HashMap<i64, Lease>,
    /// `(deadline, id)` of every lease: the first entry expires first.
    queue: BTreeSet<(Duration, i64)>,
    /// The prefix and counter of server-chosen IDs, shaped like etcd's
    /// (`pkg/idutil`): member bits on top, then a counter.
    id_prefix: u64,
    id_counter: u64,
}

impl Lessor {
    /// A lessor whose server-chosen IDs carry `member_id`'s low 16 bits on
    /// top, as etcd's do.
    pub(crate) fn new(member_id: u64) -> Self {
        Self {
            leases: HashMap::new(),
            queue: BTreeSet::new(),
            id_prefix: (member_id & 0xffff) << 48,
            id_counter: 0,
        }
    }

    fn next_id(&mut self) -> i64 {
        loop {
            self.id_counter = (self.id_counter + 1) & ((1 << 48) - 1);
            // Positive, as etcd masks the top bit off.
            let id = ((self.id_prefix | self.id_counter) & (i64::MAX as u64)) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Grants a lease. `id` 0 lets the server choose; any other ID, negative
    /// ones included, is used as is. A TTL under the minimum is raised.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64, now: Duration) -> Result<&Lease, LeaseError> {
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        let id = if id == 0 { self.next_id() } else { id };
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let deadline = now.saturating_add(Duration::from_secs(ttl as u64));
        self.queue.insert((deadline, id));
        let lease = Lease {
            id,
            ttl,
            deadline,
            keys: LeaseKeys::None,
        };
        Ok(self.leases.entry(id).or_insert(lease))
    }

    /// Removes a lease, returning it (with its keys, for the caller to delete).
    pub(crate) fn remove(&mut self, id: i64) -> Result<Lease, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        self.queue.remove(&(lease.deadline, id));
        Ok(lease)
    }

    /// Renews a lease to `now + TTL`, returning the TTL; a lease that is
    /// unknown or already past its deadline is not renewed.
    pub(crate) fn renew(&mut self, id: i64, now: Duration) -> Result<i64, LeaseError> {
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if lease.deadline <= now {
            return Err(LeaseError::NotFound);
        }
        self.queue.remove(&(lease.deadline, id));
        lease.deadline = now.saturating_add(Duration::from_secs(lease.ttl as u64));
        self.queue.insert((lease.deadline, id));
        Ok(lease.ttl)
    }

    /// Renews every lease to `now + TTL`, as a newly elected leader does.
    pub(crate) fn renew_all(&mut self, now: Duration) {
        self.queue.clear();
        for lease in self.leases.values_mut() {
            lease.deadline = now.saturating_add(Duration::from_secs(lease.ttl as u64));
            self.queue.insert((lease.deadline, lease.id));
        }
    }

    /// A lease by ID.
    pub(crate) fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease, soonest deadline first.
    pub(crate) fn by_deadline(&self) -> impl Iterator<Item = &Lease> {
        self.queue.iter().filter_map(|(_, id)| self.leases.get(id))
    }

    /// The earliest deadline, if any lease exists.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.queue.first().map(|&(deadline, _)| deadline)
    }

    /// Removes and returns the lease with the earliest deadline if that
    /// deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Duration) -> Option<Lease> {
        let &(deadline, id) = self.queue.first()?;
        if deadline > now {
            return None;
        }
        self.queue.pop_first();
        self.leases.remove(&id)
    }
}

impl LeaseAttachments for Lessor {
    fn exists(&self, lease: i64) -> bool {
        self.leases.contains_key(&lease)
    }

    fn attach(&mut self, lease: i64, key: &Bytes) {
        if let Some(lease) = self.leases.get_mut(&lease) {
            // A copy: the request's key is a slice of its whole buffer,
            // which a lease may hold for a long time (8 KiB a lease, for
            // a hundred thousand leases in one test).
            if !lease.keys.contains(key) {
                lease.keys.insert(Bytes::copy_from_slice(key));
            }
        }
    }

    fn detach(&mut self, lease: i64, key: &Bytes) {
        if let Some(lease) = self.leases.get_mut(&lease) {
            lease.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn attached(lessor: &Lessor, id: i64) -> Vec<&[u8]> {
        lessor.leases[&id].keys.iter().map(|k| &k[..]).collect()
    }

    #[test]
    fn attached_keys_stay_a_sorted_set_from_one_key_to_many_and_back() {
        let mut lessor = Lessor::new(1);
        lessor.grant(5, 10, Duration::ZERO).unwrap();
        assert!(attached(&lessor, 5).is_empty());
        for key in ["m", "c", "m", "x", "a"] {
            lessor.attach(5, &Bytes::from(key));
        }
        assert_eq!(attached(&lessor, 5), [&b"a"[..], b"c", b"m", b"x"]);
        for key in ["c", "missing", "x", "a"] {
            lessor.detach(5, &Bytes::from(key));
        }
        assert_eq!(attached(&lessor, 5), [b"m"]);

        lessor.grant(6, 10, Duration::ZERO).unwrap();
        lessor.attach(6, &Bytes::from("k"));
        lessor.detach(6, &Bytes::from("other"));
        assert_eq!(attached(&lessor, 6), [b"k"]);
        lessor.detach(6, &Bytes::from("k"));
        assert!(attached(&lessor, 6).is_empty());
        lessor.attach(6, &Bytes::from("k2"));
        let keys: Vec<Bytes> = lessor.remove(6).unwrap().keys.into_iter().collect();
        assert_eq!(keys, [Bytes::from("k2")]);
        let keys: Vec<Bytes> = lessor.remove(5).unwrap().keys.into_iter().collect();
        assert_eq!(keys, [Bytes::from("m")]);
    }

    #[test]
    fn server_chosen_ids_are_positive_unique_and_carry_member_bits() {
        let mut lessor = Lessor::new(0x8E9E_05C5_2164_694D);
        let a = lessor.grant(0, 10, Duration::ZERO).unwrap().id;
        let b = lessor.grant(0, 10, Duration::ZERO).unwrap().id;
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!((a as u64) >> 48, 0x694D);
    }

    #[test]
    fn an_attached_key_is_a_copy_not_a_slice_of_the_request() {
        let mut lessor = Lessor::new(1);
        lessor.grant(5, 10, Duration::ZERO).unwrap();
        let request = Bytes::from(vec![b'k'; 8192]);
        let key = request.slice(..3);
        lessor.attach(5, &key);
        lessor.attach(5, &key);
        let kept = lessor.leases[&5].keys.iter().collect::<Vec<_>>();
        assert_eq!(kept, [&key]);
        let buffer = request.as_ptr_range();
        assert!(
            !buffer.contains(&kept[0].as_ptr()),
            "it keeps the request alive"
        );
    }

    #[test]
    fn grant_rules() {
        let mut lessor = Lessor::new(1);
        assert_eq!(
            lessor.grant(-7, 1, Duration::ZERO).unwrap().ttl,
            MIN_LEASE_TTL
        );
        assert_eq!(
            lessor.grant(-7, 10, Duration::ZERO).unwrap_err(),
            LeaseError::Exists
        );
        assert_eq!(
            lessor
                .grant(8, MAX_LEASE_TTL + 1, Duration::ZERO)
                .unwrap_err(),
            LeaseError::TtlTooLarge
        );
        assert_eq!(
            lessor.grant(8, MAX_LEASE_TTL, Duration::ZERO).unwrap().ttl,
            MAX_LEASE_TTL
        );
    }

    #[test]
    fn expiry_in_deadline_order_and_renewal_moves_the_deadline() {
        let mut lessor = Lessor::new(1);
        lessor.grant(1, 30, Duration::ZERO).unwrap();
        lessor.grant(2, 10, Duration::ZERO).unwrap();
        lessor.grant(3, 20, Duration::ZERO).unwrap();
        assert_eq!(lessor.renew(2, 5 * S), Ok(10));
        let order: Vec<_> = lessor.by_deadline().map(|l| l.id).collect();
        assert_eq!(order, [2, 3, 1]);
        assert!(lessor.pop_expired(14 * S).is_none());
        assert_eq!(lessor.pop_expired(15 * S).unwrap().id, 2);
        assert!(lessor.pop_expired(15 * S).is_none());
        assert_eq!(lessor.next_deadline(), Some(20 * S));
        assert_eq!(
            lessor.renew(3, 20 * S),
            Err(LeaseError::NotFound),
            "past its deadline"
        );
        assert_eq!(lessor.remove(9).unwrap_err(), LeaseError::NotFound);
    }
}
