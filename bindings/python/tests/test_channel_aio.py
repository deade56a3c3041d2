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
