"""Errors the services raise. Each kind maps to one HTTP status in the API layer; the code
and message are Azure's."""

from __future__ import annotations

import errno
import sqlite3


class ServiceError(Exception):
    def __init__(self, code: str, message: str, target: str | None = None, details: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []

    def __reduce__(self):
        # Pickled whole: a list reader (api/batch/page_readers.py) raises one in its own
        # process and the service raises it again. Exception's own pickling calls the class
        # with the message alone.
        return _restored, (type(self), self.args, self.__dict__)


def _restored(cls: type, args: tuple, state: dict) -> ServiceError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidInput(ServiceError):
    """The request is malformed or asks for something impossible (400)."""


class NotFound(ServiceError):
    """A named resource does not exist (404)."""


class Conflict(ServiceError):
    """The resource's current state forbids the request (409)."""


class Unauthenticated(ServiceError):
    """No valid credential (401)."""


class Forbidden(ServiceError):
    """A valid credential that may not do this (403)."""


class PayloadTooLarge(ServiceError):
    """The request body is over a limit (413)."""


class ConditionFailed(ServiceError):
    """A conditional header (If-Match, If-None-Match, ...) is not met (412)."""


class Unsupported(ServiceError):
    """An operation that makes no sense here (400 in ARM's habit: OperationNotAllowed)."""


class RangeNotSatisfiable(ServiceError):
    """A byte range outside what is there, e.g. one that starts past the end of a file (416)."""


class Unavailable(ServiceError):
    """The service cannot do this now; the client may retry later (503)."""


class TooManyRequests(ServiceError):
    """Refused for now, before any work is done; retry after `retry_after` seconds (429)."""

    def __init__(self, code: str, message: str, retry_after: int):
        super().__init__(code, message)
        self.retry_after = retry_after


def disk_full() -> Unavailable:
    return Unavailable("ServerBusy", "The server cannot store anything more: the disk that holds its data is full. "
                       "Delete what is no longer needed (deletes still work) and retry.")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception says the file system (or a quota on it) ran out of space."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_disk_full(cause)
