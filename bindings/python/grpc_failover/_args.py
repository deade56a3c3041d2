"""Converts Python arguments to the C types and JSON the library takes.

Only what the conversion needs is checked here: the Python type (TypeError), and that the value
fits the C or JSON type (a str without NUL for a C string, finite seconds that make a whole
number of milliseconds in uint32_t, a 0..2^32-1 int; InvalidArgumentError). Every other rule
(method syntax, metadata keys, etcd endpoints, username with password, ranges of options...) is
the library's: it refuses a request with INVALID_ARGUMENT and one message for every language.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._status import InvalidArgumentError

#: Request metadata as accepted: (key, value) pairs or a mapping; values str or bytes.
MetadataArg = Union[Iterable[Tuple[str, Union[str, bytes]]], Mapping[str, Union[str, bytes]], None]

_U32_MAX = 0xFFFFFFFF


def text(name: str, value: Any) -> bytes:
    """A str argument as NUL-free UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgumentError(f"{name}: must not contain NUL characters")
    return value.encode("utf-8", "surrogatepass")


_methods: Dict[str, bytes] = {}


def method(value: Any) -> bytes:
    """A method name as a C string (the library checks its syntax). Names already seen come
    from a cache."""
    if type(value) is str:
        cached = _methods.get(value)
        if cached is not None:
            return cached
    encoded = text("method", value)
    if type(value) is str and len(_methods) < 1024:
        _methods[value] = encoded
    return encoded


def request(value: Any) -> bytes:
    """Request bytes; bytes-like objects are copied into bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"request must be bytes, bytearray or memoryview, not {type(value).__name__}")


def _number(name: str, value: Any, what: str = "a number of seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{name}: must be finite, got {value!r}")
    return float(value)


def milliseconds(name: str, seconds: Any, *, positive: bool = True) -> int:
    """Seconds (int or float) as whole milliseconds, rounded up so a deadline is never early.

    Zero is refused where it is (positive): 0 ms means "none" to the library, not "at once".
    """
    s = _number(name, seconds)
    if s < 0 or (positive and s == 0):
        raise InvalidArgumentError(f"{name}: must be {'> 0' if positive else '>= 0'}, got {seconds!r}")
    ms = math.ceil(s * 1000)
    if ms > _U32_MAX:
        raise InvalidArgumentError(f"{name}: too large: {seconds!r} seconds")
    return ms


def timeout_ms(value: Any) -> int:
    """A call timeout in seconds (None = no deadline) as the C value (0 = none)."""
    if value is None:
        return 0
    return milliseconds("timeout", value)


def wait_for_ready(value: Any) -> Optional[int]:
    """None (the service config decides), True or False as the C value, or None to skip."""
    if value is None:
        return None
    if not isinstance(value, bool):
        raise TypeError(f"wait_for_ready must be a bool or None, not {type(value).__name__}")
    return 1 if value else 0


def compression(value: Any) -> Optional[bytes]:
    """A call's compression as the C string: a name ("gzip", "identity"; the library checks
    it), or grpcio's ``grpc.Compression`` members, which map by name (Gzip -> gzip, NoCompression
    -> identity). None keeps the client's choice."""
    if value is None:
        return None
    if isinstance(value, str):
        if "\0" in value:
            raise InvalidArgumentError("compression: contains a NUL character")
        return value.encode()
    name = getattr(value, "name", None)
    if isinstance(name, str):
        mapped = {"gzip": "gzip", "nocompression": "identity"}.get(name.lower(), name.lower())
        return mapped.encode()
    raise TypeError(f"compression must be a str, a grpc.Compression or None, not {type(value).__name__}")


def metadata(value: MetadataArg) -> List[Tuple[bytes, bytes]]:
    """Request metadata as (key, value) byte pairs. The library checks keys and values."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        raise TypeError("metadata must be a sequence of (key, value) pairs or a mapping")
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(
            f"metadata must be a sequence of (key, value) pairs or a mapping, not {type(value).__name__}"
        ) from None
    for pair in iterator:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"metadata entries must be (key, value) tuples, got {pair!r}")
        key, val = pair
        k = text("metadata key", key)
        if isinstance(val, str):
            v = val.encode("utf-8", "surrogatepass")
        elif isinstance(val, (bytes, bytearray, memoryview)):
            v = bytes(val)
        else:
            raise TypeError(f"metadata value for {key!r} must be str or bytes, not {type(val).__name__}")
        out.append((k, v))
    return out


def _uint(name: str, value: Any) -> int:
    """An int that fits uint32_t (the library checks its own minimum)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > _U32_MAX:
        raise InvalidArgumentError(f"{name}: must be between 0 and {_U32_MAX}, got {value}")
    return value


def etcd_options(
    endpoints: Union[Sequence[str], str, None],
    username: Optional[str],
    password: Optional[str],
    dial_timeout: Optional[float],
    etcd_tls: Any = None,
) -> Optional[Dict[str, Any]]:
    """The "etcd" part of options_json, or None when every argument is None. A str of endpoints
    goes as it is: the library splits it at commas."""
    out: Dict[str, Any] = {}
    if endpoints is not None:
        if isinstance(endpoints, str):
            text("etcd", endpoints)
        elif isinstance(endpoints, (list, tuple)):
            for e in endpoints:
                text("etcd endpoint", e)
            endpoints = list(endpoints)
        else:
            raise TypeError(f"etcd must be a list of \"host:port\" strings, not {type(endpoints).__name__}")
        out["endpoints"] = endpoints
    if username is not None:
        out["username"] = username
        text("username", username)
    if password is not None:
        out["password"] = password
        text("password", password)
    if dial_timeout is not None:
        out["dial_timeout_ms"] = milliseconds("etcd_dial_timeout", dial_timeout)
    if etcd_tls is not None:
        out["tls"] = tls_options("etcd_tls", etcd_tls)
    return out or None


def tls_options(name: str, value: Any) -> Optional[Dict[str, Any]]:
    """A "tls" options object: a dict of the library's fields, with path-like values (e.g.
    pathlib.Path) as str. The library checks the fields and reads the files."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
    out: Dict[str, Any] = {}
    for key, val in value.items():
        out[key] = os.fspath(val) if isinstance(val, os.PathLike) else val
    return out


_BACKOFF_KEYS = {"base_delay", "max_delay", "multiplier", "jitter"}


def client_options(
    *,
    etcd: Optional[Dict[str, Any]],
    service_config: Any,
    connect_timeout: Any,
    connect_backoff: Any,
    max_attempts: Any,
    max_in_flight_per_instance: Any,
    keepalive_time: Any,
    keepalive_timeout: Any,
    options: Any,
    tls: Any = None,
) -> bytes:
    """options_json for gf_connect, from the Client's keyword arguments."""
    out: Dict[str, Any] = {}
    if options is not None:
        if not isinstance(options, Mapping):
            raise TypeError(f"options must be a dict, not {type(options).__name__}")
        out.update(options)
    if etcd is not None:
        out["etcd"] = etcd
    if service_config is not None:
        # A str goes as it is: the library parses it.
        if not isinstance(service_config, (str, Mapping)):
            raise TypeError(
                f"service_config must be a dict or a JSON string, not {type(service_config).__name__}"
            )
        out["service_config"] = service_config
    if connect_timeout is not None:
        out["connect_timeout_ms"] = milliseconds("connect_timeout", connect_timeout)
    if connect_backoff is not None:
        if not isinstance(connect_backoff, Mapping):
            raise TypeError(f"connect_backoff must be a dict, not {type(connect_backoff).__name__}")
        unknown = set(connect_backoff) - _BACKOFF_KEYS
        if unknown:
            # The keyword's own keys (seconds, not the library's milliseconds): checked here.
            raise InvalidArgumentError(
                f"connect_backoff: unknown keys {sorted(unknown)}; expected {sorted(_BACKOFF_KEYS)}"
            )
        b: Dict[str, Any] = {}
        for key in ("base_delay", "max_delay"):
            if connect_backoff.get(key) is not None:
                b[key + "_ms"] = milliseconds(f"connect_backoff[{key!r}]", connect_backoff[key])
        for key in ("multiplier", "jitter"):
            if connect_backoff.get(key) is not None:
                b[key] = _number(f"connect_backoff[{key!r}]", connect_backoff[key], "a number")
        out["connect_backoff"] = b
    if max_attempts is not None:
        out["max_attempts"] = _uint("max_attempts", max_attempts)
    if max_in_flight_per_instance is not None:
        out["max_in_flight_per_instance"] = _uint("max_in_flight_per_instance", max_in_flight_per_instance)
    if keepalive_time is not None:
        out["keepalive_time_ms"] = milliseconds("keepalive_time", keepalive_time)
    if keepalive_timeout is not None:
        out["keepalive_timeout_ms"] = milliseconds("keepalive_timeout", keepalive_timeout)
    if tls is not None:
        out["tls"] = tls_options("tls", tls)
    return json_value("options", out)


def ttl(value: Any) -> int:
    """A lease TTL in whole seconds as uint32_t (the library wants at least 1)."""
    return _uint("ttl", value)


def json_value(name: str, value: Any) -> bytes:
    """Any JSON-encodable value as JSON text (NaN and infinities have none)."""
    try:
        return json.dumps(value, allow_nan=False).encode("utf-8")
    except TypeError as e:
        raise TypeError(f"{name} cannot be encoded as JSON: {e}") from None
    except ValueError as e:
        raise InvalidArgumentError(f"{name}: cannot be encoded as JSON: {e}") from None
