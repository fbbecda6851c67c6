"""Multi-instance tasks (`multiInstanceSettings`: numberOfInstances, coordinationCommandLine,
commonResourceFiles), as Azure runs them for MPI:

0. it runs only in a pool with enableInterNodeCommunication and taskSlotsPerNode 1; in any
   other, it stays active, never scheduled (`pool_runs_them`);
1. the task waits until `numberOfInstances` distinct nodes of its pool each have its
   `requiredSlots` free, and holds them all: the primary (subtask 0) and subtasks 1..N-1;
2. `commonResourceFiles` are downloaded on every one of them into AZ_BATCH_TASK_SHARED_DIR
   (the task directory, the same path on every node);
3. the coordination command runs on every node at once, with AZ_BATCH_HOST_LIST (the
   nodes' addresses on their pool's private network, primary first),
   AZ_BATCH_MASTER_NODE (`{primary address}:6000`) and AZ_BATCH_IS_CURRENT_NODE_MASTER;
4. once all have exited 0, the task's command line runs on the primary; its exit is the
   task's. A coordination command that fails fails the task with its exit code.

Subtasks 1..N-1 are listed by `listsubtasks` with their node, state (running, then
completed when the task completes), times and coordination exit code. The scheduler
calls in here; the nodes' slots are held by `Running` partners of the primary's run.
"""

from __future__ import annotations

import logging

from ...runtime.commands import Exit
from ...runtime.machines import MachineError
from .node_agent import make_command_dirs
from . import batch_input as bi
from . import task_spec
from .pools import iso_now
from .storage_files import url_blocks

log = logging.getLogger("batchyard.batch")
MASTER_PORT = 6000  # the port Azure names in AZ_BATCH_MASTER_NODE
FIELD = "multiInstanceSettings"


def settings(item: dict) -> dict | None:
    spec = bi.obj(item, FIELD)
    if spec is None:
        return None
    if item.get("containerSettings") is not None:
        raise bi.invalid("containerSettings", "...", "Multi-instance tasks in containers are not supported here.")
    shaped = {"numberOfInstances": bi.integer(spec, "numberOfInstances", f"{FIELD}.numberOfInstances", minimum=1,
                                              maximum=100, default=1),
              "commonResourceFiles": task_spec.resource_files(
                  {"resourceFiles": spec.get("commonResourceFiles")}, f"{FIELD}.commonResourceFiles")}
    command = bi.string(spec, "coordinationCommandLine", f"{FIELD}.coordinationCommandLine", max_len=8192)
    if command is not None:
        shaped["coordinationCommandLine"] = task_spec.no_nul(command, f"{FIELD}.coordinationCommandLine")
    return shaped


def pool_runs_them(pool) -> bool:
    """Azure runs a multi-instance task only in a pool with enableInterNodeCommunication and
    taskSlotsPerNode 1; elsewhere the task is never scheduled and stays active."""
    return bool(pool.body.get("enableInterNodeCommunication")) and pool.body.get("taskSlotsPerNode", 1) == 1


def choose_nodes(free: dict[str, int], count: int, slots: int) -> list[str] | None:
    """`count` distinct nodes with `slots` free, the emptiest first; None if there are not enough."""
    fitting = sorted((f, node_id) for node_id, f in free.items() if f >= slots)
    if len(fitting) < count:
        return None
    return [node_id for _, node_id in reversed(fitting)][:count]


def environment(nodes: list, task_dir: str) -> dict[str, dict[str, str]]:
    """Each node's multi-instance variables, by node id."""
    addresses = [n.body.get("ipAddress", "") for n in nodes]
    common = {"AZ_BATCH_HOST_LIST": ",".join(addresses), "AZ_BATCH_MASTER_NODE": f"{addresses[0]}:{MASTER_PORT}",
              "AZ_BATCH_TASK_SHARED_DIR": task_dir}
    return {node.id: {**common, "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if index == 0 else "false"}
            for index, node in enumerate(nodes)}


def subtask_records(pool, nodes: list, task_dir: str) -> list[dict]:
    moment = iso_now()
    rel = task_dir.removeprefix("/mnt/batch/tasks/")
    return [{"id": index, "nodeInfo": {"affinityId": node.body.get("affinityId"), "poolId": pool.name,
                                       "nodeId": node.id, "taskRootDirectory": rel},
             "startTime": moment, "state": "running", "stateTransitionTime": moment}
            for index, node in enumerate(nodes) if index > 0]


def finish_subtasks(task) -> None:
    """The task completed: so did its subtasks."""
    moment = iso_now()
    codes = task.internal.get("coordination", {})
    for record in task.internal.get("subtasks", []):
        if record["state"] == "completed":
            continue
        code = codes.get(str(record["id"]))
        record.update({"previousState": record["state"], "previousStateTransitionTime": record["stateTransitionTime"],
                       "state": "completed", "stateTransitionTime": moment, "endTime": moment})
        if code is not None:
            record.update({"exitCode": code, "result": "success" if code == 0 else "failure"})


class MultiInstance:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def reserve(self, job, task, pool, nodes: list, running_type) -> None:
        """The primary's run exists (scheduler._assign); its partners hold the other nodes."""
        s = self.scheduler
        run = s.running[(task.job_key, task.key)]
        run.partners = []
        for index, node in enumerate(nodes[1:], start=1):
            partner = running_type(run.job_key, f"{task.key}#{index}", run.attempt, (pool.id.lower(), node.id),
                                   node.internal["machine_key"], run.slots, None)
            s._hold(partner)
            s._node_counters(partner.node, finished=False)
            run.partners.append(partner)
        task.internal["multi_nodes"] = [n.id for n in nodes]
        task.internal["multi_env"] = environment(nodes, task.internal["dir"])
        task.internal["subtasks"] = subtask_records(pool, nodes, task.internal["dir"])
        task.internal["coordination"] = {}

    def launch(self, job, task, pool) -> None:
        self.scheduler.downloads.submit(self._prepare_then_coordinate, job, task, pool)

    def _nodes(self, pool, task) -> list:
        return [self.scheduler.nodes.get(pool.id.lower(), node_id) for node_id in task.internal["multi_nodes"]]

    def _prepare_then_coordinate(self, job, task, pool) -> None:
        s = self.scheduler
        key = (task.job_key, task.key)
        run = s.running.get(key)
        if run is None:  # requeued or ended before this thread came to it
            return
        nodes = self._nodes(pool, task)
        try:
            for node in nodes:
                self._download(task, node, run.user)
        except Exception as exc:  # a file that cannot be fetched fails the task, never loses it
            log.warning("task %s: common resource files: %s", task.id, exc)
            s.ended.put((key, run.attempt, Exit(1)))
            s.poke()
            return
        with s.lock:
            current = s.running.get(key)
            if current is None or current.attempt != run.attempt:
                return
            command = task.body[FIELD].get("coordinationCommandLine")
            if current.ending is not None or command is None:
                if current.ending is not None:
                    s.ended.put((key, run.attempt, Exit(137)))
                    s.poke()
                else:
                    s._start(job, task, pool, nodes[0], current)
                return
            for index, node in enumerate(nodes):
                self._coordinate(job, task, pool, node, index, current, command)

    def _download(self, task, node, user) -> None:
        files = task.body[FIELD]["commonResourceFiles"]
        if not files:
            return
        machine_files = self.scheduler.provider.files(node.internal["machine_key"])
        make_command_dirs(machine_files, task.internal["dir"], user)
        rel = task.internal["dir"].removeprefix("/mnt/")
        for item in files:
            mode = int(item["fileMode"], 8) if item.get("fileMode") else 0o644
            machine_files.write(f"{rel}/{item['filePath']}", url_blocks(item["httpUrl"]), *user.owner, mode)

    def _coordinate(self, job, task, pool, node, index: int, run, command: str) -> None:
        s = self.scheduler
        task_dir = task.internal["dir"]
        env = s.task_environment(job, task, pool, node, run.user)
        name = "stdout.txt" if index else "coordination-stdout.txt"
        command_id = f"{run.job_key}|{task.key}#c{index}|{run.attempt}"
        run.extra_commands.append((node.internal["machine_key"], command_id))
        try:
            s.provider.command_runner(node.internal["machine_key"]).run(
                command_id, ["/bin/sh", "-c", command], env, f"{task_dir}/wd", *run.user.owner, f"{task_dir}/{name}",
                f"{task_dir}/{name.replace('stdout', 'stderr')}",
                s.on_exit(("multi", run.job_key, task.key, index), run.attempt), mkdirs=(task_dir, f"{task_dir}/wd"))
        except (MachineError, OSError) as exc:
            log.warning("task %s: coordination could not start on %s: %s", task.id, node.id, exc)
            s.ended.put((("multi", run.job_key, task.key, index), run.attempt, Exit(1)))

    def record(self, key: tuple, attempt: int, outcome: Exit) -> None:
        """A coordination command ended; when all have, the task's own command runs (or the
        task fails)."""
        s = self.scheduler
        _, job_key, task_key, index = key
        run = s.running.get((job_key, task_key))
        task = s.store.get(job_key, task_key)
        if run is None or run.attempt != attempt or task is None:
            return
        codes = task.internal.setdefault("coordination", {})
        codes[str(index)] = outcome.code if outcome.code is not None else 137
        s.store.update([task])
        instances = task.body[FIELD]["numberOfInstances"]
        if len(codes) < instances:
            return
        failed = next((c for c in codes.values() if c != 0), None)
        if run.ending is not None or failed is not None:
            s.ended.put(((job_key, task_key), attempt, Exit(failed if failed is not None else 137)))
            return
        job = s.jobs.store.get(job_key)
        pool = s.pools.store.get(run.node[0])
        node = s.nodes.get(*run.node)
        if job is None or pool is None or node is None:
            s.ended.put(((job_key, task_key), attempt, Exit(1)))
            return
        s._start(job, task, pool, node, run)
