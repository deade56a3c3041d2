"""Client.metrics(): the Prometheus text, read back with prometheus_client's own parser."""

from __future__ import annotations

import pytest

from grpc_failover import Client, RpcError, StatusCode

parser = pytest.importorskip("prometheus_client.parser")


def families(text):
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_metrics_parse_and_count_the_calls(server):
    target = f"static:///{server.addr}"
    with Client(target, options={"metrics": {"methods": ["test.Svc/Echo"]}}) as c:
        for i in range(7):
            assert c.invoke("/test.Svc/Echo", b"x" * i, timeout=5) == b"x" * i
        for _ in range(3):
            c.invoke("/test.Svc/Whoami", timeout=5)
        # 40 distinct unknown methods: all labelled "other", the label set stays bounded.
        for i in range(40):
            with pytest.raises(RpcError) as e:
                c.invoke(f"/test.Svc/Nope{i}", timeout=5)
            assert e.value.code is StatusCode.UNIMPLEMENTED
        fams = families(c.metrics())

    started = {
        s.labels["grpc_method"]: s.value for s in fams["grpc_client_attempt_started"].samples
    }
    assert started == {"test.Svc/Echo": 7, "other": 43}
    assert all(s.labels["grpc_target"] == target for s in fams["grpc_client_attempt_started"].samples)

    calls = fams["grpc_client_call_duration_seconds"]
    counts = {
        (s.labels["grpc_method"], s.labels["grpc_status"]): s.value
        for s in calls.samples
        if s.name.endswith("_count")
    }
    assert counts == {("test.Svc/Echo", "OK"): 7, ("other", "OK"): 3, ("other", "UNIMPLEMENTED"): 40}
    # The +Inf bucket of each series is its count.
    for s in calls.samples:
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf":
            assert s.value == counts[(s.labels["grpc_method"], s.labels["grpc_status"])]

    sent = fams["grpc_client_attempt_sent_total_compressed_message_size_bytes"]
    echo_sum = [
        s.value
        for s in sent.samples
        if s.name.endswith("_sum") and s.labels["grpc_method"] == "test.Svc/Echo"
    ]
    assert echo_sum == [sum(range(7))]

    assert fams["grpc_failover_calls"].samples[0].value == 50
    assert fams["grpc_failover_calls_failed"].samples[0].value == 40
    picks = fams["grpc_failover_instance_picks"].samples
    assert [(s.labels["instance"], s.value) for s in picks] == [(server.addr, 50)]


def test_metrics_of_a_closed_client_fail(server):
    c = Client(f"static:///{server.addr}")
    c.close()
    with pytest.raises(RpcError) as e:
        c.metrics()
    assert e.value.code is StatusCode.FAILED_PRECONDITION


def test_a_collector_merges_clients_in_a_registry(servers):
    registry_mod = pytest.importorskip("prometheus_client")
    from grpc_failover.prometheus import ClientCollector

    a, b = servers("a"), servers("b")
    registry = registry_mod.CollectorRegistry()
    c1 = Client(f"static:///{a.addr}")
    c2 = Client(f"static:///{b.addr}")
    collector = ClientCollector(c1)
    collector.add(c2)
    registry.register(collector)
    c1.invoke("/test.Svc/Echo", timeout=5)
    for _ in range(2):
        c2.invoke("/test.Svc/Echo", timeout=5)
    text = registry_mod.generate_latest(registry).decode()
    calls = {s.labels["grpc_target"]: s.value for s in families(text)["grpc_failover_calls"].samples}
    assert calls == {f"static:///{a.addr}": 1, f"static:///{b.addr}": 2}
    c1.close()
    text = registry_mod.generate_latest(registry).decode()
    calls = {s.labels["grpc_target"]: s.value for s in families(text)["grpc_failover_calls"].samples}
    assert calls == {f"static:///{b.addr}": 2}
    c2.close()
