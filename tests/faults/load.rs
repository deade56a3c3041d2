//! The load every fault runs under: 32 callers, each with one call in flight at a time, for at
//! least 5 s, counting what they sent and how it ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpc_failover::{CallOptions, Client};

use crate::common::block_on;

pub const CALLERS: usize = 32;
/// The load lasts at least this long, and goes on after the fault's script for `TAIL`, so the
/// state the fault leaves behind is called too.
pub const MIN_LOAD: Duration = Duration::from_secs(5);
const TAIL: Duration = Duration::from_secs(1);
/// The distinct error messages kept for the failure report.
const KEPT_ERRORS: usize = 8;

/// What the callers saw.
pub struct Report {
    pub fault: &'static str,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p99: Duration,
    /// Successful calls by the answering server's name (`Whoami`).
    pub by_server: BTreeMap<String, u64>,
    /// Error message -> count, for the first few distinct messages.
    pub errors: BTreeMap<String, u64>,
    pub stats: serde_json::Value,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    by_server: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// Runs `CALLERS` callers of `/test.Svc/Whoami` on `client` with `timeout` per call while
/// `fault` runs on this thread, then for `TAIL` more and until `MIN_LOAD` has passed.
pub fn under_load(
    fault_name: &'static str,
    client: &Client,
    timeout: Duration,
    fault: impl FnOnce(),
) -> Report {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| s.spawn(|| caller(client, timeout, &stop)))
            .collect();
        // Stops the callers also when `fault` panics: otherwise the scope waits for them forever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        fault();
        let end = (Instant::now() + TAIL).max(started + MIN_LOAD);
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        stop.store(true, Ordering::Relaxed);
        callers
            .into_iter()
            .map(|c| c.join().expect("caller thread"))
            .collect()
    });
    let mut all = Tally::default();
    for t in tallies {
        all.sent += t.sent;
        all.ok += t.ok;
        all.failed += t.failed;
        all.latencies.extend(t.latencies);
        for (k, v) in t.by_server {
            *all.by_server.entry(k).or_insert(0) += v;
        }
        for (k, v) in t.errors {
            if all.errors.len() < KEPT_ERRORS || all.errors.contains_key(&k) {
                *all.errors.entry(k).or_insert(0) += v;
            }
        }
    }
    all.latencies.sort_unstable();
    let p99 = all
        .latencies
        .get(all.latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    Report {
        fault: fault_name,
        sent: all.sent,
        ok: all.ok,
        failed: all.failed,
        p99,
        by_server: all.by_server,
        errors: all.errors,
        stats: client.stats(),
    }
}

fn caller(client: &Client, timeout: Duration, stop: &AtomicBool) -> Tally {
    let opts = CallOptions {
        timeout: Some(timeout),
        ..Default::default()
    };
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        t.sent += 1;
        let began = Instant::now();
        let result = block_on(client.invoke("/test.Svc/Whoami", Bytes::new(), &opts));
        t.latencies.push(began.elapsed());
        match result {
            Ok(name) => {
                t.ok += 1;
                let name = String::from_utf8_lossy(&name);
                match t.by_server.get_mut(name.as_ref()) {
                    Some(n) => *n += 1,
                    None => {
                        t.by_server.insert(name.into_owned(), 1);
                    }
                }
            }
            Err(status) => {
                t.failed += 1;
                let key = format!("{:?}: {}", status.code, status.message);
                if t.errors.len() < KEPT_ERRORS || t.errors.contains_key(&key) {
                    *t.errors.entry(key).or_insert(0) += 1;
                }
            }
        }
    }
    t
}

impl Report {
    /// Prints the fault's summary line and asserts what every fault must hold: every call
    /// accounted for, and no caller-visible error.
    pub fn check(&self) {
        let s = &self.stats;
        eprintln!(
            "fault {}: sent={} ok={} failed={} p99={:.1}ms retries={} transparent_retries={} hedges={} by_server={:?}",
            self.fault,
            self.sent,
            self.ok,
            self.failed,
            self.p99.as_secs_f64() * 1000.0,
            s["retries"],
            s["transparent_retries"],
            s["hedges"],
            self.by_server,
        );
        assert_eq!(
            self.sent,
            self.ok + self.failed,
            "fault {}: calls unaccounted for",
            self.fault
        );
        assert!(self.sent > 0, "fault {}: no call was made", self.fault);
        assert_eq!(
            self.failed, 0,
            "fault {}: callers saw errors {:?}; client stats {}",
            self.fault, self.errors, self.stats
        );
    }

    /// Asserts that the backend `name` served calls during the fault (one the fault added or
    /// brought back).
    pub fn assert_served_by(&self, name: &str) {
        assert!(
            self.by_server.contains_key(name),
            "fault {}: {name} served no call: {:?}",
            self.fault,
            self.by_server
        );
    }
}
