"""Reading Batch request bodies: Batch's own error shapes for a property that is missing
or has a bad value (`values` carry the property name and the reason)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from ..lenient import as_boolean, as_integer


def invalid(field: str, value: Any, reason: str) -> InvalidInput:
    return InvalidInput(
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        details=[{"key": "PropertyName", "value": field}, {"key": "PropertyValue", "value": _show(value)},
                 {"key": "Reason", "value": reason}])


def missing(field: str) -> InvalidInput:
    return InvalidInput(
        "MissingRequiredProperty",
        "A required property was not specified in the request body.",
        details=[{"key": "PropertyName", "value": field}])


def bad_body(reason: str) -> InvalidInput:
    return InvalidInput("InvalidRequestBody", "The specified Request Body is not syntactically valid.",
                        details=[{"key": "Reason", "value": reason}])


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:200]


def body_object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise bad_body("The request body must be a JSON object.")
    return value


def required(body: dict, name: str, field: str | None = None) -> Any:
    value = body.get(name)
    if value is None:
        raise missing(field or name)
    return value


def string(body: dict, name: str, field: str | None = None, required_: bool = False, max_len: int = 1024) -> str | None:
    field = field or name
    value = body.get(name)
    if value is None:
        if required_:
            raise missing(field)
        return None
    if not isinstance(value, str) or (required_ and not value.strip()):
        raise invalid(field, value, "A non-empty string is required.")
    if len(value) > max_len:
        raise invalid(field, value, f"The value is longer than {max_len} characters.")
    return value


# Batch's integers are int32 on the wire: anything outside is refused, whatever the field.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def integer(body: dict, name: str, field: str | None = None, minimum: int = INT32_MIN,
            maximum: int = INT32_MAX, default: int | None = None) -> int | None:
    field = field or name
    given = body.get(name)
    if given is None:
        return default
    value = as_integer(given)
    if value is None:
        raise invalid(field, given, "An integer is required.")
    if value < minimum:
        raise invalid(field, value, f"The value must be at least {minimum}.")
    if value > maximum:
        raise invalid(field, value, f"The value must be at most {maximum}.")
    return value


def boolean(body: dict, name: str, field: str | None = None, default: bool | None = None) -> bool | None:
    given = body.get(name)
    if given is None:
        return default
    value = as_boolean(given)
    if value is None:
        raise invalid(field or name, given, "true or false is required.")
    return value


def obj(body: dict, name: str, field: str | None = None, required_: bool = False) -> dict | None:
    field = field or name
    value = body.get(name)
    if value is None:
        if required_:
            raise missing(field)
        return None
    if not isinstance(value, dict):
        raise invalid(field, value, "An object is required.")
    return value


def array(body: dict, name: str, field: str | None = None, max_items: int | None = None) -> list:
    field = field or name
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(field, value, "An array is required.")
    if max_items is not None and len(value) > max_items:
        raise invalid(field, len(value), f"At most {max_items} items are allowed.")
    return value


def choice(body: dict, name: str, allowed: tuple[str, ...], field: str | None = None,
           default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in allowed:
        raise invalid(field or name, value, f"Allowed values: {', '.join(allowed)}.")
    return value.lower()


def name_value_pairs(body: dict, name: str, field: str | None = None) -> list[dict]:
    """metadata and environmentSettings: [{name, value}], names unique and non-empty."""
    field = field or name
    pairs, seen = [], set()
    for index, item in enumerate(array(body, name, field)):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, item, "An object with name and value is required.")
        key = string(item, "name", f"{where}.name", required_=True)
        value = item.get("value", "")
        if value is not None and not isinstance(value, str):
            raise invalid(f"{where}.value", value, "A string is required.")
        if "=" in key or "\x00" in key or "\x00" in (value or ""):
            raise invalid(f"{where}.name", key, "Names may not hold '=' and neither may hold NUL characters.")
        if key in seen:
            raise invalid(f"{where}.name", key, "The name appears more than once.")
        seen.add(key)
        pairs.append({"name": key, "value": value or ""})
    return pairs
