//! Outlier detection (gRFC A50): every `interval`, instances whose recent calls fail much more
//! than the others' (success-rate ejection) or more than a threshold (failure-percentage
//! ejection) are ejected for base_ejection_time x their ejection multiplier, capped at
//! max(base_ejection_time, max_ejection_time). Repeat offenders stay out longer; the
//! multiplier decays by one per interval spent healthy. At most maxEjectionPercent of the
//! instances are ejected at once (one may always be), and never all of them.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::subchannel::Subchannel;
use super::Balancer;
use crate::config::OutlierDetection;

/// Runs the ejection timer until `stop`.
pub async fn run(balancer: Balancer, cfg: OutlierDetection, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if sweep(&balancer.subchannels(), &cfg, Instant::now()) {
            balancer.refresh();
        }
    }
}

struct Sample {
    sc: Arc<Subchannel>,
    successes: u64,
    failures: u64,
}

impl Sample {
    fn volume(&self) -> u64 {
        self.successes + self.failures
    }
    fn success_rate(&self) -> f64 {
        self.successes as f64 / self.volume().max(1) as f64
    }
}

/// One pass of the A50 algorithm at `now`; true when any instance was ejected or returned.
pub fn sweep(subs: &[Arc<Subchannel>], cfg: &OutlierDetection, now: Instant) -> bool {
    let samples: Vec<Sample> = subs
        .iter()
        .map(|sc| {
            let (successes, failures) = sc.take_interval();
            Sample {
                sc: sc.clone(),
                successes,
                failures,
            }
        })
        .collect();
    let total = samples.len();
    let mut changed = false;
    let mut ejected = samples.iter().filter(|s| s.sc.ejected(now)).count();
    let eject = |s: &Sample, ejected: &mut usize| -> bool {
        // The cap: ejected instances never exceed maxEjectionPercent of all, except that one may
        // always be ejected (as in Envoy), and never the last one standing.
        let within_cap = (*ejected + 1) * 100 <= cfg.max_ejection_percent as usize * total;
        let first = *ejected == 0 && cfg.max_ejection_percent > 0;
        if !(within_cap || first) || *ejected + 1 >= total || s.sc.ejected(now) {
            return false;
        }
        let duration = {
            let mut e = s.sc.ejection();
            e.multiplier = e.multiplier.saturating_add(1);
            e.count = e.count.saturating_add(1);
            let max = cfg.base_ejection_time.max(cfg.max_ejection_time);
            let duration = cfg.base_ejection_time.saturating_mul(e.multiplier).min(max);
            e.until = Some(now + duration);
            duration.as_millis()
        };
        s.sc.set_last_error(format!(
            "ejected by outlier detection for {duration} ms ({} of {} calls failed)",
            s.failures,
            s.volume()
        ));
        log::info!(
            "outlier detection: ejecting {} for {duration} ms",
            s.sc.addr
        );
        *ejected += 1;
        true
    };
    if let Some(sr) = &cfg.success_rate_ejection {
        let candidates: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.volume() >= sr.request_volume as u64)
            .collect();
        if candidates.len() >= sr.minimum_hosts as usize && !candidates.is_empty() {
            let n = candidates.len() as f64;
            let mean = candidates.iter().map(|s| s.success_rate()).sum::<f64>() / n;
            let variance = candidates
                .iter()
                .map(|s| (s.success_rate() - mean).powi(2))
                .sum::<f64>()
                / n;
            let threshold = mean - variance.sqrt() * (sr.stdev_factor as f64 / 1000.0);
            for s in candidates {
                if s.success_rate() < threshold && fastrand::u32(0..100) < sr.enforcement_percentage
                {
                    changed |= eject(s, &mut ejected);
                }
            }
        }
    }
    if let Some(fp) = &cfg.failure_percentage_ejection {
        let candidates: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.volume() >= fp.request_volume as u64)
            .collect();
        if candidates.len() >= fp.minimum_hosts as usize {
            for s in candidates {
                let failure_percent = 100.0 * s.failures as f64 / s.volume().max(1) as f64;
                if failure_percent > fp.threshold as f64
                    && fastrand::u32(0..100) < fp.enforcement_percentage
                {
                    changed |= eject(s, &mut ejected);
                }
            }
        }
    }
    for s in &samples {
        let mut e = s.sc.ejection();
        match e.until {
            None => e.multiplier = e.multiplier.saturating_sub(1),
            Some(until) if until <= now => {
                e.until = None;
                e.unejections = e.unejections.saturating_add(1);
                log::info!("outlier detection: {} returns", s.sc.addr);
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::service_config::FailurePercentageEjection;
    use crate::status::{Code, Status};
    use std::time::Duration;

    fn cfg(max_percent: u32) -> OutlierDetection {
        OutlierDetection {
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_millis(1000),
            max_ejection_time: Duration::from_millis(10_000),
            max_ejection_percent: max_percent,
            success_rate_ejection: None,
            failure_percentage_ejection: Some(FailurePercentageEjection {
                threshold: 50,
                enforcement_percentage: 100,
                minimum_hosts: 1,
                request_volume: 10,
            }),
        }
    }

    fn subs(n: usize) -> Vec<Arc<Subchannel>> {
        (0..n)
            .map(|i| Subchannel::new(&format!("h{i}:1"), 1.0, serde_json::Value::Null).unwrap())
            .collect()
    }

    /// Counts attempt outcomes the way finished attempts do.
    fn fail(sc: &Subchannel, failures: u64, successes: u64) {
        for _ in 0..failures {
            sc.record(&Status::unavailable("down"));
        }
        for _ in 0..successes {
            sc.record(&Status::new(Code::Ok, ""));
        }
    }

    /// `ms` milliseconds after `t0`.
    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn repeat_offenders_stay_out_longer_and_multiplier_decays() {
        let t0 = Instant::now();
        let s = subs(3);
        let c = cfg(50);
        fail(&s[0], 20, 0);
        assert!(sweep(&s, &c, at(t0, 10_000)));
        assert_eq!(s[0].ejection().until, Some(at(t0, 11_000)));
        // Returns after its time.
        assert!(sweep(&s, &c, at(t0, 11_000)));
        assert!(!s[0].ejected(at(t0, 11_000)));
        // Fails again at once: twice as long.
        fail(&s[0], 20, 0);
        sweep(&s, &c, at(t0, 12_000));
        assert_eq!(s[0].ejection().until, Some(at(t0, 14_000)));
        // Capped at max(base, max_ejection_time).
        for t in [14_000u64, 30_000, 60_000, 100_000, 200_000, 400_000] {
            sweep(&s, &c, at(t0, t));
            fail(&s[0], 20, 0);
            sweep(&s, &c, at(t0, t + 1));
        }
        let until = s[0].ejection().until.expect("ejected");
        assert!(until <= at(t0, 400_001 + 10_000));
        assert_eq!(s[0].ejection().count, 8);
        // Intervals spent healthy decay the multiplier by one each.
        let m = s[0].ejection().multiplier;
        sweep(&s, &c, at(t0, 500_000));
        for (i, t) in (1..=3).map(|i| (i, 500_000 + i * 1000)) {
            sweep(&s, &c, at(t0, t));
            assert_eq!(s[0].ejection().multiplier, m - i as u32);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_ends_on_the_runtime_clock() {
        let s = subs(3);
        let c = cfg(50);
        fail(&s[0], 20, 0);
        assert!(sweep(&s, &c, Instant::now()));
        assert!(s[0].ejected(Instant::now()));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!sweep(&s, &c, Instant::now()));
        assert!(s[0].ejected(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            sweep(&s, &c, Instant::now()),
            "back after base_ejection_time"
        );
        assert!(!s[0].ejected(Instant::now()));
    }

    #[test]
    fn the_cap_holds_and_never_ejects_everything() {
        let now = Instant::now();
        let s = subs(4);
        for sc in &s {
            fail(sc, 100, 0);
        }
        sweep(&s, &cfg(50), now);
        assert_eq!(s.iter().filter(|sc| sc.ejected(now)).count(), 2, "50% of 4");
        let s = subs(2);
        for sc in &s {
            fail(sc, 100, 0);
        }
        sweep(&s, &cfg(100), now);
        assert_eq!(
            s.iter().filter(|sc| sc.ejected(now)).count(),
            1,
            "never all"
        );
    }

    #[test]
    fn success_rate_ejection_uses_mean_minus_stdev() {
        let now = Instant::now();
        let s = subs(5);
        let mut c = cfg(100);
        c.failure_percentage_ejection = None;
        c.success_rate_ejection = Some(crate::config::service_config::SuccessRateEjection {
            stdev_factor: 1000,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 10,
        });
        for sc in &s[1..] {
            fail(sc, 0, 100);
        }
        fail(&s[0], 60, 40);
        sweep(&s, &c, now);
        assert!(s[0].ejected(now));
        assert!(s[1..].iter().all(|sc| !sc.ejected(now)));
    }
}
