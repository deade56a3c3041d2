//! Pickers: immutable snapshots of the pickable instances, swapped atomically by the balancer.
//! A pick reads its owner's position (the call loop's or the thread's) and an index; no lock,
//! no await, and no write to memory another thread picks from, so pick cost does not grow with
//! the number of threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::subchannel::Subchannel;
use crate::config::Policy;
use crate::resolver::MAX_WEIGHT;
use crate::status::Status;

/// Why a picker has nothing to hand out.
#[derive(Clone, Debug)]
pub enum Empty {
    /// The resolver has not produced a first instance set yet (carries its last error).
    Unresolved(Option<String>),
    /// Instances exist and a first connection attempt is still running: wait for it.
    Connecting,
    /// Nothing to pick right now: fail unless the call is wait-for-ready.
    Failing(Status),
}

/// A pick borrows the instance from the picker: taking a reference on it (a write to the
/// instance's shared count) is left to whoever goes on to use it.
pub enum Pick<'a> {
    Ready(&'a Arc<Subchannel>),
    Queue(Empty),
    Fail(Status),
}

pub struct Picker {
    /// Tells this picker's positions apart from other pickers' in an owner's [`Positions`].
    id: u64,
    policy: Policy,
    ready: Vec<Arc<Subchannel>>,
    /// Indices into `ready`, walked by each owner from its own position: one entry each for
    /// round_robin, the smooth weighted sequence for WRR (and for round_robin while an
    /// instance is in slow start), 0..n in resolver order for pick_first and least_request.
    sequence: Vec<u32>,
    /// least_request: each ready instance's weight (times its slow-start factor).
    weights: Vec<f64>,
    empty: Empty,
    max_in_flight: Option<u32>,
}

/// Longest smooth-WRR cycle we precompute; larger weight sums are scaled down to it.
const MAX_SEQUENCE: u64 = 1 << 16;

static NEXT_PICKER_ID: AtomicU64 = AtomicU64::new(1);

/// Pickers a position owner remembers its position in; more (an owner picking for many
/// clients in turn) evict the oldest, whose next pick there starts at a random position again.
const SLOTS: usize = 8;

/// One owner's (picker id, next position) pairs and the slot to evict next.
pub(crate) type Positions = Cell<([(u64, usize); SLOTS], usize)>;

pub(crate) const fn new_positions() -> Positions {
    Cell::new(([(0, 0); SLOTS], 0))
}

tokio::task_local! {
    /// The positions of the calls a call loop runs (see `runtime::run_on_call_loop`): a
    /// blocking caller always uses the same loop, whichever worker thread polls it, so its
    /// consecutive calls walk one sequence in order.
    pub(crate) static LOOP_POSITIONS: Positions;
}

thread_local! {
    /// The positions of picks made outside a call loop (tasks of their own, other threads).
    static POSITIONS: Positions = const { new_positions() };
}

impl Picker {
    pub fn empty(why: Empty) -> Picker {
        Picker {
            id: NEXT_PICKER_ID.fetch_add(1, Ordering::Relaxed),
            policy: Policy::PickFirst,
            ready: Vec::new(),
            sequence: Vec::new(),
            weights: Vec::new(),
            empty: why,
            max_in_flight: None,
        }
    }

    /// Builds a picker over `ready` (in resolver order). Instances of weight 0 drain: they are
    /// only used when no instance of positive weight is ready.
    pub fn new(
        policy: Policy,
        ready: Vec<Arc<Subchannel>>,
        max_in_flight: Option<u32>,
        empty: Empty,
    ) -> Picker {
        let factors = vec![1.0; ready.len()];
        Picker::with_slow_start(policy, ready, &factors, max_in_flight, empty)
    }

    /// As [`Picker::new`], each instance's share scaled by its slow-start factor (`factors`,
    /// one per entry of `ready`, in (0, 1]).
    pub fn with_slow_start(
        policy: Policy,
        ready: Vec<Arc<Subchannel>>,
        factors: &[f64],
        max_in_flight: Option<u32>,
        empty: Empty,
    ) -> Picker {
        debug_assert_eq!(ready.len(), factors.len());
        if ready.is_empty() {
            return Picker {
                max_in_flight,
                ..Picker::empty(empty)
            };
        }
        let any_positive = ready.iter().any(|s| s.weight() > 0.0);
        let (ready, factors): (Vec<Arc<Subchannel>>, Vec<f64>) = ready
            .into_iter()
            .zip(factors.iter().copied())
            .filter(|(s, _)| !any_positive || s.weight() > 0.0)
            .unzip();
        let weights: Vec<f64> = ready
            .iter()
            .zip(&factors)
            .map(|(s, f)| if any_positive { s.weight() * f } else { *f })
            .collect();
        let ramping = factors.iter().any(|f| *f < 1.0);
        let sequence = match policy {
            Policy::PickFirst | Policy::LeastRequest { .. } => (0..ready.len() as u32).collect(),
            Policy::RoundRobin if !ramping => (0..ready.len() as u32).collect(),
            Policy::RoundRobin => smooth_wrr_sequence(&integer_weights(&factors)),
            Policy::WeightedRoundRobin => smooth_wrr_sequence(&integer_weights(&weights)),
        };
        Picker {
            id: NEXT_PICKER_ID.fetch_add(1, Ordering::Relaxed),
            policy,
            ready,
            sequence,
            weights,
            empty,
            max_in_flight,
        }
    }

    pub fn ready(&self) -> &[Arc<Subchannel>] {
        &self.ready
    }

    /// The next position in the sequence of whoever picks: the call loop running the call,
    /// else the thread. Its first pick from this picker starts at a random position, so
    /// owners (and pickers rebuilt often) do not all begin with the same instance; after that
    /// it walks the whole sequence in order, so over each full cycle its picks follow the
    /// weights exactly. Nothing here is written by two threads, so picks do not contend.
    fn position(&self) -> usize {
        let walk = |cell: &Positions| {
            let (mut slots, victim) = cell.get();
            if let Some(slot) = slots.iter_mut().find(|(id, _)| *id == self.id) {
                let at = slot.1;
                slot.1 = at.wrapping_add(1);
                cell.set((slots, victim));
                return at;
            }
            let at = fastrand::usize(..self.sequence.len());
            slots[victim] = (self.id, at.wrapping_add(1));
            cell.set((slots, (victim + 1) % SLOTS));
            at
        };
        LOOP_POSITIONS
            .try_with(walk)
            .unwrap_or_else(|_| POSITIONS.with(walk))
    }

    /// Picks an instance, preferring one whose id is not in `avoid` (instances this call has
    /// already tried) and skipping instances at their in-flight limit.
    pub fn pick(&self, avoid: &[u64]) -> Pick<'_> {
        let n = self.sequence.len();
        if n == 0 {
            return match &self.empty {
                Empty::Failing(status) => Pick::Fail(status.clone()),
                other => Pick::Queue(other.clone()),
            };
        }
        let start = match self.policy {
            Policy::PickFirst => 0,
            Policy::LeastRequest { choice_count } => {
                if let Some(sc) = self.least_request(choice_count, avoid) {
                    return Pick::Ready(sc);
                }
                // Every choice was tried already or full: look through all of them.
                fastrand::usize(..n)
            }
            Policy::RoundRobin | Policy::WeightedRoundRobin => self.position(),
        };
        let scan = if avoid.is_empty() && self.max_in_flight.is_none() {
            1
        } else {
            n.min(4096)
        };
        let mut fallback: Option<&Arc<Subchannel>> = None;
        let mut all_full = true;
        for i in 0..scan {
            let sc = &self.ready[self.sequence[(start.wrapping_add(i)) % n] as usize];
            if self.full(sc) {
                continue;
            }
            all_full = false;
            if avoid.contains(&sc.id) {
                fallback.get_or_insert(sc);
                continue;
            }
            return Pick::Ready(sc);
        }
        match fallback {
            Some(sc) => Pick::Ready(sc),
            None if all_full && self.max_in_flight.is_some() => {
                Pick::Fail(Status::resource_exhausted(format!(
                    "every instance is at its limit of {} calls in flight",
                    self.max_in_flight.unwrap_or(0)
                )))
            }
            None => Pick::Ready(&self.ready[self.sequence[start % n] as usize]),
        }
    }

    fn full(&self, sc: &Subchannel) -> bool {
        self.max_in_flight
            .is_some_and(|limit| sc.in_flight() >= limit)
    }

    /// gRFC A48: of `choices` instances drawn at random (with replacement), the one with the
    /// fewest calls in flight; under weights, the fewest per unit of weight ((in flight + 1)
    /// / weight, so an idle heavier instance wins over an idle lighter one). Instances the call
    /// has tried or at their limit do not count; None when no choice is left.
    fn least_request(&self, choices: u32, avoid: &[u64]) -> Option<&Arc<Subchannel>> {
        let n = self.ready.len();
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..choices {
            let i = fastrand::usize(..n);
            let sc = &self.ready[i];
            if self.full(sc) || avoid.contains(&sc.id) {
                continue;
            }
            let score = (f64::from(sc.in_flight()) + 1.0) / self.weights[i];
            if best.map_or(true, |(b, _)| score < b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| &self.ready[i])
    }
}

/// Turns possibly fractional weights into small positive integers with the same ratios. Weights
/// above the resolver's cap count as the cap, so the sums below cannot overflow.
fn integer_weights(weights: &[f64]) -> Vec<u64> {
    let weights: Vec<f64> = weights.iter().map(|w| w.min(MAX_WEIGHT)).collect();
    let mut scale = 1.0;
    while scale < 1000.0 && weights.iter().any(|w| (w * scale).fract().abs() > 1e-9) {
        scale *= 10.0;
    }
    let mut ints: Vec<u64> = weights
        .iter()
        .map(|w| ((w * scale).round() as u64).max(1))
        .collect();
    let g = ints.iter().copied().fold(0, gcd);
    if g > 1 {
        ints.iter_mut().for_each(|w| *w /= g);
    }
    let total = ints.iter().fold(0u64, |sum, w| sum.saturating_add(*w));
    if total > MAX_SEQUENCE {
        let f = MAX_SEQUENCE as f64 / total as f64;
        ints.iter_mut()
            .for_each(|w| *w = ((*w as f64 * f).round() as u64).max(1));
    }
    ints
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled over one full cycle of sum(weights) picks:
/// each step adds every weight to its current value, picks the largest, subtracts the total.
pub fn smooth_wrr_sequence(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_sequence_matches_nginx() {
        let names: String = smooth_wrr_sequence(&[5, 1, 1])
            .iter()
            .map(|i| (b'a' + *i as u8) as char)
            .collect();
        assert_eq!(names, "aabacaa");
        let seq = smooth_wrr_sequence(&[1, 2, 3]);
        assert_eq!(seq.len(), 6);
        for (i, w) in [1, 2, 3].iter().enumerate() {
            assert_eq!(seq.iter().filter(|x| **x as usize == i).count(), *w);
        }
    }

    #[test]
    fn fractional_and_large_weights_keep_their_ratios() {
        assert_eq!(integer_weights(&[0.5, 1.0, 1.5]), vec![1, 2, 3]);
        assert_eq!(integer_weights(&[10.0, 20.0]), vec![1, 2]);
        let big = integer_weights(&[1e9, 3e9 + 1.0]);
        assert!(big.iter().sum::<u64>() <= MAX_SEQUENCE + 2);
        // Weights near the u64 range count as the cap: equal, instead of overflowing the sum.
        assert_eq!(integer_weights(&[1e308, 1e19]), vec![1, 1]);
        assert_eq!(integer_weights(&[MAX_WEIGHT, MAX_WEIGHT / 2.0]), vec![2, 1]);
    }

    #[test]
    fn picks_follow_the_weights_over_a_cycle() {
        let subs: Vec<_> = [(1.0, "a:1"), (2.0, "b:1"), (3.0, "c:1")]
            .iter()
            .map(|(w, a)| Subchannel::new(a, *w, serde_json::Value::Null).unwrap())
            .collect();
        let p = Picker::new(
            Policy::WeightedRoundRobin,
            subs.clone(),
            None,
            Empty::Connecting,
        );
        let mut counts = std::collections::HashMap::new();
        for _ in 0..600 {
            if let Pick::Ready(sc) = p.pick(&[]) {
                *counts.entry(sc.addr.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(counts["a:1"], 100);
        assert_eq!(counts["b:1"], 200);
        assert_eq!(counts["c:1"], 300);
        // A retry avoids the instance it already tried.
        for _ in 0..50 {
            match p.pick(&[subs[2].id]) {
                Pick::Ready(sc) => assert_ne!(sc.addr, "c:1"),
                _ => panic!("no pick"),
            }
        }
    }

    #[test]
    fn zero_weight_drains_unless_nothing_else() {
        let subs: Vec<_> = [(0.0, "a:1"), (1.0, "b:1")]
            .iter()
            .map(|(w, a)| Subchannel::new(a, *w, serde_json::Value::Null).unwrap())
            .collect();
        let p = Picker::new(
            Policy::WeightedRoundRobin,
            subs.clone(),
            None,
            Empty::Connecting,
        );
        for _ in 0..10 {
            assert!(matches!(p.pick(&[]), Pick::Ready(sc) if sc.addr == "b:1"));
        }
        let p = Picker::new(
            Policy::RoundRobin,
            vec![subs[0].clone()],
            None,
            Empty::Connecting,
        );
        assert!(matches!(p.pick(&[]), Pick::Ready(sc) if sc.addr == "a:1"));
    }

    fn subs(spec: &[(f64, &str)]) -> Vec<Arc<Subchannel>> {
        spec.iter()
            .map(|(w, a)| Subchannel::new(a, *w, serde_json::Value::Null).unwrap())
            .collect()
    }

    fn counts(p: &Picker, picks: usize) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..picks {
            if let Pick::Ready(sc) = p.pick(&[]) {
                *counts.entry(sc.addr.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn every_thread_walks_whole_cycles_with_exact_shares() {
        let s = subs(&[(1.0, "a:1"), (2.0, "b:1"), (3.0, "c:1"), (4.0, "d:1")]);
        for policy in [Policy::RoundRobin, Policy::WeightedRoundRobin] {
            let p = Arc::new(Picker::new(policy, s.clone(), None, Empty::Connecting));
            let cycle = p.sequence.len();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let p = p.clone();
                    std::thread::spawn(move || counts(&p, cycle * 250))
                })
                .collect();
            for t in threads {
                let c = t.join().unwrap();
                for (i, addr) in ["a:1", "b:1", "c:1", "d:1"].iter().enumerate() {
                    let want = match policy {
                        Policy::RoundRobin => 250,
                        _ => 250 * (i + 1),
                    };
                    assert_eq!(c[*addr], want, "{policy:?} {addr} on one thread");
                }
            }
        }
    }

    #[test]
    fn threads_start_at_different_positions() {
        let s: Vec<_> = (0..64)
            .map(|i| Subchannel::new(&format!("h{i}:1"), 1.0, serde_json::Value::Null).unwrap())
            .collect();
        let p = Arc::new(Picker::new(Policy::RoundRobin, s, None, Empty::Connecting));
        let firsts: std::collections::HashSet<u64> = (0..16)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || match p.pick(&[]) {
                    Pick::Ready(sc) => sc.id,
                    _ => panic!("no pick"),
                })
                .join()
                .unwrap()
            })
            .collect();
        // 16 threads over 64 instances: all on the same first instance would be 1 in 64^15.
        assert!(
            firsts.len() > 1,
            "every thread began with the same instance"
        );
    }

    #[test]
    fn least_request_prefers_the_fewest_in_flight() {
        let s = subs(&[(1.0, "idle:1"), (1.0, "busy:1")]);
        s[1].set_in_flight(5);
        let p2 = Picker::new(
            Policy::LeastRequest { choice_count: 2 },
            s.clone(),
            None,
            Empty::Connecting,
        );
        // Two draws with replacement from two: both land on "busy" a quarter of the time.
        let c = counts(&p2, 20_000);
        let busy = c.get("busy:1").copied().unwrap_or(0);
        assert!(
            (4_000..6_000).contains(&busy),
            "busy picked {busy} of 20,000"
        );
        // Ten draws: both-busy is 1 in 1,024.
        let p10 = Picker::new(
            Policy::LeastRequest { choice_count: 10 },
            s.clone(),
            None,
            Empty::Connecting,
        );
        let busy = counts(&p10, 20_000).get("busy:1").copied().unwrap_or(0);
        assert!(busy < 100, "busy picked {busy} of 20,000 with 10 choices");
        // Equal load: an even spread.
        s[1].set_in_flight(0);
        let c = counts(&p2, 20_000);
        assert!((9_000..11_000).contains(&c["idle:1"]), "{c:?}");
    }

    #[test]
    fn least_request_counts_in_flight_per_unit_of_weight() {
        // heavy: weight 4, 1 in flight -> (1+1)/4 = 0.5; light: weight 1, idle -> 1.0.
        let s = subs(&[(4.0, "heavy:1"), (1.0, "light:1")]);
        s[0].set_in_flight(1);
        let p = Picker::new(
            Policy::LeastRequest { choice_count: 10 },
            s.clone(),
            None,
            Empty::Connecting,
        );
        let light = counts(&p, 10_000).get("light:1").copied().unwrap_or(0);
        assert!(light < 50, "light picked {light} of 10,000");
        // heavy at 7 in flight: 8/4 = 2.0 > 1.0, so light wins.
        s[0].set_in_flight(7);
        let heavy = counts(&p, 10_000).get("heavy:1").copied().unwrap_or(0);
        assert!(heavy < 50, "heavy picked {heavy} of 10,000");
    }

    #[test]
    fn least_request_skips_tried_and_full_instances() {
        let s = subs(&[(1.0, "a:1"), (1.0, "b:1"), (1.0, "c:1")]);
        let p = Picker::new(
            Policy::LeastRequest { choice_count: 2 },
            s.clone(),
            Some(3),
            Empty::Connecting,
        );
        s[2].set_in_flight(3);
        for _ in 0..200 {
            match p.pick(&[s[0].id]) {
                Pick::Ready(sc) => assert_eq!(sc.addr, "b:1"),
                _ => panic!("no pick"),
            }
        }
        s.iter().for_each(|sc| sc.set_in_flight(3));
        assert!(matches!(p.pick(&[]), Pick::Fail(st) if st.code == tonic::Code::ResourceExhausted));
    }

    #[test]
    fn slow_start_factors_scale_shares() {
        // round_robin with c at a quarter of its share: 4:4:1 over each cycle.
        let s = subs(&[(1.0, "a:1"), (1.0, "b:1"), (1.0, "c:1")]);
        let p = Picker::with_slow_start(
            Policy::RoundRobin,
            s.clone(),
            &[1.0, 1.0, 0.25],
            None,
            Empty::Connecting,
        );
        let c = counts(&p, 900);
        assert_eq!((c["a:1"], c["b:1"], c["c:1"]), (400, 400, 100));
        // WRR multiplies: weights 2:1:1, c at half -> 4:2:1.
        let s = subs(&[(2.0, "a:1"), (1.0, "b:1"), (1.0, "c:1")]);
        let p = Picker::with_slow_start(
            Policy::WeightedRoundRobin,
            s,
            &[1.0, 1.0, 0.5],
            None,
            Empty::Connecting,
        );
        let c = counts(&p, 700);
        assert_eq!((c["a:1"], c["b:1"], c["c:1"]), (400, 200, 100));
    }
}
