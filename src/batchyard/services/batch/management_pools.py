"""Pools on the management plane (`Microsoft.Batch/batchAccounts/{account}/pools`, what
azure-mgmt-batch, Terraform and Bicep use): the very pools the data plane serves, under
the same rules (`pools.py`), read and written in ARM's shape (`pool_arm_shape.py`).

Management-plane callers hold an ARM bearer token, so custom-image pools are theirs to make,
as they are for data-plane callers with a bearer token. A PUT on an existing pool, or a
PATCH, changes what a pool may change after creation (scale, start task, metadata,
application packages, display name, identity, tags); the properties fixed at creation may
be given again (a template deployed twice) but not changed.
"""

from __future__ import annotations

import functools
from typing import Any

from ...store.resources import Resource
from ..arm_ids import ResourceId
from ..errors import InvalidInput, NotFound, ServiceError
from . import batch_input as bi
from . import odata, pool_spec
from . import pool_arm_shape as shape
from ..authorization import Caller
from .durations import format_duration, parse_duration
from .pools import Pools, PreconditionFailed

_PATCHABLE = ("startTask", "metadata", "applicationPackageReferences")
_TARGETS = ("targetDedicatedNodes", "targetLowPriorityNodes")


def _in_arm_terms(method):
    """Errors raised in the data plane's terms leave in the management plane's."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ServiceError as error:
            raise shape.arm_error(error) from None
    return wrapper


class ManagementPools:
    def __init__(self, accounts, pools: Pools):
        self.accounts = accounts
        self.pools = pools

    @_in_arm_terms
    def get(self, account_id: ResourceId, name: str) -> Resource:
        return self.pools.get(self.accounts.get(account_id), name)

    @_in_arm_terms
    def list(self, account_id: ResourceId, query: dict) -> tuple[list[dict], str | None]:
        """The account's pools in ARM's shape after $filter, $select and maxresults, and the
        skiptoken of the next page."""
        account = self.accounts.get(account_id)
        views = [shape.render(p) for p in self.pools.list(account)]
        found, next_token = odata.page(views, query, key=lambda v: v["name"].lower())
        return [shape.select(v, query.get("$select")) for v in found], next_token

    @_in_arm_terms
    def create_or_update(self, account_id: ResourceId, name: str, body: Any, if_match: str | None,
                         if_none_match: str | None, caller: Caller) -> Resource:
        account = self.accounts.get(account_id)
        with self.pools.lock:
            try:
                current = self.pools.get(account, name)
            except NotFound:
                current = None
            if current is None:
                if if_match:  # If-Match names a pool that must already be there
                    raise PreconditionFailed()
                return self._create(account, name, body, caller)
            if if_none_match and if_none_match.strip() == "*":
                raise PreconditionFailed()
            return self._change(account, current, body, if_match, caller)

    @_in_arm_terms
    def update(self, account_id: ResourceId, name: str, body: Any, if_match: str | None, caller: Caller) -> Resource:
        account = self.accounts.get(account_id)
        with self.pools.lock:
            return self._change(account, self.pools.get(account, name), body, if_match, caller)

    @_in_arm_terms
    def stop_resize(self, account_id: ResourceId, name: str) -> Resource:
        return self.pools.stop_resize(self.accounts.get(account_id), name)

    @_in_arm_terms
    def disable_autoscale(self, account_id: ResourceId, name: str) -> Resource:
        """The pool keeps the targets its formula set last, as Azure's does."""
        return self.pools.autoscaler.disable(self.accounts.get(account_id), name)

    @_in_arm_terms
    def delete(self, account_id: ResourceId, name: str) -> bool:
        """Starts the deletion; False if there is no such pool."""
        try:
            self.pools.delete(self.accounts.get(account_id), name)
        except NotFound:
            return False
        return True

    def deleting(self, account_id: ResourceId, name: str) -> bool:
        """Whether the pool is still on its way out (its nodes are leaving)."""
        try:
            return self.pools.get(self.accounts.get(account_id), name).body["state"] == "deleting"
        except NotFound:
            return False

    # ---------------------------------------------------------------------------------------

    def _create(self, account: Resource, name: str, body: Any, caller: Caller) -> Resource:
        body = bi.body_object(body)
        spec = shape.data_plane_body(name, shape.properties(body))
        identity = shape.identity(body.get("identity"), None)
        tags = shape.tags(body, None)
        pool = self.pools.create(account, spec, caller)
        return self._record(pool, identity, tags, pool.body.get("displayName"))

    def _change(self, account: Resource, pool: Resource, body: Any, if_match: str | None, caller: Caller) -> Resource:
        """Everything is checked before anything changes; then the resize (which refuses a
        pool that is already resizing), then the rest."""
        body = bi.body_object(body)
        props = shape.properties(body)
        spec = shape.data_plane_body(pool.name, props)
        self._check_fixed(pool, spec)
        patch = {k: spec[k] for k in _PATCHABLE if k in spec}
        pool_spec.start_task(patch)
        bi.name_value_pairs(patch, "metadata")
        self.pools.package_references(account, patch)
        display = bi.string(spec, "displayName") if "displayName" in spec else pool.body.get("displayName")
        identity = shape.identity(body.get("identity"), pool.body.get("identity"))
        tags = shape.tags(body, pool.internal.get("tags"))
        conditions = {"if-match": shape.plain_etags(if_match)} if if_match else None
        resize = {k: spec[k] for k in (*_TARGETS, "resizeTimeout", "nodeDeallocationOption") if k in spec}
        if spec.get("enableAutoScale"):
            self._autoscale(account, pool, spec, conditions)
            conditions = None
        elif "scaleSettings" in props and (pool.body.get("enableAutoScale") or _asks_to_resize(pool, resize)):
            if pool.body.get("enableAutoScale"):  # fixedScale instead of autoScale: the formula stops
                self.pools.autoscaler.disable(account, pool.name, conditions)
                conditions = None
            self.pools.resize(account, pool.name, resize, caller, conditions)
            conditions = None
        # also what refuses a pool being deleted, and checks If-Match when there was no resize
        self.pools.update(account, pool.name, patch, caller, conditions)
        return self._record(self.pools.get(account, pool.name), identity, tags, display)

    def _autoscale(self, account: Resource, pool: Resource, spec: dict, conditions) -> None:
        """scaleSettings.autoScale: the formula and interval given, unless they are the pool's
        already (a template deployed twice)."""
        wanted = {k: spec[k] for k in ("autoScaleFormula", "autoScaleEvaluationInterval") if k in spec}
        body = pool.body
        interval = wanted.get("autoScaleEvaluationInterval")
        same_interval = interval is None or format_duration(
            parse_duration(interval, "autoScaleEvaluationInterval")) == body.get("autoScaleEvaluationInterval")
        if body.get("enableAutoScale") and body.get("autoScaleFormula") == wanted.get("autoScaleFormula") and \
                same_interval:
            return
        self.pools.autoscaler.enable(account, pool.name, wanted, conditions, throttled=False)

    def _check_fixed(self, pool: Resource, spec: dict) -> None:
        changed = pool_spec.changes_kept_at_creation(spec, pool.body)
        for arm_name, data_name in shape.FIXED.items():
            if data_name in changed:
                raise InvalidInput("PropertyCannotBeUpdated",
                                   f"The property '{arm_name}' of a pool cannot be changed after the pool is "
                                   "created; delete the pool and create it again.",
                                   target=f"properties.{arm_name}")

    def _record(self, pool: Resource, identity: dict | None, tags: dict | None, display: str | None) -> Resource:
        """What the management plane sets beside the data plane's properties: identity, tags
        and the display name."""
        if (identity, tags, display) == (pool.body.get("identity"), pool.internal.get("tags"),
                                         pool.body.get("displayName")):
            return pool
        for key, value in (("identity", identity), ("displayName", display)):
            if value is None:
                pool.body.pop(key, None)
            else:
                pool.body[key] = value
        pool.internal["tags"] = tags
        return self.pools.save(pool)


def _asks_to_resize(pool: Resource, resize: dict) -> bool:
    """New targets; or the targets it has while a steady pool falls short of them (a resize
    that timed out or was stopped), which tries again. The same targets on a pool that is
    resizing or there already (a template deployed twice) change nothing."""
    body = pool.body
    wanted = [resize.get(k, 0) for k in _TARGETS]
    if wanted != [body[k] for k in _TARGETS]:
        return True
    return body["allocationState"] == "steady" and \
        wanted != [body["currentDedicatedNodes"], body["currentLowPriorityNodes"]]
