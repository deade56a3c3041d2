"""The ctypes declarations of _ffi.py against the C header: argument and return types.

ctypes does not read the header, so a parameter added, dropped or retyped there would only show
up as a crash or a silently wrong value. This parses the header's prototypes (cbindgen writes
them in one regular shape) and maps each C type to the ctypes types that may stand for it.
"""

from __future__ import annotations

import os
import re
from ctypes import POINTER, c_char_p, c_int32, c_size_t, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from conftest import REPO
from grpc_failover import _ffi

#: Header functions the package does not declare, and why.
UNUSED = {
    "gf_abi_version": "declared and checked by _ffi._load before anything else",
    "gf_bytes_free": "only gf_invoke returns a gf_bytes",
    "gf_invoke": "calls go through gf_invoke_ex, which returns metadata too",
    "gf_invoke_async": "async calls go through a completion queue or gf_invoke_async_ex",
    "gf_queue_wait": "asyncio waits on the queue's descriptor instead",
    "gf_set_worker_threads": "Python callers use the library's default worker count",
}


def header_path() -> Path:
    include = os.environ.get("GF_INCLUDE")
    return Path(include) / "grpc_failover.h" if include else REPO / "include" / "grpc_failover.h"


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _split_declaration(decl: str) -> Tuple[str, str]:
    """'const char *key' -> ('const char *', 'key'): the type, spaces normalised."""
    decl = " ".join(decl.split())
    m = re.fullmatch(r"(.*?[\s*])(\w+)", decl)
    assert m, decl
    return _normalise(m.group(1)), m.group(2)


def _normalise(ctype: str) -> str:
    ctype = " ".join(ctype.replace("*", " * ").split())
    return ctype.replace("* *", "**")


def parse_header(text: str) -> Tuple[Dict[str, Tuple[List[str], str]], Dict[str, Tuple[List[str], str]]]:
    """The header's functions and function-pointer typedefs: name -> (parameter types, return
    type)."""
    text = _strip_comments(text)
    functions: Dict[str, Tuple[List[str], str]] = {}
    callbacks: Dict[str, Tuple[List[str], str]] = {}
    for m in re.finditer(r"typedef\s+([\w\s*]+?)\s*\(\s*\*\s*(\w+)\s*\)\s*\(([^)]*)\)\s*;", text):
        callbacks[m.group(2)] = (_params(m.group(3)), _normalise(m.group(1)))
    body = re.sub(r"typedef[^;]*;", " ", text)
    for m in re.finditer(r"^[ \t]*([A-Za-z_][\w\s*]*?)\b(gf_\w+)\s*\(([^)]*)\)\s*;", body, flags=re.M):
        functions[m.group(2)] = (_params(m.group(3)), _normalise(m.group(1)))
    return functions, callbacks


def _params(text: str) -> List[str]:
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    return [_split_declaration(p)[0] for p in text.split(",")]


_SCALARS = {"int32_t": c_int32, "uint32_t": c_uint32, "uint64_t": c_uint64, "size_t": c_size_t}


def allowed(ctype: str, callbacks: Dict[str, Tuple[List[str], str]], *, result: bool = False) -> Set[object]:
    """The ctypes types that may stand for ctype (a parameter's, or a return type's)."""
    if ctype == "void":
        return {None}
    if ctype in _SCALARS:
        return {_SCALARS[ctype]}
    if ctype in callbacks:
        known = {"gf_result_callback": _ffi.RESULT_CALLBACK, "gf_log_callback": _ffi.LOG_CALLBACK}
        return {known[ctype]} if ctype in known else set()
    if ctype.endswith("**"):
        # Out-pointers for pointers the library writes: read back as integers.
        return {POINTER(c_void_p)}
    if ctype.endswith("*"):
        pointee = re.sub(r"^const ", "", ctype[:-1].strip())
        if pointee in ("char", "uint8_t"):
            # A returned string or buffer stays the library's: an integer, never converted.
            return {c_void_p} if result else {c_char_p, c_void_p}
        if pointee in _SCALARS:
            return {POINTER(_SCALARS[pointee])}
        if pointee == "struct gf_completion":
            return {POINTER(_ffi.Completion)}
        if pointee.startswith("struct gf_") or pointee == "void":
            return {c_void_p}
    raise AssertionError(f"no ctypes mapping for C type {ctype!r}: add one to this test")


@pytest.fixture(scope="module")
def header():
    path = header_path()
    assert path.is_file(), f"{path} not found: run the tests from a checkout (make test-python)"
    return parse_header(path.read_text())


def test_the_parser_reads_prototypes():
    functions, callbacks = parse_header(
        """
        /** doc (with parens) */
        typedef void (*cb)(void *user_data, struct gf_result *result);
        const char *gf_a(void);
        int32_t gf_b(const struct gf_x *x,
                     const char **key_out, // trailing comment
                     size_t len);
        """
    )
    assert functions == {
        "gf_a": ([], "const char *"),
        "gf_b": (["const struct gf_x *", "const char **", "size_t"], "int32_t"),
    }
    assert callbacks == {"cb": (["void *", "struct gf_result *"], "void")}


def test_every_header_function_is_declared_or_listed_as_unused(header):
    functions, _ = header
    declared = {**_ffi._BLOCKING, **_ffi._NON_BLOCKING}
    assert len(functions) > 30, "the parser found too few prototypes"
    missing = set(functions) - set(declared) - set(UNUSED)
    assert not missing, f"declare these in _ffi.py or list them in UNUSED: {sorted(missing)}"
    stale = (set(UNUSED) & set(declared)) | (set(UNUSED) - set(functions))
    assert not stale, f"UNUSED lists functions that are declared or gone: {sorted(stale)}"
    assert set(declared) <= set(functions), set(declared) - set(functions)


def test_declared_types_match_the_header(header):
    functions, callbacks = header
    declared = {**_ffi._BLOCKING, **_ffi._NON_BLOCKING}
    wrong = []
    for name, (argtypes, restype) in sorted(declared.items()):
        params, ret = functions[name]
        if len(argtypes) != len(params):
            wrong.append(f"{name}: {len(argtypes)} argtypes, the header has {len(params)} parameters")
            continue
        for i, (ours, theirs) in enumerate(zip(argtypes, params)):
            if ours not in allowed(theirs, callbacks):
                wrong.append(f"{name} parameter {i}: {ours} for C {theirs!r}")
        if restype not in allowed(ret, callbacks, result=True):
            wrong.append(f"{name} returns C {ret!r}, declared {restype}")
    assert not wrong, "\n".join(wrong)


def test_abi_version_and_callback_types_match_the_header(header):
    functions, callbacks = header
    assert functions["gf_abi_version"] == ([], "uint32_t")
    assert _ffi.lib.gf_abi_version.restype is c_uint32 and not _ffi.lib.gf_abi_version.argtypes
    params, ret = callbacks["gf_result_callback"]
    assert _ffi.RESULT_CALLBACK._restype_ in allowed(ret, callbacks, result=True)
    assert len(_ffi.RESULT_CALLBACK._argtypes_) == len(params)
    for ours, theirs in zip(_ffi.RESULT_CALLBACK._argtypes_, params):
        assert ours in allowed(theirs, callbacks), (ours, theirs)


def test_completion_matches_the_header_struct():
    text = _strip_comments(header_path().read_text())
    m = re.search(r"typedef struct gf_completion \{(.*?)\} gf_completion;", text, flags=re.S)
    assert m
    fields = [_split_declaration(f) for f in m.group(1).split(";") if f.strip()]
    assert [name for _, name in fields] == [name for name, _ in _ffi.Completion._fields_]
    for (ctype, _), (_, ours) in zip(fields, _ffi.Completion._fields_):
        assert ours in allowed(ctype, {}, result=True), (ctype, ours)
