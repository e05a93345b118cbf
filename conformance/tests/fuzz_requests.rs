//! Random requests to every RPC of the fake: no panic, no hang, still
//! serving, invariants kept (see `conformance::fuzz`). A bounded run here;
//! `TEST_BINARY_LIMIT_SECS=3600 PROPTEST_CASES=60000 cargo test -p
//! conformance --test fuzz_requests` hunts for about half an hour.

#[test]
fn random_requests_never_break_the_fake() {
    if !conformance::runs_on_fake_only(
        "random_requests_never_break_the_fake",
        "fuzzing is for the fake",
    ) {
        return;
    }
    if let Err(failure) = conformance::fuzz::fuzz(200, 40) {
        panic!("{failure}");
    }
}
