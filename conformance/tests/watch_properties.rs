//! etcd's watch guarantees over random schedules of writes, lease expiries
//! and compactions: ordered, unique, atomic, reliable, resumable, and
//! prev_kv correct. 64 cases on the fake; 4 on a real etcd.

#[test]
fn watch_guarantees_hold_over_random_schedules() {
    conformance::properties::watch_guarantees(64);
}
