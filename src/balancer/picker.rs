//! Pickers: immutable snapshots of the pickable instances, swapped atomically by the balancer.
//! A pick is an atomic increment and an index; no lock, no await.

use std::sync::atomic::{AtomicUsize, Ordering};
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

pub enum Pick {
    Ready(Arc<Subchannel>),
    Queue(Empty),
    Fail(Status),
}

pub struct Picker {
    policy: Policy,
    ready: Vec<Arc<Subchannel>>,
    /// Indices into `ready`, walked by `next`: one entry each for round_robin, the smooth
    /// weighted sequence for WRR, 0..n in resolver order for pick_first.
    sequence: Vec<u32>,
    next: Counter,
    empty: Empty,
    max_in_flight: Option<u32>,
}

/// The pick counter on a cache line of its own: every pick writes it, and it must not evict
/// the read-only fields (the instance list, the sequence) from the other cores' caches.
#[repr(align(128))]
struct Counter(AtomicUsize);

/// Longest smooth-WRR cycle we precompute; larger weight sums are scaled down to it.
const MAX_SEQUENCE: u64 = 1 << 16;

impl Picker {
    pub fn empty(why: Empty) -> Picker {
        Picker {
            policy: Policy::PickFirst,
            ready: Vec::new(),
            sequence: Vec::new(),
            next: Counter(AtomicUsize::new(0)),
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
        if ready.is_empty() {
            return Picker {
                max_in_flight,
                ..Picker::empty(empty)
            };
        }
        let any_positive = ready.iter().any(|s| s.weight() > 0.0);
        let ready: Vec<Arc<Subchannel>> = if any_positive {
            ready.into_iter().filter(|s| s.weight() > 0.0).collect()
        } else {
            ready
        };
        let sequence = match policy {
            Policy::PickFirst | Policy::RoundRobin => (0..ready.len() as u32).collect(),
            Policy::WeightedRoundRobin => {
                let weights: Vec<f64> = ready
                    .iter()
                    .map(|s| if any_positive { s.weight() } else { 1.0 })
                    .collect();
                smooth_wrr_sequence(&integer_weights(&weights))
            }
        };
        // A random starting point, so rebuilding the picker often does not favour the instances
        // at the head of the sequence.
        let start = if policy == Policy::PickFirst {
            0
        } else {
            fastrand::usize(..sequence.len())
        };
        Picker {
            policy,
            ready,
            sequence,
            next: Counter(AtomicUsize::new(start)),
            empty,
            max_in_flight,
        }
    }

    pub fn ready(&self) -> &[Arc<Subchannel>] {
        &self.ready
    }

    /// Picks an instance, preferring one whose id is not in `avoid` (instances this call has
    /// already tried) and skipping instances at their in-flight limit.
    pub fn pick(&self, avoid: &[u64]) -> Pick {
        let n = self.sequence.len();
        if n == 0 {
            return match &self.empty {
                Empty::Failing(status) => Pick::Fail(status.clone()),
                other => Pick::Queue(other.clone()),
            };
        }
        let start = if self.policy == Policy::PickFirst {
            0
        } else {
            self.next.0.fetch_add(1, Ordering::Relaxed)
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
            if let Some(limit) = self.max_in_flight {
                if sc.in_flight() >= limit {
                    continue;
                }
            }
            all_full = false;
            if avoid.contains(&sc.id) {
                fallback.get_or_insert(sc);
                continue;
            }
            return Pick::Ready(sc.clone());
        }
        match fallback {
            Some(sc) => Pick::Ready(sc.clone()),
            None if all_full && self.max_in_flight.is_some() => {
                Pick::Fail(Status::resource_exhausted(format!(
                    "every instance is at its limit of {} calls in flight",
                    self.max_in_flight.unwrap_or(0)
                )))
            }
            None => Pick::Ready(self.ready[self.sequence[start % n] as usize].clone()),
        }
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
}
