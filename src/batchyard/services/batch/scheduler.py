"""The task scheduler: runs each job's tasks on the nodes of its pool, as Azure Batch does.

A task's exit is recorded, and the slot it frees filled, as it arrives, by the refiller
thread (see `_refill_loop`): trivial tasks wait on the machine, not on the next pass. One loop,
woken when tasks are added, tasks end, nodes change or jobs change, makes a pass:
1. records the tasks that ended (exit code, retries, exit conditions, dependents), and the
   start tasks and preparation/release tasks that ended (node_agent.py, side_tasks.py);
2. ends tasks past their maxWallClockTime;
3. moves jobs through disabling / enabling / terminating / deleting / completed;
4. hands runnable tasks to free task slots (taskSlotsPerNode, requiredSlots, spread or
   pack, job priority, maxParallelTasks);
5. removes task directories past their retentionTime.

A task is handed to its node's machine as `/bin/sh -c LINE`, started by the machine's
command runner (a spawn by an agent inside the machine, see runtime/commands.py; the agent
runs a LINE that is one plain program call as that program, without the shell, as Azure
runs every command line: runtime/launcher.py). Each run
is an attempt with its own number: an exit reported for an older attempt (a task requeued
because its node rebooted, say) is ignored, so nothing is counted twice and nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from ...runtime.commands import Exit, together
from ...runtime.provider import MachineError, MachineProvider
from ...store.batch_nodes import Node, NodeStore
from ...store.batch_tasks import Task, TaskStore
from ...store.resources import Resource
from ..errors import is_disk_full
from . import containers, job_manager, multi_instance, task_spec
from .background import PokedLoop
from .jobs import Jobs, account_of
from .side_tasks import SideTasks
from .task_tokens import TaskTokens
from .package_install import PackageInstaller
from .storage_files import NodePlace, TransferFailed, Transfers
from . import files
from .node_agent import (FAILURE_EXIT, NODE_ROOT, NODE_ROOT_ON_DISK, WALL_CLOCK, NodeAgent, failure_info,
                         make_command_dirs)
from .pools import Pools, iso_now, new_etag, now, parse_time
from .task_users import TaskUser
from .tasks import Tasks

log = logging.getLogger("batchyard.batch")
PASS_GAP = 0.005
TICK = 0.2
# While this many attempts run, an exit waits this long for others already on their way
# before its refill: a burst of exits then costs one refill (one write for the tasks ended,
# one for those started), not one each. A quiet pool's exit is refilled at once. At 16
# (4 nodes of 4 slots running trivial tasks) a refill for each exit cost the service 0.46 -
# 0.51 ms of CPU a task, gathered 0.35 - 0.39, and the tasks ran about 5% faster.
REFILL_GATHER_WHEN_RUNNING = 16
REFILL_GATHER_SECONDS = 0.002
ENDED = {"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request", "details": []}
DOWNLOAD_FAILED = {"category": "usererror", "code": "BlobDownloadMiscError",
                   "message": "One of the resource files could not be downloaded", "details": []}


@dataclass
class Running:
    """A task attempt that holds slots on a node."""
    job_key: str
    task_key: str
    attempt: int
    node: tuple[str, str]  # (pool key, node id)
    machine_key: str
    slots: int
    deadline: float | None
    ending: str | None = None  # why the service is ending it: timeout, terminate, delete, requeue
    partners: list["Running"] = field(default_factory=list)  # a multi-instance task's subtasks
    extra_commands: list[tuple[str, str]] = field(default_factory=list)  # (machine, command id) to kill with it
    user: TaskUser | None = None  # who its commands run as (None: a partner, or an exit found after a restart)


class Scheduler(PokedLoop):
    def __init__(self, jobs: Jobs, tasks: Tasks, pools: Pools, nodes: NodeStore, task_store: TaskStore,
                 provider: MachineProvider, agent: NodeAgent, *, transfers: Transfers, packages: PackageInstaller,
                 task_tokens: TaskTokens):
        super().__init__("scheduler", tick=TICK, gap=PASS_GAP)
        self.jobs, self.tasks, self.pools, self.nodes, self.store = jobs, tasks, pools, nodes, task_store
        self.provider = provider
        self.agent = agent
        self.lock = pools.lock
        self.running: dict[tuple[str, str], Running] = {}
        self.load: dict[tuple[str, str], int] = {}  # node -> slots in use
        self.runs_on: dict[tuple[str, str], int] = {}  # node -> attempts running (runningTasksCount)
        self.unmet: dict[str, dict[str, set[str]]] = {}  # job -> task -> dependencies not yet satisfied
        self.dependents: dict[str, dict[str, set[str]]] = {}  # job -> dependency -> tasks waiting on it
        self.ended: queue.SimpleQueue = queue.SimpleQueue()
        self._freed: set[tuple[str, str]] = set()  # nodes with slots freed since the last dispatch
        self._last_served: dict[str, str] = {}  # by pool: the job that took the last turn (_dispatch_in_turns)
        self.closing = False  # the service is stopping: exits start nothing more
        self._deferred: list | None = None  # a refill's tasks to start once they are stored
        self._kept_back = False  # the last refill put exits back on the queue (the disk is full)
        self._exit_arrived = threading.Event()  # wakes the refiller (_refill_loop)
        self._refiller = threading.Thread(target=self._refill_loop, name="refiller", daemon=True)
        self.downloads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resource-files")
        self.uploads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="output-files")
        self.transfers = transfers  # resource and output files (storage_files.py)
        self.packages = packages  # application packages (package_install.py)
        self.upload_failures: dict[tuple, dict] = {}  # (job, task, attempt) -> failureInfo of its outputs
        # node -> [tasks started, tasks succeeded] since the last flush
        self._touched: dict[tuple[str, str], list[int]] = {}
        self.side = SideTasks(self)
        self.multi = multi_instance.MultiInstance(self)
        self.task_tokens = task_tokens  # issues AZ_BATCH_AUTHENTICATION_TOKEN
        jobs.scheduler = tasks.scheduler = self
        agent.exit_sink = self.on_exit  # start tasks end through this loop too
        tasks.task_place = self.task_place

    def start(self) -> None:
        with self.lock:
            self._restore()
        self.start_loop()
        self._refiller.start()

    def stop(self) -> None:
        self.closing = True
        self._exit_arrived.set()
        if self._refiller.is_alive():
            self._refiller.join(timeout=10)
        self.stop_loop()
        with self.lock:
            self._record_ended()  # exits already reported are recorded, not rerun after the restart
        self.downloads.shutdown(wait=False, cancel_futures=True)
        self.uploads.shutdown(wait=False, cancel_futures=True)

    def one_pass(self) -> None:
        with self.lock, self.store.db.without_sync():  # bookkeeping: see Database.without_sync
            self._pass()

    def _pass(self) -> None:
        self._record_ended()
        self._enforce_wall_clock()
        jobs = self.jobs.jobs_in_motion()
        for job in jobs:
            self.side.enforce_wall_clock(job)
            self._advance_job(job)  # changes the job objects in place, so _dispatch sees it
        self._freed.clear()  # this pass offers every free slot
        self._dispatch(jobs)
        self._remove_expired_directories()
        self._flush_nodes()

    # dependencies -----------------------------------------------------------------------------

    def prepare_new(self, job: Resource, tasks: list[Task]) -> None:
        """Before new tasks are stored: which of their dependencies are not yet satisfied."""
        job_key = job.id.lower()
        named = {d.lower() for t in tasks for d in t.internal["depends_on"]}
        if not named:
            return
        known = self.store.get_many(job_key, list(named))
        batch = {t.key for t in tasks}
        for task in tasks:
            unmet = {d.lower() for d in task.internal["depends_on"]
                     if d.lower() in batch or not self._satisfies(known.get(d.lower()))}
            self._wait_on(job_key, task.key, unmet)
            task.ready = not unmet

    def _wait_on(self, job_key: str, task_key: str, unmet: set[str]) -> None:
        if not unmet:
            return
        self.unmet.setdefault(job_key, {})[task_key] = unmet
        for dep in unmet:
            self.dependents.setdefault(job_key, {}).setdefault(dep, set()).add(task_key)

    @staticmethod
    def _satisfies(task: Task | None) -> bool:
        return task is not None and task.state == "completed" and task.internal.get("satisfies", False)

    def _release_dependents(self, job_key: str, dep_key: str) -> bool:
        """True when tasks became ready."""
        waiting = self.dependents.get(job_key, {}).pop(dep_key, set())
        became_ready = []
        for task_key in waiting:
            unmet = self.unmet.get(job_key, {}).get(task_key)
            if unmet is None:
                continue
            unmet.discard(dep_key)
            if not unmet:
                del self.unmet[job_key][task_key]
                became_ready.append(task_key)
        if became_ready:
            tasks = self.store.get_many(job_key, became_ready)
            for task in tasks.values():
                task.ready = True
            self.store.update(list(tasks.values()))
        return bool(became_ready)

    # ending ------------------------------------------------------------------------------------

    def on_exit(self, key: tuple, attempt: int, uploads: bool = False):
        """The runner's callback for an attempt; with `uploads`, the task's outputFiles go first."""
        def record(outcome: Exit) -> None:
            if uploads:
                self.uploads.submit(self._upload_then_record, key, attempt, outcome)
                return
            self.ended.put((key, attempt, outcome))
            self._exit_arrived.set()
        return record

    def _upload_then_record(self, key: tuple, attempt: int, outcome: Exit) -> None:
        """outputFiles go when the task's process has ended, before the task is seen as
        ended, as Azure's node agent uploads them (on every attempt)."""
        try:
            with self.lock:
                run = self.running.get(key)
                task = self.store.get(*key)
                wanted = run is not None and run.attempt == attempt and run.ending not in ("requeue", "delete")
                failed = outcome.code != 0 or (run is not None and run.ending is not None)
                job = self.jobs.store.get(key[0])
            if wanted and task is not None and job is not None:
                failure = self._upload_outputs(job, task, failed)
                if failure is not None:
                    self.upload_failures[(*key, attempt)] = failure
        finally:
            self.ended.put((key, attempt, outcome))
            self._exit_arrived.set()

    def _refill_loop(self) -> None:
        """The refiller: exits are recorded and the slots they free filled here, as they
        arrive, without waiting for the loop's next pass. The runners' threads only queue
        an exit and go straight back to reading the next one. Its writes are bookkeeping
        only (see Database.without_sync and journals_in_memory), so its connection is set
        for them once."""
        self.store.db.keep_books_only()
        while True:
            self._exit_arrived.wait()
            if self.closing:
                return
            self._exit_arrived.clear()
            if len(self.running) >= REFILL_GATHER_WHEN_RUNNING:
                time.sleep(REFILL_GATHER_SECONDS)
            try:
                self._refill()
            except Exception:  # the refiller must outlive any one refill's trouble
                log.exception("refilling freed task slots failed")
                self.poke()

    def _refill(self) -> None:
        """Record the exits waiting on the queue and fill the slots they free (the refiller's
        work, see _refill_loop).

        One refill takes every exit queued by then, so a burst of exits costs one write, not
        one each; exits queued meanwhile wake the refiller again, which lets the lock go
        between refills (the API's writes wait for the lock too, and Python's lock is not
        fair: a refiller that took it again at once could keep them out while tasks end
        faster than it refills). If the lock is held by anything else (a pass, an API
        call), it waits for it. Once the service is stopping, nothing more is started. The
        loop's pass is called for only when an exit needs more than this (a job to move
        on, a start task, an exit the full disk kept back)."""
        if self.ended.empty() or self.closing:
            return
        with self.lock:
            if self.closing:
                return
            try:
                needs_pass = self._record_and_refill()  # on the refiller's connection: keep_books_only
            except Exception:  # the loop's pass takes what is left on the queue
                log.exception("refilling freed task slots failed")
                needs_pass = True
        if needs_pass or self._kept_back:  # kept back: the disk is full, the exits wait for the passes
            self.poke()
        elif not self.ended.empty():  # queued by the refill itself (a task that could not start)
            self._exit_arrived.set()

    def _record_and_refill(self) -> bool:
        """True when the loop's pass is needed as well."""
        self._kept_back = False
        if self.ended.empty():
            return False  # a pass took them while the refiller waited for the lock
        needs_pass = self._record_ended()
        freed, self._freed = self._freed, set()
        pools = {pool_key for pool_key, _ in freed}
        self._deferred = []
        try:
            with self.store.db.transaction():  # the tasks started and the nodes' counts: one write
                if pools:
                    self._dispatch(self.jobs.jobs_in_motion(pools, runnable=True), freed)
                self._flush_nodes()
        except Exception:
            for job, task, pool, node in self._deferred:  # not stored as started: not started
                self._free(self.running[(task.job_key, task.key)])
            raise
        finally:
            deferred, self._deferred = self._deferred, None
        with together():  # one write to each agent for the refill's commands
            for launch in deferred:
                self._launch(*launch)
        return needs_pass

    def _record_ended(self) -> bool:
        """True when a recorded exit needs the rest of a pass: a side, multi-instance or start
        task's, a task whose job is no longer simply active (a job to terminate, disable or
        complete) or whose dependents became ready, or one the full disk kept back."""
        needs_pass = False
        finished: list[tuple[Running, int]] = []
        while True:
            try:
                key, attempt, outcome = self.ended.get_nowait()
            except queue.Empty:
                break
            if key[0] in ("side", "multi", "start"):
                needs_pass = True
            if key[0] == "side":
                self.side.record(key, attempt, outcome)
                continue
            if key[0] == "multi":
                self.multi.record(key, attempt, outcome)
                continue
            if key[0] == "start":
                self.agent.start_task_ended(key, attempt, outcome)
                continue
            run = self.running.get(key)
            if run is None or run.attempt != attempt:
                self.upload_failures.pop((*key, attempt), None)
                continue  # an attempt the service already gave up on
            self._free(run)
            finished.append((run, outcome))
        by_job: dict[str, list[tuple[Running, Exit]]] = {}
        for run, outcome in finished:
            by_job.setdefault(run.job_key, []).append((run, outcome))
        for job_key, runs in by_job.items():
            tasks = self.store.get_many(job_key, [r.task_key for r, _ in runs])
            job = self.jobs.store.get(job_key)
            changed = []
            for run, outcome in runs:
                task = tasks.get(run.task_key)
                if task is None or job is None:
                    continue
                self._finish(job, task, run, outcome)
                changed.append(task)
            if job is None or job.body["state"] != "active" or \
                    job.body.get("onAllTasksComplete", "noaction") != "noaction":
                needs_pass = True
            try:
                self.store.update(changed)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                self._keep_for_next_pass(runs)
                needs_pass = True
                continue
            for run, _ in runs:
                task = tasks.get(run.task_key)
                if task is not None and task.state == "completed" and \
                        task.body["executionInfo"].get("result") == "success":
                    self._node_counters(run.node, finished=True, succeeded=True)
            for task in changed:
                if task.state == "completed" and task.internal.get("satisfies") and \
                        self._release_dependents(job_key, task.key):
                    needs_pass = True  # they may go to any node, not only the ones this exit freed
        return needs_pass

    def _keep_for_next_pass(self, runs: list[tuple[Running, Exit]]) -> None:
        """The disk is full and these exits could not be stored: they go back on the queue,
        their slots still held, so a later pass records them once there is room. An exit
        taken off the queue is never lost."""
        log.warning("the disk is full: %d task exits wait until they can be stored", len(runs))
        self._kept_back = True
        for run, outcome in runs:
            self._hold(run)
            self.ended.put(((run.job_key, run.task_key), run.attempt, outcome))

    def _hold(self, run: Running) -> None:
        """The attempt runs: its slots on its node are taken until _free."""
        self.running[(run.job_key, run.task_key)] = run
        self.load[run.node] = self.load.get(run.node, 0) + run.slots
        self.runs_on[run.node] = self.runs_on.get(run.node, 0) + 1

    def _free(self, run: Running) -> None:
        if self.running.pop((run.job_key, run.task_key), None) is None:
            return
        self.load[run.node] = max(0, self.load.get(run.node, 0) - run.slots)
        self.runs_on[run.node] = max(0, self.runs_on.get(run.node, 0) - 1)
        self._freed.add(run.node)
        self._node_counters(run.node, finished=True)
        for partner in run.partners:
            self._free(partner)

    def _finish(self, job: Resource, task: Task, run: Running, outcome: Exit) -> None:
        code = outcome.code
        info = task.body.setdefault("executionInfo", {})
        info.update({"endTime": iso_now(), "exitCode": code})
        info.pop("failureInfo", None)
        if "containerInfo" in info:
            info["containerInfo"]["state"] = "exited"
        if run.ending == "requeue":
            self.requeue(task)
            return
        if run.ending in ("terminate", "delete"):
            info.update({"result": "failure", "failureInfo": ENDED})
            self._complete(job, task, code, ended=True)
            return
        upload_failure = self.upload_failures.pop((run.job_key, run.task_key, run.attempt), None)
        failed = code != 0 or run.ending == "timeout"
        if upload_failure is not None and not failed:
            # Azure: the task fails with the upload's error, and is not retried for it.
            info.update({"result": "failure", "failureInfo": upload_failure})
            self._complete(job, task, code, ended=False, upload_error=True)
            return
        if run.ending == "timeout":
            info["failureInfo"] = WALL_CLOCK
        elif outcome.out_of_memory:
            info["failureInfo"] = failure_info(outcome, self.vm_size(run.node[0]))
        elif code != 0:
            info["failureInfo"] = FAILURE_EXIT
        retries = task.body["constraints"]["maxTaskRetryCount"]
        if failed and run.ending != "timeout" and (retries == -1 or info.get("retryCount", 0) < retries):
            info["retryCount"] = info.get("retryCount", 0) + 1
            info["lastRetryTime"] = iso_now()
            self._set_state(task, "active")
            task.ready = True
            return
        info["result"] = "failure" if failed else "success"
        self._complete(job, task, code, ended=False)

    def _complete(self, job: Resource, task: Task, code: int | None, ended: bool, pre_processing: bool = False,
                  upload_error: bool = False) -> None:
        self._set_state(task, "completed")
        task.ready = False
        multi_instance.finish_subtasks(task)
        failed = task.body["executionInfo"].get("result") == "failure"
        options = task_spec.exit_options_for(task.body.get("exitConditions"), code, pre_processing, upload_error)
        task.internal["satisfies"] = not ended and options["dependencyAction"] == "satisfy"
        retention = task_spec.seconds(task.body["constraints"].get("retentionTime"))
        if retention is not None:
            task.internal["expires"] = time.time() + retention
        if job_manager.ends_job(job, task) and job.body["state"] in ("active", "disabled", "disabling", "enabling"):
            self.jobs.begin_termination(job, "JMComplete")
            return
        action = options["jobAction"]
        if action != "none" and (not failed or job.body.get("onTaskFailure") == "performexitoptionsjobaction"):
            if action == "terminate" and job.body["state"] in ("active", "disabled", "disabling", "enabling"):
                self.jobs.begin_termination(job, "TaskFailed" if failed else "AllTasksComplete")
            elif action == "disable" and job.body["state"] == "active":
                self.jobs.set_state(job, "disabling")
                job.internal["disable_tasks"] = "wait"
                self.jobs.save(job)

    def requeue(self, task: Task, count_requeue: bool = True) -> None:
        """Back to active (its node went away, or it was reactivated)."""
        info = task.body.setdefault("executionInfo", {})
        if count_requeue:
            info["requeueCount"] = info.get("requeueCount", 0) + 1
            info["lastRequeueTime"] = iso_now()
        run = self.running.get((task.job_key, task.key))
        if run is not None:
            self._free(run)
        task.internal["attempt"] = task.internal.get("attempt", 0) + 1
        for stale in ("expires", "satisfies", "subtasks", "coordination", "multi_nodes", "multi_env"):
            # a reactivated or requeued task is not finished any more, nor placed
            task.internal.pop(stale, None)
        self._set_state(task, "active")
        task.ready = not self.unmet.get(task.job_key, {}).get(task.key)
        self.store.update([task])

    def end_task(self, task: Task, why: str) -> None:
        """terminate or delete, whatever state the task is in."""
        run = self.running.get((task.job_key, task.key))
        if run is not None:
            run.ending = why
            self._kill(run)
            if why == "delete":
                self._free(run)
                self._drop(task)
            return
        if why == "delete":
            self._drop(task)
            return
        job = self.jobs.store.get(task.job_key)
        task.body.setdefault("executionInfo", {}).update({"result": "failure", "failureInfo": ENDED,
                                                          "endTime": iso_now()})
        self._complete(job, task, None, ended=True)
        self.store.update([task])

    def _drop(self, task: Task) -> None:
        self.store.delete(task.job_key, task.id)
        self._remove_task_directory(task)
        self.unmet.get(task.job_key, {}).pop(task.key, None)

    def _kill(self, run: Running) -> None:
        try:
            self.provider.command_runner(run.machine_key).kill(f"{run.job_key}|{run.task_key}|{run.attempt}")
        except MachineError:
            pass
        for machine_key, command_id in run.extra_commands:
            try:
                self.provider.command_runner(machine_key).kill(command_id)
            except MachineError:
                pass

    def _enforce_wall_clock(self) -> None:
        moment = time.time()
        for run in list(self.running.values()):
            if run.deadline is not None and run.deadline < moment and run.ending is None:
                run.ending = "timeout"
                self._kill(run)

    # jobs ----------------------------------------------------------------------------------------

    def _advance_job(self, job: Resource) -> None:
        state = job.body["state"]
        job_key = job.id.lower()
        mine = [r for r in self.running.values() if r.job_key == job_key]
        if state == "deleting":
            for run in mine:
                run.ending = "delete"
                self._kill(run)
                self._free(run)
            self.store.delete_job(job_key)
            self._remove_job_directories(job)
            self.unmet.pop(job_key, None)
            self.dependents.pop(job_key, None)
            self.jobs.store.delete(job.id)
        elif state == "terminating":
            for run in mine:
                if run.ending is None:
                    run.ending = "terminate"
                    self._kill(run)
            if not mine:
                active = self.store.list(job_key, "active")
                for task in active:
                    task.body.setdefault("executionInfo", {}).update({"result": "failure", "failureInfo": ENDED})
                    self._set_state(task, "completed")
                    task.ready = False
                self.store.update(active)
                if self.side.release_done(job):
                    self.jobs.set_state(job, "completed")
                    self.jobs.save(job)
        elif state == "disabling":
            option = job.internal.get("disable_tasks", "requeue")
            for run in mine:
                if option in ("requeue", "terminate") and run.ending is None:
                    run.ending = option
                    self._kill(run)
            if not mine or option == "requeue":
                if option == "requeue":
                    for run in mine:
                        task = self.store.get(job_key, run.task_key)
                        if task is not None:
                            self.requeue(task)
                self.jobs.set_state(job, "disabled")
                self.jobs.save(job)
        elif state == "enabling":
            self.jobs.set_state(job, "active")
            self.jobs.save(job)
        elif state == "active":
            self._maybe_complete(job, mine)

    def _maybe_complete(self, job: Resource, running: list[Running]) -> None:
        limit = task_spec.seconds(job.body["constraints"].get("maxWallClockTime"))
        if limit is not None and (now() - parse_time(job.body["creationTime"])).total_seconds() > limit:
            self.jobs.begin_termination(job, "MaxWallClockTimeExpiry")
        elif job.body.get("onAllTasksComplete") == "terminatejob" and not running and \
                self.store.unfinished(job.id.lower()) == 0 and self.store.count_by_state(job.id.lower()):
            self.jobs.begin_termination(job, "AllTasksComplete")

    # dispatching ---------------------------------------------------------------------------------

    def _dispatch(self, jobs: list[Resource], only: set[tuple[str, str]] | None = None) -> None:
        """only: offer only these nodes' free slots, (pool key, node id) (the nodes exits freed)."""
        by_pool: dict[str, list[Resource]] = {}
        for job in jobs:
            if job.body["state"] == "active":
                by_pool.setdefault(job.internal["pool_key"], []).append(job)
        for pool_key, pool_jobs in by_pool.items():
            pool = self.pools.store.get(pool_key)
            if pool is None or pool.body["state"] != "active":
                continue
            pool_jobs.sort(key=lambda j: (-j.body.get("priority", 0), j.body["creationTime"]))
            self._dispatch_pool(pool, pool_jobs, only)

    def _dispatch_pool(self, pool: Resource, jobs: list[Resource], only: set[tuple[str, str]] | None = None) -> None:
        pool_key = pool.id.lower()
        per_node = pool.body["taskSlotsPerNode"]
        pack = pool.body.get("taskSchedulingPolicy", {}).get("nodeFillType") == "pack"
        offered = self.nodes.list(pool_key) if only is None else \
            [n for n in (self.nodes.get(*key) for key in only if key[0] == pool_key) if n is not None]
        nodes = {n.id: n for n in offered
                 if n.state in ("idle", "running") and n.body.get("schedulingState", "enabled") == "enabled"}
        free_on_pool = {node_id: per_node - self.load.get((pool_key, node_id), 0) for node_id in nodes}
        if _free_slots(free_on_pool) <= 0:
            return
        in_turns = pool.body.get("taskSchedulingPolicy", {}).get("jobDefaultOrder", "none") == "none"
        for group in _by_priority(jobs):  # jobs come ordered by priority, then creation time
            if in_turns and len(group) > 1:
                self._dispatch_in_turns(pool, group, nodes, free_on_pool, pack)
                continue
            for job in group:
                self._dispatch_job(pool, job, nodes, free_on_pool, pack)

    def _dispatch_in_turns(self, pool: Resource, jobs: list[Resource], nodes: dict, free_on_pool: dict,
                           pack: bool) -> None:
        """Azure's jobDefaultOrder `none` (its default): jobs of equal priority share the free
        slots evenly. Each takes its share in turn, a turn starting after the job that took
        last in the pool's last dispatch (a refill frees a few slots at a time: always
        starting from the oldest job would give it every one); a job with nothing more to
        start leaves its share to the others."""
        pool_key = pool.id.lower()
        keys = [job.id.lower() for job in jobs]
        last = self._last_served.get(pool_key)
        if last in keys:
            after = keys.index(last) + 1
            jobs = jobs[after:] + jobs[:after]
        waiting = jobs
        while waiting and _free_slots(free_on_pool) > 0:
            share = -(-_free_slots(free_on_pool) // len(waiting))
            still = []
            for job in waiting:
                started = self._dispatch_job(pool, job, nodes, free_on_pool, pack, limit=share)
                if started:
                    self._last_served[pool_key] = job.id.lower()
                if started == share:
                    still.append(job)
                if _free_slots(free_on_pool) <= 0:
                    break
            waiting = still

    def _dispatch_job(self, pool: Resource, job: Resource, nodes: dict, free_on_pool: dict, pack: bool,
                      limit: int | None = None) -> int:
        """Starts up to `limit` of the job's runnable tasks in the free slots (free_on_pool,
        taken as they are used); how many it started."""
        job_key = job.id.lower()
        if not self.store.any_runnable(job_key):
            return 0
        # nodes where this job's preparation task has not succeeded yet are not offered
        free = {node_id: f for node_id, f in free_on_pool.items()
                if self.side.node_ready(job, pool, nodes[node_id])}
        budget = _free_slots(free) if limit is None else min(limit, _free_slots(free))
        parallel = job.body.get("maxParallelTasks", -1)
        if parallel != -1:
            budget = min(budget, parallel - sum(1 for r in self.running.values() if r.job_key == job_key))
        if budget <= 0:
            return 0
        launched = []
        try:
            # a pool that never runs multi-instance tasks is offered the job's others
            for task in self.store.runnable(job_key, budget, multi_instance.pool_runs_them(pool)):
                offered = {n: f for n, f in free.items() if nodes[n].body["isDedicated"]} \
                    if task.internal.get("dedicated_only") else free
                slots = task.body.get("requiredSlots", 1)
                if "multiInstanceSettings" in task.body:
                    chosen = multi_instance.choose_nodes(offered, task.body["multiInstanceSettings"]
                                                         ["numberOfInstances"], slots)
                else:
                    single = _affine_node(offered, nodes, task, slots) or self._choose_node(offered, slots, pack)
                    chosen = [single] if single is not None else None
                if chosen is None:
                    continue
                for node_id in chosen:
                    free[node_id] -= slots
                    free_on_pool[node_id] -= slots
                launched.append(self._assign(job, task, pool, nodes[chosen[0]]))
                if len(chosen) > 1 or "multiInstanceSettings" in task.body:
                    self.multi.reserve(job, task, pool, [nodes[n] for n in chosen], Running)
            self.store.update(launched)
        except Exception:  # (a full disk, say) not stored as started: not started, its slots free again
            for task in launched:
                self._free(self.running[(task.job_key, task.key)])
            raise
        for task in launched:
            node = nodes[task.internal["node"]["id"]]
            if self._deferred is not None:
                self._deferred.append((job, task, pool, node))
            else:
                self._launch(job, task, pool, node)
        return len(launched)

    @staticmethod
    def _choose_node(free: dict[str, int], slots: int, pack: bool) -> str | None:
        fitting = [(f, node_id) for node_id, f in free.items() if f >= slots]
        if not fitting:
            return None
        # spread: the node with the most free slots; pack: the fullest node that still fits
        return (min(fitting) if pack else max(fitting))[1]

    def _assign(self, job: Resource, task: Task, pool: Resource, node: Node) -> Task:
        attempt = task.internal.get("attempt", 0) + 1
        task.internal["attempt"] = attempt
        task.internal["node"] = {"pool_key": pool.id.lower(), "id": node.id, "machine_key": node.internal["machine_key"]}
        self._set_state(task, "running")
        info = task.body.setdefault("executionInfo", {})
        info["startTime"] = iso_now()
        for stale in ("endTime", "exitCode", "result", "failureInfo"):
            info.pop(stale, None)
        task_dir = f"{NODE_ROOT}/workitems/{job.name}/job-1/{task.id}"
        task.body["nodeInfo"] = {"affinityId": node.body.get("affinityId"), "poolId": pool.name, "nodeId": node.id,
                                 "taskRootDirectory": f"workitems/{job.name}/job-1/{task.id}"}
        limit = task_spec.seconds(task.body["constraints"].get("maxWallClockTime"))
        run = Running(job.id.lower(), task.key, attempt, (pool.id.lower(), node.id), node.internal["machine_key"],
                      task.body.get("requiredSlots", 1), time.time() + limit if limit is not None else None,
                      user=self.agent.users.for_task(task.body["userIdentity"], task.internal))
        self._hold(run)
        self._node_counters(run.node, finished=False)
        task.internal["dir"] = task_dir
        if task.body.get("containerSettings"):
            info["containerInfo"] = {"containerId": container_id(run), "state": "running"}
        return task

    def _launch(self, job: Resource, task: Task, pool: Resource, node: Node) -> None:
        run = self.running[(task.job_key, task.key)]
        if "multiInstanceSettings" in task.body:
            self.multi.launch(job, task, pool)
            return
        if not any(task.body.get(k) for k in ("resourceFiles", "applicationPackageReferences", "containerSettings")):
            self._start(job, task, pool, node, run)  # the agent makes the task's directories
            return
        place = self.task_place(task)
        try:
            if place is None:
                raise MachineError("the node's machine is gone")
            make_command_dirs(place.files, task.internal["dir"], run.user)
        except (OSError, MachineError) as exc:
            log.warning("task %s: no task directory: %s", task.id, exc)
            self.ended.put(((run.job_key, run.task_key), run.attempt, Exit(1)))
            return
        self.downloads.submit(self._download_then_start, job, task, pool, node, run, place)

    def _download_then_start(self, job, task, pool, node, run: Running, place: files.Place) -> None:
        account = account_of(task.job_key)
        try:
            packages = self.packages.install(account, task.body.get("applicationPackageReferences", []),
                                             place.files)
            self.transfers.download_all(account, task.body.get("resourceFiles", []),
                                        NodePlace(place.files, f"{place.root}/wd", *run.user.owner))
            launch = None
            if task.body.get("containerSettings"):  # its image is pulled here, outside the lock
                launch = containers.launch(
                    self.provider, run.machine_key, pool.body, task.body,
                    self.task_environment(job, task, pool, node, run.user, packages), task.internal["dir"],
                    f"{NODE_ROOT}/workitems/{job.name}/job-1/jobpreparation")
        except Exception as exc:  # any failure to fetch is the task's failure, never a lost task
            failure = exc.failure_info() if isinstance(exc, (TransferFailed, containers.ContainerFailure)) else {
                **DOWNLOAD_FAILED, "details": [{"name": "Reason", "value": str(exc)[:300]}]}
            if not isinstance(exc, (TransferFailed, containers.ContainerFailure)):
                log.warning("task %s: resource files failed: %s", task.id, exc)
            with self.lock:
                current = self.running.get((run.job_key, run.task_key))
                if current is None or current.attempt != run.attempt:
                    return
                stored = self.store.get(run.job_key, run.task_key)
                self._free(run)
                if stored is not None:
                    stored.body["executionInfo"].update({"endTime": iso_now(), "result": "failure",
                                                         "failureInfo": failure})
                    self._complete(self.jobs.store.get(run.job_key), stored, None, ended=False, pre_processing=True)
                    self.store.update([stored])
            self.poke()
            return
        with self.lock:
            current = self.running.get((run.job_key, run.task_key))
            if current is None or current.attempt != run.attempt:
                return
            if current.ending is not None:  # terminated or timed out while its files came
                self.ended.put(((run.job_key, run.task_key), run.attempt, Exit(137)))
                self.poke()
                return
            self._start(job, task, pool, node, run, packages, launch)

    def _start(self, job, task, pool, node, run: Running, packages: dict | None = None,
               launch: containers.Launch | None = None) -> None:
        """packages: the variables of the task's application packages, installed just before;
        launch: how its container runs, for a container task."""
        task_dir = task.internal["dir"]
        if launch is None:
            argv, cwd = ["/bin/sh", "-c", task.body["commandLine"]], f"{task_dir}/wd"
            env, container = self.task_environment(job, task, pool, node, run.user, packages), None
        else:
            argv, env, cwd, container = launch.argv, launch.env, launch.cwd, launch.container
        try:
            self.provider.command_runner(run.machine_key).run(
                f"{run.job_key}|{run.task_key}|{run.attempt}", argv, env, cwd, *run.user.owner,
                f"{task_dir}/stdout.txt", f"{task_dir}/stderr.txt",
                self.on_exit((run.job_key, run.task_key), run.attempt, uploads=bool(task.body.get("outputFiles"))),
                mkdirs=(task_dir, f"{task_dir}/wd"), container=container)
        except MachineError as exc:
            # the node's machine is gone (its host was lost, say) before the node is marked so:
            # not the task's failure; it goes back to the queue for another node, as on Azure
            log.warning("task %s could not start on %s, requeued: %s", task.id, node.id, exc)
            run.ending = "requeue"
            self.ended.put(((run.job_key, run.task_key), run.attempt, Exit(1)))
        except OSError as exc:
            log.warning("task %s could not start on %s: %s", task.id, node.id, exc)
            self.ended.put(((run.job_key, run.task_key), run.attempt, Exit(1)))

    def task_environment(self, job, task, pool, node, user: TaskUser, packages: dict | None = None) -> dict[str, str]:
        """packages: the variables of the task's application packages, installed just before."""
        task_dir = task.internal["dir"]
        env = self.agent.environment(pool, node, task_dir, user)
        env.update({"AZ_BATCH_TASK_ID": task.id, "AZ_BATCH_JOB_ID": job.name,
                    "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd", "AZ_BATCH_TASK_DIR": task_dir,
                    "AZ_BATCH_JOB_PREP_DIR": f"{NODE_ROOT}/workitems/{job.name}/job-1/jobpreparation",
                    "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{NODE_ROOT}/workitems/{job.name}/job-1/jobpreparation/wd"})
        env.update(packages or {})
        for pair in job.body.get("commonEnvironmentSettings", []) + task.body.get("environmentSettings", []):
            env[pair["name"]] = pair["value"]
        env.update(task.internal.get("multi_env", {}).get(node.id, {}))
        if task.body.get("authenticationTokenSettings"):
            env["AZ_BATCH_AUTHENTICATION_TOKEN"] = self.task_tokens.issue(pool.internal["account"], job.name)
        return env

    # nodes ----------------------------------------------------------------------------------------

    def vm_size(self, pool_key: str) -> str:
        pool = self.pools.store.get(pool_key)
        return pool.body["vmSize"] if pool is not None else ""

    def _node_counters(self, node_key: tuple[str, str], finished: bool, succeeded: bool = False) -> None:
        """Counted now, written once per pass (see _flush_nodes)."""
        counts = self._touched.setdefault(node_key, [0, 0])
        counts[0] += 0 if finished else 1
        counts[1] += 1 if succeeded else 0

    def _flush_nodes(self) -> None:
        """runningTasksCount, totalTasksRun and idle/running for the nodes this pass touched."""
        touched, self._touched = self._touched, {}
        changed = []
        for node_key, (started, succeeded) in touched.items():
            node = self.nodes.get(*node_key)
            if node is None:
                continue
            body = node.body
            running = self.runs_on.get(node_key, 0)
            body["runningTasksCount"] = running
            body["runningTaskSlotsCount"] = self.load.get(node_key, 0)
            body["totalTasksRun"] = body.get("totalTasksRun", 0) + started
            body["totalTasksSucceeded"] = body.get("totalTasksSucceeded", 0) + succeeded
            if body["state"] in ("idle", "running") and body["state"] != ("running" if running else "idle"):
                body["state"] = "running" if running else "idle"
                body["stateTransitionTime"] = iso_now()
            changed.append(node)
        if changed:
            self.nodes.put(*changed)

    def node_leaving(self, node: Node, option: str) -> bool:
        """The node is leaving the pool. True when it may go now; False to wait for its
        tasks (taskcompletion, retaineddata)."""
        with self.lock:
            mine = self._attempts_on(node)
            if not mine:
                return True
            if option in ("taskcompletion", "retaineddata"):
                return False
            for run in mine:
                task = self.store.get(run.job_key, run.task_key)
                if option == "requeue" and task is not None:
                    self._kill(run)
                    self.requeue(task)
                else:
                    run.ending = "terminate"
                    self._kill(run)
            self._flush_nodes()
            return option == "requeue"

    def node_interrupted(self, node: Node) -> None:
        """The node rebooted, was reimaged or preempted: its tasks go back to the queue."""
        with self.lock:
            for run in self._attempts_on(node):
                task = self.store.get(run.job_key, run.task_key)
                if run.partners:  # its commands on the nodes still up end with it
                    self._kill(run)
                if task is not None:
                    self.requeue(task)
                else:
                    self._free(run)
            self._flush_nodes()
        self.poke()

    def _attempts_on(self, node: Node) -> list[Running]:
        """The attempts holding slots on the node. A multi-instance subtask there stands for
        its task's attempt (the primary's run, with its partners): as on Azure, the task
        fails or is requeued as a whole when one of its nodes goes."""
        found: dict[tuple[str, str], Running] = {}
        for run in self.running.values():
            if run.node == (node.pool_key, node.id):
                primary = self.running.get((run.job_key, run.task_key.partition("#")[0]), run)
                found[(primary.job_key, primary.task_key)] = primary
        return list(found.values())

    def task_place(self, task: Task) -> files.Place | None:
        """The task's directory, through its node's file service (None: no such machine)."""
        node = task.internal.get("node")
        if not node or "dir" not in task.internal:
            return None
        try:
            return files.Place(self.provider.files(node["machine_key"]), task.internal["dir"].removeprefix("/mnt/"))
        except MachineError:
            return None

    # files ------------------------------------------------------------------------------------------

    def _upload_outputs(self, job: Resource, task: Task, failed: bool) -> dict | None:
        """The task's outputFiles whose uploadCondition holds (storage_files.py): to Azure
        Storage, or to this service's own store (`{account endpoint}/outputs/{container}`).
        Returns the failureInfo of the first that fails."""
        place = self.task_place(task)
        if place is None:
            return None
        account = account_of(task.job_key)
        task_dir = task.internal["dir"]
        env = {"AZ_BATCH_NODE_ROOT_DIR": NODE_ROOT, "AZ_BATCH_NODE_SHARED_DIR": f"{NODE_ROOT}/shared",
               "AZ_BATCH_TASK_DIR": task_dir, "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd",
               "AZ_BATCH_JOB_ID": job.name, "AZ_BATCH_TASK_ID": task.id}
        for pair in job.body.get("commonEnvironmentSettings", []) + task.body.get("environmentSettings", []):
            env[pair["name"]] = pair["value"]

        def own_store(url: str) -> Path | None:
            if self.transfers.storage.owner_of(url) is not None:
                return None
            container = task_spec.own_output_container(url)
            return self.tasks.output_directory(account, container) if container else None

        for spec in task.body["outputFiles"]:
            condition = spec["uploadOptions"]["uploadCondition"]
            if (condition == "tasksuccess" and failed) or (condition == "taskfailure" and not failed):
                continue
            try:
                self.transfers.upload(spec, place.files, NODE_ROOT, f"{task_dir}/wd", env, own_store)
            except TransferFailed as exc:
                log.info("task %s: output files not uploaded: %s", task.id, exc.message)
                return exc.failure_info()
            except Exception as exc:  # never a lost task: any failure is the task's upload error
                log.warning("task %s: output files not uploaded: %s", task.id, exc)
                return {"category": "usererror", "code": "FileUploadMiscError",
                        "message": "One of the output files could not be uploaded",
                        "details": [{"name": "Reason", "value": str(exc)[:300]}]}
        return None

    def _remove_expired_directories(self) -> None:
        expired = self.store.expired(time.time())
        for task in expired:
            self._remove_task_directory(task)
            task.internal.pop("expires", None)
        self.store.update(expired)

    def _remove_task_directory(self, task: Task) -> None:
        place = self.task_place(task)
        if place is not None:
            _quietly(place.files.remove_tree, place.root)

    def _remove_job_directories(self, job: Resource) -> None:
        for node in self.nodes.list(job.internal["pool_key"]):
            try:
                machine_files = self.provider.files(node.internal["machine_key"])
            except MachineError:
                continue
            _quietly(machine_files.remove_tree, f"{NODE_ROOT_ON_DISK}/workitems/{job.name}")

    # restart ----------------------------------------------------------------------------------------

    def _restore(self) -> None:
        """Rebuild the dependency maps; tasks that were running when the service stopped go
        back to the queue, counted as requeued (their processes ended with the service)."""
        for task in self.store.in_states(("active",)):
            if not task.ready and task.internal.get("depends_on"):
                known = self.store.get_many(task.job_key, task.internal["depends_on"])
                unmet = {d.lower() for d in task.internal["depends_on"] if not self._satisfies(known.get(d.lower()))}
                self._wait_on(task.job_key, task.key, unmet)
                if not unmet:
                    task.ready = True
                    self.store.update([task])
        self._recover_exits(self.store.in_states(("running", "preparing")))

    def _recover_exits(self, tasks: list[Task]) -> None:
        """Tasks that were running when the service died: one whose command's exit the
        machine recorded (the service died before recording it) ends as that exit says, as
        Azure's node agent reports a task that ended while the service was away; the others
        were cut short and go back to the queue, counted as requeued."""
        exits: dict[str, dict[str, Exit]] = {}
        uploading = set()
        for task in tasks:
            node = task.internal.get("node")
            if task.state != "running" or not node or "multiInstanceSettings" in task.body:
                self.requeue(task)
                continue
            machine = node["machine_key"]
            if machine not in exits:
                exits[machine] = self.provider.recorded_exits(machine)
            attempt = task.internal.get("attempt", 0)
            outcome = exits[machine].get(f"{task.job_key}|{task.key}|{attempt}")
            if outcome is None:
                self.requeue(task)
                continue
            run = Running(task.job_key, task.key, attempt, (node["pool_key"], node["id"]), machine,
                          task.body.get("requiredSlots", 1), None)
            self._hold(run)
            if task.body.get("outputFiles"):
                uploading.add(machine)
            self.on_exit((task.job_key, task.key), attempt, uploads=bool(task.body.get("outputFiles")))(outcome)
        self._record_ended()
        self._flush_nodes()
        # Every journal is emptied, not only those read: what they hold is recorded now, and
        # the next start after a crash reads only what came after.
        for machine in {n.internal["machine_key"] for n in self.nodes.all()} - uploading:
            self.provider.forget_recorded_exits(machine)

    @staticmethod
    def _set_state(task: Task, state: str) -> None:
        moment = iso_now()
        if task.body.get("state") != state:
            task.body["previousState"] = task.body.get("state")
            task.body["previousStateTransitionTime"] = task.body.get("stateTransitionTime")
        task.body["state"] = state
        task.body["stateTransitionTime"] = moment
        task.body["eTag"] = new_etag()
        task.body["lastModified"] = moment


def container_id(run: Running) -> str:
    """As Docker's: 64 hex digits, one container per attempt."""
    return hashlib.sha256(f"{run.job_key}|{run.task_key}|{run.attempt}".encode()).hexdigest()


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except (OSError, MachineError) as exc:
        log.warning("could not remove a task directory: %s", exc)


def _free_slots(free: dict[str, int]) -> int:
    return sum(max(0, f) for f in free.values())


def _by_priority(jobs: list[Resource]) -> list[list[Resource]]:
    """Jobs ordered by priority, in groups of equal priority (their order kept)."""
    return [list(group) for _, group in groupby(jobs, key=lambda job: job.body.get("priority", 0))]


def _affine_node(free: dict[str, int], nodes: dict, task: Task, slots: int) -> str | None:
    """The node a task's affinityInfo names (a node's affinityId, as a finished task's
    nodeInfo shows it) when it has the task's slots free: Azure takes it as a hint, and so
    does this service (the task goes elsewhere otherwise, rather than wait)."""
    wanted = (task.body.get("affinityInfo") or {}).get("affinityId")
    if not wanted:
        return None
    return next((node_id for node_id, f in free.items()
                 if f >= slots and nodes[node_id].body.get("affinityId", "").lower() == wanted.lower()), None)
