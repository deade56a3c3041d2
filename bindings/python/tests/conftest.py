"""Test harness: a real etcd and real gf-testserver processes on free loopback ports, started
by the fixtures and stopped by PID."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]

#: The reference service config: round robin, and UNAVAILABLE retried on another instance.
REFERENCE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "UserService"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2.0,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

#: Quick reconnects, so that tests do not wait out gRPC's default 1 s connection backoff.
FAST_BACKOFF = {"base_delay": 0.05, "max_delay": 0.5}


def testserver_binary() -> str:
    path = os.environ.get("GF_TESTSERVER") or str(REPO / "target" / "release" / "gf-testserver")
    if not Path(path).is_file():
        pytest.exit(f"gf-testserver not found at {path}: run `make build` or set GF_TESTSERVER", 2)
    return path


_handed_out: set = set()


def free_port() -> int:
    """A loopback port nothing listens on now, for a process started next (etcd). Below Linux's
    ephemeral range (32768 and up), where the kernel never hands out ports by itself, so a
    gf-testserver binding port 0 cannot take it first; never the same one twice."""
    for _ in range(10_000):
        port = random.randrange(20_000, 32_000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port in 20000..32000")


def eventually(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Polls until ``condition()`` is truthy or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


class TestServer:
    """A gf-testserver child process."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, name: str, args: List[str], listen: str = "127.0.0.1:0"):
        self.name = name
        self.proc = subprocess.Popen(
            [testserver_binary(), "--listen", listen, "--name", name, *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if not first.startswith("listening "):
            _stop(self.proc)
            raise RuntimeError(f"gf-testserver {name} did not start: {first!r}")
        self.addr = first.split(" ", 1)[1]
        self.registered = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if "--etcd" in args and not self.registered.wait(10):
            _stop(self.proc)
            raise RuntimeError(f"gf-testserver {name} did not register in etcd")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("registered "):
                self.registered.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the process dies without deregistering."""
        _stop(self.proc, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: a registered server deregisters first."""
        _stop(self.proc, signal.SIGTERM)


class Etcd:
    """A single-node etcd in a temporary data directory; read and written over its JSON API."""

    def __init__(self, certs: Optional[Path] = None) -> None:
        """With ``certs`` (a directory made by scripts/test-certs.sh), clients reach it over TLS
        with its server certificate."""
        if not shutil.which("etcd"):
            pytest.exit("etcd not found: run `make deps`", 2)
        self.dir = tempfile.mkdtemp(prefix="gf-py-etcd-")
        client, peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{client}"
        self.url = f"{'https' if certs else 'http'}://{self.endpoint}"
        self._ssl = ssl.create_default_context(cafile=str(certs / "ca.pem")) if certs else None
        tls_flags = ["--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server.key")] if certs else []
        peer_url = f"http://127.0.0.1:{peer}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            [
                "etcd",
                "--name", "n",
                "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"n={peer_url}",
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                *tls_flags,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not eventually(self._healthy, timeout=30, interval=0.05):
            self.stop()
            raise RuntimeError("etcd did not become healthy")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1, context=self._ssl) as r:
                return json.load(r).get("health") == "true"
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _api(self, path: str, body: Dict) -> Dict:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5, context=self._ssl) as r:
            return json.load(r)

    @staticmethod
    def _b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    def put(self, key: str, value: str) -> None:
        self._api("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def get(self, key: str) -> Optional[str]:
        kvs = self._api("/v3/kv/range", {"key": self._b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def lease_of(self, key: str) -> int:
        kvs = self._api("/v3/kv/range", {"key": self._b64(key)}).get("kvs", [])
        return int(kvs[0].get("lease", 0)) if kvs else 0

    def keys(self, prefix: str) -> List[str]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"key": self._b64(prefix), "range_end": self._b64(end), "keys_only": True}
        kvs = self._api("/v3/kv/range", body).get("kvs", [])
        return sorted(base64.b64decode(kv["key"]).decode() for kv in kvs)

    def delete(self, key: str) -> None:
        self._api("/v3/kv/deleterange", {"key": self._b64(key)})

    def revoke(self, lease: int) -> None:
        self._api("/v3/lease/revoke", {"ID": lease})

    def put_instance(self, prefix: str, addr: str, metadata: object = None) -> None:
        """A record in the format of etcd's Go naming/endpoints."""
        self.put(f"{prefix}/{addr}", json.dumps({"Op": 0, "Addr": addr, "Metadata": metadata}))


@pytest.fixture(scope="session")
def etcd() -> Iterator[Etcd]:
    server = Etcd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """Test certificates made now by scripts/test-certs.sh: ca.pem, server.pem/.key (localhost,
    127.0.0.1), client.pem/.key, other-ca.pem."""
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(REPO / "scripts" / "test-certs.sh"), str(out)], check=True)
    return out


@pytest.fixture
def prefix() -> str:
    """An etcd prefix of this test's own."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def servers() -> Iterator[Callable[..., TestServer]]:
    """Starts gf-testservers: ``servers(name, *flags, listen="127.0.0.1:0")``; all are killed
    when the test ends."""
    started: List[TestServer] = []

    def start(name: str, *args: str, listen: str = "127.0.0.1:0") -> TestServer:
        s = TestServer(name, [str(a) for a in args], listen)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@pytest.fixture
def server(servers) -> TestServer:
    """One plain gf-testserver named "a"."""
    return servers("a")
