"""Azure's allocation rules with the limits set low: custom-image node limits shared across
pools on the same snapshot, hosts that are full (AllocationTimedout, stopresize), and a
server restart with pools and nodes intact. Plus authentication failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.rest import HttpRequest

from conftest import Clients, Server, build_flow, pool_settled, wait_for
from test_batch_pools import IMAGE_CHECK, base_pool, custom_pool, error_values

RG = "rules"
ENV = {"BATCHYARD_CUSTOM_IMAGE_MAX_DEDICATED": "3", "BATCHYARD_CUSTOM_IMAGE_MAX_LOW_PRIORITY": "2",
       "BATCHYARD_MIN_RESIZE_TIMEOUT": "1", "BATCHYARD_HOST_CORES": "24"}


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("rules") / "data", extra_env=ENV) as srv:
        clients = Clients(srv.info)
        image = build_flow(clients, RG)["image"]
        os_snapshot = image.storage_profile.os_disk.snapshot.id
        twin = clients.compute.images.begin_create_or_update(RG, "twin", {"location": clients.location, "properties": {
            "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                          "snapshot": {"id": os_snapshot}}}}}).result()
        yield srv, clients, image, twin


def test_custom_image_limits_are_shared_across_pools_on_one_snapshot(rules):
    _, clients, image, twin = rules
    batch = clients.batch
    batch.create_pool(custom_pool("first", image.id, dedicated=2, low_priority=3,
                                  startTask={"commandLine": f"/bin/sh -c '{IMAGE_CHECK}'"}))
    pool, _ = pool_settled(batch, "first")
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (2, 2)
    assert [e.code for e in pool.resize_errors] == ["CustomImageNodeLimitReached"]
    batch.create_pool(custom_pool("second", twin.id, dedicated=2))
    pool, _ = pool_settled(batch, "second")
    assert pool.current_dedicated_nodes == 1 and pool.target_dedicated_nodes == 2
    error = pool.resize_errors[0]
    assert error.code == "CustomImageNodeLimitReached" and "at most 3 dedicated" in error.message
    # a gallery version of the image counts with it (definition's latest or the version alike)
    c, loc = clients.compute, clients.location
    c.galleries.begin_create_or_update(RG, "rules", {"location": loc}).result()
    c.gallery_images.begin_create_or_update(RG, "rules", "tool", {"location": loc, "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}}).result()
    version = c.gallery_image_versions.begin_create_or_update(RG, "rules", "tool", "1.0.0", {"location": loc,
        "properties": {"storageProfile": {"source": {"id": image.id}}}}).result()
    batch.create_pool(custom_pool("third", version.id, dedicated=1))
    pool, _ = pool_settled(batch, "third")
    assert pool.current_dedicated_nodes == 0 and pool.resize_errors[0].code == "CustomImageNodeLimitReached"
    batch.begin_delete_pool("third", polling_interval=0.1).result()


def test_full_hosts_time_out_and_stopresize_stops(rules):
    _, clients, _, _ = rules
    batch = clients.batch_key
    # 5 one-core nodes of the limits test hold 5 of the 24 cores: one 16-core node fits, not two
    batch.create_pool(base_pool(clients, "big", dedicated=2, vmSize="standard_d16s_v3", resizeTimeout="PT2S"))
    pool = wait_for(lambda: (p := batch.get_pool("big")).allocation_state == "steady" and p, timeout=30,
                    what="the resize to time out")
    assert pool.current_dedicated_nodes == 1
    assert [e.code for e in pool.resize_errors] == ["AllocationTimedout"]
    batch.begin_resize_pool("big", {"targetDedicatedNodes": 3, "resizeTimeout": "PT1H"})
    assert batch.get_pool("big").allocation_state == "resizing"
    with pytest.raises(HttpResponseError) as e:
        batch.begin_resize_pool("big", {"targetDedicatedNodes": 4})
    assert e.value.status_code == 409 and e.value.error.code == "PoolBeingResized"
    batch.begin_stop_pool_resize("big", polling_interval=0.1).result()
    pool = batch.get_pool("big")
    assert pool.allocation_state == "steady" and pool.current_dedicated_nodes == 1


def test_restart_keeps_pools_and_nodes(rules):
    server, clients, _, _ = rules
    before = {n.id: n.state for n in clients.batch.list_nodes("first")}
    clients = Clients(server.restart())
    batch = clients.batch
    pool, nodes = pool_settled(batch, "first")
    assert {n.id: n.state for n in nodes} == before
    node = next(n for n in nodes if n.is_dedicated)
    batch.begin_reboot_node("first", node.id, {"nodeRebootOption": "requeue"}, polling_interval=0.1).result()
    _, nodes = pool_settled(batch, "first")
    assert all(n.start_task_info.exit_code == 0 for n in nodes)  # the image's files are still there
    assert {p.id for p in batch.list_pools()} == {"first", "second", "big"}


def test_restart_mid_run_loses_no_task(rules):
    server, clients, _, _ = rules
    batch = clients.batch_key
    batch.create_job({"id": "survive", "poolInfo": {"poolId": "first"}})
    batch.create_tasks("survive", [{"id": f"r{i}", "commandLine": "sleep 5; echo done"} for i in range(4)])
    wait_for(lambda: batch.get_job_task_counts("survive").task_counts.running >= 2, what="tasks to run")
    batch = Clients(server.restart()).batch_key
    wait_for(lambda: batch.get_job_task_counts("survive").task_counts.completed == 4, timeout=60,
             what="every task to finish after the restart")
    tasks = list(batch.list_tasks("survive"))
    assert all(t.execution_info.result == "success" for t in tasks)
    assert any(t.execution_info.requeue_count >= 1 for t in tasks)  # the ones cut short ran again
    for task in tasks:
        assert b"".join(batch.download_task_file("survive", task.id, "stdout.txt")).endswith(b"done\n")


def test_wrong_key_stale_date_and_bad_tokens_are_refused(rules):
    _, clients, _, _ = rules
    info = clients.info
    forged = BatchClient(info["batch_endpoint"], AzureNamedKeyCredential(
        info["batch_account"], "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWs="),
        connection_verify=info["ca_bundle"])
    with pytest.raises(ClientAuthenticationError) as e:
        forged.get_pool("first")
    assert e.value.status_code == 401 and e.value.error.code == "AuthenticationFailed"
    with pytest.raises(ClientAuthenticationError) as e:
        clients.batch_key.get_pool("first", ocp_date=datetime.now(UTC) - timedelta(hours=1))
    assert e.value.error.code == "AuthenticationFailed"

    class ArmToken:  # a valid token for the wrong audience
        def get_token(self, *scopes, **kwargs) -> AccessToken:
            return clients.credential.get_token("https://management.azure.com/.default")

    wrong_audience = BatchClient(info["batch_endpoint"], ArmToken(), connection_verify=info["ca_bundle"])
    with pytest.raises(ClientAuthenticationError) as e:
        wrong_audience.get_pool("first")
    assert e.value.error.code == "AuthenticationFailed"
    assert "audience" in error_values(e)["AuthenticationErrorDetail"]


def signed_get(info: dict, path_and_query: str):
    """A GET signed with the account key by hand, for requests the SDK will not make."""
    from email.utils import formatdate
    from urllib.parse import urlsplit

    import requests

    from batchyard.api.batch import sharedkey
    url = info["batch_endpoint"] + path_and_query
    parts = urlsplit(url)
    headers = [("ocp-date", formatdate(usegmt=True))]
    text = sharedkey.string_to_sign("GET", parts.path, parts.query, headers, info["batch_account"])
    signature = sharedkey.sign(info["batch_account_key"], text)
    return requests.get(url, headers={**dict(headers), "Authorization": f"SharedKey {info['batch_account']}:{signature}"},
                        verify=info["ca_bundle"], timeout=30)


def refused(batch, request: HttpRequest) -> tuple[int, str]:
    """(status, Batch error code) of a request the server refuses."""
    with pytest.raises(HttpResponseError) as e:
        batch.send_request(request)
    return e.value.status_code, e.value.error.code


def test_protocol_errors(rules):
    _, clients, _, _ = rules
    batch = clients.batch_key
    version = {"api-version": "2025-06-01"}
    assert refused(batch, HttpRequest("GET", "/pools")) == (400, "MissingRequiredQueryParameter")
    assert refused(batch, HttpRequest("GET", "/pools", params={"api-version": "1999-01-01"})) == \
        (400, "InvalidQueryParameterValue")
    assert refused(batch, HttpRequest("GET", "/nowhere", params=version)) == (404, "InvalidUri")
    assert refused(batch, HttpRequest("POST", "/pools", params=version, headers={"content-type": "application/json"},
                                      content=b"{not json")) == (400, "InvalidRequestBody")
    assert refused(batch, HttpRequest("PUT", "/pools", params=version)) == (400, "UnsupportedHttpVerb")
    assert refused(batch, HttpRequest("POST", "/pools", params=version, headers={"content-type": "application/json"},
                                      content=b'{"id": NaN}')) == (400, "InvalidRequestBody")
    assert refused(batch, HttpRequest("POST", "/pools", params=version, headers={"content-type": "application/json"},
                                      content=b"[" * 100000)) == (400, "InvalidRequestBody")
    assert signed_get(clients.info, "/pools?api-version=2025-06-01&maxresults=1").status_code == 200
    assert signed_get(clients.info, "/pools?api-version=2025-06-01&maxresults=1&maxresults=2").json()["code"] == \
        "InvalidQueryParameterValue"  # the SDK cannot send this: a raw request, correctly signed
    huge = [{"name": f"k{i}", "value": "v" * 1000} for i in range(1200)]
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool({**base_pool(clients, "huge"), "metadata": huge})
    assert e.value.status_code == 413 and e.value.error.code == "RequestBodyTooLarge"
    with pytest.raises(HttpResponseError) as e:
        next(iter(batch.list_pools(filter="id eq ")))
    assert e.value.status_code == 400 and e.value.error.code == "InvalidQueryParameterValue"
