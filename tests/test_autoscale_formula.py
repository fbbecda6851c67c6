"""The autoscale formula language on its own (no server): every operator, function and
sample method, the results text, and the errors. Runs in milliseconds."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from batchyard.services.batch.autoscale.formula import Context, FormulaSyntaxError, evaluate, parse
from batchyard.services.batch.autoscale.values import Metric, Vec

NOW = datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)  # a Thursday
TARGETS = {"$TargetDedicatedNodes": 2.0, "$TargetLowPriorityNodes": 0.0, "$NodeDeallocationOption": "requeue"}


def metric(name: str, values: list[float], period: float = 30) -> Metric:
    """Samples every `period` seconds, the newest at NOW."""
    step = timedelta(seconds=period)
    n = len(values)
    return Metric(name, tuple((NOW - step * (n - 1 - i), float(v)) for i, v in enumerate(values)), step)


def context(**metrics) -> Context:
    doubles = {"$CurrentDedicatedNodes": 3.0, "$CurrentLowPriorityNodes": 1.0, "$TaskSlotsPerNode": 4.0}
    return Context(NOW, dict(TARGETS), doubles, {f"${k}": metric(f"${k}", v) for k, v in metrics.items()},
                   random.Random(7))


def run(formula: str, **metrics):
    return evaluate(parse(formula), context(**metrics))


def value(expression: str, **metrics):
    outcome = run(f"x = {expression};", **metrics)
    assert outcome.error is None, outcome.error
    return outcome.user["x"]


def error(formula: str, **metrics) -> str:
    outcome = run(formula, **metrics)
    assert outcome.error is not None
    assert outcome.settable == TARGETS  # a failed run changes nothing
    return outcome.error


# results text -------------------------------------------------------------------------------------

def test_results_text_of_azures_documented_time_formula():
    formula = """$curTime = time();
                 $workHours = $curTime.hour >= 8 && $curTime.hour < 18;
                 $isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
                 $isWorkingWeekdayHour = $workHours && $isWeekday;
                 $TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;"""
    assert run(formula).results == ("$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;"
                                    "$NodeDeallocationOption=requeue;$curTime=2016-10-13T19:18:47.805Z;"
                                    "$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0")


def test_results_of_a_single_assignment_and_of_an_empty_formula():
    assert run("$TargetDedicatedNodes=3").results == \
        "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert run("").results == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert run(";;").results == run("").results


def pending_tasks_formula(starting: int = 1, most: int = 25, seconds: int = 180) -> str:
    """Azure's documented "Pending tasks" formula; its numbers are the user's to adjust."""
    return f"""startingNumberOfVMs = {starting};
    maxNumberofVMs = {most};
    pendingTaskSamplePercent = $PendingTasks.GetSamplePercent({seconds} * TimeInterval_Second);
    pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample({seconds} * TimeInterval_Second));
    $TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
    $NodeDeallocationOption = taskcompletion;"""


def test_pending_tasks_formula_from_azures_documentation():
    formula = pending_tasks_formula()
    few = run(formula, PendingTasks=[40, 40])
    assert few.results == ("$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
                           "maxNumberofVMs=25;pendingTaskSamplePercent=33.333333333333336;pendingTaskSamples=1;"
                           "startingNumberOfVMs=1")
    many = run(formula, PendingTasks=[10, 20, 30, 40, 50, 60, 70])
    assert many.settable["$TargetDedicatedNodes"] == 25.0
    assert many.user["pendingTaskSamples"] == 40.0  # the 7 samples of the last 180 s


def test_aliases_and_precedence_of_the_full_name():
    assert run("$TargetDedicated = 4").settable["$TargetDedicatedNodes"] == 4.0
    assert run("$TargetLowPriority = 5").settable["$TargetLowPriorityNodes"] == 5.0
    both = run("$TargetDedicatedNodes = 1; $TargetDedicated = 9")
    assert both.settable["$TargetDedicatedNodes"] == 1.0
    assert run("x = $TargetDedicated + $TargetDedicatedNodes").user["x"] == 4.0


# operators ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("1 + 2", 3.0), ("5 - 7", -2.0), ("3 * 4", 12.0), ("7 / 2", 3.5), ("-3", -3.0), ("--3", 3.0),
    ("!0", 1.0), ("!2", 0.0), ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9.0), ("10 - 2 - 3", 5.0), ("8 / 2 / 2", 2.0),
    ("1 < 2", 1.0), ("2 <= 2", 1.0), ("2 == 2", 1.0), ("3 >= 4", 0.0), ("3 > 4", 0.0), ("3 != 4", 1.0),
    ("1 && 0", 0.0), ("1 && 2", 1.0), ("0 || 0", 0.0), ("0 || 3", 1.0), ("1 < 2 && 3 < 4 || 0", 1.0),
    ("1 ? 10 : 20", 10.0), ("0 ? 10 : 20", 20.0), ("0 ? 1 : 0 ? 2 : 3", 3.0), ("1.5e2", 150.0), (".5", 0.5),
    ('"abc" < "abd"', 1.0), ('"a" == "a"', 1.0),
])
def test_double_and_string_operators(expression, expected):
    assert value(expression) == expected


def test_vector_operators():
    v = "$PendingTasks.GetSample(3)"
    assert value(f"{v} + 1", PendingTasks=[1, 2, 3]) == Vec((4.0, 3.0, 2.0))  # newest sample first
    assert value(f"{v} * {v}", PendingTasks=[1, 2, 3]) == Vec((9.0, 4.0, 1.0))
    assert value(f"{v} - {v}", PendingTasks=[1, 2, 3]) == Vec((0.0, 0.0, 0.0))
    assert value(f"{v} / 2", PendingTasks=[2, 4, 6]) == Vec((3.0, 2.0, 1.0))
    assert value(f"10 - {v}", PendingTasks=[1, 2, 3]) == Vec((7.0, 8.0, 9.0))
    assert value(f"-{v}", PendingTasks=[1]) == Vec((-1.0,))
    assert "same length" in error(f"x = {v} + $PendingTasks.GetSample(2);", PendingTasks=[1, 2, 3])


def test_timeinterval_and_timestamp_operators():
    assert value("2 * TimeInterval_Minute") == timedelta(minutes=2)
    assert value("TimeInterval_Hour * 3") == timedelta(hours=3)
    assert value("TimeInterval_Hour / 4") == timedelta(minutes=15)
    assert value("TimeInterval_Day - TimeInterval_Hour") == timedelta(hours=23)
    assert value("TimeInterval_Week + TimeInterval_Second") == timedelta(weeks=1, seconds=1)
    assert value("-TimeInterval_Minute") == timedelta(minutes=-1)
    assert value("TimeInterval_Hour + time()") == NOW + timedelta(hours=1)
    assert value("time() + TimeInterval_Hour") == NOW + timedelta(hours=1)
    assert value("time() - TimeInterval_Hour") == NOW - timedelta(hours=1)
    assert value('time() - time("2016-10-13T18:18:47.805Z")') == timedelta(hours=1)
    assert value("TimeInterval_Minute < TimeInterval_Hour") == 1.0
    assert value('time("2016-01-01T00:00:00Z") < time()') == 1.0
    assert value("TimeInterval_Zero + TimeInterval_Millisecond * 1000") == timedelta(seconds=1)
    assert value("TimeInterval_Microsecond * 1000") == timedelta(milliseconds=1)
    assert value("TimeInterval_100ns < TimeInterval_Microsecond") == 1.0  # timestamps hold microseconds
    assert value("TimeInterval_Year") == timedelta(days=365)


@pytest.mark.parametrize("expression", [
    "time() + 1", "time() * 2", "TimeInterval_Second + 1", '"a" + "b"', "1 < time()", "!TimeInterval_Second",
    "TimeInterval_Second ? 1 : 2", '"a" && 1', "$PendingTasks + 1", "time() - 1",
])
def test_operators_refuse_other_types(expression):
    message = error(f"x = {expression};", PendingTasks=[1])
    assert "not defined" in message or "must be a double" in message or "is a metric" in message


def test_division_by_zero_is_an_error():
    assert error("x = 1 / 0;") == "Division by zero."
    assert error("x = TimeInterval_Hour / 0;") == "Division by zero."


# functions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("avg(1, 2, 3, 6)", 3.0), ("len(1, 2, 3)", 3.0), ("lg(8)", 3.0), ("ln(1)", 0.0), ("log(1000)", 3.0),
    ("max(1, 5, 3)", 5.0), ("min(4, 2, 8)", 2.0), ("norm(3, 4)", 5.0), ("range(2, 9, 5)", 7.0),
    ("std(2, 4, 4, 4, 5, 5, 7, 9)", math.sqrt(32 / 7)), ("std(5)", 0.0), ("sum(1, 2, 3.5)", 6.5),
    ("ceil(1.2)", 2.0), ("floor(1.8)", 1.0), ("round(2.4)", 2.0), ("round(2.6)", 3.0), ("len()", 0.0),
    ("sum()", 0.0), ("percentile($PendingTasks.GetSample(5), 50)", 3.0),
    ("percentile($PendingTasks.GetSample(5), 100)", 5.0), ("percentile($PendingTasks.GetSample(5), 0)", 1.0),
    ("val($PendingTasks.GetSample(5), 0)", 5.0), ("val($PendingTasks.GetSample(5), 4)", 1.0),
    ("avg($PendingTasks.GetSample(5), 9)", 4.0), ("max($PendingTasks.GetSample(5), 7)", 7.0),
    ('time("Thu, 13 Oct 2016 19:18:47 GMT").hour', 19.0), ("time().year", 2016.0), ("time().month", 10.0),
    ("time().day", 13.0), ("time().weekday", 4.0), ("time().minute", 18.0), ("time().second", 47.0),
    ('time("2016-10-16T00:00:00Z").weekday', 0.0),
])
def test_functions(expression, expected):
    assert value(expression, PendingTasks=[1, 2, 3, 4, 5]) == pytest.approx(expected)


def test_elementwise_functions_on_vectors():
    v = "$PendingTasks.GetSample(2)"
    assert value(f"lg({v})", PendingTasks=[2, 4]) == Vec((2.0, 1.0))
    assert value(f"log({v})", PendingTasks=[10, 100]) == Vec((2.0, 1.0))
    assert value(f"ln({v})", PendingTasks=[1, 1]) == Vec((0.0, 0.0))
    assert value(f"ceil({v})", PendingTasks=[1, 2]) == Vec((2.0, 1.0))
    assert value(f"floor({v} / 3)", PendingTasks=[4, 7]) == Vec((2.0, 1.0))
    assert value(f"round({v} / 4)", PendingTasks=[3, 9]) == Vec((2.0, 1.0))


def test_rand_time_and_stop():
    assert 0 <= value("rand()") < 1
    assert value("time()") == NOW
    assert value('time("")') == NOW
    stopped = run("$TargetDedicatedNodes = 5; stop(); $TargetDedicatedNodes = 9; y = 1")
    assert stopped.error is None
    assert stopped.settable["$TargetDedicatedNodes"] == 5.0 and "y" not in stopped.user


@pytest.mark.parametrize("formula, fragment", [
    ("x = avg();", "empty"), ("x = min();", "empty"), ("x = lg(0);", "not defined"), ("x = lg(1, 2);", "one"),
    ("x = val($PendingTasks.GetSample(1), 3);", "outside"), ("x = percentile($PendingTasks.GetSample(1), 101);",
                                                             "between 0 and 100"),
    ('x = time("yesterday");', "neither"), ("x = nosuch(1);", "Unknown function"), ("x = rand(1);", "takes 0"),
    ('x = avg("a");', "takes doubles"), ("x = y + 1;", "Undefined variable 'y'"),
    ("$something_useless", "Undefined variable"), ("$CurrentDedicatedNodes = 1;", "read-only"),
    ("$NodeDeallocationOption = 3;", "must be one of"), ("$TargetDedicatedNodes = time();", "must be a double"),
    ("x = time().hours;", "not a member"), ("x = (1).GetSample(1);", "method"),
    ("x = $PendingTasks.Nothing();", "no method"),
])
def test_evaluation_errors(formula, fragment):
    assert fragment in error(formula, PendingTasks=[1])


@pytest.mark.parametrize("formula", [
    "x = val(1, 1e309);", "x = $PendingTasks.GetSample(1e309);", "x = $PendingTasks.GetSample(1e309 - 1e309);",
    "x = TimeInterval_Day * 1e300;", "x = 1e300 * TimeInterval_Day;", "x = TimeInterval_Day / 1e-300;",
    "x = TimeInterval_Day * (1e309 - 1e309);", 'x = time("9999-12-31T23:59:59Z") + TimeInterval_Day;',
    'x = time("0001-01-01T00:00:00Z") - TimeInterval_Day;', "x = time() - TimeInterval_Day * 1000000;",
    "x = $PendingTasks.GetSample(TimeInterval_Day * 1000000);",
    "x = " + "1+" * 2000 + "1;", "x = " + "-" * 3000 + "1;", "x = " + "!" * 3000 + "1;",
])
def test_values_out_of_range_and_deep_nesting_are_errors_of_the_run(formula):
    """Each raised out of evaluate (a 500 from evaluateautoscale, a pool half made, the
    autoscaler's pass stopped for every pool); each now ends its run with an error."""
    assert error(formula, PendingTasks=[1])


def test_a_standard_deviation_past_a_double_s_range_is_infinity_as_in_dotnet():
    assert value("std(1e308, -1e308)") == math.inf


def test_an_interval_with_a_fraction_of_a_second_is_shown():
    outcome = run("x = TimeInterval_Millisecond * 1500;")
    assert outcome.error is None and "x=00:00:01.5000000" in outcome.results


# sample methods -----------------------------------------------------------------------------------

def test_sample_methods():
    samples = dict(CPUPercent=[10, 20, 30, 40])  # at NOW-90s, -60s, -30s, NOW
    assert value("$CPUPercent.GetSample(1)", **samples) == Vec((40.0,))
    assert value("$CPUPercent.GetSample(10)", **samples) == Vec((40.0, 30.0, 20.0, 10.0))
    assert value("$CPUPercent.GetSample(TimeInterval_Second * 60)", **samples) == Vec((40.0, 30.0, 20.0))
    assert value("$CPUPercent.GetSample(TimeInterval_Second * 30, TimeInterval_Second * 90)", **samples) == \
        Vec((30.0, 20.0, 10.0))
    assert value("$CPUPercent.GetSample(time() - TimeInterval_Minute)", **samples) == Vec((40.0, 30.0, 20.0))
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 2)", **samples) == 100.0
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 4)", **samples) == 50.0
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 4, TimeInterval_Minute * 2)", **samples) == 0
    assert value("$CPUPercent.GetSample(TimeInterval_Minute * 4, 50)", **samples) == Vec((40.0, 30.0, 20.0, 10.0))
    assert value("$CPUPercent.GetSamplePeriod()", **samples) == timedelta(seconds=30)
    assert value("$CPUPercent.Count()", **samples) == 4.0
    assert value("$CPUPercent.HistoryBeginTime()", **samples) == NOW - timedelta(seconds=90)


def test_insufficient_samples():
    message = error("x = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", CPUPercent=[1, 2, 3])
    assert "insufficient data" in message and "95 percent" in message
    assert "insufficient data" in error("x = $CPUPercent.GetSample(1);", CPUPercent=[])
    assert "no samples" in error("x = $CPUPercent.HistoryBeginTime();", CPUPercent=[])


# syntax -------------------------------------------------------------------------------------------

def test_comments_and_line_breaks():
    formula = "// the target\n$TargetDedicatedNodes = /* inline */ 4;\n\n// done\n"
    assert run(formula).settable["$TargetDedicatedNodes"] == 4.0


@pytest.mark.parametrize("formula, line, column", [
    ("$TargetDedicatedNodes = ;", 1, 25), ("a = 1;\nb = 2 +* 3;", 2, 8), ("x = 1 @ 2", 1, 7),
    ("x = (1 + 2", 1, 11), ("x = 1 = 2", 1, 7), ("x = avg(1,)", 1, 11),
])
def test_syntax_errors_name_their_position(formula, line, column):
    with pytest.raises(FormulaSyntaxError) as caught:
        parse(formula)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.message


def test_limits_of_length_and_statements():
    with pytest.raises(FormulaSyntaxError, match="8192"):
        parse("x = 1;" * 1400)
    with pytest.raises(FormulaSyntaxError, match="100"):
        parse("x = 1;" * 101)
