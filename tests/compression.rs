//! gzip: requests compressed when asked for (per client or per call), compressed responses
//! always accepted, and decompression bounded by the receive limit (a zip bomb fails its call
//! with RESOURCE_EXHAUSTED, without the process growing), against real gf-testservers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use grpc_failover::config::Compression;
use grpc_failover::{CallOptions, Client, Code};

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

fn value<'a>(md: &'a [(String, Bytes)], key: &str) -> Option<&'a [u8]> {
    md.iter().find(|(k, _)| k == key).map(|(_, v)| &v[..])
}

#[test]
fn gzip_requests_per_client_and_per_call() {
    let s = TestServer::start("gz", &[]);
    let target = format!("static:///{}", s.addr);
    let req = Bytes::from("compress me ".repeat(1000));

    let plain = Client::connect(&target, options("{}")).unwrap();
    let r = block_on(plain.invoke_full("/test.Svc/Echo", req.clone(), &opts()));
    assert_eq!(r.status.code, Code::Ok, "{}", r.status);
    assert_eq!(r.response, req);
    assert_eq!(
        value(&r.trailers, "x-gf-request-encoding"),
        None,
        "identity by default"
    );

    let gz = Client::connect(&target, options(r#"{"compression": "gzip"}"#)).unwrap();
    let r = block_on(gz.invoke_full("/test.Svc/Echo", req.clone(), &opts()));
    assert_eq!(r.response, req);
    assert_eq!(
        value(&r.trailers, "x-gf-request-encoding"),
        Some(&b"gzip"[..])
    );

    // A call overrides its client, either way.
    let identity = CallOptions {
        compression: Some(Compression::Identity),
        ..opts()
    };
    let r = block_on(gz.invoke_full("/test.Svc/Echo", req.clone(), &identity));
    assert_eq!(r.response, req);
    assert_eq!(value(&r.trailers, "x-gf-request-encoding"), None);
    let gzip = CallOptions {
        compression: Some(Compression::Gzip),
        ..opts()
    };
    let r = block_on(plain.invoke_full("/test.Svc/Echo", req.clone(), &gzip));
    assert_eq!(r.response, req);
    assert_eq!(
        value(&r.trailers, "x-gf-request-encoding"),
        Some(&b"gzip"[..])
    );

    let err = grpc_failover::Options::from_json(Some(r#"{"compression": "brotli"}"#))
        .expect_err("brotli");
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.message.contains("compression"), "{err}");
}

#[test]
fn compressed_responses_are_accepted() {
    let s = TestServer::start("gz-replies", &["--compress"]);
    let c = Client::connect(&format!("static:///{}", s.addr), options("{}")).unwrap();
    let req = Bytes::from(vec![b'z'; 100_000]);
    let r = block_on(c.invoke_full("/test.Svc/Echo", req.clone(), &opts()));
    assert_eq!(r.status.code, Code::Ok, "{}", r.status);
    assert_eq!(r.response, req);
    assert_eq!(
        value(&r.headers, "grpc-encoding"),
        Some(&b"gzip"[..]),
        "the reply came compressed: {:?}",
        r.headers
    );
}

/// A field of /proc/self/status in KiB: VmRSS (now) or VmHWM (the peak).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// The peak RSS while `f` runs, in KiB. VmHWM alone is not enough: memory the allocator hands
/// back with madvise lowers RSS without raising the kernel's high-water mark first, so VmHWM can
/// read lower after a peak than before it. A thread samples VmRSS every 2 ms as well.
fn peak_rss_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(status_kib("VmRSS:"));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let out = f();
    done.store(true, std::sync::atomic::Ordering::Release);
    let sampled = sampler.join().unwrap();
    (out, sampled.max(status_kib("VmRSS:")))
}

/// 1 GiB of zeros, a few MiB compressed: refused while decompressing, at the 4 MiB receive limit,
/// without the process's peak RSS growing by anything near the message.
#[test]
fn a_zip_bomb_is_refused_within_the_receive_limit() {
    let s = TestServer::start("bomb", &["--compress"]);
    let target = format!("static:///{}", s.addr);
    let c = Client::connect(&target, options("{}")).unwrap();
    // Within the limit, decompressed in full.
    let r = block_on(c.invoke_full("/test.Svc/Zeros", Bytes::from("3"), &opts()));
    assert_eq!(r.status.code, Code::Ok, "{}", r.status);
    assert_eq!(r.response.len(), 3 << 20);
    assert!(r.response.iter().all(|&b| b == 0));

    let before = status_kib("VmRSS:");
    // The server compresses the whole GiB first: allow a slow, busy machine its time.
    let patient = CallOptions {
        timeout: Some(Duration::from_secs(180)),
        ..Default::default()
    };
    let (outcome, peak) =
        peak_rss_during(|| block_on(c.invoke("/test.Svc/Zeros", Bytes::from("1024"), &patient)));
    let err = outcome.unwrap_err();
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(err.message.contains("4194304"), "{err}");
    assert!(
        grown_mib < 100,
        "peak RSS grew {grown_mib} MiB decompressing a 1 GiB bomb"
    );
    // Raising the limit lets a larger (honest) reply through.
    let c = Client::connect(
        &target,
        options(r#"{"max_receive_message_bytes": 8388608}"#),
    )
    .unwrap();
    let r = block_on(c.invoke_full("/test.Svc/Zeros", Bytes::from("6"), &opts()));
    assert_eq!(r.status.code, Code::Ok, "{}", r.status);
    assert_eq!(r.response.len(), 6 << 20);
}
