"""The functions of autoscale formulas and the sample methods of metrics, as Azure documents
them. Functions over a doubleVecList take any mix of doubles and doubleVecs, flattened
into one vector (`avg(v, 7)` is `avg(1, 2, 3, 7)` for `v = [1, 2, 3]`)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .values import FormulaError, Metric, Vec, type_name


class Stop(Exception):
    """stop(): the evaluation ends; what was assigned so far stands."""


def flatten(name: str, args: list) -> list[float]:
    values: list[float] = []
    for arg in args:
        if isinstance(arg, Vec):
            values.extend(arg)
        elif isinstance(arg, float):
            values.append(arg)
        else:
            raise FormulaError(f"{name}() takes doubles and doubleVecs, not {type_name(arg)}.")
    return values


def _nonempty(name: str, args: list) -> list[float]:
    values = flatten(name, args)
    if not values:
        raise FormulaError(f"{name}() of an empty list.")
    return values


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    # a product, not `** 2`: a square past a double's range is Infinity, as in .NET, not an error
    return math.sqrt(sum((v - mean) * (v - mean) for v in values) / (len(values) - 1))


_LIST_FUNCTIONS = {
    "avg": lambda v: sum(v) / len(v),
    "max": max,
    "min": min,
    "range": lambda v: max(v) - min(v),
    "std": _std,
}


def _elementwise(name: str, function, args: list):
    """lg, ln, log, ceil, floor, round: a double gives a double, a doubleVec a doubleVec."""
    if len(args) != 1:
        raise FormulaError(f"{name}() takes one argument.")
    (arg,) = args

    def one(value: float) -> float:
        try:
            return float(function(value))
        except (ValueError, OverflowError):
            raise FormulaError(f"{name}() is not defined for {value!r}.") from None

    if isinstance(arg, float):
        return one(arg)
    if isinstance(arg, Vec):
        return Vec(one(v) for v in arg)
    raise FormulaError(f"{name}() takes a double or a doubleVec, not {type_name(arg)}.")


_ELEMENTWISE = {"lg": math.log2, "ln": math.log, "log": math.log10, "ceil": math.ceil, "floor": math.floor,
                "round": round}


def call(name: str, args: list, now: datetime, rng: random.Random):
    if name in _LIST_FUNCTIONS:
        return float(_LIST_FUNCTIONS[name](_nonempty(name, args)))
    if name in _ELEMENTWISE:
        return _elementwise(name, _ELEMENTWISE[name], args)
    if name == "len":
        return float(len(flatten(name, args)))
    if name == "sum":
        return float(sum(flatten(name, args)))
    if name == "norm":
        return math.sqrt(sum(v * v for v in flatten(name, args)))
    if name == "percentile":
        return _percentile(args)
    if name == "val":
        return _val(args)
    if name == "rand":
        _arity(name, args, 0)
        return rng.random()
    if name == "stop":
        _arity(name, args, 0)
        raise Stop()
    if name == "time":
        return _time(args, now)
    raise FormulaError(f"Unknown function '{name}'.")


def _arity(name: str, args: list, count: int) -> None:
    if len(args) != count:
        raise FormulaError(f"{name}() takes {count} argument{'s' if count != 1 else ''}, not {len(args)}.")


def _vector_arg(name: str, value) -> list[float]:
    if isinstance(value, Vec):
        return list(value)
    if isinstance(value, float):
        return [value]
    raise FormulaError(f"{name}() takes a doubleVec, not {type_name(value)}.")


def _double_arg(name: str, value) -> float:
    if not isinstance(value, float):
        raise FormulaError(f"{name}() takes a double, not {type_name(value)}.")
    return value


def _percentile(args: list) -> float:
    """The nearest-rank percentile: the smallest element with at least p% of the vector
    at or below it."""
    _arity("percentile", args, 2)
    values = sorted(_vector_arg("percentile", args[0]))
    p = _double_arg("percentile", args[1])
    if not values:
        raise FormulaError("percentile() of an empty doubleVec.")
    if not 0 <= p <= 100:
        raise FormulaError(f"percentile() takes a percentage between 0 and 100, not {p!r}.")
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def _val(args: list) -> float:
    _arity("val", args, 2)
    values = _vector_arg("val", args[0])
    index = _double_arg("val", args[1])
    if not math.isfinite(index) or index != int(index) or not 0 <= index < len(values):
        raise FormulaError(f"val(): index {index!r} is outside the doubleVec of length {len(values)}.")
    return values[int(index)]


def _time(args: list, now: datetime) -> datetime:
    """time(): now; time("...") a W3C-DTF (ISO 8601) or RFC 1123 time."""
    if not args:
        return now
    if len(args) != 1 or not isinstance(args[0], str):
        raise FormulaError("time() takes no argument or one string.")
    text = args[0]
    if text == "":
        return now
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise FormulaError(f"time(): '{text}' is neither a W3C-DTF nor an RFC 1123 time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# sample methods -----------------------------------------------------------------------------------

def method(metric: Metric, name: str, args: list, now: datetime):
    if name == "GetSample":
        return _get_sample(metric, args, now)
    if name == "GetSamplePercent":
        if not 1 <= len(args) <= 2:
            raise FormulaError(f"{metric.name}.GetSamplePercent() takes a start and an optional end.")
        start, end = _window(metric, args, now)
        return _percent(metric, start, end)[1]
    if name == "GetSamplePeriod":
        _arity(f"{metric.name}.GetSamplePeriod", args, 0)
        return metric.period
    if name == "Count":
        _arity(f"{metric.name}.Count", args, 0)
        return float(len(metric.samples))
    if name == "HistoryBeginTime":
        _arity(f"{metric.name}.HistoryBeginTime", args, 0)
        if not metric.samples:
            raise FormulaError(f"{metric.name}.HistoryBeginTime(): the metric has no samples yet.")
        return metric.samples[0][0]
    raise FormulaError(f"{metric.name} has no method '{name}'.")


def _get_sample(metric: Metric, args: list, now: datetime) -> Vec:
    """GetSample(count), GetSample(start [, percent]), GetSample(start, end [, percent]):
    the newest sample first."""
    if len(args) == 1 and isinstance(args[0], float):
        if not math.isfinite(args[0]):
            raise FormulaError(f"{metric.name}.GetSample(): the count of samples must be a finite number.")
        count = int(args[0])
        if count < 1:
            raise FormulaError(f"{metric.name}.GetSample(): the count of samples must be at least 1.")
        if not metric.samples:
            raise _insufficient(metric, 0, 100, 0)
        return Vec(value for _, value in reversed(metric.samples[-count:]))
    if not 1 <= len(args) <= 3:
        raise FormulaError(f"{metric.name}.GetSample() takes a count, or a start, an optional end and an "
                           "optional sample percentage.")
    required = None
    if isinstance(args[-1], float) and len(args) > 1:
        required = args[-1]
        args = args[:-1]
    start, end = _window(metric, args, now)
    found, percent = _percent(metric, start, end)
    if required is not None and percent < required:
        raise _insufficient(metric, percent, required, len(found))
    return Vec(value for _, value in reversed(found))


def _moment(metric: Metric, value, now: datetime) -> datetime:
    """A timeinterval counts back from now; a timestamp is itself."""
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, datetime):
        return value
    raise FormulaError(f"{metric.name}: a sample time must be a timeinterval or a timestamp, not "
                       f"{type_name(value)}.")


def _window(metric: Metric, args: list, now: datetime) -> tuple[datetime, datetime]:
    first = _moment(metric, args[0], now)
    second = _moment(metric, args[1], now) if len(args) > 1 else now
    return min(first, second), max(first, second)


def _percent(metric: Metric, start: datetime, end: datetime) -> tuple[list, float]:
    found = [(at, value) for at, value in metric.samples if start <= at <= end]
    expected = max(1, int((end - start) / metric.period))
    return found, min(100.0, 100.0 * len(found) / expected)


def _insufficient(metric: Metric, percent: float, required: float, found: int) -> FormulaError:
    return FormulaError(f"{metric.name}.GetSample(): insufficient data: {found} samples, {percent:.0f} percent of "
                        f"the interval, are available; {required:.0f} percent are required.")
