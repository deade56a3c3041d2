//! Slow start (Envoy's `slow_start_config`): an instance that starts serving while others
//! already do gets a small share of the calls at first and its full share by the end of the
//! window, so a cold process (empty caches, a JIT still warming) is not hit with its whole
//! load at once.
//!
//! Which instances ramp: one that becomes pickable again after it stopped (reconnected after a
//! failure, healthy again, back from an ejection), and one the resolver added after the
//! client's first instance set. The instances of that first set connecting as the client
//! starts do not ramp: they are not new to the service, only to this client. Instances that
//! come back together after everything failed (a network blip) all ramp, each from its own
//! return, so the first one back does not take the others' shares for a whole window.
//!
//! The factor is quantized to steps of 1/[`STEPS`] (rounded up), so the picker is rebuilt
//! about [`STEPS`] times per window, not on every call.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SlowStart;

/// Factor granularity: the share changes in steps of 1/STEPS (5%) of the full weight.
const STEPS: f64 = 20.0;

/// Shortest interval between two rebuilds for the ramp.
const MIN_TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
pub(super) struct Ramp {
    /// Instances that ramp the next time they become pickable.
    eligible: HashSet<u64>,
    /// The pickable instances of the last rebuild: since when they ramp (None: full weight).
    since: HashMap<u64, Option<Instant>>,
}

impl Ramp {
    /// The resolver added instance `id` after the client's first instance set.
    pub(super) fn added(&mut self, id: u64) {
        self.eligible.insert(id);
    }

    /// Instance `id` left the instance set.
    pub(super) fn removed(&mut self, id: u64) {
        self.eligible.remove(&id);
        self.since.remove(&id);
    }

    /// The slow-start factor of each of `ready` (instance ids, now pickable), in (0, 1], and
    /// when the next step of a ramp is due (None when nothing ramps).
    pub(super) fn factors(
        &mut self,
        cfg: &SlowStart,
        ready: &[u64],
        now: Instant,
    ) -> (Vec<f64>, Option<Instant>) {
        let mut since = HashMap::with_capacity(ready.len());
        let mut factors = Vec::with_capacity(ready.len());
        let mut next: Option<Instant> = None;
        for id in ready {
            let start = match self.since.get(id) {
                Some(s) => *s,
                None if self.eligible.contains(id) => Some(now),
                None => None,
            };
            // Once pickable, an instance ramps again whenever it comes back.
            self.eligible.insert(*id);
            let factor = match start {
                Some(t) if now.saturating_duration_since(t) < cfg.window => {
                    let f = quantize(cfg.factor(now.saturating_duration_since(t)));
                    let tick = cfg.window.div_f64(STEPS).max(MIN_TICK);
                    next = Some(next.map_or(now + tick, |n| n.min(now + tick)));
                    since.insert(*id, start);
                    f
                }
                _ => {
                    since.insert(*id, None);
                    1.0
                }
            };
            factors.push(factor);
        }
        self.since = since;
        (factors, next)
    }
}

/// Rounds up to the next step (a hair of tolerance: 0.25 stays 0.25), at most 1.
fn quantize(f: f64) -> f64 {
    ((f * STEPS - 1e-9).ceil() / STEPS).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(aggression: f64) -> SlowStart {
        SlowStart {
            window: Duration::from_secs(10),
            aggression,
            min_weight_percent: 10.0,
        }
    }

    #[test]
    fn factor_follows_envoys_curve_over_the_window() {
        let linear = cfg(1.0);
        let at = |s: f64| linear.factor(Duration::from_secs_f64(s));
        assert_eq!(at(0.0), 0.1, "the minimum share at first");
        assert_eq!(
            at(0.5),
            0.1,
            "still the minimum while the curve is below it"
        );
        assert!((at(2.5) - 0.25).abs() < 1e-9);
        assert!((at(5.0) - 0.5).abs() < 1e-9);
        assert_eq!(at(10.0), 1.0);
        assert_eq!(at(60.0), 1.0);
        // Aggression 2: (t / window) ^ (1/2), faster early on.
        let steep = cfg(2.0);
        assert!((steep.factor(Duration::from_secs_f64(2.5)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_added_instance_ramps_at_points_of_a_paused_clock() {
        let c = cfg(1.0);
        let t0 = Instant::now();
        let mut ramp = Ramp::default();
        // The first set: full weight at once, however late each instance connects.
        assert_eq!(ramp.factors(&c, &[1], t0).0, vec![1.0]);
        let (f, next) = ramp.factors(&c, &[1, 2], t0 + Duration::from_millis(5));
        assert_eq!(f, vec![1.0, 1.0]);
        assert_eq!(next, None);
        // Instance 3 arrives later from the resolver and ramps from its first pickable moment.
        ramp.added(3);
        let start = t0 + Duration::from_secs(1);
        let at = |ramp: &mut Ramp, s: f64| {
            ramp.factors(&c, &[1, 2, 3], start + Duration::from_secs_f64(s))
        };
        let (f, next) = at(&mut ramp, 0.0);
        assert_eq!(f, vec![1.0, 1.0, 0.1]);
        assert_eq!(next, Some(start + Duration::from_millis(500)));
        assert_eq!(at(&mut ramp, 2.5).0[2], 0.25);
        assert_eq!(at(&mut ramp, 5.0).0[2], 0.5);
        assert_eq!(at(&mut ramp, 7.4).0[2], 0.75, "rounded up to a 5% step");
        let (f, next) = at(&mut ramp, 10.0);
        assert_eq!(f, vec![1.0, 1.0, 1.0]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_recovering_instance_ramps_again_and_a_mass_return_ramps_together() {
        let c = cfg(1.0);
        let t0 = Instant::now();
        let mut ramp = Ramp::default();
        ramp.factors(&c, &[1, 2], t0);
        // 2 fails (not pickable), then comes back: it ramps.
        ramp.factors(&c, &[1], t0 + Duration::from_secs(1));
        let (f, _) = ramp.factors(&c, &[1, 2], t0 + Duration::from_secs(2));
        assert_eq!(f, vec![1.0, 0.1]);
        // Everything fails, then both come back a few milliseconds apart: both ramp, so the
        // first one back does not get a full share against the other's tenth.
        ramp.factors(&c, &[], t0 + Duration::from_secs(3));
        let (f, next) = ramp.factors(&c, &[1], t0 + Duration::from_secs(4));
        assert_eq!(f, vec![0.1]);
        assert!(next.is_some());
        let (f, _) = ramp.factors(&c, &[1, 2], t0 + Duration::from_millis(4005));
        assert_eq!(f, vec![0.1, 0.1]);
        // A removed instance forgets its history: re-added, it ramps only as a late addition.
        ramp.removed(2);
        let (f, _) = ramp.factors(&c, &[1, 2], t0 + Duration::from_secs(15));
        assert_eq!(f, vec![1.0, 1.0]);
    }
}
