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

    /// The next delay: the current one with +/- jitter, after which the current one grows.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.current, self.jitter);
        self.current = self.current.mul_f64(self.multiplier).min(self.max);
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
    d.mul_f64(1.0 - jitter + 2.0 * jitter * fastrand::f64())
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
}
