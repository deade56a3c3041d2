//! The fault suite: each fault runs under load (32 callers, at least 5 s) against real
//! gf-testservers and real etcd processes, with the client configured as a user who wants to
//! survive that fault would configure it. Every fault asserts that callers saw no error while a
//! healthy instance existed, and that every call sent was counted as succeeded or failed, and
//! prints one summary line (`fault NAME: sent=.. ok=.. failed=.. p99=..ms ...`).
//!
//! `make test-faults` runs this suite alone, with the summary lines shown.

#[path = "../common/mod.rs"]
mod common;
mod load;
mod net;

use std::time::Duration;

use common::*;
use grpc_failover::Client;
use load::under_load;
use serde_json::{json, Value};

/// The backends answer after this long, so that calls are in flight on them when a fault hits.
const SERVER_DELAY_MS: &str = "5";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries on UNAVAILABLE (gRFC A6), round robin, client-side health checks: what carries a
/// call whose instance went away to another one.
fn retry_config() -> Value {
    json!({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{
            "name": [{"service": "test.Svc"}],
            "timeout": "5s",
            "retryPolicy": {
                "maxAttempts": 5, "initialBackoff": "0.01s", "maxBackoff": "0.2s",
                "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]
            }
        }]
    })
}

/// Hedging (gRFC A6): a copy of a call that has not answered within 100 ms goes to another
/// instance, so a hung instance costs latency, not errors.
fn hedging_config() -> Value {
    json!({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{
            "name": [{"service": "test.Svc"}],
            "timeout": "5s",
            "hedgingPolicy": {
                "maxAttempts": 3, "hedgingDelay": "0.1s", "nonFatalStatusCodes": ["UNAVAILABLE"]
            }
        }]
    })
}

/// A client of `etcd:///svc` through `etcd`, with connection settings for a fast failover: a
/// short connect timeout (a peer that accepts TCP and never answers is given up quickly) and a
/// short reconnect backoff.
fn client(etcd: &[&Etcd], service_config: Value) -> Client {
    let endpoints: Vec<&str> = etcd.iter().map(|e| e.endpoint.as_str()).collect();
    let opts = json!({
        "etcd": {"endpoints": endpoints, "dial_timeout_ms": 1000},
        "service_config": service_config,
        "connect_timeout_ms": 1000,
        "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 1000},
    });
    Client::connect("etcd:///svc", options(&opts.to_string())).expect("connect")
}

/// `n` gf-testservers named s0.., answering after `SERVER_DELAY_MS`; registered under `svc`
/// through `etcd` (comma-separated endpoints) when given.
fn backends(n: usize, etcd: Option<&str>) -> Vec<TestServer> {
    (0..n).map(|i| backend(&format!("s{i}"), etcd)).collect()
}

fn backend(name: &str, etcd: Option<&str>) -> TestServer {
    let mut args = vec!["--delay-ms", SERVER_DELAY_MS];
    if let Some(endpoints) = etcd {
        args.extend(["--etcd", endpoints, "--prefix", "svc", "--ttl", "5"]);
    }
    TestServer::start(name, &args)
}

fn endpoints(members: &[&Etcd]) -> String {
    members
        .iter()
        .map(|m| m.endpoint.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn ready(c: &Client, addr: &str) -> bool {
    instance(c, addr)["state"] == "READY"
}

/// (1) A backend is frozen (SIGSTOP) for 2 s and resumed: its kernel keeps the connection up
/// while nothing answers. Hedging sends a late call's copy elsewhere; after SIGCONT the backend
/// meets a burst of cancelled streams (hyper may answer GOAWAY too_many_resets), which the
/// hedges must hide too.
#[test]
fn sigstop_sigcont() {
    let etcd = Etcd::start();
    let servers = backends(3, Some(&etcd.endpoint));
    let c = client(&[&etcd], hedging_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let report = under_load("sigstop-sigcont", &c, CALL_TIMEOUT, || {
        sleep_ms(1000);
        servers[0].pause();
        sleep_ms(2000);
        servers[0].resume();
        assert!(
            eventually(Duration::from_secs(10), || ready(&c, &servers[0].addr)),
            "s0 did not come back: {}",
            c.stats()
        );
    });
    report.check();
    assert!(
        report.stats["hedges"].as_u64() > Some(0),
        "no hedge: {}",
        report.stats
    );
}

/// (2) A backend accepts TCP and never sends a byte: one registered before the client starts,
/// one that appears while calls run. The HTTP/2 handshake (a PING the server must answer)
/// never completes, so neither is ever READY, and no call waits on them.
#[test]
fn accepts_tcp_never_speaks() {
    let etcd = Etcd::start();
    let _servers = backends(3, Some(&etcd.endpoint));
    let early = net::BlackHole::start();
    let late = net::BlackHole::start();
    etcd.put_instance("svc", &early.addr, 1.0);
    let c = client(&[&etcd], retry_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let report = under_load("accepts-tcp-never-speaks", &c, CALL_TIMEOUT, || {
        sleep_ms(1000);
        etcd.put_instance("svc", &late.addr, 1.0);
        assert!(
            eventually(Duration::from_secs(5), || instances(&c).len() == 5),
            "the late black hole was not resolved: {}",
            c.stats()
        );
    });
    report.check();
    for hole in [&early, &late] {
        assert!(
            hole.accepted() > 0,
            "the client never connected to {}",
            hole.addr
        );
        assert!(
            !ready(&c, &hole.addr),
            "{} became READY: {}",
            hole.addr,
            c.stats()
        );
    }
}

/// (3) Backends restart gracefully, one after the other: SIGTERM makes gf-testserver stop
/// accepting, deregister, report NOT_SERVING, send GOAWAY and finish its calls; then it starts
/// again on the same address. Calls the GOAWAY turned away are retried transparently.
#[test]
fn goaway_drain() {
    let etcd = Etcd::start();
    let mut servers = backends(3, Some(&etcd.endpoint));
    let c = client(&[&etcd], retry_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let report = under_load("goaway-drain", &c, CALL_TIMEOUT, || {
        for s in servers.iter_mut().take(2) {
            sleep_ms(1000);
            let exit = s.restart_gracefully();
            assert!(
                exit.is_some_and(|e| e.success()),
                "{} did not drain cleanly: {exit:?}",
                s.name
            );
            assert!(
                eventually(Duration::from_secs(10), || ready(&c, &s.addr)),
                "{} did not come back: {}",
                s.name,
                c.stats()
            );
        }
    });
    report.check();
}

/// (4) One of three etcd members, the leader, is killed while calls run, and brought back. The
/// registry keeps working through the other two: a backend registered meanwhile is found.
#[test]
fn etcd_leader_killed_and_back() {
    let mut cluster = Etcd::cluster(3);
    let all: Vec<&Etcd> = cluster.iter().collect();
    let _servers = backends(3, Some(&endpoints(&all)));
    let c = client(&all, retry_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let mut late = Vec::new();
    let report = under_load("etcd-member-killed", &c, CALL_TIMEOUT, || {
        sleep_ms(1000);
        let mut leader = None;
        assert!(
            eventually(Duration::from_secs(10), || {
                leader = cluster.iter().position(Etcd::is_leader);
                leader.is_some()
            }),
            "no etcd leader"
        );
        let leader = leader.expect("found above");
        cluster[leader].kill();
        let live: Vec<&Etcd> = cluster
            .iter()
            .filter(|m| m.name != cluster[leader].name)
            .collect();
        // Registering needs a leader: wait for the survivors to elect one.
        assert!(
            eventually(Duration::from_secs(15), || live
                .iter()
                .any(|m| m.is_leader())),
            "the surviving etcd members elected no leader"
        );
        let s3 = backend("s3", Some(&endpoints(&live)));
        assert!(
            eventually(Duration::from_secs(15), || ready(&c, &s3.addr)),
            "a backend registered while the leader was down was not found: {}",
            c.stats()
        );
        late.push(s3);
        cluster[leader].restart();
        sleep_ms(500);
    });
    report.check();
    report.assert_served_by("s3");
}

/// (5) The history is compacted under a watch: once while the watch is live, and once while
/// the client's only etcd member is down and the instance set changes, so that the client
/// resumes its watch from a compacted revision when the member returns, and must list again.
#[test]
fn etcd_compacted_during_watch() {
    let mut cluster = Etcd::cluster(3);
    let servers = backends(4, None);
    cluster[0].put_instance("svc", &servers[0].addr, 1.0);
    cluster[0].put_instance("svc", &servers[1].addr, 1.0);
    cluster[0].put_instance("svc", &servers[2].addr, 1.0);
    let c = client(&[&cluster[0]], retry_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let report = under_load("etcd-compacted", &c, CALL_TIMEOUT, || {
        sleep_ms(500);
        cluster[0].compact();
        sleep_ms(500);
        cluster[0].kill();
        cluster[1].delete(&format!("svc/{}", servers[0].addr));
        cluster[1].put_instance("svc", &servers[3].addr, 1.0);
        cluster[1].compact();
        cluster[0].restart();
        let mut want: Vec<String> = servers[1..].iter().map(|s| s.addr.clone()).collect();
        want.sort();
        assert!(
            eventually(Duration::from_secs(15), || {
                let mut have: Vec<String> = instances(&c)
                    .iter()
                    .map(|i| i["address"].as_str().unwrap_or_default().to_string())
                    .collect();
                have.sort();
                have == want && ready(&c, &servers[3].addr)
            }),
            "the instance set did not converge after compaction: {}",
            c.stats()
        );
    });
    report.check();
    report.assert_served_by("s3");
}

/// (6) etcd is not running when the client starts, and comes up some 1.5 s later. Calls made
/// meanwhile wait for an instance (waitForReady, within their deadline) instead of failing.
#[test]
fn etcd_unreachable_at_connect() {
    let mut etcd = Etcd::not_started();
    let servers = backends(3, None);
    let mut config = retry_config();
    config["methodConfig"][0]["waitForReady"] = json!(true);
    config["methodConfig"][0]["timeout"] = json!("10s");
    let c = client(&[&etcd], config);
    let report = under_load(
        "etcd-unreachable-at-connect",
        &c,
        Duration::from_secs(10),
        || {
            assert!(
                eventually(Duration::from_secs(5), || !c.stats()["resolver_error"]
                    .is_null()),
                "the unreachable etcd went unnoticed: {}",
                c.stats()
            );
            sleep_ms(1500);
            assert!(instances(&c).is_empty(), "{}", c.stats());
            etcd.launch();
            for s in &servers {
                etcd.put_instance("svc", &s.addr, 1.0);
            }
            assert!(wait_ready(&c, 3, Duration::from_secs(15)), "{}", c.stats());
        },
    );
    report.check();
    assert_eq!(report.by_server.len(), 3, "{:?}", report.by_server);
}

/// (7) One backend sits behind a proxy that resets every connection through it (RST) every
/// 200 ms, with calls in flight on them. A call whose connection is reset before it answered
/// has shown the caller nothing: the retry policy carries it to another instance.
#[test]
fn resets_mid_call() {
    let etcd = Etcd::start();
    let _servers = backends(2, Some(&etcd.endpoint));
    let hidden = backend("s2", None);
    let proxy = net::ResetProxy::start(&hidden.addr, Duration::from_millis(200));
    etcd.put_instance("svc", &proxy.addr, 1.0);
    let c = client(&[&etcd], retry_config());
    assert!(wait_ready(&c, 3, Duration::from_secs(10)), "{}", c.stats());
    let report = under_load("resets-mid-call", &c, CALL_TIMEOUT, || sleep_ms(4000));
    report.check();
    assert!(proxy.resets() > 0, "the proxy reset nothing");
    assert!(
        report.stats["retries"].as_u64() > Some(0),
        "no call was hit by a reset: {}",
        report.stats
    );
    report.assert_served_by("s2");
}
