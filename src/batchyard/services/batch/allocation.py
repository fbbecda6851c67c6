"""Allocation: a background loop that brings every pool to its target node counts, the
way Azure's allocator does, with its rules:

- a pool whose custom image is gone cannot grow: the resize ends `steady` with
  AllocationFailed (nodes it already has keep working); nor can one whose image the
  principal who asked for the growth may no longer read (InsufficientPermissions);
- custom-image pools share node limits (dedicated and low-priority, settings) across every
  pool that uses the same image or an image made from the same snapshot;
- a pool with inbound NAT pools holds at most as many nodes as its smallest frontend port
  range has ports (each node needs its own port);
- a pool with enableInterNodeCommunication holds at most 100 nodes (80 in a UserSubscription
  account): CommunicationEnabledPoolReachedMaxVMCount;
- hosts report a capacity in cores and memory (services/capacity.py), counted against each
  node's vmSize; a resize that cannot fit waits, and after `resizeTimeout` ends `steady`
  with AllocationTimedout.

The loop itself only decides and records; making, changing and removing machines runs on
a small pool of worker threads, so the API and the loop never wait for a machine.

A pass costs what changed, not what the pools hold (Azure's pools reach thousands of nodes):
it reads node counts the store keeps, and only the nodes whose work no worker has been
handed yet (each node records the work it was handed, `internal["dispatched"]`, until the
service restarts); work a node must wait for is retried from memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ...runtime.provider import Inventory
from ...store.batch_nodes import Node, NodeStore
from ..capacity import Room, host_room
from ...store.resources import Resource
from .background import PokedLoop
from .node_agent import NodeAgent
from .scheduler import Scheduler
from .pool_spec import nat_node_limit, virtual_network
from .pools import IMAGE_DELETED_MESSAGE, Pools, iso_now, stamp_allocation, stamp_node_state
from .vm_sizes import lookup as lookup_vm_size

log = logging.getLogger("batchyard.batch")
# Azure's pool size limits for pools with inter-node communication, by pool allocation mode
INTER_NODE_POOL_LIMIT = {"BatchService": 100, "UserSubscription": 80}
PASS_GAP = 0.02  # seconds between allocation passes, so a burst of node events costs one pass


class Allocator(PokedLoop):
    def __init__(self, pools: Pools, nodes: NodeStore, agent: NodeAgent, settings, storage, scheduler: Scheduler):
        super().__init__("allocator", tick=0.5, gap=PASS_GAP)
        self.pools = pools
        self.nodes = nodes
        self.agent = agent
        self.settings = settings
        self.storage = storage
        self._busy: set[tuple[str, str]] = set()  # nodes a worker is busy with
        self._deferred: dict[tuple[str, str], tuple] = {}  # node -> the job it gets once its worker is done
        self._busy_lock = threading.Lock()
        self._waiting: dict[tuple[str, str], tuple[Resource, Node]] = {}  # leaving nodes whose tasks must end first
        self._workers = ThreadPoolExecutor(max_workers=settings.node_workers, thread_name_prefix="node")
        self.scheduler = scheduler  # consulted before a node with tasks goes away
        pools.on_work(self.poke)  # pools are built first (the allocator reads them): they poke it through this hook
        agent.provider.on_machines_lost(self.machines_lost)

    def start(self, held: Inventory | None = None) -> None:
        """held: the machines the provider holds after reconciliation (None: unknown)."""
        self._restore(held)
        self.start_loop()

    def stop(self) -> None:
        self.stop_loop()
        self._workers.shutdown(wait=True, cancel_futures=True)

    def one_pass(self) -> None:
        self.reconcile_all()

    # one pass ---------------------------------------------------------------------------------

    def reconcile_all(self) -> None:
        with self.pools.lock:
            pools = self.pools.all_pools()
            by_key = {p.id.lower(): p for p in pools}
            due = [(node, work, job) for node, work in self.nodes.needing_work()
                   if node.pool_key in by_key and (job := self._job_for(by_key[node.pool_key], node))]
            if due:  # recorded before any worker may take the node
                self.nodes.dispatched([(node, work) for node, work, _ in due])
            for node, _, job in due:
                self._submit(node, *job)
            self._retry_waiting()
            counts = self.nodes.counts()
            usage = _HostUsage(host_room(self.settings, self.agent.provider), pools, counts)
            self.each(pools, lambda pool: self._reconcile(pool, counts, pools, usage))

    def _reconcile(self, pool: Resource, counts, pools, usage: "_HostUsage") -> None:
        mine = _Counts(counts.get(pool.id.lower(), {}))
        if pool.body["state"] == "deleting":
            self._delete(pool, mine)
            return
        state = pool.body["allocationState"]
        if state == "stopping":
            self._finish_resize(pool, mine)
        elif state == "resizing":
            self._resize(pool, mine, counts, pools, usage)

    def _job_for(self, pool: Resource, node: Node) -> tuple | None:
        """The worker job (function and arguments) for the node's work; None when not due yet."""
        pending = node.internal.get("pending")
        if node.state == "leavingpool":
            return self._remove_node, pool, node
        if pending == "reboot":
            return self._run_pending, pool, node, self.agent.reboot
        if pending == "reimage" and node.internal.get("replace_after", 0) <= time.time():
            return self._run_pending, pool, node, self.agent.reimage
        if pending == "preempt":
            return self._run_pending, pool, node, lambda _pool, n: self.agent.preempt(n)
        if pending == "restore":
            return self._restore_machine, pool, node
        if node.state == "creating" and not pending:
            return self._provision, pool, node
        return None

    def _retry_waiting(self) -> None:
        with self._busy_lock:
            waiting, self._waiting = self._waiting, {}
        for pool, node in waiting.values():
            self._submit(node, self._remove_node, pool, node)

    def _delete(self, pool: Resource, mine: "_Counts") -> None:
        if mine.total() == 0:
            self.pools.store.delete(pool.id)
            self.nodes.delete_pool(pool.id.lower())
            self.storage.reclaim()
            return
        if mine.leaving() < mine.total():
            staying = [n for n in self.nodes.list(pool.id.lower()) if n.state != "leavingpool"]
            self._leave(pool, staying)

    def _leave(self, pool: Resource, nodes: list[Node]) -> None:
        for node in nodes:
            stamp_node_state(node, "leavingpool")
            node.internal["dispatched"] = "remove"
        self.nodes.put(*nodes)
        for node in nodes:
            self._submit(node, self._remove_node, pool, node)

    # resizing ----------------------------------------------------------------------------------

    def _resize(self, pool: Resource, mine: "_Counts", counts, pools, usage: "_HostUsage") -> None:
        resize = pool.internal["resize"]
        for dedicated, target_field in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
            have, target = mine.staying(dedicated), pool.body[target_field]
            if have > target:
                self._shrink(pool, dedicated, have - target)
            elif have < target:
                allowed = self._allowed_growth(pool, dedicated, have, target - have, mine, counts, pools, usage)
                if allowed:
                    self._grow(pool, dedicated, allowed, usage)
                    counts.setdefault(pool.id.lower(), {})[(dedicated, "creating")] = \
                        counts.get(pool.id.lower(), {}).get((dedicated, "creating"), 0) + allowed
        mine = self._counts_of(pool)
        self._refresh_counts(pool, mine)
        if self._targets_settled(pool, mine):
            self._finish_resize(pool, mine)
        elif time.time() - resize["started"] > resize["timeout"]:
            self._add_error(pool, "AllocationTimedout",
                            "Desired number of nodes could not be allocated within the resize timeout",
                            [{"name": "Reason", "value": "The hosts have no room for more nodes of this size"}])
            self._settle_targets(pool, mine)
            self._finish_resize(pool, mine)

    def _counts_of(self, pool: Resource) -> "_Counts":
        return _Counts(self.nodes.counts(pool.id.lower()).get(pool.id.lower(), {}))

    def _allowed_growth(self, pool: Resource, dedicated: bool, have: int, wanted: int, mine: "_Counts", counts,
                        pools, usage: "_HostUsage") -> int:
        """How many nodes this pass may add. Rules (image, NAT ports, inter-node pool size,
        custom-image limits) end the resize short of its target; host capacity only makes it
        wait."""
        unavailable = self.pools.image_unavailable(pool)
        if unavailable:
            self._add_error(pool, "AllocationFailed", IMAGE_DELETED_MESSAGE, [{"name": "Reason", "value": unavailable}])
            self._settle_targets(pool, mine)
            return 0
        denied = self.pools.growth_denied(pool)
        if denied:
            self._add_error(pool, *denied)
            self._settle_targets(pool, mine)
            return 0
        allowed = wanted
        # counted with what this pass has already made (its dedicated nodes, before its low-priority ones)
        now = _Counts(counts.get(pool.id.lower(), {}))
        nat_limit = nat_node_limit(pool.body.get("networkConfiguration"))
        if nat_limit is not None:
            room = nat_limit - now.staying(True) - now.staying(False)
            if room < allowed:
                allowed = max(0, room)
                self._add_error(pool, "InboundNATPoolPortsExhausted",
                                f"The pool's inbound NAT pools have frontend ports for {nat_limit} nodes",
                                [{"name": "Reason", "value": "Each node needs its own frontend port"}])
        allowed = self._within_inter_node_limit(pool, allowed, now)
        if pool.internal.get("image_id"):
            kind = "dedicated" if dedicated else "low-priority"
            limit = (self.settings.custom_image_max_dedicated if dedicated
                     else self.settings.custom_image_max_low_priority)
            used = self._nodes_on_lineage(pool, dedicated, pools, counts)
            if used + allowed > limit:
                allowed = max(0, limit - used)
                self._add_error(pool, "CustomImageNodeLimitReached",
                                f"Pools from this custom image (or from images made from the same snapshots) may "
                                f"hold at most {limit} {kind} nodes together",
                                [{"name": "Limit", "value": str(limit)}, {"name": "InUse", "value": str(used)}])
        allowed = self._within_core_quota(pool, dedicated, allowed, pools, counts)
        if allowed < wanted:
            pool.internal.setdefault("capped", {})["dedicated" if dedicated else "lowPriority"] = have + allowed
        return max(0, min(allowed, usage.room_for(pool.body["vmSize"])))

    def _within_inter_node_limit(self, pool: Resource, allowed: int, now: "_Counts") -> int:
        """Azure's pool size limit for pools with enableInterNodeCommunication (its nodes are
        placed close together): 100 nodes, dedicated and low-priority together, or 80 in a
        UserSubscription account. A resize past it stops there with
        CommunicationEnabledPoolReachedMaxVMCount."""
        if not pool.body.get("enableInterNodeCommunication"):
            return allowed
        account = self.pools.accounts.by_name(pool.internal["account"])
        mode = account.properties.get("poolAllocationMode") if account is not None else None
        limit = INTER_NODE_POOL_LIMIT.get(mode, INTER_NODE_POOL_LIMIT["BatchService"])
        room = max(0, limit - now.staying(True) - now.staying(False))
        if room >= allowed:
            return allowed
        self._add_error(pool, "CommunicationEnabledPoolReachedMaxVMCount",
                        "Communication enabled pool has reached the maximum VM count",
                        [{"name": "Limit", "value": str(limit)}])
        return room

    def _within_core_quota(self, pool: Resource, dedicated: bool, allowed: int, pools, counts) -> int:
        """Azure counts vCPUs (nodes x the vmSize's cores) across the account's pools: a
        resize that would pass the account's quota (or, when enforced, its VM family's)
        grows to what fits and ends with AccountCoreQuotaReached,
        AccountLowPriorityCoreQuotaReached or AccountVMSeriesCoreQuotaReached."""
        account = self.pools.accounts.by_name(pool.internal["account"])
        quotas = self.pools.accounts.quotas(account) if account is not None else {}
        if "dedicatedCoreQuota" not in quotas:  # UserSubscription: the subscription's quotas apply
            return allowed
        size = lookup_vm_size(pool.body["vmSize"])
        mine = [p for p in pools if p.internal.get("account", "").lower() == pool.internal["account"].lower()]
        limits = [("dedicatedCoreQuota" if dedicated else "lowPriorityCoreQuota", mine,
                   "AccountCoreQuotaReached" if dedicated else "AccountLowPriorityCoreQuotaReached",
                   "The specified account has reached VM core quota" if dedicated
                   else "The specified account has reached VM low priority core quota")]
        if dedicated and quotas["dedicatedCoreQuotaPerVMFamilyEnforced"]:
            family = [p for p in mine if lookup_vm_size(p.body["vmSize"]).family == size.family]
            limits.append((size.family, family, "AccountVMSeriesCoreQuotaReached",
                           f"The specified account has reached VM series core quota for {size.family}"))
        for name, counted, code, message in limits:
            quota = quotas[name] if name in quotas else \
                next(f["coreQuota"] for f in quotas["dedicatedCoreQuotaPerVMFamily"] if f["name"] == name)
            used = sum(_Counts(counts.get(p.id.lower(), {})).staying(dedicated) * lookup_vm_size(p.body["vmSize"]).cores
                       for p in counted)
            if used + allowed * size.cores > quota:
                allowed = max(0, (quota - used) // size.cores)
                self._add_error(pool, code, message, [{"name": "CoreQuota", "value": str(quota)},
                                                      {"name": "CoresInUse", "value": str(used)}])
        return allowed

    def _nodes_on_lineage(self, pool: Resource, dedicated: bool, pools, counts) -> int:
        lineage = set(pool.internal.get("lineage", []))
        return sum(_Counts(counts.get(other.id.lower(), {})).staying(dedicated) for other in pools
                   if other.internal.get("image_id") and lineage & set(other.internal.get("lineage", [])))

    def _grow(self, pool: Resource, dedicated: bool, count: int, usage: "_HostUsage") -> None:
        created = []
        for slot in self.nodes.free_slots(pool.id.lower(), count, self._counts_of(pool).total()):
            node = self._new_node(pool, dedicated, slot)
            node.internal["dispatched"] = "provision"  # handed to a worker below
            created.append(node)
            usage.add(pool.body["vmSize"])
        self.nodes.put(*created)
        self.pools.store.put(pool)  # node_generation moved on
        for node in created:
            self._submit(node, self._provision, pool, node)

    def _new_node(self, pool: Resource, dedicated: bool, slot: int) -> Node:
        generation = pool.internal.get("node_generation", 0)
        pool.internal["node_generation"] = generation + 1  # node ids are never reused
        digest = hashlib.sha256(f"{pool.id.lower()}/{generation}".encode()).hexdigest()[:48]
        node_id = f"tvmps_{digest}_{'d' if dedicated else 'p'}"
        moment = iso_now()
        body = {
            "id": node_id, "state": "creating", "schedulingState": "enabled", "stateTransitionTime": moment,
            "allocationTime": moment, "ipAddress": "127.0.0.1", "affinityId": f"TVM:{node_id}",
            "vmSize": pool.body["vmSize"], "totalTasksRun": 0, "runningTasksCount": 0, "runningTaskSlotsCount": 0,
            "totalTasksSucceeded": 0, "isDedicated": dedicated, "errors": [],
            "nodeAgentInfo": {"version": "1.11.0", "lastUpdateTime": moment},
            "virtualMachineInfo": {"imageReference": _image_reference(pool)},
            "endpointConfiguration": {"inboundEndpoints": _endpoints(pool, slot)},
        }
        if pool.body.get("startTask"):
            body["startTask"] = pool.body["startTask"]
        disks = {"os": {"key": f"{digest[:32]}os", "layers": pool.internal["os_layers"]},
                 "data": {lun: {"key": f"{digest[:32]}d{lun}", "layers": layers}
                          for lun, layers in pool.internal["data_layers"].items()}}
        internal = {"slot": slot, "machine_key": f"{digest[:32]}vm", "disks": disks,
                    "inbound_rules": _inbound_rules(pool)}
        vnet = virtual_network(pool.body.get("networkConfiguration"))
        if vnet:
            internal["network"] = vnet
        return Node(pool.id.lower(), node_id, body, internal)

    def _shrink(self, pool: Resource, dedicated: bool, count: int) -> None:
        """Nodes that are not ready go first, then idle ones, newest first, as Azure prefers."""
        order = {"creating": 0, "starting": 0, "unusable": 0, "preempted": 0, "waitingforstarttask": 1,
                 "starttaskfailed": 1, "idle": 2, "running": 3}
        candidates = [n for n in self.nodes.list(pool.id.lower())
                      if n.body["isDedicated"] == dedicated and n.state != "leavingpool"]
        victims = sorted(candidates, key=lambda n: (order.get(n.state, 2), -n.internal["slot"]))[:count]
        self._leave(pool, victims)

    def _targets_settled(self, pool: Resource, mine: "_Counts") -> bool:
        capped = pool.internal.get("capped", {})
        return mine.leaving() == 0 and \
            mine.staying(True) == min(pool.body["targetDedicatedNodes"], capped.get("dedicated", 1 << 30)) and \
            mine.staying(False) == min(pool.body["targetLowPriorityNodes"], capped.get("lowPriority", 1 << 30))

    def _settle_targets(self, pool: Resource, mine: "_Counts") -> None:
        """Stop this resize where it is: the current counts become where it ends."""
        capped = pool.internal.setdefault("capped", {})
        capped["dedicated"] = min(capped.get("dedicated", 1 << 30), mine.staying(True))
        capped["lowPriority"] = min(capped.get("lowPriority", 1 << 30), mine.staying(False))

    def _finish_resize(self, pool: Resource, mine: "_Counts") -> None:
        if mine.leaving():
            return
        pool.internal.pop("capped", None)
        pool.body["resizeErrors"] = pool.internal["resize"].get("errors", [])
        stamp_allocation(pool, "steady")
        self._refresh_counts(pool, mine)
        self.pools.save(pool)

    def _add_error(self, pool: Resource, code: str, message: str, values: list[dict]) -> None:
        errors = pool.internal["resize"].setdefault("errors", [])
        if not any(e["code"] == code for e in errors):
            errors.append({"code": code, "message": message, "values": values})
            self.pools.store.put(pool)

    def _refresh_counts(self, pool: Resource, mine: "_Counts") -> None:
        """currentDedicatedNodes and friends count every node the pool holds, leaving ones too."""
        current = (mine.total(True), mine.total(False))
        if (pool.body["currentDedicatedNodes"], pool.body["currentLowPriorityNodes"]) != current:
            pool.body["currentDedicatedNodes"], pool.body["currentLowPriorityNodes"] = current
            self.pools.store.put(pool)

    # worker jobs -----------------------------------------------------------------------------------

    def _submit(self, node: Node, job, *args) -> None:
        """One job at a time per node: a job for a node a worker is busy with runs after it
        (the latest such job: each reads the node's state again when it starts)."""
        token = (node.pool_key, node.id)
        with self._busy_lock:
            if token in self._busy:
                self._deferred[token] = (node, job, args)
                return
            self._busy.add(token)

        def run():
            try:
                job(*args)
            except Exception:
                log.exception("node %s: %s failed", node.id, getattr(job, "__name__", job))
            finally:
                with self._busy_lock:
                    self._busy.discard(token)
                    deferred = self._deferred.pop(token, None)
                if deferred is not None:
                    self._submit(deferred[0], deferred[1], *deferred[2])
                self.poke()

        self._workers.submit(run)

    def _provision(self, pool: Resource, node: Node) -> None:
        with self.pools.lock:
            current = self.nodes.get(node.pool_key, node.id)
            if current is None or current.state != "creating":
                return
        self.agent.provision(pool, current)
        self.scheduler.poke()  # a new idle node: tasks may be waiting for it

    def _run_pending(self, pool: Resource, node: Node, action) -> None:
        with self.pools.lock:
            current = self.nodes.get(node.pool_key, node.id)
            if current is None or not current.internal.pop("pending", None):
                return
            current.internal.pop("dispatched", None)  # the same action may be asked for again
            self.nodes.put(current)
        self.scheduler.node_interrupted(current)
        action(self.pools.store.get(pool.id) or pool, current)
        self.scheduler.poke()

    def _remove_node(self, pool: Resource, node: Node) -> None:
        current = self.pools.store.get(pool.id)
        option = "requeue" if current is None or current.body["state"] == "deleting" else \
            current.internal.get("resize", {}).get("deallocation", "requeue")
        if not self.scheduler.node_leaving(node, option):
            with self._busy_lock:  # its tasks finish first; a later pass tries again
                self._waiting[(node.pool_key, node.id)] = (pool, node)
            return
        self.agent.remove(node)
        with self.pools.lock:
            self.nodes.retire(node, iso_now())  # its lifetime still counts in the pool's usage metrics
            current = self.pools.store.get(pool.id)
            if current is not None:
                self._refresh_counts(current, self._counts_of(current))

    # lost hosts --------------------------------------------------------------------------------------

    def machines_lost(self, keys: list[str]) -> None:
        """Their host left the cluster: the nodes turn unusable, their tasks go back to the
        queue (counted as requeued), and after a grace period each node is made again on a
        host that is still there."""
        keys = set(keys)
        with self.pools.lock:
            lost = [n for n in self.nodes.all() if n.internal.get("machine_key") in keys and n.state != "leavingpool"]
        for node in lost:
            with self.pools.lock:  # unusable before its tasks are requeued, so none comes back to it
                current = self.nodes.get(node.pool_key, node.id)
                if current is None or current.state == "leavingpool":
                    continue
                self._replace_later(current, "NodeHostLost", "The host that ran the node left the cluster; the "
                                                             "node is made again on another host.")
                self.scheduler.node_interrupted(current)
        self.poke()

    def _replace_later(self, node: Node, code: str, message: str) -> None:
        """The node's machine is gone: unusable, and made again after the grace period, as
        Azure replaces a node whose VM was lost."""
        stamp_node_state(node, "unusable")
        node.body["errors"] = [{"code": code, "errorDetails": [], "message": message}]
        node.internal["pending"] = "reimage"
        node.internal.pop("dispatched", None)  # a new work: to be handed to a worker when due
        node.internal["replace_after"] = time.time() + self.settings.lost_node_grace
        self.nodes.put(node)

    # restart -----------------------------------------------------------------------------------------

    def _restore(self, held: Inventory | None) -> None:
        """After a restart: work a node was in the middle of starts again, and the machines
        of nodes come back. A node whose machine comes back is `starting` until it is up
        (no task is given to it before), then runs its pool's start task again as after a
        reboot, on the node workers while the service already answers: a start costs a mount
        namespace each, and hundreds of nodes must not hold the service's start. held: the
        machines the provider still has (reconciliation.py; None: unknown)."""
        for node in self.nodes.all():
            # work handed to a worker of the process that ended is to be handed again
            handed = node.internal.pop("dispatched", None) is not None
            if node.internal.get("pending") == "restore":
                pass  # a restart while it was coming back: it still is
            elif node.state in ("creating", "starting", "waitingforstarttask"):
                node.body["state"] = "creating"
            elif node.state in ("idle", "running", "starttaskfailed", "rebooting", "reimaging"):
                if held is not None and node.internal["machine_key"] not in held.machines:
                    log.warning("node %s: its machine is gone; the node is made again", node.id)
                    self._replace_later(node, "NodeMachineLost", "The node's machine was lost while the service "
                                                                 "was down; the node is made again.")
                    continue
                if node.state in ("rebooting", "reimaging"):
                    node.internal["pending"] = "reboot" if node.state == "rebooting" else "reimage"
                else:
                    node.internal["pending"] = "restore"
                    node.internal["restored_state"] = "starttaskfailed" if node.state == "starttaskfailed" else "idle"
                    stamp_node_state(node, "starting")
            elif not handed:
                continue
            self.nodes.put(node)

    def _restore_machine(self, pool: Resource, node: Node) -> None:
        try:
            self.agent.restore(node)
        except Exception as exc:
            log.warning("node %s could not be restored: %s", node.id, exc)
            with self.pools.lock:
                current = self.nodes.get(node.pool_key, node.id)
                if current is not None and current.state == "starting" and \
                        current.internal.get("pending") == "restore":
                    self._replace_later(current, "NodeStartFailed",
                                        f"The node's machine could not start again: {exc}")
            return
        pool = self.pools.store.get(pool.id) or pool
        # The machine's processes ended with the service, those its start task left behind
        # too: for the node this was a reboot, and Azure runs a pool's start task on every
        # reboot. A node without one goes back to where it was.
        reboots = bool(pool.body.get("startTask"))
        with self.pools.lock:
            current = self.nodes.get(node.pool_key, node.id)
            if current is None or current.state != "starting" or current.internal.get("pending") != "restore":
                return  # it left the pool, or was rebooted or reimaged, meanwhile
            current.internal.pop("pending")
            current.internal.pop("dispatched", None)
            restored_state = current.internal.pop("restored_state", "idle")
            if not reboots:
                stamp_node_state(current, restored_state)
            self.nodes.put(current)
        if reboots:  # still `starting`, so no task is given to it before its start task runs
            self.agent.boot(pool, current)
        self.scheduler.poke()


def _nat_pools(pool: Resource) -> list[dict]:
    return ((pool.body.get("networkConfiguration") or {}).get("endpointConfiguration") or {}).get(
        "inboundNATPools") or []


def _endpoints(pool: Resource, slot: int) -> list[dict]:
    return [{"name": f"{p['name']}.{slot}", "protocol": p["protocol"], "publicIPAddress": "127.0.0.1",
             "publicFQDN": "localhost", "frontendPort": p["frontendPortRangeStart"] + slot,
             "backendPort": p["backendPort"]} for p in _nat_pools(pool)]


def _inbound_rules(pool: Resource) -> dict[str, list[dict]]:
    """Each inbound NAT pool's network security group rules, by its name."""
    return {p["name"]: p.get("networkSecurityGroupRules") or [] for p in _nat_pools(pool)}


class _Counts:
    """One pool's nodes counted by (isDedicated, state)."""

    def __init__(self, raw: dict[tuple[bool, str], int]):
        self.raw = raw

    def total(self, dedicated: bool | None = None) -> int:
        return sum(n for (d, _), n in self.raw.items() if dedicated is None or d == dedicated)

    def staying(self, dedicated: bool) -> int:
        return sum(n for (d, state), n in self.raw.items() if d == dedicated and state != "leavingpool")

    def leaving(self) -> int:
        return sum(n for (_, state), n in self.raw.items() if state == "leavingpool")


class _HostUsage:
    """Cores and memory that nodes hold on the hosts, against the room the hosts report."""

    def __init__(self, room: Room, pools: list[Resource], counts: dict[str, dict]):
        self.cores_capacity = room.cores
        self.memory_capacity = room.memory_mib
        self.cores = self.memory = 0
        for pool in pools:
            size = lookup_vm_size(pool.body["vmSize"])
            nodes = _Counts(counts.get(pool.id.lower(), {})).total()
            self.cores += size.cores * nodes
            self.memory += size.memory_mib * nodes

    def room_for(self, vm_size: str) -> int:
        size = lookup_vm_size(vm_size)
        return max(0, min((self.cores_capacity - self.cores) // size.cores,
                          (self.memory_capacity - self.memory) // size.memory_mib))

    def add(self, vm_size: str) -> None:
        size = lookup_vm_size(vm_size)
        self.cores += size.cores
        self.memory += size.memory_mib


def _image_reference(pool: Resource) -> dict:
    """The pool's image reference as the node got it: a gallery image's node names the exact
    version it was made from (Azure's read-only `exactVersion`)."""
    reference = dict(pool.body["virtualMachineConfiguration"]["imageReference"])
    if pool.internal.get("exact_version"):
        reference["exactVersion"] = pool.internal["exact_version"]
    return reference
