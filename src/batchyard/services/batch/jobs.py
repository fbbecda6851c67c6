"""Batch jobs: create, change, disable/enable, terminate and delete, with the states Azure
reports. A job is a row of the resource table under its account's id; its tasks live in
their own table (tasks.py). Stopping running tasks is the scheduler's work: the job only
records what should happen and pokes it."""

from __future__ import annotations

from typing import Collection

from ...store.keyset import LIST_CHUNK
from ...store.resources import Resource, ResourceStore
from ...store.batch_tasks import TaskStore
from ..errors import Conflict, NotFound
from . import batch_input as bi
from . import auto_pools, job_manager, task_spec
from ..authorization import Caller
from .pools import check_conditions, iso_now, new_etag

JOB_TYPE = "Microsoft.Batch/batchAccounts/jobs"
# the job states the scheduler acts on (see Scheduler._advance_job); the index of migration 11
# (store/db.py) lists the same
MOVING_STATES = ("active", "terminating", "disabling", "enabling", "deleting")


RELEASE_MAX_WALL_CLOCK = "PT15M"


class Jobs:
    def __init__(self, store: ResourceStore, tasks: TaskStore, pools):
        self.store = store
        self.tasks = tasks
        self.pools = pools
        self.lock = pools.lock  # jobs, tasks, pools and nodes change together
        self.scheduler = None  # set by the scheduler
        self.auto_pools = None  # set by AutoPools
        self._on_added: list = []  # called with (account, job) once a job is stored, under the lock

    def on_added(self, callback) -> None:
        """callback(account, job) runs once a new job is stored (its manager task is added so)."""
        self._on_added.append(callback)

    @staticmethod
    def key(account: Resource, job_id: str) -> str:
        return f"{account.id}/jobs/{job_id}".lower()

    def get(self, account: Resource, job_id: str) -> Resource:
        job = self.store.get(self.key(account, job_id)) if isinstance(job_id, str) else None
        if job is None or job.type.lower() != JOB_TYPE.lower():
            raise NotFound("JobNotFound", "The specified job does not exist.")
        return job

    def list(self, account: Resource) -> list[Resource]:
        """The account's jobs, in the order of their lower-cased ids."""
        return list(self.store.in_key_order(self.key_prefix(account), JOB_TYPE, None, LIST_CHUNK))

    def key_prefix(self, account: Resource) -> str:
        """What the keys of the account's jobs begin with (a job's key is this and its
        lower-cased id, so their keys sort as their ids do)."""
        return self.key(account, "")

    def all_jobs(self) -> list[Resource]:
        return self.store.list(type=JOB_TYPE)

    def jobs_in_motion(self, pool_keys: Collection[str] | None = None, runnable: bool = False) -> list[Resource]:
        """The jobs the scheduler has work for: every state but completed and disabled (a
        service keeps many of those, and they need nothing); only on these pools if given;
        with `runnable`, only the active ones with a task ready to start (a refill's)."""
        return self.store.moving_jobs(pool_keys, runnable)

    # creating -------------------------------------------------------------------------------

    def create(self, account: Resource, body: dict, auth: Caller | None = None) -> Resource:
        return self.add(account, self.build(account, body), auth or Caller.shared_key())

    def build(self, account: Resource, body: dict, job_id: str | None = None) -> Resource:
        """A new job from its body, checked, not stored; `job_id` is one the service chose
        (a job schedule's `{schedule}:job-N`)."""
        body = bi.body_object(body)
        job_id = job_id or task_spec.entity_id(body.get("id"))
        pool_info = bi.obj(body, "poolInfo", required_=True)
        auto_pool = auto_pools.specification(pool_info)
        pool_id = None if auto_pool else bi.string(pool_info, "poolId", "poolInfo.poolId", required_=True)
        constraints = task_spec.job_constraints(body)
        _refuse_unhonoured(body)
        wire = {
            "id": job_id,
            "displayName": bi.string(body, "displayName") or None,
            "usesTaskDependencies": bi.boolean(body, "usesTaskDependencies", default=False),
            "priority": bi.integer(body, "priority", minimum=-1000, maximum=1000, default=0),
            "allowTaskPreemption": bi.boolean(body, "allowTaskPreemption", default=False),
            "maxParallelTasks": self._max_parallel(body),
            "constraints": constraints,
            "commonEnvironmentSettings": bi.name_value_pairs(body, "commonEnvironmentSettings"),
            "poolInfo": {"autoPoolSpecification": auto_pool} if auto_pool else {"poolId": pool_id},
            "jobManagerTask": job_manager.specification(body, constraints["maxTaskRetryCount"]),
            "onAllTasksComplete": bi.choice(body, "onAllTasksComplete", ("noaction", "terminatejob"),
                                            default="noaction"),
            "onTaskFailure": bi.choice(body, "onTaskFailure", ("noaction", "performexitoptionsjobaction"),
                                       default="noaction"),
            "metadata": bi.name_value_pairs(body, "metadata"),
        }
        manager = wire["jobManagerTask"]
        if manager and manager.get("applicationPackageReferences"):  # refused now, not when the job starts it
            manager["applicationPackageReferences"] = self.pools.package_references(
                account, manager, "jobManagerTask.applicationPackageReferences")
        for name in ("jobPreparationTask", "jobReleaseTask"):
            spec = bi.obj(body, name)
            if spec is not None:
                wire[name] = self._side_task(spec, name, constraints["maxTaskRetryCount"])
        if "jobReleaseTask" in wire and "jobPreparationTask" not in wire:
            raise bi.invalid("jobReleaseTask", "...", "A job release task needs a job preparation task.")
        wire = {k: v for k, v in wire.items() if v is not None}
        moment = iso_now()
        wire.update({"eTag": new_etag(), "lastModified": moment, "creationTime": moment, "state": "active",
                     "stateTransitionTime": moment,
                     "executionInfo": {"startTime": moment, "poolId": pool_id}})
        return Resource(id=f"{account.id}/jobs/{job_id}", type=JOB_TYPE, subscription=account.subscription,
                        resource_group=account.resource_group, name=job_id, body=wire,
                        internal={"account": account.name,
                                 "pool_key": self.pools.key(account, pool_id) if pool_id else None})

    def add(self, account: Resource, job: Resource, auth: str, schedule: Resource | None = None) -> Resource:
        """Stores a built job: its auto pool first, its manager task after."""
        with self.pools.accounts.writing(account), self.lock:
            if self.store.get(job.id) is not None:
                raise Conflict("JobExists", "The specified job already exists.")
            self.check_active_job_quota(account)
            if "autoPoolSpecification" in job.body["poolInfo"]:
                self.auto_pools.create_for(account, job, auth, schedule)
            self.store.put(job)
            for added in self._on_added:
                added(account, job)
        self._poke()
        return job

    def check_active_job_quota(self, account: Resource) -> None:
        """Azure counts jobs until they complete (completed ones have no limit)."""
        active = sum(1 for job in self.list(account) if job.body["state"] != "completed")
        if active >= self.pools.accounts.quotas(account)["activeJobAndJobScheduleQuota"]:
            raise Conflict("ActiveJobAndScheduleQuotaReached",
                           "The specified account has reached its quota of active jobs and job schedules.")

    @staticmethod
    def _max_parallel(body: dict) -> int:
        value = bi.integer(body, "maxParallelTasks", minimum=-1, default=-1)
        if value == 0:
            raise bi.invalid("maxParallelTasks", 0, "maxParallelTasks must be -1 (no limit) or at least 1.")
        return value

    @staticmethod
    def _side_task(spec: dict, field: str, retries: int) -> dict:
        task = task_spec.command_task(spec, field, retries, with_id=False)
        task["id"] = task_spec.entity_id(spec.get("id") or ("jobpreparation" if "Preparation" in field
                                                            else "jobrelease"), f"{field}.id")
        if field == "jobReleaseTask":
            # Azure's JobReleaseTask has no constraints (it is never retried): its own
            # maxWallClockTime, at most and by default 15 minutes, and retentionTime.
            del task["constraints"]
            task["maxWallClockTime"] = task_spec.duration(spec, "maxWallClockTime", f"{field}.maxWallClockTime",
                                                          RELEASE_MAX_WALL_CLOCK)
            limit = task_spec.seconds(task["maxWallClockTime"])  # None: TimeSpan.MaxValue, unlimited
            if limit is None or limit > task_spec.seconds(RELEASE_MAX_WALL_CLOCK):
                raise bi.invalid(f"{field}.maxWallClockTime", spec["maxWallClockTime"],
                                 "A job release task may run for at most 15 minutes.")
            task["retentionTime"] = task_spec.duration(spec, "retentionTime", f"{field}.retentionTime",
                                                       task_spec.DEFAULT_RETENTION)
        if field == "jobPreparationTask":
            task["waitForSuccess"] = bi.boolean(spec, "waitForSuccess", f"{field}.waitForSuccess", default=True)
            task["rerunOnNodeRebootAfterSuccess"] = bi.boolean(spec, "rerunOnNodeRebootAfterSuccess",
                                                               default=True)
        return task

    # changing ---------------------------------------------------------------------------------

    def update(self, account: Resource, job_id: str, body: dict, replace: bool, conditions=None) -> Resource:
        """PATCH changes what is given; PUT (replace) resets what is not given."""
        body = bi.body_object(body)
        _refuse_unhonoured(body)
        with self.lock:
            job = self._changeable(account, job_id, conditions)
            if replace or "priority" in body:
                job.body["priority"] = bi.integer(body, "priority", minimum=-1000, maximum=1000, default=0)
            if replace or "maxParallelTasks" in body:
                job.body["maxParallelTasks"] = self._max_parallel(body)
            if replace or "constraints" in body:
                job.body["constraints"] = task_spec.job_constraints(body)
            if replace or "metadata" in body:
                job.body["metadata"] = bi.name_value_pairs(body, "metadata")
            if replace or "onAllTasksComplete" in body:
                job.body["onAllTasksComplete"] = bi.choice(body, "onAllTasksComplete", ("noaction", "terminatejob"),
                                                           default="noaction")
            if "poolInfo" in body:
                pool_id = bi.string(bi.obj(body, "poolInfo") or {}, "poolId", "poolInfo.poolId", required_=True)
                # replace_job(get_job()) sends the unchanged poolInfo back: Azure refuses only a change
                if pool_id != job.body["poolInfo"].get("poolId") and job.body["state"] != "disabled":
                    raise Conflict("JobNotDisabled", "A job's pool can only change while the job is disabled.")
                job.body["poolInfo"] = {"poolId": pool_id}
                job.internal["pool_key"] = self.pools.key(account, pool_id)
            return self.save(job)

    def disable(self, account: Resource, job_id: str, body: dict, conditions=None) -> Resource:
        body = bi.body_object(body)
        option = bi.choice(body, "disableTasks", ("requeue", "terminate", "wait"), default="requeue")
        with self.lock:
            job = self._changeable(account, job_id, conditions)
            if job.body["state"] not in ("active", "enabling"):
                raise Conflict("JobNotActive", f"The job is {job.body['state']}; only an active job can be disabled.")
            self.set_state(job, "disabling")
            job.internal["disable_tasks"] = option
            self.save(job)
        return job

    def enable(self, account: Resource, job_id: str, conditions=None) -> Resource:
        with self.lock:
            job = self._changeable(account, job_id, conditions)
            if job.body["state"] not in ("disabled", "disabling"):
                raise Conflict("JobNotDisabled", f"The job is {job.body['state']}; only a disabled job can be "
                                                 "enabled.")
            self.set_state(job, "enabling")
            self.save(job)
        return job

    def terminate(self, account: Resource, job_id: str, body: dict, conditions=None) -> Resource:
        body = bi.body_object(body) if body else {}
        reason = bi.string(body, "terminateReason", max_len=256) or "UserTerminate"
        with self.lock:
            job = self._changeable(account, job_id, conditions)
            if job.body["state"] in ("completed", "terminating"):
                raise Conflict("JobCompleted", "The specified job is already in a completed state.")
            self.begin_termination(job, reason)
        return job

    def begin_termination(self, job: Resource, reason: str) -> None:
        self.set_state(job, "terminating")
        job.body.setdefault("executionInfo", {})["terminateReason"] = reason
        self.save(job)

    def delete(self, account: Resource, job_id: str, conditions=None) -> None:
        with self.lock:
            job = self.get(account, job_id)
            check_conditions(job.body, conditions)
            if job.body["state"] == "deleting":
                return
            self.set_state(job, "deleting")
            self.save(job)

    def delete_all(self, account: Resource) -> None:
        """The account is going: so are its jobs (the scheduler ends their tasks and removes them)."""
        with self.lock:
            for job in self.list(account):
                if job.body["state"] != "deleting":
                    self.set_state(job, "deleting")
                    self.save(job)
        self._poke()

    def _changeable(self, account: Resource, job_id: str, conditions) -> Resource:
        job = self.get(account, job_id)
        check_conditions(job.body, conditions)
        if job.body["state"] == "deleting":
            raise Conflict("JobBeingDeleted", "The specified job has been marked for deletion and is being "
                                              "garbage collected.")
        return job

    @staticmethod
    def set_state(job: Resource, state: str) -> None:
        moment = iso_now()
        job.body["previousState"] = job.body["state"]
        job.body["previousStateTransitionTime"] = job.body["stateTransitionTime"]
        job.body["state"] = state
        job.body["stateTransitionTime"] = moment
        if state == "completed":
            job.body.setdefault("executionInfo", {})["endTime"] = moment

    def save(self, job: Resource) -> Resource:
        job.body["eTag"] = new_etag()
        job.body["lastModified"] = iso_now()
        self.store.put(job)
        self._poke()
        return job

    def _poke(self) -> None:
        if self.scheduler is not None:
            self.scheduler.poke()

    def preparation_status(self, account: Resource, job_id: str) -> list[dict]:
        """Each node's job preparation and release task, for jobpreparationandreleasetaskstatus."""
        return self.scheduler.side.status_list(self.get(account, job_id))

    # counting -----------------------------------------------------------------------------------

    def task_counts(self, account: Resource, job_id: str) -> dict:
        job = self.get(account, job_id)
        counts = {k: 0 for k in ("active", "running", "completed", "succeeded", "failed")}
        slots = dict(counts)
        for (state, result), (number, used) in self.tasks.count_by_state(job.id.lower()).items():
            bucket = "active" if state in ("active", "preparing") else state
            counts[bucket] += number
            slots[bucket] += used
            if state == "completed":
                outcome = "succeeded" if result == "success" else "failed"
                counts[outcome] += number
                slots[outcome] += used
        return {"taskCounts": counts, "taskSlotCounts": slots}


def account_of(job_key: str) -> str:
    """The Batch account's name in a job's key (its lower-cased ARM id)."""
    return job_key.split("/batchaccounts/", 1)[1].split("/", 1)[0]


def _refuse_unhonoured(body: dict) -> None:
    """Job settings this service does not do: refused, not accepted and ignored. (Azure
    offers both only to accounts it has enabled them for.) false and null are what every
    job has, and what replace_job(get_job()) sends back."""
    if bi.boolean(body, "allowTaskPreemption", default=False):
        raise bi.invalid("allowTaskPreemption", True, "Preempting a job's tasks for higher-priority jobs is not "
                                                      "supported here.")
    if body.get("networkConfiguration") is not None:
        raise bi.invalid("networkConfiguration", "...", "A job's own virtual network is not supported here; give "
                                                        "its pool a networkConfiguration.subnetId instead.")
