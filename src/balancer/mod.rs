//! The balancer owns one subchannel per instance, follows the resolver's instance sets, and
//! rebuilds the picker whenever an instance's state, weight or health changes. Subchannel
//! state changes are coalesced: the first one in a quiet period rebuilds at once, the ones
//! that follow within [`REBUILD_WINDOW`] share one rebuild at its end, so 10,000 instances
//! connecting cost a few hundred rebuilds, not 10,000.

pub mod health;
pub mod outlier;
pub mod picker;
mod slow_start;
pub mod subchannel;
pub mod subset;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{LbConfig, Policy, SlowStart};
use crate::metrics::ResolverEvent;
use crate::resolver::{Endpoint, ResolverSink};
use crate::status::Status;
use picker::{Empty, Pick, Picker};
use slow_start::Ramp;
pub use subchannel::Picked;
use subchannel::{ConnectConfig, State, Subchannel};

#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    /// This balancer, for the timers it sets itself (the slow-start ramp).
    me: Weak<Inner>,
    /// How the target is named in error messages ("127.0.0.1:1,127.0.0.1:2" or the etcd prefix).
    target: String,
    policy: Policy,
    slow_start: Option<SlowStart>,
    /// gRFC A68: the subset of the instances this client connects to.
    subsetter: Option<subset::Subsetter>,
    connect: ConnectConfig,
    max_in_flight: Option<u32>,
    /// Whether the instances come from etcd (the etcd counters apply).
    etcd: bool,
    subchannels: Mutex<Vec<Arc<Subchannel>>>,
    resolver: Mutex<ResolverState>,
    picker: ArcSwap<Picker>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Serializes rebuilds (a slower one never stores an older snapshot over a newer one) and
    /// holds the (instance, weight) list the current picker was built from: a rebuild that
    /// would produce the same non-empty list keeps the current picker, so a state change
    /// elsewhere (a dead instance's reconnect attempts) does not restart the rotation.
    rebuilding: Mutex<Rebuilding>,
    coalesce: Mutex<Coalesce>,
    /// A rebuild for the next step of a slow-start ramp is scheduled.
    ramp_tick: AtomicBool,
    /// The first instance set has been applied (instances added later ramp in slow start).
    updated: AtomicBool,
    closed: AtomicBool,
}

#[derive(Default)]
struct Rebuilding {
    /// The (instance, weight, slow-start factor) list the current picker was built from.
    key: Vec<(usize, u64, u64)>,
    ramp: Ramp,
}

/// How long state changes after a rebuild wait to share the next one.
pub(crate) const REBUILD_WINDOW: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Coalesce {
    /// When the last rebuild started.
    last: Option<Instant>,
    /// A trailing rebuild is scheduled.
    pending: bool,
}

#[derive(Default)]
struct ResolverState {
    resolved: bool,
    error: Option<String>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Balancer {
    pub fn new(
        target: String,
        lb: &LbConfig,
        connect: ConnectConfig,
        max_in_flight: Option<u32>,
        etcd: bool,
    ) -> Balancer {
        let (changed, _) = tokio::sync::watch::channel(0);
        let policy = lb.policy;
        Balancer {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                target,
                policy,
                slow_start: lb
                    .slow_start
                    .clone()
                    .filter(|_| policy != Policy::PickFirst),
                subsetter: lb
                    .subset_size
                    .map(|n| subset::Subsetter::new(n.max(1) as usize)),
                connect,
                max_in_flight,
                etcd,
                subchannels: Mutex::new(Vec::new()),
                resolver: Mutex::new(ResolverState::default()),
                picker: ArcSwap::from_pointee(Picker::empty(Empty::Unresolved(None))),
                changed,
                rebuilding: Mutex::new(Rebuilding::default()),
                coalesce: Mutex::new(Coalesce::default()),
                ramp_tick: AtomicBool::new(false),
                updated: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The sink the resolver writes instance sets and errors into.
    pub fn sink(&self) -> Arc<dyn ResolverSink> {
        Arc::new(Sink(Arc::downgrade(&self.inner)))
    }

    pub fn subchannels(&self) -> Vec<Arc<Subchannel>> {
        self.inner
            .subchannels
            .lock()
            .expect("subchannels lock")
            .clone()
    }

    /// Picks an instance for one attempt. Waits while the picker says "queue" (first resolution,
    /// first connection) or, for wait-for-ready calls, while nothing is pickable; gives up at
    /// `deadline`.
    pub async fn pick(
        &self,
        avoid: &[u64],
        wait_for_ready: bool,
        deadline: Option<Instant>,
    ) -> Result<Picked, Status> {
        let mut changes = self.inner.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let picker = self.inner.picker.load();
            let waiting_for = match picker.pick(avoid) {
                Pick::Ready(sc) => match Picked::new(sc.clone()) {
                    Some(picked) => return Ok(picked),
                    // Its connection just refused new streams: the subchannel reconnects and
                    // the picker changes; wait for that, as for one still connecting.
                    None => Empty::Connecting,
                },
                Pick::Fail(status)
                    if !wait_for_ready || status.code == tonic::Code::ResourceExhausted =>
                {
                    return Err(status)
                }
                Pick::Fail(status) => Empty::Failing(status),
                Pick::Queue(why) => why,
            };
            if let Empty::Unresolved(Some(err)) = &waiting_for {
                if deadline.is_none() && !wait_for_ready {
                    return Err(Status::unavailable(err.clone()));
                }
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(Status::cancelled("client closed"));
            }
            let expired = match deadline {
                Some(d) => tokio::select! {
                    r = changes.changed() => r.is_err(),
                    _ = tokio::time::sleep_until(d) => true,
                },
                None => changes.changed().await.is_err(),
            };
            if expired {
                return Err(match waiting_for {
                    Empty::Unresolved(Some(err)) => Status::unavailable(err),
                    Empty::Unresolved(None) => Status::deadline_exceeded(format!(
                        "deadline exceeded while resolving {}",
                        self.inner.target
                    )),
                    Empty::Connecting => Status::deadline_exceeded(format!(
                        "deadline exceeded while connecting to {}",
                        self.inner.target
                    )),
                    Empty::Failing(status) => Status::deadline_exceeded(format!(
                        "deadline exceeded waiting for a ready instance: {}",
                        status.message
                    )),
                });
            }
        }
    }

    /// Something changed outside the balancer's view (health, ejection): rebuild the picker.
    pub fn refresh(&self) {
        self.inner.rebuild();
    }

    /// The LB families of the client's metrics text (see [`LbCounters::write_text`]).
    pub fn write_metrics(&self, out: &mut String, target: &str) {
        let policy = self.inner.policy;
        self.inner.connect.events.write_text(
            out,
            target,
            policy == Policy::PickFirst,
            policy == Policy::WeightedRoundRobin,
            self.inner.etcd,
        );
    }

    /// Per-instance state for `gf_client_stats`. A rebuild still waiting out its coalescing
    /// window runs first, so that an instance reported READY here is also in the picker.
    pub fn stats(&self) -> Value {
        if self.inner.coalesce.lock().expect("coalesce lock").pending {
            self.inner.rebuild();
        }
        let now = Instant::now();
        let now_ms = unix_ms();
        let subs = self.subchannels();
        let instances: Vec<Value> = subs
            .iter()
            .map(|s| {
                let (until, ejections, unejections) = {
                    let e = s.ejection();
                    (e.until.filter(|u| *u > now), e.count, e.unejections)
                };
                // Reported as wall-clock time, for people reading the stats.
                let until_ms = until.map(|u| now_ms + (u - now).as_millis() as u64);
                let c = s.counters();
                json!({
                    "address": s.addr,
                    "weight": s.weight(),
                    "metadata": *s.metadata(),
                    "state": s.state().name(),
                    "healthy": s.healthy(),
                    "ejected": until.is_some(),
                    "ejected_until_ms": until_ms,
                    "ejections": ejections,
                    "unejections": unejections,
                    "health_changes": s.health_changes(),
                    "calls": c.calls,
                    "failures": c.failures,
                    "in_flight": c.in_flight,
                    "last_error": s.last_error(),
                    "keepalive_time_ms": s.keepalive_time().map(|t| t.as_millis() as u64),
                })
            })
            .collect();
        let resolver = self.inner.resolver.lock().expect("resolver lock");
        let mut v = json!({
            "policy": self.inner.policy.name(),
            "subset_size": self.inner.subsetter.as_ref().map(|s| s.size()),
            "resolved": resolver.resolved,
            "resolver_error": resolver.error,
            "instances": instances,
        });
        let lb = self.inner.connect.events.stats(
            self.inner.policy == Policy::WeightedRoundRobin,
            self.inner.etcd,
        );
        if let (Some(v), Value::Object(lb)) = (v.as_object_mut(), lb) {
            v.extend(lb);
        }
        v
    }

    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let subs = std::mem::take(&mut *self.inner.subchannels.lock().expect("subchannels lock"));
        for s in subs {
            s.shutdown();
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }
}

impl Inner {
    /// Applies a new instance set: new addresses get a subchannel, gone ones are shut down,
    /// the rest keep their connection and get the new weight and metadata in place.
    fn update(self: &Arc<Self>, endpoints: Vec<Endpoint>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // One endpoint per address (the first wins), then this client's subset of them.
        let mut seen: HashSet<String> = HashSet::with_capacity(endpoints.len());
        let mut endpoints: Vec<Endpoint> = endpoints
            .into_iter()
            .filter(|e| seen.insert(e.addr.clone()))
            .collect();
        if let Some(subsetter) = &self.subsetter {
            let addrs: Vec<&str> = endpoints.iter().map(|e| e.addr.as_str()).collect();
            let keep = subsetter.select(&addrs);
            let mut all: Vec<Option<Endpoint>> = endpoints.into_iter().map(Some).collect();
            endpoints = keep.into_iter().filter_map(|i| all[i].take()).collect();
        }
        // Instances added after the first non-empty set ramp in slow start.
        let late = if endpoints.is_empty() {
            self.updated.load(Ordering::Acquire)
        } else {
            self.updated.swap(true, Ordering::AcqRel)
        };
        // Under slow start the rebuild lock is taken first (the order rebuild takes them in):
        // a new instance is marked for its ramp before it can connect and be seen READY.
        let mut ramp = self
            .slow_start
            .as_ref()
            .map(|_| self.rebuilding.lock().expect("rebuild lock"));
        {
            let mut subs = self.subchannels.lock().expect("subchannels lock");
            // close() sets the flag before it takes this lock: re-check under it, or an update
            // racing close would start connections nobody shuts down.
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // Keyed by address, so an update costs O(instances), not O(instances^2).
            let mut old: HashMap<String, Arc<Subchannel>> =
                subs.drain(..).map(|s| (s.addr.clone(), s)).collect();
            let mut next: Vec<Arc<Subchannel>> = Vec::with_capacity(endpoints.len());
            for e in endpoints {
                if let Some(sc) = old.remove(&e.addr) {
                    sc.set_endpoint_info(e.weight, e.metadata);
                    next.push(sc);
                    continue;
                }
                match Subchannel::new(&e.addr, e.weight, e.metadata) {
                    Ok(sc) => {
                        let weak: Weak<Inner> = Arc::downgrade(self);
                        let on_change = Arc::new(move || {
                            if let Some(inner) = weak.upgrade() {
                                inner.request_rebuild();
                            }
                        });
                        if let (true, Some(r)) = (late, ramp.as_mut()) {
                            r.ramp.added(sc.id);
                        }
                        sc.clone().start(self.connect.clone(), on_change);
                        next.push(sc);
                    }
                    Err(why) => log::warn!("skipping instance: {why}"),
                }
            }
            for gone in old.into_values() {
                if let Some(r) = ramp.as_mut() {
                    r.ramp.removed(gone.id);
                }
                gone.shutdown();
            }
            *subs = next;
        }
        drop(ramp);
        {
            let mut r = self.resolver.lock().expect("resolver lock");
            r.resolved = true;
            r.error = None;
        }
        self.rebuild();
    }

    fn error(&self, message: String) {
        self.resolver.lock().expect("resolver lock").error = Some(message);
        self.rebuild();
    }

    /// A subchannel changed state: rebuild now if no rebuild started within the last
    /// [`REBUILD_WINDOW`], else once at the end of that window (one rebuild for all the
    /// changes in between).
    fn request_rebuild(self: &Arc<Self>) {
        // While nothing is pickable, calls fail fast or queue on what the picker says: a
        // change (an instance turning READY) must reach it at once, not a window later.
        if self.picker.load().ready().is_empty() {
            self.rebuild();
            return;
        }
        let now = Instant::now();
        let due = {
            let mut c = self.coalesce.lock().expect("coalesce lock");
            if c.pending {
                return;
            }
            match c.last {
                Some(last) if now < last + REBUILD_WINDOW => {
                    c.pending = true;
                    Some(last + REBUILD_WINDOW)
                }
                _ => None,
            }
        };
        let Some(due) = due else {
            self.rebuild();
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let weak = Arc::downgrade(self);
                rt.spawn(async move {
                    tokio::time::sleep_until(due).await;
                    if let Some(inner) = weak.upgrade() {
                        inner.coalesce.lock().expect("coalesce lock").pending = false;
                        inner.rebuild();
                    }
                });
            }
            Err(_) => {
                self.coalesce.lock().expect("coalesce lock").pending = false;
                self.rebuild();
            }
        }
    }

    fn rebuild(&self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut built = self.rebuilding.lock().expect("rebuild lock");
        let now = Instant::now();
        self.coalesce.lock().expect("coalesce lock").last = Some(now);
        let subs = self.subchannels.lock().expect("subchannels lock").clone();
        let (resolved, resolver_error) = {
            let r = self.resolver.lock().expect("resolver lock");
            (r.resolved, r.error.clone())
        };
        let ready = if self.policy == Policy::PickFirst {
            pick_first_order(&subs, now)
        } else {
            subs.iter().filter(|s| s.pickable(now)).cloned().collect()
        };
        let factors = match &self.slow_start {
            Some(cfg) => {
                let ids: Vec<u64> = ready.iter().map(|s| s.id).collect();
                let (factors, next) = built.ramp.factors(cfg, &ids, now);
                if let Some(at) = next {
                    self.schedule_ramp(at);
                }
                factors
            }
            None => vec![1.0; ready.len()],
        };
        let key: Vec<(usize, u64, u64)> = ready
            .iter()
            .zip(&factors)
            .map(|(s, f)| (Arc::as_ptr(s) as usize, s.weight().to_bits(), f.to_bits()))
            .collect();
        if !key.is_empty() && key == built.key {
            self.changed.send_modify(|v| *v += 1);
            return;
        }
        let empty = if !resolved {
            Empty::Unresolved(resolver_error)
        } else if subs.is_empty() {
            let mut msg = format!("no instances for {}", self.target);
            if let Some(e) = resolver_error {
                msg.push_str(&format!(" (registry: {e})"));
            }
            Empty::Failing(Status::unavailable(msg))
        } else if subs.iter().any(|s| {
            // gRFC A17: a connection waiting for its first health answer is still CONNECTING.
            (matches!(s.state(), State::Idle | State::Connecting) && !s.failed_since_ready())
                || (s.state() == State::Ready && s.health_pending())
        }) {
            Empty::Connecting
        } else {
            let detail: Vec<String> = subs
                .iter()
                .map(|s| {
                    let why = if s.state() == State::Ready && !s.healthy() {
                        "not serving (health check)".to_string()
                    } else if s.ejected(now) {
                        "ejected (outlier detection)".to_string()
                    } else {
                        s.last_error()
                            .unwrap_or_else(|| s.state().name().to_string())
                    };
                    format!("{}: {why}", s.addr)
                })
                .collect();
            Empty::Failing(Status::unavailable(format!(
                "no ready instance for {}; tried {}",
                self.target,
                detail.join("; ")
            )))
        };
        if self.policy == Policy::WeightedRoundRobin && !ready.is_empty() {
            self.connect.events.wrr_update(
                ready
                    .iter()
                    .map(|s| crate::resolver::registry_weight(&s.metadata())),
            );
        }
        self.picker.store(Arc::new(Picker::with_slow_start(
            self.policy,
            ready,
            &factors,
            self.max_in_flight,
            empty,
        )));
        built.key = key;
        self.changed.send_modify(|v| *v += 1);
    }
}

impl Inner {
    /// Rebuilds at `at` for the next step of a slow-start ramp (one timer at a time).
    fn schedule_ramp(&self, at: Instant) {
        if self.ramp_tick.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        crate::runtime::handle().spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(inner) = me.upgrade() {
                inner.ramp_tick.store(false, Ordering::Release);
                inner.rebuild();
            }
        });
    }
}

/// pick_first uses the first address that connects: an address still on its first connection
/// attempt holds back the ones after it. The ready ones after the first stay listed so retries
/// can move on to them.
fn pick_first_order(subs: &[Arc<Subchannel>], now: Instant) -> Vec<Arc<Subchannel>> {
    let mut out = Vec::new();
    for s in subs {
        if s.pickable(now) {
            out.push(s.clone());
        } else if out.is_empty()
            && matches!(s.state(), State::Idle | State::Connecting)
            && !s.failed_since_ready()
        {
            return Vec::new();
        }
    }
    out
}

impl Drop for Inner {
    /// The last balancer handle is gone: no subchannel may outlive it.
    fn drop(&mut self) {
        if let Ok(subs) = self.subchannels.get_mut() {
            for s in subs.drain(..) {
                s.shutdown();
            }
        }
    }
}

struct Sink(Weak<Inner>);

impl ResolverSink for Sink {
    fn update(&self, endpoints: Vec<Endpoint>) {
        if let Some(inner) = self.0.upgrade() {
            inner.update(endpoints);
        }
    }

    fn error(&self, message: String) {
        if let Some(inner) = self.0.upgrade() {
            inner.error(message);
        }
    }

    fn event(&self, e: ResolverEvent) {
        if let Some(inner) = self.0.upgrade() {
            inner.connect.events.resolver_event(e);
        }
    }
}
