"""Errors the services raise. Each kind maps to one HTTP status in the API layer; the code
and message are Azure's."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, code: str, message: str, target: str | None = None, details: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []


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
