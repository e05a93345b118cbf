//! Balancing real gRPC calls over registered Greeter servers. The fake
//! etcd runs on its virtual clock (its default): leases expire only when a
//! test advances it, so "killed but its lease not yet expired" is a state a
//! test can hold for as long as it needs.

use std::collections::HashMap;
use std::time::Duration;

use discovery_test_greeter::KillableServer;
use etcd_grpc_discovery::balance::{BalancedChannel, InstanceRouter, Policy, WhenEmpty};
use etcd_grpc_discovery::{Error, Registrar, Resolver};
use fake_etcd::FakeEtcd;
use tonic::Code;

use discovery_test_greeter::hello::greeter_client::GreeterClient;
use discovery_test_greeter::hello::HelloRequest;
use discovery_test_greeter::serve;

async fn who_answers(
    client: &mut GreeterClient<BalancedChannel>,
    calls: usize,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..calls {
        let reply = client
            .say_hello(HelloRequest { name: "x".into() })
            .await
            .unwrap()
            .into_inner();
        *seen.entry(reply.server).or_insert(0) += 1;
    }
    seen
}

/// What `future` gives, within 10 s: a test that would wait for ever
/// fails, naming what it waited for.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after 10 s"))
}

#[tokio::test]
async fn calls_spread_over_registered_servers_and_follow_changes() {
    let etcd = FakeEtcd::start().await.unwrap();
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let mut registrations = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let addr = serve().await;
        registrations.push(Registrar::builder(client.clone(), "greeter", addr.to_string()).start());
        addrs.push(addr.to_string());
    }
    let resolver = Resolver::builder(client.clone(), "greeter").start();
    let mut rx = resolver.subscribe();
    rx.wait_for(|s| s.endpoints.len() == 3).await.unwrap();
    let channel = BalancedChannel::new(&resolver, WhenEmpty::Wait(Duration::from_secs(5)));
    let mut greeter = GreeterClient::new(channel.clone());

    let seen = who_answers(&mut greeter, 60).await;
    assert_eq!(seen.len(), 3, "every server gets calls: {seen:?}");
    channel
        .wait_for_ready(Duration::from_secs(10), |ready| ready.len() == 3)
        .await
        .unwrap();
    let seen = who_answers(&mut greeter, 60).await;
    assert!(
        seen.values().all(|calls| *calls == 20),
        "round robin over three ready servers: 20 calls each, got {seen:?}"
    );

    let stopped = registrations.remove(0);
    stopped.deregister().await.unwrap();
    rx.wait_for(|s| s.endpoints.len() == 2).await.unwrap();
    channel
        .wait_for_ready(Duration::from_secs(10), |ready| ready.len() == 2)
        .await
        .unwrap();
    let seen = who_answers(&mut greeter, 40).await;
    assert!(
        !seen.contains_key(&addrs[0]),
        "the deregistered server is out of the rotation: {seen:?}"
    );
    assert_eq!(seen.len(), 2);

    // Routing to one chosen instance.
    let router = InstanceRouter::new(&resolver);
    let mut sticky = GreeterClient::new(router.channel(&addrs[2]).unwrap());
    for _ in 0..5 {
        let reply = sticky
            .say_hello(HelloRequest { name: "y".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.server, addrs[2]);
    }
    assert!(
        router.channel(&addrs[0]).is_err(),
        "a deregistered instance has no channel"
    );
}

#[tokio::test]
async fn an_empty_service_fails_fast_or_waits_as_chosen() {
    let etcd = FakeEtcd::start().await.unwrap();
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "greeter").start();
    let mut fail_fast = GreeterClient::new(BalancedChannel::new(&resolver, WhenEmpty::FailFast));
    let status = fail_fast
        .say_hello(HelloRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no registered instances"),
        "{status:?}"
    );

    let mut waiting = GreeterClient::new(BalancedChannel::new(
        &resolver,
        WhenEmpty::Wait(Duration::from_secs(10)),
    ));
    let call = tokio::spawn(async move { waiting.say_hello(HelloRequest::default()).await });
    let addr = serve().await;
    let _registration = Registrar::builder(client, "greeter", addr.to_string()).start();
    let reply = call
        .await
        .unwrap()
        .expect("the waiting call goes through once a server registers");
    assert_eq!(reply.into_inner().server, addr.to_string());
}

/// An instance whose address is not a valid URI: the router says so, with
/// its own error, not "no endpoints".
#[tokio::test(start_paused = true)]
async fn an_invalid_address_is_its_own_error() {
    let etcd = FakeEtcd::builder()
        .time(fake_etcd::TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .put(
            "svc/bad",
            r#"{"Op":0,"Addr":"bad host:1","Metadata":null}"#,
            None,
        )
        .await
        .unwrap();
    let resolver = Resolver::builder(client, "svc").start();
    resolver
        .wait_for_endpoints(Duration::from_secs(5))
        .await
        .unwrap();
    let router = InstanceRouter::new(&resolver);
    match router.channel("bad") {
        Err(Error::InvalidAddress { id, addr, .. }) => {
            assert_eq!((id.as_str(), addr.as_str()), ("bad", "bad host:1"));
        }
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    assert!(matches!(
        router.channel("missing"),
        Err(Error::NoEndpoints(_))
    ));
}

/// Two instances; one is killed (its server and its keepalives stop at
/// once) while its lease lives on. Its connection closes, so no call goes
/// there: none fails while the other is up. Once its lease expires
/// (virtual time), the resolver drops it too.
async fn a_killed_instance_gets_no_calls(policy: Policy) {
    let etcd = FakeEtcd::start().await.unwrap();
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let survivor = KillableServer::start();
    let mut victim = KillableServer::start();
    // The survivor's lease must outlive the clock jump that expires the
    // victim's: its renewals run in real time, which the fake's clock
    // ignores.
    let _survivor_registration =
        Registrar::builder(client.clone(), "greeter", survivor.addr().to_string())
            .ttl(600)
            .start();
    let victim_registration =
        Registrar::builder(client.clone(), "greeter", victim.addr().to_string())
            .ttl(10)
            .start();
    within("the victim's registration", victim_registration.live())
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "greeter").start();
    let mut rx = resolver.subscribe();
    within(
        "both instances resolved",
        rx.wait_for(|s| s.endpoints.len() == 2),
    )
    .await
    .unwrap();
    let channel = BalancedChannel::new(&resolver, WhenEmpty::FailFast).with_policy(policy);
    channel
        .wait_for_ready(Duration::from_secs(10), |ready| ready.len() == 2)
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(channel.clone());
    let seen = who_answers(&mut greeter, 40).await;
    assert_eq!(seen.len(), 2, "both get calls: {seen:?}");

    // Killed: the process is gone, its key stays until the lease expires.
    victim.kill();
    drop(victim_registration);
    let ready = channel
        .wait_for_ready(Duration::from_secs(10), |ready| ready.len() == 1)
        .await
        .unwrap();
    assert_eq!(ready, [survivor.addr().to_string()]);
    assert_eq!(
        resolver.snapshot().endpoints.len(),
        2,
        "the victim's lease has not expired"
    );
    // `who_answers` unwraps each reply: a call sent to the dead instance
    // would fail ("tcp connect error") and fail the test.
    let seen = who_answers(&mut greeter, 20).await;
    assert_eq!(
        seen.get(&survivor.addr().to_string()),
        Some(&20),
        "{seen:?}"
    );

    etcd.advance(Duration::from_secs(11)).await;
    within(
        "the victim resolved away",
        rx.wait_for(|s| s.endpoints.len() == 1),
    )
    .await
    .unwrap();
    let seen = who_answers(&mut greeter, 5).await;
    assert_eq!(seen.get(&survivor.addr().to_string()), Some(&5), "{seen:?}");
}

#[tokio::test]
async fn round_robin_sends_no_call_to_a_killed_instance() {
    a_killed_instance_gets_no_calls(Policy::RoundRobin).await;
}

#[tokio::test]
async fn power_of_two_choices_sends_no_call_to_a_killed_instance() {
    a_killed_instance_gets_no_calls(Policy::PowerOfTwoChoices).await;
}

/// The less loaded of two, drawn among the ready instances: every one gets
/// calls.
#[tokio::test]
async fn power_of_two_choices_spreads_over_ready_instances() {
    let etcd = FakeEtcd::start().await.unwrap();
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let servers: Vec<KillableServer> = (0..3).map(|_| KillableServer::start()).collect();
    let _registrations: Vec<_> = servers
        .iter()
        .map(|s| Registrar::builder(client.clone(), "greeter", s.addr().to_string()).start())
        .collect();
    let resolver = Resolver::builder(client.clone(), "greeter").start();
    let channel = BalancedChannel::new(&resolver, WhenEmpty::Wait(Duration::from_secs(10)))
        .with_policy(Policy::PowerOfTwoChoices);
    channel
        .wait_for_ready(Duration::from_secs(10), |ready| ready.len() == 3)
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(channel);
    let seen = who_answers(&mut greeter, 90).await;
    assert_eq!(seen.len(), 3, "every ready server gets calls: {seen:?}");
}
