"""The library's log records in Python's logging: logger "grpc_failover", at its level, from
the library's log thread, never holding up calls."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

from conftest import eventually, free_port
from grpc_failover import Client, RpcError, _log

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("GF_LOG")), reason="GF_LOG sends the library's records to stderr"
)


class Keep(logging.Handler):
    def __init__(self, block: threading.Event = None):
        super().__init__(level=logging.NOTSET)
        self.records = []
        self.block = block
        self.entered = threading.Event()

    def emit(self, record):
        self.entered.set()
        if self.block is not None:
            self.block.wait()
        self.records.append(record)

    def find(self, *parts):
        return next((r for r in self.records if all(p in r.getMessage() for p in parts)), None)


@pytest.fixture
def keep():
    """A handler on the grpc_failover logger at DEBUG; the logger's level is restored after."""
    logger = logging.getLogger("grpc_failover")
    handler = Keep()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)
    _log.sync_level()


def test_levels_map_to_the_librarys():
    assert _log.native_level(logging.WARNING) == 2
    assert _log.native_level(logging.DEBUG) == 4
    assert _log.native_level(logging.INFO) == 3
    assert _log.native_level(logging.ERROR) == 1
    assert _log.native_level(logging.CRITICAL) == 0
    assert _log.native_level(1) == 5
    assert _log.native_level(logging.DEBUG + 1) == 3


def test_records_of_a_failing_call_reach_logging(keep):
    addr = f"127.0.0.1:{free_port()}"
    with Client(f"static:///{addr}") as c:
        with pytest.raises(RpcError):
            c.invoke("/test.Svc/Echo", b"x", timeout=0.3)
    # The library logs at WARNING by default: DEBUG records show its level followed the logger.
    assert eventually(lambda: keep.find(f"subchannel {addr}: connecting")), [
        r.getMessage() for r in keep.records
    ]
    record = keep.find(f"subchannel {addr}: connecting")
    assert record.levelno == logging.DEBUG
    assert record.name == "grpc_failover"
    assert record.gf_target.startswith("grpc_failover::")
    assert record.threadName != threading.current_thread().name
    assert eventually(lambda: keep.find(f"subchannel {addr}: connect to {addr}", "next attempt in"))


def test_a_blocked_handler_holds_up_no_call(keep, server):
    """While a handler is stuck, calls (and the records they cause) go on; the records wait."""
    release = threading.Event()
    stuck = Keep(block=release)
    logger = logging.getLogger("grpc_failover")
    logger.addHandler(stuck)
    try:
        dead = f"127.0.0.1:{free_port()}"
        with Client(f"static:///{dead}") as bad, Client(f"static:///{server.addr}") as good:
            with pytest.raises(RpcError):
                bad.invoke("/test.Svc/Echo", timeout=0.3)
            # The log thread is now stuck in the handler, with records queued behind it.
            assert stuck.entered.wait(10)
            for i in range(200):
                assert good.invoke("/test.Svc/Echo", b"%d" % i, timeout=5) == b"%d" % i
            assert not stuck.records
        release.set()
        assert eventually(lambda: stuck.find(dead))
    finally:
        release.set()
        logger.removeHandler(stuck)


def test_basic_config_debug_shows_connection_attempts_and_exit_is_clean():
    addr = f"127.0.0.1:{free_port()}"
    program = f"""
import logging, threading, time
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
from grpc_failover import Client, RpcError
seen = threading.Event()
class Seen(logging.Handler):
    def emit(self, record):
        if "connecting" in record.getMessage():
            seen.set()
        time.sleep(0.05)  # slow: records are still being handled when the program exits
logging.getLogger("grpc_failover").addHandler(Seen())
with Client("static:///{addr}") as c:
    try:
        c.invoke("/test.Svc/Echo", timeout=0.3)
    except RpcError:
        pass
    seen.wait(10)
"""
    # The records print from the log thread while the program waits, and more keep coming (the
    # client reconnects) while the slow handler works through them at exit: the atexit hook
    # waits for the record in hand and routes the rest to stderr before the interpreter
    # finalizes, so the log thread never enters a finalizing interpreter.
    env = {k: v for k, v in os.environ.items() if k != "GF_LOG"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"DEBUG grpc_failover subchannel {addr}: connecting" in done.stderr, done.stderr


def test_records_reach_logging_in_a_fork_child_of_an_importer():
    """Importing starts the library's log thread; a child forked after that has none, and its
    first Client routes records again (to a thread of its own)."""
    addr = f"127.0.0.1:{free_port()}"
    program = f"""
import logging, os, sys, threading
import grpc_failover
from grpc_failover import Client, RpcError
seen = threading.Event()
class Seen(logging.Handler):
    def emit(self, record):
        if "subchannel {addr}: connecting" in record.getMessage():
            seen.set()
logger = logging.getLogger("grpc_failover")
logger.setLevel(logging.DEBUG)
logger.addHandler(Seen())
pid = os.fork()
if pid == 0:
    with Client("static:///{addr}") as c:
        try:
            c.invoke("/test.Svc/Echo", timeout=0.3)
        except RpcError:
            pass
        ok = seen.wait(10)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    env = {k: v for k, v in os.environ.items() if k != "GF_LOG"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
