//! The Rust API against real gf-testserver processes on a static:/// target.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use grpc_failover::{CallOptions, Client, Code};

#[test]
fn echo_whoami_and_status_pass_through() {
    let a = TestServer::start("a", &[]);
    let c = Client::connect(&format!("static:///{}", a.addr), options("{}")).unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    for size in [0usize, 1, 1 << 20] {
        let req = Bytes::from(vec![7u8; size]);
        let got = block_on(c.invoke("/test.Svc/Echo", req.clone(), &opts)).unwrap();
        assert_eq!(got, req, "echo of {size} bytes");
    }
    assert_eq!(whoami(&c, 2000).unwrap(), "a");
    let err = block_on(c.invoke("/test.Svc/Nope", Bytes::new(), &opts)).unwrap_err();
    assert_eq!(err.code, Code::Unimplemented);
    c.close();
}

#[test]
fn server_status_code_and_message_come_back_exactly() {
    let s = TestServer::start("nf", &["--fail-rate", "1", "--fail-code", "5"]);
    let c = Client::connect(&format!("static:///{}", s.addr), options("{}")).unwrap();
    let err = whoami(&c, 2000).unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert_eq!(err.message, "gf-testserver nf: injected failure");
}

#[test]
fn deadline_against_a_slow_server_is_deadline_exceeded() {
    let s = TestServer::start("slow", &["--delay-ms", "2000"]);
    let c = Client::connect(&format!("static:///{}", s.addr), options("{}")).unwrap();
    let started = std::time::Instant::now();
    let err = whoami(&c, 200).unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the call outlived its deadline"
    );
}

#[test]
fn no_reachable_instance_fails_fast_naming_the_addresses() {
    let p1 = free_port();
    let p2 = free_port();
    let c = Client::connect(
        &format!("static:///127.0.0.1:{p1},127.0.0.1:{p2}"),
        options("{}"),
    )
    .unwrap();
    let err = whoami(&c, 10_000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(
        err.message.contains(&format!("127.0.0.1:{p1}"))
            && err.message.contains(&format!("127.0.0.1:{p2}")),
        "{}",
        err.message
    );
}

#[test]
fn pick_first_sticks_to_the_first_and_fails_over() {
    let mut a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let c = Client::connect(&format!("static:///{},{}", a.addr, b.addr), options("{}")).unwrap();
    let counts = spread(&c, 20);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    a.kill();
    assert!(eventually(Duration::from_secs(5), || whoami(&c, 1000)
        .ok()
        .as_deref()
        == Some("b")));
    let counts = spread(&c, 20);
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
}

#[test]
fn close_cancels_calls_in_flight() {
    let s = TestServer::start("slow", &["--delay-ms", "5000"]);
    let c = Client::connect(&format!("static:///{}", s.addr), options("{}")).unwrap();
    let c2 = c.clone();
    let call = std::thread::spawn(move || whoami(&c2, 0));
    std::thread::sleep(Duration::from_millis(300));
    c.close();
    let err = call.join().unwrap().unwrap_err();
    assert_eq!(err.code, Code::Cancelled);
}

/// One call with oversized metadata fails alone, locally, with RESOURCE_EXHAUSTED: sent, it
/// would make the server close the shared connection under the calls in flight on it.
#[test]
fn oversized_metadata_fails_only_its_own_call() {
    let s = TestServer::start("big", &["--delay-ms", "300"]);
    let c = Client::connect(&format!("static:///{}", s.addr), options("{}")).unwrap();
    assert_eq!(whoami(&c, 5000).unwrap(), "big");
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            grpc_failover::runtime_handle().spawn(async move {
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(10)),
                    ..Default::default()
                };
                c.invoke("/test.Svc/Whoami", Bytes::new(), &opts).await
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let big_value = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        metadata: vec![("x-big".into(), Bytes::from(vec![b'v'; 64 << 10]))],
        ..Default::default()
    };
    let many_entries = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        metadata: (0..10_000)
            .map(|i| (format!("x-k{i}"), Bytes::from_static(b"v")))
            .collect(),
        ..Default::default()
    };
    for opts in [big_value, many_entries] {
        let err = block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &opts)).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted, "{err}");
        assert!(err.message.contains("max_metadata_bytes 16384"), "{err}");
    }
    for call in in_flight {
        assert_eq!(block_on(call).unwrap().unwrap(), "big");
    }
    let stats = c.stats();
    assert_eq!(
        stats["attempts"], 21,
        "the refused calls made no attempt: {stats}"
    );
    // The bound is an option.
    let c = Client::connect(
        &format!("static:///{}", s.addr),
        options(r#"{"max_metadata_bytes": 1000}"#),
    )
    .unwrap();
    let with_value = |len: usize| CallOptions {
        timeout: Some(Duration::from_secs(5)),
        metadata: vec![("x-v".into(), Bytes::from(vec![b'v'; len]))],
        ..Default::default()
    };
    assert_eq!(
        block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &with_value(965))).unwrap(),
        "big",
        "3 + 965 + 32 = 1000 bytes is within the bound"
    );
    let err = block_on(c.invoke("/test.Svc/Whoami", Bytes::new(), &with_value(966))).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(
        err.message
            .contains("1001 bytes exceeds max_metadata_bytes 1000"),
        "{err}"
    );
}

/// gRPC's message limits: responses over 4 MiB are refused by default, `max_receive_message_bytes`
/// raises that, a method config's smaller `maxResponseMessageBytes` wins, and
/// `max_send_message_bytes` refuses a request locally. Each failure is RESOURCE_EXHAUSTED with
/// both sizes, and none is retried.
#[test]
fn message_size_limits() {
    let s = TestServer::start("limits", &[]);
    let target = format!("static:///{}", s.addr);
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let five_mib = Bytes::from(vec![5u8; 5 << 20]);
    let retry_all = r#""retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s",
        "maxBackoff": "0.01s", "backoffMultiplier": 1, "retryableStatusCodes":
        ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]}"#;

    // Default: the 5 MiB request goes (sending is unlimited), its 5 MiB echo is refused.
    let c = Client::connect(&target, options("{}")).unwrap();
    let err = block_on(c.invoke("/test.Svc/Echo", five_mib.clone(), &opts)).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    for part in ["max_receive_message_bytes", "5242880", "4194304"] {
        assert!(err.message.contains(part), "{part} missing: {err}");
    }
    let four_mib = Bytes::from(vec![4u8; 4 << 20]);
    assert_eq!(
        block_on(c.invoke("/test.Svc/Echo", four_mib.clone(), &opts)).unwrap(),
        four_mib,
        "exactly 4 MiB is within the default"
    );

    // Raised by the option; a method config's smaller limit still wins, and is not retried.
    let c = Client::connect(
        &target,
        options(&format!(
            r#"{{"max_receive_message_bytes": 8388608, "service_config": {{"methodConfig": [
                {{"name": [{{"service": "test.Small"}}], "maxResponseMessageBytes": 1024, {retry_all}}}]}}}}"#
        )),
    )
    .unwrap();
    assert_eq!(
        block_on(c.invoke("/test.Svc/Echo", five_mib.clone(), &opts)).unwrap(),
        five_mib
    );
    let err =
        block_on(c.invoke("/test.Small/Echo", Bytes::from(vec![1u8; 2048]), &opts)).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    for part in ["maxResponseMessageBytes", "2048", "1024"] {
        assert!(err.message.contains(part), "{part} missing: {err}");
    }
    assert_eq!(c.stats()["retries"], 0, "a refused response is not retried");

    // max_send_message_bytes: refused before anything is sent; the smaller limit is named.
    let c = Client::connect(
        &target,
        options(&format!(
            r#"{{"max_send_message_bytes": 1000, "service_config": {{"methodConfig": [
                {{"name": [{{"service": "test.Tiny"}}], "maxRequestMessageBytes": 10, {retry_all}}}]}}}}"#
        )),
    )
    .unwrap();
    let req = Bytes::from(vec![2u8; 1000]);
    assert_eq!(
        block_on(c.invoke("/test.Svc/Echo", req.clone(), &opts)).unwrap(),
        req
    );
    let err =
        block_on(c.invoke("/test.Svc/Echo", Bytes::from(vec![2u8; 1001]), &opts)).unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(
        err.message
            .contains("request of 1001 bytes exceeds max_send_message_bytes 1000"),
        "{err}"
    );
    let err = block_on(c.invoke("/test.Tiny/Echo", Bytes::from(vec![2u8; 11]), &opts)).unwrap_err();
    assert!(
        err.message
            .contains("request of 11 bytes exceeds maxRequestMessageBytes 10"),
        "{err}"
    );
    let stats = c.stats();
    assert_eq!(
        stats["attempts"], 1,
        "only the call within the limit was sent: {stats}"
    );

    // Not numbers: refused at connect.
    for bad in [
        r#"{"max_receive_message_bytes": -1}"#,
        r#"{"max_send_message_bytes": "big"}"#,
    ] {
        let err = grpc_failover::Options::from_json(Some(bad)).expect_err(bad);
        assert_eq!(err.code, Code::InvalidArgument, "{bad}: {err}");
        assert!(err.message.contains("message_bytes"), "{bad}: {err}");
    }
}
