//! etcd discovery and registration against real etcd processes (issue 3).

mod common;

use std::time::Duration;

use common::*;
use grpc_failover::config::EtcdOptions;
use grpc_failover::{Client, Code, Registration};

const WRR: &str = r#"{"loadBalancingConfig": [{"weighted_round_robin": {}}]}"#;
const RR: &str = r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#;

fn etcd_client(etcd: &[&Etcd], sc: &str, prefix: &str) -> Client {
    Client::connect(
        &format!("etcd:///{prefix}"),
        options(&Etcd::options_json(etcd, sc)),
    )
    .unwrap()
}

fn names(c: &Client, n: usize) -> std::collections::BTreeMap<String, usize> {
    spread(c, n)
}

#[test]
fn go_format_records_are_found_and_followed_live() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    etcd.put_instance("service/user", &a.addr, 1.0);
    let c = etcd_client(&[&etcd], RR, "service/user");
    assert_eq!(whoami(&c, 5000).unwrap(), "a");

    // Added while running.
    etcd.put_instance("service/user", &b.addr, 1.0);
    assert!(eventually(Duration::from_secs(5), || names(&c, 4).contains_key("b")));

    // Removed while running.
    etcd.delete(&format!("service/user/{}", a.addr));
    assert!(eventually(Duration::from_secs(5), || names(&c, 4).get("b") == Some(&4)));
    for _ in 0..20 {
        assert_eq!(whoami(&c, 2000).unwrap(), "b");
    }
}

#[test]
fn metadata_put_on_an_existing_key_reweights_in_place() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    etcd.put_instance("svc", &a.addr, 1.0);
    etcd.put_instance("svc", &b.addr, 1.0);
    let c = etcd_client(&[&etcd], WRR, "svc");
    assert!(eventually(Duration::from_secs(5), || c.stats()
        ["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "READY")
        .count()
        == 2));
    let even = names(&c, 100);
    assert_eq!((even["a"], even["b"]), (50, 50), "{even:?}");
    // The Go resolver ignores this PUT; we update the weight in place.
    etcd.put_instance("svc", &b.addr, 3.0);
    assert!(eventually(Duration::from_secs(5), || c.stats()
        ["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["weight"] == 3.0)));
    let skewed = names(&c, 400);
    assert_eq!((skewed["a"], skewed["b"]), (100, 300), "{skewed:?}");
    // The connection to b survived the update: still one subchannel per instance.
    assert_eq!(c.stats()["instances"].as_array().unwrap().len(), 2);
}

#[test]
fn prefix_isolation_and_values_that_are_not_json() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let other = TestServer::start("other", &[]);
    etcd.put_instance("service/user", &a.addr, 1.0);
    etcd.put_instance("service/user2", &other.addr, 1.0);
    etcd.put("service/user/garbage", "this is not json");
    etcd.put("service/user/noaddr", r#"{"Op":0,"Metadata":{"weight":5}}"#);
    let c = etcd_client(&[&etcd], RR, "service/user");
    let seen = names(&c, 20);
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(c.stats()["instances"].as_array().unwrap().len(), 1);
}

#[test]
fn empty_prefix_fails_with_no_instances() {
    let etcd = Etcd::start();
    let c = etcd_client(&[&etcd], RR, "service/nobody");
    let err = whoami(&c, 3000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(
        err.message.contains("no instances for service/nobody"),
        "{}",
        err.message
    );
}

#[test]
fn unreachable_etcd_at_connect_does_not_block_and_calls_carry_the_etcd_error() {
    let port = free_port();
    let started = std::time::Instant::now();
    let opts =
        format!(r#"{{"etcd": {{"endpoints": ["127.0.0.1:{port}"], "dial_timeout_ms": 300}}}}"#);
    let c = Client::connect("etcd:///service/user", options(&opts)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "connect blocked"
    );
    let err = whoami(&c, 1500).unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message
    );
    // Without a deadline the call fails once the resolver has reported its error.
    let err = whoami(&c, 0).unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
}

#[test]
fn sigkilled_server_disappears_when_its_lease_expires() {
    let etcd = Etcd::start();
    let mut a = TestServer::start(
        "a",
        &["--etcd", &etcd.endpoint, "--prefix", "svc", "--ttl", "2"],
    );
    let _b = TestServer::start(
        "b",
        &["--etcd", &etcd.endpoint, "--prefix", "svc", "--ttl", "2"],
    );
    assert_eq!(etcd.keys("svc/").len(), 2);
    let value = etcd.get(&format!("svc/{}", a.addr)).unwrap();
    assert_eq!(
        value,
        format!(
            r#"{{"Op":0,"Addr":"{}","Metadata":{{"weight":1}}}}"#,
            a.addr
        )
    );
    a.kill();
    assert!(
        eventually(Duration::from_secs(8), || etcd.keys("svc/").len() == 1),
        "the lease did not expire"
    );
}

#[test]
fn sigterm_deregisters_at_once() {
    let etcd = Etcd::start();
    let mut a = TestServer::start(
        "a",
        &["--etcd", &etcd.endpoint, "--prefix", "svc", "--ttl", "30"],
    );
    assert_eq!(etcd.keys("svc/").len(), 1);
    a.terminate();
    assert!(etcd.keys("svc/").is_empty());
}

#[test]
fn registrar_writes_once_and_reregisters_when_the_lease_is_lost() {
    let etcd = Etcd::start();
    let opts = EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        ..EtcdOptions::default()
    };
    let reg = block_on(Registration::register(
        &opts,
        "svc",
        "127.0.0.1:9999",
        serde_json::json!({"weight": 10}),
        2,
    ))
    .unwrap();
    let key = "svc/127.0.0.1:9999";
    assert_eq!(
        etcd.get(key).unwrap(),
        r#"{"Op":0,"Addr":"127.0.0.1:9999","Metadata":{"weight":10}}"#
    );
    let rev = |etcd: &Etcd| -> i64 {
        let out = etcd.ctl(&["get", key, "-w", "json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["kvs"][0]["mod_revision"].as_i64().unwrap_or(-1)
    };
    let first = rev(&etcd);
    // Three TTLs of keepalives: the record is not rewritten.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(rev(&etcd), first, "the registrar rewrote its record");
    // Lose the lease behind the registrar's back: it grants a new one and puts the record again.
    let lease = format!("{:x}", reg.lease_id());
    etcd.ctl(&["lease", "revoke", &lease]).unwrap();
    assert!(
        eventually(Duration::from_secs(8), || etcd.get(key).is_some()
            && rev(&etcd) != first),
        "not re-registered"
    );
    assert_ne!(format!("{:x}", reg.lease_id()), lease);
    block_on(reg.deregister()).unwrap();
    assert!(etcd.get(key).is_none());
}

#[test]
fn compaction_cancels_the_watch_and_the_set_converges() {
    // The client only talks to member 0. While member 0 is down, the set changes and the
    // history is compacted through member 1; when member 0 returns, the client's watch resumes
    // from a compacted revision, is cancelled by etcd, and the client lists again.
    let mut cluster = Etcd::cluster(3);
    let servers: Vec<TestServer> = (0..3)
        .map(|i| TestServer::start(&format!("s{i}"), &[]))
        .collect();
    cluster[0].put_instance("svc", &servers[0].addr, 1.0);
    cluster[0].put_instance("svc", &servers[1].addr, 1.0);
    let c = etcd_client(&[&cluster[0]], RR, "svc");
    assert!(eventually(Duration::from_secs(5), || names(&c, 4).len() == 2));
    cluster[0].kill();
    cluster[1].delete(&format!("svc/{}", servers[0].addr));
    cluster[1].put_instance("svc", &servers[2].addr, 1.0);
    let out = cluster[1]
        .ctl(&["put", "unrelated", "x", "-w", "json"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let revision = v["header"]["revision"].as_i64().unwrap();
    cluster[1].ctl(&["compact", &revision.to_string()]).unwrap();
    cluster[0].restart();
    let mut keys = cluster[0].keys("svc/");
    keys.sort();
    assert_eq!(keys.len(), 2);
    let converged = || {
        let mut addrs: Vec<String> = c.stats()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("svc/{}", i["address"].as_str().unwrap()))
            .collect();
        addrs.sort();
        addrs == keys
    };
    assert!(
        eventually(Duration::from_secs(15), converged),
        "{}",
        c.stats()
    );
    assert!(eventually(Duration::from_secs(5), || names(&c, 6)
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        == vec!["s1".to_string(), "s2".to_string()]));
    // One re-listing, after the watch found its revision compacted.
    assert_eq!(c.stats()["etcd"]["resyncs"], 1, "{}", c.stats());
}

#[test]
fn etcd_down_keeps_the_last_instances_and_changes_are_picked_up_when_it_returns() {
    let mut etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    etcd.put_instance("svc", &a.addr, 1.0);
    let c = etcd_client(&[&etcd], RR, "svc");
    assert_eq!(whoami(&c, 5000).unwrap(), "a");
    etcd.kill();
    // The registry is gone; the instances are not.
    for _ in 0..50 {
        assert_eq!(whoami(&c, 2000).unwrap(), "a");
    }
    assert!(eventually(Duration::from_secs(10), || !c.stats()
        ["resolver_error"]
        .is_null()));
    assert_eq!(whoami(&c, 2000).unwrap(), "a");
    etcd.restart();
    etcd.put_instance("svc", &b.addr, 1.0);
    etcd.delete(&format!("svc/{}", a.addr));
    assert!(
        eventually(Duration::from_secs(15), || whoami(&c, 2000).ok().as_deref()
            == Some("b")),
        "{}",
        c.stats()
    );
}

#[test]
fn a_three_member_cluster_keeps_working_when_one_member_dies() {
    let mut cluster = Etcd::cluster(3);
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    cluster[0].put_instance("svc", &a.addr, 1.0);
    let members: Vec<&Etcd> = cluster.iter().collect();
    let c = etcd_client(&members, RR, "svc");
    assert_eq!(whoami(&c, 5000).unwrap(), "a");
    cluster[0].kill();
    cluster[1].put_instance("svc", &b.addr, 1.0);
    assert!(
        eventually(Duration::from_secs(15), || names(&c, 4).contains_key("b")),
        "{}",
        c.stats()
    );
}

#[test]
fn a_partitioned_member_does_not_keep_the_client_on_a_stale_watch() {
    let cluster = Etcd::cluster(3);
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    cluster[0].put_instance("svc", &a.addr, 1.0);
    // The client only knows member 0; the other two freeze, so member 0 loses its leader.
    let c = etcd_client(&[&cluster[0]], RR, "svc");
    assert_eq!(whoami(&c, 5000).unwrap(), "a");
    cluster[1].pause();
    cluster[2].pause();
    // The registry is in trouble: the set is kept, calls go on.
    assert!(
        eventually(Duration::from_secs(10), || !c.stats()["resolver_error"]
            .is_null()),
        "no error noticed: {}",
        c.stats()
    );
    for _ in 0..20 {
        assert_eq!(whoami(&c, 2000).unwrap(), "a");
    }
    cluster[1].resume();
    cluster[2].resume();
    cluster[1].wait_healthy(Duration::from_secs(20));
    cluster[1].put_instance("svc", &b.addr, 1.0);
    assert!(
        eventually(Duration::from_secs(15), || names(&c, 4).contains_key("b")),
        "{}",
        c.stats()
    );
}

#[test]
fn username_and_password_auth() {
    let etcd = Etcd::start();
    etcd.ctl(&["user", "add", "root", "--new-user-password", "rootpw"])
        .unwrap();
    etcd.ctl(&["user", "grant-role", "root", "root"]).unwrap();
    etcd.ctl(&["auth", "enable"]).unwrap();
    let a = TestServer::start("a", &[]);
    etcd.ctl(&[
        "--user",
        "root:rootpw",
        "put",
        &format!("svc/{}", a.addr),
        &format!(r#"{{"Op":0,"Addr":"{}","Metadata":null}}"#, a.addr),
    ])
    .unwrap();
    let ok = format!(
        r#"{{"etcd": {{"endpoints": ["{}"], "username": "root", "password": "rootpw"}}}}"#,
        etcd.endpoint
    );
    let c = Client::connect("etcd:///svc", options(&ok)).unwrap();
    assert_eq!(whoami(&c, 5000).unwrap(), "a");
    let bad = format!(
        r#"{{"etcd": {{"endpoints": ["{}"], "username": "root", "password": "wrong"}}}}"#,
        etcd.endpoint
    );
    let c = Client::connect("etcd:///svc", options(&bad)).unwrap();
    let err = whoami(&c, 3000).unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(
        err.message.to_lowercase().contains("auth"),
        "{}",
        err.message
    );
    // The registrar logs in too.
    let opts = EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        username: Some("root".into()),
        password: Some("rootpw".into()),
        ..EtcdOptions::default()
    };
    let reg = block_on(Registration::register(
        &opts,
        "svc",
        "127.0.0.1:9",
        serde_json::Value::Null,
        5,
    ))
    .unwrap();
    block_on(reg.deregister()).unwrap();
}

/// A prefix that holds more than one etcd response may carry (4 MiB by default) is listed page
/// by page: five records of 1 MiB each, and 1,200 ordinary records (more than one page), around
/// the one live instance.
#[test]
fn a_prefix_larger_than_one_response_is_listed_in_pages() {
    let etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    block_on(async {
        let mut kv = etcd_client::Client::connect([etcd.endpoint.clone()], None)
            .await
            .expect("etcd");
        let padding = "p".repeat(1 << 20);
        for i in 0..5 {
            let addr = format!("127.0.0.1:{}", 1 + i);
            let record = format!(
                r#"{{"Op":0,"Addr":"{addr}","Metadata":{{"weight":0,"pad":"{padding}"}}}}"#
            );
            kv.put(format!("svc/big{i}"), record, None)
                .await
                .expect("put");
        }
        for i in 0..1200 {
            let addr = format!("127.0.0.2:{}", 1 + i);
            let record = format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":{{"weight":0}}}}"#);
            kv.put(format!("svc/{addr}"), record, None)
                .await
                .expect("put");
        }
    });
    etcd.put_instance("svc", &a.addr, 1.0);
    let c = etcd_client(&[&etcd], RR, "svc");
    assert_eq!(whoami(&c, 10_000).unwrap(), "a");
    assert_eq!(instances(&c).len(), 1206, "every record was listed");
}

/// Issue 21: the resolver's etcd events and the WRR weights in the client's metrics.
#[test]
fn etcd_events_and_registry_weights_are_counted() {
    let mut etcd = Etcd::start();
    let a = TestServer::start("a", &[]);
    let b = TestServer::start("b", &[]);
    let x = TestServer::start("x", &[]);
    etcd.put_instance("svc", &a.addr, 5.0);
    etcd.put_instance("svc", &b.addr, 20.0);
    let c = etcd_client(&[&etcd], WRR, "svc");
    assert!(wait_ready(&c, 2, Duration::from_secs(20)));
    let count = |path: &str| c.stats()["etcd"][path].as_u64().unwrap();
    // The two records were listed, not watched: no events yet.
    assert_eq!(
        (
            count("puts"),
            count("deletes"),
            count("resyncs"),
            count("watch_restarts")
        ),
        (0, 0, 0, 0)
    );
    etcd.put_instance("svc", &a.addr, 7.0);
    assert!(eventually(Duration::from_secs(5), || instance(&c, &a.addr)
        ["weight"]
        == 7.0));
    etcd.put_instance("svc", &x.addr, 1.0);
    assert!(eventually(Duration::from_secs(5), || !instance(
        &c, &x.addr
    )
    .is_null()));
    etcd.delete(&format!("svc/{}", x.addr));
    assert!(eventually(Duration::from_secs(5), || instance(&c, &x.addr).is_null()));
    assert_eq!(
        (
            count("puts"),
            count("deletes"),
            count("resyncs"),
            count("watch_restarts")
        ),
        (2, 1, 0, 0)
    );
    let text = c.metrics_text();
    let t = "grpc_target=\"etcd:///svc\"";
    for line in [
        format!("grpc_failover_etcd_events_total{{{t},type=\"put\"}} 2"),
        format!("grpc_failover_etcd_events_total{{{t},type=\"delete\"}} 1"),
        format!("grpc_failover_etcd_resyncs_total{{{t}}} 0"),
        format!("grpc_failover_etcd_watch_restarts_total{{{t}}} 0"),
        // Every instance has a weight of its own: never a round robin fallback, and no
        // weight at 0 or above 25 in the histogram (5, 7, 20 and x's 1).
        format!("grpc_lb_wrr_rr_fallback_total{{{t}}} 0"),
        format!("grpc_lb_wrr_endpoint_weight_not_yet_usable_total{{{t}}} 0"),
        format!("grpc_lb_wrr_endpoint_weights_bucket{{{t},le=\"0\"}} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let sample = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    let weights = sample(&format!("grpc_lb_wrr_endpoint_weights_count{{{t}}}"));
    assert!(weights >= 2.0);
    assert_eq!(
        sample(&format!(
            "grpc_lb_wrr_endpoint_weights_bucket{{{t},le=\"25\"}}"
        )),
        weights
    );

    // etcd goes away and comes back: the watch is opened again, from where it was (no
    // re-listing), and follows the registry as before.
    etcd.kill();
    assert!(eventually(Duration::from_secs(10), || !c.stats()
        ["resolver_error"]
        .is_null()));
    etcd.restart();
    etcd.put_instance("svc", &a.addr, 9.0);
    assert!(eventually(Duration::from_secs(15), || instance(
        &c, &a.addr
    )["weight"]
        == 9.0));
    assert!(count("watch_restarts") >= 1, "{}", c.stats());
    assert_eq!((count("puts"), count("resyncs")), (3, 0), "{}", c.stats());
}
