//! No request without the right permission reaches the store: random
//! users, roles, permissions and requests (Range, Put, DeleteRange, nested
//! Txn, Watch; as a user, as root, with no token), every answer checked
//! against a model of etcd's permission rules, and the store checked
//! unchanged after every refusal. Each case turns auth on, so it takes the
//! target to itself, and restores it whatever happens. 24 cases on the
//! fake; 16 on a real etcd.

use conformance::auth_properties::model::Kind::{Read, ReadWrite, Write};
use conformance::auth_properties::{
    check_case, permissions_hold, Case, DeleteOp, Op, Perm, PutOp, Request, RoleRef, Span, Step,
    Txn, Who,
};

#[test]
fn no_request_without_permission_reaches_the_store() {
    permissions_hold(24);
}

// Indices into `KEYS`.
const A: u8 = 0;
const AA: u8 = 1;
const AB: u8 = 2;
const B: u8 = 3;
const C: u8 = 5;
const D: u8 = 8;
const E: u8 = 9;

fn put(key: u8, prev_kv: bool, lease: Option<u8>) -> PutOp {
    PutOp {
        key: Span::Key(key),
        prev_kv,
        lease,
    }
}

fn ask(user: u8, request: Request) -> Step {
    Step::Ask(Who::User(user), request)
}

/// One case written out, so that every rule is met on every run, whatever
/// the seed: prev_kv needs READ; a lease's keys need WRITE (and a key put
/// without the lease leaves it); a nested txn is checked by the tip only;
/// a from-key watch is checked over its whole range by the tip only;
/// nothing to check passes without a token; the role root lets one do
/// anything, until revoked; a grant replaces the type of the first
/// permission on its key only.
#[tokio::test]
async fn a_written_case_meets_every_rule() {
    let perm = |kind, span| Perm { kind, span };
    let case = Case {
        roles: vec![
            vec![
                perm(Write, Span::Key(A)),
                perm(Read, Span::Range(B, C)),
                perm(ReadWrite, Span::FromKey(D)),
            ],
            vec![perm(Read, Span::Key(A))],
        ],
        users: vec![vec![0], vec![0, 1]],
        // a and d on lease 0.
        initial: vec![(A, true), (B, false), (D, true)],
        steps: vec![
            // WRITE on a, but no READ for prev_kv: denied; with READ too:
            // allowed (and a leaves lease 0).
            ask(0, Request::Put(put(A, true, None))),
            ask(1, Request::Put(put(A, true, None))),
            // Lease 0 holds d only now: WRITE on d and e is enough.
            ask(0, Request::Put(put(E, false, Some(0)))),
            // Root puts b on lease 1: user 0 cannot write b, so may not
            // attach d to it.
            Step::Ask(Who::Root, Request::Put(put(B, false, Some(1)))),
            ask(0, Request::Put(put(D, false, Some(1)))),
            // A nested put of b: denied by the tip, done by 3.5.1.
            ask(
                0,
                Request::Txn(Txn {
                    compare: vec![],
                    success: vec![Op::Txn(Txn {
                        compare: vec![],
                        success: vec![Op::Put(put(B, false, None))],
                        failure: vec![],
                    })],
                    failure: vec![],
                }),
            ),
            // READ on a, [b, c) and [d, +inf): a gap after a.
            ask(1, Request::Watch(Span::FromKey(A))),
            ask(1, Request::Watch(Span::FromKey(B))),
            ask(
                1,
                Request::Range {
                    span: Span::Range(B, C),
                    serializable: true,
                    keys_only: false,
                },
            ),
            // No token: an empty txn passes, anything else does not.
            Step::Ask(
                Who::Nobody,
                Request::Txn(Txn {
                    compare: vec![],
                    success: vec![],
                    failure: vec![],
                }),
            ),
            Step::Ask(Who::Nobody, Request::Watch(Span::Key(A))),
            Step::Ask(
                Who::Nobody,
                Request::Delete(DeleteOp {
                    span: Span::Key(A),
                    prev_kv: false,
                }),
            ),
            // The role root, granted and revoked.
            Step::GrantRole(0, RoleRef::Root),
            ask(
                0,
                Request::Delete(DeleteOp {
                    span: Span::FromKey(A),
                    prev_kv: true,
                }),
            ),
            Step::RevokeRole(0, RoleRef::Root),
            ask(0, Request::Put(put(A, true, None))),
            // A revoked permission goes at once.
            Step::Revoke(0, 0),
            ask(0, Request::Put(put(A, false, None))),
            // A grant on keys held replaces the type only of the first
            // permission on that key: here a second [aa, +inf) is added,
            // READ, and the READWRITE one stays.
            Step::Grant(1, perm(Read, Span::Range(AA, AB))),
            Step::Grant(1, perm(ReadWrite, Span::FromKey(AA))),
            Step::Grant(1, perm(Read, Span::FromKey(AA))),
            ask(1, Request::Put(put(AA, false, None))),
        ],
    };
    check_case(case).await.unwrap();
}
