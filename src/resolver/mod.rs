//! Resolvers turn a target into a live set of endpoints and hand each new set to the balancer.
//!
//! `static:///` sets are fixed; `etcd:///` sets follow etcd through a prefix watch. A resolver
//! that loses its registry never empties the set by itself: it reports an error and the
//! balancer keeps serving the last known instances.

pub mod etcd;
pub mod registrar;

use serde_json::Value;

/// One instance of the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub addr: String,
    /// Relative share of calls under weighted round robin; 0 drains the instance.
    pub weight: f64,
    /// The `Metadata` of the etcd record, as written by the registrar (null for static targets).
    pub metadata: Value,
}

impl Endpoint {
    pub fn new(addr: impl Into<String>) -> Self {
        Endpoint {
            addr: addr.into(),
            weight: 1.0,
            metadata: Value::Null,
        }
    }
}

/// What a resolver tells the balancer.
pub trait ResolverSink: Send + Sync + 'static {
    /// A complete new instance set (possibly empty: etcd says there are none).
    fn update(&self, endpoints: Vec<Endpoint>);
    /// The registry could not be read; the last known set stays in use.
    fn error(&self, message: String);
    /// Something happened in the registry (counted for metrics).
    fn event(&self, _event: crate::metrics::ResolverEvent) {}
}

/// Decodes an etcd record in the layout of etcd's Go `naming/endpoints` package:
/// `{"Op":0,"Addr":"127.0.0.1:8090","Metadata":{"weight":10}}`.
///
/// `Metadata` may be null, a string, or an object. `weight` may be an integer or a float (Go's
/// JSON decodes it as float64); a missing, negative or non-numeric weight is 1.
pub fn decode_record(key: &str, value: &[u8]) -> Result<Endpoint, String> {
    let json: Value = serde_json::from_slice(value)
        .map_err(|e| format!("etcd key {key:?}: value is not JSON ({e})"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| format!("etcd key {key:?}: value is not a JSON object"))?;
    if let Some(op) = obj.get("Op").and_then(Value::as_u64) {
        if op != 0 {
            return Err(format!("etcd key {key:?}: Op {op} is not an add"));
        }
    }
    let addr = obj
        .get("Addr")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("etcd key {key:?}: no \"Addr\""))?;
    // The same rule as static targets: an instance that cannot be dialled is no instance.
    crate::target::validate_addr(addr).map_err(|why| format!("etcd key {key:?}: {why}"))?;
    let metadata = obj.get("Metadata").cloned().unwrap_or(Value::Null);
    Ok(Endpoint {
        addr: addr.to_string(),
        weight: weight_of(&metadata),
        metadata,
    })
}

/// The largest weight: larger ones count as this. Weighted round robin keeps exact shares for
/// weights up to it, and any number of instances can sum their weights without overflow.
pub const MAX_WEIGHT: f64 = 1e6;

/// A field of an instance's metadata: of an object, or of a JSON string that holds one.
fn metadata_field(metadata: &Value, key: &str) -> Option<Value> {
    match metadata {
        Value::Object(o) => o.get(key).cloned(),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .and_then(|v| v.get(key).cloned()),
        _ => None,
    }
}

/// The weight in an instance's metadata (the `weight` field of an object, or a JSON string that
/// holds such an object); 1 when absent or not a non-negative finite JSON number (a string
/// such as "3" is not a number); at most [`MAX_WEIGHT`].
pub fn weight_of(metadata: &Value) -> f64 {
    registry_weight(metadata).unwrap_or(1.0)
}

/// The weight an instance's metadata gives it, None when it gives none that is usable (see
/// [`weight_of`]).
pub fn registry_weight(metadata: &Value) -> Option<f64> {
    match metadata_field(metadata, "weight") {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| w.min(MAX_WEIGHT)),
        _ => None,
    }
}

/// `server_name` in an instance's metadata (an object, or a JSON string holding one): the name
/// its TLS certificate is verified against, overriding the client's `tls.server_name`.
pub fn server_name_of(metadata: &Value) -> Option<String> {
    match metadata_field(metadata, "server_name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The record the registrar writes: byte for byte what Go's `endpoints.Manager.AddEndpoint`
/// writes (`json.Marshal` of `{Op, Addr, Metadata}`).
pub fn encode_record(addr: &str, metadata: &Value) -> String {
    format!(
        "{{\"Op\":0,\"Addr\":{},\"Metadata\":{}}}",
        go_json(&Value::String(addr.to_string())),
        go_json(metadata)
    )
}

/// serde_json's compact form, with numbers and escaping as Go's encoding/json writes them:
/// integral floats without a fraction (Go decodes JSON numbers into float64 and writes 10, not
/// 10.0) and HTML-safe `<`, `>` and `&`.
fn go_json(v: &Value) -> String {
    serde_json::to_string(&go_numbers(v))
        .expect("a Value always serializes")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn go_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(go_numbers).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), go_numbers(v))).collect())
        }
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_go_records() {
        let e = decode_record(
            "k",
            br#"{"Op":0,"Addr":"127.0.0.1:8090","Metadata":{"weight":10}}"#,
        )
        .unwrap();
        assert_eq!(e.addr, "127.0.0.1:8090");
        assert_eq!(e.weight, 10.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":{"weight":2.5}}"#).unwrap();
        assert_eq!(e.weight, 2.5);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":null}"#).unwrap();
        assert_eq!(e.weight, 1.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":"plain string"}"#).unwrap();
        assert_eq!(e.weight, 1.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":"{\"weight\":3}"}"#).unwrap();
        assert_eq!(e.weight, 3.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":{"weight":"x"}}"#).unwrap();
        assert_eq!(e.weight, 1.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":{"weight":"3"}}"#).unwrap();
        assert_eq!(e.weight, 1.0);
        let e = decode_record("k", br#"{"Addr":"a:1","Metadata":{"weight":0}}"#).unwrap();
        assert_eq!(e.weight, 0.0);
        let e = decode_record("k", br#"{"Addr":"a:1"}"#).unwrap();
        assert_eq!(e.weight, 1.0);
        assert!(decode_record("k", b"not json").is_err());
        for addr in ["garbage", ":0", "host:", "host:99999", "host:port"] {
            let record = format!(r#"{{"Addr":"{addr}"}}"#);
            let err = decode_record("k", record.as_bytes()).unwrap_err();
            assert!(err.contains("is not host:port"), "{addr}: {err}");
        }
        let e = decode_record("k", br#"{"Addr":"[::1]:8080"}"#).unwrap();
        assert_eq!(e.addr, "[::1]:8080");
        assert!(decode_record("k", br#"{"Metadata":{}}"#).is_err());
        assert!(decode_record("k", br#"[1]"#).is_err());
    }

    #[test]
    fn weights_are_capped() {
        assert_eq!(weight_of(&json!({"weight": 1e308})), MAX_WEIGHT);
        assert_eq!(weight_of(&json!({"weight": 1e19})), MAX_WEIGHT);
        assert_eq!(weight_of(&json!({"weight": 999999.5})), 999999.5);
    }

    #[test]
    fn encodes_like_go() {
        assert_eq!(
            encode_record("127.0.0.1:8090", &json!({"weight": 10})),
            r#"{"Op":0,"Addr":"127.0.0.1:8090","Metadata":{"weight":10}}"#
        );
        assert_eq!(
            encode_record("a:1", &Value::Null),
            r#"{"Op":0,"Addr":"a:1","Metadata":null}"#
        );
        assert_eq!(
            encode_record("a:1", &json!({"z": 1, "a": "<&>"})),
            r#"{"Op":0,"Addr":"a:1","Metadata":{"a":"\u003c\u0026\u003e","z":1}}"#
        );
    }
}
