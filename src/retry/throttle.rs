//! gRFC A6 retry throttling: a token bucket per client (per target).

use std::sync::atomic::{AtomicI64, Ordering};

use crate::config::RetryThrottling;

/// Tokens are kept in thousandths so the 3-decimal `tokenRatio` is exact.
pub struct Throttle {
    max_tokens: i64,
    token_ratio: i64,
    tokens: AtomicI64,
}

impl Throttle {
    pub fn new(cfg: &RetryThrottling) -> Self {
        let max_tokens = (cfg.max_tokens * 1000.0).round() as i64;
        Throttle {
            max_tokens,
            token_ratio: (cfg.token_ratio * 1000.0).round() as i64,
            tokens: AtomicI64::new(max_tokens),
        }
    }

    /// A call failed with a retryable (or, for hedging, non-fatal) code: costs 1 token.
    pub fn on_failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t - 1000).max(0))
            });
    }

    /// A call succeeded: adds tokenRatio tokens.
    pub fn on_success(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.token_ratio).min(self.max_tokens))
            });
    }

    /// Retries and hedges are allowed while tokens > maxTokens / 2.
    pub fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Acquire) * 2 > self.max_tokens
    }

    pub fn tokens(&self) -> f64 {
        self.tokens.load(Ordering::Acquire) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a6_token_bucket() {
        let t = Throttle::new(&RetryThrottling {
            max_tokens: 10.0,
            token_ratio: 0.1,
        });
        assert!(t.allows_retry());
        for _ in 0..4 {
            t.on_failure();
        }
        assert_eq!(t.tokens(), 6.0);
        assert!(t.allows_retry());
        t.on_failure();
        assert_eq!(t.tokens(), 5.0);
        assert!(!t.allows_retry(), "5 is not > 10/2");
        t.on_success();
        assert!((t.tokens() - 5.1).abs() < 1e-9);
        assert!(t.allows_retry());
        for _ in 0..100 {
            t.on_failure();
        }
        assert_eq!(t.tokens(), 0.0);
        for _ in 0..1000 {
            t.on_success();
        }
        assert_eq!(t.tokens(), 10.0);
    }
}
