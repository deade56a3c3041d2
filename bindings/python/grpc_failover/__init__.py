"""grpc-failover for Python: a gRPC client with etcd discovery, weighted load balancing,
retries and hedging, on raw bytes.

    from grpc_failover import Client, RpcError, StatusCode, register

    with Client("etcd:///service/user", etcd=["127.0.0.1:2379"], service_config={...}) as c:
        reply = c.invoke("/UserService/GetById", b"...", timeout=1.0)

The work happens in the native grpc-failover library, loaded with ctypes from the copy bundled
at install time, or from the path in ``GF_LIBRARY``. Its log records go to the ``logging``
logger ``grpc_failover``, at that logger's level.
"""

from ._ffi import library_path, version as library_version
from . import _log
from ._client import Client, Response
from ._registration import Registration, register
from ._status import FailedPreconditionError, InvalidArgumentError, RpcError, StatusCode



def __getattr__(name: str) -> object:
    # The channels import grpcio when it is there: only programs that use them pay for it.
    if name in ("Channel", "ChannelRpcError"):
        from . import _channel

        return getattr(_channel, name)
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__: str = library_version()
"""The version of the loaded native library."""

# The library's log records go to logging.getLogger("grpc_failover") (see _log).
_log.sync_level()

__all__ = [
    "Channel",
    "ChannelRpcError",
    "Client",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "Registration",
    "Response",
    "RpcError",
    "StatusCode",
    "library_path",
    "library_version",
    "register",
]
