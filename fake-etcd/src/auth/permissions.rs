//! Key permissions as etcd checks them: a role's permissions are merged
//! into one set of READ intervals and one of WRITE intervals, and a request
//! is allowed when its key lies in the set or its range is covered by the
//! set's union (etcd's `range_perm_cache.go`).

use etcd_proto::authpb::{permission::Type as PermType, Permission};

/// One end of an interval over keys: a key, or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinity,
}

/// A half-open interval of keys `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: End,
}

impl Interval {
    /// The keys a permission or a request names: one key (`range_end`
    /// empty), from `key` on (`"\0"`), or `[key, range_end)`.
    fn of(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                End::Key(next)
            }
            [0] => End::Infinity,
            end => End::Key(end.to_vec()),
        };
        Self {
            start: key.to_vec(),
            end,
        }
    }
}

/// Read or write: what a request needs on a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

/// The merged permissions of one user.
#[derive(Debug, Default)]
pub(crate) struct MergedPermissions {
    read: Vec<Interval>,
    write: Vec<Interval>,
}

impl MergedPermissions {
    /// Merges the permissions of every role a user holds.
    pub(crate) fn merge<'p>(permissions: impl IntoIterator<Item = &'p Permission>) -> Self {
        let mut merged = Self::default();
        for perm in permissions {
            let interval = Interval::of(&perm.key, &perm.range_end);
            match PermType::try_from(perm.perm_type) {
                Ok(PermType::Read) => merged.read.push(interval),
                Ok(PermType::Write) => merged.write.push(interval),
                Ok(PermType::Readwrite) => {
                    merged.read.push(interval.clone());
                    merged.write.push(interval);
                }
                // etcd's interval tree ignores a type it does not know.
                Err(_) => {}
            }
        }
        merged.read.sort_by(|a, b| a.start.cmp(&b.start));
        merged.write.sort_by(|a, b| a.start.cmp(&b.start));
        merged
    }

    /// Whether `[key, range_end)` (or the one key, with `range_end` empty)
    /// is allowed for `need`.
    pub(crate) fn allows(&self, need: Need, key: &[u8], range_end: &[u8]) -> bool {
        let set = match need {
            Need::Read => &self.read,
            Need::Write => &self.write,
        };
        if range_end.is_empty() {
            // A point: it lies in some interval.
            return set.iter().any(|ivl| {
                ivl.start.as_slice() <= key
                    && match &ivl.end {
                        End::Key(end) => key < end.as_slice(),
                        End::Infinity => true,
                    }
            });
        }
        let wanted = Interval::of(key, range_end);
        covered(set, &wanted)
    }
}

/// Whether the union of `set` (sorted by start) covers `wanted`.
fn covered(set: &[Interval], wanted: &Interval) -> bool {
    if let End::Key(end) = &wanted.end {
        // An empty or inverted range holds no key; etcd's interval tree
        // still looks for an interval around its start.
        if end <= &wanted.start {
            return set
                .iter()
                .any(|ivl| ivl.start <= wanted.start && End::Key(wanted.start.clone()) < ivl.end);
        }
    }
    let mut reached = End::Key(wanted.start.clone());
    for ivl in set {
        if reached >= wanted.end {
            break;
        }
        let End::Key(at) = &reached else { break };
        if ivl.start.as_slice() > at.as_slice() {
            // Sorted by start: nothing later closes the gap.
            return false;
        }
        if ivl.end > reached {
            reached = ivl.end.clone();
        }
    }
    reached >= wanted.end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermType, key: &str, range_end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec().into(),
            range_end: range_end.as_bytes().to_vec().into(),
        }
    }

    /// The examples etcd 3.5.1 was seen to allow and deny.
    #[test]
    fn ranges_are_allowed_when_the_union_covers_them() {
        let p = [perm(PermType::Readwrite, "p/", "p0")];
        let merged = MergedPermissions::merge(&p);
        assert!(merged.allows(Need::Read, b"p/", b"p0"));
        assert!(merged.allows(Need::Read, b"p/a", b"p/b"));
        assert!(merged.allows(Need::Write, b"p/x", b""));
        assert!(!merged.allows(Need::Read, b"p/", b"p1"));
        assert!(!merged.allows(Need::Read, b"p", b"p0"));
        assert!(!merged.allows(Need::Read, b"q", b""));

        let from_z = [perm(PermType::Read, "z", "\0")];
        let merged = MergedPermissions::merge(&from_z);
        assert!(merged.allows(Need::Read, b"z", b"\0"));
        assert!(merged.allows(Need::Read, b"zz", b"zzz"));
        assert!(merged.allows(Need::Read, b"zzz", b""));
        assert!(!merged.allows(Need::Read, b"y", b"\0"));
        assert!(!merged.allows(Need::Read, b"", b"\0"));
        assert!(!merged.allows(Need::Write, b"z", b""));
    }

    #[test]
    fn adjacent_and_overlapping_permissions_join() {
        let p = [
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "b", "e"),
            perm(PermType::Read, "e", "f"),
            perm(PermType::Write, "k", ""),
        ];
        let merged = MergedPermissions::merge(&p);
        assert!(merged.allows(Need::Read, b"a", b"f"));
        assert!(!merged.allows(Need::Read, b"a", b"g"));
        // One key as a range: [k, k\0).
        assert!(merged.allows(Need::Write, b"k", b"k\0"));
        assert!(!merged.allows(Need::Write, b"k", b"l"));
        assert!(!merged.allows(Need::Read, b"k", b""));
    }
}
