"""Admission: integers outside Azure's ranges refused with 400, request bodies limited while
they stream, request heads and idle connections timed out, connections capped."""

from __future__ import annotations

import json
import select
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import HttpResponseError
from batchyard.config import Settings
from conftest import Clients, Server, connect_raw


HUGE = (10**9, 2**31, 2**63, 10**30)
BEYOND_INT32 = (2**31, 2**63, 10**30)


def base_pool(clients, pool_id: str, **extra) -> dict:
    image = next(iter(clients.batch.list_supported_images()))
    ref = image.image_reference
    return {"id": pool_id, "vmSize": "standard_a1_v2",
            "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher, "offer": ref.offer,
                                                               "sku": ref.sku, "version": "latest"},
                                            "nodeAgentSKUId": image.node_agent_sku_id}, **extra}


def refused(call, *args, **kwargs) -> str:
    """The property a 400 InvalidPropertyValue names."""
    with pytest.raises(HttpResponseError) as e:
        result = call(*args, **kwargs)
        if hasattr(result, "result"):
            result.result()
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue", e.value.message
    return {d.code: d.message for d in e.value.error.details}["PropertyName"]


def test_integers_outside_azures_ranges_are_refused(clients):
    batch = clients.batch
    for value in HUGE:
        assert refused(batch.create_pool, base_pool(clients, "huge", targetDedicatedNodes=value)) == \
            "targetDedicatedNodes"
        assert refused(batch.create_pool, base_pool(clients, "huge", targetLowPriorityNodes=value)) == \
            "targetLowPriorityNodes"
        assert refused(batch.create_pool, base_pool(clients, "huge", taskSlotsPerNode=value)) == "taskSlotsPerNode"
        assert refused(batch.create_job, {"id": "huge", "poolInfo": {"poolId": "p"},
                                          "constraints": {"maxTaskRetryCount": value}}) == \
            "constraints.maxTaskRetryCount"
    for value in BEYOND_INT32:  # Batch's integers are int32
        assert refused(batch.create_job, {"id": "huge", "poolInfo": {"poolId": "p"}, "maxParallelTasks": value}) == \
            "maxParallelTasks"
    assert refused(batch.create_pool, base_pool(clients, "huge", resizeTimeout="P99999999D")) == "resizeTimeout"
    assert refused(batch.create_job, {"id": "huge", "poolInfo": {"poolId": "p"}, "priority": -2**40}) == "priority"
    assert not any(p.id == "huge" for p in batch.list_pools())
    assert not any(j.id == "huge" for j in batch.list_jobs())

    batch.create_pool(base_pool(clients, "resizable", targetDedicatedNodes=0))
    for value in HUGE:
        assert refused(batch.begin_resize_pool, "resizable", {"targetDedicatedNodes": value},
                       polling_interval=0.1) == "targetDedicatedNodes"
    pool = batch.get_pool("resizable")
    assert pool.target_dedicated_nodes == 0 and pool.current_dedicated_nodes == 0
    batch.begin_delete_pool("resizable", polling_interval=0.1).result()


def test_an_oversized_chunked_body_is_refused_while_it_streams(server, clients):
    """4 MB is ARM's limit: the server answers 413 once it has read past it, long before
    the client could have sent all it meant to (128 MiB)."""
    token = clients.credential.get_token("https://management.azure.com/.default").token
    sock = connect_raw(server.info)
    path = f"/subscriptions/{clients.subscription}/resourcegroups/chunked?api-version=2024-11-01"
    sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    sent, meant, answer = 0, 128 << 20, b""
    try:
        while sent < meant and not (answer := answer + _available(sock)):
            sock.sendall(chunk)
            sent += 64 * 1024
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the server stopped reading and closed: its answer is waiting
    try:
        while b"RequestEntityTooLarge" not in answer and (data := sock.recv(65536)):
            answer += data
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"RequestEntityTooLarge"' in answer.replace(b" ", b"")
    assert sent < 32 << 20, f"the client sent {sent} bytes before the refusal"
    assert "chunked" not in {g.name for g in clients.resource.resource_groups.list()}


def _available(sock: ssl.SSLSocket) -> bytes:
    """Application data already received, without waiting (TLS records that carry none,
    such as session tickets, make the socket readable too)."""
    if not select.select([sock], [], [], 0)[0]:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except ssl.SSLWantReadError:
        return b""
    finally:
        sock.settimeout(30)


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("impatient") / "data", tls=False,
                extra_env={"BATCHYARD_HEADER_TIMEOUT": "1", "BATCHYARD_KEEP_ALIVE_TIMEOUT": "1",
                           "BATCHYARD_BODY_TIMEOUT": "2", "BATCHYARD_MAX_HEADER_BYTES": "16384"}) as srv:
        yield srv


def closed_by_server(sock: socket.socket) -> bytes:
    """Reads until the server closes the connection (the socket's 30 s timeout fails the test)."""
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def test_connections_that_send_no_complete_head_are_closed(impatient):
    silent = connect_raw(impatient.info)
    partial = connect_raw(impatient.info)
    partial.sendall(b"GET /_health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    assert closed_by_server(silent) == b""
    assert closed_by_server(partial) == b""
    assert time.monotonic() - started < 25
    silent.close()
    partial.close()


def test_a_body_that_stops_coming_closes_its_connection_quietly(impatient):
    """A Content-Length never met, or a chunked body without its last chunk, held its
    request (and a connection) for ever; now the connection closes once the body pauses
    longer than BATCHYARD_BODY_TIMEOUT, and the abandoned request logs no server error. A
    body that keeps coming, however slowly, is read to its end."""
    # the token endpoint reads its form before anything else
    head = b"POST /common/oauth2/v2.0/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    short = connect_raw(impatient.info)
    short.sendall(head + b"Content-Length: 100\r\n\r\n" + b"grant_type=")
    unfinished = connect_raw(impatient.info)
    unfinished.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\ngrant\r\n")
    started = time.monotonic()
    assert closed_by_server(short) == b""
    assert closed_by_server(unfinished) == b""
    assert time.monotonic() - started < 25
    short.close()
    unfinished.close()

    steady = connect_raw(impatient.info)
    body = b"grant_type=password&x=yz"
    steady.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    for i in range(0, len(body), 4):  # 2 s in all, 0.3 s apart: never a 2 s pause
        steady.sendall(body[i:i + 4])
        time.sleep(0.3)
    answer = closed_by_server(steady)  # read whole, then refused for its grant type
    assert answer.startswith(b"HTTP/1.1 400") and b"unsupported_grant_type" in answer, answer
    steady.close()
    time.sleep(0.2)
    assert "Traceback" not in impatient.log.read_text()


def test_idle_keep_alive_connections_are_closed(impatient):
    sock = connect_raw(impatient.info)
    sock.sendall(b"GET /_health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
    sock.close()


def test_oversized_request_heads_are_refused(impatient):
    """431, in the shape of the plane the request was for: ARM's, or Batch's for a Batch path
    or an account's host name."""
    account, suffix = impatient.info["batch_account"], Settings.default_batch_host_suffix()
    for path, host, shape in [(b"/subscriptions/s/resourceGroups", b"127.0.0.1", "arm"),
                              (b"/batch/jobs?api-version=2024-07-01.20.0", b"127.0.0.1", "batch"),
                              (b"/jobs?api-version=2024-07-01.20.0", f"{account}.{suffix}:80".encode(), "batch")]:
        sock = connect_raw(impatient.info)
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nX-Padding: " + b"a" * 32768 + b"\r\n\r\n")
        answer = closed_by_server(sock)
        sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), answer[:200]
        error = json.loads(body)
        if shape == "arm":
            assert error["error"]["code"] == "RequestHeaderFieldsTooLarge"
        else:
            assert error["code"] == "RequestHeaderFieldsTooLarge" and "16384 bytes" in error["message"]["value"]


def test_connections_are_capped(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("capped") / "data", tls=False,
                extra_env={"BATCHYARD_MAX_CONNECTIONS": "3"}) as srv:
        idle = [connect_raw(srv.info) for _ in range(3)]
        try:
            extra = connect_raw(srv.info)
            extra.sendall(b"GET /_health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert closed_by_server(extra).startswith(b"HTTP/1.1 503")
            extra.close()
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)  # let the server see them go
        again = connect_raw(srv.info)
        again.sendall(b"GET /_health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert closed_by_server(again).startswith(b"HTTP/1.1 200")
        again.close()



def test_oversized_integers_are_refused_on_arm_too(clients):
    compute = clients.compute
    clients.resource.resource_groups.create_or_update("admission", {"location": clients.location})

    def refused_arm(call, *args) -> str:
        with pytest.raises(HttpResponseError) as e:
            call(*args).result()
        assert e.value.status_code == 400 and e.value.error.code == "InvalidParameter", e.value.message
        return e.value.error.target

    for value in (2**63, 10**30):
        assert refused_arm(compute.disks.begin_create_or_update, "admission", "huge", {
            "location": clients.location, "properties": {"creationData": {"createOption": "Empty"},
                                                         "diskSizeGB": value}}) == "diskSizeGB"
        assert refused_arm(compute.disks.begin_create_or_update, "admission", "huge", {
            "location": clients.location, "properties": {"osType": "Linux", "creationData": {
                "createOption": "Upload", "uploadSizeBytes": value}}}) == "creationData.uploadSizeBytes"
    compute.disks.begin_create_or_update("admission", "upload", {
        "location": clients.location, "properties": {"osType": "Linux", "creationData": {
            "createOption": "Upload", "uploadSizeBytes": 1 << 20}}}).result()
    assert refused_arm(compute.disks.begin_grant_access, "admission", "upload",
                       {"access": "Write", "durationInSeconds": 2**31}) == "durationInSeconds"
    assert {d.name for d in compute.disks.list_by_resource_group("admission")} == {"upload"}


def test_pages_of_lists_wait_their_turn_and_all_come(tmp_path_factory):
    """Pages of tasks and nodes are rendered at most BATCHYARD_LIST_CONCURRENCY at once (so a
    crowd of listing clients cannot take the whole interpreter from the scheduler); with
    one at a time, 16 clients listing together each get every page, whole and in order."""
    with Server(tmp_path_factory.mktemp("lists") / "data", extra_env={"BATCHYARD_LIST_CONCURRENCY": "1"}) as srv:
        batch = Clients(srv.info).batch_key
        batch.create_job({"id": "listed", "poolInfo": {"poolId": "nowhere"}})
        ids = [f"t{i:03d}" for i in range(250)]
        batch.create_tasks("listed", [{"id": i, "commandLine": "true"} for i in ids])
        def listing(_) -> list[str]:
            client = Clients(srv.info).batch_key  # each its own connections, as separate clients
            return [t.id for t in client.list_tasks("listed", max_results=100)]

        with ThreadPoolExecutor(16) as pool:
            listings = list(pool.map(listing, range(16)))
        assert listings == [ids] * 16
