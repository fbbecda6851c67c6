"""What Azure's fabric and Batch node agent do for one node: make its machine from the
pool's image layers, lay out the Batch directories on its temporary disk, run the start
task, and take the machine apart when the node leaves. The node's state is recorded
through the pool service; the machine itself belongs to the runtime.

Directories follow Azure's Linux layout under the temporary disk:
`/mnt/batch/tasks` (AZ_BATCH_NODE_ROOT_DIR) holding `shared`, `startup`, `workitems`,
`applications` and `fsmounts`.
"""

from __future__ import annotations

import logging
import threading

from ...runtime.commands import Exit
from ...runtime.machine_files import MachineFiles
from ...runtime.provider import DiskSpec, InboundPort, MachineError, MachineProvider, MachineSpec
from ...runtime.security_rules import SecurityRule
from ...store.batch_nodes import Node
from ...store.resources import Resource
from .files import Place
from .pools import Pools, iso_now, stamp_node_state
from .package_install import PackageInstaller
from .storage_files import NodePlace, TransferFailed, Transfers
from .task_users import TaskUser, TaskUsers
from . import containers, vm_sizes

log = logging.getLogger("batchyard.batch")

NODE_ROOT = "/mnt/batch/tasks"
NODE_ROOT_ON_DISK = NODE_ROOT.removeprefix("/mnt/")  # as the file service names it
BATCH_DIRS = ("shared", "startup/wd", "workitems", "applications", "fsmounts")
# A task's (start, preparation, release or plain) failureInfo for an exit code other than 0,
# and for a run past its maxWallClockTime.
FAILURE_EXIT = {"category": "usererror", "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure", "details": []}
WALL_CLOCK = {"category": "usererror", "code": "MaxWallClockTimeExpiry",
              "message": "The task ran longer than the maximum time allowed by its constraints", "details": []}
# Azure has no code of its own for this (its task just dies with 137); the node's limit is
# this service's, so it says which limit ended the task.
OUT_OF_MEMORY = {"category": "usererror", "code": "TaskOutOfMemory",
                 "message": "The task was killed because the node ran out of memory: the processes on the node "
                            "used all the memory of its VM size"}


def failure_info(outcome: Exit, vm_size: str) -> dict:
    """failureInfo of a command that exited with a failure."""
    if outcome.out_of_memory:
        size = vm_sizes.lookup(vm_size)
        details = [{"name": "vmSize", "value": vm_size}]
        if size is not None:
            details.append({"name": "MemoryLimitMiB", "value": str(size.memory_mib)})
        return {**OUT_OF_MEMORY, "details": details}
    return {**FAILURE_EXIT, "details": []}


def inbound_ports(node: Node) -> tuple[InboundPort, ...]:
    """The node's inbound NAT endpoints, each under its NAT pool's security rules (an
    endpoint is named {NAT pool}.{slot})."""
    rules = node.internal.get("inbound_rules", {})
    return tuple(
        InboundPort(e["publicIPAddress"], e["frontendPort"], e["backendPort"], e["protocol"],
                    tuple(SecurityRule(r["priority"], r["access"] == "allow", r["sourceAddressPrefix"],
                                       tuple(r.get("sourcePortRanges") or ["*"]))
                          for r in rules.get(e["name"].rsplit(".", 1)[0], [])))
        for e in node.body.get("endpointConfiguration", {}).get("inboundEndpoints", []))


class NodeAgent:
    def __init__(self, provider: MachineProvider, pools: Pools, account_url, transfers: Transfers,
                 packages: PackageInstaller, users: TaskUsers):
        self.provider = provider
        self.pools = pools
        self.users = users  # who each command runs as (task_users.py)
        self.account_url = account_url  # account name -> the account's Batch endpoint
        self.transfers = transfers  # resource files (storage_files.py)
        self.packages = packages  # application packages (package_install.py)
        # (key, attempt) -> the callback a start task's exit goes to; the scheduler puts its
        # own here, so start tasks end on the same path as tasks
        self.exit_sink = self._direct_exit

    # the machine ----------------------------------------------------------------------------

    @staticmethod
    def machine_spec(node: Node) -> MachineSpec:
        disks = node.internal["disks"]
        return MachineSpec(node.internal["machine_key"], DiskSpec(disks["os"]["key"], disks["os"]["layers"]),
                           {int(lun): DiskSpec(d["key"], d["layers"]) for lun, d in disks["data"].items()},
                           limits=vm_sizes.limits(node.body["vmSize"]),
                           network=node.internal.get("network") or f"pool:{node.pool_key}",
                           inbound_ports=inbound_ports(node))

    def _build_machine(self, node: Node) -> None:
        spec = self.machine_spec(node)
        disks = (spec.os_disk, *spec.data_disks.values())
        self.provider.ensure_layers([layer for disk in disks for layer in disk.layers])
        for disk in disks:
            self.provider.create_disk(disk)
        self.provider.start(spec)
        self.provider.files(spec.key).make_tree(
            (f"{NODE_ROOT_ON_DISK}/{sub}", 0o1777 if sub == "shared" else None) for sub in BATCH_DIRS)

    def _address(self, node: Node) -> dict:
        """ipAddress as the runtime gave it: the node's address on its pool's network; and
        the inbound endpoints' publicIPAddress where the runtime put their ports."""
        key = node.internal["machine_key"]
        address, public = self.provider.address(key), self.provider.public_address(key)
        found = {"ipAddress": address} if address else {}
        endpoints = node.body.get("endpointConfiguration", {}).get("inboundEndpoints")
        if public and endpoints:
            found["endpointConfiguration"] = {"inboundEndpoints": [{**e, "publicIPAddress": public}
                                                                   for e in endpoints]}
        return found

    def _destroy_machine(self, node: Node) -> None:
        spec = self.machine_spec(node)
        self._forget_start_task(node)
        self.provider.delete_machine(spec.key)
        for disk in (spec.os_disk, *spec.data_disks.values()):
            self.provider.delete_disk(disk.key)

    # lifecycles -----------------------------------------------------------------------------

    def provision(self, pool: Resource, node: Node) -> None:
        """creating -> starting -> (waitingforstarttask) -> idle | starttaskfailed | unusable."""
        try:
            self._build_machine(node)
        except (MachineError, OSError) as exc:
            log.warning("node %s could not start: %s", node.id, exc)
            self.pools.set_node_state(node, "unusable", errors=[{
                "code": "NodeStartFailed", "message": f"The node's machine could not start: {exc}",
                "errorDetails": []}])
            return
        moment = iso_now()
        node = self.pools.set_node_state(node, "starting", lastBootTime=moment, errors=[], **self._address(node))
        self._start(pool, node)

    def _start(self, pool: Resource, node: Node) -> None:
        """The start task runs as Azure's does, on every node at once: the node waits in
        waitingforstarttask (or is idle already, without waitForSuccess) and its exit, reported
        through `exit_sink` like a task's, moves it on. No thread waits for it."""
        if not self._install_pool_packages(pool, node) or not self._prefetch_images(pool, node):
            return
        task = pool.body.get("startTask")
        if not task:
            self.pools.set_node_state(node, "idle")
            return
        waits = task.get("waitForSuccess", True)
        self._launch_start_task(pool, node, task, retry=0, state="waitingforstarttask" if waits else "idle")

    def _install_pool_packages(self, pool: Resource, node: Node) -> bool:
        """The pool's application packages, before the start task, as Azure installs them; a
        node that cannot get them is unusable, with the reason in its errors."""
        references = pool.body.get("applicationPackageReferences")
        if not references:
            return True
        try:
            self.packages.install(pool.internal["account"], references,
                                  self.provider.files(node.internal["machine_key"]))
            return True
        except (TransferFailed, MachineError) as exc:
            details = exc.failure_info()["details"] if isinstance(exc, TransferFailed) else []
            log.warning("node %s: application packages not installed: %s", node.id, exc)
            self.pools.set_node_state(node, "unusable", errors=[{
                "code": "ApplicationPackageError", "message": "The pool's application packages could not be "
                "deployed to the node.", "errorDetails": details}])
            return False

    def _prefetch_images(self, pool: Resource, node: Node) -> bool:
        """A container pool's images, on the node's host before the node is idle, as Azure
        prefetches them; a node that cannot get one is unusable, with Azure's error."""
        try:
            containers.prefetch(self.provider, node.internal["machine_key"], pool.body)
            return True
        except containers.ContainerFailure as exc:
            log.warning("node %s: container images not prefetched: %s", node.id, exc)
            self.pools.set_node_state(node, "unusable", errors=[exc.node_error()])
            return False

    def reboot(self, pool: Resource, node: Node) -> None:
        spec = self.machine_spec(node)
        self._forget_start_task(node)
        self.provider.stop(spec.key)
        try:
            self.provider.start(spec)
        except MachineError as exc:
            self.pools.set_node_state(node, "unusable", errors=[{"code": "NodeStartFailed", "message": str(exc),
                                                                 "errorDetails": []}])
            return
        self.boot(pool, node)

    def boot(self, pool: Resource, node: Node) -> None:
        """The node's machine is up again without any of the processes it ran (a reboot, or the
        service's restart: a machine's commands end with the service). It starts as Azure's
        node does after a reboot: the start task runs again, from a new attempt."""
        node = self.pools.set_node_state(node, "starting", lastBootTime=iso_now())
        self._start(pool, node)

    def reimage(self, pool: Resource, node: Node) -> None:
        """A fresh OS disk from the image; the temporary disk goes with it."""
        self._destroy_machine(node)
        self.provision(pool, node)

    def preempt(self, node: Node) -> None:
        self._forget_start_task(node)
        self.provider.stop(node.internal["machine_key"])

    def remove(self, node: Node) -> None:
        self._destroy_machine(node)

    def restore(self, node: Node) -> None:
        """After a restart: a node that had a machine gets it back, disks as they were (but
        none of its processes: see `boot`)."""
        self.provider.start(self.machine_spec(node))

    # the start task ---------------------------------------------------------------------------

    def _download_start_files(self, pool: Resource, node: Node, task: dict, user: TaskUser) -> dict | None:
        """The start task's resource files into its working directory: None, or the failureInfo."""
        if not task.get("resourceFiles"):
            return None
        try:
            machine_files = self.provider.files(node.internal["machine_key"])
            self.transfers.download_all(pool.internal["account"], task["resourceFiles"], NodePlace(
                machine_files, "batch/tasks/startup/wd", *user.owner))
        except TransferFailed as exc:
            return exc.failure_info()
        except (MachineError, OSError) as exc:
            return {"category": "usererror", "code": "ResourceFileCreateFailed", "message": str(exc)[:300],
                    "details": []}
        return None

    def _launch_start_task(self, pool: Resource, node: Node, task: dict, retry: int, state: str | None = None) -> None:
        """One attempt, keyed by a number kept with the node: an exit reported for an attempt
        the node no longer runs (it rebooted, was reimaged or left) changes nothing. `state`:
        the node's state from now on, recorded in the same write."""
        started = iso_now()
        info = {"state": "running", "startTime": started, "retryCount": retry}
        if retry:
            info["lastRetryTime"] = started
        with self.pools.lock:
            current = self.pools.nodes.get(node.pool_key, node.id)
            if current is None or current.state == "leavingpool":
                return
            if state is not None:
                stamp_node_state(current, state)
            attempt = current.internal.get("start_attempt", 0) + 1
            current.internal["start_attempt"] = attempt
            current.body["startTaskInfo"] = info
            self.pools.nodes.put(current)
        user = self.users.for_start_task(task["userIdentity"])
        download_failure = self._download_start_files(pool, current, task, user)
        if download_failure is not None:
            self.start_task_ended(("start", current.pool_key, current.id), attempt, Exit(1), download_failure)
            return
        env = self.environment(pool, current, f"{NODE_ROOT}/startup", user, task.get("environmentSettings", []))
        on_exit = self.exit_sink(("start", current.pool_key, current.id), attempt)
        argv, cwd, container = ["/bin/sh", "-c", task["commandLine"]], f"{NODE_ROOT}/startup/wd", None
        if task.get("containerSettings"):
            try:
                launch = containers.launch(self.provider, current.internal["machine_key"], pool.body, task, env,
                                           f"{NODE_ROOT}/startup")
            except containers.ContainerFailure as exc:
                self.start_task_ended(("start", current.pool_key, current.id), attempt, Exit(1), exc.failure_info())
                return
            argv, env, cwd, container = launch.argv, launch.env, launch.cwd, launch.container
        try:
            self.provider.command_runner(current.internal["machine_key"]).run(
                f"start|{current.id}|{attempt}", argv, env, cwd, *user.owner, f"{NODE_ROOT}/startup/stdout.txt",
                f"{NODE_ROOT}/startup/stderr.txt", on_exit, mkdirs=(f"{NODE_ROOT}/startup", f"{NODE_ROOT}/startup/wd"),
                container=container)
        except (MachineError, OSError) as exc:
            log.warning("start task on %s could not run: %s", current.id, exc)
            on_exit(Exit(1))

    def _forget_start_task(self, node: Node) -> None:
        """The machine is going away under its start task: whatever that attempt reports is stale."""
        with self.pools.lock:
            current = self.pools.nodes.get(node.pool_key, node.id)
            if current is not None and "start_attempt" in current.internal:
                current.internal["start_attempt"] += 1
                self.pools.nodes.put(current)

    def _direct_exit(self, key: tuple, attempt: int):
        return lambda outcome: self.start_task_ended(key, attempt, outcome)

    def start_task_ended(self, key: tuple, attempt: int, outcome: Exit, failure: dict | None = None) -> None:
        """A start task attempt ended: record it, retry it (maxTaskRetryCount), or move the
        node on (idle, or starttaskfailed when the pool waits for success). failure: why the
        attempt ended before its command ran (its resource files), as failureInfo."""
        _, pool_key, node_id = key
        with self.pools.lock:
            node = self.pools.nodes.get(pool_key, node_id)
            pool = self.pools.store.get(pool_key)
            if node is None or pool is None or node.internal.get("start_attempt") != attempt:
                return
            task = pool.body.get("startTask") or node.body.get("startTask")
            info = dict(node.body.get("startTaskInfo") or {})
            if failure is not None:
                info.update({"state": "completed", "endTime": iso_now(), "result": "failure",
                             "failureInfo": failure})
            else:
                info.update({"state": "completed", "endTime": iso_now(), "exitCode": outcome.code,
                             "result": "success" if outcome.code == 0 else "failure"})
                if outcome.code != 0:
                    info["failureInfo"] = failure_info(outcome, node.body["vmSize"])
            retry, allowed = info.get("retryCount", 0), (task or {}).get("maxTaskRetryCount", 0)
            retrying = task is not None and outcome.code != 0 and (allowed == -1 or retry < allowed)
            state = node.state  # the outcome and the node's next state in one write
            if task is not None and not retrying and state == "waitingforstarttask":
                state = "idle" if outcome.code == 0 else "starttaskfailed"
            node = self.pools.set_node_state(node, state, startTaskInfo=info)
            if retrying and node.state != "leavingpool":
                timer = threading.Timer(min(1.0, 0.1 * (retry + 1)), self._launch_start_task,
                                        (pool, node, task, retry + 1))
                timer.daemon = True
                timer.start()

    def environment(self, pool: Resource, node: Node, task_dir: str, user: TaskUser,
                    settings: list[dict] = ()) -> dict[str, str]:
        """A command's variables: Azure's AZ_BATCH_* and then `settings`, its environmentSettings."""
        account = pool.internal["account"]
        env = {
            "AZ_BATCH_ACCOUNT_NAME": account,
            "AZ_BATCH_ACCOUNT_URL": self.account_url(account),
            "AZ_BATCH_POOL_ID": pool.name,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.body["isDedicated"] else "false",
            "AZ_BATCH_NODE_ROOT_DIR": NODE_ROOT,
            "AZ_BATCH_NODE_SHARED_DIR": f"{NODE_ROOT}/shared",
            "AZ_BATCH_NODE_STARTUP_DIR": f"{NODE_ROOT}/startup",
            "AZ_BATCH_NODE_STARTUP_WORKING_DIR": f"{NODE_ROOT}/startup/wd",
            "AZ_BATCH_TASK_DIR": task_dir,
            "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd",
            "AZ_BATCH_OS_RESERVED_EPHEMERAL_PORTS": "",
            "HOME": f"{task_dir}/wd",
            **user.environment(),
        }
        if pool.body.get("applicationPackageReferences"):
            env.update(self.packages.environment(account, pool.body["applicationPackageReferences"]))
        for pair in settings:
            env[pair["name"]] = pair["value"]
        return env


def make_command_dirs(files: MachineFiles, task_dir: str, user: TaskUser) -> None:
    """A command's directory and its wd, the user's. The job's directories above them stay
    root's: a task-scope user that owned them could move the other tasks' directories."""
    rel = task_dir.removeprefix("/mnt/")
    files.make_dirs(rel.rpartition("/")[0])
    files.make_dirs(f"{rel}/wd", *user.owner)


def node_place(provider: MachineProvider, node: Node) -> Place:
    """The node's AZ_BATCH_NODE_ROOT_DIR, through its machine's file service."""
    return Place(provider.files(node.internal["machine_key"]), NODE_ROOT_ON_DISK)
