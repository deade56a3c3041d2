"""Loads the grpc-failover shared library and declares every C function it uses.

Every function gets explicit ``argtypes`` and ``restype``. Pointers the library owns are typed
``c_void_p`` so that ctypes hands them over as plain integers and never converts (or frees)
them behind our back; strings the library returns are read with :func:`ctypes.string_at` and
given back with ``gf_string_free``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_char_p,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Optional

#: The C ABI version this module was written for (``GF_ABI_VERSION`` of the header).
ABI_VERSION = 1

if sys.platform == "darwin":
    _LIB_NAME = "libgrpc_failover.dylib"
elif sys.platform == "win32":
    _LIB_NAME = "grpc_failover.dll"
else:
    _LIB_NAME = "libgrpc_failover.so"


def library_path() -> str:
    """Returns the path of the shared library this package loads.

    ``GF_LIBRARY`` wins when set; then the copy bundled into the package when it was installed;
    then ``target/release`` of the source checkout this file lives in.
    """
    env = os.environ.get("GF_LIBRARY")
    if env:
        return env
    here = Path(__file__).resolve().parent
    bundled = here / "_lib" / _LIB_NAME
    if bundled.is_file():
        return str(bundled)
    checkout = here.parents[2] / "target" / "release" / _LIB_NAME
    if checkout.is_file():
        return str(checkout)
    raise ImportError(
        f"grpc_failover: cannot find {_LIB_NAME}: set GF_LIBRARY to its path, or run "
        "`make build` and `pip install ./bindings/python` from a grpc-failover checkout"
    )


def _load(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"grpc_failover: cannot load {path}: {e}") from e
    lib.gf_abi_version.argtypes = []
    lib.gf_abi_version.restype = c_uint32
    found = lib.gf_abi_version()
    if found != ABI_VERSION:
        raise ImportError(
            f"grpc_failover: {path} implements C ABI version {found}, this package needs "
            f"{ABI_VERSION}"
        )
    return lib


_path = library_path()
lib = _load(_path)
"""The library through CDLL: ctypes releases the GIL for the duration of each call. Used for
the functions that block (gf_invoke_ex, gf_register, gf_deregister) and gf_connect."""

fast = ctypes.PyDLL(_path)
"""The same library through PyDLL: calls keep the GIL. Used for the functions documented as
never blocking, so that a thread never gives the GIL away (and waits to get it back) just to
read a result field; this matters most inside the completion callback, on library threads."""

_out_ptr = POINTER(c_void_p)

#: ``gf_result_callback``: ``void (*)(void *user_data, gf_result *result)``.
RESULT_CALLBACK = CFUNCTYPE(None, c_void_p, c_void_p)

#: ``gf_log_callback``: ``void (*)(void *user_data, int32_t level, const char *target,
#: const char *message)``; the strings arrive as bytes.
LOG_CALLBACK = CFUNCTYPE(None, c_void_p, c_int32, c_char_p, c_char_p)


class Completion(ctypes.Structure):
    """``gf_completion``: a finished queued call's tag and result (owned by the reader)."""

    _fields_ = [("tag", c_uint64), ("result", c_void_p)]

_BLOCKING = {
    "gf_connect": ([c_char_p, c_char_p, _out_ptr, _out_ptr], c_int32),
    "gf_invoke_ex": (
        [c_void_p, c_char_p, c_char_p, c_size_t, c_void_p, _out_ptr, _out_ptr],
        c_int32,
    ),
    "gf_register": (
        [c_char_p, c_char_p, c_char_p, c_char_p, c_uint32, _out_ptr, _out_ptr],
        c_int32,
    ),
    "gf_deregister": ([c_void_p, _out_ptr], c_int32),
    # Waits for a log callback that may be waiting for the GIL.
    "gf_set_log_callback": ([c_int32, LOG_CALLBACK, c_void_p, _out_ptr], c_int32),
}

_NON_BLOCKING = {
    "gf_version": ([], c_void_p),
    "gf_string_free": ([c_void_p], None),
    "gf_client_shutdown": ([c_void_p], None),
    "gf_close": ([c_void_p], None),
    "gf_client_stats": ([c_void_p, _out_ptr, _out_ptr], c_int32),
    "gf_client_metrics": ([c_void_p, _out_ptr, _out_ptr], c_int32),
    "gf_set_log_level": ([c_int32, _out_ptr], c_int32),
    "gf_call_options_new": ([], c_void_p),
    "gf_call_options_free": ([c_void_p], None),
    "gf_call_options_set_timeout_ms": ([c_void_p, c_uint32], None),
    "gf_call_options_set_wait_for_ready": ([c_void_p, c_int32], None),
    "gf_call_options_add_metadata": ([c_void_p, c_char_p, c_char_p, c_size_t, _out_ptr], c_int32),
    "gf_call_options_set_compression": ([c_void_p, c_char_p, _out_ptr], c_int32),
    "gf_invoke_async_ex": (
        [c_void_p, c_char_p, c_char_p, c_size_t, c_void_p, RESULT_CALLBACK, c_void_p, _out_ptr, _out_ptr],
        c_int32,
    ),
    "gf_queue_new": ([_out_ptr, _out_ptr], c_int32),
    "gf_queue_fd": ([c_void_p], c_int32),
    "gf_queue_poll": ([c_void_p, POINTER(Completion), c_size_t], c_size_t),
    "gf_queue_free": ([c_void_p], None),
    "gf_invoke_queued": (
        [c_void_p, c_char_p, c_char_p, c_size_t, c_uint32, c_void_p, c_uint64, _out_ptr, _out_ptr],
        c_int32,
    ),
    "gf_invoke_queued_ex": (
        [c_void_p, c_char_p, c_char_p, c_size_t, c_void_p, c_void_p, c_uint64, _out_ptr, _out_ptr],
        c_int32,
    ),
    "gf_call_cancel": ([c_void_p], None),
    "gf_call_free": ([c_void_p], None),
    "gf_result_code": ([c_void_p], c_int32),
    "gf_result_message": ([c_void_p], c_void_p),
    "gf_result_response": ([c_void_p, POINTER(c_size_t)], c_void_p),
    "gf_result_header_count": ([c_void_p], c_size_t),
    "gf_result_header": ([c_void_p, c_size_t, _out_ptr, _out_ptr, POINTER(c_size_t)], c_int32),
    "gf_result_trailer_count": ([c_void_p], c_size_t),
    "gf_result_trailer": ([c_void_p, c_size_t, _out_ptr, _out_ptr, POINTER(c_size_t)], c_int32),
    "gf_result_free": ([c_void_p], None),
}

for _dll, _table in ((lib, _BLOCKING), (fast, _NON_BLOCKING)):
    for _name, (_args, _res) in _table.items():
        _fn = getattr(_dll, _name)
        _fn.argtypes = _args
        _fn.restype = _res


def take_string(ptr: Optional[int]) -> str:
    """Reads a library-owned C string as text and frees it; NULL reads as ""."""
    if not ptr:
        return ""
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        fast.gf_string_free(ptr)


def version() -> str:
    """The version of the loaded library, from ``gf_version``."""
    return ctypes.string_at(fast.gf_version()).decode("utf-8")
