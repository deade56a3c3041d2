//! The retry engine: gRFC A6 retries (backoff, pushback, commit, transparent retries),
//! hedging, and the retry throttle. Every attempt picks its instance through the balancer,
//! preferring one this call has not tried yet.

pub mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::attempt::{self, Attempt, Pushback};
use crate::backoff;
use crate::balancer::{Balancer, Picked};
use crate::client::CallResult;
use crate::config::{HedgingPolicy, RetryPolicy};
use crate::metrics::{MethodLabel, Metrics};
use crate::status::{Code, Status};
use crate::transport::WireBytes;
use throttle::Throttle;

/// Client-wide counters for `gf_client_stats`.
#[derive(Default)]
pub struct CallCounters {
    pub calls: AtomicU64,
    pub calls_failed: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub transparent_retries: AtomicU64,
    pub hedges: AtomicU64,
    /// Hedged calls won by an attempt other than the first.
    pub hedges_won: AtomicU64,
    pub throttled: AtomicU64,
    /// Retries by the status code of the attempt retried (index: the code's number).
    pub retries_by_code: [AtomicU64; 17],
}

/// The attempts of one call (one RPC as the caller sees it) and what they share: the request,
/// the deadline, the balancer to pick from, the throttle and the counters.
pub struct CallAttempts<'a> {
    pub balancer: &'a Balancer,
    pub request: attempt::Request<'a>,
    pub deadline: Option<Instant>,
    pub wait_for_ready: bool,
    pub throttle: Option<&'a Throttle>,
    pub counters: &'a CallCounters,
    /// Where the attempts are recorded (gRFC A66), with the call's method label.
    pub metrics: Option<(&'a Metrics, MethodLabel)>,
}

/// One attempt as A66 records it: started now, ended by [`AttemptRecord::end`], or, when the
/// attempt is dropped unfinished (a hedge that lost, a cancelled call), ended CANCELLED.
struct AttemptRecord<'a> {
    metrics: &'a Metrics,
    label: MethodLabel,
    started: std::time::Instant,
    /// The message bytes as the connection sent and received them.
    wire: Arc<WireBytes>,
    ended: bool,
}

impl<'a> AttemptRecord<'a> {
    fn start(metrics: &'a Metrics, label: MethodLabel) -> Self {
        metrics.attempt_started(label);
        AttemptRecord {
            metrics,
            label,
            started: std::time::Instant::now(),
            wire: Arc::default(),
            ended: false,
        }
    }

    fn end(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        self.ended = true;
        let took = self.started.elapsed();
        let (sent, rcvd) = (self.wire.sent(), self.wire.rcvd());
        self.metrics
            .attempt_ended(self.label, code, took, sent, rcvd);
    }
}

impl Drop for AttemptRecord<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.record(Code::Cancelled);
        }
    }
}

/// A6: transparent retries are for attempts that never left the client; bound them so a
/// connection that keeps refusing streams cannot spin.
const MAX_TRANSPARENT_RETRIES: u32 = 8;

impl CallAttempts<'_> {
    async fn run_attempt(&self, picked: Picked, previous_attempts: u32) -> Attempt {
        let timeout = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let record = self
            .metrics
            .map(|(m, label)| AttemptRecord::start(m, label));
        let a = attempt::run(
            picked.destination(),
            &self.request,
            timeout,
            previous_attempts,
            record.as_ref().map(|r| r.wire.clone()),
        )
        .await;
        if let Some(r) = record {
            r.end(a.result.status.code);
        }
        picked.finish(&a);
        a
    }

    /// A call without a retry or hedging policy: one attempt (plus transparent retries).
    pub async fn once(&self) -> CallResult {
        // At most 1 + MAX_TRANSPARENT_RETRIES picks: no allocation for the list.
        let mut tried = [0u64; MAX_TRANSPARENT_RETRIES as usize + 1];
        let mut picks = 0;
        let mut transparent = 0;
        loop {
            let picked = match self
                .balancer
                .pick(&tried[..picks], self.wait_for_ready, self.deadline)
                .await
            {
                Ok(picked) => picked,
                Err(status) => return CallResult::error(status),
            };
            tried[picks] = picked.id();
            picks += 1;
            let a = self.run_attempt(picked, 0).await;
            if a.transparent && transparent < MAX_TRANSPARENT_RETRIES {
                transparent += 1;
                self.counters
                    .transparent_retries
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return a.result;
        }
    }

    /// A6 retries.
    pub async fn retry(&self, policy: &RetryPolicy, max_attempts: u32) -> CallResult {
        let mut tried = Vec::new();
        let mut attempts = 0u32;
        let mut transparent = 0;
        let mut backoff_exp = 0i32;
        loop {
            let outcome = match self
                .balancer
                .pick(&tried, self.wait_for_ready, self.deadline)
                .await
            {
                Ok(picked) => {
                    tried.push(picked.id());
                    self.run_attempt(picked, attempts).await
                }
                Err(status) if status.code == Code::Unavailable => attempt::failed(status, false),
                Err(status) => return CallResult::error(status),
            };
            if outcome.result.status.code == Code::Ok {
                if let Some(t) = self.throttle {
                    t.on_success();
                }
                return outcome.result;
            }
            if outcome.transparent && transparent < MAX_TRANSPARENT_RETRIES {
                transparent += 1;
                self.counters
                    .transparent_retries
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            attempts += 1;
            let code = outcome.result.status.code;
            let retryable = policy.retryable_status_codes.contains(&code);
            // A committed call is over: it neither retries nor charges the throttle.
            if outcome.committed {
                return outcome.result;
            }
            if retryable {
                if let Some(t) = self.throttle {
                    t.on_failure();
                }
            }
            if !retryable || outcome.committed || attempts >= max_attempts {
                return outcome.result;
            }
            let delay = match outcome.pushback {
                Some(Pushback::Stop) => return outcome.result,
                Some(Pushback::Delay(d)) => {
                    backoff_exp = 0;
                    d
                }
                None => {
                    let base = policy.initial_backoff.as_secs_f64()
                        * policy.backoff_multiplier.powi(backoff_exp);
                    backoff_exp = backoff_exp.saturating_add(1);
                    backoff::jittered(
                        Duration::from_secs_f64(base.min(policy.max_backoff.as_secs_f64())),
                        0.2,
                    )
                }
            };
            if let Some(t) = self.throttle {
                if !t.allows_retry() {
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    return outcome.result;
                }
            }
            if let Some(d) = self.deadline {
                if Instant::now() + delay >= d {
                    return outcome.result;
                }
            }
            tokio::time::sleep(delay).await;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.counters.retries_by_code[outcome.result.status.code as usize % 17]
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A6 hedging: up to maxAttempts copies, one every hedgingDelay, to distinct instances
    /// where there are enough; the first OK wins and the rest are cancelled (dropped); a fatal
    /// code ends the call.
    pub async fn hedge(&self, policy: &HedgingPolicy, max_attempts: u32) -> CallResult {
        let mut tried: Vec<u64> = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut started = 0u32;
        let mut last: Option<CallResult> = None;
        let mut next_at = Some(Instant::now());
        loop {
            let hedge_due =
                next_at.is_some_and(|at| started < max_attempts && Instant::now() >= at);
            let done = if hedge_due {
                if started > 0 && self.throttle.is_some_and(|t| !t.allows_retry()) {
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    next_at = None;
                    continue;
                }
                // While the next hedge waits for an instance, attempts already running may
                // finish: keep reading them, so a winner is never held back by a queued pick.
                let picked = if running.is_empty() {
                    Ok(self
                        .balancer
                        .pick(&tried, self.wait_for_ready, self.deadline)
                        .await)
                } else {
                    tokio::select! {
                        biased;
                        a = running.next() => Err(a),
                        r = self.balancer.pick(&tried, self.wait_for_ready, self.deadline) => Ok(r),
                    }
                };
                match picked {
                    Ok(Ok(picked)) => {
                        tried.push(picked.id());
                        if started > 0 {
                            self.counters.hedges.fetch_add(1, Ordering::Relaxed);
                        }
                        let index = started;
                        running.push(async move { (index, self.run_attempt(picked, index).await) });
                        started += 1;
                        next_at =
                            (started < max_attempts).then(|| Instant::now() + policy.hedging_delay);
                        continue;
                    }
                    Ok(Err(status)) if running.is_empty() => {
                        return last.unwrap_or_else(|| CallResult::error(status))
                    }
                    Ok(Err(_)) => {
                        next_at = None;
                        continue;
                    }
                    Err(done) => done,
                }
            } else {
                if running.is_empty() {
                    return last.unwrap_or_else(|| {
                        CallResult::error(Status::internal("hedging started no attempt"))
                    });
                }
                match next_at {
                    Some(at) => tokio::select! {
                        a = running.next() => a,
                        _ = tokio::time::sleep_until(at) => continue,
                    },
                    None => running.next().await,
                }
            };
            let Some((index, a)) = done else { continue };
            let code = a.result.status.code;
            if code == Code::Ok {
                if let Some(t) = self.throttle {
                    t.on_success();
                }
                if index > 0 {
                    self.counters.hedges_won.fetch_add(1, Ordering::Relaxed);
                }
                return a.result;
            }
            let non_fatal = policy.non_fatal_status_codes.contains(&code);
            if non_fatal {
                if let Some(t) = self.throttle {
                    t.on_failure();
                }
            }
            if !non_fatal && !a.transparent {
                return a.result;
            }
            match a.pushback {
                Some(Pushback::Stop) => next_at = None,
                Some(Pushback::Delay(d)) => {
                    next_at = (started < max_attempts).then(|| Instant::now() + d)
                }
                // A6: a non-fatal failure sends the next hedge at once.
                None => next_at = (started < max_attempts).then(Instant::now),
            }
            last = Some(a.result);
        }
    }
}
