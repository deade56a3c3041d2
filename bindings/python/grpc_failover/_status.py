"""Status codes and the exception types that carry them."""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Sequence, Tuple, Union

#: A metadata value as received: bytes for keys ending in "-bin", text otherwise.
MetadataValue = Union[str, bytes]
#: Response metadata: (key, value) pairs in arrival order; a key may repeat.
Metadata = Tuple[Tuple[str, MetadataValue], ...]


@enum.unique
class StatusCode(enum.Enum):
    """gRPC status codes, with the members, names and values of ``grpc.StatusCode``.

    As in grpcio, each value is a ``(number, description)`` tuple, so ``code.value[0]`` is the
    number on the wire; :meth:`from_number` goes the other way.
    """

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")

    @classmethod
    def from_number(cls, number: int) -> "StatusCode":
        """The member for a wire number; numbers outside 0..16 map to UNKNOWN, as in gRPC."""
        return _BY_NUMBER.get(number, cls.UNKNOWN)

    def __call__(self) -> Any:
        """The ``grpc.StatusCode`` member of the same name when grpcio is importable, else this
        member. So the ``code`` attribute of an error raised by a Channel is also grpc's
        ``code()`` method: ``e.code is StatusCode.NOT_FOUND`` and
        ``e.code() is grpc.StatusCode.NOT_FOUND`` both hold."""
        return _grpc_codes().get(self, self)


_BY_NUMBER = {member.value[0]: member for member in StatusCode}

_GRPC_CODES: Optional[Dict[StatusCode, Any]] = None


def _grpc_codes() -> Dict[StatusCode, Any]:
    global _GRPC_CODES
    if _GRPC_CODES is None:
        try:
            import grpc
        except ImportError:
            _GRPC_CODES = {}
        else:
            _GRPC_CODES = {member: grpc.StatusCode[member.name] for member in StatusCode}
    return _GRPC_CODES


class RpcError(Exception):
    """A call that ended with a status other than OK.

    Attributes:
        code: the :class:`StatusCode`.
        details: the status message (the server's, or the library's when the call never got
            an answer: deadline, no instance available, cancelled...).
        trailers: the response trailers, as ``(key, value)`` pairs (values of "-bin" keys are
            bytes, others str).
    """

    code: StatusCode
    details: str
    trailers: Metadata

    def __init__(self, code: StatusCode, details: str, trailers: Sequence[Tuple[str, MetadataValue]] = ()):
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.trailers = tuple(trailers)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.details!r})"


class InvalidArgumentError(RpcError, ValueError):
    """An argument the library refused (``INVALID_ARGUMENT``), with the library's message.

    The library checks every rule (method syntax, metadata keys, options...) itself, so the
    message is the same in every language. Also a ``ValueError``, which is what this package
    raised for these before.
    """

    def __init__(self, details: str):
        super().__init__(StatusCode.INVALID_ARGUMENT, details)

    def __repr__(self) -> str:
        return f"InvalidArgumentError({self.details!r})"


class FailedPreconditionError(RpcError, ValueError):
    """A request the library refused in this state (``FAILED_PRECONDITION``): a call on a
    closed client, for one. Also a ``ValueError``, which is what this package raised for these
    before."""

    def __init__(self, details: str):
        super().__init__(StatusCode.FAILED_PRECONDITION, details)

    def __repr__(self) -> str:
        return f"FailedPreconditionError({self.details!r})"


def rejected(code: int, message: str) -> RpcError:
    """The exception for a request the library refused with ``code``."""
    if code == StatusCode.INVALID_ARGUMENT.value[0]:
        return InvalidArgumentError(message)
    if code == StatusCode.FAILED_PRECONDITION.value[0]:
        return FailedPreconditionError(message)
    return RpcError(StatusCode.from_number(code), message)
