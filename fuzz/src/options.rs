//! `options_json` as `gf_connect` parses it, including the service config inside it.
//!
//! Invariants: parsing never panics; it is deterministic; an error is INVALID_ARGUMENT with a
//! message that names `options_json`; a service config given as an object and the same config
//! given as a string holding it parse alike; a parsed service config answers every lookup.

use grpc_failover::{Code, Options, ServiceConfig};
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Options::from_json(Some(text));
    assert_eq!(
        parsed,
        Options::from_json(Some(text)),
        "parsing is deterministic"
    );
    match &parsed {
        Ok(options) => lookups(&options.service_config),
        Err(status) => {
            assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
            assert!(status.message.starts_with("options_json: "), "{status:?}");
        }
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    // The input as a service config on its own, as an object and as a string holding it.
    let direct = ServiceConfig::from_value(&value);
    if let Err(message) = &direct {
        assert!(!message.is_empty());
    }
    if value.is_object() {
        let as_string = ServiceConfig::from_value(&Value::String(value.to_string()));
        assert_eq!(
            direct.is_ok(),
            as_string.is_ok(),
            "{direct:?} / {as_string:?}"
        );
        if let Ok(sc) = &direct {
            lookups(sc);
        }
    }
    if let Some(sc) = value.get("service_config").filter(|v| v.is_object()) {
        let mut by_string = value.clone();
        by_string["service_config"] = Value::String(sc.to_string());
        let other = Options::from_value(&by_string);
        assert_eq!(
            parsed.as_ref().ok(),
            other.as_ref().ok(),
            "a service config as an object and as a string parse alike"
        );
    }
}

fn lookups(sc: &ServiceConfig) {
    let _ = sc.lb_config();
    for (service, method) in [("", ""), ("UserService", "Get"), ("x.Y", "Echo"), ("a", "")] {
        let _ = sc.method_config(service, method);
    }
}
