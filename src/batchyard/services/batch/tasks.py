"""Batch tasks: adding them (one at a time or 100 per collection), reading, changing,
terminating, deleting and reactivating them. Running them is the scheduler's work."""

from __future__ import annotations

import time
from pathlib import Path

from ...runtime.machine_files import LocalFiles
from ...store.batch_tasks import Task, TaskStore
from ...store.resources import Resource
from ..errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, ServiceError
from . import batch_input as bi
from . import job_manager, multi_instance, task_spec
from .files import Place
from .jobs import Jobs, account_of
from .pools import check_conditions, iso_now, new_etag

MAX_COLLECTION = 100
# Azure refuses a task collection whose body is over about 1 MB: the SDK halves and retries.
MAX_COLLECTION_BYTES = 1_000_000
OPEN_JOB_STATES = ("active", "disabling", "disabled", "enabling")


def first_attempt() -> int:
    """The number a new task's attempts count on from: the wall clock in nanoseconds. An
    attempt's command goes to its node as job|task|attempt, and machines journal its exit
    under that id (runtime/launcher.py), in a journal that outlives the agent that wrote
    it. A task made again with the ids of one deleted (or of one in a job deleted and made
    again) counts on from a later moment, past any attempt the old one reached (one attempt
    takes far more than a nanosecond), so an exit the old one journaled is never taken for
    the new one's after a crash."""
    return time.time_ns()


def _affinity(item: dict) -> dict | None:
    affinity = bi.obj(item, "affinityInfo")
    if affinity is None:
        return None
    return {"affinityId": bi.string(affinity, "affinityId", "affinityInfo.affinityId", required_=True, max_len=256)}


class Tasks:
    def __init__(self, jobs: Jobs, store: TaskStore, outputs_root: Path, applications):
        self.jobs = jobs
        self.store = store
        self.outputs_root = outputs_root
        self.lock = jobs.lock
        self.scheduler = None  # set by the scheduler
        self.task_place = None  # (task) -> its directory (files.Place) or None; set by the scheduler
        self.applications = applications  # checks applicationPackageReferences (applications.py)
        jobs.on_added(self._add_job_manager)  # tasks are built on jobs, so jobs reach them through this hook

    # adding -------------------------------------------------------------------------------------

    def _add_job_manager(self, account: Resource, job: Resource) -> None:
        """A new job's manager task, added with the job (the job is stored already)."""
        if "jobManagerTask" in job.body:
            job_manager.start(self, account, job, self.jobs.pools.store.get(job.internal["pool_key"]))

    def create(self, account: Resource, job_id: str, body: dict) -> Task:
        results = self._add(account, job_id, [bi.body_object(body)], single=True)
        outcome = results[0]
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    def create_collection(self, account: Resource, job_id: str, body: dict, body_size: int) -> list:
        """Per-task results: a Task, or the ServiceError that refused it."""
        if body_size > MAX_COLLECTION_BYTES:
            raise PayloadTooLarge("RequestBodyTooLarge", "The request body is too large and exceeds the maximum "
                                  "permissible limit.", details=[{"key": "MaxLimit", "value": str(MAX_COLLECTION_BYTES)}])
        body = bi.body_object(body)
        items = body.get("value")
        if not isinstance(items, list):
            raise bi.missing("value")
        if len(items) > MAX_COLLECTION:
            raise InvalidInput("InvalidPropertyValue",
                               "The value provided for one of the properties in the request body is invalid.",
                               details=[{"key": "PropertyName", "value": "value"},
                                        {"key": "Reason", "value": f"A collection may hold at most {MAX_COLLECTION} "
                                                                   f"tasks; it holds {len(items)}."}])
        return self._add(account, job_id, items, single=False)

    def _add(self, account: Resource, job_id: str, items: list, single: bool) -> list:
        job = self.jobs.get(account, job_id)
        if job.body["state"] not in OPEN_JOB_STATES:
            raise Conflict("JobCompleted" if job.body["state"] in ("completed", "terminating") else "JobBeingDeleted",
                           f"The specified job is {job.body['state']}; tasks cannot be added to it.")
        results: list = []
        accepted: list[Task] = []
        seen: set[str] = set()
        for item in items:
            try:
                task = self._new_task(job, item)
                if task.key in seen:
                    raise Conflict("TaskExists", "The specified task already exists.")
                seen.add(task.key)
                accepted.append(task)
                results.append(task)
            except ServiceError as exc:
                results.append(exc)
        with self.lock:
            job = self.jobs.get(account, job_id)  # again: it may have ended while the tasks were read
            if job.body["state"] not in OPEN_JOB_STATES:
                raise Conflict("JobCompleted" if job.body["state"] in ("completed", "terminating")
                               else "JobBeingDeleted", f"The specified job is {job.body['state']}; tasks cannot "
                               "be added to it.")
            existing = self.store.exists(job.id.lower(), [t.id for t in accepted])
            fresh = []
            for index, outcome in enumerate(results):
                if isinstance(outcome, Task) and outcome.key in existing:
                    results[index] = Conflict("TaskExists", "The specified task already exists.")
                elif isinstance(outcome, Task):
                    fresh.append(outcome)
            if fresh:
                if self.scheduler is not None:
                    self.scheduler.prepare_new(job, fresh)
                self.store.insert(fresh)
        if fresh and self.scheduler is not None:
            self.scheduler.poke()
        return results

    def _new_task(self, job: Resource, item) -> Task:
        if not isinstance(item, dict):
            raise bi.bad_body("Each task must be a JSON object.")
        spec = task_spec.command_task(item, "task", job.body["constraints"]["maxTaskRetryCount"])
        depends_on, dependency_ids = task_spec.depends_on(item, job.body.get("usesTaskDependencies", False))
        if spec["id"].lower() in {d.lower() for d in dependency_ids}:
            raise bi.invalid("dependsOn", spec["id"], "A task cannot depend on itself.")
        moment = iso_now()
        body = {
            **spec,
            "displayName": bi.string(item, "displayName") or None,
            "outputFiles": task_spec.output_files(item),
            "requiredSlots": bi.integer(item, "requiredSlots", minimum=1, maximum=256, default=1),
            "exitConditions": task_spec.exit_conditions(item),
            "dependsOn": depends_on,
            "affinityInfo": _affinity(item),
            "multiInstanceSettings": multi_instance.settings(item),
            "authenticationTokenSettings": task_spec.token_settings(item),
            "eTag": new_etag(), "creationTime": moment, "lastModified": moment,
            "state": "active", "stateTransitionTime": moment,
            "executionInfo": {"retryCount": 0, "requeueCount": 0},
        }
        if item.get("applicationPackageReferences"):
            body["applicationPackageReferences"] = self.applications.check_references(account_of(job.id.lower()), item)
        body = {k: v for k, v in body.items() if v is not None}
        return Task(job.id.lower(), body, {"depends_on": dependency_ids, "attempt": first_attempt()}, ready=not dependency_ids)

    # reading ------------------------------------------------------------------------------------

    def get(self, account: Resource, job_id: str, task_id: str) -> Task:
        job = self.jobs.get(account, job_id)
        task = self.store.get(job.id.lower(), task_id) if isinstance(task_id, str) else None
        if task is None:
            raise NotFound("TaskNotFound", "The specified task does not exist.")
        return task

    def in_id_order(self, account: Resource, job_id: str, after: str | None, state: str | None = None,
                    chunk: int = 500):
        """The job's tasks in the order of their lower-cased ids, from just after `after`."""
        return self.store.in_key_order(self.key_of_job(account, job_id), after, chunk, state)

    def key_of_job(self, account: Resource, job_id: str) -> str:
        """The job's key, or the 404 of a job that does not exist."""
        return self.jobs.get(account, job_id).id.lower()

    def task_directory(self, account: Resource, job_id: str, task_id: str) -> Place:
        task = self.get(account, job_id, task_id)
        if "node" not in task.internal:
            raise Conflict("OperationInvalidForCurrentState",
                           "The task has not been scheduled to a node yet, so it has no files.")
        place = self.task_place(task)
        if place is None:
            raise Conflict("NodeNotReady", "The node that ran the task no longer holds its files.")
        return place

    def output_place(self, account: Resource, container: str) -> Place:
        """An output container's files (this service's own storage), as the file API reads them."""
        root = self.output_directory(account, container)
        if not root.is_dir():
            raise NotFound("ContainerNotFound", "The specified output container does not exist.")
        return Place(LocalFiles(root), "")

    def output_directory(self, account: str | Resource, container: str) -> Path:
        """Where output files uploaded to `{endpoint}/outputs/{container}` are kept."""
        name = account.name if isinstance(account, Resource) else account
        return self.outputs_root / name.lower() / task_spec.output_container(f"https://x/outputs/{container}",
                                                                            "container")

    # changing -----------------------------------------------------------------------------------

    def update(self, account: Resource, job_id: str, task_id: str, body: dict, conditions=None) -> Task:
        body = bi.body_object(body)
        with self.lock:
            task = self.get(account, job_id, task_id)
            check_conditions(task.body, conditions)
            job = self.jobs.get(account, job_id)
            if "constraints" in body:
                task.body["constraints"] = task_spec.task_constraints(body, job.body["constraints"]["maxTaskRetryCount"])
            self._touch(task)
            self.store.update([task])
        return task

    def terminate(self, account: Resource, job_id: str, task_id: str, conditions=None) -> Task:
        with self.lock:
            task = self.get(account, job_id, task_id)
            check_conditions(task.body, conditions)
            if task.state != "completed":
                self.scheduler.end_task(task, "terminate")
        return task

    def delete(self, account: Resource, job_id: str, task_id: str, conditions=None) -> None:
        with self.lock:
            task = self.get(account, job_id, task_id)
            check_conditions(task.body, conditions)
            self.scheduler.end_task(task, "delete")

    def reactivate(self, account: Resource, job_id: str, task_id: str, conditions=None) -> Task:
        with self.lock:
            task = self.get(account, job_id, task_id)
            check_conditions(task.body, conditions)
            job = self.jobs.get(account, job_id)
            if job.body["state"] not in OPEN_JOB_STATES:
                raise Conflict("JobCompleted", "The task's job is completed; its tasks cannot be reactivated.")
            info = task.body.get("executionInfo", {})
            if task.state != "completed" or info.get("result") != "failure":
                raise Conflict("OperationInvalidForCurrentState",
                               "Only a completed task that failed can be reactivated.")
            task.body["executionInfo"] = {"retryCount": 0, "requeueCount": info.get("requeueCount", 0)}
            self.scheduler.requeue(task, count_requeue=False)
        self.scheduler.poke()
        return task

    @staticmethod
    def _touch(task: Task) -> None:
        task.body["eTag"] = new_etag()
        task.body["lastModified"] = iso_now()
