"""A resource group's delete: the group shows Deleting and refuses to make or change
anything in it while the delete runs, waits for and takes what a create racing it made,
rolls back when it cannot end, and does not outlive a restart. Through the real SDK on the
shared server, and on a real SQLite store for what a client cannot time."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from batchyard import defaults
from batchyard.services import resource_groups as module
from batchyard.services.arm_ids import parse
from batchyard.services.arm_resources import new_resource
from batchyard.services.errors import Conflict
from batchyard.services.resource_groups import ResourceGroups
from batchyard.store.db import Database
from batchyard.store.resources import ResourceStore
from conftest import connect_raw, wait_for

SUB = defaults.SUBSCRIPTION_ID
DISK = f"/subscriptions/{SUB}/resourceGroups/doomed/providers/Microsoft.Compute/disks/"


@pytest.fixture()
def store(tmp_path):
    db = Database(tmp_path / "batchyard.db")
    yield ResourceStore(db)
    db.close()


def _groups(store: ResourceStore) -> ResourceGroups:
    groups = ResourceGroups(store.db, store)
    groups.ensure_subscription(SUB, defaults.TENANT_ID, "test")
    groups.create_or_update(SUB, "doomed", {"location": defaults.LOCATION})
    return groups


def _disk(store: ResourceStore, name: str) -> None:
    store.put(new_resource(parse(DISK + name), defaults.LOCATION, {"provisioningState": "Succeeded"}))


def _delete_disks(store: ResourceStore):
    def delete_contents(subscription: str, group: str) -> None:
        for resource in store.list(type="Microsoft.Compute/disks", subscription=subscription, resource_group=group):
            store.delete(resource.id)
    return delete_contents


def _state(groups: ResourceGroups) -> str:
    return groups.get(SUB, "doomed").body["properties"]["provisioningState"]


def test_through_the_sdk_a_group_being_deleted_refuses_writes_and_waits_for_the_one_let_in(clients):
    """A disk's PUT is let into the group and holds its body back (`Expect: 100-continue`:
    the service asks for the body only once the request is past the group's check). The
    group's DELETE, asked for meanwhile, shows it Deleting and waits; another disk's PUT is
    refused; the held one, sent on, makes its disk, which the delete then takes."""
    groups, disks = clients.resource.resource_groups, clients.compute.disks
    groups.create_or_update("rg-doomed", {"location": clients.location})
    disk = {"location": clients.location, "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}
    held = _put_held_back(clients, "rg-doomed", "held", json.dumps(disk).encode())
    try:
        with ThreadPoolExecutor(1) as pool:
            deleted = pool.submit(lambda: groups.begin_delete("rg-doomed", polling_interval=0.1).result())
            wait_for(lambda: groups.get("rg-doomed").properties.provisioning_state == "Deleting",
                     what="the group to show Deleting")
            with pytest.raises(ResourceExistsError) as caught:
                disks.begin_create_or_update("rg-doomed", "refused", disk).result()
            assert caught.value.error.code == "ResourceGroupBeingDeleted"
            assert not deleted.done()  # waiting for the disk let in
            held.sendall(json.dumps(disk).encode())
            answer = held.recv(65536)
            assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201", b"HTTP/1.1 202")), answer[:200]
            deleted.result(timeout=120)
    finally:
        held.close()
    assert not groups.check_existence("rg-doomed")
    assert not [r for r in clients.resource.resources.list() if "/resourcegroups/rg-doomed/" in r.id.lower()]
    with pytest.raises(ResourceNotFoundError):
        disks.get("rg-doomed", "held")


def _put_held_back(clients, group: str, disk: str, body: bytes) -> socket.socket:
    """A disk's PUT whose body waits for the service's 100 Continue: the socket, once it came."""
    url = urlsplit(clients.info["arm_endpoint"])
    token = clients.credential.get_token("https://management.azure.com/.default").token
    sock = connect_raw(clients.info)
    path = (f"/subscriptions/{clients.subscription}/resourceGroups/{group}/providers/Microsoft.Compute/disks/{disk}"
            "?api-version=2024-03-02")
    sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
                 "Connection: close\r\n\r\n".encode())
    continued = sock.recv(65536)
    assert continued.startswith(b"HTTP/1.1 100"), continued[:200]
    return sock


def test_a_group_being_deleted_refuses_creates_and_changes_in_it(store):
    groups = _groups(store)
    groups.mark_deleting(SUB, "doomed")
    assert _state(groups) == "Deleting"
    for refused in (lambda: groups.require_open(SUB, "doomed"),
                    lambda: groups.create_or_update(SUB, "doomed", {"location": defaults.LOCATION})):
        with pytest.raises(Conflict) as caught:
            refused()
        assert caught.value.code == "ResourceGroupBeingDeleted"
        assert "'doomed' is in deprovisioning state" in caught.value.message
    assert groups.get(SUB, "doomed")  # reads go on


def test_a_delete_takes_what_a_create_racing_it_made(store, monkeypatch):
    """A pass that comes too early for a create let in before the mark (a disk its new VM
    still holds), or that a create adds to meanwhile, is followed by another."""
    monkeypatch.setattr(module, "PASS_PAUSE_SECONDS", 0.001)
    groups = _groups(store)
    _disk(store, "held")
    passes = []

    def delete_disks(subscription: str, group: str) -> None:
        passes.append(sorted(r.name for r in store.list(type="Microsoft.Compute/disks", subscription=subscription,
                                                        resource_group=group)))
        if len(passes) == 1:
            _disk(store, "late")  # made by the racing create while this pass runs
            raise Conflict("OperationNotAllowed", "Disk 'held' is attached to VM 'made-meanwhile'.")
        for resource in store.list(type="Microsoft.Compute/disks", subscription=subscription, resource_group=group):
            store.delete(resource.id)
        if len(passes) == 2:
            _disk(store, "later")  # and another, after the second pass listed the group

    groups.on_delete(delete_disks)
    groups.mark_deleting(SUB, "doomed")
    assert groups.delete(SUB, "doomed")
    assert passes == [["held"], ["held", "late"], ["later"]]
    assert not groups.exists(SUB, "doomed")
    assert store.list(subscription=SUB, resource_group="doomed") == []


def test_a_delete_that_cannot_end_rolls_back_and_says_why(store, monkeypatch):
    monkeypatch.setattr(module, "PASS_PAUSE_SECONDS", 0.001)
    groups = _groups(store)
    tries = []

    def refuse(subscription: str, group: str) -> None:
        tries.append(group)
        raise Conflict("InUse", "The image is used by pool 'p'.", target="image")

    groups.on_delete(refuse)
    groups.mark_deleting(SUB, "doomed")
    with pytest.raises(Conflict) as caught:
        groups.delete(SUB, "doomed")
    assert caught.value.code == "ResourceGroupDeletionBlocked"
    assert caught.value.details == [{"code": "InUse", "message": "The image is used by pool 'p'.", "target": "image"}]
    assert len(tries) == module.DELETE_PASSES
    assert _state(groups) == "Succeeded"
    groups.require_open(SUB, "doomed")  # open again


def test_a_delete_cut_short_by_a_restart_leaves_the_group_open(store):
    groups = _groups(store)
    groups.mark_deleting(SUB, "doomed")
    after_restart = ResourceGroups(store.db, store)  # its operation is reported failed (operations.py)
    assert after_restart.get(SUB, "doomed").body["properties"]["provisioningState"] == "Succeeded"
    after_restart.require_open(SUB, "doomed")


def test_a_delete_waits_for_the_writes_let_in_before_it_and_lets_none_in_after(store):
    groups = _groups(store)
    groups.on_delete(_delete_disks(store))
    write = groups.begin_write(SUB, "doomed")  # a disk's PUT, let in
    groups.mark_deleting(SUB, "doomed")
    with pytest.raises(Conflict) as caught:
        groups.begin_write(SUB, "doomed")
    assert caught.value.code == "ResourceGroupBeingDeleted"
    with ThreadPoolExecutor(1) as pool:
        deleted = pool.submit(groups.delete, SUB, "doomed")
        with pytest.raises(TimeoutError):
            deleted.result(timeout=0.3)  # waiting for the write
        _disk(store, "made")
        groups.end_write(write)
        assert deleted.result(timeout=10) is True
    assert not groups.exists(SUB, "doomed")
    assert store.list(subscription=SUB, resource_group="doomed") == []


def test_a_second_delete_waits_for_the_first_and_nothing_reopens_the_group_meanwhile(store):
    groups = _groups(store)
    entered, go_on = threading.Event(), threading.Event()
    passes = []

    def slow(subscription: str, group: str) -> None:
        passes.append(group)
        entered.set()
        go_on.wait(10)

    groups.on_delete(slow)
    groups.mark_deleting(SUB, "doomed")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(groups.delete, SUB, "doomed")
        assert entered.wait(10)
        groups.mark_deleting(SUB, "doomed")  # a client's retry of the DELETE
        second = pool.submit(groups.delete, SUB, "doomed")
        with pytest.raises(Conflict):  # a change of the group's tags meanwhile
            groups.create_or_update(SUB, "doomed", {"location": defaults.LOCATION, "tags": {"a": "b"}})
        assert _state(groups) == "Deleting"
        go_on.set()
        assert first.result(timeout=10) is True
        assert second.result(timeout=10) is False  # the first deleted it
    assert passes == ["doomed"]
    assert not groups.exists(SUB, "doomed")
