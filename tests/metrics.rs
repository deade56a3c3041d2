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
