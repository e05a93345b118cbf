//! Revisions: where a change sits in the store's history.

/// The position of one change: `main` is the store revision of the write (one
/// per write request or write txn), `sub` its index among that write's changes.
///
/// Ordering is by `main`, then `sub`, which is the order changes were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Revision {
    pub(crate) main: i64,
    pub(crate) sub: i64,
}

impl Revision {
    pub(crate) fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The revision as etcd's backend keys its `key` bucket: main and sub
    /// as big-endian u64s around a `'_'` (17 bytes), and a `'t'` after them
    /// for a deletion (18 bytes). Byte order is revision order.
    pub(crate) fn to_bucket_key(self, tombstone: bool) -> Vec<u8> {
        let mut key = Vec::with_capacity(18);
        key.extend_from_slice(&(self.main as u64).to_be_bytes());
        key.push(b'_');
        key.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            key.push(b't');
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_are_etcds() {
        let key = Revision::new(258, 1).to_bucket_key(false);
        assert_eq!(key, [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 1]);
        let tombstone = Revision::new(258, 1).to_bucket_key(true);
        assert_eq!(tombstone.len(), 18);
        assert_eq!(tombstone[17], b't');
    }

    #[test]
    fn orders_by_main_then_sub() {
        assert!(Revision::new(2, 5) < Revision::new(3, 0));
        assert!(Revision::new(3, 0) < Revision::new(3, 1));
    }
}
