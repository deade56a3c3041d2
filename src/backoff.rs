//! Exponential backoff with jitter, shared by connection attempts, etcd re-watches and the
//! registrar.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    jitter: f64,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, multiplier: f64, jitter: f64, max: Duration) -> Self {
        Backoff {
            initial,
            multiplier,
            jitter,
            max,
            current: initial,
        }
    }

    /// The un-jittered delay the next call of `next_delay` is based on.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The next delay: the current one with +/- jitter, after which the current one grows
    /// (saturating at the maximum, whatever the multiplier).
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.current, self.jitter);
        self.current = scaled(self.current, self.multiplier).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// `d * uniform(1 - jitter, 1 + jitter)`.
pub fn jittered(d: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return d;
    }
    scaled(d, 1.0 - jitter + 2.0 * jitter * fastrand::f64())
}

/// `d * factor`, saturating at `Duration::MAX` (Duration::mul_f64 panics on overflow, and the
/// factors come from configuration).
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(if factor > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_connection_backoff_grows_by_multiplier_within_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_secs(1), 1.6, 0.2, Duration::from_secs(120));
        let mut expected = 1.0f64;
        for _ in 0..20 {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9,
                "{d} vs {expected}"
            );
            expected = (expected * 1.6).min(120.0);
        }
        b.reset();
        assert_eq!(b.current(), Duration::from_secs(1));
    }

    #[test]
    fn huge_multipliers_and_delays_saturate_instead_of_panicking() {
        let max = Duration::from_secs(10);
        let mut b = Backoff::new(Duration::from_secs(1), 1e308, 0.2, max);
        b.next_delay();
        assert_eq!(b.current(), max);
        assert!(b.next_delay() <= max.mul_f64(1.2));
        let mut b = Backoff::new(Duration::MAX, 1.6, 0.2, Duration::MAX);
        assert!(b.next_delay() >= Duration::MAX.mul_f64(0.7));
        assert_eq!(b.current(), Duration::MAX);
        assert_eq!(scaled(Duration::from_secs(2), 0.5), Duration::from_secs(1));
    }
}
