"""The Python surface: argument checking, closing, finalizers, status codes, the package."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

import grpc_failover
from grpc_failover import (
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    Registration,
    Response,
    RpcError,
    StatusCode,
    register,
)
from grpc_failover import _ffi

GRPC_STATUS_CODES = [
    ("OK", (0, "ok")),
    ("CANCELLED", (1, "cancelled")),
    ("UNKNOWN", (2, "unknown")),
    ("INVALID_ARGUMENT", (3, "invalid argument")),
    ("DEADLINE_EXCEEDED", (4, "deadline exceeded")),
    ("NOT_FOUND", (5, "not found")),
    ("ALREADY_EXISTS", (6, "already exists")),
    ("PERMISSION_DENIED", (7, "permission denied")),
    ("RESOURCE_EXHAUSTED", (8, "resource exhausted")),
    ("FAILED_PRECONDITION", (9, "failed precondition")),
    ("ABORTED", (10, "aborted")),
    ("OUT_OF_RANGE", (11, "out of range")),
    ("UNIMPLEMENTED", (12, "unimplemented")),
    ("INTERNAL", (13, "internal")),
    ("UNAVAILABLE", (14, "unavailable")),
    ("DATA_LOSS", (15, "data loss")),
    ("UNAUTHENTICATED", (16, "unauthenticated")),
]


def test_status_codes_are_grpcs():
    # The members, names and values of grpcio's grpc.StatusCode (1.x), in order.
    assert [(m.name, m.value) for m in StatusCode] == GRPC_STATUS_CODES
    assert StatusCode.from_number(14) is StatusCode.UNAVAILABLE
    assert StatusCode.from_number(99) is StatusCode.UNKNOWN


def test_rpc_error():
    e = RpcError(StatusCode.NOT_FOUND, "no user 7", [("k", "v")])
    assert e.code is StatusCode.NOT_FOUND and e.details == "no user 7" and e.trailers == (("k", "v"),)
    assert str(e) == "NOT_FOUND: no user 7"
    assert isinstance(e, Exception)


STATIC = "static:///127.0.0.1:1"


# A value error is an InvalidArgumentError (also a ValueError); "match" is the library's message
# for the rules it checks (the same in every binding), None where only the type is checked here.
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target": b"static:///a:1"}, TypeError, None),
        ({"target": None}, TypeError, None),
        ({"target": "static:///a:1\0"}, InvalidArgumentError, "target: must not contain NUL"),
        ({"target": "http://a:1"}, InvalidArgumentError, None),
        ({"target": "static:///"}, InvalidArgumentError, None),
        ({"etcd": 2379}, TypeError, None),
        ({"etcd": [2379]}, TypeError, None),
        ({"etcd": []}, InvalidArgumentError, r"etcd\.endpoints: must not be empty"),
        ({"etcd": " , "}, InvalidArgumentError, r"etcd\.endpoints: must not be empty"),
        ({"etcd": [""]}, InvalidArgumentError, r"etcd\.endpoints: each endpoint must be a non-empty string"),
        ({"username": "u"}, InvalidArgumentError, "username and password go together"),
        ({"password": "p"}, InvalidArgumentError, "username and password go together"),
        ({"username": 5, "password": "p"}, TypeError, None),
        ({"etcd_dial_timeout": -1}, InvalidArgumentError, None),
        ({"service_config": "{not json"}, InvalidArgumentError, "service_config: not valid JSON"),
        ({"service_config": ["round_robin"]}, TypeError, None),
        ({"service_config": {"loadBalancingConfig": [{"no_such_policy": {}}]}}, InvalidArgumentError, None),
        ({"service_config": {"methodConfig": [{"name": [{}], "timeout": "soon"}]}}, InvalidArgumentError, None),
        ({"connect_timeout": "1s"}, TypeError, None),
        ({"connect_timeout": float("nan")}, InvalidArgumentError, None),
        ({"connect_backoff": {"base": 1}}, InvalidArgumentError, None),
        ({"connect_backoff": {"multiplier": "2"}}, TypeError, None),
        ({"connect_backoff": {"multiplier": 0.5}}, InvalidArgumentError, r"connect_backoff\.multiplier: must be 1 to 100"),
        ({"connect_backoff": {"jitter": 2.0}}, InvalidArgumentError, r"connect_backoff\.jitter: must be in \[0, 1\)"),
        ({"max_attempts": 0}, InvalidArgumentError, "max_attempts: must be >= 1"),
        ({"max_attempts": True}, TypeError, None),
        ({"max_attempts": 2.5}, TypeError, None),
        ({"max_in_flight_per_instance": -1}, InvalidArgumentError, None),
        ({"max_in_flight_per_instance": 0}, InvalidArgumentError, "max_in_flight_per_instance: must be >= 1"),
        ({"options": "{}"}, TypeError, None),
        ({"options": {"etcd": {"endpoints": 5}}}, InvalidArgumentError, r"etcd\.endpoints: must be a list of strings"),
    ],
)
def test_bad_client_arguments(kwargs, error, match):
    kwargs = dict(kwargs)
    target = kwargs.pop("target", STATIC)
    with pytest.raises(error, match=match):
        Client(target, **kwargs)


def test_a_refused_argument_is_an_rpc_error_and_a_value_error():
    with pytest.raises(ValueError) as caught:
        Client(STATIC, max_attempts=0)
    e = caught.value
    assert isinstance(e, InvalidArgumentError) and isinstance(e, RpcError)
    assert e.code is StatusCode.INVALID_ARGUMENT
    assert e.details == "options_json: max_attempts: must be >= 1"
    assert str(e) == "INVALID_ARGUMENT: options_json: max_attempts: must be >= 1"
    assert issubclass(FailedPreconditionError, RpcError) and issubclass(FailedPreconditionError, ValueError)


def test_good_client_arguments():
    with Client(
        STATIC,
        etcd=["127.0.0.1:2379", "127.0.0.1:22379"],
        username="u",
        password="p",
        etcd_dial_timeout=0.5,
        service_config='{"loadBalancingConfig": [{"round_robin": {}}]}',
        connect_timeout=1,
        connect_backoff={"base_delay": 0.1, "max_delay": 1, "multiplier": 1.5, "jitter": 0.1},
        max_attempts=3,
        max_in_flight_per_instance=100,
        keepalive_time=30,
        keepalive_timeout=5,
        options={"connect_timeout_ms": 5},
    ) as c:
        assert c.stats()["policy"] == "round_robin"
        assert c.target == STATIC


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((b"/a.B/C",), {}, TypeError, None),
        ((None,), {}, TypeError, None),
        (("a.B/C",), {}, InvalidArgumentError, r'method "a\.B/C": expected "/package\.Service/Method"'),
        (("/a.B/C/D",), {}, InvalidArgumentError, "expected \"/package.Service/Method\""),
        (("/a.B/",), {}, InvalidArgumentError, "expected \"/package.Service/Method\""),
        (("//C",), {}, InvalidArgumentError, "expected \"/package.Service/Method\""),
        (("/a.B/C\0",), {}, InvalidArgumentError, "method: must not contain NUL"),
        (("/a.B/C", "text"), {}, TypeError, None),
        (("/a.B/C", 5), {}, TypeError, None),
        (("/a.B/C", None), {}, TypeError, None),
        (("/a.B/C",), {"timeout": "1"}, TypeError, None),
        (("/a.B/C",), {"timeout": True}, TypeError, None),
        (("/a.B/C",), {"timeout": -1}, InvalidArgumentError, None),
        (("/a.B/C",), {"timeout": 0}, InvalidArgumentError, None),
        (("/a.B/C",), {"timeout": float("inf")}, InvalidArgumentError, None),
        (("/a.B/C",), {"timeout": 1e12}, InvalidArgumentError, None),
        (("/a.B/C",), {"metadata": "x-k"}, TypeError, None),
        (("/a.B/C",), {"metadata": [("x-k",)]}, TypeError, None),
        (("/a.B/C",), {"metadata": [["x-k", "v"]]}, TypeError, None),
        (("/a.B/C",), {"metadata": [(b"x-k", "v")]}, TypeError, None),
        (("/a.B/C",), {"metadata": [("x-k", 1)]}, TypeError, None),
        (("/a.B/C",), {"metadata": 5}, TypeError, None),
        (("/a.B/C",), {"metadata": [("", "v")]}, InvalidArgumentError, 'metadata key "": keys are non-empty'),
        (("/a.B/C",), {"metadata": [("x-k\0", "v")]}, InvalidArgumentError, "metadata key: must not contain NUL"),
        (("/a.B/C",), {"wait_for_ready": 1}, TypeError, None),
    ],
)
def test_bad_call_arguments(args, kwargs, error, match):
    with Client(STATIC) as c:
        with pytest.raises(error, match=match):
            c.invoke(*args, **kwargs)
        with pytest.raises(error, match=match):
            c.invoke_full(*args, **kwargs)
        with pytest.raises(error, match=match):
            asyncio.run(c.invoke_async(*args, **kwargs))
    assert not grpc_failover._client._pending


def test_use_after_close(server):
    c = Client(f"static:///{server.addr}")
    assert c.invoke("/test.Svc/Echo", b"x", timeout=5) == b"x"
    assert not c.closed and "open" in repr(c)
    c.close()
    c.close()  # twice is fine
    assert c.closed and "closed" in repr(c)
    with pytest.raises(FailedPreconditionError, match="closed"):
        c.invoke("/test.Svc/Echo")
    with pytest.raises(ValueError, match="closed"):
        c.invoke_full("/test.Svc/Echo")
    with pytest.raises(ValueError, match="closed"):
        asyncio.run(c.invoke_async("/test.Svc/Echo"))
    with pytest.raises(ValueError, match="closed"):
        c.stats()
    with c:  # entering a closed client is allowed, calling it is not
        pass


def test_context_manager_closes(server):
    with Client(f"static:///{server.addr}") as c:
        pass
    assert c.closed


def test_finalizer_closes_a_forgotten_client(server):
    c = Client(f"static:///{server.addr}")
    c.invoke("/test.Svc/Echo", timeout=5)
    native = c._native
    del c
    gc.collect()
    assert native.closed
    # The handle is freed with the native object, once nothing can call with it any more.
    gone = weakref.ref(native)
    del native
    gc.collect()
    assert gone() is None


def test_close_while_another_thread_is_in_a_blocking_call(servers):
    slow = servers("slow", "--delay-ms", "5000")
    c = Client(f"static:///{slow.addr}")
    outcome = {}

    def call():
        try:
            outcome["reply"] = c.invoke("/test.Svc/Echo", b"in flight", timeout=30)
        except Exception as e:  # checked below
            outcome["error"] = e

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while c.stats()["calls"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    c.close()
    with pytest.raises(ValueError):
        c.invoke("/test.Svc/Echo")
    t.join(10)
    # The blocking call in flight ended at once, CANCELLED, long before the server's answer.
    assert not t.is_alive()
    error = outcome.get("error")
    assert isinstance(error, RpcError) and error.code is StatusCode.CANCELLED, outcome


def test_close_racing_calls_from_many_threads(server):
    # close() while threads keep entering blocking and async calls: every call succeeds, is
    # cancelled or is refused as closed; nothing crashes or touches a freed handle.
    for _ in range(5):
        c = Client(f"static:///{server.addr}")
        seen = []

        def work(i):
            loop = asyncio.new_event_loop() if i % 2 else None
            try:
                while True:
                    try:
                        if loop is None:
                            c.invoke("/test.Svc/Echo", b"x", timeout=30)
                        else:
                            loop.run_until_complete(c.invoke_async("/test.Svc/Echo", b"x", timeout=30))
                    except FailedPreconditionError:
                        return
                    except RpcError as e:
                        if e.code is not StatusCode.CANCELLED:
                            seen.append(e)
                            return
            finally:
                if loop is not None:
                    loop.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while c.stats()["calls"] < 50 and time.monotonic() < deadline:
            time.sleep(0.005)
        closers = [threading.Thread(target=c.close) for _ in range(2)]
        for t in closers:
            t.start()
        for t in closers + threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        assert not seen, seen


def test_exit_with_calls_in_flight(servers):
    # The interpreter exits while async calls and a blocking call are in flight on clients
    # nobody closed: the exit hooks close them and the process ends cleanly.
    slow = servers("slow", "--delay-ms", "3000")
    script = f"""
import asyncio, threading, time, grpc_failover
c = grpc_failover.Client("static:///{slow.addr}")
c2 = grpc_failover.Client("static:///{slow.addr}")
threading.Thread(target=lambda: c2.invoke("/t.S/Echo"), daemon=True).start()
async def main():
    for _ in range(20):
        asyncio.ensure_future(c.invoke_async("/t.S/Echo"))
    await asyncio.sleep(0.3)
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
print("done", flush=True)
"""
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "done"
    assert "Traceback" not in p.stderr, p.stderr
    assert time.monotonic() - start < 10


def test_registration_arguments():
    for args, kwargs, error, match in [
        ((5, "127.0.0.1:1"), {}, TypeError, None),
        (("p", None), {}, TypeError, None),
        (("p", "127.0.0.1:1", {"weight": object()}), {}, TypeError, None),
        (("p", "127.0.0.1:1", {"weight": float("nan")}), {}, InvalidArgumentError, None),
        (("p", "127.0.0.1:1", None, 0), {}, InvalidArgumentError, "ttl_s: must be at least 1 second"),
        (("p", "127.0.0.1:1", None, -1), {}, InvalidArgumentError, None),
        (("p", "127.0.0.1:1", None, 1.5), {}, TypeError, None),
        (("p", "127.0.0.1:1"), {"etcd": 5}, TypeError, None),
        (("p", "127.0.0.1:1"), {"username": "u"}, InvalidArgumentError, "username and password go together"),
    ]:
        with pytest.raises(error, match=match):
            register(*args, **kwargs)


def public_names():
    for name in grpc_failover.__all__:
        obj = getattr(grpc_failover, name)
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    yield f"{name}.{attr}", member


def test_every_public_name_has_a_docstring():
    missing = [name for name, obj in public_names() if not inspect.getdoc(obj)]
    assert missing == []
    assert grpc_failover.__doc__


def test_typed_package():
    assert (Path(grpc_failover.__file__).parent / "py.typed").is_file()
    hints = Client.invoke.__annotations__
    assert hints["return"] in (bytes, "bytes")


def test_every_c_function_is_declared():
    # Every gf_ function the package calls has explicit argtypes and restype.
    declared = {**_ffi._BLOCKING, **_ffi._NON_BLOCKING}
    source = "".join(p.read_text() for p in Path(grpc_failover.__file__).parent.glob("*.py"))
    used = set(re.findall(r"\b(?:lib|fast)\.(gf_\w+)", source)) - {"gf_abi_version"}
    assert used <= set(declared), used - set(declared)
    for dll, table in ((_ffi.lib, _ffi._BLOCKING), (_ffi.fast, _ffi._NON_BLOCKING)):
        for name, (argtypes, restype) in table.items():
            fn = getattr(dll, name)
            assert fn.argtypes == argtypes and fn.restype is restype, name
    # test_ffi_signatures.py checks them against the header.


def test_installed_package_finds_its_library():
    # Without GF_LIBRARY, the installed package loads the copy bundled at install time.
    env = {k: v for k, v in os.environ.items() if k not in ("GF_LIBRARY", "PYTHONPATH")}
    code = "import grpc_failover as g; print(g.__file__); print(g.library_path()); print(g.__version__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", check=True
    ).stdout.split()
    package = Path(out[0]).parent
    assert "site-packages" in package.parts, out
    assert out[1] == str(package / "_lib" / "libgrpc_failover.so")
    assert out[2] == grpc_failover.library_version()


def test_gf_library_overrides_the_path(tmp_path):
    env = dict(os.environ, GF_LIBRARY=str(tmp_path / "missing.so"))
    p = subprocess.run([sys.executable, "-c", "import grpc_failover"], capture_output=True, text=True, env=env)
    assert p.returncode != 0
    assert "ImportError" in p.stderr and "missing.so" in p.stderr


def test_exports():
    assert set(grpc_failover.__all__) >= {"Client", "RpcError", "StatusCode", "register"}
    assert Response._fields == ("data", "headers", "trailers")
    assert issubclass(Registration, object)
