//! The checks etcd makes when a KV request arrives, before it touches any
//! state (`v3rpc/key.go`). Their order matters: it decides which error a
//! request with several faults gets.

use std::collections::HashSet;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::EtcdError;

/// The most operations a txn may hold (etcd's `--max-txn-ops` default).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Checks a `Range`.
pub(crate) fn check_range(req: &RangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a `Put`.
pub(crate) fn check_put(req: &PutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// Checks a `DeleteRange`.
pub(crate) fn check_delete(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a `Txn`: op counts and keys, recursively, then that no key is
/// written twice (or written and deleted) on either branch.
pub(crate) fn check_txn(req: &TxnRequest) -> Result<(), EtcdError> {
    check_txn_ops(req, MAX_TXN_OPS)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_ops(req: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    // A nested txn shares the parent's op budget.
    for op in req.success.iter().chain(&req.failure) {
        check_request_op(op, max_ops - ops)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn_ops(r, max_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A deleted interval, as etcd's interval tree sees it: an empty end means
/// "to infinity", and a single key `k` is `[k, k\0)`. A delete whose range end
/// is `"\0"` becomes `[key, "\0")`, an interval no key falls in, so etcd lets a
/// txn put into a from-key delete; we keep that.
#[derive(Debug, Clone)]
struct Interval {
    start: Bytes,
    end: Option<Bytes>,
}

impl Interval {
    fn of_delete(req: &DeleteRangeRequest) -> Self {
        if req.range_end.is_empty() {
            let mut end = req.key.to_vec();
            end.push(0);
            Self {
                start: req.key.clone(),
                end: Some(end.into()),
            }
        } else {
            Self {
                start: req.key.clone(),
                end: Some(req.range_end.clone()),
            }
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|end| key < &end[..])
    }
}

/// The keys a list of ops puts and the intervals it deletes, nested txns
/// included (etcd's `checkIntervals`).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of_delete(d)),
            _ => None,
        })
        .collect();
    let overlaps = |dels: &[Interval], key: &[u8]| dels.iter().any(|d| d.contains(key));

    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || overlaps(&dels, key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            // The same key on both branches of one txn is fine: only one runs.
            if puts.contains(key) && !puts_then.contains(key) {
                return Err(EtcdError::DuplicateKey);
            }
            if overlaps(&dels, key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || overlaps(&dels, &put.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn del(key: &str, end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                range_end: Bytes::copy_from_slice(end),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success,
                failure,
                ..Default::default()
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), EtcdError> {
        check_txn(&TxnRequest {
            success,
            ..Default::default()
        })
    }

    #[test]
    fn duplicate_key_rules() {
        assert_eq!(
            check(vec![put("a"), put("a")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(vec![put("b"), del("a", b"c")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(vec![del("a", b""), put("a")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(check(vec![del("a", b"c"), del("b", b"d")]), Ok(()));
        assert_eq!(check(vec![txn(vec![put("a")], vec![put("a")])]), Ok(()));
        assert_eq!(
            check(vec![
                txn(vec![put("a")], vec![]),
                txn(vec![put("a")], vec![])
            ]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(vec![del("a", b"z"), txn(vec![put("b")], vec![])]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(vec![del("a", b"\0"), put("b")]),
            Ok(()),
            "etcd's from-key quirk"
        );
        let both_branches = TxnRequest {
            success: vec![put("a")],
            failure: vec![put("a")],
            ..Default::default()
        };
        assert_eq!(check_txn(&both_branches), Ok(()));
    }

    #[test]
    fn op_limits_count_nested_txns_against_the_parent() {
        let ops = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| put(&format!("{prefix}{i}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(check(ops("k", 128)), Ok(()));
        assert_eq!(check(ops("k", 129)), Err(EtcdError::TooManyOps));
        // 99 ops and a nested txn make 100, leaving the nested txn 28.
        let mut parent = ops("k", 99);
        parent.push(txn(ops("n", 29), vec![]));
        assert_eq!(check(parent), Err(EtcdError::TooManyOps));
        let mut parent = ops("k", 99);
        parent.push(txn(ops("n", 28), vec![]));
        assert_eq!(check(parent), Ok(()));
    }

    #[test]
    fn an_empty_request_op_is_key_not_found() {
        assert_eq!(
            check(vec![RequestOp { request: None }]),
            Err(EtcdError::KeyNotFound)
        );
    }
}
