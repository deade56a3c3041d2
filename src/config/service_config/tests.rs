use super::*;
use crate::config::Options;
use proptest::prelude::*;
use serde_json::json;

fn parse(v: Value) -> Result<ServiceConfig> {
    ServiceConfig::from_value(&v)
}

/// The config must be rejected with a message that contains every one of `needles` (the field
/// path and the offending value).
#[track_caller]
fn rejects(v: Value, needles: &[&str]) {
    let text = v.to_string();
    match parse(v) {
        Ok(sc) => panic!("accepted {text}: {sc:?}"),
        Err(msg) => {
            for n in needles {
                assert!(
                    msg.contains(n),
                    "error for {text} does not mention {n:?}: {msg}"
                );
            }
        }
    }
}

/// A config with one method config for `UserService` whose retryPolicy is `retry`.
fn with_retry(retry: Value) -> Value {
    json!({"methodConfig": [{"name": [{"service": "UserService"}], "retryPolicy": retry}]})
}

fn with_hedging(hedging: Value) -> Value {
    json!({"methodConfig": [{"name": [{"service": "UserService"}], "hedgingPolicy": hedging}]})
}

fn good_retry() -> Value {
    json!({
        "maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
        "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]
    })
}

/// `good_retry()` with `key` set to `value` (or removed when `value` is None).
fn retry_with(key: &str, value: Option<Value>) -> Value {
    let mut r = good_retry();
    let obj = r.as_object_mut().unwrap();
    match value {
        Some(v) => obj.insert(key.to_string(), v),
        None => obj.remove(key),
    };
    with_retry(r)
}

fn retry_policy(sc: &ServiceConfig) -> RetryPolicy {
    match sc
        .method_config("UserService", "Any")
        .and_then(|m| m.policy.clone())
    {
        Some(CallPolicy::Retry(r)) => r,
        other => panic!("no retry policy: {other:?}"),
    }
}

fn hedging_policy(sc: &ServiceConfig) -> HedgingPolicy {
    match sc
        .method_config("UserService", "Any")
        .and_then(|m| m.policy.clone())
    {
        Some(CallPolicy::Hedging(h)) => h,
        other => panic!("no hedging policy: {other:?}"),
    }
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

// ---- loadBalancingConfig / loadBalancingPolicy -------------------------------------------

#[test]
fn default_policy_is_pick_first() {
    assert_eq!(
        parse(json!({})).unwrap().lb_config().policy,
        Policy::PickFirst
    );
    assert_eq!(
        ServiceConfig::default().lb_config().policy,
        Policy::PickFirst
    );
    assert_eq!(
        parse(Value::Null).unwrap().lb_config().policy,
        Policy::PickFirst
    );
}

#[test]
fn every_supported_policy_name_is_accepted() {
    for (name, policy) in [
        ("pick_first", Policy::PickFirst),
        ("round_robin", Policy::RoundRobin),
        ("weighted_round_robin", Policy::WeightedRoundRobin),
        ("custom_weighted_round_robin", Policy::WeightedRoundRobin),
    ] {
        let sc = parse(json!({"loadBalancingConfig": [{name: {}}]})).unwrap();
        assert_eq!(sc.lb_config().policy, policy, "{name}");
        // A null config for the policy is as good as an empty object.
        let sc = parse(json!({"loadBalancingConfig": [{name: null}]})).unwrap();
        assert_eq!(sc.lb_config().policy, policy, "{name}");
    }
}

#[test]
fn no_supported_entry_in_load_balancing_config_rejects_the_config() {
    rejects(
        json!({"loadBalancingConfig": [{"grpclb": {}}, {"xds_cluster_impl": {}}]}),
        &["loadBalancingConfig", "grpclb", "xds_cluster_impl"],
    );
    rejects(json!({"loadBalancingConfig": []}), &["loadBalancingConfig"]);
    // Policy names are case-sensitive in loadBalancingConfig, as in grpc-go.
    rejects(
        json!({"loadBalancingConfig": [{"ROUND_ROBIN": {}}]}),
        &["loadBalancingConfig", "ROUND_ROBIN"],
    );
}

#[test]
fn malformed_load_balancing_config_is_rejected_naming_the_entry() {
    rejects(
        json!({"loadBalancingConfig": {"round_robin": {}}}),
        &["loadBalancingConfig", "round_robin"],
    );
    rejects(
        json!({"loadBalancingConfig": [{"round_robin": {}, "pick_first": {}}]}),
        &["loadBalancingConfig[0]"],
    );
    rejects(
        json!({"loadBalancingConfig": [{}]}),
        &["loadBalancingConfig[0]", "{}"],
    );
    rejects(
        json!({"loadBalancingConfig": ["round_robin"]}),
        &["loadBalancingConfig[0]", "round_robin"],
    );
    rejects(
        json!({"loadBalancingConfig": [{"round_robin": 7}]}),
        &["loadBalancingConfig[0].round_robin", "7"],
    );
}

#[test]
fn first_supported_entry_wins() {
    let sc = parse(json!({"loadBalancingConfig": [
        {"grpclb": {}}, {"round_robin": {}}, {"pick_first": {}}, {"weighted_round_robin": {}}
    ]}))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    let sc = parse(json!({"loadBalancingConfig": [
        {"custom_weighted_round_robin": {}}, {"round_robin": {}}
    ]}))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::WeightedRoundRobin);
    let sc =
        parse(json!({"loadBalancingConfig": [{"pick_first": {}}, {"round_robin": {}}]})).unwrap();
    assert_eq!(sc.lb_config().policy, Policy::PickFirst);
}

#[test]
fn deprecated_load_balancing_policy_is_honoured_only_without_load_balancing_config() {
    let sc = parse(json!({"loadBalancingPolicy": "round_robin"})).unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    // grpc-go lower-cases the deprecated field's value.
    let sc = parse(json!({"loadBalancingPolicy": "ROUND_ROBIN"})).unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    let sc = parse(json!({"loadBalancingPolicy": "weighted_round_robin"})).unwrap();
    assert_eq!(sc.lb_config().policy, Policy::WeightedRoundRobin);
    // loadBalancingConfig takes precedence, and then the deprecated field is not even looked at.
    let sc = parse(json!({
        "loadBalancingPolicy": "round_robin",
        "loadBalancingConfig": [{"weighted_round_robin": {}}]
    }))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::WeightedRoundRobin);
    let sc = parse(json!({
        "loadBalancingPolicy": "no_such_policy",
        "loadBalancingConfig": [{"pick_first": {}}]
    }))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::PickFirst);
    rejects(
        json!({"loadBalancingPolicy": "no_such_policy"}),
        &["loadBalancingPolicy", "no_such_policy"],
    );
    rejects(
        json!({"loadBalancingPolicy": 3}),
        &["loadBalancingPolicy", "3"],
    );
}

#[test]
fn least_request_takes_a_choice_count_as_grpc_go_does() {
    let lb = |v: Value| {
        parse(json!({"loadBalancingConfig": [v]}))
            .unwrap()
            .lb_config()
    };
    assert_eq!(
        lb(json!({"least_request_experimental": {}})).policy,
        Policy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        lb(json!({"least_request_experimental": null})).policy,
        Policy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        lb(json!({"least_request_experimental": {"choiceCount": 5}})).policy,
        Policy::LeastRequest { choice_count: 5 }
    );
    // Above 10 counts as 10 (gRFC A48).
    assert_eq!(
        lb(json!({"least_request_experimental": {"choiceCount": 1000}})).policy,
        Policy::LeastRequest { choice_count: 10 }
    );
    rejects(
        json!({"loadBalancingConfig": [{"least_request_experimental": {"choiceCount": 1}}]}),
        &["least_request_experimental.choiceCount", "at least 2", "1"],
    );
    rejects(
        json!({"loadBalancingConfig": [{"least_request_experimental": {"choiceCount": "x"}}]}),
        &["choiceCount"],
    );
}

#[test]
fn slow_start_is_a_field_of_the_balancing_policies() {
    let sc = parse(
        json!({"loadBalancingConfig": [{"round_robin": {"slowStartConfig": {
            "slowStartWindow": "30s", "aggression": 2, "minWeightPercent": 5
        }}}]}),
    )
    .unwrap();
    assert_eq!(
        sc.lb_config().slow_start,
        Some(SlowStart {
            window: Duration::from_secs(30),
            aggression: 2.0,
            min_weight_percent: 5.0
        })
    );
    // Defaults: aggression 1, 10%.
    for name in ["weighted_round_robin", "least_request_experimental"] {
        let sc = parse(json!({"loadBalancingConfig": [{name: {"slowStartConfig": {
            "slowStartWindow": "1.5s"
        }}}]}))
        .unwrap();
        let ss = sc.lb_config().slow_start.unwrap();
        assert_eq!(ss.window, Duration::from_millis(1500), "{name}");
        assert_eq!(
            (ss.aggression, ss.min_weight_percent),
            (1.0, 10.0),
            "{name}"
        );
    }
    let bad = |cfg: Value, needles: &[&str]| {
        rejects(
            json!({"loadBalancingConfig": [{"round_robin": {"slowStartConfig": cfg}}]}),
            needles,
        )
    };
    bad(json!({}), &["slowStartConfig.slowStartWindow", "required"]);
    bad(json!({"slowStartWindow": 3}), &["slowStartWindow"]);
    bad(
        json!({"slowStartWindow": "1s", "aggression": 0}),
        &["slowStartConfig.aggression", "0"],
    );
    bad(
        json!({"slowStartWindow": "1s", "minWeightPercent": 101}),
        &["slowStartConfig.minWeightPercent", "101"],
    );
    bad(json!("10s"), &["round_robin.slowStartConfig", "object"]);
}

#[test]
fn random_subsetting_wraps_a_child_policy() {
    let sc = parse(
        json!({"loadBalancingConfig": [{"random_subsetting_experimental": {
            "subsetSize": 3,
            "childPolicy": [{"grpclb": {}}, {"weighted_round_robin": {}}]
        }}]}),
    )
    .unwrap();
    let lb = sc.lb_config();
    assert_eq!(lb.subset_size, Some(3));
    assert_eq!(lb.policy, Policy::WeightedRoundRobin);
    // Either order of wrapping with outlier detection keeps both.
    let od_outside = parse(json!({"loadBalancingConfig": [{"outlier_detection": {
        "childPolicy": [{"random_subsetting_experimental": {
            "subsetSize": 2, "childPolicy": [{"round_robin": {}}]
        }}]
    }}]}))
    .unwrap()
    .lb_config();
    assert_eq!(od_outside.subset_size, Some(2));
    assert!(od_outside.outlier_detection.is_some());
    let od_inside = parse(
        json!({"loadBalancingConfig": [{"random_subsetting_experimental": {
            "subsetSize": 2,
            "childPolicy": [{"outlier_detection": {"childPolicy": [{"round_robin": {}}]}}]
        }}]}),
    )
    .unwrap()
    .lb_config();
    assert_eq!(od_inside.subset_size, Some(2));
    assert!(od_inside.outlier_detection.is_some());
    let bad = |cfg: Value, needles: &[&str]| {
        rejects(
            json!({"loadBalancingConfig": [{"random_subsetting_experimental": cfg}]}),
            needles,
        )
    };
    bad(
        json!({"childPolicy": [{"round_robin": {}}]}),
        &["subsetSize", "required"],
    );
    bad(
        json!({"subsetSize": 0, "childPolicy": [{"round_robin": {}}]}),
        &["subsetSize", "> 0"],
    );
    bad(json!({"subsetSize": 2}), &["childPolicy", "required"]);
    bad(
        json!({"subsetSize": 2, "childPolicy": [{"random_subsetting_experimental": {
            "subsetSize": 1, "childPolicy": [{"round_robin": {}}]}}]}),
        &["cannot be nested"],
    );
}

#[test]
fn outlier_detection_wraps_a_child_policy() {
    let sc = parse(json!({"loadBalancingConfig": [{"outlier_detection": {
        "interval": "1s", "baseEjectionTime": "2s", "maxEjectionPercent": 50,
        "failurePercentageEjection": {"threshold": 50, "minimumHosts": 2, "requestVolume": 10},
        "childPolicy": [{"round_robin": {}}]
    }}]}))
    .unwrap();
    let lb = sc.lb_config();
    assert_eq!(lb.policy, Policy::RoundRobin);
    let od = lb.outlier_detection.unwrap();
    assert_eq!(od.interval, Duration::from_secs(1));
    assert_eq!(od.max_ejection_percent, 50);
    assert_eq!(od.failure_percentage_ejection.unwrap().threshold, 50);
    rejects(
        json!({"loadBalancingConfig": [{"outlier_detection": {}}]}),
        &["outlier_detection.childPolicy", "required"],
    );
    rejects(
        json!({"loadBalancingConfig": [{"outlier_detection": {
            "maxEjectionPercent": 101, "childPolicy": [{"round_robin": {}}]}}]}),
        &["maxEjectionPercent", "101"],
    );
}

// ---- durations ------------------------------------------------------------------------------

#[test]
fn durations_parse_as_proto3_json() {
    for (text, expected) in [
        ("0.01s", Duration::from_millis(10)),
        ("1s", Duration::from_secs(1)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("30s", Duration::from_secs(30)),
    ] {
        let sc = parse(retry_with("initialBackoff", Some(json!(text)))).unwrap();
        assert_eq!(retry_policy(&sc).initial_backoff, expected, "{text}");
        let sc = parse(json!({"methodConfig": [{"name": [{"service": "S"}], "timeout": text}]}))
            .unwrap();
        assert_eq!(sc.method_config("S", "M").unwrap().timeout, Some(expected));
    }
}

#[test]
fn invalid_durations_are_rejected_naming_field_and_value() {
    for bad in [
        "1ms",
        "-1s",
        "1",
        "abc",
        "1.s",
        ".5s",
        "1e3s",
        "1.0000000001s",
        "",
        " 1s",
    ] {
        rejects(
            retry_with("initialBackoff", Some(json!(bad))),
            &[
                "methodConfig[0].retryPolicy.initialBackoff",
                &format!("{bad:?}"),
            ],
        );
        rejects(
            retry_with("maxBackoff", Some(json!(bad))),
            &[
                "methodConfig[0].retryPolicy.maxBackoff",
                &format!("{bad:?}"),
            ],
        );
        rejects(
            json!({"methodConfig": [{"name": [{"service": "S"}], "timeout": bad}]}),
            &["methodConfig[0].timeout", &format!("{bad:?}")],
        );
        rejects(
            with_hedging(json!({"maxAttempts": 3, "hedgingDelay": bad})),
            &[
                "methodConfig[0].hedgingPolicy.hedgingDelay",
                &format!("{bad:?}"),
            ],
        );
    }
    // Numbers are not durations in proto3 JSON.
    rejects(
        retry_with("initialBackoff", Some(json!(0.5))),
        &["initialBackoff", "0.5"],
    );
    rejects(
        json!({"methodConfig": [{"name": [{"service": "S"}], "timeout": 30}]}),
        &["methodConfig[0].timeout", "30"],
    );
}

#[test]
fn zero_durations_are_rejected_naming_field_and_value() {
    rejects(
        retry_with("initialBackoff", Some(json!("0s"))),
        &["methodConfig[0].retryPolicy.initialBackoff", "0s"],
    );
    rejects(
        retry_with("maxBackoff", Some(json!("0.000s"))),
        &["methodConfig[0].retryPolicy.maxBackoff", "0.000s"],
    );
    rejects(
        json!({"loadBalancingConfig": [{"outlier_detection": {
            "interval": "0s", "childPolicy": [{"round_robin": {}}]}}]}),
        &["outlier_detection.interval", "0s"],
    );
}

// ---- status codes -----------------------------------------------------------------------------

#[test]
fn status_codes_by_name_in_any_case_and_by_number() {
    let sc = parse(retry_with(
        "retryableStatusCodes",
        Some(json!([
            "UNAVAILABLE",
            "deadline_exceeded",
            "Resource_Exhausted",
            10,
            16
        ])),
    ))
    .unwrap();
    assert_eq!(
        retry_policy(&sc).retryable_status_codes,
        vec![
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unauthenticated
        ]
    );
    let sc = parse(with_hedging(
        json!({"maxAttempts": 3, "nonFatalStatusCodes": ["unavailable", 13]}),
    ))
    .unwrap();
    assert_eq!(
        hedging_policy(&sc).non_fatal_status_codes,
        vec![Code::Unavailable, Code::Internal]
    );
}

#[test]
fn invalid_status_codes_are_rejected_naming_field_and_value() {
    for (bad, shown) in [
        (json!("NOPE"), "NOPE"),
        (json!("UNAVAILABLE "), "UNAVAILABLE "),
        (json!(17), "17"),
        (json!(-1), "-1"),
        (json!(1.5), "1.5"),
        (json!(null), "null"),
        (json!(true), "true"),
        (json!(["UNAVAILABLE"]), "UNAVAILABLE"),
        // OK is not a failure: it cannot be retryable.
        (json!("OK"), "OK"),
        (json!(0), "0"),
    ] {
        rejects(
            retry_with("retryableStatusCodes", Some(json!([bad.clone()]))),
            &["methodConfig[0].retryPolicy.retryableStatusCodes", shown],
        );
        rejects(
            with_hedging(json!({"maxAttempts": 3, "nonFatalStatusCodes": [bad]})),
            &["methodConfig[0].hedgingPolicy.nonFatalStatusCodes", shown],
        );
    }
    rejects(
        retry_with("retryableStatusCodes", Some(json!("UNAVAILABLE"))),
        &["retryableStatusCodes", "UNAVAILABLE"],
    );
    rejects(
        retry_with("retryableStatusCodes", Some(json!([]))),
        &["methodConfig[0].retryPolicy.retryableStatusCodes", "empty"],
    );
}

// ---- names ----------------------------------------------------------------------------------

#[test]
fn method_config_lookup_prefers_method_then_service_then_default() {
    let sc = parse(json!({"methodConfig": [
        {"name": [{}], "timeout": "1s"},
        {"name": [{"service": "S"}], "timeout": "2s"},
        {"name": [{"service": "S", "method": "M"}, {"service": "T", "method": "M"}], "timeout": "3s"}
    ]}))
    .unwrap();
    let t = |s: &str, m: &str| sc.method_config(s, m).and_then(|c| c.timeout);
    assert_eq!(t("S", "M"), Some(Duration::from_secs(3)));
    assert_eq!(t("T", "M"), Some(Duration::from_secs(3)));
    assert_eq!(t("S", "Other"), Some(Duration::from_secs(2)));
    assert_eq!(t("T", "Other"), Some(Duration::from_secs(1)));
    assert_eq!(t("U", "M"), Some(Duration::from_secs(1)));
    // An empty service string is the default too.
    let sc =
        parse(json!({"methodConfig": [{"name": [{"service": ""}], "timeout": "1s"}]})).unwrap();
    assert_eq!(
        sc.method_config("Any", "Thing").unwrap().timeout,
        Some(Duration::from_secs(1))
    );
    // A method config without names applies to nothing.
    let sc = parse(json!({"methodConfig": [{"timeout": "1s"}]})).unwrap();
    assert!(sc.method_config("Any", "Thing").is_none());
}

#[test]
fn duplicate_names_are_rejected_naming_the_name() {
    rejects(
        json!({"methodConfig": [
            {"name": [{"service": "S"}]},
            {"name": [{"service": "S"}]}
        ]}),
        &["methodConfig[1].name[0]", "duplicate", "\"S\""],
    );
    rejects(
        json!({"methodConfig": [
            {"name": [{"service": "S", "method": "M"}, {"service": "S", "method": "M"}]}
        ]}),
        &["methodConfig[0].name[1]", "duplicate", "\"S\"", "\"M\""],
    );
    rejects(
        json!({"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}),
        &["methodConfig[1].name[0]", "duplicate"],
    );
    // The same method name under two services is not a duplicate.
    parse(json!({"methodConfig": [
        {"name": [{"service": "S", "method": "M"}]},
        {"name": [{"service": "T", "method": "M"}, {"service": "S"}]}
    ]}))
    .unwrap();
}

#[test]
fn method_without_service_is_rejected() {
    rejects(
        json!({"methodConfig": [{"name": [{"method": "GetById"}]}]}),
        &["methodConfig[0].name[0]", "GetById", "service"],
    );
    rejects(
        json!({"methodConfig": [{"name": [{"service": "", "method": "GetById"}]}]}),
        &["methodConfig[0].name[0]", "GetById"],
    );
}

#[test]
fn malformed_names_are_rejected_naming_field_and_value() {
    rejects(
        json!({"methodConfig": [{"name": {"service": "S"}}]}),
        &["methodConfig[0].name", "\"S\""],
    );
    rejects(
        json!({"methodConfig": [{"name": ["S"]}]}),
        &["methodConfig[0].name[0]", "\"S\""],
    );
    rejects(
        json!({"methodConfig": [{"name": [{"service": 5}]}]}),
        &["methodConfig[0].name[0].service", "5"],
    );
    rejects(
        json!({"methodConfig": [{"name": [{"service": "S", "method": ["M"]}]}]}),
        &["methodConfig[0].name[0].method", "M"],
    );
    rejects(
        json!({"methodConfig": {"name": []}}),
        &["methodConfig", "name"],
    );
    rejects(json!({"methodConfig": [7]}), &["methodConfig[0]", "7"]);
}

// ---- retryPolicy ------------------------------------------------------------------------------

#[test]
fn max_attempts_below_two_is_rejected() {
    for n in [0, 1] {
        rejects(
            retry_with("maxAttempts", Some(json!(n))),
            &["methodConfig[0].retryPolicy.maxAttempts", &n.to_string()],
        );
        rejects(
            with_hedging(json!({"maxAttempts": n})),
            &["methodConfig[0].hedgingPolicy.maxAttempts", &n.to_string()],
        );
    }
    for bad in [
        json!(-3),
        json!(2.5),
        json!("two"),
        json!(true),
        json!(4294967296u64),
    ] {
        let shown = match &bad {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rejects(
            retry_with("maxAttempts", Some(bad.clone())),
            &["methodConfig[0].retryPolicy.maxAttempts", &shown],
        );
        rejects(
            with_hedging(json!({"maxAttempts": bad})),
            &["methodConfig[0].hedgingPolicy.maxAttempts", &shown],
        );
    }
}

#[test]
fn max_attempts_above_the_cap_is_kept_for_the_client_to_cap() {
    // A6: values above 5 are not an error; the client treats them as its cap.
    let sc = parse(retry_with("maxAttempts", Some(json!(10)))).unwrap();
    assert_eq!(retry_policy(&sc).max_attempts, 10);
    // proto3 JSON allows integers as strings and as floats with no fraction.
    let sc = parse(retry_with("maxAttempts", Some(json!("3")))).unwrap();
    assert_eq!(retry_policy(&sc).max_attempts, 3);
    let sc = parse(retry_with("maxAttempts", Some(json!(3.0)))).unwrap();
    assert_eq!(retry_policy(&sc).max_attempts, 3);
}

#[test]
fn every_missing_retry_field_is_named() {
    for key in [
        "maxAttempts",
        "initialBackoff",
        "maxBackoff",
        "backoffMultiplier",
        "retryableStatusCodes",
    ] {
        rejects(
            retry_with(key, None),
            &[&format!("methodConfig[0].retryPolicy.{key}"), "required"],
        );
        // null is the same as absent.
        rejects(
            retry_with(key, Some(Value::Null)),
            &[&format!("methodConfig[0].retryPolicy.{key}"), "required"],
        );
    }
    rejects(
        with_hedging(json!({"hedgingDelay": "0.1s"})),
        &["methodConfig[0].hedgingPolicy.maxAttempts", "required"],
    );
}

#[test]
fn backoff_multiplier_must_be_a_positive_number() {
    for (bad, shown) in [(json!(0), "0"), (json!(-2.0), "-2"), (json!("2"), "\"2\"")] {
        rejects(
            retry_with("backoffMultiplier", Some(bad)),
            &["methodConfig[0].retryPolicy.backoffMultiplier", shown],
        );
    }
    let sc = parse(retry_with("backoffMultiplier", Some(json!(1)))).unwrap();
    assert_eq!(retry_policy(&sc).backoff_multiplier, 1.0);
}

#[test]
fn retry_and_hedging_together_are_rejected() {
    rejects(
        json!({"methodConfig": [{
            "name": [{"service": "S"}],
            "retryPolicy": good_retry(),
            "hedgingPolicy": {"maxAttempts": 3}
        }]}),
        &["methodConfig[0]", "retryPolicy", "hedgingPolicy"],
    );
    // A null policy is absent.
    let sc = parse(json!({"methodConfig": [{
        "name": [{"service": "UserService"}],
        "retryPolicy": good_retry(),
        "hedgingPolicy": null
    }]}))
    .unwrap();
    retry_policy(&sc);
}

#[test]
fn policies_that_are_not_objects_are_rejected() {
    rejects(
        with_retry(json!([1])),
        &["methodConfig[0].retryPolicy", "[1]"],
    );
    rejects(
        with_hedging(json!("x")),
        &["methodConfig[0].hedgingPolicy", "\"x\""],
    );
}

#[test]
fn hedging_policy_defaults() {
    let sc = parse(with_hedging(json!({"maxAttempts": 3}))).unwrap();
    let h = hedging_policy(&sc);
    assert_eq!(h.max_attempts, 3);
    assert_eq!(h.hedging_delay, Duration::ZERO);
    assert!(h.non_fatal_status_codes.is_empty());
    let sc = parse(with_hedging(json!({
        "maxAttempts": 3, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]
    })))
    .unwrap();
    let h = hedging_policy(&sc);
    assert_eq!(h.hedging_delay, Duration::from_millis(50));
    assert_eq!(h.non_fatal_status_codes, vec![Code::Unavailable]);
}

// ---- other method config fields ---------------------------------------------------------------

#[test]
fn wait_for_ready_and_message_limits() {
    let sc = parse(json!({"methodConfig": [{
        "name": [{"service": "S"}],
        "waitForReady": true,
        "maxRequestMessageBytes": 1024,
        "maxResponseMessageBytes": "2048"
    }]}))
    .unwrap();
    let mc = sc.method_config("S", "M").unwrap();
    assert_eq!(mc.wait_for_ready, Some(true));
    assert_eq!(mc.max_request_message_bytes, Some(1024));
    assert_eq!(mc.max_response_message_bytes, Some(2048));
    rejects(
        json!({"methodConfig": [{"name": [{"service": "S"}], "waitForReady": "yes"}]}),
        &["methodConfig[0].waitForReady", "yes"],
    );
    for key in ["maxRequestMessageBytes", "maxResponseMessageBytes"] {
        for (bad, shown) in [
            (json!(-1), "-1"),
            (json!(1.5), "1.5"),
            (json!("lots"), "lots"),
        ] {
            rejects(
                json!({"methodConfig": [{"name": [{"service": "S"}], key: bad}]}),
                &[&format!("methodConfig[0].{key}"), shown],
            );
        }
    }
}

// ---- retryThrottling ----------------------------------------------------------------------------

#[test]
fn retry_throttling_bounds() {
    let t = |v: Value| parse(json!({"retryThrottling": v}));
    let ok = t(json!({"maxTokens": 10, "tokenRatio": 0.1})).unwrap();
    assert_eq!(
        ok.retry_throttling,
        Some(RetryThrottling {
            max_tokens: 10.0,
            token_ratio: 0.1
        })
    );
    assert!(t(json!({"maxTokens": 1000, "tokenRatio": 1})).is_ok());
    assert!(t(json!({"maxTokens": 0.5, "tokenRatio": 0.001})).is_ok());
    // A6: tokenRatio keeps at most 3 decimal places.
    let sc = t(json!({"maxTokens": 10, "tokenRatio": 0.12345})).unwrap();
    assert!((sc.retry_throttling.unwrap().token_ratio - 0.123).abs() < 1e-12);
    for (bad, shown) in [(json!(0), "0"), (json!(-1), "-1"), (json!(1001), "1001")] {
        rejects(
            json!({"retryThrottling": {"maxTokens": bad, "tokenRatio": 0.1}}),
            &["retryThrottling.maxTokens", shown],
        );
    }
    for (bad, shown) in [(json!(0), "0"), (json!(-0.5), "-0.5")] {
        rejects(
            json!({"retryThrottling": {"maxTokens": 10, "tokenRatio": bad}}),
            &["retryThrottling.tokenRatio", shown],
        );
    }
    rejects(
        json!({"retryThrottling": {"tokenRatio": 0.1}}),
        &["retryThrottling.maxTokens", "required"],
    );
    rejects(
        json!({"retryThrottling": {"maxTokens": 10}}),
        &["retryThrottling.tokenRatio", "required"],
    );
    rejects(
        json!({"retryThrottling": {"maxTokens": "10", "tokenRatio": 0.1}}),
        &["retryThrottling.maxTokens", "10"],
    );
    rejects(
        json!({"retryThrottling": [10, 0.1]}),
        &["retryThrottling", "[10,0.1]"],
    );
}

#[test]
fn token_ratio_that_truncates_to_zero_is_not_accepted_as_zero() {
    // A6 keeps 3 decimals of tokenRatio; a ratio that truncates to 0 would let successes never
    // refill the bucket, so once throttled a client would stay throttled for good.
    match parse(json!({"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.0004}})) {
        Err(msg) => assert!(msg.contains("retryThrottling.tokenRatio"), "{msg}"),
        Ok(sc) => {
            let ratio = sc.retry_throttling.unwrap().token_ratio;
            assert!(ratio > 0.0, "tokenRatio 0.0004 accepted as {ratio}");
        }
    }
}

// ---- unknown fields, strings, the options wrapper ----------------------------------------------

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let sc = parse(json!({
        "someFutureField": {"x": [1, 2]},
        "loadBalancingConfig": [{"round_robin": {"unknownKnob": 1}}],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1, "extra": "x"},
        "healthCheckConfig": {"serviceName": "", "other": 1},
        "methodConfig": [{
            "name": [{"service": "UserService", "unknown": true}],
            "somethingNew": "whatever",
            "retryPolicy": {
                "maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"],
                "perAttemptRecvTimeout": "1s", "nonsense": [null]
            }
        }]
    }))
    .unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    assert_eq!(retry_policy(&sc).max_attempts, 4);
    assert!(sc.retry_throttling.is_some());
}

#[test]
fn config_given_as_a_json_string() {
    let text = json!({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": "UserService"}], "retryPolicy": good_retry()}]
    })
    .to_string();
    let sc = parse(Value::String(text.clone())).unwrap();
    assert_eq!(sc.lb_config().policy, Policy::RoundRobin);
    assert_eq!(retry_policy(&sc).max_attempts, 4);
    rejects(json!("{not json"), &["service_config", "JSON"]);
    rejects(json!("[1, 2]"), &["service_config", "object"]);
    rejects(json!("\"nested string\""), &["service_config", "object"]);
    rejects(json!(42), &["service_config", "42"]);
    rejects(json!([]), &["service_config", "[]"]);
    // Errors inside a string config name the field like any other.
    rejects(
        Value::String(retry_with("maxAttempts", Some(json!(1))).to_string()),
        &["methodConfig[0].retryPolicy.maxAttempts", "1"],
    );

    // Through options_json, as gf_connect receives it.
    let opts = Options::from_json(Some(
        &json!({"service_config": text, "max_attempts": 3}).to_string(),
    ))
    .unwrap();
    assert_eq!(opts.service_config.lb_config().policy, Policy::RoundRobin);
    assert_eq!(opts.max_attempts_cap, 3);
    let err = Options::from_json(Some(
        &json!({"service_config": {"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}})
            .to_string(),
    ))
    .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(
        err.message.contains("retryThrottling.maxTokens") && err.message.contains('0'),
        "{}",
        err.message
    );
}

#[test]
fn options_max_attempts_cap() {
    assert_eq!(Options::from_json(None).unwrap().max_attempts_cap, 5);
    assert_eq!(
        Options::from_json(Some(r#"{"max_attempts": 7}"#))
            .unwrap()
            .max_attempts_cap,
        7
    );
    // As in the service config (proto3 JSON), an integer may come as a string.
    assert_eq!(
        Options::from_json(Some(r#"{"max_attempts": "3"}"#))
            .unwrap()
            .max_attempts_cap,
        3
    );
    for bad in ["0", "-1", "\"3.0\"", "2.5"] {
        let err = Options::from_json(Some(&format!("{{\"max_attempts\": {bad}}}"))).unwrap_err();
        assert!(err.message.contains("max_attempts"), "{}", err.message);
    }
}

// ---- no input panics the parser ----------------------------------------------------------------

/// Field names the parser knows, so random trees reach deep into its code paths.
const KEYS: &[&str] = &[
    "loadBalancingConfig",
    "loadBalancingPolicy",
    "methodConfig",
    "retryThrottling",
    "healthCheckConfig",
    "serviceName",
    "name",
    "service",
    "method",
    "retryPolicy",
    "hedgingPolicy",
    "maxAttempts",
    "initialBackoff",
    "maxBackoff",
    "backoffMultiplier",
    "retryableStatusCodes",
    "hedgingDelay",
    "nonFatalStatusCodes",
    "waitForReady",
    "timeout",
    "maxRequestMessageBytes",
    "maxResponseMessageBytes",
    "maxTokens",
    "tokenRatio",
    "round_robin",
    "pick_first",
    "weighted_round_robin",
    "custom_weighted_round_robin",
    "outlier_detection",
    "childPolicy",
    "interval",
    "baseEjectionTime",
    "maxEjectionTime",
    "maxEjectionPercent",
    "successRateEjection",
    "failurePercentageEjection",
    "stdevFactor",
    "enforcementPercentage",
    "minimumHosts",
    "requestVolume",
    "threshold",
    "service_config",
    "etcd",
    "endpoints",
    "username",
    "password",
    "dial_timeout_ms",
    "connect_timeout_ms",
    "connect_backoff",
    "base_delay_ms",
    "max_delay_ms",
    "multiplier",
    "jitter",
    "max_attempts",
    "max_in_flight_per_instance",
    "keepalive_time_ms",
    "keepalive_timeout_ms",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => ".{0,12}",
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..20).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            1e-300,
            1e300,
            2.0,
            1000.0,
            1000.0001,
            4294967296.0,
            1.8446744073709552e19,
        ])
        .prop_map(Value::from),
        prop::sample::select(vec![
            "0.01s",
            "0s",
            "1s",
            "315576000000s",
            "315576000001s",
            "99999999999999999999s",
            "0.000000001s",
            "UNAVAILABLE",
            "unavailable",
            "OK",
            "round_robin",
            "pick_first",
            "{}",
            "{\"loadBalancingPolicy\":\"round_robin\"}",
            "[",
            "18446744073709551616",
            "-1",
            "4294967296",
        ])
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A config in the right shape with arbitrary values in its fields: reaches the validation of
/// each field far more often than a free-form tree does.
fn arb_shaped_config() -> impl Strategy<Value = Value> {
    let v = || prop_oneof![3 => arb_leaf(), 1 => arb_json()];
    let retry = (v(), v(), v(), v(), v(), v()).prop_map(|(a, b, c, d, e, f)| {
        json!({"maxAttempts": a, "initialBackoff": b, "maxBackoff": c,
               "backoffMultiplier": d, "retryableStatusCodes": [e, f]})
    });
    let hedging = (v(), v(), v()).prop_map(
        |(a, b, c)| json!({"maxAttempts": a, "hedgingDelay": b, "nonFatalStatusCodes": [c]}),
    );
    let policy = prop_oneof![
        retry.prop_map(|r| ("retryPolicy", r)),
        hedging.prop_map(|h| ("hedgingPolicy", h)),
    ];
    let method = (v(), v(), v(), v(), v(), v(), policy).prop_map(
        |(service, method, wfr, timeout, req, resp, (pkey, pval))| {
            json!({"name": [{"service": service, "method": method}],
                   "waitForReady": wfr, "timeout": timeout,
                   "maxRequestMessageBytes": req, "maxResponseMessageBytes": resp,
                   pkey: pval})
        },
    );
    let lb = (prop::sample::select(KEYS), v(), v(), v()).prop_map(|(name, a, b, c)| {
        json!([{name: {"interval": a, "maxEjectionPercent": b,
                       "childPolicy": c,
                       "failurePercentageEjection": {"threshold": a}}}])
    });
    (lb, prop::collection::vec(method, 0..3), v(), v(), v()).prop_map(
        |(lb, methods, tokens, ratio, policy)| {
            json!({
                "loadBalancingConfig": lb,
                "loadBalancingPolicy": policy,
                "methodConfig": methods,
                "retryThrottling": {"maxTokens": tokens, "tokenRatio": ratio}
            })
        },
    )
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn no_json_tree_panics_the_service_config_parser(v in arb_json()) {
        let _ = ServiceConfig::from_value(&v);
        // The same tree as a string-held config, and wrapped as options_json.
        let _ = ServiceConfig::from_value(&Value::String(v.to_string()));
        let _ = Options::from_value(&json!({"service_config": v.clone()}));
        let _ = Options::from_value(&v);
        let _ = Options::from_json(Some(&v.to_string()));
    }

    #[test]
    fn no_shaped_config_panics_the_parser(v in arb_shaped_config()) {
        if let Ok(sc) = ServiceConfig::from_value(&v) {
            // Whatever is accepted is usable.
            let _ = sc.lb_config();
            let _ = sc.method_config("S", "M");
        }
        let _ = Options::from_json(Some(&json!({"service_config": v}).to_string()));
    }

    #[test]
    fn no_string_panics_options_from_json(s in ".{0,64}") {
        let _ = Options::from_json(Some(&s));
    }

    #[test]
    fn no_mangled_reference_config_panics_options_from_json(
        cut in 0usize..400, insert in ".{0,4}", at in 0usize..400,
    ) {
        let text = json!({
            "service_config": {
                "loadBalancingConfig": [{"round_robin": {}}],
                "methodConfig": [{"name": [{"service": "UserService"}], "retryPolicy": good_retry()}],
                "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
            },
            "etcd": {"endpoints": ["127.0.0.1:2379"], "dial_timeout_ms": 1000},
            "max_attempts": 5
        })
        .to_string();
        let chars: Vec<char> = text.chars().collect();
        let cut = cut.min(chars.len());
        let at = at.min(cut);
        let mut mangled: String = chars[..at].iter().collect();
        mangled.push_str(&insert);
        mangled.extend(&chars[at..cut]);
        let _ = Options::from_json(Some(&mangled));
    }
}
