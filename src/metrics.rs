//! Per-client metrics: the gRFC A66 client metrics (names, units, labels and bucket bounds as
//! A66 gives them), recorded on the call path with relaxed atomics only (no lock, no
//! allocation), and written out as Prometheus text the way the OpenTelemetry Prometheus
//! exporter names them (`grpc.client.attempt.duration`, unit `s`, becomes
//! `grpc_client_attempt_duration_seconds_bucket`/`_sum`/`_count`).
//!
//! Label cardinality is bounded: `grpc.method` is the method's full name only for the methods
//! the options list (`metrics.methods`), `other` for every other one (A66); `grpc.status` is
//! one of the 17 codes; `grpc.target` is the client's target. Each series is spread over
//! [`SHARDS`] copies, each written by its own threads, so that threads on different cores do
//! not fight over one cache line; an export sums them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::status::Code;

/// A66's latency bucket bounds, in seconds.
pub const LATENCY_BOUNDS_S: [f64; 41] = [
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// A66's size bucket bounds, in bytes.
pub const SIZE_BOUNDS: [u64; 14] = [
    0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456,
    1073741824, 4294967296,
];

/// Copies of every series; a thread always records into the same one. The runtime has at most
/// 4 workers by default.
pub const SHARDS: usize = 4;

const CODES: usize = 17;

/// A histogram over fixed bounds: one counter per bucket (the last is +Inf) and the sum, in
/// the unit of the bounds' integer form (nanoseconds, bytes). The count is the buckets' sum.
struct Histogram<const B: usize> {
    buckets: [AtomicU64; B],
    sum: AtomicU64,
}

impl<const B: usize> Histogram<B> {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }

    /// Records `v` in the first bucket whose bound is >= v (Prometheus' `le`).
    fn record(&self, bounds: &[u64], v: u64) {
        let i = bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    fn add_into(&self, counts: &mut [u64; B], sum: &mut u64) {
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        *sum = sum.wrapping_add(self.sum.load(Ordering::Relaxed));
    }
}

const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_S.len() + 1;
const SIZE_BUCKETS: usize = SIZE_BOUNDS.len() + 1;

/// What is recorded per (method label, status).
struct StatusSeries {
    attempt_duration: Histogram<LATENCY_BUCKETS>,
    attempt_sent: Histogram<SIZE_BUCKETS>,
    attempt_rcvd: Histogram<SIZE_BUCKETS>,
    call_duration: Histogram<LATENCY_BUCKETS>,
}

/// What is recorded per method label.
struct MethodSeries {
    attempts_started: AtomicU64,
    by_status: [StatusSeries; CODES],
}

impl MethodSeries {
    fn new() -> Self {
        MethodSeries {
            attempts_started: AtomicU64::new(0),
            by_status: std::array::from_fn(|_| StatusSeries {
                attempt_duration: Histogram::new(),
                attempt_sent: Histogram::new(),
                attempt_rcvd: Histogram::new(),
                call_duration: Histogram::new(),
            }),
        }
    }
}

/// One shard: a series per method label (index 0 is `other`).
struct Shard {
    methods: Box<[MethodSeries]>,
}

/// The A66 metrics of one client.
pub struct Metrics {
    target: String,
    /// The method labels: "other", then the names the options listed.
    labels: Vec<String>,
    /// "/pkg.Service/Method" -> its label index (>= 1).
    index: HashMap<String, usize>,
    shards: Box<[Shard]>,
    latency_bounds_ns: [u64; LATENCY_BOUNDS_S.len()],
}

/// The method label a call records under: an index into the client's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodLabel(usize);

/// The shard of the calling thread: threads take shards in turn as they first record, so that
/// up to [`SHARDS`] threads (the runtime's workers, where calls run) each have one of their own.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Metrics {
    /// `methods`: full method names ("pkg.Service/Method", with or without the leading '/')
    /// labelled by name; every other method is labelled `other`.
    pub fn new(target: &str, methods: &[String]) -> Metrics {
        let mut labels = vec!["other".to_string()];
        let mut index = HashMap::new();
        for m in methods {
            let name = m.trim_start_matches('/').to_string();
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(format!("/{name}")) {
                labels.push(name);
                e.insert(labels.len() - 1);
            }
        }
        let shards = (0..SHARDS)
            .map(|_| Shard {
                methods: (0..labels.len()).map(|_| MethodSeries::new()).collect(),
            })
            .collect();
        Metrics {
            target: target.to_string(),
            labels,
            index,
            shards,
            latency_bounds_ns: LATENCY_BOUNDS_S.map(|s| (s * 1e9).round() as u64),
        }
    }

    /// The label `method` ("/pkg.Service/Method") records under.
    pub fn label(&self, method: &str) -> MethodLabel {
        if self.index.is_empty() {
            return MethodLabel(0);
        }
        MethodLabel(self.index.get(method).copied().unwrap_or(0))
    }

    fn series(&self, m: MethodLabel) -> &MethodSeries {
        &self.shards[shard_index()].methods[m.0]
    }

    pub fn attempt_started(&self, m: MethodLabel) {
        self.series(m)
            .attempts_started
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt ended with `code` after `took`, having sent and received these message bytes.
    pub fn attempt_ended(&self, m: MethodLabel, code: Code, took: Duration, sent: u64, rcvd: u64) {
        let s = &self.series(m).by_status[code as usize % CODES];
        s.attempt_duration
            .record(&self.latency_bounds_ns, nanos(took));
        s.attempt_sent.record(&SIZE_BOUNDS, sent);
        s.attempt_rcvd.record(&SIZE_BOUNDS, rcvd);
    }

    /// A call (all its attempts) ended with `code` after `took`.
    pub fn call_ended(&self, m: MethodLabel, code: Code, took: Duration) {
        self.series(m).by_status[code as usize % CODES]
            .call_duration
            .record(&self.latency_bounds_ns, nanos(took));
    }

    /// Appends the A66 families as Prometheus text.
    pub fn write_text(&self, out: &mut String) {
        let target = escape(&self.target);
        family(
            out,
            "grpc_client_attempt_started_total",
            "counter",
            "Number of client call attempts started.",
        );
        for (i, label) in self.labels.iter().enumerate() {
            let n: u64 = self
                .shards
                .iter()
                .map(|s| s.methods[i].attempts_started.load(Ordering::Relaxed))
                .sum();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "grpc_client_attempt_started_total{{grpc_method=\"{}\",grpc_target=\"{target}\"}} {n}",
                    escape(label)
                );
            }
        }
        type Pick<const B: usize> = fn(&StatusSeries) -> &Histogram<B>;
        let latency: [(&str, &str, Pick<LATENCY_BUCKETS>); 2] = [
            (
                "grpc_client_attempt_duration_seconds",
                "Time taken to complete a client call attempt.",
                |s| &s.attempt_duration,
            ),
            (
                "grpc_client_call_duration_seconds",
                "Time taken by gRPC to complete an RPC from application's perspective.",
                |s| &s.call_duration,
            ),
        ];
        for (name, help, pick) in latency {
            family(out, name, "histogram", help);
            let bounds: Vec<String> = LATENCY_BOUNDS_S.iter().map(|b| format!("{b}")).collect();
            self.write_histograms(out, name, &target, &bounds, pick, |ns| {
                format!("{}", ns as f64 / 1e9)
            });
        }
        let sizes: [(&str, &str, Pick<SIZE_BUCKETS>); 2] = [
            (
                "grpc_client_attempt_sent_total_compressed_message_size_bytes",
                "Compressed message bytes sent per client call attempt.",
                |s| &s.attempt_sent,
            ),
            (
                "grpc_client_attempt_rcvd_total_compressed_message_size_bytes",
                "Compressed message bytes received per call attempt.",
                |s| &s.attempt_rcvd,
            ),
        ];
        for (name, help, pick) in sizes {
            family(out, name, "histogram", help);
            let bounds: Vec<String> = SIZE_BOUNDS.iter().map(|b| format!("{b}")).collect();
            self.write_histograms(out, name, &target, &bounds, pick, |b| format!("{b}"));
        }
    }

    fn write_histograms<const B: usize>(
        &self,
        out: &mut String,
        name: &str,
        target: &str,
        bounds: &[String],
        pick: fn(&StatusSeries) -> &Histogram<B>,
        sum_text: impl Fn(u64) -> String,
    ) {
        for (i, label) in self.labels.iter().enumerate() {
            for code in 0..CODES {
                let mut counts = [0u64; B];
                let mut sum = 0u64;
                for shard in self.shards.iter() {
                    pick(&shard.methods[i].by_status[code]).add_into(&mut counts, &mut sum);
                }
                let count: u64 = counts.iter().sum();
                if count == 0 {
                    continue;
                }
                let labels = format!(
                    "grpc_method=\"{}\",grpc_status=\"{}\",grpc_target=\"{target}\"",
                    escape(label),
                    crate::status::code_name(Code::from_i32(code as i32))
                );
                let mut cumulative = 0;
                for (b, c) in bounds.iter().zip(counts.iter()) {
                    cumulative += c;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_text(sum));
                let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
            }
        }
    }
}

/// Bucket bounds of `grpc.lb.wrr.endpoint_weights`: A78 names none, so these are
/// OpenTelemetry's default explicit bounds.
pub const WEIGHT_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// What a registry event was, for [`LbCounters::resolver_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolverEvent {
    /// A watch event that put a key under the prefix.
    Put,
    /// A watch event that deleted a key under the prefix.
    Delete,
    /// The watch's revision was compacted away: the prefix is listed again.
    Resync,
    /// A watch that was running ended (lost connection, compaction, cancelled by etcd) and is
    /// opened again.
    WatchRestart,
}

/// What the balancer, its connections and its resolver did: the gRFC A94 subchannel metrics
/// (A78's pick_first metrics are the same counts), the A78 weighted round robin metrics, and
/// the resolver's etcd events. Written off the call path only: when a connection opens or
/// closes, when the picker is rebuilt, when etcd sends an event.
#[derive(Debug, Default)]
pub struct LbCounters {
    connection_attempts_succeeded: AtomicU64,
    connection_attempts_failed: AtomicU64,
    disconnections: AtomicU64,
    rr_fallback: AtomicU64,
    weight_not_yet_usable: AtomicU64,
    /// `grpc.lb.wrr.endpoint_weights`: one count per bound of [`WEIGHT_BOUNDS`] and +Inf, and
    /// the sum.
    weights: std::sync::Mutex<([u64; WEIGHT_BOUNDS.len() + 1], f64)>,
    etcd_puts: AtomicU64,
    etcd_deletes: AtomicU64,
    etcd_resyncs: AtomicU64,
    etcd_watch_restarts: AtomicU64,
}

impl LbCounters {
    /// A connection attempt ended: connected (the connection is open from now until
    /// [`LbCounters::disconnected`]) or failed.
    pub fn connection_attempt(&self, succeeded: bool) {
        let c = if succeeded {
            &self.connection_attempts_succeeded
        } else {
            &self.connection_attempts_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An open connection closed (the server or the network ended it, or the instance left).
    pub fn disconnected(&self) {
        self.disconnections.fetch_add(1, Ordering::Relaxed);
    }

    /// A weighted round robin scheduler update over instances whose registry weights are
    /// `weights` (None: the record has no usable weight, and the instance takes the default).
    /// Counts `rr_fallback` when no instance has a positive weight of its own (the schedule is
    /// then plain round robin), one `endpoint_weight_not_yet_usable` per instance without a
    /// weight, and each weight in the histogram (0 for those without, as A78 says).
    pub fn wrr_update(&self, weights: impl Iterator<Item = Option<f64>>) {
        let mut any_positive = false;
        let mut unusable = 0;
        let mut h = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        for w in weights {
            any_positive |= w.is_some_and(|w| w > 0.0);
            unusable += u64::from(w.is_none());
            let w = w.unwrap_or(0.0);
            h.0[WEIGHT_BOUNDS.partition_point(|&b| b < w)] += 1;
            h.1 += w;
        }
        drop(h);
        if !any_positive {
            self.rr_fallback.fetch_add(1, Ordering::Relaxed);
        }
        self.weight_not_yet_usable
            .fetch_add(unusable, Ordering::Relaxed);
    }

    pub fn resolver_event(&self, e: ResolverEvent) {
        let c = match e {
            ResolverEvent::Put => &self.etcd_puts,
            ResolverEvent::Delete => &self.etcd_deletes,
            ResolverEvent::Resync => &self.etcd_resyncs,
            ResolverEvent::WatchRestart => &self.etcd_watch_restarts,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn connections(&self) -> (u64, u64, u64) {
        (
            self.connection_attempts_succeeded.load(Ordering::Relaxed),
            self.connection_attempts_failed.load(Ordering::Relaxed),
            self.disconnections.load(Ordering::Relaxed),
        )
    }

    /// The counts as JSON, for `gf_client_stats`.
    pub fn stats(&self, wrr: bool, etcd: bool) -> serde_json::Value {
        let (ok, failed, closed) = self.connections();
        let mut v = serde_json::json!({
            "connections": {
                "attempts_succeeded": ok,
                "attempts_failed": failed,
                "disconnections": closed,
                "open": ok.saturating_sub(closed),
            },
        });
        if wrr {
            v["wrr"] = serde_json::json!({
                "rr_fallback": self.rr_fallback.load(Ordering::Relaxed),
                "endpoint_weight_not_yet_usable": self.weight_not_yet_usable.load(Ordering::Relaxed),
            });
        }
        if etcd {
            v["etcd"] = serde_json::json!({
                "puts": self.etcd_puts.load(Ordering::Relaxed),
                "deletes": self.etcd_deletes.load(Ordering::Relaxed),
                "resyncs": self.etcd_resyncs.load(Ordering::Relaxed),
                "watch_restarts": self.etcd_watch_restarts.load(Ordering::Relaxed),
            });
        }
        v
    }

    /// Appends the families as Prometheus text: the A94 subchannel metrics always, A78's
    /// pick_first names under pick_first, the A78 WRR metrics under weighted_round_robin, the
    /// etcd counters for an etcd target. `target` is escaped already.
    pub fn write_text(
        &self,
        out: &mut String,
        target: &str,
        pick_first: bool,
        wrr: bool,
        etcd: bool,
    ) {
        let (ok, failed, closed) = self.connections();
        let mut prefixes = vec!["grpc_subchannel"];
        if pick_first {
            prefixes.push("grpc_lb_pick_first");
        }
        for prefix in prefixes {
            for (name, help, v) in [
                (
                    "disconnections",
                    "Number of times the selected subchannel becomes disconnected.",
                    closed,
                ),
                (
                    "connection_attempts_succeeded",
                    "Number of successful connection attempts.",
                    ok,
                ),
                (
                    "connection_attempts_failed",
                    "Number of failed connection attempts.",
                    failed,
                ),
            ] {
                let name = format!("{prefix}_{name}_total");
                family(out, &name, "counter", help);
                let _ = writeln!(out, "{name}{{grpc_target=\"{target}\"}} {v}");
            }
        }
        let name = "grpc_subchannel_open_connections";
        family(out, name, "gauge", "Number of open connections.");
        let _ = writeln!(
            out,
            "{name}{{grpc_target=\"{target}\"}} {}",
            ok.saturating_sub(closed)
        );
        if wrr {
            for (name, help, v) in [
                (
                    "grpc_lb_wrr_rr_fallback_total",
                    "Number of scheduler updates in which there were not enough endpoints with valid weight, which caused the WRR policy to fall back to RR behavior.",
                    self.rr_fallback.load(Ordering::Relaxed),
                ),
                (
                    "grpc_lb_wrr_endpoint_weight_not_yet_usable_total",
                    "Number of endpoints from each scheduler update that don't yet have usable weight information.",
                    self.weight_not_yet_usable.load(Ordering::Relaxed),
                ),
                (
                    "grpc_lb_wrr_endpoint_weight_stale_total",
                    "Number of endpoints from each scheduler update whose latest weight is older than the expiration period (registry weights do not expire: always 0).",
                    0,
                ),
            ] {
                family(out, name, "counter", help);
                let _ = writeln!(out, "{name}{{grpc_target=\"{target}\"}} {v}");
            }
            let name = "grpc_lb_wrr_endpoint_weights";
            family(out, name, "histogram", "Weight of each endpoint, recorded on every scheduler update; endpoints without usable weights are recorded as 0.");
            let (counts, sum) = *self.weights.lock().unwrap_or_else(|e| e.into_inner());
            let l = format!("grpc_target=\"{target}\"");
            let mut cumulative = 0;
            for (b, c) in WEIGHT_BOUNDS.iter().zip(counts.iter()) {
                cumulative += c;
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
            }
            let count: u64 = counts.iter().sum();
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{l}}} {count}");
        }
        if etcd {
            let name = "grpc_failover_etcd_events_total";
            family(
                out,
                name,
                "counter",
                "etcd watch events under the target's prefix, by type.",
            );
            for (kind, c) in [("put", &self.etcd_puts), ("delete", &self.etcd_deletes)] {
                let _ = writeln!(
                    out,
                    "{name}{{grpc_target=\"{target}\",type=\"{kind}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
            for (name, help, c) in [
                (
                    "grpc_failover_etcd_resyncs_total",
                    "Times the prefix was listed again because the watch's revision was compacted.",
                    &self.etcd_resyncs,
                ),
                (
                    "grpc_failover_etcd_watch_restarts_total",
                    "Times a running etcd watch ended (lost connection, compaction, cancelled by etcd) and was opened again.",
                    &self.etcd_watch_restarts,
                ),
            ] {
                family(out, name, "counter", help);
                let _ = writeln!(out, "{name}{{grpc_target=\"{target}\"}} {}", c.load(Ordering::Relaxed));
            }
        }
    }
}

/// Writes a family's HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_le_bounds_and_counts_add_up() {
        let m = Metrics::new("static:///a", &["pkg.S/Known".to_string()]);
        let known = m.label("/pkg.S/Known");
        assert_eq!(known, MethodLabel(1));
        assert_eq!(m.label("/pkg.S/Other"), MethodLabel(0));
        m.call_ended(known, Code::Ok, Duration::from_micros(10)); // le 0.00001
        m.call_ended(known, Code::Ok, Duration::from_millis(3)); // le 0.003
        m.call_ended(
            m.label("/x.Y/Z"),
            Code::Unavailable,
            Duration::from_secs(500),
        ); // +Inf
        let mut text = String::new();
        m.write_text(&mut text);
        let line = |l: &str| text.lines().any(|x| x == l);
        let ok = "grpc_method=\"pkg.S/Known\",grpc_status=\"OK\",grpc_target=\"static:///a\"";
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{ok},le=\"0\"}} 0"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{ok},le=\"0.00001\"}} 1"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{ok},le=\"0.002\"}} 1"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{ok},le=\"0.003\"}} 2"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_count{{{ok}}} 2"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_sum{{{ok}}} 0.00301"
        )));
        let other = "grpc_method=\"other\",grpc_status=\"UNAVAILABLE\",grpc_target=\"static:///a\"";
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{other},le=\"100\"}} 0"
        )));
        assert!(line(&format!(
            "grpc_client_call_duration_seconds_bucket{{{other},le=\"+Inf\"}} 1"
        )));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
