//! The client: a target, its resolver, its balancer and its service config. This is the Rust
//! API that the C ABI wraps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attempt;
use crate::balancer::subchannel::ConnectConfig;
use crate::balancer::{outlier, Balancer};
use crate::config::{CallPolicy, Compression, Options, Policy};
use crate::metadata::{self, Metadata};
use crate::metrics::{MethodLabel, Metrics};
use crate::resolver::{self, Endpoint};
use crate::retry::throttle::Throttle;
use crate::retry::{CallAttempts, CallCounters};
use crate::runtime;
use crate::status::{Code, Status};
use crate::target::Target;
use crate::task::spawn_supervised;
use crate::transport::TransportConfig;

/// Whether a successful call's response headers and trailers are copied into its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMetadata {
    Keep,
    /// The caller wants only the response bytes (a failed call keeps its metadata anyway).
    Drop,
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The call's deadline, across all attempts; None = no deadline.
    pub timeout: Option<Duration>,
    /// Request metadata sent with every attempt.
    pub metadata: Metadata,
    /// Overrides the method config's `waitForReady`.
    pub wait_for_ready: Option<bool>,
    /// Overrides the client's `compression` for this call's request.
    pub compression: Option<Compression>,
}

impl CallOptions {
    /// Checks metadata keys and values the way gRPC does: lower-case token keys, no reserved
    /// `grpc-` keys, printable ASCII values unless the key ends in `-bin`.
    pub fn validate(&self) -> Result<(), Status> {
        for (key, value) in &self.metadata {
            crate::metadata::validate_metadata(key, value)?;
        }
        Ok(())
    }
}

/// What a finished call returns, successful or not.
#[derive(Clone, Debug)]
pub struct CallResult {
    pub status: Status,
    /// The response message's bytes (empty unless the call succeeded).
    pub response: Bytes,
    pub headers: Metadata,
    pub trailers: Metadata,
}

impl CallResult {
    pub fn error(status: Status) -> CallResult {
        CallResult {
            status,
            response: Bytes::new(),
            headers: Vec::new(),
            trailers: Vec::new(),
        }
    }

    pub fn into_result(self) -> Result<Bytes, Status> {
        if self.status.code == Code::Ok {
            Ok(self.response)
        } else {
            Err(self.status)
        }
    }
}

/// A gRPC client for one target. Cheap to clone; all clones share one set of connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    options: Options,
    balancer: Balancer,
    throttle: Option<Throttle>,
    counters: CallCounters,
    /// The A66 metrics (None when `metrics.enabled` is false).
    metrics: Option<Metrics>,
    closed: CancellationToken,
    /// Set (before `closed` is cancelled) when the client closes: what calls check on their way,
    /// without the token's mutex, which every call of the client shares.
    is_closed: AtomicBool,
}

impl Client {
    /// Creates a client and starts resolving `target` in the background. Never blocks on the
    /// network: an unreachable etcd shows up in the calls' errors, not here.
    pub fn connect(target: &str, options: Options) -> Result<Client, Status> {
        crate::logging::init();
        let parsed = Target::parse(target)?;
        // Both read their files now, before anything starts: a bad file fails the connect.
        let tls = load_tls(options.tls.as_ref(), "tls")?;
        let etcd_tls = match parsed {
            Target::Etcd { .. } => load_tls(options.etcd.tls.as_ref(), "etcd.tls")?,
            Target::Static { .. } => None,
        };
        let lb = options.service_config.lb_config();
        let connect = ConnectConfig {
            backoff: options.connect_backoff.clone(),
            min_connect_timeout: options.connect_timeout,
            transport: TransportConfig {
                keepalive_time: options.keepalive_time,
                keepalive_timeout: options.keepalive_timeout,
                tls,
            },
            // gRFC A17: pick_first does not health-check; the other policies do.
            health_service: options
                .service_config
                .health_check_service
                .clone()
                .filter(|_| lb.policy != Policy::PickFirst),
            events: Arc::default(),
        };
        let described = match &parsed {
            Target::Etcd { prefix } => prefix.clone(),
            Target::Static { addrs } => addrs.join(","),
        };
        let balancer = Balancer::new(
            described,
            &lb,
            connect,
            options.max_in_flight_per_instance,
            matches!(parsed, Target::Etcd { .. }),
        );
        let throttle = options
            .service_config
            .retry_throttling
            .as_ref()
            .map(Throttle::new);
        let closed = CancellationToken::new();
        let sink = balancer.sink();
        let _enter = runtime::handle().enter();
        if let Some(od) = lb.outlier_detection.clone() {
            let (balancer, stop) = (balancer.clone(), closed.clone());
            spawn_supervised(
                "outlier detection".into(),
                |_| {},
                move || outlier::run(balancer.clone(), od.clone(), stop.clone()),
            );
        }
        match parsed {
            Target::Static { addrs } => sink.update(addrs.into_iter().map(Endpoint::new).collect()),
            Target::Etcd { prefix } => {
                let (etcd, stop, reporter) = (options.etcd.clone(), closed.clone(), sink.clone());
                spawn_supervised(
                    format!("etcd resolver for {prefix:?}"),
                    move |why| reporter.error(format!("internal error in grpc-failover: {why}")),
                    move || {
                        resolver::etcd::watch_prefix(
                            etcd.clone(),
                            etcd_tls.clone(),
                            prefix.clone(),
                            sink.clone(),
                            stop.clone(),
                        )
                    },
                );
            }
        }
        let metrics = options
            .metrics_enabled
            .then(|| Metrics::new(target, &options.metrics_methods));
        Ok(Client {
            inner: Arc::new(Inner {
                target: target.to_string(),
                options,
                balancer,
                throttle,
                counters: CallCounters::default(),
                metrics,
                closed,
                is_closed: AtomicBool::new(false),
            }),
        })
    }

    /// Whether the client's options promise that async callbacks never block.
    pub(crate) fn nonblocking_callbacks(&self) -> bool {
        self.inner.options.nonblocking_callbacks
    }

    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Calls `method` ("/pkg.Service/Method") with raw request bytes; returns the raw response.
    pub async fn invoke(
        &self,
        method: &str,
        request: Bytes,
        opts: &CallOptions,
    ) -> Result<Bytes, Status> {
        self.invoke_with(method, request, opts, None, ResponseMetadata::Drop)
            .await
            .into_result()
    }

    /// Like [`Client::invoke`], with the response headers and trailers.
    pub async fn invoke_full(
        &self,
        method: &str,
        request: Bytes,
        opts: &CallOptions,
    ) -> CallResult {
        self.invoke_cancellable(method, request, opts, None).await
    }

    /// Like [`Client::invoke_full`]; cancelling `cancel` ends the call with CANCELLED.
    pub async fn invoke_cancellable(
        &self,
        method: &str,
        request: Bytes,
        opts: &CallOptions,
        cancel: Option<&CancellationToken>,
    ) -> CallResult {
        self.invoke_with(method, request, opts, cancel, ResponseMetadata::Keep)
            .await
    }

    /// Like [`Client::invoke_cancellable`]; with [`ResponseMetadata::Drop`] a successful call's
    /// headers and trailers are not copied out (a caller that only wants the bytes).
    pub(crate) async fn invoke_with(
        &self,
        method: &str,
        request: Bytes,
        opts: &CallOptions,
        cancel: Option<&CancellationToken>,
        metadata: ResponseMetadata,
    ) -> CallResult {
        let inner = &*self.inner;
        inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        let started = inner
            .metrics
            .as_ref()
            .map(|m| (m, m.label(method), std::time::Instant::now()));
        // No token: a future that never completes (no token to allocate on every call).
        let cancelled = async {
            match cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let mut result = tokio::select! {
            biased;
            _ = inner.closed.cancelled() => CallResult::error(Status::cancelled("client closed")),
            _ = cancelled => CallResult::error(Status::cancelled("call cancelled")),
            r = self.run(method, request, opts, metadata, started.map(|(m, label, _)| (m, label))) => r,
        };
        // A call that failed because close() or cancel tore down its connection while it was
        // being polled ended by that, not by the instance: report CANCELLED.
        if result.status.code != tonic::Code::Ok && result.status.code != tonic::Code::Cancelled {
            if inner.is_closed.load(Ordering::Acquire) {
                result = CallResult::error(Status::cancelled("client closed"));
            } else if cancel.is_some_and(CancellationToken::is_cancelled) {
                result = CallResult::error(Status::cancelled("call cancelled"));
            }
        }
        if result.status.code != tonic::Code::Ok {
            inner.counters.calls_failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((metrics, label, t0)) = started {
            metrics.call_ended(label, result.status.code, t0.elapsed());
        }
        result
    }

    async fn run(
        &self,
        method: &str,
        request: Bytes,
        opts: &CallOptions,
        response_metadata: ResponseMetadata,
        // The client's metrics with this call's method label (computed once, by invoke_with).
        metrics: Option<(&Metrics, MethodLabel)>,
    ) -> CallResult {
        let inner = &*self.inner;
        if inner.is_closed.load(Ordering::Acquire) {
            return CallResult::error(Status::cancelled("client closed"));
        }
        let (service, name) = match split_method(method) {
            Ok(parts) => parts,
            Err(status) => return CallResult::error(status),
        };
        if let Err(status) = opts.validate() {
            return CallResult::error(status);
        }
        // Checked here, before any attempt: a header list the server refuses would make it
        // close the connection, failing every other call on it too.
        let metadata_bytes = metadata::header_list_size(&opts.metadata);
        if metadata_bytes > inner.options.max_metadata_bytes {
            return CallResult::error(Status::resource_exhausted(format!(
                "request metadata of {metadata_bytes} bytes exceeds max_metadata_bytes {}",
                inner.options.max_metadata_bytes
            )));
        }
        let path = match PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(method.as_bytes()))
        {
            Ok(p) => p,
            Err(e) => {
                return CallResult::error(Status::invalid_argument(format!(
                    "method {method:?}: {e}"
                )))
            }
        };
        let mc = inner.options.service_config.method_config(service, name);
        let timeout = match (opts.timeout, mc.and_then(|m| m.timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        // The smaller of the option and the method config's limit, with the name to report.
        let send_limit = [
            (
                inner.options.max_send_message_bytes,
                "max_send_message_bytes",
            ),
            (
                mc.and_then(|m| m.max_request_message_bytes),
                "maxRequestMessageBytes",
            ),
        ]
        .into_iter()
        .filter_map(|(limit, name)| limit.map(|l| (l, name)))
        .min_by_key(|&(l, _)| l);
        if let Some((limit, name)) = send_limit {
            if request.len() as u64 > limit {
                return CallResult::error(Status::resource_exhausted(format!(
                    "request of {} bytes exceeds {name} {limit}",
                    request.len()
                )));
            }
        }
        let (max_response_bytes, response_limit) = match mc
            .and_then(|m| m.max_response_message_bytes)
            .filter(|&l| l < inner.options.max_receive_message_bytes)
        {
            Some(l) => (l, "maxResponseMessageBytes"),
            None => (
                inner.options.max_receive_message_bytes,
                "max_receive_message_bytes",
            ),
        };
        let max_response_bytes = max_response_bytes.min(usize::MAX as u64) as usize;
        let wait_for_ready = opts
            .wait_for_ready
            .or(mc.and_then(|m| m.wait_for_ready))
            .unwrap_or(false);
        let attempts = CallAttempts {
            balancer: &inner.balancer,
            request: attempt::Request {
                path: &path,
                message: request,
                metadata: &opts.metadata,
                max_response_bytes,
                response_limit,
                compression: opts.compression.unwrap_or(inner.options.compression),
                response_metadata,
            },
            deadline,
            wait_for_ready,
            throttle: inner.throttle.as_ref(),
            counters: &inner.counters,
            metrics,
        };
        let cap = inner.options.max_attempts_cap;
        let work = async {
            match mc.and_then(|m| m.policy.as_ref()) {
                Some(CallPolicy::Retry(p)) => attempts.retry(p, p.max_attempts.min(cap)).await,
                Some(CallPolicy::Hedging(p)) => attempts.hedge(p, p.max_attempts.min(cap)).await,
                None => attempts.once().await,
            }
        };
        let mut result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, work).await {
                Ok(r) => r,
                Err(_) => CallResult::error(Status::deadline_exceeded(format!(
                    "deadline of {} ms exceeded",
                    timeout.unwrap_or_default().as_millis()
                ))),
            },
            None => work.await,
        };
        // tonic reports a deadline it enforced itself as CANCELLED; to the caller it is a deadline.
        if result.status.code == tonic::Code::Cancelled
            && deadline.is_some_and(|d| Instant::now() >= d)
        {
            result.status = Status::deadline_exceeded(result.status.message.clone());
        }
        result
    }

    /// Client-wide counters and per-instance state, as JSON.
    pub fn stats(&self) -> Value {
        let c = &self.inner.counters;
        let mut v = json!({
            "target": self.inner.target,
            "calls": c.calls.load(Ordering::Relaxed),
            "calls_failed": c.calls_failed.load(Ordering::Relaxed),
            "attempts": c.attempts.load(Ordering::Relaxed),
            "retries": c.retries.load(Ordering::Relaxed),
            "transparent_retries": c.transparent_retries.load(Ordering::Relaxed),
            "hedges": c.hedges.load(Ordering::Relaxed),
            "hedges_won": c.hedges_won.load(Ordering::Relaxed),
            "throttled_retries": c.throttled.load(Ordering::Relaxed),
            "retry_tokens": self.inner.throttle.as_ref().map(|t| t.tokens()),
            // Process-wide: the library runtime's worker threads.
            "worker_threads": runtime::workers(),
        });
        if let (Value::Object(out), Value::Object(lb)) = (&mut v, self.inner.balancer.stats()) {
            out.extend(lb);
        }
        v
    }

    /// The client's metrics in the Prometheus text format: the gRFC A66 families (unless
    /// `metrics.enabled` is false), then the library's own, prefixed `grpc_failover_`: calls,
    /// attempts, retries (also by the code retried), transparent retries, hedges sent and won,
    /// and throttled retries, and per instance its picks, failures, calls in flight, ejections
    /// and connection state.
    pub fn metrics_text(&self) -> String {
        use crate::metrics::{escape, family};
        use std::fmt::Write as _;
        let mut out = String::new();
        if let Some(m) = &self.inner.metrics {
            m.write_text(&mut out);
        }
        let target = escape(&self.inner.target);
        let c = &self.inner.counters;
        for (name, help, counter) in [
            ("calls", "Calls started.", &c.calls),
            (
                "calls_failed",
                "Calls that ended with a status other than OK.",
                &c.calls_failed,
            ),
            (
                "attempts",
                "Attempts sent, every retry, hedge and transparent retry included.",
                &c.attempts,
            ),
            (
                "retries",
                "Attempts sent again after a retryable status (gRFC A6).",
                &c.retries,
            ),
            (
                "transparent_retries",
                "Attempts sent again because the first never reached a server.",
                &c.transparent_retries,
            ),
            (
                "hedges",
                "Hedged attempts sent beyond the first.",
                &c.hedges,
            ),
            (
                "hedges_won",
                "Hedged calls won by an attempt other than the first.",
                &c.hedges_won,
            ),
            (
                "throttled_retries",
                "Retries and hedges not sent because of retryThrottling.",
                &c.throttled,
            ),
        ] {
            let name = format!("grpc_failover_{name}_total");
            family(&mut out, &name, "counter", help);
            let _ = writeln!(
                out,
                "{name}{{grpc_target=\"{target}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let name = "grpc_failover_retries_by_reason_total";
        family(
            &mut out,
            name,
            "counter",
            "Retries by the status code of the attempt retried.",
        );
        for (code, n) in c.retries_by_code.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let reason = crate::status::code_name(Code::from_i32(code as i32));
                let _ = writeln!(
                    out,
                    "{name}{{grpc_target=\"{target}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        self.inner.balancer.write_metrics(&mut out, &target);
        let stats = self.inner.balancer.stats();
        let instances = stats["instances"].as_array().cloned().unwrap_or_default();
        type Read = fn(&Value) -> u64;
        let per_instance: [(&str, &str, &str, Read); 8] = [
            (
                "grpc_failover_instance_picks_total",
                "counter",
                "Attempts sent to the instance that finished (a losing hedge cancelled is not counted).",
                |i| i["calls"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_failures_total",
                "counter",
                "Attempts to the instance that failed.",
                |i| i["failures"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_in_flight",
                "gauge",
                "Attempts to the instance in flight now.",
                |i| i["in_flight"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_ejections_total",
                "counter",
                "Times outlier detection ejected the instance.",
                |i| i["ejections"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_unejections_total",
                "counter",
                "Times the instance returned from an outlier ejection.",
                |i| i["unejections"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_ejected",
                "gauge",
                "1 while the instance is ejected.",
                |i| u64::from(i["ejected"].as_bool().unwrap_or(false)),
            ),
            (
                "grpc_failover_instance_health_changes_total",
                "counter",
                "Health-check answers that differed from the instance's answer before (a first answer counts when it is NOT_SERVING).",
                |i| i["health_changes"].as_u64().unwrap_or(0),
            ),
            (
                "grpc_failover_instance_healthy",
                "gauge",
                "1 while the instance's health check says SERVING (or health checking is off).",
                |i| u64::from(i["healthy"].as_bool().unwrap_or(false)),
            ),
        ];
        for (name, kind, help, value) in per_instance {
            family(&mut out, name, kind, help);
            for i in &instances {
                let _ = writeln!(
                    out,
                    "{name}{{grpc_target=\"{target}\",instance=\"{}\"}} {}",
                    escape(i["address"].as_str().unwrap_or("")),
                    value(i)
                );
            }
        }
        let name = "grpc_failover_instance_connection_state";
        family(&mut out, name, "gauge", "1 for the instance's connection state now (IDLE, CONNECTING, READY, TRANSIENT_FAILURE).");
        for i in &instances {
            let _ = writeln!(
                out,
                "{name}{{grpc_target=\"{target}\",instance=\"{}\",state=\"{}\"}} 1",
                escape(i["address"].as_str().unwrap_or("")),
                escape(i["state"].as_str().unwrap_or(""))
            );
        }
        out
    }

    /// Stops resolving, closes every connection and completes calls in flight with CANCELLED.
    pub fn close(&self) {
        self.inner.is_closed.store(true, Ordering::Release);
        self.inner.closed.cancel();
        self.inner.balancer.close();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed.load(Ordering::Acquire)
    }
}

/// Loads the TLS files `options` names at `field`, as INVALID_ARGUMENT errors.
pub(crate) fn load_tls(
    options: Option<&crate::config::TlsOptions>,
    field: &'static str,
) -> Result<Option<Arc<crate::tls::Tls>>, Status> {
    options
        .map(|o| crate::tls::Tls::load(o, field).map(Arc::new))
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("options_json: {e}")))
}

/// Splits "/pkg.Service/Method" into ("pkg.Service", "Method").
pub fn split_method(method: &str) -> Result<(&str, &str), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "method {method:?}: expected \"/package.Service/Method\""
        ))
    };
    let rest = method.strip_prefix('/').ok_or_else(bad)?;
    let (service, name) = rest.split_once('/').ok_or_else(bad)?;
    // Only characters that stand for themselves in a URI path: `?` or `#` would turn the rest
    // into a query or a fragment and call a different method.
    let path_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&b);
    if service.is_empty() || name.is_empty() || name.contains('/') || !method.bytes().all(path_char)
    {
        return Err(bad());
    }
    Ok((service, name))
}

impl Drop for Inner {
    /// The last clone is gone: stop the resolver, the timers and the connections.
    fn drop(&mut self) {
        self.is_closed.store(true, Ordering::Release);
        self.closed.cancel();
        self.balancer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!(split_method("/pkg.Svc/Echo").unwrap(), ("pkg.Svc", "Echo"));
        for bad in [
            "", "/", "//", "/a/", "//b", "a/b", "/a/b/c", "/a b/c", "/a/b\n",
        ] {
            assert!(split_method(bad).is_err(), "{bad:?}");
        }
    }
}
