"""TLS and mTLS from Python: to gf-testserver instances and to etcd, for calls and for
registration (issue 17). Certificates are made at test time by scripts/test-certs.sh."""

from __future__ import annotations

import pytest

import grpc_failover
from conftest import FAST_BACKOFF, Etcd


def test_a_tls_call_through_a_static_target(certs, servers):
    s = servers("secure", "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
    with grpc_failover.Client(f"static:///{s.addr}", tls={"ca_file": certs / "ca.pem"}) as c:
        assert c.invoke("/test.Svc/Whoami", b"", timeout=5) == b"secure"


def test_mtls_needs_the_client_certificate(certs, servers):
    s = servers(
        "mtls",
        "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
        "--client-ca", certs / "ca.pem",
    )
    mtls = {"ca_file": certs / "ca.pem", "cert_file": certs / "client.pem", "key_file": certs / "client.key"}
    with grpc_failover.Client(f"static:///{s.addr}", tls=mtls) as c:
        assert c.invoke("/test.Svc/Echo", b"hi", timeout=5) == b"hi"
    with grpc_failover.Client(
        f"static:///{s.addr}", tls={"ca_file": str(certs / "ca.pem")}, connect_backoff=FAST_BACKOFF
    ) as c:
        with pytest.raises(grpc_failover.RpcError) as e:
            c.invoke("/test.Svc/Echo", b"hi", timeout=2)
        assert e.value.code == grpc_failover.StatusCode.UNAVAILABLE
        assert f"tls handshake with {s.addr}" in e.value.details


def test_an_unknown_ca_is_unavailable_with_the_reason(certs, servers):
    s = servers("secure", "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
    with grpc_failover.Client(f"static:///{s.addr}", tls={"ca_file": certs / "other-ca.pem"}) as c:
        with pytest.raises(grpc_failover.RpcError) as e:
            c.invoke("/test.Svc/Whoami", b"", timeout=2)
        assert e.value.code == grpc_failover.StatusCode.UNAVAILABLE
        assert "invalid peer certificate: UnknownIssuer" in e.value.details


def test_a_missing_file_is_an_invalid_argument_naming_it(certs):
    missing = certs / "nope.pem"
    with pytest.raises(grpc_failover.InvalidArgumentError) as e:
        grpc_failover.Client("static:///127.0.0.1:1", tls={"ca_file": missing})
    assert f"tls.ca_file: cannot read {missing}" in str(e.value)
    with pytest.raises(TypeError):
        grpc_failover.Client("static:///127.0.0.1:1", tls="yes")


def test_registration_and_resolution_through_etcd_over_tls(certs, servers, prefix):
    etcd = Etcd(certs)
    try:
        s = servers("secure", "--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
        etcd_tls = {"ca_file": certs / "ca.pem"}
        with grpc_failover.register(prefix, s.addr, {"weight": 1}, etcd=[etcd.endpoint], etcd_tls=etcd_tls):
            assert etcd.keys(prefix + "/") == [f"{prefix}/{s.addr}"]
            with grpc_failover.Client(
                f"etcd:///{prefix}",
                etcd=[etcd.endpoint],
                etcd_tls=etcd_tls,
                tls={"ca_file": certs / "ca.pem"},
            ) as c:
                assert c.invoke("/test.Svc/Whoami", b"", timeout=5) == b"secure"
    finally:
        etcd.stop()
