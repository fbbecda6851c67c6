"""Job preparation and release tasks, as Azure runs them: the preparation task runs on a
node before the first of the job's tasks runs there (and, with waitForSuccess, the job's
tasks wait for it, and never run on a node where it failed); the release task runs, when
the job ends, on every node that ran the preparation task, and the job stays
`terminating` until they are done. Their status per node is kept in the job's record."""

from __future__ import annotations

import logging

from ...runtime.commands import Exit
from ...runtime.provider import MachineError
from ...store.batch_nodes import Node
from ...store.resources import Resource
from . import containers, task_spec
from .node_agent import NODE_ROOT, NODE_ROOT_ON_DISK, WALL_CLOCK, failure_info, make_command_dirs
from .pools import iso_now, now, parse_time
from .storage_files import NodePlace, TransferFailed
from .task_users import TaskUser

log = logging.getLogger("batchyard.batch")
KINDS = {"prep": ("jobPreparationTask", "jobpreparation"), "release": ("jobReleaseTask", "jobrelease")}


def node_key(node: Node) -> str:
    return f"{node.pool_key}|{node.id}"


def command_id(kind: str, job: Resource, nkey: str, retry: int) -> str:
    """The id a side task's run goes to its node's agent under: to start it, and to kill it.
    The job's moment of creation is in it: an agent files each exit under its command's id,
    so a job deleted and made again with the same id must not repeat one."""
    return f"{kind}|{job.id.lower()}|{int(job.created * 1e6)}|{nkey}|{retry}"


class SideTasks:
    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.download_failures: dict[tuple, dict] = {}  # (key, attempt) -> failureInfo of its resource files

    def node_ready(self, job: Resource, pool: Resource, node: Node) -> bool:
        """May the job's tasks run on this node now? Starts the preparation task if needed."""
        spec = job.body.get("jobPreparationTask")
        if not spec:
            return True
        status = job.internal.setdefault("prep", {}).get(node_key(node))
        booted = node.body.get("lastBootTime")
        if status is not None and status.get("boot", booted) != booted:  # (a status kept before "boot": this boot)
            if self._runs_again(job, spec, node, status):
                status = None
            else:  # once is enough: this boot's answer is kept
                status["boot"] = booted
                self.scheduler.jobs.store.put(job)
        if status is None:
            self._start(job, pool, node, "prep", retry=0)
            return not spec["waitForSuccess"]
        if not spec["waitForSuccess"]:
            return True
        return status.get("state") == "completed" and status.get("result") == "success"

    def _runs_again(self, job: Resource, spec: dict, node: Node, status: dict) -> bool:
        """The node booted again since the preparation task ran there (a reboot, a reimage, or
        the service's restart, which restarts its machines). As on Azure, the task runs again
        when it had not completed, after a success with rerunOnNodeRebootAfterSuccess (the
        default), and always after a reimage, which took the node's temporary disk and the
        task's directory with it."""
        if status.get("state") != "completed":
            return True
        if status.get("result") == "success" and spec.get("rerunOnNodeRebootAfterSuccess", True):
            return True
        try:
            self.scheduler.provider.files(node.internal["machine_key"]).stat(
                f"{NODE_ROOT_ON_DISK}/workitems/{job.name}/job-1", ["jobpreparation"])
        except (OSError, MachineError):
            return True  # reimaged
        return False

    def release_done(self, job: Resource) -> bool:
        """Starts release tasks where they are due; True once none is left to run. A node's
        release task follows its preparation task there, never runs beside it: one the job's
        end found running ends first (its maxWallClockTime holds)."""
        if not job.body.get("jobReleaseTask"):
            return True
        release = job.internal.setdefault("release", {})
        preparing = False
        for key, prep in job.internal.get("prep", {}).items():
            if key in release:
                continue
            pool_key, node_id = key.split("|", 1)
            node = self.scheduler.nodes.get(pool_key, node_id)
            pool = self.scheduler.pools.store.get(pool_key)
            if node is None or pool is None or node.state not in ("idle", "running"):
                release[key] = {"state": "completed", "result": "failure", "skipped": True}
                continue
            if prep.get("state") != "completed":
                preparing = True
                continue
            self._start(job, pool, node, "release", retry=0)
        return not preparing and all(status.get("state") == "completed" for status in release.values())

    def _start(self, job: Resource, pool: Resource, node: Node, kind: str, retry: int) -> None:
        field, directory = KINDS[kind]
        spec = job.body[field]
        task_dir = f"{NODE_ROOT}/workitems/{job.name}/job-1/{directory}"
        # a task-scope user is the job's for this kind, on every node and every run
        users = job.internal.get("users", {})
        user = self.scheduler.agent.users.for_task(spec["userIdentity"], users, kind)
        if users:
            job.internal["users"] = users  # saved with the status below
        status = {"state": "running", "startTime": iso_now(), "retryCount": retry,
                  "taskRootDirectory": f"workitems/{job.name}/job-1/{directory}",
                  "boot": node.body.get("lastBootTime")}  # the node's boot it ran in (_runs_again)
        job.internal.setdefault(kind, {})[node_key(node)] = status
        self.scheduler.jobs.store.put(job)
        env = self.scheduler.agent.environment(pool, node, task_dir, user)
        env.update({"AZ_BATCH_TASK_ID": spec["id"], "AZ_BATCH_JOB_ID": job.name,
                    "AZ_BATCH_JOB_PREP_DIR": f"{NODE_ROOT}/workitems/{job.name}/job-1/jobpreparation",
                    "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{NODE_ROOT}/workitems/{job.name}/job-1/jobpreparation/wd"})
        for pair in job.body.get("commonEnvironmentSettings", []) + spec.get("environmentSettings", []):
            env[pair["name"]] = pair["value"]
        key = ("side", kind, job.id.lower(), node_key(node))

        def run(launch: containers.Launch | None = None) -> None:
            argv, variables, cwd = ["/bin/sh", "-c", spec["commandLine"]], env, f"{task_dir}/wd"
            if launch is not None:
                argv, variables, cwd = launch.argv, launch.env, launch.cwd
            try:
                self.scheduler.provider.command_runner(node.internal["machine_key"]).run(
                    command_id(kind, job, node_key(node), retry), argv, variables, cwd, *user.owner,
                    f"{task_dir}/stdout.txt", f"{task_dir}/stderr.txt", self.scheduler.on_exit(key, retry),
                    mkdirs=(task_dir, f"{task_dir}/wd"), container=launch.container if launch else None)
            except (MachineError, OSError) as exc:
                log.warning("%s task of %s could not start on %s: %s", kind, job.name, node.id, exc)
                self.scheduler.ended.put((key, retry, Exit(1)))
                self.scheduler.poke()

        if spec.get("resourceFiles") or spec.get("containerSettings"):
            self.scheduler.downloads.submit(self._download_then_run, pool, node, spec, task_dir, user, key, retry,
                                            run, env)
        else:
            run()

    def _download_then_run(self, pool: Resource, node: Node, spec: dict, task_dir: str, user: TaskUser, key: tuple,
                           retry: int, run, env: dict) -> None:
        """Resource files and a container's image come before the command, outside the
        scheduler's lock (they may be large)."""
        try:
            launch = None
            if spec.get("resourceFiles"):
                machine_files = self.scheduler.provider.files(node.internal["machine_key"])
                make_command_dirs(machine_files, task_dir, user)
                place = NodePlace(machine_files, f"{task_dir.removeprefix('/mnt/')}/wd", *user.owner)
                self.scheduler.transfers.download_all(pool.internal["account"], spec["resourceFiles"], place)
            if spec.get("containerSettings"):
                launch = containers.launch(self.scheduler.provider, node.internal["machine_key"], pool.body, spec,
                                           env, task_dir, env.get("AZ_BATCH_JOB_PREP_DIR"))
        except (TransferFailed, containers.ContainerFailure, MachineError, OSError) as exc:
            self.download_failures[(key, retry)] = exc.failure_info() \
                if isinstance(exc, (TransferFailed, containers.ContainerFailure)) else {
                "category": "usererror", "code": "ResourceFileCreateFailed", "message": str(exc)[:300],
                "details": []}
            self.scheduler.ended.put((key, retry, Exit(1)))
            self.scheduler.poke()
            return
        with self.scheduler.lock:
            run(launch)

    def record(self, key: tuple, attempt: int, outcome: Exit) -> None:
        code = outcome.code
        _, kind, job_key, nkey = key
        job = self.scheduler.jobs.store.get(job_key)
        if job is None:
            return
        status = job.internal.get(kind, {}).get(nkey)
        download_failure = self.download_failures.pop((key, attempt), None)
        if status is None or status.get("retryCount") != attempt:
            return
        retries = job.body["jobPreparationTask"]["constraints"]["maxTaskRetryCount"] if kind == "prep" else 0
        timed_out = status.pop("timedOut", False)
        if code != 0 and not timed_out and (retries == -1 or attempt < retries):
            pool_key, node_id = nkey.split("|", 1)
            node, pool = self.scheduler.nodes.get(pool_key, node_id), self.scheduler.pools.store.get(pool_key)
            if node is not None and pool is not None:
                self._start(job, pool, node, kind, attempt + 1)
                return
        status.update({"state": "completed", "endTime": iso_now(), "exitCode": code,
                       "result": "success" if code == 0 else "failure"})
        if download_failure is not None:
            status.pop("exitCode")
            status["failureInfo"] = download_failure
        elif timed_out:
            status.update({"result": "failure", "failureInfo": WALL_CLOCK})
        elif code != 0:
            status["failureInfo"] = failure_info(outcome, self.scheduler.vm_size(nkey.split("|", 1)[0]))
        self.scheduler.jobs.store.put(job)

    def enforce_wall_clock(self, job: Resource) -> None:
        """A preparation or release task that runs past its maxWallClockTime is killed, as on
        Azure (a release task's is 15 minutes at most and by default), and not retried: its
        exit records MaxWallClockTimeExpiry. Asked at each pass; the kill goes again at each
        until the exit comes (a task still fetching its files starts, then is killed)."""
        for kind, (field, _) in KINDS.items():
            spec = job.body.get(field)
            limit = task_spec.seconds(spec["maxWallClockTime"] if kind == "release" else
                                      spec["constraints"].get("maxWallClockTime")) if spec else None
            if limit is None:
                continue
            for nkey, status in job.internal.get(kind, {}).items():
                if status.get("state") != "running" or \
                        (now() - parse_time(status["startTime"])).total_seconds() <= limit:
                    continue
                if not status.get("timedOut"):
                    status["timedOut"] = True
                    self.scheduler.jobs.store.put(job)
                self._kill(job, kind, nkey, status["retryCount"])

    def _kill(self, job: Resource, kind: str, nkey: str, retry: int) -> None:
        node = self.scheduler.nodes.get(*nkey.split("|", 1))
        if node is None:
            return
        try:
            self.scheduler.provider.command_runner(node.internal["machine_key"]).kill(command_id(kind, job, nkey, retry))
        except MachineError:
            pass

    def status_list(self, job: Resource) -> list[dict]:
        """The job's preparation and release tasks, node by node."""
        out = []
        for key, prep in job.internal.get("prep", {}).items():
            pool_key, node_id = key.split("|", 1)
            pool = self.scheduler.pools.store.get(pool_key)
            pool_id = pool.name if pool is not None else pool_key.rsplit("/", 1)[-1]
            entry = {"poolId": pool_id, "nodeId": node_id, "jobPreparationTaskExecutionInfo": _public(prep)}
            release = job.internal.get("release", {}).get(key)
            if release is not None and not release.get("skipped"):
                entry["jobReleaseTaskExecutionInfo"] = _public(release)
            out.append(entry)
        return out


def _public(status: dict) -> dict:
    return {k: v for k, v in status.items() if k not in ("skipped", "timedOut", "boot")}
