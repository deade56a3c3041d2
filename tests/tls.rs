//! TLS and mTLS to the backends and to etcd (issue 17), with certificates made at test time,
//! real gf-testserver processes serving TLS and a real etcd serving TLS.

mod common;

use std::time::Duration;

use common::certs::{Certs, Key, Pair};
use common::*;
use grpc_failover::{Client, Code, Options, Registration, Status};
use serde_json::{json, Value};

/// A server serving TLS with `pair` (and requiring client certificates from `client_ca`).
fn tls_server(name: &str, pair: &Pair, client_ca: Option<&str>) -> TestServer {
    let mut args = Certs::serve(pair);
    if let Some(ca) = client_ca {
        args.extend(["--client-ca".to_string(), ca.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start(name, &args)
}

fn connect(target: &str, options: Value) -> Result<Client, Status> {
    let options = Options::from_value(&options).map_err(Status::invalid_argument)?;
    Client::connect(target, options)
}

fn client(target: &str, tls: Value) -> Client {
    connect(
        target,
        json!({"tls": tls, "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 500}}),
    )
    .unwrap()
}

/// A call that must fail: its error.
fn failure(c: &Client) -> Status {
    match whoami(c, 3000) {
        Ok(who) => panic!("the call reached {who}"),
        Err(e) => e,
    }
}

fn assert_unavailable(e: &Status, needle: &str) {
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
    assert!(
        e.message.contains(needle),
        "{needle:?} not in {:?}",
        e.message
    );
}

#[test]
fn tls_calls_reach_servers_by_ip_and_by_hostname() {
    let certs = Certs::new();
    let s = tls_server("secure", &certs.server, None);
    let tls = Certs::tls_json(&certs.ca, None, None);
    // An IP address is verified as an IP (the certificate has 127.0.0.1 in its SAN).
    let c = client(&format!("static:///{}", s.addr), tls.clone());
    assert_eq!(whoami(&c, 5000).unwrap(), "secure");
    // A hostname is verified as that name.
    let port = s.addr.rsplit_once(':').unwrap().1;
    let c = client(&format!("static:///localhost:{port}"), tls);
    assert_eq!(whoami(&c, 5000).unwrap(), "secure");
}

#[test]
fn rsa_ecdsa_and_ed25519_keys_serve_and_authenticate() {
    let certs = Certs::new();
    for kind in [Key::Rsa, Key::EcdsaP256, Key::Ed25519] {
        let name = format!("{kind:?}").to_lowercase();
        let server = certs.server_for(&format!("{name}-server"), &["127.0.0.1"], kind);
        let client_pair = certs.client_cert(&format!("{name}-client"), kind);
        let s = tls_server(&name, &server, Some(&certs.ca));
        let c = client(
            &format!("static:///{}", s.addr),
            Certs::tls_json(&certs.ca, Some(&client_pair), None),
        );
        assert_eq!(whoami(&c, 5000).unwrap(), name, "{kind:?}");
    }
}

#[test]
fn mtls_accepts_the_right_client_certificate_and_no_other() {
    let certs = Certs::new();
    let s = tls_server("mtls", &certs.server, Some(&certs.ca));
    let target = format!("static:///{}", s.addr);
    let ok = client(
        &target,
        Certs::tls_json(&certs.ca, Some(&certs.client), None),
    );
    assert_eq!(whoami(&ok, 5000).unwrap(), "mtls");

    // TLS 1.3: the server's verdict on our certificate comes as an alert after our side of the
    // handshake; it is still reported as the handshake's failure.
    // The alert can be lost with the connection the server closes at once; either way the
    // error says what happened.
    let refused = |e: &Status, alert: &str| {
        assert_unavailable(e, &format!("tls handshake with {}: ", s.addr));
        assert!(
            e.message.contains(alert)
                || e.message.contains("may require a client certificate")
                || e.message
                    .contains("may have refused our client certificate"),
            "{e:?}"
        );
    };
    refused(
        &failure(&client(&target, Certs::tls_json(&certs.ca, None, None))),
        "CertificateRequired",
    );
    let wrong = client(
        &target,
        Certs::tls_json(&certs.ca, Some(&certs.other_client), None),
    );
    refused(&failure(&wrong), "alert");
}

#[test]
fn an_unknown_ca_or_an_expired_certificate_fails_with_the_rustls_reason() {
    let certs = Certs::new();
    let s = tls_server("secure", &certs.server, None);
    let c = client(
        &format!("static:///{}", s.addr),
        Certs::tls_json(&certs.other_ca, None, None),
    );
    assert_unavailable(
        &failure(&c),
        &format!(
            "tls handshake with {}: invalid peer certificate: UnknownIssuer",
            s.addr
        ),
    );

    let expired = tls_server("expired", &certs.expired_server(), None);
    let c = client(
        &format!("static:///{}", expired.addr),
        Certs::tls_json(&certs.ca, None, None),
    );
    let e = failure(&c);
    assert_unavailable(&e, "invalid peer certificate: certificate expired");
}

#[test]
fn a_name_the_certificate_does_not_cover_says_to_set_server_name() {
    let certs = Certs::new();
    let pair = certs.server_for("named", &["api.example.test"], Key::EcdsaP256);
    let s = tls_server("named", &pair, None);
    let target = format!("static:///{}", s.addr);
    let e = failure(&client(&target, Certs::tls_json(&certs.ca, None, None)));
    assert_unavailable(
        &e,
        &format!("tls handshake with {}: invalid peer certificate", s.addr),
    );
    assert_unavailable(&e, "set tls.server_name");

    let named = client(
        &target,
        Certs::tls_json(&certs.ca, None, Some("api.example.test")),
    );
    assert_eq!(whoami(&named, 5000).unwrap(), "named");

    // A server_name the certificate does not cover fails too.
    let wrong = client(
        &target,
        Certs::tls_json(&certs.ca, None, Some("other.example.test")),
    );
    assert_unavailable(&failure(&wrong), "invalid peer certificate");
}

#[test]
fn plaintext_and_tls_mismatches_end_unavailable_within_the_deadline() {
    let certs = Certs::new();
    let secure = tls_server("secure", &certs.server, None);
    let plain = TestServer::start("plain", &[]);

    let plaintext_client = Client::connect(
        &format!("static:///{}", secure.addr),
        options(r#"{"connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 500}}"#),
    )
    .unwrap();
    assert_unavailable(&failure(&plaintext_client), "if it serves TLS, set \"tls\"");

    let tls_client = client(
        &format!("static:///{}", plain.addr),
        Certs::tls_json(&certs.ca, None, None),
    );
    assert_unavailable(
        &failure(&tls_client),
        &format!("tls handshake with {}: ", plain.addr),
    );
}

#[test]
fn an_instance_failing_its_handshake_is_skipped_while_the_others_serve() {
    let certs = Certs::new();
    let good = tls_server("good", &certs.server, None);
    let pair = certs.server_for("elsewhere", &["elsewhere.example.test"], Key::EcdsaP256);
    let bad = tls_server("bad", &pair, None);
    let c = client(
        &format!("static:///{},{}", bad.addr, good.addr),
        Certs::tls_json(&certs.ca, None, None),
    );
    assert!(wait_ready(&c, 1, Duration::from_secs(5)));
    let counts = spread(&c, 50);
    assert_eq!(counts.get("good"), Some(&50), "{counts:?}");
    let bad_entry = instance(&c, &bad.addr);
    assert_eq!(bad_entry["state"], "TRANSIENT_FAILURE", "{bad_entry}");
    assert!(
        bad_entry["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("tls handshake"),
        "{bad_entry}"
    );
}

#[test]
fn bad_tls_files_fail_the_connect_naming_the_field_and_the_path() {
    let certs = Certs::new();
    let missing = certs.dir.path().join("nope.pem").display().to_string();
    let not_pem = certs.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let not_pem = not_pem.display().to_string();
    for (options, want) in [
        (
            json!({"tls": {"ca_file": missing}}),
            format!("tls.ca_file: cannot read {missing}"),
        ),
        (
            json!({"tls": {"ca_file": not_pem}}),
            format!("tls.ca_file: {not_pem} holds no PEM certificate"),
        ),
        (
            json!({"tls": {"ca_file": certs.ca, "cert_file": certs.client.cert, "key_file": certs.ca}}),
            format!("tls.key_file: {} holds no private key", certs.ca),
        ),
        (
            json!({"tls": {"ca_file": certs.ca, "cert_file": certs.client.cert, "key_file": certs.server.key}}),
            format!(
                "tls.key_file: {} does not go with {}",
                certs.server.key, certs.client.cert
            ),
        ),
        (
            json!({"etcd": {"tls": {"ca_file": missing}}}),
            format!("etcd.tls.ca_file: cannot read {missing}"),
        ),
    ] {
        let e = connect("etcd:///svc", options.clone())
            .err()
            .unwrap_or_else(|| panic!("{options}"));
        assert_eq!(e.code, Code::InvalidArgument, "{e:?}");
        assert!(e.message.contains(&want), "{want:?} not in {:?}", e.message);
    }
}

fn etcd_options(etcd: &Etcd, certs: &Certs, client_cert: bool) -> Value {
    let client = client_cert.then_some(&certs.client);
    json!({
        "etcd": {
            "endpoints": [etcd.endpoint],
            "dial_timeout_ms": 2000,
            "tls": Certs::tls_json(&certs.ca, client, None),
        },
        "tls": Certs::tls_json(&certs.ca, None, None),
        "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 500},
    })
}

#[test]
fn resolver_and_registrar_work_with_etcd_over_tls_and_mtls() {
    let certs = Certs::new();
    for mtls in [false, true] {
        let etcd = Etcd::start_tls(&certs, mtls);
        let s = tls_server("secure", &certs.server, None);
        let options = etcd_options(&etcd, &certs, mtls);
        let etcd_opts = Options::from_value(&options).unwrap().etcd;
        let reg = block_on(Registration::register(
            &etcd_opts,
            "service/tls",
            &s.addr,
            json!({"weight": 1}),
            5,
        ))
        .unwrap_or_else(|e| panic!("register (mtls {mtls}): {e:?}"));
        let c = connect("etcd:///service/tls", options).unwrap();
        assert_eq!(whoami(&c, 5000).unwrap(), "secure", "mtls {mtls}");
        block_on(reg.deregister()).unwrap();
        assert!(eventually(Duration::from_secs(5), || instances(&c).is_empty()));
    }
}

#[test]
fn etcd_requiring_client_certificates_refuses_a_client_without_one() {
    let certs = Certs::new();
    let etcd = Etcd::start_tls(&certs, true);
    let etcd_opts = Options::from_value(&etcd_options(&etcd, &certs, false))
        .unwrap()
        .etcd;
    let e = block_on(Registration::register(
        &etcd_opts,
        "svc",
        "127.0.0.1:9",
        Value::Null,
        5,
    ))
    .err()
    .expect("etcd --client-cert-auth must refuse a client without a certificate");
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
}

#[test]
fn a_record_server_name_overrides_the_name_for_its_instance() {
    let certs = Certs::new();
    let etcd = Etcd::start();
    let pair = certs.server_for("per-instance", &["one.example.test"], Key::EcdsaP256);
    let s = tls_server("one", &pair, None);
    let record = |metadata: Value| {
        format!(
            "{{\"Op\":0,\"Addr\":\"{}\",\"Metadata\":{metadata}}}",
            s.addr
        )
    };
    etcd.put(
        &format!("svc/{}", s.addr),
        &record(json!({"server_name": "one.example.test"})),
    );
    let c = connect(
        "etcd:///svc",
        json!({
            "etcd": {"endpoints": [etcd.endpoint]},
            "tls": Certs::tls_json(&certs.ca, None, Some("wrong.example.test")),
            "connect_backoff": {"base_delay_ms": 100, "max_delay_ms": 500},
        }),
    )
    .unwrap();
    assert_eq!(whoami(&c, 5000).unwrap(), "one");
}

#[test]
fn killing_one_of_three_tls_instances_costs_no_call() {
    let certs = Certs::new();
    let mut servers: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| tls_server(n, &certs.server, None))
        .collect();
    let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
    let c = connect(
        &format!("static:///{}", addrs.join(",")),
        json!({
            "tls": Certs::tls_json(&certs.ca, None, None),
            "service_config": {
                "loadBalancingConfig": [{"round_robin": {}}],
                "methodConfig": [{"name": [{}], "retryPolicy": {
                    "maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}],
            },
        }),
    )
    .unwrap();
    assert!(wait_ready(&c, 3, Duration::from_secs(10)));
    let mut errors = 0;
    for i in 0..600 {
        if i == 200 {
            servers[0].kill();
        }
        if whoami(&c, 2000).is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 0);
}

#[test]
fn a_tls_server_that_does_not_choose_h2_by_alpn_is_no_grpc_server() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = Certs::new();
    let chain = CertificateDer::pem_file_iter(&certs.server.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.server.key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    // No alpn_protocols: an HTTPS/1.1-only server, say.
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    grpc_failover::runtime_handle().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                held.push(tls);
            }
        }
    });
    let c = client(
        &format!("static:///{addr}"),
        Certs::tls_json(&certs.ca, None, None),
    );
    assert_unavailable(
        &failure(&c),
        &format!("tls handshake with {addr}: the server did not choose HTTP/2 by ALPN (it chose nothing)"),
    );
}
