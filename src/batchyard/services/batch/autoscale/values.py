"""The value types of Azure Batch's autoscale formulas and how a run's results show them.

double is a Python float, doubleVec a `Vec` (a tuple of floats), timestamp an aware
`datetime`, timeinterval a `timedelta`, string a `str`. A service-defined metric
(`$PendingTasks`, `$CPUPercent`, ...) is a `Metric`: not a number but an object whose
methods (`GetSample`, ...) read its samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


class Vec(tuple):
    """doubleVec."""


class FormulaError(Exception):
    """An evaluation that cannot go on; Azure reports it in the run's error."""


@dataclass(frozen=True)
class Metric:
    """The history of one service-defined metric: (time, value) samples, oldest first,
    one every `period`."""
    name: str
    samples: tuple[tuple[datetime, float], ...]
    period: timedelta


TIME_INTERVALS = {
    "TimeInterval_Zero": timedelta(0),
    "TimeInterval_100ns": timedelta(0),  # below the microsecond that times are held in
    "TimeInterval_Microsecond": timedelta(microseconds=1),
    "TimeInterval_Millisecond": timedelta(milliseconds=1),
    "TimeInterval_Second": timedelta(seconds=1),
    "TimeInterval_Minute": timedelta(minutes=1),
    "TimeInterval_Hour": timedelta(hours=1),
    "TimeInterval_Day": timedelta(days=1),
    "TimeInterval_Week": timedelta(weeks=1),
    "TimeInterval_Year": timedelta(days=365),
}

# $NodeDeallocationOption's values are written bare in formulas.
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


# The names Azure's error messages give a formula's value types.
_TYPE_NAMES = ((Vec, "doubleVec"), (float, "double"), (datetime, "timestamp"), (timedelta, "timeinterval"),
               (str, "string"), (Metric, "metric"))


def type_name(value) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


def show(value) -> str:
    """A value as a run's results text shows it: `10`, `0.5`, `[1,2]`,
    `2016-10-13T19:18:47.805Z`, `00:03:00` (as .NET shows a TimeSpan)."""
    if isinstance(value, Vec):
        return "[" + ",".join(show_double(v) for v in value) + "]"
    if isinstance(value, float):
        return show_double(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, timedelta):
        return show_interval(value)
    if isinstance(value, Metric):
        return value.name
    return str(value)


def show_double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def show_interval(value: timedelta) -> str:
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    days = f"{value.days}." if value.days else ""
    fraction = f".{value.microseconds * 10:07d}" if value.microseconds else ""
    return f"{sign}{days}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}"
