"""The samples autoscale formulas read: every sampling period (Azure's 30 seconds,
`BATCHYARD_AUTOSCALE_SAMPLE_SECONDS`) each autoscaling pool gets one sample of each
service-defined metric, kept in memory for a day (a restart starts the history again, as
a new pool's does in Azure).

Task metrics count the tasks of the pool's jobs that are not completed: `$ActiveTasks`
(active with their dependencies met), `$RunningTasks`, `$PendingTasks` (their sum),
`$SucceededTasks` and `$FailedTasks` (completed tasks of those jobs). Node metrics:
`$SampleNodeCount`, `$PreemptedNodeCount`, `$UsableNodeCount` (idle or running).
Resource metrics come from the nodes' machines (`runtime/usage.py`): `$CPUPercent` and
`$MemoryBytes`, `$DiskBytes` averaged over the nodes; `$DiskReadBytes`, `$DiskWriteBytes`,
`$DiskReadOps`, `$DiskWriteOps`, `$NetworkInBytes`, `$NetworkOutBytes` and
`$WallClockSeconds` (seconds of running tasks) summed over the period.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from ....runtime.usage import Usage, machine_usage
from ....store.resources import Resource
from ..vm_sizes import lookup as lookup_vm_size
from .values import Metric

HISTORY = timedelta(days=1)
METRICS = ("$CPUPercent", "$WallClockSeconds", "$MemoryBytes", "$DiskBytes", "$DiskReadBytes", "$DiskWriteBytes",
           "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes", "$NetworkOutBytes", "$SampleNodeCount",
           "$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks",
           "$PreemptedNodeCount", "$UsableNodeCount")
_COUNTERS = ("disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops", "network_in_bytes",
             "network_out_bytes")
_COUNTER_METRICS = ("$DiskReadBytes", "$DiskWriteBytes", "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes",
                    "$NetworkOutBytes")
MACHINE_STATES = ("idle", "running", "starting", "waitingforstarttask", "starttaskfailed")


class PoolMetrics:
    def __init__(self, jobs, tasks_store, nodes, provider, period: float):
        self.jobs = jobs
        self.tasks_store = tasks_store
        self.nodes = nodes
        self.provider = provider
        self.period = timedelta(seconds=period)
        self._samples: dict[str, dict[str, deque]] = {}
        self._last: dict[str, datetime] = {}
        self._counters: dict[str, tuple[datetime, Usage]] = {}  # node machine key -> last reading

    def due(self, pool: Resource, moment: datetime) -> bool:
        last = self._last.get(pool.id.lower())
        return last is None or moment - last >= self.period

    def sample(self, pool: Resource, moment: datetime) -> None:
        key = pool.id.lower()
        self._last[key] = moment
        cores = lookup_vm_size(pool.body["vmSize"]).cores
        values = {**self._task_counts(key), **self._node_counts(key), **self._resources(key, moment, cores)}
        history = self._samples.setdefault(key, {name: deque() for name in METRICS})
        for name in METRICS:
            series = history[name]
            series.append((moment, float(values.get(name, 0.0))))
            while series and moment - series[0][0] > HISTORY:
                series.popleft()

    def metrics(self, pool: Resource) -> dict[str, Metric]:
        history = self._samples.get(pool.id.lower(), {})
        return {name: Metric(name, tuple(history.get(name, ())), self.period) for name in METRICS}

    def forget(self, pool_key: str) -> None:
        self._samples.pop(pool_key, None)
        self._last.pop(pool_key, None)

    def _task_counts(self, pool_key: str) -> dict[str, float]:
        counts = {"$ActiveTasks": 0, "$RunningTasks": 0, "$SucceededTasks": 0, "$FailedTasks": 0}
        for job in self.jobs.all_jobs():
            if job.internal.get("pool_key") != pool_key or job.body["state"] in ("completed", "deleting"):
                continue
            # active with their dependencies met, a multi-instance task once per instance, as Azure counts them
            counts["$ActiveTasks"] += self.tasks_store.count_runnable_instances(job.id.lower())
            for (state, result), (number, _) in self.tasks_store.count_by_state(job.id.lower()).items():
                if state == "running":
                    counts["$RunningTasks"] += number
                elif state == "completed":
                    counts["$SucceededTasks" if result == "success" else "$FailedTasks"] += number
        counts["$PendingTasks"] = counts["$ActiveTasks"] + counts["$RunningTasks"]
        counts["$WallClockSeconds"] = counts["$RunningTasks"] * self.period.total_seconds()
        return counts

    def _node_counts(self, pool_key: str) -> dict[str, float]:
        states = [node.state for node in self.nodes.list(pool_key)]
        return {"$SampleNodeCount": len(states), "$PreemptedNodeCount": states.count("preempted"),
                "$UsableNodeCount": sum(1 for s in states if s in ("idle", "running"))}

    def _resources(self, pool_key: str, moment: datetime, cores: int) -> dict[str, float]:
        cpu, memory, disk = [], [], []
        sums = dict.fromkeys(_COUNTER_METRICS, 0.0)
        for node in self.nodes.list(pool_key):
            machine = node.internal.get("machine_key")
            if not machine or node.state not in MACHINE_STATES:
                continue
            usage = machine_usage(self.provider, machine)
            before = self._counters.get(machine)
            self._counters[machine] = (moment, usage)
            memory += [usage.memory_bytes] if usage.memory_bytes is not None else []
            disk += [usage.disk_bytes] if usage.disk_bytes is not None else []
            if before is None:
                continue
            elapsed = (moment - before[0]).total_seconds()
            if usage.cpu_seconds is not None and before[1].cpu_seconds is not None and elapsed > 0:
                used = max(0.0, usage.cpu_seconds - before[1].cpu_seconds)
                cpu.append(min(100.0, 100.0 * used / (elapsed * max(1, cores))))
            for counter, name in zip(_COUNTERS, _COUNTER_METRICS):
                now_value, then_value = getattr(usage, counter), getattr(before[1], counter)
                if now_value is not None and then_value is not None:
                    sums[name] += max(0.0, now_value - then_value)
        return {"$CPUPercent": _mean(cpu), "$MemoryBytes": _mean(memory), "$DiskBytes": _mean(disk), **sums}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
