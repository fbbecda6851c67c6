"""ISO 8601 durations as Azure Batch exchanges them (WIRE.md 1.5).

The SDK writes zero-padded components ("PT15M00S", "PT01.5S") and "P" for zero; Batch answers
in .NET's XmlConvert style ("PT15M", "P1DT2H", "PT0S"). Batch is .NET underneath, so the range
is TimeSpan's: P10675199DT2H48M5.4775807S means "unlimited" (e.g. maxWallClockTime).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal

from ..errors import InvalidInput

TICKS_PER_SECOND = 10_000_000  # .NET ticks are 100 ns
TIMESPAN_MAX_TICKS = 2**63 - 1
TIMESPAN_MAX_TEXT = "P10675199DT2H48M5.4775807S"
# TimeSpan.MaxValue truncated to microseconds; anything at or above formats as TIMESPAN_MAX_TEXT.
TIMESPAN_MAX = timedelta(microseconds=TIMESPAN_MAX_TICKS // 10)

# Years and months are calendar-dependent, so a TimeSpan (and Batch) cannot hold them.
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?")
_MAX_TEXT_LENGTH = 64  # far beyond any TimeSpan; keeps huge digit strings out of Decimal


def _invalid(field: str, text: object, reason: str) -> InvalidInput:
    return InvalidInput(
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        details=[{"key": "PropertyName", "value": field},
                 {"key": "PropertyValue", "value": str(text)},
                 {"key": "Reason", "value": reason}])


def parse_duration(text: str, field: str) -> timedelta:
    """An ISO 8601 duration (days and smaller, or weeks) -> timedelta; else InvalidInput."""
    if not isinstance(text, str):
        raise _invalid(field, text, "The duration must be a string in ISO 8601 format.")
    match = _DURATION.fullmatch(text) if len(text) <= _MAX_TEXT_LENGTH else None
    if match is None:
        if re.match(r"P\d+[YM]", text):  # P1Y, P6M: calendar units, said plainly
            raise _invalid(field, text, "Years and months are not supported: use days (P30D).")
        raise _invalid(field, text, "The duration must be a non-negative ISO 8601 duration "
                                    "such as PT15M or P1DT2H.")
    parts = {name: Decimal(value) for name, value in match.groupdict(default="0").items()}
    seconds = (((parts["weeks"] * 7 + parts["days"]) * 24 + parts["hours"]) * 60
               + parts["minutes"]) * 60 + parts["seconds"]
    ticks = int(seconds * TICKS_PER_SECOND)  # sub-tick digits are dropped, as .NET does
    if ticks > TIMESPAN_MAX_TICKS:
        raise _invalid(field, text, f"The duration exceeds the maximum, {TIMESPAN_MAX_TEXT}.")
    # Truncating to microseconds keeps TimeSpan.MaxValue at or below TIMESPAN_MAX.
    return timedelta(microseconds=ticks // 10)


def later(moment: datetime, span: timedelta) -> datetime | None:
    """moment + span; None when that is past year 9999, Python's last (a time that never
    comes: a start window or a recurrence of up to TimeSpan.MaxValue, 29,000 years)."""
    try:
        return moment + span
    except OverflowError:
        return None


def format_duration(td: timedelta) -> str:
    """timedelta -> Azure's response form: "PT15M", "P1DT2H", "PT1.5S", "PT0S"."""
    if td >= TIMESPAN_MAX:
        return TIMESPAN_MAX_TEXT
    if td <= -TIMESPAN_MAX:  # abs(timedelta.min) would overflow; TimeSpan.MinValue is one tick lower
        return "-P10675199DT2H48M5.4775808S"
    sign = "-" if td < timedelta(0) else ""
    td = abs(td)
    hours, rest = divmod(td.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    out = f"{sign}P{td.days}D" if td.days else f"{sign}P"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or td.microseconds:
        fraction = f".{td.microseconds:06d}".rstrip("0") if td.microseconds else ""
        clock += f"{seconds}{fraction}S"
    if clock:
        return f"{out}T{clock}"
    return out if td.days else f"{sign}PT0S"
