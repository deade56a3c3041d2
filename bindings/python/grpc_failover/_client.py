"""The Client: blocking and asyncio calls on one target."""

from __future__ import annotations

import asyncio
import atexit
import collections
import ctypes
import itertools
import json
import threading
import time
import traceback
import weakref
from ctypes import byref, c_size_t, c_void_p, string_at
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

from . import _args, _log
from ._args import MetadataArg
from ._ffi import RESULT_CALLBACK, Completion, fast, lib, take_string
from ._status import FailedPreconditionError, Metadata, RpcError, StatusCode, rejected


class Response(NamedTuple):
    """A successful call's response bytes with its response headers and trailers.

    Metadata values of keys ending in "-bin" are bytes, the others str.
    """

    data: bytes
    headers: Metadata
    trailers: Metadata


# What a finished call hands back: (code, message, response, headers, trailers).
_Outcome = Tuple[int, str, bytes, Metadata, Metadata]


def _read_pairs(result: int, count: Callable[..., int], entry: Callable[..., int]) -> Metadata:
    n = count(result)
    if not n:
        return ()
    key, value, length = c_void_p(), c_void_p(), c_size_t()
    out: List[Tuple[str, Union[str, bytes]]] = []
    for i in range(n):
        if entry(result, i, byref(key), byref(value), byref(length)) != 0 or not key.value:
            break
        k = string_at(key.value).decode("ascii", "replace")
        v = string_at(value.value, length.value) if value.value else b""
        out.append((k, v if k.endswith("-bin") else v.decode("latin-1")))
    return tuple(out)


def _read_result(result: int, full: bool) -> _Outcome:
    """Copies what the caller needs out of a gf_result (which the caller then frees)."""
    code = fast.gf_result_code(result)
    if code == 0:
        length = c_size_t()
        data_ptr = fast.gf_result_response(result, byref(length))
        data = string_at(data_ptr, length.value) if data_ptr else b""
        message = ""
    else:
        data = b""
        message = string_at(fast.gf_result_message(result)).decode("utf-8", "replace")
    headers: Metadata = ()
    trailers: Metadata = ()
    if full:
        headers = _read_pairs(result, fast.gf_result_header_count, fast.gf_result_header)
    if full or code != 0:
        trailers = _read_pairs(result, fast.gf_result_trailer_count, fast.gf_result_trailer)
    return code, message, data, headers, trailers


class KeptResult:
    """A finished call's gf_result, kept: the code, message and response bytes read at once,
    the headers and trailers only when asked for. Frees the result when collected. For
    callers that rarely read the metadata (grpc.aio stubs), so that most calls never pay for
    copying it."""

    __slots__ = ("code", "message", "data", "_result", "_headers", "_trailers")

    def __init__(self, result: int):
        self._result: Optional[int] = None  # set once read: if reading fails, _settle frees it
        self.code, self.message, self.data, _, _ = _read_result(result, False)
        self._result = result
        self._headers: Optional[Metadata] = None
        self._trailers: Optional[Metadata] = None

    def headers(self) -> Metadata:
        if self._headers is None:
            self._headers = _read_pairs(self._result, fast.gf_result_header_count, fast.gf_result_header)
        return self._headers

    def trailers(self) -> Metadata:
        if self._trailers is None:
            self._trailers = _read_pairs(self._result, fast.gf_result_trailer_count, fast.gf_result_trailer)
        return self._trailers

    def __del__(self) -> None:
        result, self._result = self._result, None
        if result:
            try:
                fast.gf_result_free(result)
            except Exception:  # the interpreter is shutting down and the module is gone
                pass


# How a finished async call hands its result to its future.
_BYTES, _FULL, _KEEP = 0, 1, 2


def _finish(outcome: _Outcome, full: bool) -> Union[bytes, Response]:
    code, message, data, headers, trailers = outcome
    if code != 0:
        raise RpcError(StatusCode.from_number(code), message, trailers)
    return Response(data, headers, trailers) if full else data


def _rejected(code: int, error: Optional[int]) -> Exception:
    """The exception for a request the library refused (bad argument, closed client): an
    RpcError, also a ValueError for INVALID_ARGUMENT and FAILED_PRECONDITION."""
    return rejected(code, take_string(error) or f"rejected with status {code}")


def _call_options(timeout: Any, metadata: MetadataArg, wait_for_ready: Any, compression: Any = None) -> Optional[int]:
    """A gf_call_options for these arguments, or None when the defaults do. The caller frees it."""
    ms = _args.timeout_ms(timeout)
    pairs = _args.metadata(metadata)
    wfr = _args.wait_for_ready(wait_for_ready)
    comp = _args.compression(compression)
    if not ms and not pairs and wfr is None and comp is None:
        return None
    options: int = fast.gf_call_options_new()
    try:
        if ms:
            fast.gf_call_options_set_timeout_ms(options, ms)
        if wfr is not None:
            fast.gf_call_options_set_wait_for_ready(options, wfr)
        if comp is not None:
            error = c_void_p()
            code = fast.gf_call_options_set_compression(options, comp, byref(error))
            if code != 0:
                raise _rejected(code, error.value)
        for key, value in pairs:
            error = c_void_p()
            code = fast.gf_call_options_add_metadata(options, key, value, len(value), byref(error))
            if code != 0:
                raise _rejected(code, error.value)
    except BaseException:
        fast.gf_call_options_free(options)
        raise
    return options


class _Native:
    """The gf_client pointer.

    close() shuts the client down with gf_client_shutdown: safe while other threads are inside
    the library with the pointer, and the pointer stays valid. It is freed (gf_close) only when
    this object is collected, when no call can be using it any more: every call holds a
    reference to it for as long as it is in the library. So no lock is needed around calls.
    """

    __slots__ = ("ptr", "closed", "__weakref__")

    def __init__(self, ptr: int):
        self.ptr: Optional[int] = ptr
        self.closed = False
        _open.add(self)

    def close(self) -> None:
        # Several threads may get here at once: both steps are idempotent.
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        fast.gf_client_shutdown(self.ptr)

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            try:
                fast.gf_close(ptr)
            except Exception:  # the interpreter is shutting down and the module is gone
                pass


# Every native client not closed yet, so that the interpreter's exit can close them first.
_open: Set[_Native] = set()


class _Completions:
    """Finished async calls of one event loop.

    Normally through a completion queue of the library (``gf_queue``): the loop waits on its
    descriptor with ``add_reader`` and takes the results itself, so no Python code runs on a
    library thread and no library thread waits for the GIL. Calls that end together cost one
    wake-up.

    Where the loop cannot watch a descriptor (``add_reader`` unsupported), through a callback on
    a library thread instead: it only appends the result and wakes the loop when no wake-up is
    pending yet; the loop then reads and frees the results.
    """

    __slots__ = ("loop", "items", "scheduled", "queue", "fd", "batch", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        # A weak reference: this object is the value of a WeakKeyDictionary keyed by the loop.
        self.loop = weakref.ref(loop)
        self.items: "collections.deque[Tuple[_Entry, int]]" = collections.deque()
        self.scheduled = False
        self.queue: Optional[int] = None
        self.fd = -1
        self.batch = (Completion * 64)()
        queue = c_void_p()
        if fast.gf_queue_new(byref(queue), None) != 0 or not queue.value:
            return  # out of descriptors: the callback path still works
        fd = fast.gf_queue_fd(queue.value)
        try:
            loop.add_reader(fd, self.take)
        except (NotImplementedError, RuntimeError, ValueError, OSError):
            fast.gf_queue_free(queue.value)
            return
        self.queue, self.fd = queue.value, fd

    def take(self) -> None:
        # On the loop's thread, when the queue's descriptor is readable.
        queue, batch = self.queue, self.batch
        while True:
            n = fast.gf_queue_poll(queue, batch, 64)
            for i in range(n):
                done = batch[i]
                entry = _pending.pop(done.tag, None)
                if entry is None:
                    fast.gf_result_free(done.result)  # nobody waits (the call was cancelled)
                else:
                    _settle(entry[1], entry[2], done.result)
            if n < 64:
                return

    def push(self, entry: "_Entry", result: int) -> None:
        # On a library thread.
        self.items.append((entry, result))
        if self.scheduled:
            return
        self.scheduled = True
        try:
            loop = self.loop()
            if loop is None:
                raise RuntimeError("event loop is gone")
            loop.call_soon_threadsafe(self.drain)
        except RuntimeError:
            # The loop is closed: nobody waits for these calls any more.
            self.scheduled = False
            self.discard()

    def drain(self) -> None:
        # On the loop's thread.
        self.scheduled = False
        items = self.items
        while items:
            (_, future, mode), result = items.popleft()
            _settle(future, mode, result)

    def discard(self) -> None:
        items = self.items
        while items:
            try:
                _, result = items.popleft()
            except IndexError:
                return
            fast.gf_result_free(result)

    def __del__(self) -> None:
        # A loop that stopped for good and was collected with results still queued. Its
        # selector went with it; the library drops the outcomes of calls still in flight.
        try:
            self.discard()
            if self.queue:
                fast.gf_queue_free(self.queue)
                self.queue = None
        except Exception:
            pass


def _settle(future: "asyncio.Future[Any]", mode: int, result: int) -> None:
    """On the loop's thread: completes a call's future from its result (an _Outcome, or for
    _KEEP a KeptResult that owns it), then frees the result unless it is kept."""
    try:
        if future.done():
            return  # cancelled meanwhile: nobody reads it
        try:
            if mode == _KEEP:
                kept = KeptResult(result)
                result = 0  # the KeptResult frees it
                future.set_result(kept)
                return
            outcome = _read_result(result, mode == _FULL)
        except BaseException as e:
            future.set_exception(e)
        else:
            future.set_result(outcome)
    finally:
        if result:
            fast.gf_result_free(result)


_completions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Completions]" = (
    weakref.WeakKeyDictionary()
)


def _completions_for(loop: asyncio.AbstractEventLoop) -> _Completions:
    queue = _completions.get(loop)
    if queue is None:
        queue = _completions.setdefault(loop, _Completions(loop))
    return queue


# An async call in flight: its loop's completions, its future, what to hand it (_BYTES, _FULL,
# _KEEP).
_Entry = Tuple[_Completions, "asyncio.Future[Any]", int]

# Async calls in flight by user_data id. The library only ever sees the integer id, never a
# pointer to a Python object.
_pending: Dict[int, _Entry] = {}
_ids = itertools.count(1)


# Library threads that keep a Python thread state between callbacks (see _on_result).
_pinned: Set[int] = set()
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_PyGILState_Ensure.argtypes = []
_PyGILState_Ensure.restype = ctypes.c_int


def _on_result(user_data: Optional[int], result: Optional[int]) -> None:
    # Runs on a library thread and returns into the library: nothing may escape.
    try:
        ident = threading.get_ident()
        if ident not in _pinned:
            # ctypes gives a foreign thread a new Python thread state for every callback and
            # deletes it afterwards (with its frame stack, mmap'ed and unmapped each time).
            # One extra, never released PyGILState_Ensure keeps this thread's state alive, as
            # cffi does for its callbacks; the library's threads live as long as the process.
            _pinned.add(ident)
            _PyGILState_Ensure()
        entry = _pending.pop(user_data or 0, None)
        if entry is None or not result:
            fast.gf_result_free(result)
            return
        entry[0].push(entry, result)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass


def cancel_async(key: int, call: int) -> None:
    """Cancels a call started by Client._start_async whose future nobody waits for any more:
    the outcome still arrives, with CANCELLED, and is freed unread (the loop that would take it
    from the queue may be closing)."""
    _pending.pop(key, None)
    fast.gf_call_cancel(call)


# Kept alive for the life of the module: the library calls it from its threads.
_ON_RESULT = RESULT_CALLBACK(_on_result)


def _at_exit() -> None:
    # Close what is still open, then give the cancelled calls' callbacks a moment to run while
    # the interpreter can still take them.
    for native in list(_open):
        native.close()
    # Only callback-path calls run Python on library threads; queued outcomes stay in C.
    deadline = time.monotonic() + 2.0
    while any(e[0].queue is None for e in list(_pending.values())) and time.monotonic() < deadline:
        time.sleep(0.005)


atexit.register(_at_exit)


class Client:
    """A gRPC client for one target, with discovery, load balancing, retries and hedging.

    ``target`` is ``"etcd:///<prefix>"`` (instances registered in etcd under ``<prefix>/``) or
    ``"static:///host:port,host:port"``. Keyword arguments become the library's options:

    - ``etcd``: etcd endpoints, a list of ``"host:port"`` or one comma-separated string
      (default ``["127.0.0.1:2379"]``);
      ``username``/``password`` to log in; ``etcd_dial_timeout`` in seconds; ``etcd_tls``: TLS
      to etcd, a dict like ``tls``.
    - ``tls``: TLS to every instance, a dict of the library's fields: ``ca_file``,
      ``cert_file`` and ``key_file`` (mTLS), ``server_name``, ``use_system_roots`` (paths may
      be str or ``pathlib.Path``); ``{}`` is TLS trusting the system's roots. The files are
      read here: a missing or invalid one raises :class:`InvalidArgumentError` naming it.
    - ``service_config``: a gRPC service config, as a dict or a JSON string (the format of
      grpc-go's ``WithDefaultServiceConfig``): load balancing policy, retry and hedging policies,
      timeouts, waitForReady.
    - ``connect_timeout`` (seconds), ``connect_backoff`` (a dict of ``base_delay``,
      ``max_delay`` in seconds, ``multiplier``, ``jitter``), ``max_attempts``,
      ``max_in_flight_per_instance``, ``keepalive_time`` and ``keepalive_timeout`` (seconds).
    - ``options``: a dict of raw options merged under the ones above, for options this class
      has no keyword for yet.

    Creating a client does not touch the network: an unreachable etcd or instance shows up in
    the calls' errors. A client is thread-safe: any number of threads and event loops may call
    it at once. Close it with :meth:`close` or a ``with`` block; a forgotten client is closed
    when it is garbage collected.
    """

    def __init__(
        self,
        target: str,
        *,
        etcd: Union[Sequence[str], str, None] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        etcd_dial_timeout: Optional[float] = None,
        etcd_tls: Optional[Dict[str, Any]] = None,
        tls: Optional[Dict[str, Any]] = None,
        service_config: Union[Dict[str, Any], str, None] = None,
        connect_timeout: Optional[float] = None,
        connect_backoff: Optional[Dict[str, float]] = None,
        max_attempts: Optional[int] = None,
        max_in_flight_per_instance: Optional[int] = None,
        keepalive_time: Optional[float] = None,
        keepalive_timeout: Optional[float] = None,
        options: Optional[Dict[str, Any]] = None,
    ):
        encoded_target = _args.text("target", target)
        options_json = _args.client_options(
            etcd=_args.etcd_options(etcd, username, password, etcd_dial_timeout, etcd_tls),
            tls=tls,
            service_config=service_config,
            connect_timeout=connect_timeout,
            connect_backoff=connect_backoff,
            max_attempts=max_attempts,
            max_in_flight_per_instance=max_in_flight_per_instance,
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            options=options,
        )
        _log.sync_level()
        handle, error = c_void_p(), c_void_p()
        code = lib.gf_connect(encoded_target, options_json, byref(handle), byref(error))
        if code != 0 or not handle.value:
            raise _rejected(code, error.value)
        self._target = target
        self._native = _Native(handle.value)
        self._finalizer = weakref.finalize(self, self._native.close)

    @property
    def target(self) -> str:
        """The target this client was created for."""
        return self._target

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._native.closed

    def close(self) -> None:
        """Closes the client: stops discovery, closes connections, and ends the calls in flight.

        Calls in flight, blocking or async, end with :class:`RpcError` ``CANCELLED``. Safe while
        other threads are calling on the client. Any call made after close() raises
        :class:`FailedPreconditionError` (a ValueError too). Closing twice is fine. The few
        bytes of the native handle are freed when the client object is collected.
        """
        self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<grpc_failover.Client {self._target!r} {state}>"

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the client's counters and instances (``gf_client_stats``) as a dict.

        Keys: target, calls, calls_failed, attempts, retries, transparent_retries, hedges,
        hedges_won, throttled_retries, retry_tokens, worker_threads, policy, resolved,
        resolver_error, connections, wrr (weighted round robin), etcd (etcd targets), and
        ``instances``, each with address, weight, metadata, state, healthy, ejected,
        ejections, unejections, health_changes, calls, failures, in_flight, last_error and
        more.
        """
        stats: Dict[str, Any] = json.loads(self._string_from(fast.gf_client_stats))
        return stats

    def _string_from(self, function: Callable[..., int]) -> str:
        """Calls ``function(client, &out, &error)`` (gf_client_stats, gf_client_metrics) and
        returns the string it wrote, freed."""
        native = self._native
        out, error = c_void_p(), c_void_p()
        if native.closed:
            raise FailedPreconditionError("Client is closed")
        code = function(native.ptr, byref(out), byref(error))
        if code != 0:
            raise _rejected(code, error.value)
        return take_string(out.value)

    def metrics(self) -> str:
        """The client's metrics in the Prometheus text format (``gf_client_metrics``): the gRFC
        A66 client metrics (``grpc_client_attempt_duration_seconds`` and the rest, labelled
        ``grpc_method``, ``grpc_target``, ``grpc_status``; a method not listed in the
        ``options={"metrics": {"methods": [...]}}`` is labelled ``other``) and the library's own
        ``grpc_failover_*`` counters and per-instance gauges. Serve it from a scrape endpoint,
        or parse it with ``prometheus_client.parser.text_string_to_metric_families``."""
        return self._string_from(fast.gf_client_metrics)

    def invoke(
        self,
        method: str,
        request: bytes = b"",
        *,
        timeout: Optional[float] = None,
        metadata: MetadataArg = None,
        wait_for_ready: Optional[bool] = None,
        compression: Optional[str] = None,
    ) -> bytes:
        """Calls a unary method with raw request bytes and returns the raw response bytes.

        - ``method``: ``"/package.Service/Method"``.
        - ``timeout``: seconds across all attempts (retries included); None for none (a
          method config ``timeout`` still applies, and the smaller one wins).
        - ``metadata``: request metadata, ``(key, value)`` pairs or a dict; keys are lower
          case, values str, or bytes for keys ending in "-bin".
        - ``wait_for_ready``: overrides the service config's waitForReady.
        - ``compression``: ``"gzip"`` or ``"identity"`` for this call's request (default: the
          client's ``compression`` option); compressed responses are always accepted.

        Blocks until the call ends, without holding the GIL, so threads call in parallel.
        Raises :class:`RpcError` when the call ends with a status other than OK, TypeError for an
        argument of the wrong type, :class:`InvalidArgumentError` for a bad value and
        :class:`FailedPreconditionError` on a closed client (both also ValueErrors).
        """
        return self._invoke(method, request, timeout, metadata, wait_for_ready, False, compression)  # type: ignore[return-value]

    def invoke_full(
        self,
        method: str,
        request: bytes = b"",
        *,
        timeout: Optional[float] = None,
        metadata: MetadataArg = None,
        wait_for_ready: Optional[bool] = None,
        compression: Optional[str] = None,
    ) -> Response:
        """Like :meth:`invoke`, and returns a :class:`Response` with the headers and trailers."""
        return self._invoke(method, request, timeout, metadata, wait_for_ready, True, compression)  # type: ignore[return-value]

    async def invoke_async(
        self,
        method: str,
        request: bytes = b"",
        *,
        timeout: Optional[float] = None,
        metadata: MetadataArg = None,
        wait_for_ready: Optional[bool] = None,
        compression: Optional[str] = None,
    ) -> bytes:
        """:meth:`invoke` for asyncio: the call runs in the library, the event loop stays free.

        Cancelling the awaiting task (``task.cancel()``, ``asyncio.wait_for``...) cancels the
        call. Raises like :meth:`invoke`.
        """
        return await self._invoke_async(method, request, timeout, metadata, wait_for_ready, False, compression)  # type: ignore[return-value]

    async def invoke_full_async(
        self,
        method: str,
        request: bytes = b"",
        *,
        timeout: Optional[float] = None,
        metadata: MetadataArg = None,
        wait_for_ready: Optional[bool] = None,
        compression: Optional[str] = None,
    ) -> Response:
        """:meth:`invoke_full` for asyncio, cancellable like :meth:`invoke_async`."""
        return await self._invoke_async(method, request, timeout, metadata, wait_for_ready, True, compression)  # type: ignore[return-value]

    def _invoke(
        self, method: Any, request: Any, timeout: Any, metadata: Any, wait_for_ready: Any, full: bool,
        compression: Any = None
    ) -> Union[bytes, Response]:
        m = _args.method(method)
        req = _args.request(request)
        if timeout is None and metadata is None and wait_for_ready is None and compression is None:
            options = None
        else:
            options = _call_options(timeout, metadata, wait_for_ready, compression)
        result, error = c_void_p(), c_void_p()
        try:
            native = self._native
            if native.closed:
                raise FailedPreconditionError("Client is closed")
            code = lib.gf_invoke_ex(native.ptr, m, req, len(req), options, byref(result), byref(error))
            if not result.value:
                raise _rejected(code, error.value)
            outcome = _read_result(result.value, full)
        finally:
            if options:
                fast.gf_call_options_free(options)
            if result.value:
                fast.gf_result_free(result.value)
                # Set with the result only when the call failed: the result has the message.
                fast.gf_string_free(error.value)
        return _finish(outcome, full)

    async def _invoke_async(
        self, method: Any, request: Any, timeout: Any, metadata: Any, wait_for_ready: Any, full: bool,
        compression: Any = None
    ) -> Union[bytes, Response]:
        key, call, future = self._start_async(method, request, timeout, metadata, wait_for_ready,
                                              _FULL if full else _BYTES, compression)
        try:
            outcome = await future
        except BaseException:
            cancel_async(key, call)
            raise
        finally:
            fast.gf_call_free(call)
        return _finish(outcome, full)

    def _start_async(
        self, method: Any, request: Any, timeout: Any, metadata: Any, wait_for_ready: Any, mode: int,
        compression: Any = None
    ) -> Tuple[int, int, "asyncio.Future[Any]"]:
        """Starts an async call on the running loop without waiting: returns its key, its call
        handle (the caller frees it with gf_call_free) and the future that gets its outcome
        (an _Outcome, or a KeptResult for _KEEP). Raises for a call the library refused."""
        m = _args.method(method)
        req = _args.request(request)
        loop = asyncio.get_running_loop()
        if timeout is None and metadata is None and wait_for_ready is None and compression is None:
            options = None
        else:
            options = _call_options(timeout, metadata, wait_for_ready, compression)
        future: "asyncio.Future[Any]" = loop.create_future()
        key = next(_ids)
        call, error = c_void_p(), c_void_p()
        native = self._native
        completions = _completions_for(loop)
        queue = completions.queue
        _pending[key] = (completions, future, mode)
        code = -1
        try:
            if native.closed:
                raise FailedPreconditionError("Client is closed")
            if queue is None:
                code = fast.gf_invoke_async_ex(
                    native.ptr, m, req, len(req), options, _ON_RESULT, key, byref(call), byref(error)
                )
            elif options is None and mode == _BYTES:
                # Only the bytes: the result need not keep response headers and trailers.
                code = fast.gf_invoke_queued(
                    native.ptr, m, req, len(req), 0, queue, key, byref(call), byref(error)
                )
            else:
                code = fast.gf_invoke_queued_ex(
                    native.ptr, m, req, len(req), options, queue, key, byref(call), byref(error)
                )
            if code != 0:
                raise _rejected(code, error.value)
        finally:
            if options:
                fast.gf_call_options_free(options)
            if code != 0:
                # Refused: no outcome ever arrives.
                _pending.pop(key, None)
        return key, call.value, future
