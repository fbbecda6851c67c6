"""Autoscale through the real azure-batch client: Azure's documented $PendingTasks formula
grows a pool while 200 tasks wait and shrinks it to zero after; evaluateautoscale answers
Azure's results text for its documented formulas, evaluation errors in the run, syntax
errors with their position. The server samples every second and lets formulas run every
2 seconds (BATCHYARD_AUTOSCALE_SAMPLE_SECONDS, BATCHYARD_MIN_AUTOSCALE_INTERVAL)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import Clients, Server, wait_for
from test_autoscale_formula import pending_tasks_formula
from test_batch_pools import base_pool, error_values

# Azure's "Pending tasks" sample formula, starting from no node, at most 3, over 10 s of samples.
PENDING_TASKS = pending_tasks_formula(starting=0, most=3, seconds=10)

TIME_BASED = """$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;"""

PREEMPTED = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""


ENABLE_GAP = 6  # seconds between two enableautoscale calls on a pool (Azure's 30, lowered)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    env = {"BATCHYARD_MIN_AUTOSCALE_INTERVAL": "2", "BATCHYARD_AUTOSCALE_SAMPLE_SECONDS": "1",
           "BATCHYARD_AUTOSCALE_ENABLE_GAP_SECONDS": str(ENABLE_GAP)}
    with Server(tmp_path_factory.mktemp("autoscale") / "data", extra_env=env) as srv:
        clients = Clients(srv.info)
        clients.batch_key.list_supported_images()
        yield clients


def autoscale_pool(clients, pool_id: str, formula: str, interval: str = "PT2S") -> None:
    body = base_pool(clients, pool_id, enableAutoScale=True, autoScaleFormula=formula,
                     autoScaleEvaluationInterval=interval)
    del body["targetDedicatedNodes"]
    clients.batch_key.create_pool(body)


def test_pending_tasks_formula_grows_the_pool_and_shrinks_it_to_zero(batch):
    client = batch.batch_key
    autoscale_pool(batch, "scaling", PENDING_TASKS)
    pool = client.get_pool("scaling")
    assert pool.enable_auto_scale and pool.auto_scale_formula == PENDING_TASKS
    assert pool.auto_scale_evaluation_interval.total_seconds() == 2
    assert pool.auto_scale_run.results.startswith("$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;"
                                                  "$NodeDeallocationOption=taskcompletion;")
    assert pool.target_dedicated_nodes == 0
    client.create_job({"id": "work", "poolInfo": {"poolId": "scaling"}})
    client.create_tasks("work", [{"id": f"t{i}", "commandLine": "sleep 0.4"} for i in range(200)])
    grown = wait_for(lambda: (p := client.get_pool("scaling")).current_dedicated_nodes == 3 and p, timeout=120,
                     what="the pool to grow to 3 nodes")
    assert grown.target_dedicated_nodes == 3
    assert "$TargetDedicatedNodes=3;" in grown.auto_scale_run.results
    wait_for(lambda: client.get_job_task_counts("work").task_counts.completed == 200, timeout=300,
             what="the 200 tasks")
    # the average of the last 10 s of samples falls to 0 (a fraction of a node is no node)
    shrunk = wait_for(lambda: (p := client.get_pool("scaling")).current_dedicated_nodes == 0 and
                      p.allocation_state == "steady" and p.auto_scale_run.results.startswith(
                          "$TargetDedicatedNodes=0;") and p, timeout=120, what="the pool to shrink to zero")
    assert shrunk.target_dedicated_nodes == 0
    assert shrunk.auto_scale_run.error is None
    assert list(client.list_nodes("scaling")) == []


def test_evaluate_returns_azures_results_text(batch):
    client = batch.batch_key
    autoscale_pool(batch, "evaluated", "$TargetDedicatedNodes=0", interval="PT5M")
    run = client.evaluate_pool_auto_scale("evaluated", {"autoScaleFormula": "$TargetDedicatedNodes=3"})
    assert run.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert run.error is None

    run = client.evaluate_pool_auto_scale("evaluated", {"autoScaleFormula": TIME_BASED})
    moment = re.search(r"\$curTime=([^;]+)", run.results).group(1)
    now = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    work_hours = int(8 <= now.hour < 18)
    weekday = int(1 <= now.isoweekday() % 7 <= 5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", moment)
    assert run.results == (f"$TargetDedicatedNodes={20 if work_hours and weekday else 10};"
                           f"$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;$curTime={moment};"
                           f"$isWeekday={weekday};$isWorkingWeekdayHour={work_hours and weekday};"
                           f"$workHours={work_hours}")

    wait_for(lambda: client.evaluate_pool_auto_scale(
        "evaluated", {"autoScaleFormula": "$TargetDedicatedNodes = $PreemptedNodeCount.Count() > 0"}).results
        .startswith("$TargetDedicatedNodes=1;"), timeout=30, what="a first sample")
    run = client.evaluate_pool_auto_scale("evaluated", {"autoScaleFormula": PREEMPTED})
    assert run.results == ("$TargetDedicatedNodes=0;$TargetLowPriorityNodes=25;"
                           "$NodeDeallocationOption=taskcompletion;maxNumberofVMs=25")
    assert client.get_pool("evaluated").target_dedicated_nodes == 0  # evaluating applies nothing


def test_evaluation_errors_and_syntax_errors(batch):
    client = batch.batch_key
    autoscale_pool(batch, "errors", "$TargetDedicatedNodes=0", interval="PT5M")
    run = client.evaluate_pool_auto_scale("errors", {"autoScaleFormula": "$something_useless"})
    assert run.error.code == "AutoScalingFormulaEvaluationError"
    assert run.results == "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert "something_useless" in run.error.error_values[0].value
    run = client.evaluate_pool_auto_scale("errors", {"autoScaleFormula":
                                                     "$TargetDedicatedNodes = avg($CPUPercent.GetSample(TimeInterval_Minute * 10, 95))"})
    assert run.error.code == "AutoScalingFormulaEvaluationError" and "insufficient data" in run.error.error_values[0].value

    with pytest.raises(HttpResponseError) as caught:
        client.evaluate_pool_auto_scale("errors", {"autoScaleFormula": "a = 1;\n$TargetDedicatedNodes = (a +;"})
    assert caught.value.status_code == 400 and caught.value.error.code == "AutoScalingFormulaSyntaxError"
    assert error_values(caught) == {"Line": "2", "Column": "29", "Message": "Unexpected ';'."}
    assert "line 2, column 29" in caught.value.error.message

    with pytest.raises(HttpResponseError) as caught:
        client.enable_pool_auto_scale("errors", {"autoScaleFormula": "$TargetDedicatedNodes=1",
                                                 "autoScaleEvaluationInterval": "PT1S"})
    assert caught.value.status_code == 400 and error_values(caught)["PropertyName"] == "autoScaleEvaluationInterval"
    with pytest.raises(HttpResponseError) as caught:
        autoscale_pool(batch, "bad-formula", "$TargetDedicatedNodes = = 1")
    assert caught.value.error.code == "AutoScalingFormulaSyntaxError"


def test_enable_disable_and_resize(batch):
    client = batch.batch_key
    client.create_pool(base_pool(batch, "manual", dedicated=0))
    with pytest.raises(HttpResponseError) as caught:
        client.evaluate_pool_auto_scale("manual", {"autoScaleFormula": "$TargetDedicatedNodes=1"})
    assert caught.value.status_code == 409
    wait_for(lambda: client.get_pool("manual").allocation_state == "steady", what="steady")
    client.enable_pool_auto_scale("manual", {"autoScaleFormula": "$TargetDedicatedNodes=1",
                                             "autoScaleEvaluationInterval": "PT10M"})
    enabled = time.monotonic()
    with pytest.raises(HttpResponseError) as caught:  # Azure takes one every 30 seconds (ENABLE_GAP here)
        client.enable_pool_auto_scale("manual", {"autoScaleFormula": "$TargetDedicatedNodes=2"})
    assert caught.value.status_code == 409 and caught.value.error.code == "TooManyEnableAutoScaleRequests"
    assert client.get_pool("manual").auto_scale_formula == "$TargetDedicatedNodes=1"
    pool = wait_for(lambda: (p := client.get_pool("manual")).current_dedicated_nodes == 1 and p,
                    what="the formula's one node")
    assert pool.enable_auto_scale and pool.auto_scale_run.results.startswith("$TargetDedicatedNodes=1;")
    with pytest.raises(HttpResponseError) as caught:
        client.begin_resize_pool("manual", {"targetDedicatedNodes": 2}, polling_interval=0.5).result()
    assert caught.value.status_code == 409
    time.sleep(max(0.0, ENABLE_GAP - (time.monotonic() - enabled)))
    client.enable_pool_auto_scale("manual", {"autoScaleFormula": "$TargetDedicatedNodes=0"})
    assert client.get_pool("manual").auto_scale_evaluation_interval.total_seconds() == 600  # kept
    # the nodes go before the pool's resize ends: a manual resize waits for steady, as on Azure
    wait_for(lambda: (p := client.get_pool("manual")).current_dedicated_nodes == 0 and p.allocation_state == "steady",
             what="the formula's zero nodes, steady")
    client.disable_pool_auto_scale("manual")
    pool = client.get_pool("manual")
    assert not pool.enable_auto_scale and pool.auto_scale_formula is None and pool.auto_scale_run is None
    client.begin_resize_pool("manual", {"targetDedicatedNodes": 1}, polling_interval=0.5).result()
    assert client.get_pool("manual").target_dedicated_nodes == 1


def test_a_formula_that_fails_stops_only_its_own_pool(batch):
    """A value out of range raised out of the formula's evaluation: a pool created with such a
    formula got 500 and was left half made, and a pool whose formula failed later stopped the
    autoscaler's pass for every pool. Now each is an error of its own pool's run."""
    client = batch.batch_key
    autoscale_pool(batch, "healthy", "$TargetDedicatedNodes = 0;")
    autoscale_pool(batch, "overflows", "$TargetDedicatedNodes = 0; $x = val(1, 1e309);")
    failed = client.get_pool("overflows").auto_scale_run
    assert failed.error.code == "AutoScalingFormulaEvaluationError" and "val()" in failed.error.error_values[0].value
    soon = datetime.now(UTC) + timedelta(seconds=3)
    autoscale_pool(batch, "later", f'$TargetDedicatedNodes = 0; $x = time() > time("{soon.isoformat()}") ? '
                                   "TimeInterval_Day * 1e300 : 0;")
    wait_for(lambda: client.get_pool("later").auto_scale_run.error is not None, what="the later formula to fail")
    ran = client.get_pool("healthy").auto_scale_run.timestamp
    wait_for(lambda: client.get_pool("healthy").auto_scale_run.timestamp > ran, timeout=20,
             what="the healthy pool's next run")
    shown = client.evaluate_pool_auto_scale("healthy", {"autoScaleFormula": "$TargetDedicatedNodes = 0; "
                                                                            "$x = TimeInterval_Millisecond * 1500;"})
    assert shown.error is None and "$x=00:00:01.5000000" in shown.results
    for pool_id in ("healthy", "overflows", "later"):
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()
