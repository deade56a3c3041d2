//! The gRPC service config (the JSON of grpc-go's `WithDefaultServiceConfig`), parsed and
//! validated as gRFC A6 and A21 describe: unknown fields are ignored, an invalid value of a known
//! field rejects the whole config with a message that names the field and the value.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::{Map, Value};

use super::json::{opt_bool, opt_duration, opt_f64, opt_str, opt_u32, opt_u64, req_f64};
use crate::status::{parse_code, Code};

/// The load-balancing policy that builds the picker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    PickFirst,
    RoundRobin,
    /// Static smooth weighted round robin (nginx's algorithm) over the weights in the instances'
    /// etcd metadata. Not the ORCA-driven `weighted_round_robin` of gRFC A58.
    WeightedRoundRobin,
    /// gRFC A48 `least_request_experimental`: of `choice_count` instances drawn at random, the
    /// one with the fewest calls in flight per unit of weight.
    LeastRequest {
        choice_count: u32,
    },
}

impl Policy {
    /// The name in `loadBalancingConfig` (for stats and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Policy::PickFirst => "pick_first",
            Policy::RoundRobin => "round_robin",
            Policy::WeightedRoundRobin => "weighted_round_robin",
            Policy::LeastRequest { .. } => "least_request_experimental",
        }
    }
}

/// Envoy's slow start (`slow_start_config`), for round_robin, weighted_round_robin and
/// least_request: an instance that becomes pickable while others already serve starts at
/// `min_weight_percent` of its weight and ramps to all of it over `window`, its share
/// `weight * max(min_weight_percent / 100, (age / window) ^ (1 / aggression))`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowStart {
    pub window: Duration,
    pub aggression: f64,
    pub min_weight_percent: f64,
}

impl SlowStart {
    /// The weight factor of an instance pickable for `age`: 1 at and after the window.
    pub fn factor(&self, age: Duration) -> f64 {
        if self.window.is_zero() || age >= self.window {
            return 1.0;
        }
        let time = age.as_secs_f64() / self.window.as_secs_f64();
        time.powf(1.0 / self.aggression)
            .max(self.min_weight_percent / 100.0)
            .min(1.0)
    }
}

/// gRFC A50 outlier detection, wrapping a child policy.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub success_rate_ejection: Option<SuccessRateEjection>,
    pub failure_percentage_ejection: Option<FailurePercentageEjection>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRateEjection {
    pub stdev_factor: u32,
    pub enforcement_percentage: u32,
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailurePercentageEjection {
    pub threshold: u32,
    pub enforcement_percentage: u32,
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LbConfig {
    pub policy: Policy,
    pub outlier_detection: Option<OutlierDetection>,
    pub slow_start: Option<SlowStart>,
    /// gRFC A68 `random_subsetting_experimental`: connect to this many of the instances.
    pub subset_size: Option<u32>,
}

impl LbConfig {
    pub fn new(policy: Policy) -> LbConfig {
        LbConfig {
            policy,
            outlier_detection: None,
            slow_start: None,
            subset_size: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub backoff_multiplier: f64,
    pub retryable_status_codes: Vec<Code>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    pub max_attempts: u32,
    pub hedging_delay: Duration,
    pub non_fatal_status_codes: Vec<Code>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CallPolicy {
    Retry(RetryPolicy),
    Hedging(HedgingPolicy),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodConfig {
    pub wait_for_ready: Option<bool>,
    pub timeout: Option<Duration>,
    pub max_request_message_bytes: Option<u64>,
    pub max_response_message_bytes: Option<u64>,
    pub policy: Option<CallPolicy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryThrottling {
    pub max_tokens: f64,
    pub token_ratio: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    pub lb: Option<LbConfig>,
    pub retry_throttling: Option<RetryThrottling>,
    /// `healthCheckConfig.serviceName` (gRFC A17); Some turns client-side health checking on.
    pub health_check_service: Option<String>,
    by_method: HashMap<String, HashMap<String, Arc<MethodConfig>>>,
    by_service: HashMap<String, Arc<MethodConfig>>,
    default_method: Option<Arc<MethodConfig>>,
}

type Result<T> = std::result::Result<T, String>;

impl ServiceConfig {
    /// Parses a service config given as a JSON object or as a string that holds one.
    pub fn from_value(value: &Value) -> Result<ServiceConfig> {
        match value {
            Value::String(text) => {
                let inner: Value = serde_json::from_str(text)
                    .map_err(|e| format!("service_config: not valid JSON: {e}"))?;
                if !inner.is_object() {
                    return Err("service_config: must be a JSON object".into());
                }
                Self::from_value(&inner)
            }
            Value::Object(obj) => parse_service_config(obj),
            Value::Null => Ok(ServiceConfig::default()),
            other => Err(format!(
                "service_config: must be an object or a string, got {other}"
            )),
        }
    }

    /// The method config for `/service/method`: exact match, then the service, then the default.
    pub fn method_config(&self, service: &str, method: &str) -> Option<&Arc<MethodConfig>> {
        if let Some(mc) = self.by_method.get(service).and_then(|m| m.get(method)) {
            return Some(mc);
        }
        self.by_service
            .get(service)
            .or(self.default_method.as_ref())
    }

    /// The effective policy (default pick_first, as in gRPC).
    pub fn lb_config(&self) -> LbConfig {
        self.lb
            .clone()
            .unwrap_or_else(|| LbConfig::new(Policy::PickFirst))
    }
}

fn parse_service_config(obj: &Map<String, Value>) -> Result<ServiceConfig> {
    let mut sc = ServiceConfig::default();
    if let Some(v) = obj.get("loadBalancingConfig") {
        sc.lb = Some(parse_lb_list(v, "loadBalancingConfig")?);
    } else if let Some(v) = obj.get("loadBalancingPolicy") {
        let name = v
            .as_str()
            .ok_or_else(|| format!("loadBalancingPolicy: must be a string, got {v}"))?;
        let policy = policy_by_name(&name.to_ascii_lowercase())
            .ok_or_else(|| format!("loadBalancingPolicy: unsupported policy {name:?}"))?;
        sc.lb = Some(LbConfig::new(policy));
    }
    if let Some(v) = obj.get("retryThrottling") {
        sc.retry_throttling = Some(parse_throttling(v)?);
    }
    if let Some(v) = obj.get("healthCheckConfig") {
        let hc = v
            .as_object()
            .ok_or_else(|| format!("healthCheckConfig: must be an object, got {v}"))?;
        let name = match hc.get("serviceName") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "healthCheckConfig.serviceName: must be a string, got {other}"
                ))
            }
        };
        sc.health_check_service = Some(name);
    }
    if let Some(v) = obj.get("methodConfig") {
        let list = v
            .as_array()
            .ok_or_else(|| format!("methodConfig: must be a list, got {v}"))?;
        for (i, entry) in list.iter().enumerate() {
            let field = format!("methodConfig[{i}]");
            let entry = entry
                .as_object()
                .ok_or_else(|| format!("{field}: must be an object, got {entry}"))?;
            let mc = Arc::new(parse_method_config(entry, &field)?);
            let names = match entry.get("name") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(names)) => names.clone(),
                Some(other) => return Err(format!("{field}.name: must be a list, got {other}")),
            };
            for (j, name) in names.iter().enumerate() {
                let nfield = format!("{field}.name[{j}]");
                let name = name
                    .as_object()
                    .ok_or_else(|| format!("{nfield}: must be an object, got {name}"))?;
                let service = opt_str(name, "service", &nfield)?.unwrap_or_default();
                let method = opt_str(name, "method", &nfield)?.unwrap_or_default();
                let duplicate = || {
                    format!("{nfield}: duplicate name {{service: {service:?}, method: {method:?}}}")
                };
                if service.is_empty() {
                    if !method.is_empty() {
                        return Err(format!(
                            "{nfield}: method {method:?} given without a service"
                        ));
                    }
                    if sc.default_method.replace(mc.clone()).is_some() {
                        return Err(duplicate());
                    }
                } else if method.is_empty() {
                    if sc.by_service.insert(service.clone(), mc.clone()).is_some() {
                        return Err(duplicate());
                    }
                } else if sc
                    .by_method
                    .entry(service.clone())
                    .or_default()
                    .insert(method.clone(), mc.clone())
                    .is_some()
                {
                    return Err(duplicate());
                }
            }
        }
    }
    Ok(sc)
}

fn policy_by_name(name: &str) -> Option<Policy> {
    match name {
        "pick_first" => Some(Policy::PickFirst),
        "round_robin" => Some(Policy::RoundRobin),
        "weighted_round_robin" | "custom_weighted_round_robin" => Some(Policy::WeightedRoundRobin),
        _ => None,
    }
}

fn parse_lb_list(v: &Value, field: &str) -> Result<LbConfig> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("{field}: must be a list, got {v}"))?;
    let mut names = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let efield = format!("{field}[{i}]");
        let obj = entry.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
            format!("{efield}: must be an object with exactly one policy name, got {entry}")
        })?;
        let (name, cfg) = obj.iter().next().expect("one entry");
        let pfield = format!("{efield}.{name}");
        if let Some(policy) = policy_by_name(name) {
            let obj = policy_object(cfg, &pfield)?;
            let mut lb = LbConfig::new(policy);
            if policy != Policy::PickFirst {
                lb.slow_start = parse_slow_start(obj, &pfield)?;
            }
            return Ok(lb);
        }
        match name.as_str() {
            "least_request_experimental" => return parse_least_request(cfg, &pfield),
            "outlier_detection" | "outlier_detection_experimental" => {
                return parse_outlier_detection(cfg, &pfield)
            }
            "random_subsetting_experimental" => return parse_subsetting(cfg, &pfield),
            _ => {}
        }
        names.push(name.clone());
    }
    Err(format!("{field}: no supported policy in {names:?} (supported: pick_first, round_robin, weighted_round_robin, custom_weighted_round_robin, least_request_experimental, outlier_detection, random_subsetting_experimental)"))
}

/// A leaf policy's config: an object, or null for an empty one.
fn policy_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    match v {
        Value::Null => Ok(&EMPTY),
        Value::Object(o) => Ok(o),
        _ => Err(format!("{field}: must be an object, got {v}")),
    }
}

/// `slowStartConfig` of round_robin, weighted_round_robin or least_request_experimental.
fn parse_slow_start(obj: &Map<String, Value>, field: &str) -> Result<Option<SlowStart>> {
    let Some(v) = obj.get("slowStartConfig").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let field = format!("{field}.slowStartConfig");
    let o = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let window = opt_duration(o, "slowStartWindow", &field)?
        .ok_or_else(|| format!("{field}.slowStartWindow: required"))?;
    if window > Duration::from_secs(3600) {
        return Err(format!(
            "{field}.slowStartWindow: must be at most 3600s, got {}",
            o["slowStartWindow"]
        ));
    }
    let aggression = opt_f64(o, "aggression", &field)?.unwrap_or(1.0);
    if !(aggression > 0.0 && aggression <= 100.0) {
        return Err(format!(
            "{field}.aggression: must be in (0, 100], got {aggression}"
        ));
    }
    let min_weight_percent = opt_f64(o, "minWeightPercent", &field)?.unwrap_or(10.0);
    if !(min_weight_percent > 0.0 && min_weight_percent <= 100.0) {
        return Err(format!(
            "{field}.minWeightPercent: must be in (0, 100], got {min_weight_percent}"
        ));
    }
    Ok(Some(SlowStart {
        window,
        aggression,
        min_weight_percent,
    }))
}

/// gRFC A48: `choiceCount` defaults to 2, below 2 is an error, above 10 counts as 10.
fn parse_least_request(v: &Value, field: &str) -> Result<LbConfig> {
    let obj = policy_object(v, field)?;
    let choice_count = opt_u32(obj, "choiceCount", field)?.unwrap_or(2);
    if choice_count < 2 {
        return Err(format!(
            "{field}.choiceCount: must be at least 2, got {choice_count}"
        ));
    }
    let mut lb = LbConfig::new(Policy::LeastRequest {
        choice_count: choice_count.min(10),
    });
    lb.slow_start = parse_slow_start(obj, field)?;
    Ok(lb)
}

/// gRFC A68: `subsetSize` (required, > 0) and the `childPolicy` that balances over the subset.
fn parse_subsetting(v: &Value, field: &str) -> Result<LbConfig> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let size = opt_u32(obj, "subsetSize", field)?
        .ok_or_else(|| format!("{field}.subsetSize: required"))?;
    if size == 0 {
        return Err(format!("{field}.subsetSize: must be > 0, got 0"));
    }
    let mut child = match obj.get("childPolicy") {
        None | Some(Value::Null) => return Err(format!("{field}.childPolicy: required")),
        Some(v) => parse_lb_list(v, &format!("{field}.childPolicy"))?,
    };
    if child.subset_size.is_some() {
        return Err(format!(
            "{field}.childPolicy: random_subsetting_experimental cannot be nested"
        ));
    }
    child.subset_size = Some(size);
    Ok(child)
}

fn parse_outlier_detection(v: &Value, field: &str) -> Result<LbConfig> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let dur = |key: &str, default: Duration| -> Result<Duration> {
        opt_duration(obj, key, field).map(|d| d.unwrap_or(default))
    };
    let interval = dur("interval", Duration::from_secs(10))?;
    let base_ejection_time = dur("baseEjectionTime", Duration::from_secs(30))?;
    let max_ejection_time =
        dur("maxEjectionTime", Duration::from_secs(300))?.max(base_ejection_time);
    if interval.is_zero() {
        return Err(format!(
            "{field}.interval: must be > 0, got {}",
            obj["interval"]
        ));
    }
    let max_ejection_percent = opt_u32(obj, "maxEjectionPercent", field)?.unwrap_or(10);
    if max_ejection_percent > 100 {
        return Err(format!(
            "{field}.maxEjectionPercent: must be 0..100, got {max_ejection_percent}"
        ));
    }
    let percent = |o: &Map<String, Value>, key: &str, f: &str, default: u32| -> Result<u32> {
        let p = opt_u32(o, key, f)?.unwrap_or(default);
        if p > 100 {
            return Err(format!("{f}.{key}: must be 0..100, got {p}"));
        }
        Ok(p)
    };
    let success_rate_ejection = match obj.get("successRateEjection") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let f = format!("{field}.successRateEjection");
            let o = v
                .as_object()
                .ok_or_else(|| format!("{f}: must be an object, got {v}"))?;
            Some(SuccessRateEjection {
                stdev_factor: opt_u32(o, "stdevFactor", &f)?.unwrap_or(1900),
                enforcement_percentage: percent(o, "enforcementPercentage", &f, 100)?,
                minimum_hosts: opt_u32(o, "minimumHosts", &f)?.unwrap_or(5),
                request_volume: opt_u32(o, "requestVolume", &f)?.unwrap_or(100),
            })
        }
    };
    let failure_percentage_ejection = match obj.get("failurePercentageEjection") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let f = format!("{field}.failurePercentageEjection");
            let o = v
                .as_object()
                .ok_or_else(|| format!("{f}: must be an object, got {v}"))?;
            Some(FailurePercentageEjection {
                threshold: percent(o, "threshold", &f, 85)?,
                enforcement_percentage: percent(o, "enforcementPercentage", &f, 100)?,
                minimum_hosts: opt_u32(o, "minimumHosts", &f)?.unwrap_or(5),
                request_volume: opt_u32(o, "requestVolume", &f)?.unwrap_or(50),
            })
        }
    };
    let child = match obj.get("childPolicy") {
        None | Some(Value::Null) => return Err(format!("{field}.childPolicy: required")),
        Some(v) => parse_lb_list(v, &format!("{field}.childPolicy"))?,
    };
    if child.outlier_detection.is_some() {
        return Err(format!(
            "{field}.childPolicy: outlier_detection cannot be nested"
        ));
    }
    Ok(LbConfig {
        outlier_detection: Some(OutlierDetection {
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
            success_rate_ejection,
            failure_percentage_ejection,
        }),
        ..child
    })
}

fn parse_throttling(v: &Value) -> Result<RetryThrottling> {
    let field = "retryThrottling";
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let max_tokens = req_f64(obj, "maxTokens", field)?;
    if !(max_tokens > 0.0 && max_tokens <= 1000.0) {
        return Err(format!(
            "{field}.maxTokens: must be in (0, 1000], got {max_tokens}"
        ));
    }
    let token_ratio = req_f64(obj, "tokenRatio", field)?;
    if token_ratio <= 0.0 {
        return Err(format!(
            "{field}.tokenRatio: must be > 0, got {token_ratio}"
        ));
    }
    // A6: "tokenRatio ... will be parsed with up to 3 decimal places".
    let token_ratio = (token_ratio * 1000.0).trunc() / 1000.0;
    if token_ratio <= 0.0 {
        return Err(format!(
            "{field}.tokenRatio: must be at least 0.001 (3 decimal places are used), got {}",
            obj["tokenRatio"]
        ));
    }
    Ok(RetryThrottling {
        max_tokens,
        token_ratio,
    })
}

fn parse_method_config(obj: &Map<String, Value>, field: &str) -> Result<MethodConfig> {
    let mut mc = MethodConfig {
        wait_for_ready: opt_bool(obj, "waitForReady", field)?,
        timeout: opt_duration(obj, "timeout", field)?,
        max_request_message_bytes: opt_u64(obj, "maxRequestMessageBytes", field)?,
        max_response_message_bytes: opt_u64(obj, "maxResponseMessageBytes", field)?,
        policy: None,
    };
    let retry = obj.get("retryPolicy").filter(|v| !v.is_null());
    let hedging = obj.get("hedgingPolicy").filter(|v| !v.is_null());
    mc.policy = match (retry, hedging) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{field}: retryPolicy and hedgingPolicy are mutually exclusive"
            ))
        }
        (Some(r), None) => Some(CallPolicy::Retry(parse_retry_policy(
            r,
            &format!("{field}.retryPolicy"),
        )?)),
        (None, Some(h)) => Some(CallPolicy::Hedging(parse_hedging_policy(
            h,
            &format!("{field}.hedgingPolicy"),
        )?)),
        (None, None) => None,
    };
    Ok(mc)
}

fn parse_retry_policy(v: &Value, field: &str) -> Result<RetryPolicy> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let max_attempts = opt_u32(obj, "maxAttempts", field)?
        .ok_or_else(|| format!("{field}.maxAttempts: required"))?;
    if max_attempts < 2 {
        return Err(format!(
            "{field}.maxAttempts: must be > 1, got {max_attempts}"
        ));
    }
    let initial_backoff = opt_duration(obj, "initialBackoff", field)?
        .ok_or_else(|| format!("{field}.initialBackoff: required"))?;
    if initial_backoff.is_zero() {
        return Err(format!(
            "{field}.initialBackoff: must be > 0, got {}",
            obj["initialBackoff"]
        ));
    }
    let max_backoff = opt_duration(obj, "maxBackoff", field)?
        .ok_or_else(|| format!("{field}.maxBackoff: required"))?;
    if max_backoff.is_zero() {
        return Err(format!(
            "{field}.maxBackoff: must be > 0, got {}",
            obj["maxBackoff"]
        ));
    }
    let backoff_multiplier = req_f64(obj, "backoffMultiplier", field)?;
    if backoff_multiplier <= 0.0 {
        return Err(format!(
            "{field}.backoffMultiplier: must be > 0, got {backoff_multiplier}"
        ));
    }
    let retryable_status_codes = codes(obj, "retryableStatusCodes", field)?
        .ok_or_else(|| format!("{field}.retryableStatusCodes: required"))?;
    if retryable_status_codes.is_empty() {
        return Err(format!("{field}.retryableStatusCodes: must not be empty"));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_status_codes,
    })
}

fn parse_hedging_policy(v: &Value, field: &str) -> Result<HedgingPolicy> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
    let max_attempts = opt_u32(obj, "maxAttempts", field)?
        .ok_or_else(|| format!("{field}.maxAttempts: required"))?;
    if max_attempts < 2 {
        return Err(format!(
            "{field}.maxAttempts: must be > 1, got {max_attempts}"
        ));
    }
    let hedging_delay = opt_duration(obj, "hedgingDelay", field)?.unwrap_or(Duration::ZERO);
    let non_fatal_status_codes = codes(obj, "nonFatalStatusCodes", field)?.unwrap_or_default();
    Ok(HedgingPolicy {
        max_attempts,
        hedging_delay,
        non_fatal_status_codes,
    })
}

fn codes(obj: &Map<String, Value>, key: &str, field: &str) -> Result<Option<Vec<Code>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => list
            .iter()
            .map(|c| match parse_code(c) {
                Some(Code::Ok) | None => Err(format!("{field}.{key}: invalid status code {c}")),
                Some(code) => Ok(code),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => Err(format!("{field}.{key}: must be a list, got {other}")),
    }
}

#[cfg(test)]
mod tests;
