"""Blocking calls against real gf-testservers on a static target: results, status codes,
timeouts, metadata, wait-for-ready, and the GIL."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import FAST_BACKOFF, free_port
from grpc_failover import Client, Response, RpcError, StatusCode


def test_echo_and_whoami(server):
    with Client(f"static:///{server.addr}") as c:
        assert c.invoke("/test.Svc/Echo", b"\x00hello\xff", timeout=5) == b"\x00hello\xff"
        assert c.invoke("/any.Other/Whoami", timeout=5) == b"a"
        assert c.invoke("/test.Svc/Echo") == b""
        assert c.invoke("/test.Svc/Echo", bytearray(b"ba")) == b"ba"
        assert c.invoke("/test.Svc/Echo", memoryview(b"mv")) == b"mv"
        big = bytes(range(256)) * 4096
        assert c.invoke("/test.Svc/Echo", big, timeout=5) == big


@pytest.mark.parametrize("code", [c for c in StatusCode if c is not StatusCode.OK], ids=lambda c: c.name)
def test_each_status_code_reaches_the_caller(servers, code):
    s = servers("failing", "--fail-rate", "1", "--fail-code", code.value[0])
    with Client(f"static:///{s.addr}") as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/Echo", b"x", timeout=5, metadata=[("x-echo-why", "test")])
    assert info.value.code is code
    assert "injected failure" in info.value.details
    assert ("x-echo-why", "test") in info.value.trailers
    assert code.name in str(info.value)


def test_unimplemented_method(server):
    with Client(f"static:///{server.addr}") as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/NoSuchMethod", timeout=5)
    assert info.value.code is StatusCode.UNIMPLEMENTED
    assert "NoSuchMethod" in info.value.details


def test_unavailable_when_nothing_listens():
    with Client(f"static:///127.0.0.1:{free_port()}") as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/Echo", timeout=5)
    assert info.value.code is StatusCode.UNAVAILABLE


def test_timeout_is_a_deadline(servers):
    slow = servers("slow", "--delay-ms", "2000")
    with Client(f"static:///{slow.addr}") as c:
        start = time.monotonic()
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/Echo", b"x", timeout=0.2)
        elapsed = time.monotonic() - start
    assert info.value.code is StatusCode.DEADLINE_EXCEEDED
    assert 0.15 <= elapsed < 1.5


def test_service_config_timeout_applies(servers):
    slow = servers("slow", "--delay-ms", "2000")
    config = {"methodConfig": [{"name": [{"service": "test.Svc"}], "timeout": "0.2s"}]}
    with Client(f"static:///{slow.addr}", service_config=config) as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/Echo", b"x")
    assert info.value.code is StatusCode.DEADLINE_EXCEEDED


def test_metadata_comes_back_in_trailers(server):
    with Client(f"static:///{server.addr}") as c:
        r = c.invoke_full(
            "/test.Svc/Echo",
            b"body",
            metadata=[("x-echo-one", "1"), ("x-echo-two", b"2"), ("x-echo-data-bin", b"\x00\xff"), ("other", "no")],
            timeout=5,
        )
        assert isinstance(r, Response)
        assert r.data == b"body"
        assert ("x-echo-one", "1") in r.trailers
        assert ("x-echo-two", "2") in r.trailers
        assert ("x-echo-data-bin", b"\x00\xff") in r.trailers
        assert all(k != "other" for k, _ in r.trailers)
        assert all(isinstance(k, str) for k, _ in r.headers)
        # A mapping works as well as a list of pairs.
        r = c.invoke_full("/test.Svc/Echo", metadata={"x-echo-m": "v"}, timeout=5)
        assert ("x-echo-m", "v") in r.trailers


@pytest.mark.parametrize(
    "metadata",
    [
        [("Upper-Case", "v")],
        [("grpc-timeout", "1S")],
        [("bad key", "v")],
        [("x-k", "line\nbreak")],
        [("x-k", "caf\u00e9")],
    ],
)
def test_invalid_metadata_is_a_value_error(server, metadata):
    with Client(f"static:///{server.addr}") as c:
        with pytest.raises(ValueError):
            c.invoke("/test.Svc/Echo", metadata=metadata)


def test_wait_for_ready_waits_for_an_instance(servers):
    port = free_port()
    with Client(f"static:///127.0.0.1:{port}", connect_backoff=FAST_BACKOFF) as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/test.Svc/Whoami", timeout=2)
        assert info.value.code is StatusCode.UNAVAILABLE  # fails fast by default
        outcome = {}

        def call():
            try:
                outcome["reply"] = c.invoke("/test.Svc/Whoami", timeout=10, wait_for_ready=True)
            except Exception as e:  # reported below
                outcome["error"] = e

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), outcome
        servers("late", listen=f"127.0.0.1:{port}")
        t.join(10)
    assert outcome == {"reply": b"late"}


def test_blocking_calls_release_the_gil(servers):
    # Eight threads against a server that answers after 200 ms: in parallel they take about
    # one delay, one after the other they would take 1.6 s.
    slow = servers("slow", "--delay-ms", "200")
    with Client(f"static:///{slow.addr}") as c:
        c.invoke("/test.Svc/Echo", timeout=5)  # connect first
        replies = [None] * 8
        barrier = threading.Barrier(8)

        def call(i):
            barrier.wait()
            replies[i] = c.invoke("/test.Svc/Echo", b"%d" % i, timeout=5)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    assert replies == [b"%d" % i for i in range(8)]
    assert elapsed < 1.0, f"8 calls of 200 ms took {elapsed:.2f} s: the GIL was held"


def test_stats(server):
    with Client(f"static:///{server.addr}") as c:
        for _ in range(3):
            c.invoke("/test.Svc/Echo", timeout=5)
        with pytest.raises(RpcError):
            c.invoke("/test.Svc/Nope", timeout=5)
        s = c.stats()
    assert s["target"] == f"static:///{server.addr}"
    assert s["calls"] == 4 and s["calls_failed"] == 1
    assert [i["address"] for i in s["instances"]] == [server.addr]
    assert s["instances"][0]["calls"] == 4
