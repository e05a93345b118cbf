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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_main_then_sub() {
        assert!(Revision::new(2, 5) < Revision::new(3, 0));
        assert!(Revision::new(3, 0) < Revision::new(3, 1));
    }
}
