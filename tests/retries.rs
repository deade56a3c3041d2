//! Issue 6: gRFC A6 retries, hedging and throttling, and the other method-config knobs
//! (timeout, waitForReady, message limits), one rule per test, against real gf-testservers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use grpc_failover::{CallOptions, Client, Code, Status};
use serde_json::{json, Value};

/// The reference config of the issue.
fn reference_config() -> Value {
    json!({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": "UserService"}],
            "retryPolicy": {
                "maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]
            }
        }]
    })
}

/// A config whose only method config is `retry` for every method of `test.Svc`.
fn retry_config(retry: Value) -> Value {
    json!({"methodConfig": [{"name": [{"service": "test.Svc"}], "retryPolicy": retry}]})
}

fn retry_policy(max_attempts: u32) -> Value {
    json!({
        "maxAttempts": max_attempts, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
        "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]
    })
}

fn hedging_config(hedging: Value) -> Value {
    json!({"methodConfig": [{"name": [{"service": "test.Svc"}], "hedgingPolicy": hedging}]})
}

/// A client on `static:///` over `servers`, with `extra` merged into the options.
fn client_with(servers: &[&TestServer], service_config: Value, extra: Value) -> Client {
    let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
    let mut opts = json!({
        "service_config": service_config,
        "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 1000}
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut opts, extra) {
        o.extend(e);
    }
    Client::connect(
        &format!("static:///{}", addrs.join(",")),
        options(&opts.to_string()),
    )
    .unwrap()
}

fn client(servers: &[&TestServer], service_config: Value) -> Client {
    client_with(servers, service_config, json!({}))
}

fn call(c: &Client, method: &str, body: &[u8], timeout_ms: u64) -> Result<Bytes, Status> {
    let opts = CallOptions {
        timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
        ..Default::default()
    };
    block_on(c.invoke(method, Bytes::copy_from_slice(body), &opts))
}

/// A client-wide counter from `Client::stats()`.
fn stat(c: &Client, key: &str) -> u64 {
    c.stats()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have no {key}: {}", c.stats()))
}

#[track_caller]
fn assert_ready(c: &Client, n: usize) {
    assert!(
        wait_ready(c, n, Duration::from_secs(10)),
        "{n} instances never became READY: {}",
        c.stats()
    );
}

// ---- retries ------------------------------------------------------------------------------------

#[test]
fn reference_config_hides_an_always_unavailable_instance_over_1000_calls() {
    let a = TestServer::start("a", &[]);
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let b = TestServer::start("b", &[]);
    let c = client(&[&a, &bad, &b], reference_config());
    assert_ready(&c, 3);
    let errors: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..250)
                        .filter_map(|_| call(&c, "/UserService/Whoami", b"", 5000).err())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        errors.is_empty(),
        "{} of 1000 calls failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(stat(&c, "calls"), 1000);
    assert_eq!(stat(&c, "calls_failed"), 0);
    // The failing instance did take first attempts, and every one of them was retried.
    let failed_attempts = instance(&c, &bad.addr)["failures"].as_u64().unwrap();
    assert!(failed_attempts > 100, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), failed_attempts, "{}", c.stats());
}

#[test]
fn reference_config_hides_an_instance_killed_under_load() {
    let a = TestServer::start("a", &[]);
    let mut victim = TestServer::start("victim", &[]);
    let b = TestServer::start("b", &[]);
    let c = client(&[&a, &victim, &b], reference_config());
    assert_ready(&c, 3);
    let killed = AtomicBool::new(false);
    let (calls, errors) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut errors = Vec::new();
                    let mut calls = 0;
                    let mut after_kill = 0;
                    while after_kill < 300 {
                        if let Err(e) = call(&c, "/UserService/Whoami", b"", 5000) {
                            errors.push(e.to_string());
                        }
                        calls += 1;
                        if killed.load(Ordering::Acquire) {
                            after_kill += 1;
                        }
                    }
                    (calls, errors)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        victim.kill();
        killed.store(true, Ordering::Release);
        workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new()),
            |(n, mut all), (calls, errors)| {
                all.extend(errors);
                (n + calls, all)
            },
        )
    });
    assert!(
        errors.is_empty(),
        "{} of {calls} calls failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(instance(&c, &victim.addr)["calls"].as_u64().unwrap() > 0);
}

#[test]
fn a_non_retryable_code_is_returned_after_one_attempt() {
    let nf = TestServer::start("nf", &["--fail-rate", "1", "--fail-code", "5"]);
    let ok = TestServer::start("ok", &[]);
    let c = client(
        &[&nf, &ok],
        json!({
            "methodConfig": [{"name": [{"service": "test.Svc"}], "retryPolicy": retry_policy(5)}]
        }),
    );
    assert_ready(&c, 2);
    // pick_first: every call goes to nf first; NOT_FOUND is not retryable, so ok never sees one.
    for _ in 0..5 {
        let err = call(&c, "/test.Svc/Whoami", b"", 2000).unwrap_err();
        assert_eq!(err.code, Code::NotFound, "{err}");
    }
    assert_eq!(stat(&c, "attempts"), 5, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), 0, "{}", c.stats());
    assert_eq!(instance(&c, &ok.addr)["calls"], 0, "{}", c.stats());
}

/// Attempts per call on an always-UNAVAILABLE instance.
fn attempts_per_call(config_max_attempts: u32, extra_options: Value) -> u64 {
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let c = client_with(
        &[&bad],
        retry_config(retry_policy(config_max_attempts)),
        extra_options,
    );
    assert_ready(&c, 1);
    for _ in 0..3 {
        let err = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");
        assert!(
            err.message.contains("injected failure"),
            "the last attempt's error comes back: {err}"
        );
    }
    let attempts = stat(&c, "attempts");
    assert_eq!(attempts % 3, 0, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), attempts - 3, "{}", c.stats());
    attempts / 3
}

#[test]
fn max_attempts_is_honoured() {
    assert_eq!(attempts_per_call(2, json!({})), 2);
    assert_eq!(attempts_per_call(3, json!({})), 3);
}

#[test]
fn max_attempts_above_5_is_capped_at_5() {
    assert_eq!(attempts_per_call(10, json!({})), 5);
}

#[test]
fn the_max_attempts_option_changes_the_cap() {
    assert_eq!(attempts_per_call(4, json!({"max_attempts": 2})), 2);
    assert_eq!(attempts_per_call(10, json!({"max_attempts": 7})), 7);
}

#[test]
fn a_backoff_past_the_deadline_ends_the_retries_with_the_last_error() {
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let c = client(
        &[&bad],
        retry_config(json!({
            "maxAttempts": 5, "initialBackoff": "5s", "maxBackoff": "5s",
            "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]
        })),
    );
    assert_ready(&c, 1);
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 500).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err.code, Code::Unavailable | Code::DeadlineExceeded),
        "{err}"
    );
    // The next backoff (4 s or more) would outlive the 500 ms deadline.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(stat(&c, "attempts"), 1, "{}", c.stats());
}

#[test]
fn the_deadline_cuts_retries_short() {
    // Each attempt takes 500 ms and fails; five of them would take 2.5 s.
    let slow = TestServer::start("slow", &["--fail-rate", "1", "--delay-ms", "500"]);
    let c = client(&[&slow], retry_config(retry_policy(5)));
    assert_ready(&c, 1);
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 800).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err.code, Code::DeadlineExceeded | Code::Unavailable),
        "{err}"
    );
    assert!(elapsed >= Duration::from_millis(500), "took {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2000),
        "retries ran past the deadline: {elapsed:?}"
    );
    assert!(stat(&c, "attempts") <= 2, "{}", c.stats());
}

#[test]
fn server_pushback_sets_the_retry_delay() {
    let bad = TestServer::start("bad", &["--fail-rate", "1", "--pushback-ms", "300"]);
    let c = client(&[&bad], retry_config(retry_policy(3)));
    assert_ready(&c, 1);
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 10_000).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert_eq!(stat(&c, "attempts"), 3, "{}", c.stats());
    // Two waits of 300 ms instead of the policy's 10-50 ms backoff.
    assert!(
        elapsed >= Duration::from_millis(600),
        "retried after {elapsed:?}"
    );
}

#[test]
fn negative_pushback_stops_retrying() {
    let bad = TestServer::start("bad", &["--fail-rate", "1", "--pushback-ms", "-1"]);
    let ok = TestServer::start("ok", &[]);
    let c = client(&[&bad, &ok], retry_config(retry_policy(4)));
    assert_ready(&c, 2);
    let err = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert_eq!(stat(&c, "attempts"), 1, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), 0, "{}", c.stats());
}

#[test]
fn retry_throttling_stops_retries_once_tokens_run_out() {
    let x = TestServer::start("x", &["--fail-rate", "1"]);
    let y = TestServer::start("y", &["--fail-rate", "1"]);
    let mut sc = retry_config(retry_policy(4));
    sc["retryThrottling"] = json!({"maxTokens": 10, "tokenRatio": 0.1});
    sc["loadBalancingConfig"] = json!([{"round_robin": {}}]);
    let c = client(&[&x, &y], sc);
    assert_ready(&c, 2);
    for _ in 0..10 {
        call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
    }
    // The first calls retried while the bucket was above half full.
    assert!(stat(&c, "retries") > 0, "{}", c.stats());
    assert!(stat(&c, "throttled_retries") > 0, "{}", c.stats());
    let before = stat(&c, "attempts");
    for _ in 0..30 {
        let err = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");
    }
    let per_call = (stat(&c, "attempts") - before) as f64 / 30.0;
    assert!(
        per_call <= 1.1,
        "{per_call} attempts per call once throttled: {}",
        c.stats()
    );
    assert_eq!(c.stats()["retry_tokens"], 0.0, "{}", c.stats());
}

#[test]
fn a_failure_after_response_headers_is_committed_and_not_retried() {
    // gf-testserver fails with Trailers-Only responses, which are never committed. A response
    // larger than maxResponseMessageBytes fails after the headers have arrived: committed.
    let s = TestServer::start("s", &[]);
    let c = client(
        &[&s],
        json!({"methodConfig": [{
            "name": [{"service": "test.Svc"}],
            "maxResponseMessageBytes": 10,
            "retryPolicy": {
                "maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                "backoffMultiplier": 2.0,
                "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "UNAVAILABLE"]
            }
        }]}),
    );
    assert_ready(&c, 1);
    let err = call(&c, "/test.Svc/Echo", &[1u8; 100], 5000).unwrap_err();
    // The code itself is message_size_limits_are_resource_exhausted's business; both codes
    // this could come back as are retryable here, so only the commit stops the retries.
    assert!(
        matches!(err.code, Code::ResourceExhausted | Code::OutOfRange),
        "{err}"
    );
    assert_eq!(stat(&c, "attempts"), 1, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), 0, "{}", c.stats());
}

/// A gRPC server in this process that answers every call UNAVAILABLE (Trailers-Only) and
/// records when each request arrived and its `grpc-previous-rpc-attempts` header. gf-testserver
/// only echoes `x-echo-` metadata, so it cannot show a `grpc-` header.
type Recorded = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Listens on a free loopback port (on the library's runtime) and runs `on_connection` as a task
/// for every connection accepted. Returns the address.
fn serve_loopback<F, Fut>(on_connection: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    grpc_failover::runtime_handle().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(on_connection(stream));
            }
        }
    });
    addr
}

fn recording_server() -> (String, Recorded) {
    use http_body_util::BodyExt;
    let seen: Recorded = Arc::default();
    let record = seen.clone();
    let addr = serve_loopback(move |stream| {
        let record = record.clone();
        async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let previous = req
                            .headers()
                            .get("grpc-previous-rpc-attempts")
                            .map(|v| v.to_str().unwrap_or("?").to_string());
                        record.lock().unwrap().push((Instant::now(), previous));
                        let _ = req.into_body().collect().await;
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "14")
                            .header("grpc-message", "recorded")
                            .body(http_body_util::Empty::<Bytes>::new())
                    }
                });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    });
    (addr, seen)
}

#[test]
fn retries_carry_grpc_previous_rpc_attempts() {
    let (addr, seen) = recording_server();
    let opts = json!({"service_config": retry_config(retry_policy(3))}).to_string();
    let c = Client::connect(&format!("static:///{addr}"), options(&opts)).unwrap();
    let err = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert_eq!(err.message, "recorded");
    let previous: Vec<Option<String>> = seen.lock().unwrap().iter().map(|r| r.1.clone()).collect();
    assert_eq!(
        previous,
        vec![None, Some("1".to_string()), Some("2".to_string())]
    );
}

#[test]
fn retry_backoff_is_the_current_backoff_with_20_percent_jitter() {
    // The rule of this library's retry engine: the n-th retry waits
    // min(initialBackoff * multiplier^n, maxBackoff) * uniform(0.8, 1.2). With a constant
    // 100 ms backoff every gap is at least 80 ms, and the gaps differ (the jitter spreads
    // retries from many clients).
    let (addr, seen) = recording_server();
    let policy = json!({
        "maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "0.1s",
        "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]
    });
    let opts = json!({"service_config": retry_config(policy)}).to_string();
    let c = Client::connect(&format!("static:///{addr}"), options(&opts)).unwrap();
    let mut gaps = Vec::new();
    for _ in 0..5 {
        seen.lock().unwrap().clear();
        call(&c, "/test.Svc/Whoami", b"", 10_000).unwrap_err();
        let times: Vec<Instant> = seen.lock().unwrap().iter().map(|r| r.0).collect();
        assert_eq!(times.len(), 5);
        gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
    }
    let min = *gaps.iter().min().unwrap();
    let max = *gaps.iter().max().unwrap();
    assert!(
        min >= Duration::from_millis(78),
        "a retry came sooner than 0.8 x backoff: {gaps:?}"
    );
    assert!(
        max - min > Duration::from_millis(10),
        "no jitter in 20 retry delays: {gaps:?}"
    );
}

// ---- hedging ------------------------------------------------------------------------------------

fn hedging_policy() -> Value {
    json!({"maxAttempts": 3, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]})
}

#[test]
fn hedging_returns_the_fast_winner_and_cancels_the_slow_attempt() {
    let slow = TestServer::start("slow", &["--delay-ms", "1000"]);
    let fast1 = TestServer::start("fast1", &[]);
    let fast2 = TestServer::start("fast2", &[]);
    // pick_first sends the first attempt to slow; the hedge 50 ms later goes elsewhere.
    let c = client(&[&slow, &fast1, &fast2], hedging_config(hedging_policy()));
    assert_ready(&c, 3);
    let started = Instant::now();
    let who = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap();
    let elapsed = started.elapsed();
    let who = String::from_utf8_lossy(&who).to_string();
    assert!(who == "fast1" || who == "fast2", "answered by {who}");
    assert!(
        elapsed < Duration::from_millis(1000),
        "the call waited for the slow attempt: {elapsed:?}"
    );
    assert!(stat(&c, "hedges") >= 1, "{}", c.stats());
    // The slow attempt was cancelled, not left running: nothing in flight, and it never
    // completes, even after the slow server would have answered.
    assert_eq!(instance(&c, &slow.addr)["in_flight"], 0, "{}", c.stats());
    std::thread::sleep(Duration::from_millis(1300));
    let s = instance(&c, &slow.addr);
    assert_eq!(s["calls"], 0, "the slow attempt ran to completion: {s}");
    assert_eq!(s["in_flight"], 0, "{s}");
}

#[test]
fn a_fatal_code_ends_a_hedged_call_at_once() {
    let slow = TestServer::start("slow", &["--delay-ms", "1000"]);
    let fatal = TestServer::start("fatal", &["--fail-rate", "1", "--fail-code", "13"]);
    let fast = TestServer::start("fast", &[]);
    let c = client(&[&slow, &fatal, &fast], hedging_config(hedging_policy()));
    assert_ready(&c, 3);
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 5000).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code, Code::Internal, "{err}");
    assert!(
        elapsed < Duration::from_millis(1000),
        "a fatal code waited for the slow attempt: {elapsed:?}"
    );
    // No third hedge after the fatal answer.
    assert_eq!(stat(&c, "attempts"), 2, "{}", c.stats());
    assert_eq!(stat(&c, "hedges"), 1, "{}", c.stats());
    assert_eq!(instance(&c, &fast.addr)["calls"], 0, "{}", c.stats());
}

#[test]
fn a_non_fatal_code_sends_the_next_hedge_at_once_up_to_the_cap() {
    let servers: Vec<TestServer> = ["x", "y", "z"]
        .iter()
        .map(|n| TestServer::start(n, &["--fail-rate", "1"]))
        .collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let c = client(
        &refs,
        hedging_config(json!({
            "maxAttempts": 3, "hedgingDelay": "2s", "nonFatalStatusCodes": ["UNAVAILABLE"]
        })),
    );
    assert_ready(&c, 3);
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 10_000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the hedges waited for hedgingDelay after a non-fatal failure"
    );
    assert_eq!(stat(&c, "attempts"), 3, "{}", c.stats());
    // Each attempt went to a different instance.
    for s in &servers {
        assert_eq!(instance(&c, &s.addr)["calls"], 1, "{}", c.stats());
    }

    // hedgingPolicy.maxAttempts is capped like retryPolicy's.
    let c = client(
        &refs,
        hedging_config(json!({
            "maxAttempts": 10, "hedgingDelay": "0s", "nonFatalStatusCodes": ["UNAVAILABLE"]
        })),
    );
    assert_ready(&c, 3);
    call(&c, "/test.Svc/Whoami", b"", 10_000).unwrap_err();
    assert_eq!(stat(&c, "attempts"), 5, "{}", c.stats());
}

// ---- timeout, waitForReady, message limits ------------------------------------------------------

#[test]
fn the_smaller_of_the_method_timeout_and_the_callers_wins() {
    let slow = TestServer::start("slow", &["--delay-ms", "1000"]);
    let with_timeout = |t: &str| {
        client(
            &[&slow],
            json!({"methodConfig": [{"name": [{"service": "test.Svc"}], "timeout": t}]}),
        )
    };
    let short = with_timeout("0.2s");
    assert_ready(&short, 1);
    for caller_ms in [0, 10_000] {
        let started = Instant::now();
        let err = call(&short, "/test.Svc/Whoami", b"", caller_ms).unwrap_err();
        assert_eq!(
            err.code,
            Code::DeadlineExceeded,
            "caller {caller_ms}: {err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
    let long = with_timeout("10s");
    assert_ready(&long, 1);
    let started = Instant::now();
    let err = call(&long, "/test.Svc/Whoami", b"", 200).unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Both long enough: the slow answer arrives.
    assert_eq!(
        &call(&long, "/test.Svc/Whoami", b"", 5000).unwrap()[..],
        b"slow"
    );
}

#[test]
fn wait_for_ready_waits_for_an_instance_up_to_the_deadline() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let opts = json!({
        "service_config": {"methodConfig": [{"name": [{"service": "test.Svc"}], "waitForReady": true}]},
        "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 300}
    })
    .to_string();
    let c = Client::connect(&format!("static:///{addr}"), options(&opts)).unwrap();

    // Without wait-for-ready (the call option overrides the config) a call fails fast.
    let fail_fast = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        wait_for_ready: Some(false),
        ..Default::default()
    };
    let started = Instant::now();
    let err = block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &fail_fast)).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not fail fast"
    );

    // With it, a call with nothing to connect to lasts until its deadline.
    let started = Instant::now();
    let err = call(&c, "/test.Svc/Whoami", b"", 300).unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // And a server that starts after the call did still gets it.
    let waiting = {
        let c = c.clone();
        std::thread::spawn(move || call(&c, "/test.Svc/Whoami", b"", 10_000))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "the call did not wait");
    let _late = TestServer::start_on("late", &addr, &[]);
    let who = waiting.join().unwrap().unwrap();
    assert_eq!(&who[..], b"late");
}

#[test]
fn message_size_limits_are_resource_exhausted() {
    let s = TestServer::start("s", &[]);
    let c = client(
        &[&s],
        json!({"methodConfig": [
            {"name": [{"service": "Req"}], "maxRequestMessageBytes": 50},
            {"name": [{"service": "Resp"}], "maxResponseMessageBytes": 50}
        ]}),
    );
    assert_ready(&c, 1);
    assert_eq!(call(&c, "/Req/Echo", &[7; 50], 5000).unwrap().len(), 50);
    let err = call(&c, "/Req/Echo", &[7; 51], 5000).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(err.message.contains("51"), "{err}");
    assert_eq!(
        stat(&c, "attempts"),
        1,
        "an oversized request is never sent"
    );

    assert_eq!(call(&c, "/Resp/Echo", &[7; 50], 5000).unwrap().len(), 50);
    let err = call(&c, "/Resp/Echo", &[7; 51], 5000).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    // Requests are not limited by the response limit, nor responses by the request limit.
    assert_eq!(call(&c, "/Resp/Whoami", &[7; 500], 5000).unwrap(), "s");
    assert_eq!(
        call(&c, "/Other/Echo", &[7; 5000], 5000).unwrap().len(),
        5000
    );
}

#[test]
fn a_server_failure_after_response_headers_is_committed_and_not_retried() {
    // gf-testserver --fail-after-headers sends the response headers, then the failure in the
    // trailers: the attempt is committed (A6), so the retryable code is not retried.
    let s = TestServer::start("committed", &["--fail-rate", "1", "--fail-after-headers"]);
    let ok = TestServer::start("ok", &[]);
    // pick_first: the first attempt goes to the failing server; a retry would reach `ok`.
    let config = json!({"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s",
        "maxBackoff": "0.01s", "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]});
    let c = client(&[&s, &ok], config);
    assert_ready(&c, 2);
    let err = call(&c, "/UserService/Whoami", b"", 5000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert_eq!(stat(&c, "attempts"), 1, "{}", c.stats());
    assert_eq!(stat(&c, "retries"), 0);
}

#[test]
fn gf_testserver_sees_grpc_previous_rpc_attempts_on_the_retry() {
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    let good = TestServer::start("good", &[]);
    // pick_first sends the first attempt to `bad`; the retry moves to `good`.
    let config = json!({"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.01s",
        "maxBackoff": "0.01s", "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]});
    let c = client(&[&bad, &good], config);
    assert_ready(&c, 2);
    let r = block_on(c.invoke_full(
        "/test.Svc/Whoami",
        Bytes::new(),
        &CallOptions {
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    ));
    assert_eq!(r.status.code, Code::Ok, "{:?}", r.status);
    let previous: Vec<&Bytes> = r
        .trailers
        .iter()
        .filter(|(k, _)| k == "x-gf-previous-rpc-attempts")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        previous,
        vec![&Bytes::from_static(b"1")],
        "{:?}",
        r.trailers
    );
}

#[test]
fn a_connection_lost_after_response_headers_is_unavailable_and_retried() {
    // The server sends the response headers and dies before the message: the caller saw
    // nothing, so the unary call is not committed; the loss is UNAVAILABLE and retried.
    let dying = TestServer::start("dying", &["--die-after-headers"]);
    let ok = TestServer::start("ok", &[]);
    let config = json!({"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s",
        "maxBackoff": "0.01s", "backoffMultiplier": 1.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]});
    let c = client(&[&dying, &ok], config);
    assert_ready(&c, 2);
    let who = call(&c, "/UserService/Whoami", b"", 5000).unwrap();
    assert_eq!(&who[..], b"ok");
    assert_eq!(stat(&c, "attempts"), 2, "{}", c.stats());
    assert_eq!(instance(&c, &dying.addr)["failures"], 1);
}

fn state_of(c: &Client, addr: &str) -> String {
    instance(c, addr)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A host that hangs (SIGSTOP: its sockets stay open, nothing answers) is found by HTTP/2
/// keepalive: the call waiting on it fails over to the other instance instead of waiting for
/// its deadline, and while the host stays hung it is not READY again.
#[test]
fn keepalive_finds_a_hung_instance_and_its_calls_fail_over() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let config = json!({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": "test.Svc"}], "retryPolicy": retry_policy(3)}]
    });
    let c = client_with(
        &[&a, &b],
        config,
        // The shortest interval gRPC allows.
        json!({"keepalive_time_ms": 10_000, "keepalive_timeout_ms": 300}),
    );
    assert!(eventually(Duration::from_secs(5), || {
        state_of(&c, &a.addr) == "READY" && state_of(&c, &b.addr) == "READY"
    }));

    b.pause();
    // Round robin sends one of the first calls to b. Without keepalive it would wait out its
    // 30 s deadline; with it, the connection is declared dead within about 10.3 s and the call
    // retried on a.
    for i in 0..6 {
        assert_eq!(
            whoami(&c, 30_000).as_deref(),
            Ok("a"),
            "call {i}: {}",
            c.stats()
        );
    }
    let b_stats = instance(&c, &b.addr);
    assert_ne!(b_stats["state"], "READY", "{b_stats}");
    // Only the paused TCP connection tells that b hangs: not READY means keepalive found it.
    assert!(b_stats["failures"].as_u64() <= Some(1), "{b_stats}");

    b.resume();
    assert!(
        eventually(Duration::from_secs(10), || state_of(&c, &b.addr) == "READY"),
        "{}",
        c.stats()
    );
}

/// A connection is READY once the server has answered over HTTP/2: a hung process whose kernel
/// still accepts TCP connections is never picked.
#[test]
fn an_instance_that_accepts_tcp_but_never_answers_is_not_ready() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    b.pause();
    let c = client_with(
        &[&a, &b],
        json!({"loadBalancingConfig": [{"round_robin": {}}]}),
        json!({}),
    );
    for i in 0..10 {
        assert_eq!(
            whoami(&c, 5_000).as_deref(),
            Ok("a"),
            "call {i}: {}",
            c.stats()
        );
    }
    assert_eq!(state_of(&c, &b.addr), "CONNECTING", "{}", c.stats());
    b.resume();
    assert!(
        eventually(Duration::from_secs(10), || state_of(&c, &b.addr) == "READY"),
        "{}",
        c.stats()
    );
}

/// A server that answers `/test.Svc/Whoami` with "drain" and holds `/test.Svc/Slow` until
/// `release` fires; `drain` makes every open connection shut down gracefully (GOAWAY, open
/// streams finish). Counts its connections.
struct DrainingServer {
    addr: String,
    drain: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
    slow_started: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

fn draining_server() -> DrainingServer {
    use http_body_util::BodyExt;
    let drain: Arc<tokio::sync::Notify> = Arc::default();
    let release: Arc<tokio::sync::Notify> = Arc::default();
    let slow_started: Arc<AtomicUsize> = Arc::default();
    let connections: Arc<AtomicUsize> = Arc::default();
    let (d, r, s, n) = (
        drain.clone(),
        release.clone(),
        slow_started.clone(),
        connections.clone(),
    );
    let addr = serve_loopback(move |stream| {
        n.fetch_add(1, Ordering::SeqCst);
        let (drain, release, slow_started) = (d.clone(), r.clone(), s.clone());
        async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (release, slow_started) = (release.clone(), slow_started.clone());
                    async move {
                        let slow = req.uri().path() == "/test.Svc/Slow";
                        let _ = req.into_body().collect().await;
                        if slow {
                            let released = release.notified();
                            slow_started.fetch_add(1, Ordering::SeqCst);
                            released.await;
                        }
                        let mut message = vec![0u8, 0, 0, 0, 5];
                        message.extend_from_slice(b"drain");
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames = futures_util::stream::iter([
                            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(
                                message,
                            ))),
                            Ok(http_body::Frame::trailers(trailers)),
                        ]);
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(http_body_util::StreamBody::new(frames))
                    }
                });
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = drain.notified() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        }
    });
    DrainingServer {
        addr,
        drain,
        release,
        slow_started,
        connections,
    }
}

/// A server that shuts a connection down gracefully (GOAWAY) while a call is still running on
/// it: the call finishes there, and new calls go over a new connection at once instead of
/// failing against the draining one.
#[test]
fn after_a_goaway_new_calls_use_a_new_connection_while_old_calls_finish() {
    let server = draining_server();
    let c = Client::connect(&format!("static:///{}", server.addr), options("{}")).unwrap();
    assert_eq!(
        call(&c, "/test.Svc/Whoami", b"", 5000).as_deref(),
        Ok(&b"drain"[..])
    );

    let slow_client = c.clone();
    let slow = std::thread::spawn(move || call(&slow_client, "/test.Svc/Slow", b"", 30_000));
    assert!(eventually(Duration::from_secs(5), || server
        .slow_started
        .load(Ordering::SeqCst)
        == 1));
    server.drain.notify_waiters();

    for i in 0..20 {
        assert_eq!(
            call(&c, "/test.Svc/Whoami", b"", 5000).as_deref(),
            Ok(&b"drain"[..]),
            "call {i} after the GOAWAY: {}",
            c.stats()
        );
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert!(!slow.is_finished(), "the slow call waits for its release");
    server.release.notify_waiters();
    assert_eq!(slow.join().unwrap().as_deref(), Ok(&b"drain"[..]));
}

/// A server whose ping policy is stricter than our keepalive (grpc-go's `EnforcementPolicy`)
/// closes the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings". The client must
/// double that instance's keepalive time for its next connections (gRFC A8), not reconnect and
/// ping at the same rate forever. The server here is a few lines of raw HTTP/2: it completes
/// the handshake (SETTINGS, the PING that proves it answers), so the connection is READY, and
/// then sends that GOAWAY.
#[test]
fn goaway_too_many_pings_doubles_the_keepalive_time() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let frame = |kind: u8, flags: u8, payload: &[u8]| {
                    let len = (payload.len() as u32).to_be_bytes();
                    let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
                    f.extend_from_slice(payload);
                    f
                };
                let mut preface = [0u8; 24];
                if tcp.read_exact(&mut preface).is_err() {
                    return;
                }
                let _ = tcp.write_all(&frame(4, 0, &[])); // SETTINGS
                loop {
                    let mut head = [0u8; 9];
                    if tcp.read_exact(&mut head).is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    if tcp.read_exact(&mut payload).is_err() {
                        return;
                    }
                    match (head[3], head[4] & 1) {
                        (4, 0) => {
                            let _ = tcp.write_all(&frame(4, 1, &[])); // SETTINGS ACK
                        }
                        (6, 0) => {
                            let _ = tcp.write_all(&frame(6, 1, &payload)); // PING ACK
                                                                           // A moment later, as a server counting ping strikes would.
                            std::thread::sleep(Duration::from_millis(200));
                            let mut goaway = vec![0, 0, 0, 0, 0, 0, 0, 0x0b]; // ENHANCE_YOUR_CALM
                            goaway.extend_from_slice(b"too_many_pings");
                            let _ = tcp.write_all(&frame(7, 0, &goaway));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let c = Client::connect(
        &format!("static:///{addr}"),
        options(&json!({"keepalive_time_ms": 10_000}).to_string()),
    )
    .unwrap();
    assert_eq!(instance(&c, &addr)["keepalive_time_ms"], 10_000);
    let doubled_twice = eventually(Duration::from_secs(20), || {
        instance(&c, &addr)["keepalive_time_ms"].as_u64() >= Some(40_000)
    });
    let s = instance(&c, &addr);
    assert!(doubled_twice, "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("too_many_pings"),
        "{s}"
    );
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    c.close();

    // Without keepalive there is nothing to double.
    let plain = TestServer::start("plain", &[]);
    let c = Client::connect(&format!("static:///{}", plain.addr), options("{}")).unwrap();
    assert!(instance(&c, &plain.addr)["keepalive_time_ms"].is_null());
}

/// Echo calls (30 s deadline) from `threads` threads, `calls` each, on one client: the
/// messages of those that failed.
fn echo_from_threads(c: &Client, threads: usize, calls: usize) -> Vec<String> {
    let failed = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (c, failed) = (c.clone(), failed.clone());
            std::thread::spawn(move || {
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(30)),
                    ..Default::default()
                };
                for _ in 0..calls {
                    if let Err(e) =
                        block_on(c.invoke("/test.Svc/Echo", Bytes::from_static(b"x"), &opts))
                    {
                        failed.lock().unwrap().push(e.to_string());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    failed
}

/// Hedges that lose are cancelled (RST_STREAM) right after they were sent, before the server
/// has taken them in. Servers count such resets as an HTTP/2 rapid-reset attack (h2/hyper: more
/// than 20 pending at once) and end the connection with GOAWAY ENHANCE_YOUR_CALM
/// "too_many_resets", failing every call on it. The client must cancel losing hedges in a way
/// that does not trip this: under a burst of hedged calls no call fails (878 of 9,600 did)
/// and no connection is lost (3 of 12 runs on a loaded machine lost one, hidden by hedging).
#[test]
fn a_burst_of_cancelled_hedges_does_not_trip_rapid_reset_protection() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let config = hedging_config(json!({"maxAttempts": 5, "hedgingDelay": "0s"}));
    let c = client_with(&[&a, &b], config, json!({}));
    assert!(wait_ready(&c, 2, Duration::from_secs(10)), "{}", c.stats());
    let failed = echo_from_threads(&c, 32, 300);
    assert!(
        failed.is_empty(),
        "{} of 9600 calls failed, first: {:?}; {}",
        failed.len(),
        failed.first(),
        c.stats()
    );
    let stats = c.stats();
    assert!(
        stats["hedges"].as_u64().unwrap() >= 9600,
        "hedges were sent: {stats}"
    );
    // No connection was lost either (a GOAWAY "too_many_resets" shows as its last error).
    for instance in instances(&c) {
        assert!(instance["last_error"].is_null(), "{stats}");
    }
}

/// A paused instance keeps losing hedges: thousands of its streams are cancelled before it
/// has read any of them. When it resumes it reads the whole backlog in one go, and every
/// reset in that backlog of a stream it has not taken in yet counts towards h2's limit of 20
/// (GOAWAY "too_many_resets"). The client must hold those resets and, past its cap of held
/// streams, stop opening streams there rather than reset at once.
#[test]
fn hedges_lost_by_a_paused_instance_do_not_trip_rapid_reset_protection_on_resume() {
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let config = hedging_config(json!({"maxAttempts": 2, "hedgingDelay": "0s"}));
    let c = client_with(&[&a, &b], config, json!({}));
    assert!(wait_ready(&c, 2, Duration::from_secs(10)), "{}", c.stats());
    b.pause();
    // 6,400 calls: more lost hedges than the client ever held before it reset.
    let mut failed = echo_from_threads(&c, 32, 200);
    b.resume();
    // b works through its backlog; then every call it is given must succeed on the same
    // connection.
    failed.extend(echo_from_threads(&c, 1, 200));
    std::thread::sleep(Duration::from_millis(500));
    let stats = c.stats();
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        failed.first()
    );
    for instance in instances(&c) {
        assert_eq!(instance["failures"], 0, "{stats}");
        assert!(instance["last_error"].is_null(), "{stats}");
    }
}
