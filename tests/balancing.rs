//! Issue 4: load balancing (pick_first, round_robin, smooth weighted round robin) over real
//! gf-testserver processes, on static targets and on etcd targets backed by a real etcd.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use grpc_failover::{Client, Code, Options};
use serde_json::Value;

const WRR: &str = r#"{"loadBalancingConfig": [{"weighted_round_robin": {}}]}"#;
const CUSTOM_WRR: &str = r#"{"loadBalancingConfig": [{"custom_weighted_round_robin": {}}]}"#;
const RR: &str = r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#;

const READY_WITHIN: Duration = Duration::from_secs(10);

fn etcd_client(etcd: &Etcd, service_config: &str, prefix: &str) -> Client {
    Client::connect(
        &format!("etcd:///{prefix}"),
        options(&Etcd::options_json(&[etcd], service_config)),
    )
    .unwrap()
}

fn static_client(servers: &[&TestServer], options_json: &str) -> Client {
    let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
    Client::connect(
        &format!("static:///{}", addrs.join(",")),
        options(options_json),
    )
    .unwrap()
}

#[track_caller]
fn assert_ready(c: &Client, n: usize) {
    assert!(
        wait_ready(c, n, READY_WITHIN),
        "{n} instances never became READY: {}",
        c.stats()
    );
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Whoami answers of `n` calls in order, one letter per call (server names are one letter).
fn sequence(c: &Client, n: usize) -> String {
    (0..n)
        .map(|_| whoami(c, 2000).unwrap_or_else(|e| panic!("call failed: {e}")))
        .collect()
}

fn is_rotation_of(s: &str, cycle: &str) -> bool {
    s.len() == cycle.len() && format!("{cycle}{cycle}").contains(s)
}

#[test]
fn wrr_weights_1_2_3_split_600_calls_exactly_100_200_300() {
    let etcd = Etcd::start();
    let servers: Vec<TestServer> = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .map(|(name, weight)| {
            TestServer::start(
                name,
                &[
                    "--etcd",
                    &etcd.endpoint,
                    "--prefix",
                    "svc/wrr",
                    "--weight",
                    weight,
                    "--ttl",
                    "30",
                ],
            )
        })
        .collect();
    for sc in [WRR, CUSTOM_WRR] {
        let c = etcd_client(&etcd, sc, "svc/wrr");
        assert_ready(&c, 3);
        assert_eq!(c.stats()["policy"], "weighted_round_robin");
        let got = spread(&c, 600);
        assert_eq!(got, counts(&[("a", 100), ("b", 200), ("c", 300)]), "{sc}");
        // The per-instance counters agree with what the servers answered.
        for (s, weight, calls) in [
            (&servers[0], 1.0, 100),
            (&servers[1], 2.0, 200),
            (&servers[2], 3.0, 300),
        ] {
            let i = instance(&c, &s.addr);
            assert_eq!(i["weight"], weight, "{i}");
            assert_eq!(i["calls"], calls, "{i}");
        }
        c.close();
    }
}

#[test]
fn wrr_5_1_1_over_a_full_cycle_is_aabacaa_up_to_rotation() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let c_ = TestServer::start("c", &[]);
    etcd.put_instance("svc/511", &a.addr, 5.0);
    etcd.put_instance("svc/511", &b.addr, 1.0);
    etcd.put_instance("svc/511", &c_.addr, 1.0);
    let c = etcd_client(&etcd, WRR, "svc/511");
    assert_ready(&c, 3);
    let seq = sequence(&c, 70);
    let cycle = &seq[..7];
    // b and c have the same weight, so which of them comes first depends on instance order.
    assert!(
        is_rotation_of(cycle, "aabacaa") || is_rotation_of(cycle, "aacabaa"),
        "one cycle of 5,1,1 was {cycle:?} (all: {seq})"
    );
    // Smooth: the same cycle over and over, never two light instances in a row.
    assert_eq!(seq, cycle.repeat(10));
}

#[test]
fn a_weight_changed_in_etcd_changes_the_split() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    etcd.put_instance("svc/rw", &a.addr, 1.0);
    etcd.put_instance("svc/rw", &b.addr, 1.0);
    let c = etcd_client(&etcd, WRR, "svc/rw");
    assert_ready(&c, 2);
    assert_eq!(spread(&c, 200), counts(&[("a", 100), ("b", 100)]));

    // A PUT of the same key with new metadata (Go's record format, extra metadata kept).
    etcd.put(
        &format!("svc/rw/{}", b.addr),
        &format!(
            r#"{{"Op":0,"Addr":"{}","Metadata":{{"weight":3,"zone":"z1"}}}}"#,
            b.addr
        ),
    );
    assert!(
        eventually(Duration::from_secs(5), || spread(&c, 40)
            == counts(&[("a", 10), ("b", 30)])),
        "the new weight was never applied: {}",
        c.stats()
    );
    assert_eq!(spread(&c, 400), counts(&[("a", 100), ("b", 300)]));
    let i = instance(&c, &b.addr);
    assert_eq!(i["weight"], 3.0, "{i}");
    assert_eq!(i["metadata"]["zone"], "z1", "{i}");

    // And back, with a fractional weight on the other instance: 1.5 : 1 is 3 : 2.
    etcd.put_instance("svc/rw", &b.addr, 1.0);
    etcd.put_instance("svc/rw", &a.addr, 1.5);
    assert!(
        eventually(Duration::from_secs(5), || spread(&c, 50)
            == counts(&[("a", 30), ("b", 20)])),
        "{}",
        c.stats()
    );
    // The connections survived the updates: still one subchannel per instance, both READY.
    assert_eq!(instances(&c).len(), 2);
    assert_ready(&c, 2);
}

#[test]
fn weight_zero_drains_while_another_instance_is_ready() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let mut c_ = TestServer::start("c", &[]);
    etcd.put_instance("svc/drain", &a.addr, 0.0);
    etcd.put_instance("svc/drain", &b.addr, 1.0);
    etcd.put_instance("svc/drain", &c_.addr, 1.0);
    for sc in [WRR, RR] {
        let c = etcd_client(&etcd, sc, "svc/drain");
        assert_ready(&c, 3);
        let got = spread(&c, 100);
        assert_eq!(got.get("a"), None, "{sc}: a has weight 0: {got:?}");
        assert_eq!(got.get("error"), None, "{sc}: {got:?}");
        c.close();
    }

    let c = etcd_client(&etcd, WRR, "svc/drain");
    assert_ready(&c, 3);
    // Draining a live instance: b goes to 0 while c stays.
    etcd.put_instance("svc/drain", &b.addr, 0.0);
    assert!(eventually(Duration::from_secs(5), || spread(&c, 10)
        == counts(&[("c", 10)])));
    assert_eq!(spread(&c, 100), counts(&[("c", 100)]));

    // With no ready instance of positive weight left, the drained ones serve rather than fail.
    c_.kill();
    assert!(
        eventually(Duration::from_secs(5), || {
            let got = spread(&c, 10);
            !got.contains_key("error") && !got.contains_key("c")
        }),
        "{}",
        c.stats()
    );
    let got = spread(&c, 100);
    assert_eq!(got, counts(&[("a", 50), ("b", 50)]));
}

#[test]
fn a_killed_instance_is_not_picked_once_its_connection_drops_and_is_picked_after_restart() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let mut b = TestServer::start("b", &[]);
    let c_ = TestServer::start("c", &[]);
    for s in [&a, &b, &c_] {
        etcd.put_instance("svc/kill", &s.addr, 1.0);
    }
    let c = etcd_client(&etcd, WRR, "svc/kill");
    assert_ready(&c, 3);
    assert_eq!(spread(&c, 90), counts(&[("a", 30), ("b", 30), ("c", 30)]));

    // SIGKILL: the record stays in etcd, only the connection drops.
    b.kill();
    assert!(
        eventually(Duration::from_secs(5), || instance(&c, &b.addr)["state"]
            != "READY"),
        "{}",
        c.stats()
    );
    let got = spread(&c, 90);
    assert_eq!(got, counts(&[("a", 45), ("c", 45)]));
    let i = instance(&c, &b.addr);
    assert!(
        i["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&b.addr)),
        "the dead instance's last error names it: {i}"
    );

    b.restart();
    assert_ready(&c, 3);
    assert_eq!(spread(&c, 90), counts(&[("a", 30), ("b", 30), ("c", 30)]));
}

#[test]
fn round_robin_spreads_evenly_over_a_static_target() {
    let servers: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| TestServer::start(n, &[]))
        .collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let c = static_client(&refs, &format!(r#"{{"service_config": {RR}}}"#));
    assert_ready(&c, 3);
    assert_eq!(c.stats()["policy"], "round_robin");
    assert_eq!(
        spread(&c, 300),
        counts(&[("a", 100), ("b", 100), ("c", 100)])
    );
    // Consecutive calls take turns: every window of 3 holds each instance once.
    let seq = sequence(&c, 30);
    for w in seq.as_bytes().chunks(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, b"abc", "{seq}");
    }
}

#[test]
fn pick_first_over_etcd_sticks_to_one_and_fails_over() {
    let etcd = Etcd::start();
    let mut servers = vec![TestServer::start("a", &[]), TestServer::start("b", &[])];
    for s in &servers {
        etcd.put_instance("svc/pf", &s.addr, 1.0);
    }
    let c = etcd_client(&etcd, "{}", "svc/pf");
    assert_eq!(c.stats()["policy"], "pick_first");
    assert_ready(&c, 2);
    let got = spread(&c, 20);
    assert_eq!(
        got.len(),
        1,
        "pick_first used more than one instance: {got:?}"
    );
    let first = got.keys().next().unwrap().clone();
    let (dead, other) = if first == "a" { (0, "b") } else { (1, "a") };
    servers[dead].kill();
    assert!(eventually(Duration::from_secs(5), || whoami(&c, 1000)
        .ok()
        .as_deref()
        == Some(other)));
    assert_eq!(spread(&c, 20), counts(&[(other, 20)]));
}

#[test]
fn fifty_picker_rebuilds_in_a_row_keep_the_split_within_2_percent() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let c_ = TestServer::start("c", &[]);
    // A fourth instance that comes and goes; weight 0, so it never takes calls itself.
    let d = TestServer::start("d", &[]);
    etcd.put_instance("svc/flap", &a.addr, 1.0);
    etcd.put_instance("svc/flap", &b.addr, 2.0);
    etcd.put_instance("svc/flap", &c_.addr, 3.0);
    let c = etcd_client(&etcd, WRR, "svc/flap");
    assert_ready(&c, 3);

    let done = AtomicBool::new(false);
    let got: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let saw_four = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..50 {
                if i % 2 == 0 {
                    etcd.put_instance("svc/flap", &d.addr, 0.0);
                } else {
                    etcd.delete(&format!("svc/flap/{}", d.addr));
                }
                // New metadata, same weight: a rebuild that must not move the split.
                etcd.put(
                    &format!("svc/flap/{}", a.addr),
                    &format!(
                        r#"{{"Op":0,"Addr":"{}","Metadata":{{"weight":1,"gen":{i}}}}}"#,
                        a.addr
                    ),
                );
            }
            done.store(true, Ordering::Release);
        });
        // Two callers, so picks also race with the rebuilds.
        for _ in 0..2 {
            scope.spawn(|| {
                let mut calls = 0;
                while !done.load(Ordering::Acquire) || calls < 1500 {
                    for _ in 0..30 {
                        let who = whoami(&c, 2000).unwrap_or_else(|e| format!("error: {e}"));
                        *got.lock().unwrap().entry(who).or_insert(0) += 1;
                        calls += 1;
                    }
                    if instances(&c).len() == 4 {
                        saw_four.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let got = got.into_inner().unwrap();
    let total: usize = got.values().sum();
    assert!(saw_four.into_inner(), "the fourth instance was never seen");
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        vec!["a", "b", "c"],
        "only a, b and c answer, without errors: {got:?}"
    );
    for (name, weight) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        let share = got[name] as f64 / total as f64;
        let expected = weight / 6.0;
        assert!(
            (share - expected).abs() <= 0.02,
            "{name}: share {share:.4} vs weight share {expected:.4} over {total} calls: {got:?}"
        );
    }
    // Once the flapping stops, nothing is left behind: three subchannels, the exact split.
    assert!(
        eventually(Duration::from_secs(5), || instances(&c).len() == 3),
        "{}",
        c.stats()
    );
    assert_ready(&c, 3);
    assert_eq!(
        spread(&c, 600),
        counts(&[("a", 100), ("b", 200), ("c", 300)])
    );
}

#[test]
fn the_service_config_picks_the_policy() {
    let servers: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| TestServer::start(n, &[]))
        .collect();
    let refs: Vec<&TestServer> = servers.iter().collect();

    // The first supported entry wins; unsupported ones before it are skipped.
    let c = static_client(
        &refs,
        r#"{"service_config": {"loadBalancingConfig": [
            {"grpclb": {}}, {"round_robin": {}}, {"pick_first": {}}]}}"#,
    );
    assert_eq!(c.stats()["policy"], "round_robin");
    assert_ready(&c, 3);
    assert_eq!(spread(&c, 30), counts(&[("a", 10), ("b", 10), ("c", 10)]));
    c.close();

    // The deprecated field, when loadBalancingConfig is absent.
    let c = static_client(
        &refs,
        r#"{"service_config": {"loadBalancingPolicy": "round_robin"}}"#,
    );
    assert_eq!(c.stats()["policy"], "round_robin");
    assert_ready(&c, 3);
    assert_eq!(spread(&c, 30), counts(&[("a", 10), ("b", 10), ("c", 10)]));
    c.close();

    // The default is pick_first: the first address takes everything.
    for opts in [
        "{}",
        r#"{"service_config": {}}"#,
        r#"{"service_config": "{}"}"#,
    ] {
        let c = static_client(&refs, opts);
        assert_eq!(c.stats()["policy"], "pick_first", "{opts}");
        assert_ready(&c, 3);
        assert_eq!(spread(&c, 20), counts(&[("a", 20)]), "{opts}");
        c.close();
    }

    // No supported entry: the whole config is rejected, naming the field.
    let err = Options::from_json(Some(
        r#"{"service_config": {"loadBalancingConfig": [{"grpclb": {}}, {"ring_hash": {}}]}}"#,
    ))
    .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(
        err.message.contains("loadBalancingConfig") && err.message.contains("grpclb"),
        "{}",
        err.message
    );
}

#[test]
fn client_stats_report_each_instance_and_the_client_totals() {
    let etcd = Etcd::start();
    let good = TestServer::start("good", &[]);
    let bad = TestServer::start("bad", &["--fail-rate", "1"]);
    etcd.put_instance("svc/stats", &good.addr, 2.0);
    etcd.put_instance("svc/stats", &bad.addr, 1.0);
    let c = etcd_client(&etcd, WRR, "svc/stats");
    assert_ready(&c, 2);
    let got = spread(&c, 30);
    assert_eq!(got, counts(&[("error", 10), ("good", 20)]));

    let s = c.stats();
    assert_eq!(s["target"], "etcd:///svc/stats", "{s}");
    assert_eq!(s["policy"], "weighted_round_robin", "{s}");
    assert_eq!(s["resolved"], true, "{s}");
    assert_eq!(s["calls"], 30, "{s}");
    assert_eq!(s["calls_failed"], 10, "{s}");
    assert_eq!(s["attempts"], 30, "{s}");
    assert_eq!(s["retries"], 0, "{s}");
    assert_eq!(s["hedges"], 0, "{s}");
    assert_eq!(s["throttled_retries"], 0, "{s}");
    assert_eq!(instances(&c).len(), 2, "{s}");

    let g = instance(&c, &good.addr);
    assert_eq!(g["address"], good.addr.as_str(), "{g}");
    assert_eq!(g["weight"], 2.0, "{g}");
    assert_eq!(g["state"], "READY", "{g}");
    assert_eq!(g["calls"], 20, "{g}");
    assert_eq!(g["failures"], 0, "{g}");
    assert_eq!(g["in_flight"], 0, "{g}");
    assert_eq!(g["last_error"], Value::Null, "{g}");

    let b = instance(&c, &bad.addr);
    assert_eq!(b["address"], bad.addr.as_str(), "{b}");
    assert_eq!(b["weight"], 1.0, "{b}");
    assert_eq!(b["state"], "READY", "{b}");
    assert_eq!(b["calls"], 10, "{b}");
    assert_eq!(b["failures"], 10, "{b}");
    let last = b["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("UNAVAILABLE") && last.contains("gf-testserver bad: injected failure"),
        "{b}"
    );
}

/// Issue 23: 300 instances registered in etcd while a client is already calling (one
/// gf-testserver on 300 ports, the puts in transactions of 100) all become known, READY and
/// picked: round_robin over 900 calls reaches every one of them.
#[test]
fn three_hundred_instances_put_while_calling_all_receive_calls() {
    let etcd = Etcd::start();
    let server = TestServer::start("many", &["--ports", "300", "--no-health"]);
    assert_eq!(server.addrs.len(), 300);
    let c = etcd_client(&etcd, RR, "svc/many");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = whoami(&c, 1000);
            }
        });
        etcd.put_instances("svc/many", &server.addrs);
        assert_ready(&c, 300);
        stop.store(true, Ordering::Relaxed);
    });
    let before: BTreeMap<String, u64> = instances(&c)
        .iter()
        .map(|i| {
            (
                i["address"].as_str().unwrap().to_string(),
                i["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    for _ in 0..900 {
        whoami(&c, 5000).unwrap();
    }
    let got: BTreeMap<String, u64> = instances(&c)
        .iter()
        .map(|i| {
            let addr = i["address"].as_str().unwrap().to_string();
            let calls = i["calls"].as_u64().unwrap() - before[&addr];
            (addr, calls)
        })
        .collect();
    assert_eq!(got.len(), 300);
    let mut want: Vec<&String> = server.addrs.iter().collect();
    want.sort();
    assert_eq!(got.keys().collect::<Vec<_>>(), want);
    assert!(got.values().all(|&n| n == 3), "{got:?}");
}

#[test]
fn an_instance_added_in_etcd_ramps_up_under_slow_start() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    etcd.put_instance("svc/slow", &a.addr, 1.0);
    etcd.put_instance("svc/slow", &b.addr, 1.0);
    let c = etcd_client(
        &etcd,
        r#"{"loadBalancingConfig": [{"round_robin": {"slowStartConfig": {
            "slowStartWindow": "3s", "minWeightPercent": 10}}}]}"#,
        "svc/slow",
    );
    assert_ready(&c, 2);
    // The first set does not ramp: an even split at once.
    assert_eq!(spread(&c, 200), counts(&[("a", 100), ("b", 100)]));

    let n = TestServer::start("n", &[]);
    etcd.put_instance("svc/slow", &n.addr, 1.0);
    assert_ready(&c, 3);
    // Just added: 10% of a full share (15% by 0.5 s into the window), so about 5% of the
    // calls, where a full share would be a third.
    let early = spread(&c, 200);
    let new = early.get("n").copied().unwrap_or(0);
    assert!(
        (1..=30).contains(&new),
        "the new instance got {new} of 200 calls at the start of its window: {early:?}"
    );
    // After the window: its full share, in exact turns again.
    std::thread::sleep(Duration::from_millis(3200));
    assert!(
        eventually(Duration::from_secs(5), || spread(&c, 30)
            == counts(&[("a", 10), ("b", 10), ("n", 10)])),
        "never reached its full share: {}",
        c.stats()
    );
}

#[test]
fn least_request_sends_less_to_a_slow_instance() {
    let fast1 = TestServer::start("f", &[]);
    let fast2 = TestServer::start("g", &[]);
    let slow = TestServer::start("s", &["--delay-ms", "30"]);
    let c = static_client(
        &[&fast1, &fast2, &slow],
        r#"{"service_config": {"loadBalancingConfig": [{"least_request_experimental": {}}]}}"#,
    );
    assert_ready(&c, 3);
    assert_eq!(c.stats()["policy"], "least_request_experimental");
    let tally = Mutex::new(BTreeMap::<String, usize>::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..60 {
                    let who = whoami(&c, 5000).unwrap_or_else(|e| panic!("call failed: {e}"));
                    *tally.lock().unwrap().entry(who).or_insert(0) += 1;
                }
            });
        }
    });
    let tally = tally.into_inner().unwrap();
    let slow_calls = tally.get("s").copied().unwrap_or(0);
    // round_robin would give it a third (160 of 480); two choices on calls in flight steer
    // away from it while it holds calls.
    assert!(
        slow_calls < 72,
        "the slow instance took {slow_calls} of 480 calls: {tally:?}"
    );
    assert_eq!(tally.values().sum::<usize>(), 480);
}

#[test]
fn random_subsetting_connects_to_subset_size_instances() {
    let servers: Vec<TestServer> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| TestServer::start(n, &[]))
        .collect();
    let refs: Vec<&TestServer> = servers.iter().collect();
    let config = r#"{"service_config": {"loadBalancingConfig": [{"random_subsetting_experimental": {
        "subsetSize": 2, "childPolicy": [{"round_robin": {}}]}}]}}"#;
    let mut chosen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let c = static_client(&refs, config);
        assert_ready(&c, 2);
        let stats = c.stats();
        assert_eq!(stats["subset_size"], 2, "{stats}");
        assert_eq!(stats["policy"], "round_robin", "{stats}");
        assert_eq!(instances(&c).len(), 2, "{stats}");
        // round_robin over the subset: two instances, turn and turn about.
        let split = spread(&c, 40);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split.values().all(|v| *v == 20), "{split:?}");
        chosen.extend(split.into_keys());
    }
    // Each client's seed is its own: six clients do not all pick the same two of five
    // (the chance they would is 1 in 10^5).
    assert!(chosen.len() > 2, "every client chose {chosen:?}");
}
