use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<ServiceConfig> {
    ServiceConfig::from_value(&v)
}

#[test]
fn reference_config_is_accepted_verbatim() {
    let sc = parse(json!({
      "loadBalancingConfig": [{"round_robin": {}}],
      "methodConfig":  [{
          "name": [{"service": "UserService"}],
          "retryPolicy": {
            "maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
            "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]
          }
      }]
    }))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    let mc = sc.method_config("UserService", "GetById").unwrap();
    match mc.policy.as_ref().unwrap() {
        CallPolicy::Retry(r) => {
            assert_eq!(r.max_attempts, 4);
            assert_eq!(r.initial_backoff, Duration::from_millis(10));
            assert_eq!(r.max_backoff, Duration::from_millis(100));
            assert_eq!(r.retryable_status_codes, vec![Code::Unavailable]);
        }
        other => panic!("{other:?}"),
    }
    assert!(sc.method_config("Other", "X").is_none());
}
