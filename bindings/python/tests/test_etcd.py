"""etcd discovery, weights, failover and registration, against a real etcd."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import FAST_BACKOFF, REFERENCE_CONFIG, eventually, free_port
from grpc_failover import Client, RpcError, StatusCode, register


def whoami(c: Client, method: str = "/UserService/Whoami") -> str:
    return c.invoke(method, timeout=2).decode()


def spread(c: Client, n: int) -> collections.Counter:
    return collections.Counter(whoami(c) for _ in range(n))


def etcd_client(etcd, prefix, **kwargs) -> Client:
    return Client(f"etcd:///{prefix}", etcd=[etcd.endpoint], connect_backoff=FAST_BACKOFF, **kwargs)


def registered(servers, etcd, prefix, name, *flags):
    return servers(name, "--etcd", etcd.endpoint, "--prefix", prefix, *flags)


def test_discovery_follows_etcd(etcd, prefix, servers):
    a, b, c = (registered(servers, etcd, prefix, n, "--ttl", "2") for n in "abc")
    # A neighbour prefix that starts with the same characters is not part of the service.
    other = servers("other")
    etcd.put_instance(prefix + "2", other.addr, {"weight": 1})
    with etcd_client(etcd, prefix, service_config=REFERENCE_CONFIG) as client:
        assert eventually(lambda: set(spread(client, 6)) == {"a", "b", "c"})
        d = servers("d")
        etcd.put_instance(prefix, d.addr, "metadata can be a string")
        assert eventually(lambda: "d" in spread(client, 8))
        a.terminate()  # deregisters on SIGTERM
        assert eventually(lambda: etcd.get(f"{prefix}/{a.addr}") is None)
        assert eventually(lambda: set(spread(client, 9)) == {"b", "c", "d"})
        etcd.delete(f"{prefix}/{d.addr}")
        assert eventually(lambda: set(spread(client, 8)) == {"b", "c"})
        stats = client.stats()
        assert stats["resolved"] and stats["resolver_error"] is None
        assert sorted(i["address"] for i in stats["instances"]) == sorted([b.addr, c.addr])


def test_weighted_round_robin(etcd, prefix, servers):
    light, heavy = servers("light"), servers("heavy")
    with register(prefix, light.addr, {"weight": 1}, ttl=5, etcd=[etcd.endpoint]), register(
        prefix, heavy.addr, {"weight": 3}, ttl=5, etcd=[etcd.endpoint]
    ):
        config = {"loadBalancingConfig": [{"weighted_round_robin": {}}]}
        with etcd_client(etcd, prefix, service_config=config) as c:
            assert eventually(lambda: set(spread(c, 8)) == {"light", "heavy"})
            counts = spread(c, 400)
            assert 2.0 <= counts["heavy"] / counts["light"] <= 4.5, counts
            weights = {i["address"]: i["weight"] for i in c.stats()["instances"]}
            assert weights == {light.addr: 1, heavy.addr: 3}
            # Weight 0 drains an instance: no new calls while another one can take them.
            etcd.put_instance(prefix, heavy.addr, {"weight": 0})
            assert eventually(lambda: spread(c, 20) == {"light": 20})


def failover_clients(etcd, prefix, servers):
    # A small delay keeps calls in flight on every instance when one is killed.
    names = ["a", "b", "c"]
    procs = {n: registered(servers, etcd, prefix, n, "--ttl", "2", "--delay-ms", "20") for n in names}
    client = etcd_client(etcd, prefix, service_config=REFERENCE_CONFIG)
    assert eventually(lambda: set(spread(client, 9)) == set(names))
    return client, procs


def test_failover_hides_a_killed_instance(etcd, prefix, servers):
    # The reference service config makes one dead instance out of three invisible: calls that
    # reach it are retried on another one, until etcd's lease expiry removes it.
    client, procs = failover_clients(etcd, prefix, servers)
    with client:
        errors, answers = [], collections.Counter()
        stop = time.monotonic() + 3.5

        def caller():
            while time.monotonic() < stop:
                try:
                    answers[whoami(client)] += 1
                except RpcError as e:
                    errors.append(e)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        procs["b"].kill()  # SIGKILL: no deregistration, the lease expires after 2 s
        killed_at = time.monotonic()
        for t in threads:
            t.join()
        assert errors == []
        assert answers["a"] and answers["c"] and sum(answers.values()) > 100
        # By now the lease has expired and the resolver dropped the instance.
        assert time.monotonic() - killed_at > 2.5
        assert eventually(lambda: len(client.stats()["instances"]) == 2, timeout=5)


def test_failover_hides_a_killed_instance_async(etcd, prefix, servers):
    client, procs = failover_clients(etcd, prefix, servers)

    async def main():
        errors, answers = [], collections.Counter()
        stop = time.monotonic() + 2.0

        async def caller():
            while time.monotonic() < stop:
                try:
                    answers[(await client.invoke_async("/UserService/Whoami", timeout=2)).decode()] += 1
                except RpcError as e:
                    errors.append(e)

        tasks = [asyncio.ensure_future(caller()) for _ in range(30)]
        await asyncio.sleep(0.5)
        procs["c"].kill()
        await asyncio.gather(*tasks)
        return errors, answers

    with client:
        errors, answers = asyncio.run(main())
        # About ten calls were in flight on the killed instance: they were retried elsewhere.
        retries = client.stats()["retries"]
    assert errors == []
    assert answers["a"] and answers["b"]
    assert retries > 0


def test_registration_lifecycle(etcd, prefix, server):
    with register(prefix, server.addr, {"weight": 10}, ttl=3, etcd=[etcd.endpoint]) as reg:
        assert reg.key == f"{prefix}/{server.addr}" and reg.ttl == 3 and not reg.closed
        record = json.loads(etcd.get(reg.key))
        assert record == {"Op": 0, "Addr": server.addr, "Metadata": {"weight": 10}}
        assert etcd.lease_of(reg.key) != 0
        with etcd_client(etcd, prefix) as c:
            assert eventually(lambda: whoami(c) == "a")
            assert c.stats()["instances"][0]["weight"] == 10
    assert reg.closed
    assert etcd.get(reg.key) is None
    reg.close()  # twice is fine


def test_registration_finalizer(etcd, prefix, server):
    reg = register(prefix, server.addr, ttl=30, etcd=etcd.endpoint)
    key = reg.key
    assert json.loads(etcd.get(key))["Metadata"] is None
    del reg
    assert etcd.get(key) is None


def test_lease_expires_when_the_process_dies(etcd, prefix, server):
    script = (
        "import sys, time, grpc_failover\n"
        f"r = grpc_failover.register({prefix!r}, {server.addr!r}, {{'weight': 2}}, ttl=2, etcd=[{etcd.endpoint!r}])\n"
        "print('registered', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "registered"
        key = f"{prefix}/{server.addr}"
        assert etcd.get(key) is not None
        time.sleep(2.5)  # keepalives hold the lease past its TTL
        assert etcd.get(key) is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        assert etcd.get(key) is not None  # nobody deregistered it
        assert eventually(lambda: etcd.get(key) is None, timeout=6)
        assert time.monotonic() - killed < 5
    finally:
        proc.kill()
        proc.wait()


def test_lost_lease_is_granted_again(etcd, prefix, server):
    with register(prefix, server.addr, {"weight": 1}, ttl=2, etcd=[etcd.endpoint]) as reg:
        lease = etcd.lease_of(reg.key)
        etcd.revoke(lease)
        assert etcd.get(reg.key) is None
        assert eventually(lambda: etcd.get(reg.key) is not None, timeout=8)
        assert etcd.lease_of(reg.key) not in (0, lease)


def test_unreachable_etcd():
    dead = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(RpcError) as info:
        register("svc", "127.0.0.1:1", ttl=5, etcd=[dead], etcd_dial_timeout=0.3)
    assert info.value.code is StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 5
    with Client("etcd:///svc", etcd=[dead], etcd_dial_timeout=0.3) as c:
        with pytest.raises(RpcError) as info:
            c.invoke("/UserService/Whoami", timeout=1)
        assert info.value.code in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)
        assert eventually(lambda: c.stats()["resolver_error"], timeout=5)
