"""Job schedules: a job made from `jobSpecification` at each recurrence, as Azure does.

- The first job is due at `doNotRunUntil` (or at once); with `recurrenceInterval` the next
  ones are due each interval after the previous due time; without it, the schedule makes
  one job.
- A schedule has at most one active job: while its recent job is not completed, a due job
  waits; a job that could not be made within `startWindow` of its due time is skipped
  until the next recurrence.
- After `doNotRunAfter`, or after its only job, the schedule completes once its last job
  has (executionInfo.endTime).
- Jobs are named `{schedule}:job-{N}`, N counting from 1; deleting the schedule deletes
  them, terminating it terminates the active one.

`recurrenceInterval` is at least Azure's minute, or `BATCHYARD_MIN_RECURRENCE_INTERVAL`
seconds (for tests). Schedules are rows of the resource table; a loop on its own thread
makes their jobs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ...store.resources import Resource, ResourceStore
from ..errors import Conflict, NotFound, ServiceError
from . import batch_input as bi
from . import task_spec
from .background import PokedLoop
from .durations import format_duration, later, parse_duration
from ..authorization import Caller
from .pools import check_conditions, iso, iso_now, new_etag, now, parse_time

log = logging.getLogger("batchyard.batch")

SCHEDULE_TYPE = "Microsoft.Batch/batchAccounts/jobSchedules"
ENDED_STATES = ("completed", "deleting")


class JobSchedules(PokedLoop):
    def __init__(self, store: ResourceStore, jobs, settings):
        super().__init__("job-schedules", tick=0.5, gap=0.05)
        self.store = store
        self.jobs = jobs
        self.settings = settings
        self.lock = jobs.lock

    def start(self) -> None:
        self.start_loop()

    def stop(self) -> None:
        self.stop_loop()

    # reading --------------------------------------------------------------------------------

    @staticmethod
    def key(account: Resource, schedule_id: str) -> str:
        return f"{account.id}/jobschedules/{schedule_id}".lower()

    def get(self, account: Resource, schedule_id: str) -> Resource:
        schedule = self.store.get(self.key(account, schedule_id)) if isinstance(schedule_id, str) else None
        if schedule is None or schedule.type.lower() != SCHEDULE_TYPE.lower():
            raise NotFound("JobScheduleNotFound", "The specified job schedule does not exist.")
        return schedule

    def list(self, account: Resource) -> list[Resource]:
        prefix = account.id.lower() + "/jobschedules/"
        found = self.store.list(type=SCHEDULE_TYPE, subscription=account.subscription,
                                resource_group=account.resource_group)
        return sorted((s for s in found if s.id.lower().startswith(prefix)), key=lambda s: s.name.lower())

    def jobs_of(self, account: Resource, schedule_id: str) -> list[Resource]:
        schedule = self.get(account, schedule_id)
        return [j for j in self.jobs.list(account) if j.internal.get("job_schedule") == schedule.id.lower()]

    # creating and changing --------------------------------------------------------------------

    def create(self, account: Resource, body: dict, auth: Caller) -> Resource:
        body = bi.body_object(body)
        schedule_id = task_spec.entity_id(body.get("id"))
        moment = iso_now()
        wire = {"id": schedule_id, "displayName": bi.string(body, "displayName") or None,
                "schedule": self._schedule(bi.obj(body, "schedule", required_=True)),
                "jobSpecification": self._job_specification(account, body, auth),
                "metadata": bi.name_value_pairs(body, "metadata"),
                "eTag": new_etag(), "lastModified": moment, "creationTime": moment, "state": "active",
                "stateTransitionTime": moment, "executionInfo": {}}
        wire = {k: v for k, v in wire.items() if v is not None}
        schedule = Resource(id=f"{account.id}/jobschedules/{schedule_id}", type=SCHEDULE_TYPE,
                            subscription=account.subscription, resource_group=account.resource_group,
                            name=schedule_id, body=wire,
                            internal={"account": account.name, "jobs_made": 0, "auth": auth.record()})
        self._plan_first(schedule)
        with self.jobs.pools.accounts.writing(account), self.lock:
            if self.store.get(schedule.id) is not None:
                raise Conflict("JobScheduleExists", "The specified job schedule already exists.")
            self.jobs.check_active_job_quota(account)
            self.store.put(schedule)
        self.poke()
        return schedule

    def update(self, account: Resource, schedule_id: str, body: dict, replace: bool, conditions=None) -> Resource:
        """PATCH changes what is given; PUT replaces schedule, jobSpecification and metadata.
        A new schedule counts from now; the jobs already made keep their specification."""
        body = bi.body_object(body)
        with self.lock:
            schedule = self._changeable(account, schedule_id, conditions)
            if replace or "schedule" in body:
                schedule.body["schedule"] = self._schedule(bi.obj(body, "schedule", required_=replace) or {})
                self._plan_first(schedule)
            if replace or "jobSpecification" in body:
                schedule.body["jobSpecification"] = self._job_specification(
                    account, body, Caller.from_record(schedule.internal.get("auth")))
            if replace or "metadata" in body:
                schedule.body["metadata"] = bi.name_value_pairs(body, "metadata")
            return self._save(schedule)

    def disable(self, account: Resource, schedule_id: str, conditions=None) -> Resource:
        with self.lock:
            schedule = self._changeable(account, schedule_id, conditions)
            if schedule.body["state"] not in ("active", "disabled"):
                raise Conflict("JobScheduleNotActive", f"The job schedule is {schedule.body['state']}; only an "
                                                       "active job schedule can be disabled.")
            self._set_state(schedule, "disabled")
            return self._save(schedule)

    def enable(self, account: Resource, schedule_id: str, conditions=None) -> Resource:
        with self.lock:
            schedule = self._changeable(account, schedule_id, conditions)
            if schedule.body["state"] != "disabled":
                raise Conflict("JobScheduleNotDisabled", f"The job schedule is {schedule.body['state']}; only a "
                                                         "disabled job schedule can be enabled.")
            self._set_state(schedule, "active")
            return self._save(schedule)

    def terminate(self, account: Resource, schedule_id: str, conditions=None) -> Resource:
        with self.lock:
            schedule = self._changeable(account, schedule_id, conditions)
            if schedule.body["state"] in ("completed", "terminating"):
                raise Conflict("JobScheduleCompleted", "The specified job schedule is already in a completed "
                                                       "state.")
            self._set_state(schedule, "terminating")
            self._save(schedule)
        self.poke()
        return schedule

    def delete(self, account: Resource, schedule_id: str, conditions=None) -> None:
        with self.lock:
            schedule = self.get(account, schedule_id)
            check_conditions(schedule.body, conditions)
            if schedule.body["state"] != "deleting":
                self._set_state(schedule, "deleting")
                self._save(schedule)
        self.poke()

    def delete_all(self, account: Resource) -> None:
        """The account is going: so are its job schedules, and the jobs they made."""
        with self.lock:
            for schedule in self.list(account):
                if schedule.body["state"] != "deleting":
                    self._set_state(schedule, "deleting")
                    self._save(schedule)
        self.poke()

    def _changeable(self, account: Resource, schedule_id: str, conditions) -> Resource:
        schedule = self.get(account, schedule_id)
        check_conditions(schedule.body, conditions)
        if schedule.body["state"] == "deleting":
            raise Conflict("JobScheduleBeingDeleted", "The specified job schedule has been marked for deletion and "
                                                      "is being deleted.")
        return schedule

    def _schedule(self, spec: dict) -> dict:
        shaped: dict = {}
        for name in ("doNotRunUntil", "doNotRunAfter"):
            text = bi.string(spec, name, f"schedule.{name}")
            if text is not None:
                try:
                    shaped[name] = iso(parse_time(text))
                except ValueError:
                    raise bi.invalid(f"schedule.{name}", text, "The value is not an ISO 8601 time.") from None
        for name, least in (("startWindow", timedelta(minutes=1)),
                            ("recurrenceInterval", self.settings.min_recurrence_interval)):
            if spec.get(name) is not None:
                interval = parse_duration(spec[name], f"schedule.{name}")
                if interval < least:
                    raise bi.invalid(f"schedule.{name}", spec[name], f"The {name} must be at least "
                                                                     f"{format_duration(least)}.")
                shaped[name] = format_duration(interval)
        return shaped

    def _job_specification(self, account: Resource, body: dict, auth: Caller) -> dict:
        """auth: the caller the schedule makes its jobs (and their auto pools) as."""
        spec = bi.obj(body, "jobSpecification", required_=True)
        job = self.jobs.build(account, spec, job_id="schedule-check")  # every rule of a job, checked now
        auto_pool = job.body["poolInfo"].get("autoPoolSpecification")
        if auto_pool is not None:
            self.jobs.auto_pools.check(account, auto_pool, auth)
        return spec

    # the loop -----------------------------------------------------------------------------------

    def _plan_first(self, schedule: Resource) -> None:
        until = schedule.body["schedule"].get("doNotRunUntil")
        schedule.internal["due"] = until or iso_now()
        schedule.body["executionInfo"]["nextRunTime"] = schedule.internal["due"]

    def one_pass(self) -> None:
        self.each(self.store.list(type=SCHEDULE_TYPE), self._advance_current)

    def _advance_current(self, schedule: Resource) -> None:
        with self.lock:
            current = self.store.get(schedule.id)
            if current is not None:
                self._advance(current)

    def _advance(self, schedule: Resource) -> None:
        state = schedule.body["state"]
        recent = self._recent_job(schedule)
        if state == "deleting":
            for job in self.jobs.all_jobs():
                if job.internal.get("job_schedule") == schedule.id.lower() and job.body["state"] != "deleting":
                    self.jobs.set_state(job, "deleting")
                    self.jobs.save(job)
            self.store.delete(schedule.id)
        elif state == "terminating":
            if recent is not None and recent.body["state"] not in ENDED_STATES + ("terminating",):
                self.jobs.begin_termination(recent, "TerminateJobSchedule")
            elif recent is None or recent.body["state"] in ENDED_STATES:
                self._complete(schedule)
        elif state == "active":
            self._run_when_due(schedule, recent)

    def _recent_job(self, schedule: Resource) -> Resource | None:
        recent = schedule.body["executionInfo"].get("recentJob")
        return self.jobs.store.get(schedule.id.rsplit("/jobschedules/", 1)[0] + "/jobs/" + recent["id"]) \
            if recent else None

    def _run_when_due(self, schedule: Resource, recent: Resource | None) -> None:
        plan = schedule.body["schedule"]
        moment = now()
        due = parse_time(schedule.internal["due"]) if schedule.internal.get("due") else None
        after = plan.get("doNotRunAfter")
        busy = recent is not None and recent.body["state"] not in ENDED_STATES
        if due is None or (after and moment > parse_time(after)):
            if not busy:
                self._complete(schedule)
            return
        window = plan.get("startWindow")
        closes = later(due, parse_duration(window, "startWindow")) if window else None
        if closes is not None and moment > closes:
            self._next_due(schedule, due)  # missed its window (a job was active, or it was disabled)
            self._save(schedule)
            return
        if moment < due or busy:
            return
        self._make_job(schedule)
        self._next_due(schedule, due)
        self._save(schedule)

    def _next_due(self, schedule: Resource, due: datetime) -> None:
        interval = schedule.body["schedule"].get("recurrenceInterval")
        info = schedule.body["executionInfo"]
        if interval is None:
            schedule.internal["due"] = None
            info.pop("nextRunTime", None)
            return
        step = parse_duration(interval, "recurrenceInterval")
        following = _first_after(later(due, step), step, now())
        if following is None:  # the next one would be past year 9999: there is none
            schedule.internal["due"] = None
            info.pop("nextRunTime", None)
            return
        schedule.internal["due"] = iso(following)
        info["nextRunTime"] = iso(following)

    def _make_job(self, schedule: Resource) -> None:
        number = schedule.internal.get("jobs_made", 0) + 1
        account_id = schedule.id.rsplit("/jobschedules/", 1)[0]
        account = self.jobs.pools.accounts.store.get(account_id)
        job_id = f"{schedule.name}:job-{number}"
        schedule.internal["jobs_made"] = number
        try:
            job = self.jobs.build(account, schedule.body["jobSpecification"], job_id=job_id)
            job.internal["job_schedule"] = schedule.id.lower()
            self.jobs.add(account, job, Caller.from_record(schedule.internal.get("auth")), schedule)
        except ServiceError as exc:  # a quota reached, an auto pool refused: this run is skipped
            log.warning("job schedule %s: job %s not made: %s", schedule.name, job_id, exc.message)
            return
        schedule.body["executionInfo"]["recentJob"] = {"id": job_id}

    def _complete(self, schedule: Resource) -> None:
        self._set_state(schedule, "completed")
        info = schedule.body["executionInfo"]
        info.pop("nextRunTime", None)
        info["endTime"] = schedule.body["stateTransitionTime"]
        self._save(schedule)

    @staticmethod
    def _set_state(schedule: Resource, state: str) -> None:
        body = schedule.body
        body["previousState"] = body["state"]
        body["previousStateTransitionTime"] = body["stateTransitionTime"]
        body["state"] = state
        body["stateTransitionTime"] = iso_now()

    def _save(self, schedule: Resource) -> Resource:
        schedule.body["eTag"] = new_etag()
        schedule.body["lastModified"] = iso_now()
        self.store.put(schedule)
        return schedule


def _first_after(first: datetime | None, step: timedelta, moment: datetime) -> datetime | None:
    """The first of first, first + step, first + 2 step ... after moment: recurrences missed
    while a job was active are not made up. One step, not one a recurrence: a schedule whose
    doNotRunUntil was year 1 with a one-minute interval has missed a billion. None past year 9999."""
    if first is None or first > moment:
        return first
    try:
        return later(first, step * ((moment - first) // step + 1))
    except OverflowError:  # the product itself past a timedelta's range
        return None
