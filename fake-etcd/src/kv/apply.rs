//! Applying KV requests to the store, as etcd's `apply.go` does.

use std::cmp::Ordering;

use etcd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};

use etcd_proto::mvccpb::{Event, KeyValue};

use super::go_sort;
use super::LeaseAttachments;
use crate::error::EtcdError;
use crate::mvcc::{KeyRange, Store, WriteTxn};

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Reads a range. The header carries the store's current revision, whatever
/// revision was read.
pub(crate) fn range(store: &Store, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    let current = store.revision();
    let rev = match req.revision {
        r if r > current => return Err(EtcdError::FutureRevision),
        r if r <= 0 => current,
        r => r,
    };
    if rev < store.compact_revision() {
        return Err(EtcdError::Compacted);
    }

    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting and filtering need every key; otherwise one more than the
    // limit tells whether there are `more`.
    let fetch = if req.sort_order != SortOrder::None as i32 || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(req.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    };

    let mut count = 0i64;
    let mut kvs = Vec::new();
    for kv in store.range_at(&KeyRange::new(&req.key, &req.range_end), rev) {
        count += 1;
        if !req.count_only && kvs.len() < fetch {
            kvs.push(kv.to_kv());
        }
    }

    if filtered {
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
    }
    sort(&mut kvs, req.sort_target, req.sort_order);

    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(current),
        kvs,
        more,
        count,
    })
}

/// Sorts as etcd does: a target other than KEY with no order means ascending,
/// and ties come out as etcd 3.5.1's unstable sort leaves them
/// ([`go_sort`]).
fn sort(kvs: &mut [KeyValue], target: i32, order: i32) {
    let target = SortTarget::try_from(target).ok();
    let mut order = SortOrder::try_from(order).ok();
    if target != Some(SortTarget::Key) && order == Some(SortOrder::None) {
        order = Some(SortOrder::Ascend);
    }
    let key: fn(&KeyValue, &KeyValue) -> Ordering = match target {
        Some(SortTarget::Key) => |a, b| a.key.cmp(&b.key),
        Some(SortTarget::Version) => |a, b| a.version.cmp(&b.version),
        Some(SortTarget::Create) => |a, b| a.create_revision.cmp(&b.create_revision),
        Some(SortTarget::Mod) => |a, b| a.mod_revision.cmp(&b.mod_revision),
        Some(SortTarget::Value) => |a, b| a.value.cmp(&b.value),
        None => return,
    };
    match order {
        Some(SortOrder::Ascend) => go_sort::sort(kvs, |a, b| key(a, b) == Ordering::Less),
        Some(SortOrder::Descend) => go_sort::sort(kvs, |a, b| key(b, a) == Ordering::Less),
        _ => {}
    }
}

/// The checks a put needs the store and lessor for, in the order a txn makes
/// them (etcd's `checkRequestPut`).
fn check_put_state(
    store: &Store,
    leases: &impl LeaseAttachments,
    req: &PutRequest,
) -> Result<(), EtcdError> {
    if (req.ignore_value || req.ignore_lease) && store.get(&req.key).is_none() {
        return Err(EtcdError::KeyNotFound);
    }
    if req.lease != 0 && !leases.exists(req.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    Ok(())
}

/// Puts a key. Returns the response and the events to publish.
pub(crate) fn put(
    store: &mut Store,
    leases: &mut impl LeaseAttachments,
    req: &PutRequest,
) -> Result<(PutResponse, Vec<Event>), EtcdError> {
    // A standalone put checks the lease before the key, unlike a txn.
    if req.lease != 0 && !leases.exists(req.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    check_put_state(store, leases, req)?;
    let mut txn = store.write();
    let response = put_in(&mut txn, leases, req);
    Ok((response, txn.into_events()))
}

fn put_in(
    txn: &mut WriteTxn<'_>,
    leases: &mut impl LeaseAttachments,
    req: &PutRequest,
) -> PutResponse {
    // Only these need the key as it is before the put (which finds it too).
    let current = if req.ignore_value || req.ignore_lease {
        txn.store().get(&req.key)
    } else {
        None
    };
    let value = match &current {
        Some(kv) if req.ignore_value => kv.value.clone(),
        _ => req.value.clone(),
    };
    let lease = match &current {
        Some(kv) if req.ignore_lease => kv.lease,
        _ => req.lease,
    };
    let prev = txn.put(req.key.clone(), value, lease);
    if let Some(old) = prev.as_ref().filter(|p| p.lease != 0) {
        leases.detach(old.lease, &req.key);
    }
    if lease != 0 {
        leases.attach(lease, &req.key);
    }
    PutResponse {
        header: header(txn.store().revision()),
        prev_kv: prev.filter(|_| req.prev_kv),
    }
}

/// Deletes a range. A delete that finds nothing changes nothing, revision
/// included.
pub(crate) fn delete_range(
    store: &mut Store,
    leases: &mut impl LeaseAttachments,
    req: &DeleteRangeRequest,
) -> (DeleteRangeResponse, Vec<Event>) {
    let mut txn = store.write();
    let response = delete_in(&mut txn, leases, req);
    (response, txn.into_events())
}

fn delete_in(
    txn: &mut WriteTxn<'_>,
    leases: &mut impl LeaseAttachments,
    req: &DeleteRangeRequest,
) -> DeleteRangeResponse {
    let deleted = txn.delete_range(&KeyRange::new(&req.key, &req.range_end));
    for kv in deleted.iter().filter(|kv| kv.lease != 0) {
        leases.detach(kv.lease, &kv.key);
    }
    DeleteRangeResponse {
        header: header(txn.store().revision()),
        deleted: deleted.len() as i64,
        prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
    }
}

/// Whether a txn only reads: every op on both branches is a range (a nested
/// txn counts as a write). Read-only txns skip the request size limit.
pub(crate) fn is_txn_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

/// Whether a txn would store anything if its puts ran (what a NOSPACE alarm
/// refuses): a put on either branch, nested txns included (etcd's
/// `costTxn`).
pub(crate) fn txn_puts(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
}

/// Runs a txn: every compare first (nested ones included) against the state
/// before the txn, then the checks of the chosen path, then its ops. The
/// whole txn gets one revision if it changes anything.
pub(crate) fn txn(
    store: &mut Store,
    leases: &mut impl LeaseAttachments,
    req: &TxnRequest,
) -> Result<(TxnResponse, Vec<Event>), EtcdError> {
    let mut path = Vec::new();
    compare_path(store, req, &mut path);
    if !is_txn_read_only(req) {
        for_each_chosen_op(req, &path, &mut 0, &mut |op| match &op.request {
            Some(Request::RequestPut(put)) => check_put_state(store, leases, put),
            _ => Ok(()),
        })?;
    }
    let (current, compacted) = (store.revision(), store.compact_revision());
    for_each_chosen_op(req, &path, &mut 0, &mut |op| match &op.request {
        // A txn range compares its revision with the compaction point as is,
        // so a negative revision counts as compacted (etcd's checkRequestRange).
        Some(Request::RequestRange(r)) if r.revision > current => Err(EtcdError::FutureRevision),
        Some(Request::RequestRange(r)) if r.revision != 0 && r.revision < compacted => {
            Err(EtcdError::Compacted)
        }
        _ => Ok(()),
    })?;

    let mut write = store.write();
    let mut response = apply_txn(&mut write, leases, req, &path, &mut 0)?;
    response.header = header(write.store().revision());
    Ok((response, write.into_events()))
}

/// Evaluates the compares of a txn and of the nested txns on its chosen
/// branch, in pre-order (etcd's `compareToPath`).
fn compare_path(store: &Store, req: &TxnRequest, path: &mut Vec<bool>) {
    let succeeded = req.compare.iter().all(|c| compare(store, c));
    path.push(succeeded);
    for op in if succeeded {
        &req.success
    } else {
        &req.failure
    } {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            compare_path(store, nested, path);
        }
    }
}

/// Calls `check` on every non-txn op of the chosen path, in order.
fn for_each_chosen_op(
    req: &TxnRequest,
    path: &[bool],
    at: &mut usize,
    check: &mut impl FnMut(&RequestOp) -> Result<(), EtcdError>,
) -> Result<(), EtcdError> {
    let succeeded = path[*at];
    *at += 1;
    for op in if succeeded {
        &req.success
    } else {
        &req.failure
    } {
        match &op.request {
            Some(Request::RequestTxn(nested)) => for_each_chosen_op(nested, path, at, check)?,
            _ => check(op)?,
        }
    }
    Ok(())
}

fn apply_txn(
    write: &mut WriteTxn<'_>,
    leases: &mut impl LeaseAttachments,
    req: &TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<TxnResponse, EtcdError> {
    let succeeded = path[*at];
    *at += 1;
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                Some(Response::ResponseRange(range(write.store(), r)?))
            }
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(put_in(write, leases, p))),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(delete_in(write, leases, d)))
            }
            Some(Request::RequestTxn(nested)) => {
                let mut nested = apply_txn(write, leases, nested, path, at)?;
                // etcd gives a nested txn response an empty header.
                nested.header = Some(ResponseHeader::default());
                Some(Response::ResponseTxn(nested))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// Whether every key of the compare's range satisfies it; a range with no
/// keys compares a zero `KeyValue`, except that a VALUE compare then fails.
fn compare(store: &Store, c: &Compare) -> bool {
    let mut matched_any = false;
    for kv in store.range_at(&KeyRange::new(&c.key, &c.range_end), store.revision()) {
        matched_any = true;
        if !compare_kv(c, &kv.to_kv()) {
            return false;
        }
    }
    matched_any || (c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default()))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let number = |actual: i64, expected: Option<i64>| actual.cmp(&expected.unwrap_or(0));
    let ordering = match (CompareTarget::try_from(c.target), &c.target_union) {
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => kv.value[..].cmp(&v[..]),
        (Ok(CompareTarget::Value), _) => kv.value[..].cmp(&[][..]),
        (Ok(CompareTarget::Version), union) => number(
            kv.version,
            match union {
                Some(TargetUnion::Version(v)) => Some(*v),
                _ => None,
            },
        ),
        (Ok(CompareTarget::Create), union) => number(
            kv.create_revision,
            match union {
                Some(TargetUnion::CreateRevision(v)) => Some(*v),
                _ => None,
            },
        ),
        (Ok(CompareTarget::Mod), union) => number(
            kv.mod_revision,
            match union {
                Some(TargetUnion::ModRevision(v)) => Some(*v),
                _ => None,
            },
        ),
        (Ok(CompareTarget::Lease), union) => number(
            kv.lease,
            match union {
                Some(TargetUnion::Lease(v)) => Some(*v),
                _ => None,
            },
        ),
        (Err(_), _) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}
