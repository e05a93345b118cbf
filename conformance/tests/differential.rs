//! The same random request sequences sent to a reference etcd and to a
//! fresh fake, every answer compared (see `conformance::differential`).
//!
//! Each run covers a fixed set of seeds, then one fresh seed, printed so a
//! divergence it finds can be replayed with `FAKE_ETCD_SEED`. With
//! `ETCD_ENDPOINTS` set the reference is that etcd, which the test resets
//! and compacts before each case; without it, a second fake.

use conformance::differential::compare;
use conformance::properties::seed_from_env;
use conformance::Target;

/// Seeds every run covers.
const FIXED_SEEDS: [u64; 3] = [1, 0x5eed, 20_261_130];

#[test]
fn the_fake_answers_every_request_as_etcd_does() {
    if Target::current().is_cluster() {
        conformance::say(
            "SKIPPED: the_fake_answers_every_request_as_etcd_does: compares one member with one member",
        );
        return;
    }
    let fresh = seed_from_env();
    conformance::say(&format!(
        "differential: fixed seeds {FIXED_SEEDS:?}, fresh seed {fresh}"
    ));
    for seed in FIXED_SEEDS.into_iter().chain([fresh]) {
        if let Err(divergence) = compare(seed, 12, 24) {
            panic!("seed {seed}: {divergence}");
        }
    }
}
