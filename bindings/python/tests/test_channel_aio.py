"""grpc_failover.aio.Channel through generated stubs, in asyncio."""

from __future__ import annotations

import asyncio

import pytest

from conftest import FAST_BACKOFF
from test_channel import ECHO_CONFIG, stubs  # noqa: F401  (the session fixture)

grpc = pytest.importorskip("grpc")
import grpc_failover.aio  # noqa: E402


def test_await_stub_and_call(servers, stubs):  # noqa: F811
    pb, pbg, _ = stubs
    ok = servers("ok")

    async def main():
        async with grpc_failover.aio.Channel(ok.addr) as ch:
            assert isinstance(ch, grpc.aio.Channel)
            stub = pbg.EchoerStub(ch)
            assert (await stub.Echo(pb.EchoRequest(text="a"), timeout=5)).text == "a"
            call = stub.Echo(pb.EchoRequest(number=7), timeout=5, metadata=(("x-echo-k", "v"),))
            assert (await call).number == 7
            assert await call.code() is grpc.StatusCode.OK
            assert (await call.trailing_metadata()).get("x-echo-k") == "v"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Missing(pb.EchoRequest(), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.RpcError) as info:
                stub.ServerStream(pb.EchoRequest())
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(main())


def test_failover_asyncio(servers, stubs):  # noqa: F811
    pb, pbg, _ = stubs
    s = [servers(n) for n in "abc"]
    target = "static:///" + ",".join(x.addr for x in s)

    async def main():
        async with grpc_failover.aio.Channel(target, service_config=ECHO_CONFIG, connect_backoff=FAST_BACKOFF) as ch:
            stub = pbg.EchoerStub(ch)
            errors = 0
            for round_ in range(6):
                if round_ == 2:
                    s[1].kill()
                results = await asyncio.gather(
                    *(stub.Echo(pb.EchoRequest(number=i), timeout=5) for i in range(100)), return_exceptions=True
                )
                errors += sum(1 for r in results if isinstance(r, BaseException))
            return errors

    assert asyncio.run(main()) == 0


def test_cancel_unawaited_and_lazy_metadata(servers, stubs):  # noqa: F811
    from grpc_failover import _client
    from test_async import in_flight

    pb, pbg, _ = stubs
    slow = servers("stall", "--delay-ms", "600000")  # answers only when cancelled
    ok = servers("ok")

    async def main():
        async with grpc_failover.aio.Channel(slow.addr) as slow_ch, grpc_failover.aio.Channel(ok.addr) as ok_ch:
            slow_stub, ok_stub = pbg.EchoerStub(slow_ch), pbg.EchoerStub(ok_ch)
            # call.cancel(): the library's call ends too, and awaiting raises CancelledError.
            call = slow_stub.Echo(pb.EchoRequest(text="c"))
            await asyncio.sleep(0.2)
            assert in_flight(slow_ch.client) == 1 and not call.done()
            assert call.cancel() and call.cancelled() and not call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await call.code() is grpc.StatusCode.CANCELLED
            # Cancelling the task that awaits the call cancels the call.
            task = asyncio.ensure_future(_await(slow_stub.Echo(pb.EchoRequest(text="t"))))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await _eventually(lambda: in_flight(slow_ch.client) == 0)
            # A call started and never awaited still runs to the end (as with grpc.aio), and
            # its result is freed when nobody holds it.
            before = ok_ch.client.stats()["calls"]
            ok_stub.Echo(pb.EchoRequest(text="fire and forget"))
            assert await _eventually(lambda: ok_ch.client.stats()["calls"] == before + 1 and not _client._pending)
            # Metadata read after the response, from the kept result; done callbacks run.
            seen = []
            call = ok_stub.Echo(pb.EchoRequest(text="m"), metadata=(("x-echo-a", "1"), ("x-echo-b-bin", b"\0\1")))
            call.add_done_callback(seen.append)
            assert (await call).text == "m"
            trailers = await call.trailing_metadata()
            assert trailers.get("x-echo-a") == "1" and trailers.get("x-echo-b-bin") == b"\0\1"
            assert (await call.initial_metadata()).get("date")
            assert await call.details() == ""
            await asyncio.sleep(0)
            assert seen == [call]
            # A failed call: code, details and trailers from the error.
            failing = ok_stub.Missing(pb.EchoRequest(), metadata=(("x-echo-z", "9"),))
            assert await failing.code() is grpc.StatusCode.UNIMPLEMENTED
            assert (await failing.trailing_metadata()).get("x-echo-z") == "9"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await failing
            assert info.value.trailing_metadata().get("x-echo-z") == "9"
            # A request the serializer rejects fails at await, not at the stub call.
            bad = ok_stub.Echo(object())
            with pytest.raises(Exception):
                await bad

    asyncio.run(main())
    assert not _client._pending


async def _await(call):
    return await call


async def _eventually(cond, timeout=3.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
