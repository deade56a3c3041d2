//! Rust-side benchmarks, run by `make bench` (bench/run.sh). Each mode prints one JSON line.
//!
//!   core direct <addr> <concurrency> <seconds> [ca.pem]
//!                                                  tonic Channel directly, 64-byte Echo
//!                                                  (over TLS trusting ca.pem, if given), with
//!                                                  the process's CPU time per call
//!   core pick <instances> <threads> <seconds>      picker cost (WRR and round_robin)
//!   core discovery <rounds>                        etcd PUT/DELETE to first/last call
//!   core dead <seconds>                            3 instances, one always UNAVAILABLE
//!   core scale <instances>                         N instances in etcd: time to known / ready

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpc_failover::bench_internals::{Empty, Pick, Picker, Subchannel};
use grpc_failover::config::Policy;
use grpc_failover::RawCodec;
use grpc_failover::{CallOptions, Client};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing argument {i}: {args:?}"))
    };
    match arg(0).as_str() {
        "direct" => direct(
            &arg(1),
            arg(2).parse().unwrap(),
            arg(3).parse().unwrap(),
            args.get(4).map(String::as_str),
        ),
        "pick" => pick(
            arg(1).parse().unwrap(),
            arg(2).parse().unwrap(),
            arg(3).parse().unwrap(),
        ),
        "discovery" => discovery(arg(1).parse().unwrap()),
        "dead" => dead(arg(1).parse().unwrap()),
        "scale" => scale(arg(1).parse().unwrap()),
        other => panic!("unknown mode {other}"),
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut lat_us: Vec<u64>, elapsed: Duration, extra: serde_json::Value) -> serde_json::Value {
    lat_us.sort_unstable();
    let mut v = json!({
        "calls": lat_us.len(),
        "calls_per_s": lat_us.len() as f64 / elapsed.as_secs_f64(),
        "p50_us": percentile(&lat_us, 0.50),
        "p99_us": percentile(&lat_us, 0.99),
    });
    if let (serde_json::Value::Object(o), serde_json::Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    v
}

/// User + system CPU time of this process (every thread: the runtime's workers too).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The same 64-byte Echo load through tonic's own Channel, with as many concurrent callers;
/// over TLS (tonic's rustls with ring) when `ca` is given. `cpu_us_per_call` is the process's
/// CPU time over the measured window (from the first task's start to the last one's end) per
/// call.
fn direct(addr: &str, concurrency: usize, seconds: f64, ca: Option<&str>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        )
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let connect_start = Instant::now();
        let scheme = if ca.is_some() { "https" } else { "http" };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("the CA file");
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        let channel = endpoint.connect().await.unwrap();
        let payload = Bytes::from(vec![7u8; 64]);
        let path = http::uri::PathAndQuery::from_static("/bench.Svc/Echo");
        let mut first = tonic::client::Grpc::new(channel.clone());
        first.ready().await.unwrap();
        first
            .unary(tonic::Request::new(payload.clone()), path, RawCodec)
            .await
            .unwrap();
        let first_call_ms = connect_start.elapsed().as_secs_f64() * 1e3;
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let cpu_start = cpu_time();
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let path = http::uri::PathAndQuery::from_static("/bench.Svc/Echo");
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        grpc.ready().await.unwrap();
                        let r = grpc
                            .unary(tonic::Request::new(payload.clone()), path.clone(), RawCodec)
                            .await;
                        assert_eq!(r.unwrap().into_inner().len(), 64);
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        let cpu = cpu_time() - cpu_start;
        let cpu_us_per_call = cpu.as_secs_f64() * 1e6 / all.len().max(1) as f64;
        summary(
            all,
            elapsed,
            json!({"mode": "direct", "concurrency": concurrency, "first_call_ms": first_call_ms,
                "cpu_us_per_call": cpu_us_per_call, "cores": cpu.as_secs_f64() / elapsed.as_secs_f64()}),
        )
    });
    println!("{result}");
}

/// Picks per second on a picker over `n` instances (no network).
fn pick(n: usize, threads: usize, seconds: f64) {
    let subs: Vec<Arc<Subchannel>> = (0..n)
        .map(|i| {
            Subchannel::new(
                &format!("10.0.{}.{}:80", i / 250, i % 250),
                (1 + i % 5) as f64,
                serde_json::Value::Null,
            )
            .unwrap()
        })
        .collect();
    let mut out = serde_json::Map::new();
    for (name, policy) in [
        ("weighted_round_robin", Policy::WeightedRoundRobin),
        ("round_robin", Policy::RoundRobin),
    ] {
        let picker = Arc::new(Picker::new(policy, subs.clone(), None, Empty::Connecting));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (picker, stop) = (picker.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            if let Pick::Ready(sc) = picker.pick(&[]) {
                                std::hint::black_box(&sc);
                            }
                        }
                        count += 1000;
                    }
                    count
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        let picks: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let elapsed = started.elapsed().as_secs_f64();
        out.insert(
            name.to_string(),
            json!({"picks_per_s": picks as f64 / elapsed, "ns_per_pick_per_thread": elapsed * 1e9 * threads as f64 / picks as f64}),
        );
    }
    println!(
        "{}",
        json!({"mode": "pick", "instances": n, "threads": threads, "policies": out})
    );
}

/// Time from an etcd DELETE to the last call the instance receives, and from a PUT to the first
/// call the new instance serves, with callers running all the time.
fn discovery(rounds: usize) {
    let etcd = common::Etcd::start();
    let a = common::TestServer::start("a", &[]);
    let b = common::TestServer::start("b", &[]);
    etcd.put_instance("bench", &a.addr, 1.0);
    let opts = common::Etcd::options_json(
        &[&etcd],
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
    );
    let c = Client::connect("etcd:///bench", common::options(&opts)).unwrap();
    common::whoami(&c, 5000).unwrap();
    // Caller threads record (time, server) for every answer.
    let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (c, log, stop) = (c.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(who) = common::whoami(&c, 1000) {
                        log.lock().unwrap().push((Instant::now(), who));
                    }
                }
            })
        })
        .collect();
    let mut put_ms = Vec::new();
    let mut delete_ms = Vec::new();
    // The changes go through an in-process etcd client, so the clock starts right before the
    // PUT or DELETE request, not before an etcdctl process starts.
    let mut kv =
        common::block_on(etcd_client::Client::connect([etcd.endpoint.clone()], None)).unwrap();
    let key = format!("bench/{}", b.addr);
    let record = format!(
        r#"{{"Op":0,"Addr":"{}","Metadata":{{"weight":1}}}}"#,
        b.addr
    );
    for _ in 0..rounds {
        // PUT b: time to the first answer from b.
        log.lock().unwrap().clear();
        let t0 = Instant::now();
        common::block_on(kv.put(key.as_str(), record.as_str(), None)).unwrap();
        common::eventually(Duration::from_secs(5), || {
            log.lock().unwrap().iter().any(|(_, w)| w == "b")
        });
        let first = log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, w)| w == "b")
            .map(|(t, _)| *t)
            .unwrap();
        put_ms.push(first.saturating_duration_since(t0).as_secs_f64() * 1000.0);
        // DELETE b: time to the last answer from b.
        std::thread::sleep(Duration::from_millis(200));
        log.lock().unwrap().clear();
        let t0 = Instant::now();
        common::block_on(kv.delete(key.as_str(), None)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let last = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w == "b")
            .map(|(t, _)| *t)
            .max();
        delete_ms.push(
            last.map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in callers {
        t.join().unwrap();
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        json!({"median_ms": v[v.len() / 2], "max_ms": v[v.len() - 1]})
    };
    println!(
        "{}",
        json!({"mode": "discovery", "rounds": rounds, "put_to_first_call": stats(&mut put_ms), "delete_to_last_call": stats(&mut delete_ms)})
    );
}

const REFERENCE: &str = r#"{"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{"name": [{"service": "UserService"}],
  "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;

const REFERENCE_OUTLIER: &str = r#"{"loadBalancingConfig": [{"outlier_detection": {"interval": "0.5s", "baseEjectionTime": "5s",
  "maxEjectionPercent": 34, "failurePercentageEjection": {"threshold": 50, "minimumHosts": 3, "requestVolume": 20},
  "childPolicy": [{"round_robin": {}}]}}], "methodConfig": [{"name": [{"service": "UserService"}],
  "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;

/// Runs 32 concurrent callers of /UserService/Echo for `seconds` against `target`.
fn load(target: &str, service_config: &str, seconds: f64) -> serde_json::Value {
    let opts = format!(r#"{{"service_config": {service_config}}}"#);
    let c = Client::connect(target, common::options(&opts)).unwrap();
    common::eventually(Duration::from_secs(5), || {
        c.stats()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "READY")
    });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (c, errors) = (c.clone(), errors.clone());
            std::thread::spawn(move || {
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(2)),
                    ..Default::default()
                };
                let payload = Bytes::from(vec![7u8; 64]);
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match common::block_on(c.invoke("/UserService/Echo", payload.clone(), &opts)) {
                        Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().unwrap());
    }
    let elapsed = started.elapsed();
    let stats = c.stats();
    let ok = all.len() as f64;
    c.close();
    summary(
        all,
        elapsed,
        json!({
            "errors": errors.load(Ordering::Relaxed),
            "attempts_per_success": stats["attempts"].as_f64().unwrap_or(0.0) / ok.max(1.0),
        }),
    )
}

/// The dead-instance scenario: 3 healthy instances vs one of 3 answering UNAVAILABLE always,
/// with the reference retry policy, without and with outlier detection.
fn dead(seconds: f64) {
    let s: Vec<common::TestServer> = (0..3)
        .map(|i| common::TestServer::start(&format!("h{i}"), &[]))
        .collect();
    let healthy_target = format!("static:///{},{},{}", s[0].addr, s[1].addr, s[2].addr);
    let healthy = load(&healthy_target, REFERENCE, seconds);
    let bad = common::TestServer::start("dead", &["--fail-rate", "1"]);
    let dead_target = format!("static:///{},{},{}", bad.addr, s[1].addr, s[2].addr);
    let dead = load(&dead_target, REFERENCE, seconds);
    let dead_od = load(&dead_target, REFERENCE_OUTLIER, seconds);
    println!(
        "{}",
        json!({"mode": "dead", "healthy": healthy, "one_dead": dead, "one_dead_outlier_detection": dead_od})
    );
}

/// Ports per gf-testserver process in `scale`: a listener and a connection each, well under
/// the 20,000 file descriptors a process may have here.
const PORTS_PER_SERVER: usize = 2000;

/// `n` instances, served by a few gf-testserver processes on many ports each, registered in a
/// real etcd. Two phases: a fresh client listing all `n` (connect to all known, to all READY),
/// then a running client while the `n` records are put (first put to all known, to all READY).
/// The client's RSS growth per READY instance is measured in the first phase.
fn scale(n: usize) {
    use std::io::BufRead;
    let etcd = common::Etcd::start();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..n.div_ceil(PORTS_PER_SERVER) {
        let ports = PORTS_PER_SERVER.min(n - i * PORTS_PER_SERVER);
        let mut child = std::process::Command::new(common::testserver_bin())
            .args(["--name", &format!("s{i}"), "--listen", "127.0.0.1:0"])
            .args(["--ports", &ports.to_string(), "--no-health"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start gf-testserver");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..ports {
            let line = lines.next().unwrap().unwrap();
            addrs.push(line.strip_prefix("listening ").unwrap().to_string());
        }
        std::thread::spawn(move || for _ in lines {});
        servers.push(child);
    }
    let mut kv =
        common::block_on(etcd_client::Client::connect([etcd.endpoint.clone()], None)).unwrap();
    let opts = common::Etcd::options_json(
        &[&etcd],
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
    );
    let rss_kib = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // known and READY counts, polled every 20 ms; returns the seconds since `t0` of each.
    let follow = |c: &Client, t0: Instant| -> (f64, f64) {
        let (mut known, mut ready) = (None, None);
        let deadline = t0 + Duration::from_secs(600);
        while ready.is_none() && Instant::now() < deadline {
            let stats = c.stats();
            let list = stats["instances"].as_array().cloned().unwrap_or_default();
            let now = t0.elapsed().as_secs_f64();
            if known.is_none() && list.len() == n {
                known = Some(now);
            }
            if list.iter().filter(|i| i["state"] == "READY").count() == n {
                ready = Some(now);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (known.expect("all known"), ready.expect("all READY"))
    };

    etcd.put_instances("listed", &addrs);
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let c = Client::connect("etcd:///listed", common::options(&opts)).unwrap();
    let (listed_known, listed_ready) = follow(&c, t0);
    let rss_per_instance = (rss_kib().saturating_sub(rss_before)) as f64 / n as f64;
    c.close();
    drop(c);

    let c = Client::connect("etcd:///live", common::options(&opts)).unwrap();
    let t0 = Instant::now();
    etcd.put_instances("live", &addrs);
    let puts_s = t0.elapsed().as_secs_f64();
    let (live_known, live_ready) = follow(&c, t0);

    // Instances in the client's list, polled every millisecond until `want`; seconds since t0.
    let until_listed = |c: &Client, want: usize, t0: Instant| -> f64 {
        let deadline = t0 + Duration::from_secs(600);
        while Instant::now() < deadline {
            if c.stats()["instances"].as_array().map_or(0, |l| l.len()) == want {
                return t0.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "never {want} instances: {}",
            c.stats()["instances"].as_array().map_or(0, |l| l.len())
        );
    };
    // 500 DELETEs at once (four transactions back to back): until none of them is in the
    // client's instance list, so none can be picked.
    let gone = 500.min(n / 2);
    let t0 = Instant::now();
    for chunk in addrs[..gone].chunks(125) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|a| etcd_client::TxnOp::delete(format!("live/{a}"), None))
            .collect();
        common::block_on(kv.txn(etcd_client::Txn::new().and_then(ops))).unwrap();
    }
    let deletes_s = until_listed(&c, n - gone, t0);

    // A compaction past the client's watch revision, then an etcd restart: the watch cannot
    // resume and the client re-lists the whole prefix.
    let mut etcd = etcd;
    for i in 0..10 {
        etcd.put(&format!("unwatched/{i}"), "x");
    }
    etcd.compact();
    let resyncs = |c: &Client| c.stats()["etcd"]["resyncs"].as_u64().unwrap_or(0);
    let before = resyncs(&c);
    etcd.kill();
    let t0 = Instant::now();
    etcd.restart();
    let restarted_s = t0.elapsed().as_secs_f64();
    let deadline = t0 + Duration::from_secs(600);
    while resyncs(&c) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let resync_s = t0.elapsed().as_secs_f64();
    assert!(resyncs(&c) > before, "no resync after the compaction");
    let resynced_listed = c.stats()["instances"].as_array().map_or(0, |l| l.len());
    c.close();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    println!(
        "{}",
        json!({"mode": "scale", "instances": n,
            "listed": {"known_s": listed_known, "ready_s": listed_ready, "rss_kib_per_instance": rss_per_instance},
            "live": {"puts_s": puts_s, "known_s": live_known, "ready_s": live_ready},
            "deletes": {"count": gone, "gone_s": deletes_s},
            "compaction": {"etcd_restart_s": restarted_s, "resync_s": resync_s, "instances_after": resynced_listed}})
    );
}
