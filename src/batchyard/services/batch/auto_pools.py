"""Auto pools: a job (or a job schedule) that brings its own pool,
`poolInfo.autoPoolSpecification` {autoPoolIdPrefix, poolLifetimeOption, keepAlive, pool}.

The pool is made with the job (lifetime `job`) or with the schedule's first job and shared
by the schedule's jobs (lifetime `jobschedule`), named `{autoPoolIdPrefix}_{GUID}` as Azure
names it, and made under the rules of any pool the caller could create (a shared key cannot
make a custom-image pool this way either). Unless `keepAlive`, it is deleted once its owner
is done: the job completed or deleted, the schedule completed or deleted. A loop on its
own thread watches the owners.
"""

from __future__ import annotations

import uuid

from ...store.resources import Resource
from ..authorization import Caller
from ..errors import InvalidInput
from . import batch_input as bi
from .background import PokedLoop
from .pools import iso_now

LIFETIMES = ("job", "jobschedule")
DONE_STATES = ("completed", "deleting")


def specification(pool_info: dict) -> dict | None:
    """The job's autoPoolSpecification, checked for its own fields (the pool's are checked
    when the pool is made)."""
    spec = bi.obj(pool_info, "autoPoolSpecification", "poolInfo.autoPoolSpecification")
    if spec is None:
        return None
    field = "poolInfo.autoPoolSpecification"
    prefix = bi.string(spec, "autoPoolIdPrefix", f"{field}.autoPoolIdPrefix", max_len=20)
    if prefix is not None and not prefix.replace("-", "").replace("_", "").isalnum():
        raise bi.invalid(f"{field}.autoPoolIdPrefix", prefix, "The prefix may hold letters, digits, hyphens and "
                                                              "underscores.")
    lifetime = bi.choice(spec, "poolLifetimeOption", LIFETIMES, f"{field}.poolLifetimeOption")
    if lifetime is None:
        raise bi.missing(f"{field}.poolLifetimeOption")
    shaped = {"poolLifetimeOption": lifetime,
              "keepAlive": bi.boolean(spec, "keepAlive", f"{field}.keepAlive", default=False),
              "pool": bi.obj(spec, "pool", f"{field}.pool", required_=True)}
    if prefix is not None:
        shaped["autoPoolIdPrefix"] = prefix
    return shaped


class AutoPools(PokedLoop):
    def __init__(self, jobs, pools, store):
        super().__init__("auto-pools", tick=0.5, gap=0.05)
        self.jobs = jobs
        self.pools = pools
        self.store = store  # the resource table: jobs, schedules and pools
        jobs.auto_pools = self

    def start(self) -> None:
        self.start_loop()

    def stop(self) -> None:
        self.stop_loop()

    def create_for(self, account: Resource, job: Resource, auth: Caller, schedule: Resource | None = None) -> None:
        """Before the job is stored: its pool, made now or, for a schedule's pool, once."""
        spec = job.body["poolInfo"]["autoPoolSpecification"]
        if spec["poolLifetimeOption"] == "jobschedule" and schedule is not None:
            existing = schedule.internal.get("auto_pool")
            if existing and self.store.get(existing) is not None:
                self._attach(job, self.store.get(existing))
                return
            pool = self._make(account, spec, auth, owner=schedule.id.lower())
            schedule.internal["auto_pool"] = pool.id.lower()
        else:
            pool = self._make(account, spec, auth, owner=job.id.lower())
        self._attach(job, pool)

    def check(self, account: Resource, spec: dict, auth: Caller) -> None:
        """The auto pool a job schedule's jobs will make, checked as its pool would be when
        the schedule is made: refused then, not found wanting at each run, with no job made."""
        try:
            self.pools.build(account, {**spec["pool"], "id": "auto-pool-check"}, auth)
        except InvalidInput as exc:
            _rename_fields(exc)
            raise

    def _make(self, account: Resource, spec: dict, auth: Caller, owner: str) -> Resource:
        prefix = spec.get("autoPoolIdPrefix")
        pool_id = f"{prefix}_{uuid.uuid4()}" if prefix else str(uuid.uuid4())
        try:
            pool = self.pools.create(account, {**spec["pool"], "id": pool_id}, auth)
        except InvalidInput as exc:
            _rename_fields(exc)
            raise
        with self.pools.lock:
            pool.internal["auto_pool_owner"] = owner
            pool.internal["keep_alive"] = spec["keepAlive"]
            self.store.put(pool)
        return pool

    def _attach(self, job: Resource, pool: Resource) -> None:
        job.internal["pool_key"] = pool.id.lower()
        job.body.setdefault("executionInfo", {})["poolId"] = pool.name

    # the loop -----------------------------------------------------------------------------------

    def one_pass(self) -> None:
        for pool in self.pools.all_pools():
            owner = pool.internal.get("auto_pool_owner")
            if owner is None or pool.internal.get("keep_alive") or pool.body["state"] == "deleting":
                continue
            found = self.store.get(owner)
            if found is None or found.body.get("state") in DONE_STATES:
                with self.pools.lock:
                    current = self.store.get(pool.id)
                    if current is not None and current.body["state"] != "deleting":
                        current.body["state"] = "deleting"
                        current.body["stateTransitionTime"] = iso_now()
                        self.pools.save(current)


def _rename_fields(exc) -> None:
    """Errors about the pool name it as the job's autoPoolSpecification.pool does."""
    for detail in exc.details:
        if detail.get("key") == "PropertyName":
            detail["value"] = f"poolInfo.autoPoolSpecification.pool.{detail['value']}"
