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
