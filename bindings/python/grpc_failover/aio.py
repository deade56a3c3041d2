"""A ``grpc.aio.Channel`` over the Client, for asyncio stubs: ``await stub.Echo(request)``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

from ._channel import (
    ChannelRpcError,
    _check_credentials,
    _converted,
    _deserialize,
    _serialize,
    _target,
    _timeout,
    client_kwargs,
    connectivity,
    grpc,
    unimplemented,
)
from ._client import _KEEP, Client, KeptResult, cancel_async
from ._ffi import fast
from ._status import Metadata, RpcError, StatusCode

if grpc is not None:
    from grpc import aio as _aio

    _ERROR_BASES: tuple = (ChannelRpcError, _aio.AioRpcError)
    _CALL_BASES: tuple = (_aio.UnaryUnaryCall,)
    _UU_BASES: tuple = (_aio.UnaryUnaryMultiCallable,)
    _STREAM_BASES: tuple = (_aio.UnaryStreamMultiCallable, _aio.StreamUnaryMultiCallable, _aio.StreamStreamMultiCallable)
    _CHANNEL_BASES: tuple = (_aio.Channel,)

    def _metadata(pairs: Metadata) -> Any:
        return _aio.Metadata(*pairs)

else:
    _ERROR_BASES = (ChannelRpcError,)
    _CALL_BASES = _UU_BASES = _STREAM_BASES = _CHANNEL_BASES = (object,)

    def _metadata(pairs: Metadata) -> Any:
        return pairs


class AioRpcError(*_ERROR_BASES):  # type: ignore[misc]
    """A :class:`ChannelRpcError` that is also a ``grpc.aio.AioRpcError`` when grpcio is
    importable. Its metadata methods return ``grpc.aio.Metadata``, as grpc.aio's do."""

    def initial_metadata(self) -> Any:
        return _metadata(self.headers)

    def trailing_metadata(self) -> Any:
        return _metadata(self.trailers)


class UnaryUnaryCall(*_CALL_BASES):  # type: ignore[misc]
    """A call in flight, started when the stub's method is called: ``await call`` for the
    response; ``await call.code()``, ``initial_metadata()``, ``trailing_metadata()``.

    The call starts in the library at once (no asyncio Task per call) and its outcome arrives
    in a future of the running loop. The response headers and trailers stay in the library's
    result until asked for."""

    def __init__(self, client: Client, method: str, request: Any, serializer: Any, deserializer: Any,
                 timeout: Any, metadata: Any, wait_for_ready: Any, compression: Any = None):
        self._deadline: Optional[float] = None
        self._deserializer = deserializer
        # Failures are kept, not raised: a call nobody awaits must not log "exception never
        # retrieved"; as grpc.aio does, a bad request or argument surfaces at ``await``.
        self._error: Optional[BaseException] = None
        self._response: Any = None
        self._kept: Optional[KeptResult] = None
        self._resolved = False
        self._call: Optional[int] = None
        self._key = 0
        try:
            req = _serialize(serializer, request, AioRpcError)
            if timeout is not None:
                self._deadline = time.monotonic() + timeout
            self._key, self._call, self._future = client._start_async(
                method, req, _timeout(timeout, AioRpcError), metadata, wait_for_ready, _KEEP, compression
            )
        except Exception as e:
            self._future = asyncio.get_running_loop().create_future()
            self._future.set_result(None)
            self._error = _converted(e, AioRpcError) if isinstance(e, RpcError) else e
            self._resolved = True

    def _resolve(self) -> None:
        # Once, after the future is done: the response or the error, from the kept result.
        if self._resolved:
            return
        self._resolved = True
        self._release()
        future = self._future
        if future.cancelled():
            return
        try:
            kept = future.result()
        except BaseException as e:  # reading the result failed (out of memory): kept as the error
            self._error = e
            return
        self._kept = kept
        if kept.code != 0:
            self._error = AioRpcError(StatusCode.from_number(kept.code), kept.message, kept.trailers())
            return
        try:
            self._response = _deserialize(self._deserializer, kept.data, AioRpcError)
        except Exception as e:
            self._error = e

    def _release(self) -> None:
        call, self._call = self._call, None
        if call:
            fast.gf_call_free(call)

    def __await__(self) -> Any:
        future = self._future
        if not future.done():
            try:
                yield from future.__await__()
            except BaseException:
                # The awaiting task was cancelled (which cancels the future): cancel the call.
                self._cancel_native()
                raise
        self._resolve()
        if future.cancelled():
            raise asyncio.CancelledError()
        if self._error is not None:
            raise self._error
        return self._response

    async def _finished(self) -> Optional[BaseException]:
        if not self._future.done():
            await asyncio.wait([self._future])
        self._resolve()
        if self._future.cancelled():
            return AioRpcError(StatusCode.CANCELLED, "Locally cancelled by application!")
        return self._error

    async def code(self) -> Any:
        e = await self._finished()
        if e is None:
            return StatusCode.OK()
        return e.code() if isinstance(e, ChannelRpcError) else StatusCode.UNKNOWN()

    async def details(self) -> str:
        e = await self._finished()
        return "" if e is None else str(e.details if isinstance(e, ChannelRpcError) else e)

    async def initial_metadata(self) -> Any:
        await self._finished()
        return _metadata(self._kept.headers() if self._kept is not None else ())

    async def trailing_metadata(self) -> Any:
        await self._finished()
        return _metadata(self._kept.trailers() if self._kept is not None else ())

    async def wait_for_connection(self) -> None:
        e = await self._finished()
        if e is not None:
            raise e

    def cancel(self) -> bool:
        """Cancels the call (in the library too); False when it had ended already."""
        if self._future.done():
            return False
        self._cancel_native()
        self._future.cancel()
        return True

    def _cancel_native(self) -> None:
        if self._call:
            cancel_async(self._key, self._call)
        self._release()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def done(self) -> bool:
        return self._future.done()

    def time_remaining(self) -> Optional[float]:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._future.add_done_callback(lambda _: callback(self))

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:  # the interpreter is shutting down and the module is gone
            pass


class _UnaryUnary(*_UU_BASES):  # type: ignore[misc]
    def __init__(self, client: Client, method: str, serializer: Any, deserializer: Any):
        self._client = client
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(self, request, *, timeout=None, metadata=None, credentials=None, wait_for_ready=None, compression=None):  # type: ignore[no-untyped-def]
        _check_credentials(credentials)
        return UnaryUnaryCall(
            self._client, self._method, request, self._serializer, self._deserializer, timeout, metadata,
            wait_for_ready, compression,
        )


class _Streaming(*_STREAM_BASES):  # type: ignore[misc]
    def __init__(self, kind: str, method: str):
        self._kind = kind
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise unimplemented(self._kind, self._method, AioRpcError)


class Channel(*_CHANNEL_BASES):  # type: ignore[misc]
    """A ``grpc.aio.Channel`` over a :class:`Client`; arguments as for
    :class:`grpc_failover.Channel`. Usable from any number of event loops."""

    def __init__(self, target: str, options: Any = None, **kwargs: Any):
        self._client = Client(_target(target), **client_kwargs(options, kwargs))

    @property
    def client(self) -> Client:
        return self._client

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):  # type: ignore[no-untyped-def]
        return _UnaryUnary(self._client, method, request_serializer, response_deserializer)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):  # type: ignore[no-untyped-def]
        return _Streaming("unary-stream", method)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):  # type: ignore[no-untyped-def]
        return _Streaming("stream-unary", method)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):  # type: ignore[no-untyped-def]
        return _Streaming("stream-stream", method)

    def get_state(self, try_to_connect: bool = False) -> Any:
        return connectivity(self._client)

    async def wait_for_state_change(self, last_observed_state: Any) -> None:
        while connectivity(self._client) == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        """Returns once an instance is READY (connections start with the first call)."""
        ready = grpc.ChannelConnectivity.READY if grpc is not None else "READY"
        while connectivity(self._client) != ready:
            await asyncio.sleep(0.05)

    async def close(self, grace: Optional[float] = None) -> None:
        """Closes the client at once (``grace`` is not waited for): calls end with CANCELLED."""
        self._client.close()

    async def __aenter__(self) -> "Channel":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<grpc_failover.aio.Channel {self._client.target!r}>"
