"""Registering an instance in etcd, in the record format of etcd's Go ``naming/endpoints``."""

from __future__ import annotations

import json
import threading
import weakref
from ctypes import byref, c_void_p
from typing import Any, Dict, Optional, Sequence, Union

from . import _args, _log
from ._ffi import lib, take_string
from ._status import RpcError, StatusCode, rejected


class _Handle:
    """The gf_registration pointer; deregistered exactly once, by close() or the finalizer."""

    __slots__ = ("ptr", "lock")

    def __init__(self, ptr: int):
        self.ptr: Optional[int] = ptr
        self.lock = threading.Lock()

    def deregister(self) -> None:
        with self.lock:
            ptr, self.ptr = self.ptr, None
        if not ptr:
            return
        error = c_void_p()
        code = lib.gf_deregister(ptr, byref(error))
        message = take_string(error.value)
        if code != 0:
            raise RpcError(StatusCode.from_number(code), message)

    def deregister_quietly(self) -> None:
        try:
            self.deregister()
        except RpcError:
            pass  # etcd could not be told: the lease expires by itself within its TTL


class Registration:
    """An instance registered in etcd, kept alive in the background until :meth:`close`.

    Made by :func:`register`. The key is ``<prefix>/<addr>`` and the value
    ``{"Op":0,"Addr":addr,"Metadata":metadata}``, so grpc-go clients with etcd's resolver find
    it too. If the lease is lost (etcd restarted, a long pause), the library grants a new one and
    writes the record again. A forgotten registration is ended when it is garbage collected; if
    the process dies, the record goes away when its lease expires (``ttl`` seconds).
    """

    def __init__(
        self,
        prefix: str,
        addr: str,
        metadata: Any = None,
        ttl: int = 5,
        *,
        etcd: Union[Sequence[str], str, None] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        etcd_dial_timeout: Optional[float] = None,
        etcd_tls: Optional[Dict[str, Any]] = None,
    ):
        p = _args.text("prefix", prefix)
        a = _args.text("addr", addr)
        md = None if metadata is None else _args.json_value("metadata", metadata)
        seconds = _args.ttl(ttl)
        etcd_options = _args.etcd_options(etcd, username, password, etcd_dial_timeout, etcd_tls)
        options = json.dumps({"etcd": etcd_options}).encode() if etcd_options else None
        handle, error = c_void_p(), c_void_p()
        _log.sync_level()
        code = lib.gf_register(options, p, a, md, seconds, byref(handle), byref(error))
        message = take_string(error.value)
        if code != 0 or not handle.value:
            raise rejected(code, message)
        self._prefix = prefix
        self._addr = addr
        self._ttl = seconds
        self._handle = _Handle(handle.value)
        self._finalizer = weakref.finalize(self, self._handle.deregister_quietly)

    @property
    def key(self) -> str:
        """The etcd key of the record, ``<prefix>/<addr>``."""
        return f"{self._prefix}/{self._addr}"

    @property
    def addr(self) -> str:
        """The registered address."""
        return self._addr

    @property
    def ttl(self) -> int:
        """The lease TTL in seconds."""
        return self._ttl

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Deregisters: stops the keepalives, deletes the key and revokes the lease.

        Blocks up to about 5 seconds (without the GIL). Raises :class:`RpcError` UNAVAILABLE
        when etcd could not be told; the record then goes away when its lease expires. Closing
        twice is fine.
        """
        self._finalizer.detach()
        self._handle.deregister()

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "registered"
        return f"<grpc_failover.Registration {self.key!r} {state}>"


def register(
    prefix: str,
    addr: str,
    metadata: Any = None,
    ttl: int = 5,
    *,
    etcd: Union[Sequence[str], str, None] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    etcd_dial_timeout: Optional[float] = None,
    etcd_tls: Optional[Dict[str, Any]] = None,
) -> Registration:
    """Registers ``addr`` under ``prefix`` in etcd and keeps it there until closed.

    - ``prefix``: e.g. ``"service/user"``; clients find the instance with
      ``Client("etcd:///service/user")``.
    - ``addr``: ``"host:port"``.
    - ``metadata``: the record's Metadata, any JSON-encodable value; ``{"weight": 10}`` sets the
      instance's weight for ``weighted_round_robin``. None is JSON null.
    - ``ttl``: the lease TTL in whole seconds (at least 1).
    - ``etcd``, ``username``, ``password``, ``etcd_dial_timeout``, ``etcd_tls``: as for
      :class:`Client`.

    Blocks (without the GIL) until the record is in etcd. Raises :class:`RpcError` UNAVAILABLE
    when etcd cannot be reached within its dial timeout, TypeError for an argument of the wrong
    type, :class:`InvalidArgumentError` (also a ValueError) for a bad value. Use the result as a context manager, or call its ``close()``.
    """
    return Registration(
        prefix,
        addr,
        metadata,
        ttl,
        etcd=etcd,
        username=username,
        password=password,
        etcd_dial_timeout=etcd_dial_timeout,
        etcd_tls=etcd_tls,
    )
