"""asyncio calls: many at once, errors, deadlines, cancellation, several event loops."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import eventually
from grpc_failover import Client, Response, RpcError, StatusCode
from grpc_failover import _client


def in_flight(c: Client) -> int:
    return sum(i["in_flight"] for i in c.stats()["instances"])


def test_a_thousand_concurrent_calls(server):
    async def main(c):
        payloads = [b"call-%d" % i for i in range(1000)]
        replies = await asyncio.gather(*(c.invoke_async("/test.Svc/Echo", p, timeout=20) for p in payloads))
        assert replies == payloads

    with Client(f"static:///{server.addr}") as c:
        asyncio.run(main(c))
        assert c.stats()["calls"] == 1000
    assert not _client._pending


def test_async_errors_and_metadata(servers):
    ok = servers("ok")
    failing = servers("failing", "--fail-rate", "1", "--fail-code", "7")

    async def main():
        with Client(f"static:///{ok.addr}") as c:
            assert await c.invoke_async("/test.Svc/Whoami") == b"ok"
            r = await c.invoke_full_async("/test.Svc/Echo", b"z", metadata=[("x-echo-k", "v")], timeout=5)
            assert isinstance(r, Response) and r.data == b"z" and ("x-echo-k", "v") in r.trailers
            with pytest.raises(RpcError) as info:
                await c.invoke_async("/test.Svc/Missing", timeout=5)
            assert info.value.code is StatusCode.UNIMPLEMENTED
        with Client(f"static:///{failing.addr}") as c:
            with pytest.raises(RpcError) as info:
                await c.invoke_async("/test.Svc/Echo", timeout=5)
            assert info.value.code is StatusCode.PERMISSION_DENIED

    asyncio.run(main())


def test_async_timeout(servers):
    slow = servers("slow", "--delay-ms", "2000")

    async def main():
        with Client(f"static:///{slow.addr}") as c:
            start = time.monotonic()
            with pytest.raises(RpcError) as info:
                await c.invoke_async("/test.Svc/Echo", timeout=0.2)
            assert info.value.code is StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 1.5

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_call(servers):
    slow = servers("slow", "--delay-ms", "3000")

    async def main(c):
        task = asyncio.ensure_future(c.invoke_async("/test.Svc/Echo", b"x"))
        await asyncio.sleep(0.2)
        assert in_flight(c) == 1
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 0.5
        # asyncio.wait_for cancels on its timeout the same way.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.invoke_async("/test.Svc/Echo", b"y"), 0.2)

    with Client(f"static:///{slow.addr}") as c:
        asyncio.run(main(c))
        # The library ended both calls well before the server would have answered.
        assert eventually(lambda: in_flight(c) == 0, timeout=1.5)
    assert eventually(lambda: not _client._pending, timeout=2)


def test_cancelled_calls_count_as_failed(servers):
    slow = servers("slow", "--delay-ms", "3000")

    async def main(c):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.invoke_async("/test.Svc/Echo"), 0.2)

    with Client(f"static:///{slow.addr}") as c:
        asyncio.run(main(c))
        assert eventually(lambda: in_flight(c) == 0, timeout=1.5)
        stats = c.stats()
    assert stats["calls"] == 1
    assert stats["calls_failed"] == 1


def test_close_cancels_calls_in_flight(servers):
    slow = servers("slow", "--delay-ms", "3000")

    async def main():
        c = Client(f"static:///{slow.addr}")
        tasks = [asyncio.ensure_future(c.invoke_async("/test.Svc/Echo", timeout=10)) for _ in range(10)]
        await asyncio.sleep(0.2)
        c.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
        assert all(isinstance(r, RpcError) and r.code is StatusCode.CANCELLED for r in results), results

    asyncio.run(main())


def test_unawaited_calls_at_loop_end(servers):
    # asyncio.run() cancels the tasks still running when main() returns; their calls are
    # cancelled in the library and nothing is left behind.
    slow = servers("slow", "--delay-ms", "3000")

    async def main(c):
        for _ in range(5):
            asyncio.ensure_future(c.invoke_async("/test.Svc/Echo"))
        await asyncio.sleep(0.1)

    with Client(f"static:///{slow.addr}") as c:
        asyncio.run(main(c))
        assert eventually(lambda: in_flight(c) == 0, timeout=1.5)
    assert eventually(lambda: not _client._pending, timeout=2)


def test_event_loops_in_several_threads(server):
    errors = []

    def run(n):
        async def main():
            replies = await asyncio.gather(*(c.invoke_async("/test.Svc/Echo", b"%d-%d" % (n, i)) for i in range(200)))
            assert replies == [b"%d-%d" % (n, i) for i in range(200)]

        try:
            asyncio.run(main())
        except Exception as e:  # reported below
            errors.append(e)

    with Client(f"static:///{server.addr}") as c:
        threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


def test_sync_and_async_on_one_client(server):
    with Client(f"static:///{server.addr}") as c:

        async def main():
            loop = asyncio.get_running_loop()
            sync = loop.run_in_executor(None, c.invoke, "/test.Svc/Echo", b"s")
            return await asyncio.gather(sync, c.invoke_async("/test.Svc/Echo", b"a"))

        assert asyncio.run(main()) == [b"s", b"a"]


def test_results_come_through_the_completion_queue(server):
    # The loop watches the queue's descriptor: no Python runs on a library thread.
    async def main(c):
        assert await c.invoke_async("/test.Svc/Echo", b"q") == b"q"
        completions = _client._completions_for(asyncio.get_running_loop())
        assert completions.queue is not None and completions.fd >= 0
        assert not completions.items

    with Client(f"static:///{server.addr}") as c:
        asyncio.run(main(c))


class _NoReaderLoop(asyncio.SelectorEventLoop):
    def add_reader(self, fd, callback, *args):
        raise NotImplementedError


def test_loops_that_cannot_watch_a_descriptor_get_callbacks(servers):
    # Without add_reader (as on Windows' proactor loop), results come through library-thread
    # callbacks instead: the same outcomes, cancellation included.
    ok = servers("ok")
    slow = servers("slow", "--delay-ms", "3000")

    async def main():
        assert _client._completions_for(asyncio.get_running_loop()).queue is None
        with Client(f"static:///{ok.addr}") as c:
            payloads = [b"cb-%d" % i for i in range(200)]
            assert await asyncio.gather(*(c.invoke_async("/test.Svc/Echo", p, timeout=20) for p in payloads)) == payloads
            r = await c.invoke_full_async("/test.Svc/Echo", b"z", metadata=[("x-echo-k", "v")], timeout=5)
            assert r.data == b"z" and ("x-echo-k", "v") in r.trailers
        with Client(f"static:///{slow.addr}") as c:
            task = asyncio.ensure_future(c.invoke_async("/test.Svc/Echo", timeout=10))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    loop = _NoReaderLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert eventually(lambda: not _client._pending, timeout=2)
