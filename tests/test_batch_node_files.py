"""Node files through the real azure-batch client: a pool's start task writes files, which
are then listed, downloaded (whole, in ranges, conditionally), inspected and deleted;
paths that try to leave the node's root directory are refused, never answered with 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)

from conftest import pool_settled, wait_for
from test_batch_pools import base_pool

POOL = "files-pool"
START = ("/bin/sh -c 'echo hi; mkdir -p out \"sp ace\"; echo data > out/x.txt; echo spaced > \"sp ace/a+b.txt\"; "
         "head -c 3000000 /dev/zero > big.bin; printf tail >> big.bin; "
         "ln -s /etc/hostname leak; ln -s ../../.. up; ln -s out/x.txt inner; "
         "echo shared > $AZ_BATCH_NODE_SHARED_DIR/s.txt'")


@pytest.fixture(scope="module")
def node(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, POOL, startTask={"commandLine": START, "waitForSuccess": True}))
    _, nodes = pool_settled(batch, POOL)
    assert len(nodes) == 1
    yield nodes[0].id
    batch.begin_delete_pool(POOL, polling_interval=0.1).result()


def read(batch, node_id: str, path: str, **kwargs) -> bytes:
    return b"".join(batch.download_node_file(POOL, node_id, path, **kwargs))


def code(exc) -> str | None:
    """The Batch error code. A streamed download's error body is not read by the SDK before
    it builds the exception (e.error is None), so read it here; HEAD answers have none."""
    if exc.value.error is not None:
        return exc.value.error.code
    response = exc.value.response
    if response.request.method == "HEAD":
        return None
    response.read()
    return json.loads(response.text())["code"]


def test_listing_top_level_and_recursive(clients, node):
    batch = clients.batch_key
    top = {f.name: f for f in batch.list_node_files(POOL, node)}
    for name in ("shared", "startup", "workitems", "applications", "fsmounts"):
        assert top[name].is_directory is True, name
        assert top[name].url.endswith(f"/pools/{POOL}/nodes/{node}/files/{name}")
    assert not any("/" in name for name in top)

    everything = {f.name: f for f in batch.list_node_files(POOL, node, recursive=True)}
    assert everything["startup/wd/out"].is_directory is True
    x = everything["startup/wd/out/x.txt"]
    assert x.is_directory is False and x.properties.content_length == 5
    assert x.properties.content_type == "application/octet-stream"
    assert x.properties.file_mode.startswith("0o100") and x.properties.last_modified is not None
    assert x.url.endswith("/files/startup%2Fwd%2Fout%2Fx.txt")
    assert everything["startup/wd/sp ace/a+b.txt"].url.endswith("/files/startup%2Fwd%2Fsp%20ace%2Fa%2Bb.txt")
    assert everything["startup/stdout.txt"].properties.content_length == 3
    assert everything["shared/s.txt"].properties.content_length == 7
    assert "startup/wd/leak" not in everything and "startup/wd/up" not in everything  # links out are not listed
    assert everything["startup/wd/inner"].properties.content_length == 5

    # paging: the nextLink carries recursive and $filter
    paged = [f.name for f in batch.list_node_files(POOL, node, recursive=True, max_results=2)]
    assert paged == sorted(everything)
    startup = [f.name for f in batch.list_node_files(POOL, node, recursive=True, max_results=3,
                                                     filter="startswith(name,'startup/wd')")]
    assert startup and all(n.startswith("startup/wd") for n in startup)
    assert set(startup) == {n for n in everything if n.startswith("startup/wd")}


def test_download_whole_ranges_and_headers(clients, node):
    batch = clients.batch_key
    assert read(batch, node, "startup/stdout.txt") == b"hi\n"
    assert read(batch, node, "startup/wd/out/x.txt") == b"data\n"
    assert read(batch, node, "startup/wd/sp ace/a+b.txt") == b"spaced\n"
    assert read(batch, node, "shared/s.txt") == b"shared\n"
    assert read(batch, node, "startup/wd/out/x.txt", ocp_range="bytes=1-2") == b"at"
    assert read(batch, node, "startup/wd/out/x.txt", ocp_range="bytes=2-") == b"ta\n"
    assert read(batch, node, "startup/wd/big.bin", ocp_range="bytes=3000000-3000099") == b"tail"
    assert len(read(batch, node, "startup/wd/big.bin")) == 3000004

    headers = batch.download_node_file(POOL, node, "startup/wd/out/x.txt", ocp_range="bytes=0-1",
                                       cls=lambda response, body, h: (b"".join(body), h))
    body, h = headers
    assert body == b"da" and h["Content-Length"] == 2 and h["content-type"] == "application/octet-stream"
    assert h["ocp-batch-file-isdirectory"] is False and h["ocp-batch-file-mode"].startswith("0o100")
    assert h["ocp-batch-file-url"].endswith(f"/pools/{POOL}/nodes/{node}/files/startup%2Fwd%2Fout%2Fx.txt")
    assert h["ETag"].startswith("0x") and h["Last-Modified"] is not None and h["ocp-creation-time"] is not None

    with pytest.raises(HttpResponseError) as exc:
        read(batch, node, "startup/wd/out/x.txt", ocp_range="bytes=100-")
    assert exc.value.status_code == 416 and code(exc) == "InvalidRange"
    with pytest.raises(HttpResponseError) as exc:
        read(batch, node, "startup/wd/out/x.txt", ocp_range="bytes=4-1")
    assert exc.value.status_code == 400 and code(exc) == "InvalidHeaderValue"
    with pytest.raises(HttpResponseError) as exc:
        read(batch, node, "startup/wd")
    assert exc.value.status_code == 400 and code(exc) == "FileIsDirectory"


def test_properties_and_conditions(clients, node):
    batch = clients.batch_key
    props = batch.get_node_file_properties(POOL, node, "startup/wd/out/x.txt")
    assert props.is_directory is False and props.content_length == 5
    assert props.file_mode.startswith("0o100") and props.url.endswith("startup%2Fwd%2Fout%2Fx.txt")
    assert props.last_modified is not None and props.creation_time is not None
    folder = batch.get_node_file_properties(POOL, node, "startup")
    assert folder.is_directory is True and folder.file_mode.startswith("0o40")

    later = datetime.now(UTC) + timedelta(hours=1)
    earlier = props.last_modified - timedelta(hours=1)
    with pytest.raises(ResourceModifiedError):  # 304: the SDK's name for it (WIRE §1.8)
        read(batch, node, "startup/wd/out/x.txt", if_modified_since=later)
    with pytest.raises(ResourceModifiedError):
        batch.get_node_file_properties(POOL, node, "startup/wd/out/x.txt", if_modified_since=later)
    assert read(batch, node, "startup/wd/out/x.txt", if_modified_since=earlier) == b"data\n"
    with pytest.raises(HttpResponseError) as exc:
        read(batch, node, "startup/wd/out/x.txt", if_unmodified_since=earlier)
    assert exc.value.status_code == 412
    assert read(batch, node, "startup/wd/out/x.txt", if_unmodified_since=later) == b"data\n"


def test_paths_outside_the_node_are_refused(clients, node):
    batch = clients.batch_key
    for path in ("../../../etc/passwd", "startup/../../x", "/etc/passwd", "startup/wd/../../../../../etc/passwd",
                 "shared/\x00x"):
        for call in (lambda p=path: read(batch, node, p), lambda p=path: batch.get_node_file_properties(POOL, node, p),
                     lambda p=path: batch.delete_node_file(POOL, node, p, recursive=True)):
            with pytest.raises(HttpResponseError) as exc:
                call()
            assert exc.value.status_code == 400, path
            assert code(exc) in ("InvalidUri", None), path  # None: HEAD answers carry no body
    for path in ("startup/wd/leak", "startup/wd/up", "startup/wd/up/x"):
        with pytest.raises(HttpResponseError) as exc:
            read(batch, node, path)
        assert exc.value.status_code == 403 and code(exc) == "AuthorizationFailure", path
    # a link inside the node is followed
    assert read(batch, node, "startup/wd/inner") == b"data\n"
    assert read(batch, node, "startup/wd/up/tasks/shared/s.txt") == b"shared\n"


def test_missing_files_nodes_and_tasks(clients, node):
    batch = clients.batch_key
    with pytest.raises(ResourceNotFoundError) as exc:
        read(batch, node, "startup/nothing.txt")
    assert code(exc) == "FileNotFound"
    with pytest.raises(ResourceNotFoundError):
        batch.get_node_file_properties(POOL, node, "startup/nothing.txt")
    with pytest.raises(ResourceNotFoundError):
        batch.delete_node_file(POOL, node, "startup/nothing.txt")
    with pytest.raises(ResourceNotFoundError) as exc:
        list(batch.list_node_files(POOL, "tvm-missing"))
    assert code(exc) == "NodeNotFound"
    with pytest.raises(ResourceNotFoundError) as exc:
        list(batch.list_node_files("no-such-pool", node))
    assert code(exc) == "PoolNotFound"
    with pytest.raises(ResourceNotFoundError) as exc:
        list(batch.list_task_files("no-such-job", "t1"))
    assert code(exc) == "JobNotFound"


def test_delete(clients, node):
    batch = clients.batch_key
    batch.delete_node_file(POOL, node, "startup/wd/out/x.txt")
    names = {f.name for f in batch.list_node_files(POOL, node, recursive=True)}
    assert "startup/wd/out/x.txt" not in names and "startup/wd/out" in names
    batch.delete_node_file(POOL, node, "startup/wd/out")  # empty now
    with pytest.raises(ResourceExistsError) as exc:  # 409: not empty, not recursive
        batch.delete_node_file(POOL, node, "startup/wd/sp ace")
    assert code(exc) == "DirectoryNotEmpty"
    batch.delete_node_file(POOL, node, "startup/wd/sp ace", recursive=True)
    batch.delete_node_file(POOL, node, "startup/wd/leak")  # the link goes, its target stays
    names = {f.name for f in batch.list_node_files(POOL, node, recursive=True)}
    assert not any(n.startswith(("startup/wd/out", "startup/wd/sp ace")) for n in names)
    with pytest.raises(HttpResponseError) as exc:  # the agent's own directories stay
        batch.delete_node_file(POOL, node, "shared", recursive=True)
    assert exc.value.status_code == 403
    batch.delete_node_file(POOL, node, "shared/s.txt")
    assert {f.name for f in batch.list_node_files(POOL, node)} >= {"shared", "startup", "workitems"}


# a tree 1,500 directories deep in the task's wd, a file at its bottom
DEEP = ("/bin/sh -c 'd=deep; i=0; while [ $i -lt 1500 ]; do d=\"$d/a\"; i=$((i+1)); done; "
        "mkdir -p \"$d\" && echo bottom > \"$d/f\"'")


def test_trees_a_task_made_thousands_deep_are_deleted(clients):
    """shutil.rmtree recursed, a frame a level: a task's tree 1,000 deep made a file delete
    a 500, and the node that held one never left its pool (its deletion raised in the node
    workers), its half-deleted tree stopping every later start of the server. Deletion now
    takes any depth (confined.remove_tree_at)."""
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "deep-pool"))
    pool_settled(batch, "deep-pool")
    batch.create_job({"id": "deep-job", "poolInfo": {"poolId": "deep-pool"}})
    for task_id in ("cut", "kept"):
        batch.create_task("deep-job", {"id": task_id, "commandLine": DEEP})
        task = wait_for(lambda t=task_id: (t := batch.get_task("deep-job", t)).state == "completed" and t,
                        what=f"{task_id} to make its tree")
        assert task.execution_info.exit_code == 0
    # a file whose name holds a newline was listed, but its path matched no route (404)
    batch.create_task("deep-job", {"id": "nl", "commandLine": "/bin/sh -c 'printf body > \"$(printf \"a\\nb\")\"'"})
    wait_for(lambda: batch.get_task("deep-job", "nl").state == "completed", what="the newline's file")
    assert "wd/a\nb" in {f.name for f in batch.list_task_files("deep-job", "nl", recursive=True)}
    assert b"".join(batch.download_task_file("deep-job", "nl", "wd/a\nb")) == b"body"
    batch.delete_task_file("deep-job", "cut", "wd/deep", recursive=True)
    assert not [f for f in batch.list_task_files("deep-job", "cut", recursive=True) if f.name.startswith("wd/deep")]
    batch.begin_delete_pool("deep-pool", polling_interval=0.2).result(timeout=90)  # its node and "kept"'s tree go
    assert "deep-pool" not in {p.id for p in batch.list_pools()}
    batch.begin_delete_job("deep-job", polling_interval=0.2).result()

