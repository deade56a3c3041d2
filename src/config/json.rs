//! Reading JSON fields, with one rule for `options_json` and the service config alike: the
//! proto3 JSON mapping, which gRPC's service config uses.
//! - An integer is a JSON number with no fraction (`5`, `5.0`, `5e0`) or a string that holds a
//!   decimal integer (`"5"`), as proto3 JSON allows for every integer field.
//! - A number is a JSON number.
//! - A duration is a proto3 duration string (`"1.5s"`); fields named `*_ms` take integer
//!   milliseconds instead.
//! - `null` is the same as an absent field.
//!
//! Errors name the field by its path (`methodConfig[0].retryPolicy.maxAttempts`).

use std::time::Duration;

use serde_json::{Map, Value};

use super::duration;

pub(crate) type Object = Map<String, Value>;

/// The path of `key` inside the object at `field` ("" at the top level).
pub(crate) fn path(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_string()
    } else {
        format!("{field}.{key}")
    }
}

/// The field's value, None when absent or null.
pub(crate) fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn opt_u64(obj: &Object, key: &str, field: &str) -> Result<Option<u64>, String> {
    let Some(v) = get(obj, key) else {
        return Ok(None);
    };
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    };
    n.map(Some).ok_or_else(|| {
        format!(
            "{}: must be a non-negative integer, got {v}",
            path(field, key)
        )
    })
}

pub(crate) fn opt_u32(obj: &Object, key: &str, field: &str) -> Result<Option<u32>, String> {
    match opt_u64(obj, key, field)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| format!("{}: too large, got {v}", path(field, key))),
    }
}

pub(crate) fn opt_bool(obj: &Object, key: &str, field: &str) -> Result<Option<bool>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "{}: must be true or false, got {other}",
            path(field, key)
        )),
    }
}

pub(crate) fn opt_str(obj: &Object, key: &str, field: &str) -> Result<Option<String>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{}: must be a string, got {other}",
            path(field, key)
        )),
    }
}

pub(crate) fn opt_f64(obj: &Object, key: &str, field: &str) -> Result<Option<f64>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{}: must be a number, got {n}", path(field, key))),
        Some(other) => Err(format!(
            "{}: must be a number, got {other}",
            path(field, key)
        )),
    }
}

pub(crate) fn req_f64(obj: &Object, key: &str, field: &str) -> Result<f64, String> {
    opt_f64(obj, key, field)?.ok_or_else(|| format!("{}: required", path(field, key)))
}

/// A proto3 duration string.
pub(crate) fn opt_duration(
    obj: &Object,
    key: &str,
    field: &str,
) -> Result<Option<Duration>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => duration::parse(s).map(Some).ok_or_else(|| {
            format!(
                "{}: invalid duration {s:?} (expected like \"0.5s\")",
                path(field, key)
            )
        }),
        Some(other) => Err(format!(
            "{}: invalid duration {other} (expected a string like \"0.5s\")",
            path(field, key)
        )),
    }
}

/// Integer milliseconds.
pub(crate) fn opt_ms(obj: &Object, key: &str, field: &str) -> Result<Option<Duration>, String> {
    Ok(opt_u64(obj, key, field)?.map(Duration::from_millis))
}

/// A nested object.
pub(crate) fn opt_object<'a>(
    obj: &'a Object,
    key: &str,
    field: &str,
) -> Result<Option<&'a Object>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(format!(
            "{}: must be an object, got {other}",
            path(field, key)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn integers_follow_proto3_json() {
        let o = obj(json!({"a": 5, "b": 5.0, "c": "5", "d": 5e0, "n": null}));
        for key in ["a", "b", "c", "d"] {
            assert_eq!(opt_u64(&o, key, "f").unwrap(), Some(5), "{key}");
        }
        assert_eq!(opt_u64(&o, "n", "f").unwrap(), None);
        assert_eq!(opt_u64(&o, "missing", "f").unwrap(), None);
        let bad = obj(json!({"a": 5.5, "b": -1, "c": "5.0", "d": "x", "e": true, "f": [5]}));
        for key in ["a", "b", "c", "d", "e", "f"] {
            let err = opt_u64(&bad, key, "top").unwrap_err();
            assert!(err.starts_with(&format!("top.{key}: ")), "{err}");
        }
        let big = obj(json!({"a": 4294967296u64}));
        assert!(opt_u32(&big, "a", "")
            .unwrap_err()
            .starts_with("a: too large"));
    }

    #[test]
    fn other_kinds() {
        let o = obj(json!({"b": true, "s": "x", "f": 1.5, "d": "0.5s", "ms": 250, "o": {}}));
        assert_eq!(opt_bool(&o, "b", "").unwrap(), Some(true));
        assert_eq!(opt_str(&o, "s", "").unwrap().as_deref(), Some("x"));
        assert_eq!(opt_f64(&o, "f", "").unwrap(), Some(1.5));
        assert_eq!(
            opt_duration(&o, "d", "").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            opt_ms(&o, "ms", "").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(opt_object(&o, "o", "").unwrap().is_some());
        assert!(opt_bool(&o, "s", "").unwrap_err().contains("true or false"));
        assert!(opt_f64(&o, "s", "").unwrap_err().contains("a number"));
        assert!(opt_duration(&o, "f", "").unwrap_err().contains("duration"));
        assert_eq!(req_f64(&o, "nope", "x").unwrap_err(), "x.nope: required");
        assert!(opt_object(&o, "s", "x")
            .unwrap_err()
            .starts_with("x.s: must be an object"));
    }
}
