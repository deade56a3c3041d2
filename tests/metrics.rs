//! Issue 21: the client's metrics (`Client::metrics_text`, `gf_client_metrics`): exact values
//! for a scripted scenario against real gf-testservers.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use grpc_failover::{CallOptions, Client};
use serde_json::json;

/// Sample lines of the text format: "name{labels}" -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("a sample line: name value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// pick_first over [bad, good] with one retry on UNAVAILABLE: every call's first attempt goes
/// to `bad` (UNAVAILABLE) and its retry to `good` (OK), so each count is known exactly.
#[test]
fn a_scripted_scenario_gives_exact_counts() {
    let bad = TestServer::start("bad", &["--fail-rate", "1", "--fail-code", "14"]);
    let good = TestServer::start("good", &[]);
    let target = format!("static:///{},{}", bad.addr, good.addr);
    let opts = json!({
        "service_config": {
            "loadBalancingConfig": [{"pick_first": {}}],
            "methodConfig": [{"name": [{"service": "test.Svc"}], "retryPolicy": {
                "maxAttempts": 2, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
                "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]
        },
        "metrics": {"methods": ["test.Svc/Echo"]}
    });
    let c = Client::connect(&target, options(&opts.to_string())).unwrap();
    assert!(wait_ready(&c, 2, Duration::from_secs(20)));
    const ECHOES: u64 = 12;
    const WHOAMIS: u64 = 5;
    for i in 0..ECHOES {
        let body = Bytes::from(vec![b'x'; 100 + i as usize]);
        let got = block_on(c.invoke("/test.Svc/Echo", body.clone(), &CallOptions::default()));
        assert_eq!(got.unwrap(), body);
    }
    for _ in 0..WHOAMIS {
        let got = block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &CallOptions::default()));
        assert_eq!(got.unwrap(), Bytes::from_static(b"good"));
    }
    let text = c.metrics_text();
    let s = samples(&text);
    let t = format!("grpc_target=\"{target}\"");
    let get = |k: String| {
        *s.get(&k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };

    for (method, n) in [("test.Svc/Echo", ECHOES), ("other", WHOAMIS)] {
        let m = format!("grpc_method=\"{method}\"");
        assert_eq!(
            get(format!("grpc_client_attempt_started_total{{{m},{t}}}")),
            (2 * n) as f64,
            "{method}"
        );
        for (status, count) in [("UNAVAILABLE", n), ("OK", n)] {
            let l = format!("{m},grpc_status=\"{status}\",{t}");
            assert_eq!(
                get(format!("grpc_client_attempt_duration_seconds_count{{{l}}}")),
                count as f64
            );
            assert_eq!(
                get(format!(
                    "grpc_client_attempt_duration_seconds_bucket{{{l},le=\"+Inf\"}}"
                )),
                count as f64
            );
        }
        let ok = format!("{m},grpc_status=\"OK\",{t}");
        assert_eq!(
            get(format!("grpc_client_call_duration_seconds_count{{{ok}}}")),
            n as f64
        );
        // No call ended UNAVAILABLE: every one was retried.
        let unavailable = format!("{m},grpc_status=\"UNAVAILABLE\",{t}");
        assert!(!s.contains_key(&format!(
            "grpc_client_call_duration_seconds_count{{{unavailable}}}"
        )));
    }
    // The echoes sent 100..111 bytes and got as many back: all in the (0, 1024] bucket.
    let ok = format!("grpc_method=\"test.Svc/Echo\",grpc_status=\"OK\",{t}");
    let sent_sum: u64 = (0..ECHOES).map(|i| 100 + i).sum();
    for dir in ["sent", "rcvd"] {
        let name = format!("grpc_client_attempt_{dir}_total_compressed_message_size_bytes");
        assert_eq!(get(format!("{name}_bucket{{{ok},le=\"0\"}}")), 0.0);
        assert_eq!(
            get(format!("{name}_bucket{{{ok},le=\"1024\"}}")),
            ECHOES as f64
        );
        assert_eq!(get(format!("{name}_sum{{{ok}}}")), sent_sum as f64);
    }
    // Histogram buckets are cumulative and end at the count.
    let call = format!("grpc_client_call_duration_seconds_bucket{{{ok},le=");
    let mut last = 0.0;
    for line in text.lines().filter(|l| l.starts_with(&call)) {
        let v: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(v >= last, "{line}");
        last = v;
    }
    assert_eq!(last, ECHOES as f64);

    let calls = ECHOES + WHOAMIS;
    for (name, want) in [
        ("calls", calls),
        ("calls_failed", 0),
        ("attempts", 2 * calls),
        ("retries", calls),
        ("transparent_retries", 0),
        ("hedges", 0),
        ("hedges_won", 0),
        ("throttled_retries", 0),
    ] {
        assert_eq!(
            get(format!("grpc_failover_{name}_total{{{t}}}")),
            want as f64,
            "{name}"
        );
    }
    assert_eq!(
        get(format!(
            "grpc_failover_retries_by_reason_total{{{t},reason=\"UNAVAILABLE\"}}"
        )),
        calls as f64
    );
    for (addr, picks, failures) in [(&bad.addr, calls, calls), (&good.addr, calls, 0)] {
        let l = format!("{t},instance=\"{addr}\"");
        assert_eq!(
            get(format!("grpc_failover_instance_picks_total{{{l}}}")),
            picks as f64
        );
        assert_eq!(
            get(format!("grpc_failover_instance_failures_total{{{l}}}")),
            failures as f64
        );
        assert_eq!(get(format!("grpc_failover_instance_in_flight{{{l}}}")), 0.0);
        assert_eq!(
            get(format!(
                "grpc_failover_instance_connection_state{{{l},state=\"READY\"}}"
            )),
            1.0
        );
    }
}

/// `metrics.enabled: false` drops the A66 families (the library's own counters stay); bad
/// `metrics` options are refused naming the field.
#[test]
fn metrics_can_be_turned_off_and_bad_options_are_refused() {
    let good = TestServer::start("good", &[]);
    let target = format!("static:///{}", good.addr);
    let off = json!({"metrics": {"enabled": false}}).to_string();
    let c = Client::connect(&target, options(&off)).unwrap();
    block_on(c.invoke("/test.Svc/Echo", Bytes::new(), &CallOptions::default())).unwrap();
    let text = c.metrics_text();
    assert!(!text.contains("grpc_client_"), "{text}");
    assert!(text.contains(&format!(
        "grpc_failover_calls_total{{grpc_target=\"{target}\"}} 1"
    )));
    for (bad, field) in [
        (json!({"metrics": []}), "metrics"),
        (json!({"metrics": {"enabled": 1}}), "metrics.enabled"),
        (json!({"metrics": {"methods": "a/b"}}), "metrics.methods"),
        (json!({"metrics": {"methods": [5]}}), "metrics.methods"),
        (
            json!({"metrics": {"methods": ["nomethod"]}}),
            "metrics.methods",
        ),
    ] {
        let err = grpc_failover::Options::from_json(Some(&bad.to_string())).unwrap_err();
        assert!(err.message.contains(field), "{bad}: {}", err.message);
    }
}

/// Hedging over [slow, fast]: the first attempt goes to the slow instance, the hedge sent after
/// hedgingDelay to the fast one wins; each call counts one hedge sent and one won.
#[test]
fn a_won_hedge_is_counted() {
    let slow = TestServer::start("slow", &["--delay-ms", "2000"]);
    let fast = TestServer::start("fast", &[]);
    let target = format!("static:///{},{}", slow.addr, fast.addr);
    let opts = json!({
        "service_config": {
            "loadBalancingConfig": [{"pick_first": {}}],
            "methodConfig": [{"name": [{"service": "test.Svc"}], "hedgingPolicy": {
                "maxAttempts": 2, "hedgingDelay": "0.05s", "nonFatalStatusCodes": []}}]
        }
    });
    let c = Client::connect(&target, options(&opts.to_string())).unwrap();
    assert!(wait_ready(&c, 2, Duration::from_secs(20)));
    const CALLS: u64 = 3;
    for _ in 0..CALLS {
        let got = block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &CallOptions::default()));
        assert_eq!(got.unwrap(), Bytes::from_static(b"fast"));
    }
    let text = c.metrics_text();
    let s = samples(&text);
    let t = format!("grpc_target=\"{target}\"");
    for (name, want) in [("hedges", CALLS), ("hedges_won", CALLS), ("retries", 0)] {
        let k = format!("grpc_failover_{name}_total{{{t}}}");
        assert_eq!(s.get(&k).copied(), Some(want as f64), "{k} in\n{text}");
    }
    let ok = format!("grpc_method=\"other\",grpc_status=\"OK\",{t}");
    let k = format!("grpc_client_call_duration_seconds_count{{{ok}}}");
    assert_eq!(s.get(&k).copied(), Some(CALLS as f64), "{k} in\n{text}");
}

/// Whether a call's response says it was the call's second attempt (gf-testserver echoes
/// `grpc-previous-rpc-attempts` as `x-gf-previous-rpc-attempts`).
fn was_retried(r: &grpc_failover::CallResult) -> bool {
    r.headers
        .iter()
        .chain(r.trailers.iter())
        .any(|(k, v)| k == "x-gf-previous-rpc-attempts" && v.as_ref() == b"1")
}

/// The issue's scenario on one client: calls retried after UNAVAILABLE, one hedge won, one
/// outlier ejection. pick_first over [bad, good] under outlier detection: until `bad` is
/// ejected, each Echo goes to it first and is retried on `good`; the one hedged call's first
/// attempt fails on `bad` (non-fatal), so its hedge wins on `good`. The test knows which calls
/// were retried from the servers' answers, and every count follows from those.
#[test]
fn retries_a_won_hedge_and_an_ejection_count_exactly() {
    let bad = TestServer::start("bad", &["--fail-rate", "1", "--fail-code", "14"]);
    let good = TestServer::start("good", &[]);
    let target = format!("static:///{},{}", bad.addr, good.addr);
    let opts = json!({
        "service_config": {
            "loadBalancingConfig": [{"outlier_detection": {
                "interval": "0.1s", "baseEjectionTime": "300s", "maxEjectionTime": "300s",
                "maxEjectionPercent": 50,
                "failurePercentageEjection": {"threshold": 50, "enforcementPercentage": 100,
                    "minimumHosts": 1, "requestVolume": 3},
                "childPolicy": [{"pick_first": {}}]}}],
            "methodConfig": [
                {"name": [{"service": "test.Retry"}], "retryPolicy": {
                    "maxAttempts": 2, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
                    "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]}},
                {"name": [{"service": "test.Hedge"}], "hedgingPolicy": {
                    "maxAttempts": 2, "hedgingDelay": "10s",
                    "nonFatalStatusCodes": ["UNAVAILABLE"]}}]
        },
        "metrics": {"methods": ["test.Retry/Echo"]}
    });
    let c = Client::connect(&target, options(&opts.to_string())).unwrap();
    assert!(wait_ready(&c, 2, Duration::from_secs(20)));
    // First, while `bad` has had no traffic (so cannot be ejected yet): the hedged call.
    let r = block_on(c.invoke_full("/test.Hedge/Whoami", Bytes::new(), &CallOptions::default()));
    assert_eq!(r.response, Bytes::from_static(b"good"), "{:?}", r.status);
    // Then retried calls until `bad` is ejected, and as many after.
    let echo = |c: &Client| -> bool {
        let r = block_on(c.invoke_full(
            "/test.Retry/Echo",
            Bytes::from_static(b"ping"),
            &CallOptions::default(),
        ));
        assert_eq!(r.response, Bytes::from_static(b"ping"), "{:?}", r.status);
        was_retried(&r)
    };
    let (mut echoes, mut retried) = (0u64, 0u64);
    assert!(eventually(Duration::from_secs(20), || {
        echoes += 1;
        retried += u64::from(echo(&c));
        instance(&c, &bad.addr)["ejected"] == true
    }));
    for _ in 0..10 {
        echoes += 1;
        assert!(!echo(&c), "a call went to the ejected instance");
    }
    // The hedged call's failed first attempt on `bad` may fall in the same interval as the
    // retried echoes and count towards the three.
    assert!(
        retried + 1 >= 3,
        "the ejection needs requestVolume attempts: {retried}"
    );

    let text = c.metrics_text();
    let s = samples(&text);
    let t = format!("grpc_target=\"{target}\"");
    let get = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    let calls = echoes + 1;
    for (name, want) in [
        ("calls", calls),
        ("calls_failed", 0),
        ("attempts", echoes + retried + 2),
        ("retries", retried),
        ("transparent_retries", 0),
        ("hedges", 1),
        ("hedges_won", 1),
        ("throttled_retries", 0),
    ] {
        let k = format!("grpc_failover_{name}_total{{{t}}}");
        assert_eq!(get(&k), want as f64, "{k}");
    }
    let k = format!("grpc_failover_retries_by_reason_total{{{t},reason=\"UNAVAILABLE\"}}");
    assert_eq!(get(&k), retried as f64);
    for (addr, picks, failures, ejections, ejected) in [
        (&bad.addr, retried + 1, retried + 1, 1, 1),
        (&good.addr, echoes + 1, 0, 0, 0),
    ] {
        let l = format!("{t},instance=\"{addr}\"");
        for (name, want) in [
            ("picks_total", picks),
            ("failures_total", failures),
            ("ejections_total", ejections),
            ("unejections_total", 0),
            ("ejected", ejected),
            ("in_flight", 0),
        ] {
            let k = format!("grpc_failover_instance_{name}{{{l}}}");
            assert_eq!(get(&k), want as f64, "{k}");
        }
    }
    // A66, per method label: Echo is listed in metrics.methods, Whoami is "other".
    for (method, status, attempts, calls) in [
        ("test.Retry/Echo", "UNAVAILABLE", retried, 0),
        ("test.Retry/Echo", "OK", echoes, echoes),
        ("other", "UNAVAILABLE", 1, 0),
        ("other", "OK", 1, 1),
    ] {
        let l = format!("grpc_method=\"{method}\",grpc_status=\"{status}\",{t}");
        let k = format!("grpc_client_attempt_duration_seconds_count{{{l}}}");
        assert_eq!(get(&k), attempts as f64, "{k}");
        let k = format!("grpc_client_call_duration_seconds_count{{{l}}}");
        assert_eq!(s.get(&k).copied().unwrap_or(0.0), calls as f64, "{k}");
    }
    for (method, started) in [("test.Retry/Echo", echoes + retried), ("other", 2)] {
        let k = format!("grpc_client_attempt_started_total{{grpc_method=\"{method}\",{t}}}");
        assert_eq!(get(&k), started as f64, "{k}");
    }
    // Every call once in the call-duration histograms.
    let total: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("grpc_client_call_duration_seconds_count{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, calls as f64);
    // The connections: one each, both open; pick_first's A78 names carry the same counts.
    for prefix in ["grpc_subchannel", "grpc_lb_pick_first"] {
        for (name, want) in [
            ("connection_attempts_succeeded", 2),
            ("connection_attempts_failed", 0),
            ("disconnections", 0),
        ] {
            let k = format!("{prefix}_{name}_total{{{t}}}");
            assert_eq!(get(&k), want as f64, "{k}");
        }
    }
    assert_eq!(
        get(&format!("grpc_subchannel_open_connections{{{t}}}")),
        2.0
    );
    assert!(!text.contains("grpc_lb_wrr_"), "not a WRR client");
    assert!(!text.contains("grpc_failover_etcd_"), "not an etcd target");
}

/// A66 counts message bytes as they went over the wire: a gzip request and a gzip response
/// of 100 KB of one letter are a few hundred bytes each.
#[test]
fn message_sizes_are_the_compressed_sizes() {
    let server = TestServer::start("gz", &["--compress"]);
    let target = format!("static:///{}", server.addr);
    let c = Client::connect(&target, options(r#"{"compression": "gzip"}"#)).unwrap();
    const CALLS: u64 = 4;
    let body = Bytes::from(vec![b'a'; 100_000]);
    for _ in 0..CALLS {
        let got = block_on(c.invoke("/test.Svc/Echo", body.clone(), &CallOptions::default()));
        assert_eq!(got.unwrap(), body);
    }
    let text = c.metrics_text();
    let s = samples(&text);
    let ok = format!("grpc_method=\"other\",grpc_status=\"OK\",grpc_target=\"{target}\"");
    for dir in ["sent", "rcvd"] {
        let name = format!("grpc_client_attempt_{dir}_total_compressed_message_size_bytes");
        let k = format!("{name}_bucket{{{ok},le=\"1024\"}}");
        assert_eq!(s.get(&k).copied(), Some(CALLS as f64), "{k} in\n{text}");
        let sum = s[&format!("{name}_sum{{{ok}}}")];
        assert!(sum > 0.0 && sum < (CALLS * 1024) as f64, "{name}: {sum}");
    }
}

/// A weighted round robin client over static addresses has no registry weights: every
/// scheduler update falls back to round robin, each instance counts as not yet usable, and
/// the weights histogram records them at 0 (A78).
#[test]
fn wrr_without_weights_counts_round_robin_fallbacks() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let target = format!("static:///{},{}", a.addr, b.addr);
    let opts = r#"{"service_config": {"loadBalancingConfig": [{"weighted_round_robin": {}}]}}"#;
    let c = Client::connect(&target, options(opts)).unwrap();
    assert!(wait_ready(&c, 2, Duration::from_secs(20)));
    let text = c.metrics_text();
    let s = samples(&text);
    let t = format!("grpc_target=\"{target}\"");
    let updates = s[&format!("grpc_lb_wrr_rr_fallback_total{{{t}}}")];
    assert!(updates >= 1.0, "{text}");
    let unusable = s[&format!("grpc_lb_wrr_endpoint_weight_not_yet_usable_total{{{t}}}")];
    let weights = s[&format!("grpc_lb_wrr_endpoint_weights_count{{{t}}}")];
    let at_zero = s[&format!("grpc_lb_wrr_endpoint_weights_bucket{{{t},le=\"0\"}}")];
    assert_eq!(unusable, weights);
    assert_eq!(at_zero, weights);
    assert_eq!(
        s[&format!("grpc_lb_wrr_endpoint_weight_stale_total{{{t}}}")],
        0.0
    );
    assert_eq!(c.stats()["wrr"]["rr_fallback"].as_f64(), Some(updates));
}
