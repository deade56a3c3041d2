"""Routes the native library's log records to Python's ``logging``, logger ``grpc_failover``.

The library logs the levels that logger is enabled for: its effective level is read at import
and again each time a :class:`Client` is created or an instance registered, so
``logging.basicConfig(level=logging.DEBUG)`` before that shows the connection attempts, and the
default (WARNING, from the root logger) shows what it showed on stderr before. The library's
TRACE records come at level 5, below DEBUG.

Records arrive on the library's log thread, one at a time, never on the thread that logged:
a handler that is slow (or waits for the GIL) holds up only later records, never a call. When
``GF_LOG`` is set in the environment, records go to stderr at that level instead, as in C.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from ctypes import byref, c_void_p

from ._ffi import LOG_CALLBACK, fast, lib, take_string

logger = logging.getLogger("grpc_failover")

#: The library's TRACE level, below logging.DEBUG.
TRACE = 5

_GF_OFF, _GF_ERROR, _GF_WARN, _GF_INFO, _GF_DEBUG, _GF_TRACE = range(6)
_TO_PYTHON = {
    _GF_ERROR: logging.ERROR,
    _GF_WARN: logging.WARNING,
    _GF_INFO: logging.INFO,
    _GF_DEBUG: logging.DEBUG,
    _GF_TRACE: TRACE,
}


def native_level(python_level: int) -> int:
    """The library's level that delivers every record a logger at ``python_level`` keeps."""
    for gf, py in sorted(_TO_PYTHON.items(), reverse=True):
        if python_level <= py:
            return gf
    return _GF_OFF


def _level_now() -> int:
    if logger.disabled:
        return _GF_OFF
    return native_level(logger.getEffectiveLevel())


_on_log_thread = threading.local()


@LOG_CALLBACK
def _on_record(_user_data, level, target, message):
    # Runs on the library's log thread. An exception must not escape into C (ctypes would print
    # it and carry on, but a broken handler should not spam stderr per record).
    _on_log_thread.active = True
    try:
        py_level = _TO_PYTHON.get(level, TRACE)
        if logger.isEnabledFor(py_level):
            logger.log(
                py_level,
                "%s",
                (message or b"").decode("utf-8", "replace"),
                extra={"gf_target": (target or b"").decode("utf-8", "replace")},
            )
    except Exception:  # noqa: BLE001 - nothing may propagate into the library
        pass


_lock = threading.Lock()
_routed = False
# Set at exit (and never cleared): the log thread must not enter Python once the interpreter
# finalizes, so nothing routes records to Python again.
_closing = False


def _check(code: int, error: c_void_p) -> bool:
    message = take_string(error.value)
    if code != 0:
        # 9 FAILED_PRECONDITION: a Rust logger of the host's own is in use; nothing to route.
        logger.debug("grpc_failover: log records stay with the library: %s", message)
    return code == 0


def sync_level() -> None:
    """Routes the library's records to ``logging`` (the first time) and sets the library's
    level to the ``grpc_failover`` logger's effective level. Does nothing when ``GF_LOG`` is
    set."""
    global _routed
    if os.environ.get("GF_LOG") or _closing:
        return
    if getattr(_on_log_thread, "active", False):
        # A handler making a Client: the routing is in place, and the thread that routes or
        # unroutes may be waiting for this very record to be handled.
        return
    level = _level_now()
    error = c_void_p()
    with _lock:
        if _routed:
            _check(fast.gf_set_log_level(level, byref(error)), error)
            return
        # Through CDLL (the GIL released): gf_set_log_callback waits for a running callback,
        # which may itself be waiting for the GIL.
        if _check(lib.gf_set_log_callback(level, _on_record, None, byref(error)), error):
            _routed = True
            atexit.register(_unroute)


def _unroute() -> None:
    # Before the interpreter finalizes: after that, the log thread must not enter Python. Back
    # to stderr at the same level; waits (GIL released, _lock not held: a handler may be
    # taking it) for a record being handled now.
    global _routed, _closing
    with _lock:
        _closing = True
        routed, _routed = _routed, False
    if routed:
        lib.gf_set_log_callback(_level_now(), LOG_CALLBACK(), None, None)


def _after_fork_in_child() -> None:
    # The library's threads do not survive a fork (clients must be made after it): the child
    # starts unrouted, and its first Client routes again, in a state the parent's log thread
    # left behind only in memory. Python's hook runs before any other code in the child.
    global _routed, _lock
    _lock = threading.Lock()
    _routed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
