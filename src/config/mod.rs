//! `options_json` (what `gf_connect` and `gf_register` take) and the gRPC service config.

pub mod duration;
pub(crate) mod json;
pub mod service_config;

use std::time::Duration;

use serde_json::Value;

use json::{opt_bool, opt_f64, opt_ms, opt_str, opt_u32, opt_u64};

pub use service_config::{
    CallPolicy, HedgingPolicy, LbConfig, MethodConfig, OutlierDetection, Policy, RetryPolicy,
    RetryThrottling, ServiceConfig, SlowStart,
};

use crate::status::Status;
pub use crate::tls::TlsOptions;

/// Where etcd is and how to log in.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub dial_timeout: Duration,
    /// TLS to etcd (`etcd.tls`); None is plaintext.
    pub tls: Option<TlsOptions>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// gRPC connection backoff (the names and defaults of grpc-go's `backoff.Config`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectBackoff {
    pub base_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    pub max_delay: Duration,
}

impl Default for ConnectBackoff {
    fn default() -> Self {
        ConnectBackoff {
            base_delay: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max_delay: Duration::from_secs(120),
        }
    }
}

/// The largest `connect_backoff.multiplier`: each attempt's backoff may grow at most this much.
pub(crate) const MAX_BACKOFF_MULTIPLIER: f64 = 100.0;

/// The shortest keepalive interval, as in grpc-go (servers answer more frequent pings with a
/// GOAWAY): shorter ones are raised to it.
pub(crate) const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(10);

/// The default bound of a call's request metadata: 16 KiB, the header list most HTTP/2 servers
/// accept (a larger one makes such a server close the connection, failing every call on it).
pub(crate) const DEFAULT_MAX_METADATA_BYTES: u64 = 16 << 10;

/// The default bound of a response message, gRPC's (grpc-go, grpc-java, grpc-core): 4 MiB.
pub(crate) const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES: u64 = 4 << 20;

/// A message compression, by its gRPC name (`grpc-encoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed ("identity").
    #[default]
    Identity,
    Gzip,
}

impl Compression {
    /// "gzip" or "identity", as grpc-go names them (`grpc-encoding` values); nothing else.
    pub fn from_name(name: &str) -> Result<Compression, String> {
        match name {
            "gzip" => Ok(Compression::Gzip),
            "identity" => Ok(Compression::Identity),
            other => Err(format!("unknown compression {other:?}: gzip or identity")),
        }
    }
}

/// Everything `gf_connect` accepts in `options_json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub service_config: ServiceConfig,
    pub etcd: EtcdOptions,
    /// gRPC's MinConnectTimeout: the least time one connection attempt gets.
    pub connect_timeout: Duration,
    pub connect_backoff: ConnectBackoff,
    /// A6's cap on `maxAttempts` of retry and hedging policies.
    pub max_attempts_cap: u32,
    /// Calls in flight per instance before the picker skips it; None is unlimited.
    pub max_in_flight_per_instance: Option<u32>,
    /// HTTP/2 keepalive pings on idle and busy connections; None (the default, as in gRPC) is off.
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// The async calls' callbacks never block: such calls run on the call loops, where their
    /// callback runs too (see `runtime::run_on_call_loop`).
    pub nonblocking_callbacks: bool,
    /// The largest request metadata a call may send, counted as HTTP/2 counts a header list
    /// (name + value + 32 per entry); a larger one fails the call before anything is sent.
    pub max_metadata_bytes: u64,
    /// The largest response message a call accepts (gRPC's default: 4 MiB); a method config's
    /// smaller `maxResponseMessageBytes` wins.
    pub max_receive_message_bytes: u64,
    /// The largest request message a call sends; None (the default, as in gRPC) is unlimited. A
    /// method config's smaller `maxRequestMessageBytes` wins.
    pub max_send_message_bytes: Option<u64>,
    /// How requests are compressed unless a call says otherwise; responses in gzip are always
    /// accepted (`grpc-accept-encoding: gzip`).
    pub compression: Compression,
    /// TLS to the backends (`tls`); None is plaintext.
    pub tls: Option<TlsOptions>,
    /// `metrics.enabled` (default true): the gRFC A66 metrics of `gf_client_metrics`.
    pub metrics_enabled: bool,
    /// `metrics.methods`: the methods ("pkg.Service/Method") whose name labels their metrics;
    /// every other method is labelled `other` (A66), which keeps the label set bounded.
    pub metrics_methods: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            service_config: ServiceConfig::default(),
            etcd: EtcdOptions::default(),
            connect_timeout: Duration::from_secs(20),
            connect_backoff: ConnectBackoff::default(),
            max_attempts_cap: 5,
            max_in_flight_per_instance: None,
            keepalive_time: None,
            keepalive_timeout: Duration::from_secs(20),
            nonblocking_callbacks: false,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            max_receive_message_bytes: DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
            max_send_message_bytes: None,
            compression: Compression::Identity,
            tls: None,
            metrics_enabled: true,
            metrics_methods: Vec::new(),
        }
    }
}

impl Options {
    /// Parses `options_json`. None or an empty string means all defaults.
    pub fn from_json(text: Option<&str>) -> Result<Options, Status> {
        let text = match text.map(str::trim) {
            None | Some("") => return Ok(Options::default()),
            Some(t) => t,
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Status::invalid_argument(format!("options_json: not valid JSON: {e}")))?;
        Self::from_value(&value).map_err(|e| Status::invalid_argument(format!("options_json: {e}")))
    }

    pub fn from_value(value: &Value) -> Result<Options, String> {
        let obj = match value {
            Value::Object(o) => o,
            Value::Null => return Ok(Options::default()),
            other => return Err(format!("must be a JSON object, got {other}")),
        };
        let mut o = Options::default();
        if let Some(sc) = obj.get("service_config") {
            o.service_config = ServiceConfig::from_value(sc)?;
        }
        if let Some(e) = obj.get("etcd") {
            o.etcd = parse_etcd(e)?;
        }
        if let Some(ms) = opt_ms(obj, "connect_timeout_ms", "")? {
            o.connect_timeout = ms;
        }
        if let Some(b) = json::opt_object(obj, "connect_backoff", "")? {
            let f = "connect_backoff";
            if let Some(d) = opt_ms(b, "base_delay_ms", f)? {
                o.connect_backoff.base_delay = d;
            }
            if let Some(d) = opt_ms(b, "max_delay_ms", f)? {
                o.connect_backoff.max_delay = d;
            }
            if let Some(m) = opt_f64(b, "multiplier", f)? {
                if !(1.0..=MAX_BACKOFF_MULTIPLIER).contains(&m) {
                    return Err(format!(
                        "connect_backoff.multiplier: must be 1 to {MAX_BACKOFF_MULTIPLIER}, got {m}"
                    ));
                }
                o.connect_backoff.multiplier = m;
            }
            if let Some(j) = opt_f64(b, "jitter", f)? {
                if !(0.0..1.0).contains(&j) {
                    return Err(format!(
                        "connect_backoff.jitter: must be in [0, 1), got {j}"
                    ));
                }
                o.connect_backoff.jitter = j;
            }
        }
        if let Some(v) = opt_u32(obj, "max_attempts", "")? {
            if v < 1 {
                return Err("max_attempts: must be >= 1".into());
            }
            o.max_attempts_cap = v;
        }
        if let Some(v) = opt_u64(obj, "max_in_flight_per_instance", "")? {
            if v < 1 {
                return Err("max_in_flight_per_instance: must be >= 1".into());
            }
            o.max_in_flight_per_instance = Some(v.min(u32::MAX as u64) as u32);
        }
        o.keepalive_time = opt_ms(obj, "keepalive_time_ms", "")?.map(|t| {
            if t < MIN_KEEPALIVE_TIME {
                log::warn!(
                    "keepalive_time_ms: {} ms is below gRPC's minimum; using {} ms",
                    t.as_millis(),
                    MIN_KEEPALIVE_TIME.as_millis()
                );
            }
            t.max(MIN_KEEPALIVE_TIME)
        });
        if let Some(t) = opt_ms(obj, "keepalive_timeout_ms", "")? {
            if t.is_zero() {
                return Err("keepalive_timeout_ms: must be > 0".into());
            }
            o.keepalive_timeout = t;
        }
        if let Some(n) = opt_u64(obj, "max_metadata_bytes", "")? {
            o.max_metadata_bytes = n;
        }
        if let Some(n) = opt_u64(obj, "max_receive_message_bytes", "")? {
            o.max_receive_message_bytes = n;
        }
        o.max_send_message_bytes = opt_u64(obj, "max_send_message_bytes", "")?;
        if let Some(c) = opt_str(obj, "compression", "")? {
            o.compression = Compression::from_name(&c).map_err(|e| format!("compression: {e}"))?;
        }
        if let Some(b) = opt_bool(obj, "nonblocking_callbacks", "")? {
            o.nonblocking_callbacks = b;
        }
        if let Some(t) = json::get(obj, "tls") {
            o.tls = Some(TlsOptions::from_value(t, "tls")?);
        }
        if let Some(m) = json::opt_object(obj, "metrics", "")? {
            if let Some(b) = opt_bool(m, "enabled", "metrics")? {
                o.metrics_enabled = b;
            }
            match json::get(m, "methods") {
                None => {}
                Some(Value::Array(list)) => {
                    for item in list {
                        let name = item.as_str().ok_or_else(|| {
                            format!("metrics.methods: each method must be a string, got {item}")
                        })?;
                        let full = format!("/{}", name.trim_start_matches('/'));
                        crate::client::split_method(&full).map_err(|_| {
                            format!(
                                "metrics.methods: {name:?} is not a method name (\"package.Service/Method\")"
                            )
                        })?;
                        o.metrics_methods.push(full);
                    }
                }
                Some(other) => {
                    return Err(format!(
                        "metrics.methods: must be an array of method names, got {other}"
                    ))
                }
            }
        }
        Ok(o)
    }
}

fn parse_etcd(v: &Value) -> Result<EtcdOptions, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("etcd: must be an object, got {v}"))?;
    let mut e = EtcdOptions::default();
    match obj.get("endpoints") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            let mut endpoints = Vec::new();
            for item in list {
                let s = item
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        format!(
                            "etcd.endpoints: each endpoint must be a non-empty string, got {item}"
                        )
                    })?;
                endpoints.push(s.trim().to_string());
            }
            if endpoints.is_empty() {
                return Err("etcd.endpoints: must not be empty".into());
            }
            e.endpoints = endpoints;
        }
        Some(Value::String(s)) => {
            e.endpoints = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if e.endpoints.is_empty() {
                return Err("etcd.endpoints: must not be empty".into());
            }
        }
        Some(other) => {
            return Err(format!(
                "etcd.endpoints: must be a list of strings, got {other}"
            ))
        }
    }
    e.username = opt_str(obj, "username", "etcd")?;
    e.password = opt_str(obj, "password", "etcd")?;
    if e.username.is_some() != e.password.is_some() {
        return Err("etcd: username and password go together".into());
    }
    if let Some(d) = opt_ms(obj, "dial_timeout_ms", "etcd")? {
        e.dial_timeout = d;
    }
    if let Some(t) = json::get(obj, "tls") {
        e.tls = Some(TlsOptions::from_value(t, "etcd.tls")?);
        // etcd's client refuses TLS settings for an http:// endpoint.
        if let Some(plain) = e.endpoints.iter().find(|p| p.starts_with("http://")) {
            return Err(format!(
                "etcd.endpoints: {plain:?} is plaintext but etcd.tls is set (use https:// or host:port)"
            ));
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nonblocking_callbacks_is_a_boolean_off_by_default() {
        assert!(!Options::from_json(None).unwrap().nonblocking_callbacks);
        let on = Options::from_json(Some(r#"{"nonblocking_callbacks": true}"#)).unwrap();
        assert!(on.nonblocking_callbacks);
        let null = Options::from_json(Some(r#"{"nonblocking_callbacks": null}"#)).unwrap();
        assert!(!null.nonblocking_callbacks);
        let err = Options::from_json(Some(r#"{"nonblocking_callbacks": 1}"#)).unwrap_err();
        assert_eq!(err.code, crate::status::Code::InvalidArgument);
        assert!(
            err.message.contains("nonblocking_callbacks"),
            "{}",
            err.message
        );
    }

    #[test]
    fn integers_follow_the_same_proto3_json_rule_as_the_service_config() {
        for v in [json!(3), json!(3.0), json!("3")] {
            let o =
                Options::from_value(&json!({"max_attempts": v, "connect_timeout_ms": v})).unwrap();
            assert_eq!(o.max_attempts_cap, 3, "{v}");
            assert_eq!(o.connect_timeout, Duration::from_millis(3), "{v}");
            let sc = ServiceConfig::from_value(&json!({"methodConfig": [
                {"name": [{}], "maxRequestMessageBytes": v}
            ]}))
            .unwrap();
            let mc = sc
                .method_config("s", "m")
                .expect("the default method config");
            assert_eq!(mc.max_request_message_bytes, Some(3), "{v}");
        }
        for v in [json!(3.5), json!("3.0"), json!(-3), json!(true)] {
            let err = Options::from_value(&json!({"max_attempts": v})).unwrap_err();
            assert!(
                err.starts_with("max_attempts: must be a non-negative integer"),
                "{err}"
            );
            let err = Options::from_value(&json!({"etcd": {"dial_timeout_ms": v}})).unwrap_err();
            assert!(err.starts_with("etcd.dial_timeout_ms: must be"), "{err}");
            let err = ServiceConfig::from_value(&json!({"methodConfig": [
                {"name": [{}], "maxRequestMessageBytes": v}
            ]}))
            .unwrap_err();
            assert!(
                err.starts_with("methodConfig[0].maxRequestMessageBytes: must be"),
                "{err}"
            );
        }
        // Too large for the field is an error, not a truncation.
        let err = Options::from_value(&json!({"max_attempts": 4294967297u64})).unwrap_err();
        assert!(err.starts_with("max_attempts: too large"), "{err}");
    }

    #[test]
    fn keepalive_below_ten_seconds_is_raised_to_it() {
        for ms in [0, 1, 9_999] {
            let o = Options::from_value(&json!({"keepalive_time_ms": ms})).unwrap();
            assert_eq!(o.keepalive_time, Some(MIN_KEEPALIVE_TIME), "{ms}");
        }
        let o = Options::from_value(&json!({"keepalive_time_ms": 30_000})).unwrap();
        assert_eq!(o.keepalive_time, Some(Duration::from_secs(30)));
        let err = Options::from_value(&json!({"keepalive_timeout_ms": 0})).unwrap_err();
        assert!(
            err.starts_with("keepalive_timeout_ms: must be > 0"),
            "{err}"
        );
    }

    #[test]
    fn etcd_tls_refuses_plaintext_endpoints() {
        let err = Options::from_value(&json!({"etcd": {
            "endpoints": ["http://127.0.0.1:2379"], "tls": {}
        }}))
        .unwrap_err();
        assert!(
            err.starts_with("etcd.endpoints: \"http://127.0.0.1:2379\" is plaintext"),
            "{err}"
        );
        let o = Options::from_value(&json!({"etcd": {
            "endpoints": ["https://127.0.0.1:2379", "127.0.0.1:2380"], "tls": {"ca_file": "/ca.pem"}
        }}))
        .unwrap();
        assert_eq!(o.etcd.tls.unwrap().ca_file.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn backoff_multiplier_is_bounded() {
        for m in [0.5, 100.5, 1e308] {
            let err =
                Options::from_value(&json!({"connect_backoff": {"multiplier": m}})).unwrap_err();
            assert!(
                err.starts_with("connect_backoff.multiplier: must be 1 to 100"),
                "{err}"
            );
        }
        let o = Options::from_value(&json!({"connect_backoff": {"multiplier": 100}})).unwrap();
        assert_eq!(o.connect_backoff.multiplier, 100.0);
    }
}
