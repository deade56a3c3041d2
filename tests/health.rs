//! Instance health (issue 5): gRFC A17 health checks, gRFC A50 outlier ejection, in-flight limits.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use grpc_failover::{CallOptions, Client, Code};

fn set_serving(addr: &str, status: &str) {
    let c = Client::connect(&format!("static:///{addr}"), options("{}")).unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    block_on(c.invoke(
        "/gf.test.Control/SetServing",
        Bytes::from(status.to_string()),
        &opts,
    ))
    .unwrap();
}

fn instance<'a>(stats: &'a serde_json::Value, addr: &str) -> &'a serde_json::Value {
    stats["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == addr)
        .expect("instance in stats")
}

const HEALTH_RR: &str = r#"{"service_config": {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}}"#;

#[test]
fn not_serving_instance_stops_getting_calls_and_comes_back() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let c = Client::connect(
        &format!("static:///{},{}", a.addr, b.addr),
        options(HEALTH_RR),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || spread(&c, 4).len() == 2));
    set_serving(&a.addr, "NOT_SERVING");
    assert!(eventually(Duration::from_secs(5), || instance(
        &c.stats(),
        &a.addr
    )["healthy"]
        == false));
    let only_b = spread(&c, 40);
    assert_eq!(only_b.get("b"), Some(&40), "{only_b:?}");
    set_serving(&a.addr, "SERVING");
    assert!(eventually(Duration::from_secs(5), || instance(
        &c.stats(),
        &a.addr
    )["healthy"]
        == true));
    let both = spread(&c, 40);
    assert_eq!(
        (both.get("a"), both.get("b")),
        (Some(&20), Some(&20)),
        "{both:?}"
    );
    // Two changes of a's health (to NOT_SERVING and back), none of b's.
    let stats = c.stats();
    assert_eq!(instance(&stats, &a.addr)["health_changes"], 2, "{stats}");
    assert_eq!(instance(&stats, &b.addr)["health_changes"], 0, "{stats}");
    let text = c.metrics_text();
    let line = format!(
        "grpc_failover_instance_health_changes_total{{grpc_target=\"static:///{},{}\",instance=\"{}\"}} 2",
        a.addr, b.addr, a.addr
    );
    assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
}

#[test]
fn server_without_health_service_stays_in_rotation() {
    let a = TestServer::start("a", &["--no-health"]);
    let b = TestServer::start("b", &[]);
    let c = Client::connect(
        &format!("static:///{},{}", a.addr, b.addr),
        options(HEALTH_RR),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || spread(&c, 4).len() == 2));
    let counts = spread(&c, 40);
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&20), Some(&20)),
        "{counts:?}"
    );
    assert_eq!(instance(&c.stats(), &a.addr)["healthy"], true);
}

#[test]
fn pick_first_ignores_health_checks() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    set_serving(&a.addr, "NOT_SERVING");
    let opts = r#"{"service_config": {"loadBalancingConfig": [{"pick_first": {}}], "healthCheckConfig": {"serviceName": ""}}}"#;
    let c = Client::connect(&format!("static:///{},{}", a.addr, b.addr), options(opts)).unwrap();
    assert_eq!(spread(&c, 10).get("a"), Some(&10));
}

fn outlier_options(max_percent: u32, base_ms: u32) -> String {
    format!(
        r#"{{"service_config": {{
            "loadBalancingConfig": [{{"outlier_detection": {{
                "interval": "0.2s", "baseEjectionTime": "{}s", "maxEjectionTime": "30s",
                "maxEjectionPercent": {max_percent},
                "failurePercentageEjection": {{"threshold": 50, "enforcementPercentage": 100, "minimumHosts": 1, "requestVolume": 5}},
                "childPolicy": [{{"round_robin": {{}}}}]}}}}],
            "methodConfig": [{{"name": [{{"service": "UserService"}}], "retryPolicy": {{"maxAttempts": 4, "initialBackoff": "0.01s",
                "maxBackoff": "0.1s", "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}}}}]}}}}"#,
        base_ms as f64 / 1000.0
    )
}

fn user_whoami(c: &Client) -> Result<String, grpc_failover::Status> {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    block_on(c.invoke("/UserService/Whoami", Bytes::new(), &opts))
        .map(|b| String::from_utf8_lossy(&b).to_string())
}

#[test]
fn failing_instance_is_ejected_and_callers_see_no_errors() {
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let g1 = TestServer::start("g1", &[]);
    let g2 = TestServer::start("g2", &[]);
    let c = Client::connect(
        &format!("static:///{},{},{}", bad.addr, g1.addr, g2.addr),
        options(&outlier_options(50, 5000)),
    )
    .unwrap();
    for _ in 0..300 {
        user_whoami(&c).expect("callers see no errors");
    }
    let stats = c.stats();
    assert_eq!(instance(&stats, &bad.addr)["ejected"], true, "{stats}");
    let before = instance(&stats, &bad.addr)["calls"].as_u64().unwrap();
    for _ in 0..300 {
        user_whoami(&c).expect("callers see no errors");
    }
    let after = instance(&c.stats(), &bad.addr)["calls"].as_u64().unwrap();
    assert_eq!(before, after, "an ejected instance got attempts");
    assert_eq!(c.stats()["calls_failed"], 0);
}

#[test]
fn repeat_offender_is_ejected_for_longer() {
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let good = TestServer::start("good", &[]);
    let c = Client::connect(
        &format!("static:///{},{}", bad.addr, good.addr),
        options(&outlier_options(50, 600)),
    )
    .unwrap();
    let mut durations = Vec::new();
    for _ in 0..2 {
        // Drive traffic until the instance is ejected, then note for how long.
        assert!(eventually(Duration::from_secs(10), || {
            for _ in 0..20 {
                let _ = user_whoami(&c);
            }
            instance(&c.stats(), &bad.addr)["ejected"] == true
        }));
        let until = instance(&c.stats(), &bad.addr)["ejected_until_ms"]
            .as_u64()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        durations.push(until.saturating_sub(now));
        assert!(eventually(Duration::from_secs(10), || instance(
            &c.stats(),
            &bad.addr
        )["ejected"]
            == false));
    }
    assert!(durations[1] > durations[0] + 200, "{durations:?}");
    assert_eq!(instance(&c.stats(), &bad.addr)["ejections"], 2);
    // An ejection ends by time (the picker lets the instance back at ejected_until); the
    // un-ejection is counted by the next outlier sweep, up to one interval later.
    assert!(eventually(Duration::from_secs(5), || instance(
        &c.stats(),
        &bad.addr
    )["unejections"]
        == 2));
    assert_eq!(instance(&c.stats(), &bad.addr)["ejections"], 2);
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let servers: Vec<TestServer> = (0..3)
        .map(|i| TestServer::start(&format!("b{i}"), &["--fail-rate", "1"]))
        .collect();
    let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
    let c = Client::connect(
        &format!("static:///{}", addrs.join(",")),
        options(&outlier_options(34, 30_000)),
    )
    .unwrap();
    // Enough attempts per 0.2 s interval to pass requestVolume on every instance.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + Duration::from_millis(1500);
                while std::time::Instant::now() < until {
                    let _ = user_whoami(&c);
                }
            })
        })
        .collect();
    for t in callers {
        t.join().unwrap();
    }
    let stats = c.stats();
    let ejected = stats["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ejected"] == true)
        .count();
    assert_eq!(ejected, 1, "{stats}");
}

#[test]
fn in_flight_limit_fails_fast_with_resource_exhausted() {
    let a = TestServer::start("a", &["--delay-ms", "500"]);
    let b = TestServer::start("b", &["--delay-ms", "500"]);
    let opts = r#"{"max_in_flight_per_instance": 4, "service_config": {"loadBalancingConfig": [{"round_robin": {}}]}}"#;
    let c = Client::connect(&format!("static:///{},{}", a.addr, b.addr), options(opts)).unwrap();
    assert!(eventually(Duration::from_secs(5), || c.stats()
        ["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "READY")));
    let ok = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (c, ok, exhausted, max_seen) =
                (c.clone(), ok.clone(), exhausted.clone(), max_seen.clone());
            std::thread::spawn(move || match whoami(&c, 5000) {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    assert_eq!(e.code, Code::ResourceExhausted, "{e}");
                    let in_flight: u64 = c.stats()["instances"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i["in_flight"].as_u64().unwrap())
                        .sum();
                    max_seen.fetch_max(in_flight as usize, Ordering::Relaxed);
                    exhausted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (ok, exhausted) = (
        ok.load(Ordering::Relaxed),
        exhausted.load(Ordering::Relaxed),
    );
    assert_eq!(ok + exhausted, 64);
    assert!(ok >= 8, "at least the 8 slots were used: {ok}");
    assert!(exhausted > 0, "the limit never applied");
    assert!(
        max_seen.load(Ordering::Relaxed) <= 8,
        "more than 4 in flight per instance"
    );
}

#[test]
fn first_call_waits_for_the_first_health_answer() {
    // gRFC A17: a new connection is CONNECTING until its first health answer, so a call made
    // right after connect waits for it instead of failing.
    let a = TestServer::start("a", &[]);
    for _ in 0..5 {
        let c = Client::connect(&format!("static:///{}", a.addr), options(HEALTH_RR)).unwrap();
        assert_eq!(whoami(&c, 5000).unwrap(), "a");
        c.close();
    }
}
