"""Job manager tasks: the task a job starts with (`jobManagerTask`), made when the job is.

Azure's defaults: `killJobOnCompletion` true (the job is terminated, terminateReason
JMComplete, when the task completes), `runExclusive` true (the task takes every slot of
its node, so nothing else runs there meanwhile), `allowLowPriorityNode` true (false keeps
it to dedicated nodes), `requiredSlots` 1. With `authenticationTokenSettings` the task gets a
token for its job (task_tokens.py), with `applicationPackageReferences` its packages, as any
task does.
"""

from __future__ import annotations

from ...store.resources import Resource
from . import batch_input as bi
from . import task_spec

FIELD = "jobManagerTask"


def specification(body: dict, retries: int) -> dict | None:
    spec = bi.obj(body, FIELD)
    if spec is None:
        return None
    shaped = task_spec.command_task(spec, FIELD, retries)
    shaped.update({
        "displayName": bi.string(spec, "displayName", f"{FIELD}.displayName") or None,
        "killJobOnCompletion": bi.boolean(spec, "killJobOnCompletion", f"{FIELD}.killJobOnCompletion", default=True),
        "runExclusive": bi.boolean(spec, "runExclusive", f"{FIELD}.runExclusive", default=True),
        "allowLowPriorityNode": bi.boolean(spec, "allowLowPriorityNode", f"{FIELD}.allowLowPriorityNode",
                                           default=True),
        "requiredSlots": bi.integer(spec, "requiredSlots", f"{FIELD}.requiredSlots", minimum=1, maximum=256,
                                    default=1),
        "outputFiles": task_spec.output_files(spec, f"{FIELD}.outputFiles") or None,
        "authenticationTokenSettings": task_spec.token_settings(spec, f"{FIELD}.authenticationTokenSettings"),
        # checked against the account's applications by Jobs.build, installed as a task's are
        "applicationPackageReferences": bi.array(spec, "applicationPackageReferences",
                                                 f"{FIELD}.applicationPackageReferences") or None,
    })
    return {k: v for k, v in shaped.items() if v is not None}


def start(tasks, account: Resource, job: Resource, pool: Resource | None) -> None:
    """The job's manager task, added with the job (the job is stored already)."""
    spec = job.body[FIELD]
    item = {k: v for k, v in spec.items() if k in ("id", "displayName", "commandLine", "environmentSettings",
                                                   "resourceFiles", "userIdentity", "constraints", "outputFiles",
                                                   "containerSettings", "applicationPackageReferences",
                                                   "authenticationTokenSettings")}
    slots = spec["requiredSlots"]
    if spec["runExclusive"] and pool is not None:
        slots = pool.body["taskSlotsPerNode"]
    item["requiredSlots"] = slots
    task = tasks.create(account, job.name, item)
    task.internal["job_manager"] = True
    task.internal["dedicated_only"] = not spec["allowLowPriorityNode"]
    tasks.store.update([task])


def ends_job(job: Resource, task) -> bool:
    """Whether this completed task is the job manager whose completion ends its job."""
    return bool(task.internal.get("job_manager")) and job.body.get(FIELD, {}).get("killJobOnCompletion", True)
