//! A subchannel: one HTTP/2 connection to one instance, with gRPC's connectivity states and
//! connection backoff. The connection is owned by a background task; calls borrow a cheap
//! clone of its request sender.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Uri;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attempt::{Attempt, Destination};
use crate::backoff::Backoff;
use crate::config::ConnectBackoff;
use crate::metrics::LbCounters;
use crate::status::{Code, Status};
use crate::transport::{self, Sender, TransportConfig};

/// gRPC connectivity states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Idle = 0,
    Connecting = 1,
    Ready = 2,
    TransientFailure = 3,
    Shutdown = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Idle,
            1 => State::Connecting,
            2 => State::Ready,
            3 => State::TransientFailure,
            _ => State::Shutdown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "IDLE",
            State::Connecting => "CONNECTING",
            State::Ready => "READY",
            State::TransientFailure => "TRANSIENT_FAILURE",
            State::Shutdown => "SHUTDOWN",
        }
    }
}

/// How subchannels connect: gRPC's connection backoff, the minimum connect timeout, the
/// transport's settings.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    pub backoff: ConnectBackoff,
    pub min_connect_timeout: Duration,
    pub transport: TransportConfig,
    /// gRFC A17 health checking: the service name to watch, when enabled.
    pub health_service: Option<String>,
    /// Where connection attempts and disconnections are counted (shared by the client's
    /// subchannels).
    pub events: Arc<LbCounters>,
}

/// Per-instance counters, written only through [`Picked`] (the attempts' feedback) and read
/// for stats, the picker's in-flight limit and outlier detection.
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU32,
    /// Outlier detection's buckets for the current interval.
    interval_successes: AtomicU64,
    interval_failures: AtomicU64,
}

/// A snapshot of an instance's counters, for stats.
pub struct CounterSnapshot {
    pub calls: u64,
    pub failures: u64,
    pub in_flight: u32,
}

/// Outlier ejection state (gRFC A50), changed only by outlier detection's sweeps.
#[derive(Debug, Default)]
pub struct Ejection {
    /// Ejected until then; None = not ejected.
    pub until: Option<Instant>,
    /// Grows by one per ejection, decays by one per interval spent not ejected.
    pub multiplier: u32,
    /// Ejections so far, for stats.
    pub count: u32,
    /// Returns from ejection so far, for stats.
    pub unejections: u32,
}

pub struct Subchannel {
    pub id: u64,
    pub addr: String,
    pub origin: Uri,
    state: AtomicU8,
    /// Set once a connection attempt has failed since the last READY: the balancer then
    /// fails calls fast instead of queueing them behind a reconnect.
    failed_since_ready: AtomicBool,
    sender: ArcSwapOption<Sender>,
    weight: AtomicU64,
    metadata: ArcSwap<Value>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    /// Active health (gRFC A17): HEALTH_SERVING, or HEALTH_PENDING until the first answer of a
    /// new connection, or HEALTH_NOT_SERVING.
    health: AtomicU8,
    /// The last health answer (true before the first), and how often an answer differed from
    /// the one before it.
    last_answer: AtomicBool,
    health_changes: AtomicU64,
    ejection: Mutex<Ejection>,
    /// The keepalive time of this instance's next connections, in ms (0: off). Starts at the
    /// client's `keepalive_time_ms`; doubled each time the server says "too_many_pings".
    keepalive_ms: AtomicU64,
    shutdown: CancellationToken,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

const HEALTH_SERVING: u8 = 0;
const HEALTH_PENDING: u8 = 1;
const HEALTH_NOT_SERVING: u8 = 2;

impl Subchannel {
    pub fn new(addr: &str, weight: f64, metadata: Value) -> Result<Arc<Subchannel>, String> {
        let origin: Uri = format!("http://{addr}")
            .parse()
            .map_err(|e| format!("address {addr:?}: {e}"))?;
        Ok(Arc::new(Subchannel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            addr: addr.to_string(),
            origin,
            state: AtomicU8::new(State::Idle as u8),
            failed_since_ready: AtomicBool::new(false),
            sender: ArcSwapOption::empty(),
            weight: AtomicU64::new(weight.to_bits()),
            metadata: ArcSwap::from_pointee(metadata),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            health: AtomicU8::new(HEALTH_SERVING),
            last_answer: AtomicBool::new(true),
            health_changes: AtomicU64::new(0),
            ejection: Mutex::new(Ejection::default()),
            keepalive_ms: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        }))
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn failed_since_ready(&self) -> bool {
        self.failed_since_ready.load(Ordering::Acquire)
    }

    pub fn weight(&self) -> f64 {
        f64::from_bits(self.weight.load(Ordering::Relaxed))
    }

    /// Updates weight and metadata in place; true when the weight changed.
    pub fn set_endpoint_info(&self, weight: f64, metadata: Value) -> bool {
        self.metadata.store(Arc::new(metadata));
        self.weight.swap(weight.to_bits(), Ordering::Relaxed) != weight.to_bits()
    }

    pub fn metadata(&self) -> Arc<Value> {
        self.metadata.load_full()
    }

    pub fn healthy(&self) -> bool {
        self.health.load(Ordering::Acquire) == HEALTH_SERVING
    }

    /// Connected, and waiting for the first health-check answer.
    pub fn health_pending(&self) -> bool {
        self.health.load(Ordering::Acquire) == HEALTH_PENDING
    }

    /// Takes a health answer. Returns true when the health state changed (which includes the
    /// first answer of a connection).
    pub fn set_healthy(&self, healthy: bool) -> bool {
        if self.last_answer.swap(healthy, Ordering::AcqRel) != healthy {
            self.health_changes.fetch_add(1, Ordering::Relaxed);
        }
        let v = if healthy {
            HEALTH_SERVING
        } else {
            HEALTH_NOT_SERVING
        };
        self.health.swap(v, Ordering::AcqRel) != v
    }

    /// Health answers that differed from the instance's answer before (the first counts when it
    /// is "not serving").
    pub fn health_changes(&self) -> u64 {
        self.health_changes.load(Ordering::Relaxed)
    }

    /// The outlier ejection state; outlier detection changes it under this lock.
    pub fn ejection(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ejected(&self, now: Instant) -> bool {
        self.ejection().until.is_some_and(|until| until > now)
    }

    /// READY, healthy and not ejected: the picker may hand it out.
    pub fn pickable(&self, now: Instant) -> bool {
        self.state() == State::Ready && self.healthy() && !self.ejected(now)
    }

    pub fn counters(&self) -> CounterSnapshot {
        CounterSnapshot {
            calls: self.counters.calls.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
        }
    }

    /// Attempts picked for this instance and not finished yet.
    pub fn in_flight(&self) -> u32 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// A fake in-flight count, for the pickers' unit tests.
    #[cfg(test)]
    pub(super) fn set_in_flight(&self, n: u32) {
        self.counters.in_flight.store(n, Ordering::Relaxed);
    }

    /// Counts one finished attempt (see [`Picked::finish`]).
    pub(super) fn record(&self, status: &Status) {
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        if status.code == Code::Ok {
            c.interval_successes.fetch_add(1, Ordering::Relaxed);
        } else {
            c.failures.fetch_add(1, Ordering::Relaxed);
            c.interval_failures.fetch_add(1, Ordering::Relaxed);
            self.set_last_error(status.to_string());
        }
    }

    /// Outlier detection's (successes, failures) since the last call, which starts a new
    /// interval.
    pub fn take_interval(&self) -> (u64, u64) {
        (
            self.counters.interval_successes.swap(0, Ordering::Relaxed),
            self.counters.interval_failures.swap(0, Ordering::Relaxed),
        )
    }

    /// The current connection's request sender, if READY.
    pub fn sender(&self) -> Option<Arc<Sender>> {
        self.sender.load_full()
    }

    /// The connection `sender` belongs to refuses new streams (after a GOAWAY, or it failed):
    /// stop handing it out now. Its task tells the subchannel too, which then reconnects, but
    /// a call retried transparently in between would otherwise pick it again, and again.
    fn connection_refused(&self, sender: &Arc<Sender>) {
        let previous = self.sender.compare_and_swap(sender, None);
        if previous
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, sender))
        {
            log::debug!(
                "subchannel {}: its connection refuses new streams",
                self.addr
            );
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("last_error lock").clone()
    }

    pub fn set_last_error(&self, message: String) {
        *self.last_error.lock().expect("last_error lock") = Some(message);
    }

    pub fn shutdown(&self) {
        self.state.store(State::Shutdown as u8, Ordering::Release);
        self.sender.store(None);
        self.shutdown.cancel();
    }

    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    fn set_state(&self, state: State, on_change: &dyn Fn()) {
        if self.is_shut_down() {
            return;
        }
        let old = self.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            log::debug!(
                "subchannel {}: {} -> {}",
                self.addr,
                State::from_u8(old).name(),
                state.name()
            );
            on_change();
        }
    }

    /// Starts the connection loop ([`Subchannel::run`]) as a task. A panic in it marks the
    /// instance failed (TRANSIENT_FAILURE, with the panic as its last error) and the loop starts
    /// again: an instance is never left with no task behind it.
    pub fn start(self: Arc<Self>, cfg: ConnectConfig, on_change: Arc<dyn Fn() + Send + Sync>) {
        self.set_keepalive(&cfg.transport);
        let sc = self.clone();
        let notify = on_change.clone();
        crate::task::spawn_supervised(
            format!("subchannel {}", self.addr),
            move |why| {
                sc.sender.store(None);
                sc.set_last_error(format!("internal error in grpc-failover: {why}"));
                sc.failed_since_ready.store(true, Ordering::Release);
                sc.set_state(State::TransientFailure, &*notify);
            },
            move || self.clone().run(cfg.clone(), on_change.clone()),
        );
    }

    fn set_keepalive(&self, transport: &TransportConfig) {
        let ms = transport.keepalive_time.map_or(0, |t| t.as_millis());
        self.keepalive_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The server closed a connection because we pinged more often than it allows: double
    /// the keepalive time of the next connections, as grpc-go does (gRFC A8), saturating.
    fn slow_down_keepalive(&self, transport: &mut TransportConfig) {
        let Some(time) = transport.keepalive_time else {
            return;
        };
        let doubled = time.saturating_mul(2);
        log::warn!(
            "{}: the server sent GOAWAY too_many_pings; keepalive time for its next \
             connections doubled from {} ms to {} ms",
            self.addr,
            time.as_millis(),
            doubled.as_millis()
        );
        transport.keepalive_time = Some(doubled);
        self.set_keepalive(transport);
    }

    /// The keepalive time of this instance's next connections (None: off).
    pub fn keepalive_time(&self) -> Option<Duration> {
        match self.keepalive_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The connection loop: connect, serve until the connection closes, reconnect with backoff.
    /// Runs until [`Subchannel::shutdown`].
    pub async fn run(self: Arc<Self>, cfg: ConnectConfig, on_change: Arc<dyn Fn() + Send + Sync>) {
        let b = &cfg.backoff;
        let mut backoff = Backoff::new(b.base_delay, b.multiplier, b.jitter, b.max_delay);
        // The keepalive time as last doubled (kept across a restart of this loop).
        let mut transport = TransportConfig {
            keepalive_time: self.keepalive_time(),
            ..cfg.transport.clone()
        };
        loop {
            self.set_state(State::Connecting, &*on_change);
            // gRPC: each attempt gets max(MinConnectTimeout, current backoff).
            let attempt_timeout = cfg.min_connect_timeout.max(backoff.current());
            // Read at each attempt: a record's new server_name applies from the next
            // connection on.
            let server_name = crate::resolver::server_name_of(&self.metadata());
            log::debug!(
                "subchannel {}: connecting (attempt timeout {} ms)",
                self.addr,
                attempt_timeout.as_millis()
            );
            let attempt = tokio::time::timeout(
                attempt_timeout,
                transport::connect(&self.addr, &transport, server_name.as_deref()),
            );
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = attempt => r.unwrap_or_else(|_| Err(format!("connect to {} timed out after {} ms", self.addr, attempt_timeout.as_millis()))),
            };
            match result {
                Ok((sender, closed)) => {
                    backoff.reset();
                    let health = cfg.health_service.clone().map(|service| {
                        self.health.store(HEALTH_PENDING, Ordering::Release);
                        tokio::spawn(super::health::watch(
                            self.clone(),
                            sender.clone(),
                            service,
                            on_change.clone(),
                        ))
                    });
                    self.sender.store(Some(Arc::new(sender)));
                    if self.is_shut_down() {
                        // shutdown() ran between the connect and the store above.
                        self.sender.store(None);
                        if let Some(task) = health {
                            task.abort();
                        }
                        return;
                    }
                    self.failed_since_ready.store(false, Ordering::Release);
                    cfg.events.connection_attempt(true);
                    self.set_state(State::Ready, &*on_change);
                    let closed = tokio::select! {
                        _ = self.shutdown.cancelled() => None,
                        c = closed => Some(c.unwrap_or_else(|_| transport::Closed {
                            why: "connection task ended".to_string(),
                            too_many_pings: false,
                        })),
                    };
                    if let Some(task) = health {
                        task.abort();
                    }
                    cfg.events.disconnected();
                    let Some(closed) = closed else { return };
                    self.sender.store(None);
                    if closed.too_many_pings {
                        self.slow_down_keepalive(&mut transport);
                    }
                    let why = closed.why;
                    self.set_last_error(format!("connection to {} closed: {why}", self.addr));
                    self.set_state(State::Idle, &*on_change);
                }
                Err(e) => {
                    cfg.events.connection_attempt(false);
                    let delay = backoff.next_delay();
                    log::debug!(
                        "subchannel {}: {e}; next attempt in {} ms",
                        self.addr,
                        delay.as_millis()
                    );
                    self.set_last_error(e);
                    self.failed_since_ready.store(true, Ordering::Release);
                    self.set_state(State::TransientFailure, &*on_change);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// One pick's hold on an instance, like grpc-go's `PickResult` and its `Done`: the connection
/// the attempt goes to, counted in flight from the pick until the attempt ends. The attempt's
/// outcome comes back through [`Picked::finish`], which keeps the instance's counters, last
/// error and outlier buckets, and drops a connection that refused the request.
pub struct Picked {
    sc: Arc<Subchannel>,
    sender: Arc<Sender>,
}

impl Picked {
    /// None when `sc` has no connection to hand out (it just refused new streams).
    pub(super) fn new(sc: Arc<Subchannel>) -> Option<Picked> {
        let sender = sc.sender()?;
        sc.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Picked { sc, sender })
    }

    /// The instance's id, for the call's list of instances it has tried.
    pub fn id(&self) -> u64 {
        self.sc.id
    }

    pub fn destination(&self) -> Destination<'_> {
        Destination {
            sender: &self.sender,
            addr: &self.sc.addr,
            origin: &self.sc.origin,
        }
    }

    /// Feeds the attempt's outcome back to the instance. (An attempt dropped unfinished, a
    /// hedge that lost, only leaves the in-flight count.)
    pub fn finish(self, attempt: &Attempt) {
        self.sc.record(&attempt.result.status);
        if attempt.refused {
            self.sc.connection_refused(&self.sender);
        }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.sc.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
