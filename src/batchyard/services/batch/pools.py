"""Batch pools: the rules Azure documents for creating, changing, resizing and deleting a
pool, and the operations on its nodes. The work of allocating machines runs in the
background (`allocation.py`); everything here answers at once.

A pool is a row of the resource table, under its account's id (the management plane's
pool id), holding its wire body; `internal` keeps the image's layers (so nodes keep
working after the image is deleted), its lineage (for the shared custom-image limits)
and the resize in progress. Nodes live in their own table (`store/batch_nodes.py`).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from ...runtime.provider import MachineError
from ...store.batch_nodes import Node, NodeStore
from ...store.keyset import LIST_CHUNK
from ...store.resources import Resource, ResourceStore
from ..arm_ids import parse
from ..authorization import GALLERY_IMAGE_ACTION, MANAGED_IMAGE_ACTION, Caller
from ..compute.catalog import DOCKER_COMPATIBLE
from ..compute.image_sources import ImageContent, kind_of
from ..errors import ConditionFailed, Conflict, Forbidden, InvalidInput, NotFound, ServiceError
from . import batch_input as bi
from . import pool_spec
from .durations import format_duration
from .files import Place
from .vm_sizes import lookup as lookup_vm_size

POOL_TYPE = "Microsoft.Batch/batchAccounts/pools"
IMAGE_DELETED_MESSAGE = ("There was an error encountered while performing the last resize on the pool. "
                         "Please try resizing the pool again.")
# Node states in which the node's machine and its Batch directories are there to read.
FILE_STATES = ("starting", "waitingforstarttask", "idle", "running", "starttaskfailed", "offline")


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Azure's form, 2026-12-05T23:45:30.123456Z (isoformat: a fraction of strftime's cost,
    and a task's start and end each write several). A moment given in another offset (a
    client's doNotRunUntil of ...+05:00) is that moment in UTC."""
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def iso_now() -> str:
    """iso(now()), from a clock read once: the seconds part is formatted once a second (a
    task's start and end write several timestamps; most share their second)."""
    global _formatted_second
    moment = time.time()
    second = int(moment)
    cached = _formatted_second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _formatted_second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{int((moment - second) * 1_000_000):06d}Z"


_formatted_second: tuple[int, str] = (-1, "")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_etag() -> str:
    return f"0x{time.time_ns():X}"


def stamp_node_state(node: Node, state: str) -> None:
    node.body["state"] = state
    node.body["stateTransitionTime"] = iso_now()


def stamp_allocation(pool: Resource, state: str) -> None:
    pool.body["allocationState"] = state
    pool.body["allocationStateTransitionTime"] = iso_now()


def image_denied(image_id: str, gallery: bool = False) -> tuple[str, str, list[dict]]:
    """Azure's refusal of a pool whose image the caller's identity may not use (its wording,
    'privelege' included: clients match on it): reading a managed image, or for a gallery
    image the right to read its disks (beginGetAccess), which Reader does not give."""
    privilege = GALLERY_IMAGE_ACTION if gallery else MANAGED_IMAGE_ACTION
    reason = (f"The user identity used for this operation does not have the required privelege "
              f"{privilege} on the specified resource {image_id}")
    return "InsufficientPermissions", reason + ".", [{"key": "Reason", "value": reason}]


def _grower(auth: Caller) -> dict:
    """The bearer principal on whose permissions the pool grows (the shared key is the
    account itself: its pools grow from marketplace images and aliases only)."""
    if auth.mode != PoolAuth.BEARER:
        return {}
    return {"grower": auth.record()}


class PoolAuth:
    """How the request that touches a pool was authenticated."""
    SHARED_KEY = "SharedKey"
    BEARER = "AAD"


class Pools:
    def __init__(self, store: ResourceStore, nodes: NodeStore, catalog, settings, accounts, *, node_place,
                 applications, authorization, image_sources):
        self.store = store
        self.accounts = accounts  # their quotas
        self.nodes = nodes
        self.catalog = catalog
        self.settings = settings
        # One lock for every pool and node record: the API and the allocator both change them.
        self.lock = threading.RLock()
        self._on_work: list = []  # called whenever a pool has work (the allocator's poke)
        self.autoscaler = None  # set by the autoscaler (autoscale/autoscaler.py)
        self.node_place = node_place  # node -> its AZ_BATCH_NODE_ROOT_DIR (files.Place)
        self.applications = applications  # checks applicationPackageReferences (applications.py)
        self.authorization = authorization  # who may read which image (services/authorization.py)
        self.image_sources = image_sources  # the one reader of image ids (compute/image_sources.py)

    # reading --------------------------------------------------------------------------------

    @staticmethod
    def key(account: Resource, pool_id: str) -> str:
        return f"{account.id}/pools/{pool_id}".lower()

    def get(self, account: Resource, pool_id: str) -> Resource:
        pool = self.store.get(self.key(account, pool_id)) if isinstance(pool_id, str) else None
        if pool is None or pool.type.lower() != POOL_TYPE.lower():
            raise NotFound("PoolNotFound", "The specified pool does not exist.")
        return pool

    def list(self, account: Resource) -> list[Resource]:
        """The account's pools, in the order of their lower-cased ids."""
        return list(self.store.in_key_order(self.key_prefix(account), POOL_TYPE, None, LIST_CHUNK))

    def key_prefix(self, account: Resource) -> str:
        """What the keys of the account's pools begin with (a pool's key is this and its
        lower-cased id, so their keys sort as their ids do)."""
        return self.key(account, "")

    def all_pools(self) -> list[Resource]:
        return self.store.list(type=POOL_TYPE)

    def nodes_in_id_order(self, account: Resource, pool_id: str, after: str | None, chunk: int = 500):
        """The pool's nodes in id order from just after `after`."""
        return self.nodes.in_id_order(self.key_of(account, pool_id), after, chunk)

    def key_of(self, account: Resource, pool_id: str) -> str:
        """The pool's key, or the 404 of a pool that does not exist."""
        return self.get(account, pool_id).id.lower()

    def node_states(self, account: Resource, pool_id: str) -> list[tuple[str, str, int, bool]]:
        """(id, state, running task slots, dedicated) of each of the pool's nodes, in id order."""
        return self.nodes.states(self.get(account, pool_id).id.lower())

    def get_node(self, account: Resource, pool_id: str, node_id: str) -> Node:
        node = self.nodes.get(self.get(account, pool_id).id.lower(), node_id)
        if node is None:
            raise NotFound("NodeNotFound", "The specified node does not exist.")
        return node

    def node_directory(self, account: Resource, pool_id: str, node_id: str) -> Place:
        """The node's AZ_BATCH_NODE_ROOT_DIR, for its file operations; 409 NodeNotReady while
        the node has no machine (creating, unusable, leaving, ...)."""
        node = self.get_node(account, pool_id, node_id)
        place = None
        if node.state in FILE_STATES and node.internal.get("machine_key"):
            try:
                place = self.node_place(node)
                if not place.files.stat(place.root, []).is_dir:
                    place = None
            except (OSError, MachineError, ValueError, KeyError):
                place = None
        if place is None:
            raise Conflict("NodeNotReady", f"The node is {node.state}; its files can be reached once its machine "
                           "has started.")
        return place

    def package_references(self, account: Resource, body: dict, field: str = "applicationPackageReferences") -> list:
        """applicationPackageReferences, each naming a package that exists (applications.py)."""
        return self.applications.check_references(account.name, body, field)

    # creating -------------------------------------------------------------------------------

    def create(self, account: Resource, body: dict, auth: Caller) -> Resource:
        pool = self.build(account, body, auth)
        with self.accounts.writing(account), self.lock:
            if self.store.get(pool.id) is not None:
                raise Conflict("PoolExists", "The specified pool already exists.")
            if len(self.list(account)) >= self.accounts.quotas(account)["poolQuota"]:
                raise Conflict("PoolQuotaReached", "The specified account has reached its pool quota.")
            self.store.put(pool)
            if pool.body["enableAutoScale"]:
                self.autoscaler.start_pool(pool)
        self._poke()
        return pool

    def build(self, account: Resource, body: dict, auth: Caller) -> Resource:
        """A new pool from its body, checked (image, permission on it, every setting), not
        stored: a job schedule's auto pool is checked so when the schedule is made."""
        body = bi.body_object(body)
        pool_id = pool_spec.pool_id(body.get("id"))
        vm_size = pool_spec.vm_size(body.get("vmSize"))
        config = pool_spec.vm_configuration(body)
        image = self._image_for(account, config, auth)
        autoscale = self.autoscaler.creation_fields(body)
        pool_spec.refuse_unhonoured(body)
        dedicated, low_priority = (0, 0) if autoscale["enableAutoScale"] else pool_spec.targets(body)
        timeout = pool_spec.resize_timeout(body, self.settings.min_resize_timeout)
        cores = lookup_vm_size(vm_size).cores
        wire = {
            "id": pool_id,
            "displayName": bi.string(body, "displayName", max_len=1024) or None,
            "vmSize": vm_size,
            "virtualMachineConfiguration": config,
            "resizeTimeout": format_duration(timeout),
            "targetDedicatedNodes": dedicated,
            "targetLowPriorityNodes": low_priority,
            **autoscale,
            "enableInterNodeCommunication": bi.boolean(body, "enableInterNodeCommunication", default=False),
            "taskSlotsPerNode": pool_spec.task_slots(body, cores),
            "taskSchedulingPolicy": pool_spec.scheduling_policy(body),
            "startTask": pool_spec.start_task(body),
            "networkConfiguration": pool_spec.network_configuration(body),
            "metadata": bi.name_value_pairs(body, "metadata"),
            "applicationPackageReferences": self.package_references(account, body),
            "resourceTags": pool_spec.resource_tags(body),
            "targetNodeCommunicationMode": pool_spec.communication_mode(body),
        }
        wire = {k: v for k, v in wire.items() if v is not None}
        moment = iso_now()
        wire.update({"eTag": new_etag(), "lastModified": moment, "creationTime": moment, "state": "active",
                     "stateTransitionTime": moment, "allocationState": "resizing",
                     "allocationStateTransitionTime": moment, "currentDedicatedNodes": 0,
                     "currentLowPriorityNodes": 0, "resizeErrors": []})
        return Resource(id=f"{account.id}/pools/{pool_id}", type=POOL_TYPE, subscription=account.subscription,
                        resource_group=account.resource_group, name=pool_id, body=wire,
                        internal={"account": account.name, **image, "node_generation": 0,
                                  "resize": self._resize_record(timeout, "requeue"), **_grower(auth)})

    def _image_for(self, account: Resource, config: dict, auth: Caller) -> dict:
        """The layers a node of this pool is made of, after Azure's rules for the image."""
        reference = config["imageReference"]
        agent = config["nodeAgentSKUId"]
        if "virtualMachineImageId" in reference:
            if auth.mode == PoolAuth.SHARED_KEY:
                raise self._shared_key_refused()
            self._check_agent_for_linux(agent)
            return self._custom_image_layers(self._custom_image(account, reference["virtualMachineImageId"], auth))
        try:
            base = self.catalog.resolve(reference, "virtualMachineConfiguration.imageReference")
        except ServiceError as exc:
            raise bi.invalid("virtualMachineConfiguration.imageReference", reference, exc.message) from exc
        if base.node_agent_sku_id.lower() != agent.lower():
            raise bi.invalid("virtualMachineConfiguration.nodeAgentSKUId", agent,
                             f"The image {base.urn} needs the node agent SKU '{base.node_agent_sku_id}'.")
        if config.get("containerConfiguration") is not None:
            self._check_containers(base, config["containerConfiguration"]["type"])
        if base.image_id:
            # A marketplace alias of a managed image: the service's administrator chose the
            # image, so a shared key may use it, as it may any marketplace image.
            return self._custom_image_layers(self._custom_image(account, base.image_id))
        return {"image_id": None, "os_layers": base.layers, "data_layers": {}, "layers": list(base.layers),
                "lineage": []}

    @staticmethod
    def _custom_image_layers(image: ImageContent) -> dict:
        """What the pool keeps of its image: nodes keep working after it is deleted. A
        gallery image records the exact version its nodes get (`exactVersion`)."""
        return {"image_id": image.named, "os_layers": image.os_layers, "data_layers": image.data_layers,
                "layers": image.layers, "lineage": image.lineage, "exact_version": image.exact_version}

    @staticmethod
    def _shared_key_refused() -> Forbidden:
        """Azure refuses a pool from any custom image (managed or gallery) to the shared key:
        the account's key is not an identity the image's permissions can be checked for."""
        return Forbidden(
            "InsufficientPermissions",
            "The specified type of authentication SharedKey is not allowed when external resources of type "
            "Compute are linked.",
            details=[{"key": "AuthenticationMode", "value": "SharedKey"},
                     {"key": "Reason", "value": "Pools from a custom image (virtualMachineImageId) need a Microsoft "
                                               "Entra ID token for https://batch.core.windows.net/."}])

    def _custom_image(self, account: Resource, image_id: str, caller: Caller | None = None) -> ImageContent:
        """The image a pool names (a managed image, or a gallery version or definition), after
        Azure's rules; `caller` must be allowed to use it (an alias's image was chosen by the
        administrator: no caller)."""
        field = "virtualMachineConfiguration.imageReference.virtualMachineImageId"
        try:
            rid = parse(image_id, field)
            gallery = kind_of(image_id, field) != "image"
        except ServiceError as exc:
            raise bi.invalid(field, image_id, "The value is not the resource id of a managed image (/subscriptions/…"
                                              "/providers/Microsoft.Compute/images/…) or of a gallery image definition "
                                              "or version (…/galleries/…/images/…[/versions/…]).") from exc
        if rid.subscription.lower() != account.subscription.lower():
            raise bi.invalid(field, image_id, f"The image is in subscription '{rid.subscription}', but the Batch "
                                              f"account '{account.name}' is in subscription '{account.subscription}'; "
                                              "the image must be in the account's subscription.")
        # before the image is looked up: a caller who may not use it learns nothing of it
        if caller is not None and not self.authorization.may_use_image(caller, image_id, gallery):
            code, message, details = image_denied(image_id, gallery)
            raise Forbidden(code, message, details=details)
        account_location = account.body.get("location", "").lower()
        image = self.image_sources.find(image_id, field, account_location)
        if image is None:
            if gallery and self.store.get(str(rid)) is not None:
                raise bi.invalid(field, image_id, f"The gallery image has no version that can be used in the Batch "
                                                  f"account's region '{account_location}': a version must have "
                                                  "finished replicating there (and, for the latest version, not be "
                                                  "excluded from latest).")
            raise bi.invalid(field, image_id, "The specified image does not exist.")
        if account_location not in image.regions:
            if gallery:
                raise bi.invalid(field, image_id, f"The image version {image.exact_version} has no replica in the "
                                                  f"Batch account's region '{account_location}' (replicas: "
                                                  f"{', '.join(image.regions) or 'none'}); add the region to its "
                                                  "publishingProfile.targetRegions.")
            raise bi.invalid(field, image_id, f"The image is in region '{image.regions[0]}', but the Batch account "
                                              f"'{account.name}' is in region '{account_location}'; the image must "
                                              "be in the account's region.")
        if image.os_type.lower() != "linux":
            raise bi.invalid(field, image_id, "Windows images are not supported: nodes here run Linux.")
        if gallery and image.os_state != "Generalized":
            raise bi.invalid(field, image_id, "The gallery image is specialized; Batch pools need a generalized "
                                              "image (osState Generalized).")
        if image.extensions_installed:
            raise bi.invalid(field, image_id, "The image was captured from a virtual machine that had VM extensions "
                                              "installed; Batch does not support such images. Capture it from a "
                                              "machine without extensions.")
        return image

    def _check_containers(self, base, kind: str) -> None:
        """Azure runs container tasks only on images whose supported-images entry says
        DockerCompatible; a custom image it cannot judge (its owner installs the runtime),
        so those pass."""
        if DOCKER_COMPATIBLE in base.capabilities:
            return
        able = sorted(f"{b.urn} ({b.node_agent_sku_id})" for b in self.catalog.all()
                      if DOCKER_COMPATIBLE in b.capabilities)
        raise bi.invalid("virtualMachineConfiguration.containerConfiguration", kind,
                         f"The image {base.urn} does not support containers (it has no {DOCKER_COMPATIBLE} capability "
                         "in the supported images); "
                         + ("images that do: " + ", ".join(able) + "." if able else
                            "no image here does: this host's machines cannot run containers."))

    def _check_agent_for_linux(self, agent: str) -> None:
        linux_agents = {b.node_agent_sku_id.lower() for b in self.catalog.all() if b.os_type.lower() == "linux"}
        if agent.lower() not in linux_agents:
            raise bi.invalid("virtualMachineConfiguration.nodeAgentSKUId", agent,
                             "The node agent SKU does not match the image's operating system (Linux); supported: "
                             + ", ".join(sorted(linux_agents)) + ".")

    def _resize_record(self, timeout: timedelta, deallocation: str) -> dict:
        return {"started": time.time(), "timeout": timeout.total_seconds(), "deallocation": deallocation,
                "errors": []}

    # changing -------------------------------------------------------------------------------

    def update(self, account: Resource, pool_id: str, body: dict, auth: Caller, conditions=None) -> Resource:
        """PATCH: the properties given replace the pool's; the others stay."""
        body = bi.body_object(body)
        pool_spec.refuse_unhonoured(body)
        with self.lock:
            pool = self._changeable(account, pool_id, conditions)
            pool_spec.refuse_changes_kept_at_creation(body, pool.body)
            if "displayName" in body:
                pool.body["displayName"] = bi.string(body, "displayName", max_len=1024)
            if "resourceTags" in body:
                pool.body["resourceTags"] = pool_spec.resource_tags(body)
            if "startTask" in body:
                pool.body["startTask"] = pool_spec.start_task(body)
                if pool.body["startTask"] is None:
                    del pool.body["startTask"]
            if "metadata" in body:
                pool.body["metadata"] = bi.name_value_pairs(body, "metadata")
            if "applicationPackageReferences" in body:
                pool.body["applicationPackageReferences"] = self.package_references(account, body)
            if "targetNodeCommunicationMode" in body:
                pool.body["targetNodeCommunicationMode"] = pool_spec.communication_mode(body)
            pool.body = {k: v for k, v in pool.body.items() if v is not None}  # given as null: removed
            return self._save(pool)

    def replace_properties(self, account: Resource, pool_id: str, body: dict, auth: Caller) -> Resource:
        """updateproperties: what is not given is removed."""
        body = bi.body_object(body)
        pool_spec.refuse_unhonoured(body)  # old SDKs always send certificateReferences, empty
        with self.lock:
            pool = self._changeable(account, pool_id, None)
            start_task = pool_spec.start_task(body)
            pool.body.pop("startTask", None)
            if start_task is not None:
                pool.body["startTask"] = start_task
            pool.body["metadata"] = bi.name_value_pairs(body, "metadata")
            if "applicationPackageReferences" not in body:
                raise bi.missing("applicationPackageReferences")
            pool.body["applicationPackageReferences"] = self.package_references(account, body)
            return self._save(pool)

    def resize(self, account: Resource, pool_id: str, body: dict, auth: Caller, conditions=None) -> Resource:
        body = bi.body_object(body)
        dedicated, low_priority = pool_spec.targets(body)
        timeout = pool_spec.resize_timeout(body, self.settings.min_resize_timeout)
        deallocation = pool_spec.deallocation_option(body)
        with self.lock:
            pool = self._changeable(account, pool_id, conditions)
            if pool.body.get("enableAutoScale"):
                raise Conflict("AutoScalingEnabled", "The pool scales by its autoscale formula; disable autoscale "
                               "before resizing it.")
            self._require_steady(pool)
            reference = pool.body.get("virtualMachineConfiguration", {}).get("imageReference", {})
            custom = "virtualMachineImageId" in reference
            if custom and auth.mode == PoolAuth.SHARED_KEY:  # not an alias of a managed image (see _image_for)
                raise self._shared_key_refused()
            if custom and kind_of(reference["virtualMachineImageId"], "imageReference") == "definition":
                self._follow_latest(account, pool)
            pool.internal.update(_grower(auth))
            pool.body.update({"targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low_priority,
                              "resizeTimeout": format_duration(timeout)})
            self._begin_resize(pool, timeout, deallocation)
            return self._save(pool)

    def image_unavailable(self, pool: Resource) -> str | None:
        """Why the pool's custom image cannot make nodes now (deleted; for a gallery image,
        no replica in the account's region any more), or None."""
        image_id = pool.internal.get("image_id")
        if not image_id:
            return None
        account = self.accounts.by_name(pool.internal["account"])
        region = account.body.get("location", "").lower() if account is not None else None
        image = self.image_sources.find(image_id, "imageReference", region)
        if image is None:
            return f"The image {image_id} does not exist"
        if region not in image.regions:
            return f"The image {image_id} has no replica in the region '{region}'"
        return None

    def _follow_latest(self, account: Resource, pool: Resource) -> None:
        """A pool from a gallery image definition grows from the definition's latest version
        at each resize; its nodes tell which (`exactVersion`). Without a usable version it
        keeps the one it had, and the allocator decides whether it may still grow."""
        image = self.image_sources.find(pool.internal["image_id"], "imageReference",
                                        account.body.get("location", "").lower())
        if image is not None:
            pool.internal.update(self._custom_image_layers(image))

    def growth_denied(self, pool: Resource) -> tuple[str, str, list[dict]] | None:
        """Why the pool may not grow from its custom image now: the principal who asked for
        the growth (created or last resized it) may no longer read the image. A resize
        error (code, message, values) for the allocator, or None."""
        grower = pool.internal.get("grower")
        image_id = pool.internal.get("image_id")
        if not image_id or not grower:
            return None
        gallery = kind_of(image_id, "image") != "image"
        if self.authorization.may_use_image(Caller.from_record({"mode": PoolAuth.BEARER, **grower}), image_id, gallery):
            return None
        code, message, details = image_denied(image_id, gallery)
        return code, message, [{"name": d["key"], "value": d["value"]} for d in details]

    def stop_resize(self, account: Resource, pool_id: str, conditions=None) -> Resource:
        with self.lock:
            pool = self._changeable(account, pool_id, conditions)
            if pool.body["allocationState"] == "resizing":
                stamp_allocation(pool, "stopping")
                self._save(pool)
        self._poke()
        return pool

    def remove_nodes(self, account: Resource, pool_id: str, body: dict, conditions=None) -> Resource:
        body = bi.body_object(body)
        node_ids = bi.array(body, "nodeList", max_items=100)
        if not node_ids:
            raise bi.missing("nodeList")
        timeout = pool_spec.resize_timeout(body, self.settings.min_resize_timeout)
        deallocation = pool_spec.deallocation_option(body)
        with self.lock:
            pool = self._changeable(account, pool_id, conditions)
            self._require_steady(pool)
            chosen = []
            for index, node_id in enumerate(node_ids):
                node = self.nodes.get(pool.id.lower(), node_id) if isinstance(node_id, str) else None
                if node is None:
                    raise bi.invalid(f"nodeList[{index}]", node_id, "The node is not in the pool.")
                chosen.append(node)
            for node in chosen:
                target = "targetDedicatedNodes" if node.body["isDedicated"] else "targetLowPriorityNodes"
                pool.body[target] = max(0, pool.body[target] - 1)
                stamp_node_state(node, "leavingpool")
            self.nodes.put(*chosen)
            self._begin_resize(pool, timeout, deallocation)
            return self._save(pool)

    def delete(self, account: Resource, pool_id: str, conditions=None) -> None:
        with self.lock:
            pool = self.get(account, pool_id)
            check_conditions(pool.body, conditions)
            if pool.body["state"] == "deleting":
                return
            pool.body["state"] = "deleting"
            pool.body["stateTransitionTime"] = iso_now()
            self._save(pool)
        self._poke()

    def apply_targets(self, pool: Resource, dedicated: int, low_priority: int, deallocation: str) -> Resource:
        """An autoscale run's targets: the pool resizes to them (unless a resize is being stopped)."""
        body = pool.body
        changed = (body["targetDedicatedNodes"], body["targetLowPriorityNodes"]) != (dedicated, low_priority)
        if changed and body["allocationState"] != "stopping":
            body.update({"targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low_priority})
            timeout = pool_spec.resize_timeout(body, self.settings.min_resize_timeout)
            self._begin_resize(pool, timeout, deallocation)
        return self._save(pool)

    def delete_all(self, account: Resource) -> None:
        """The account is going: so are its pools, nodes first (the allocator does it)."""
        with self.lock:
            for pool in self.list(account):
                if pool.body["state"] != "deleting":
                    pool.body["state"] = "deleting"
                    pool.body["stateTransitionTime"] = iso_now()
                    self._save(pool)

    def _changeable(self, account: Resource, pool_id: str, conditions) -> Resource:
        pool = self.get(account, pool_id)
        check_conditions(pool.body, conditions)
        if pool.body["state"] == "deleting":
            raise Conflict("PoolBeingDeleted", "The specified pool has been marked for deletion and is being "
                                               "reclaimed.")
        return pool

    @staticmethod
    def _require_steady(pool: Resource) -> None:
        if pool.body["allocationState"] != "steady":
            raise Conflict("PoolBeingResized", "The specified pool is already being resized; wait for its "
                                               "allocationState to be steady, or stop the resize.")

    def _begin_resize(self, pool: Resource, timeout: timedelta, deallocation: str) -> None:
        pool.internal["resize"] = self._resize_record(timeout, deallocation)
        pool.body["resizeErrors"] = []
        stamp_allocation(pool, "resizing")

    def _save(self, pool: Resource) -> Resource:
        pool.body["eTag"] = new_etag()
        pool.body["lastModified"] = iso_now()
        self.store.put(pool)
        self._poke()
        return pool

    def save(self, pool: Resource) -> Resource:
        """For the allocator: record a pool it changed."""
        with self.lock:
            return self._save(pool)

    def on_work(self, callback) -> None:
        """callback() runs whenever a pool has work for the allocator."""
        self._on_work.append(callback)

    def _poke(self) -> None:
        for poke in self._on_work:
            poke()

    # nodes ----------------------------------------------------------------------------------

    def set_node_state(self, node: Node, state: str, **fields) -> Node:
        with self.lock:
            current = self.nodes.get(node.pool_key, node.id)
            if current is None:
                return node  # removed meanwhile
            if current.state == "leavingpool" and state != "leavingpool":
                return current  # removal wins over whatever the node was doing
            stamp_node_state(current, state)
            current.body.update(fields)
            self.nodes.put(current)
            return current

    def node_action(self, account: Resource, pool_id: str, node_id: str, action: str, body: dict | None) -> Node:
        """reboot, reimage, disablescheduling, enablescheduling."""
        options = {} if body is None else bi.body_object(body)
        with self.lock:
            pool = self.get(account, pool_id)
            node = self.get_node(account, pool_id, node_id)
            if pool.body["state"] == "deleting":
                raise Conflict("PoolBeingDeleted", "The specified pool has been marked for deletion.")
            if action in ("reboot", "reimage"):
                option_field = "nodeRebootOption" if action == "reboot" else "nodeReimageOption"
                bi.choice(options, option_field, ("requeue", "terminate", "taskcompletion", "retaineddata"))
                if node.state not in ("idle", "running", "starttaskfailed", "unusable", "offline"):
                    raise Conflict("NodeNotReady",
                                   f"The node is {node.state}; it can be {action}ed once it is idle, running, "
                                   "starttaskfailed or unusable.")
                stamp_node_state(node, "rebooting" if action == "reboot" else "reimaging")
                node.internal["pending"] = action
            elif action == "disablescheduling":
                bi.choice(options, "nodeDisableSchedulingOption", ("requeue", "terminate", "taskcompletion"))
                node.body["schedulingState"] = "disabled"
            elif action == "enablescheduling":
                node.body["schedulingState"] = "enabled"
            self.nodes.put(node)
        self._poke()
        return node

    def preempt(self, account: Resource, pool_id: str, node_id: str) -> Node:
        """Batchyard's way to make a low-priority node preempted, as Azure may at any time."""
        with self.lock:
            node = self.get_node(account, pool_id, node_id)
            if node.body["isDedicated"]:
                raise InvalidInput("InvalidOperation", "Only low-priority nodes can be preempted.")
            if node.state == "preempted":
                return node
            stamp_node_state(node, "preempted")
            node.internal["pending"] = "preempt"
            self.nodes.put(node)
        self._poke()
        return node

    # counting -------------------------------------------------------------------------------

    def node_counts(self, account: Resource) -> list[dict]:
        counted = self.nodes.counts()
        result = []
        for pool in self.list(account):
            counts = {"dedicated": _empty_counts(), "lowPriority": _empty_counts()}
            for (dedicated, state), number in counted.get(pool.id.lower(), {}).items():
                bucket = counts["dedicated" if dedicated else "lowPriority"]
                bucket[_COUNT_KEYS.get(state, "unknown")] += number
                bucket["total"] += number
            result.append({"poolId": pool.name, **counts})
        return result

    def usage_metrics(self, account: Resource, start: datetime | None, end: datetime | None) -> list[dict]:
        """Core hours of each pool's nodes within the window (default: the last 24 hours):
        nodes it holds now, and nodes it held (their lifetimes, kept by the node store)."""
        moment = now()
        end = end or moment
        start = start or end - timedelta(days=1)
        if start >= end:
            raise InvalidInput("InvalidQueryParameterValue", "startTime must be before endtime.",
                               details=[{"key": "QueryParameterName", "value": "startTime"}])
        rows = []
        for pool in self.list(account):
            lifetimes = [(parse_time(n.body["allocationTime"]), moment) for n in self.nodes.list(pool.id.lower())]
            lifetimes += [(parse_time(a), parse_time(b)) for a, b in self.nodes.lifetimes(pool.id.lower())]
            seconds = sum(max(0.0, (min(end, gone) - max(start, born)).total_seconds()) for born, gone in lifetimes)
            cores = lookup_vm_size(pool.body["vmSize"]).cores
            rows.append({"poolId": pool.name, "startTime": iso(start), "endTime": iso(end),
                         "vmSize": pool.body["vmSize"], "totalCoreHours": round(seconds * cores / 3600, 6)})
        return rows

    def supported_images(self) -> list[dict]:
        return [{"nodeAgentSKUId": b.node_agent_sku_id,
                 "imageReference": {"publisher": b.publisher, "offer": b.offer, "sku": b.sku, "version": b.version},
                 "osType": b.os_type.lower(), "capabilities": list(b.capabilities), "verificationType": "verified"}
                for b in self.catalog.all()]

    def node_agent_skus(self) -> list[dict]:
        """What api-versions before 2020-09-01.12.0 list at /nodeagentskus: the supported
        images grouped by their node agent SKU."""
        skus: dict[str, dict] = {}
        for image in self.supported_images():
            sku = skus.setdefault(image["nodeAgentSKUId"].lower(), {
                "id": image["nodeAgentSKUId"], "verifiedImageReferences": [], "osType": image["osType"]})
            sku["verifiedImageReferences"].append(image["imageReference"])
        return list(skus.values())


_COUNT_KEYS = {"creating": "creating", "idle": "idle", "offline": "offline", "preempted": "preempted",
               "rebooting": "rebooting", "reimaging": "reimaging", "running": "running", "starting": "starting",
               "starttaskfailed": "startTaskFailed", "leavingpool": "leavingPool", "unknown": "unknown",
               "unusable": "unusable", "waitingforstarttask": "waitingForStartTask", "deallocated": "deallocated",
               "deallocating": "deallocating", "upgradingos": "upgradingOS"}


def _empty_counts() -> dict:
    return {key: 0 for key in (*_COUNT_KEYS.values(), "total")}


def check_conditions(body: dict, conditions) -> None:
    """If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since against a resource."""
    if not conditions:
        return
    etag = body.get("eTag", "")
    modified = parse_time(body["lastModified"]).replace(microsecond=0)
    if_match = conditions.get("if-match")
    if if_match and if_match != "*" and etag not in _etags(if_match):
        raise PreconditionFailed()
    if_none = conditions.get("if-none-match")
    if if_none and (if_none == "*" or etag in _etags(if_none)):
        raise NotModifiedOrFailed()
    unmodified_since = conditions.get("if-unmodified-since")
    if unmodified_since and modified > unmodified_since:
        raise PreconditionFailed()
    modified_since = conditions.get("if-modified-since")
    if modified_since and modified <= modified_since:
        raise NotModifiedOrFailed()


def _etags(header: str) -> set[str]:
    return {tag.strip().strip('"') for tag in header.split(",")}


class PreconditionFailed(ConditionFailed):
    def __init__(self):
        super().__init__("ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")


class NotModifiedOrFailed(ConditionFailed):
    """304 for GET and HEAD, 412 for anything that would change the resource."""

    def __init__(self):
        super().__init__("ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")

