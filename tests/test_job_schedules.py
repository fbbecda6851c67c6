"""Job schedules through the real azure-batch client: jobs `{schedule}:job-N` made at a
recurrence (Azure's least, a minute, lowered to a second by
BATCHYARD_MIN_RECURRENCE_INTERVAL), at most one active at a time; the eleven operations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from conftest import Clients, Server, pool_settled, wait_for
from test_batch_pools import base_pool, error_values

POOL = "scheduled"


@pytest.fixture(scope="module")
def scheduling(tmp_path_factory):
    env = {"BATCHYARD_MIN_RECURRENCE_INTERVAL": "1"}
    with Server(tmp_path_factory.mktemp("schedules") / "data", extra_env=env) as srv:
        clients = Clients(srv.info)
        clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=1))
        pool_settled(clients.batch_key, POOL)
        yield clients


@pytest.fixture(scope="module")
def batch(scheduling):
    return scheduling.batch_key


def spec(**extra) -> dict:
    return {"poolInfo": {"poolId": POOL}, "onAllTasksComplete": "terminatejob", **extra}


def schedule_jobs(client, schedule_id: str) -> list[str]:
    return sorted(j.id for j in client.list_jobs_from_schedule(schedule_id))


def finish(client, job_id: str) -> None:
    client.create_task(job_id, {"id": "only", "commandLine": "true"})
    wait_for(lambda: client.get_job(job_id).state == "completed", what=f"{job_id} to complete")


def test_recurring_jobs_one_active_at_a_time(batch):
    batch.create_job_schedule({"id": "every", "schedule": {"recurrenceInterval": "PT2S"},
                               "jobSpecification": spec(priority=7), "metadata": [{"name": "k", "value": "v"}]})
    wait_for(lambda: schedule_jobs(batch, "every") == ["every:job-1"], what="the first job")
    schedule = batch.get_job_schedule("every")
    assert schedule.state == "active" and schedule.execution_info.recent_job.id == "every:job-1"
    assert unquote(schedule.execution_info.recent_job.url).endswith("/jobs/every:job-1")
    assert schedule.schedule.recurrence_interval == timedelta(seconds=2)
    assert schedule.job_specification.priority == 7 and schedule.metadata[0].value == "v"
    assert batch.get_job("every:job-1").priority == 7
    # the next run comes due while job-1 is active: no second job
    due = schedule.execution_info.next_run_time
    wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=1), what="the next run time to pass")
    assert schedule_jobs(batch, "every") == ["every:job-1"]
    finish(batch, "every:job-1")
    wait_for(lambda: schedule_jobs(batch, "every") == ["every:job-1", "every:job-2"], what="the second job")
    assert batch.get_job_schedule("every").execution_info.recent_job.id == "every:job-2"

    batch.disable_job_schedule("every")
    assert batch.get_job_schedule("every").state == "disabled"
    finish(batch, "every:job-2")
    due = batch.get_job_schedule("every").execution_info.next_run_time
    wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=1), what="a run time while disabled")
    assert schedule_jobs(batch, "every") == ["every:job-1", "every:job-2"]
    batch.enable_job_schedule("every")
    wait_for(lambda: "every:job-3" in schedule_jobs(batch, "every"), what="a job after enabling")

    batch.begin_terminate_job_schedule("every", polling_interval=1).result()
    ended = batch.get_job_schedule("every")
    assert ended.state == "completed" and ended.execution_info.end_time is not None
    assert batch.get_job("every:job-3").state == "completed"
    batch.begin_delete_job_schedule("every", polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError):  # this SDK raises on exists' 404
        batch.job_schedule_exists("every")
    wait_for(lambda: not [j for j in batch.list_jobs() if j.id.startswith("every:")], what="its jobs to go")


def test_one_job_without_recurrence_and_do_not_run_until(batch):
    later = datetime.now(UTC) + timedelta(seconds=2)
    batch.create_job_schedule({"id": "once", "schedule": {"doNotRunUntil": later.isoformat()},
                               "jobSpecification": spec()})
    assert batch.get_job_schedule("once").execution_info.next_run_time.timestamp() == \
        pytest.approx(later.timestamp(), abs=0.01)
    assert schedule_jobs(batch, "once") == []
    wait_for(lambda: schedule_jobs(batch, "once") == ["once:job-1"], what="the job at doNotRunUntil")
    assert datetime.now(UTC) >= later
    finish(batch, "once:job-1")
    wait_for(lambda: batch.get_job_schedule("once").state == "completed", what="the schedule to complete")


def test_operations_and_errors(batch):
    batch.create_job_schedule({"id": "ops", "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z"},
                               "jobSpecification": spec()})
    assert batch.job_schedule_exists("ops") is True
    with pytest.raises(ResourceNotFoundError):
        batch.job_schedule_exists("nope")
    assert "ops" in [s.id for s in batch.list_job_schedules()]
    batch.update_job_schedule("ops", {"metadata": [{"name": "a", "value": "1"}]})
    patched = batch.get_job_schedule("ops")
    assert patched.metadata[0].name == "a" and patched.schedule.do_not_run_until.year == 2099
    batch.replace_job_schedule("ops", {"schedule": {"recurrenceInterval": "PT1H", "doNotRunUntil":
                                                    "2099-01-01T00:00:00Z"}, "jobSpecification": spec(priority=3)})
    replaced = batch.get_job_schedule("ops")
    assert replaced.metadata in (None, []) and replaced.job_specification.priority == 3
    assert replaced.schedule.recurrence_interval == timedelta(hours=1)

    with pytest.raises(ResourceExistsError) as caught:
        batch.create_job_schedule({"id": "ops", "schedule": {}, "jobSpecification": spec()})
    assert caught.value.error.code == "JobScheduleExists"
    with pytest.raises(ResourceNotFoundError) as caught:
        batch.get_job_schedule("nope")
    assert caught.value.error.code == "JobScheduleNotFound"
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job_schedule({"id": "fast", "schedule": {"recurrenceInterval": "PT0.5S"},
                                   "jobSpecification": spec()})
    assert error_values(caught)["PropertyName"] == "schedule.recurrenceInterval"
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job_schedule({"id": "nospec", "schedule": {}})
    assert caught.value.status_code == 400 and error_values(caught)["PropertyName"] == "jobSpecification"
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job_schedule({"id": "badspec", "schedule": {}, "jobSpecification": {"priority": 3}})
    assert error_values(caught)["PropertyName"] == "poolInfo"
    with pytest.raises(HttpResponseError) as caught:
        batch.enable_job_schedule("ops")
    assert caught.value.status_code == 409


def test_a_schedule_s_auto_pool_is_checked_when_the_schedule_is_made(scheduling, batch):
    """The pool a schedule's jobs would make is checked as a pool is, when the schedule is
    made or its jobSpecification replaced: refused then (400), not accepted and found wanting
    at each run, with no job made."""
    pool = {k: v for k, v in base_pool(scheduling, "unused", dedicated=0).items() if k != "id"}

    def with_pool(**change) -> dict:
        return {"poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {**pool, **change}}}}

    for change, prop in (({"userAccounts": [{"name": "u", "password": "p@ss"}]}, "userAccounts"),
                         ({"vmSize": "no_such_size"}, "vmSize"), ({"taskSlotsPerNode": 0}, "taskSlotsPerNode")):
        with pytest.raises(HttpResponseError) as caught:
            batch.create_job_schedule({"id": "bad-auto-pool", "schedule": {}, "jobSpecification": with_pool(**change)})
        assert caught.value.status_code == 400
        assert error_values(caught)["PropertyName"] == f"poolInfo.autoPoolSpecification.pool.{prop}"
    with pytest.raises(ResourceNotFoundError):
        batch.get_job_schedule("bad-auto-pool")
    batch.create_job_schedule({"id": "checked-auto-pool", "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z"},
                               "jobSpecification": with_pool()})
    with pytest.raises(HttpResponseError) as caught:
        batch.replace_job_schedule("checked-auto-pool", {"schedule": {}, "jobSpecification": with_pool(
            mountConfiguration=[{"nfsMountConfiguration": {"source": "s", "relativeMountPath": "m"}}])})
    assert error_values(caught)["PropertyName"] == "poolInfo.autoPoolSpecification.pool.mountConfiguration"
    batch.begin_delete_job_schedule("checked-auto-pool", polling_interval=0.1).result()


def test_schedule_auto_pool_is_shared_by_its_jobs_and_goes_with_it(scheduling, batch):
    pool = {k: v for k, v in base_pool(scheduling, "unused", dedicated=0).items() if k != "id"}
    batch.create_job_schedule({"id": "pooled", "schedule": {"recurrenceInterval": "PT1S"}, "jobSpecification": {
        "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "sched", "poolLifetimeOption": "jobschedule",
                                               "pool": pool}}}})
    wait_for(lambda: schedule_jobs(batch, "pooled") == ["pooled:job-1"], what="the first job")
    pool_id = batch.get_job("pooled:job-1").execution_info.pool_id
    assert pool_id.startswith("sched_") and batch.get_pool(pool_id).state == "active"
    batch.begin_terminate_job("pooled:job-1", {"terminateReason": "next"}, polling_interval=1).result()
    wait_for(lambda: "pooled:job-2" in schedule_jobs(batch, "pooled"), what="the second job")
    assert batch.get_job("pooled:job-2").execution_info.pool_id == pool_id
    batch.begin_terminate_job_schedule("pooled", polling_interval=1).result()
    wait_for(lambda: pool_id not in [p.id for p in batch.list_pools()], what="the schedule's pool to go")


def test_times_past_year_9999_never_come_and_stop_no_other_schedule(batch):
    """A start window or recurrence that carries a time past year 9999 (a span of
    TimeSpan.MaxValue, or a doNotRunUntil at the end of 9999) raised in the schedules' pass,
    which then made no job for any schedule; now such a window never closes and such a
    recurrence never comes, and a schedule that fails stops no other."""
    longest = "P10675199DT2H48M5.4775807S"
    batch.create_job_schedule({"id": "late", "schedule": {"doNotRunUntil": "9999-12-31T23:00:00Z",
                                                          "startWindow": "PT1H"}, "jobSpecification": spec()})
    batch.create_job_schedule({"id": "wide", "schedule": {"startWindow": longest}, "jobSpecification": spec()})
    batch.create_job_schedule({"id": "rare", "schedule": {"recurrenceInterval": longest}, "jobSpecification": spec()})
    batch.create_job_schedule({"id": "plain", "schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": spec()})
    # due since year 1, every minute: a billion missed recurrences, once counted one by one
    batch.create_job_schedule({"id": "ancient", "schedule": {"doNotRunUntil": "0001-01-01T00:00:00Z",
                                                             "recurrenceInterval": "PT1M"}, "jobSpecification": spec()})
    for schedule_id in ("plain", "wide", "rare", "ancient"):
        wait_for(lambda: schedule_jobs(batch, schedule_id) == [f"{schedule_id}:job-1"], what=f"{schedule_id}'s job")
    assert batch.get_job_schedule("rare").execution_info.next_run_time is None  # the next would be past 9999
    late = batch.get_job_schedule("late")
    assert schedule_jobs(batch, "late") == [] and late.state == "active"
    assert late.execution_info.next_run_time == datetime(9999, 12, 31, 23, tzinfo=UTC)
    # a time in another offset is that moment (it was stored as if its clock reading were UTC)
    batch.create_job_schedule({"id": "east", "schedule": {"doNotRunUntil": "2100-01-01T05:00:00+05:00"},
                               "jobSpecification": spec()})
    assert batch.get_job_schedule("east").execution_info.next_run_time == datetime(2100, 1, 1, tzinfo=UTC)
    batch.begin_delete_job_schedule("east", polling_interval=0.2).result()
    ancient = batch.get_job_schedule("ancient").execution_info.next_run_time
    assert datetime.now(UTC) < ancient <= datetime.now(UTC) + timedelta(minutes=1)
    for schedule_id in ("late", "wide", "rare", "plain", "ancient"):
        batch.begin_delete_job_schedule(schedule_id, polling_interval=0.2).result()
