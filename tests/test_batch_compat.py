"""Every Batch data-plane api-version from 2018-12-01.8.0 on, and every operation the Batch
SDKs can send (the current one and the old ones tests/clients/install.sh installs): each
reaches a handler here, and what is not served answers OperationNotSupported, naming the
feature, never InvalidUri."""

from __future__ import annotations

import re
from pathlib import Path

import azure.batch._operations._operations as current_operations
import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from batchyard.api.batch.unsupported import FEATURES
from batchyard.services.batch import api_versions
from conftest import tool

OLD_SDKS = ("azure-batch-6", "azure-batch-11", "azure-batch-14")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def current_sdk_operations() -> set[tuple[str, str]]:
    """(method, url template) of every request builder of the installed azure-batch."""
    source = Path(current_operations.__file__).read_text()
    pairs = re.findall(r'_url = "([^"]+)".*?return HttpRequest\(method="(\w+)"', source, re.DOTALL)
    return {(method, url) for url, method in pairs}


def old_sdk_operations(venv: str) -> set[tuple[str, str]]:
    """(method, url template) of every operation of an msrest-generation azure-batch."""
    site = next(tool(venv, "lib").glob("python3*/site-packages/azure/batch/operations"))
    found = set()
    for module in site.glob("*_operations.py"):
        for body in module.read_text().split("\n    def ")[1:]:
            method = re.search(r"self\._client\.(get|post|put|patch|delete|head)\(", body)
            url = re.search(r"metadata = \{'url': '([^']+)'\}", body)
            if method and url:
                found.add((method.group(1).upper(), url.group(1)))
    return found


def filled(template: str) -> str:
    values = {"thumbprintAlgorithm": "sha1", "thumbprint": "0123abcd", "filePath": "wd%2Fnothing.txt"}
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), f"missing-{m.group(1).lower()}"), template)


def answer(batch, method: str, path: str, version: str = "2025-06-01") -> tuple[int, str | None]:
    request = HttpRequest(method, path, params={"api-version": version},
                          headers={"content-type": "application/json"} if method in ("POST", "PUT", "PATCH") else {},
                          content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    try:
        response = batch.send_request(request)
    except HttpResponseError as exc:
        return exc.status_code, exc.error.code if exc.error else None
    return response.status_code, None


def test_every_operation_of_every_sdk_reaches_a_handler(clients):
    operations = current_sdk_operations()
    assert len(operations) > 60  # the parse found the SDK's builders
    for venv in OLD_SDKS:
        operations |= old_sdk_operations(venv)
    batch = clients.batch_key
    for method, template in sorted(operations):
        if method == "HEAD":  # no body to tell InvalidUri from NotFound; the GET twin stands for it
            continue
        status, code = answer(batch, method, filled(template))
        assert code not in ("InvalidUri", "UnsupportedHttpVerb"), (method, template, status, code)


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_known_unsupported_operations_name_their_feature(clients, feature):
    batch = clients.batch_key
    for method, template in FEATURES[feature]:
        request = HttpRequest(method, filled(template), params={"api-version": "2025-06-01"})
        with pytest.raises(HttpResponseError) as exc:
            batch.send_request(request)
        assert exc.value.status_code == 400
        if method != "HEAD":
            assert exc.value.error.code == "OperationNotSupported"
            assert f"does not support this operation ({feature})" in exc.value.error.message


def test_unknown_paths_stay_invalid_uri(clients):
    batch = clients.batch_key
    for path in ("/jobschedules/s1/nowhere", "/pools/p1/nodes/n1/users/u1/more", "/applicationz", "/nowhere"):
        assert answer(batch, "GET", path) == (404, "InvalidUri"), path


def test_every_api_version_from_2018_is_served(clients):
    batch = clients.batch_key
    assert api_versions.VERSIONS[0] == "2018-12-01.8.0"
    for version in api_versions.VERSIONS:
        assert answer(batch, "GET", "/pools", version) == (200, None), version
    for version in ("2018-08-01.7.0", "2020-11-01.13.0", "2030-01-01"):
        assert answer(batch, "GET", "/pools", version) == (400, "InvalidQueryParameterValue"), version


def test_shapes_of_versions_before_task_slots():
    old, new = "2020-03-01.11.0", "2020-09-01.12.0"
    pool = {"id": "p", "maxTasksPerNode": 4, "metadata": [{"name": "maxTasksPerNode", "value": "x"}]}
    assert api_versions.upgrade_body(old, pool) == {
        "id": "p", "taskSlotsPerNode": 4, "metadata": [{"name": "maxTasksPerNode", "value": "x"}]}
    assert api_versions.upgrade_body(new, pool) is pool
    assert api_versions.upgrade_select(old, "id, maxTasksPerNode") == "id,taskSlotsPerNode"
    assert api_versions.downgrade_body(old, {"value": [{"id": "p", "taskSlotsPerNode": 4}]}) == \
        {"value": [{"id": "p", "maxTasksPerNode": 4}]}
    counts = {"odata.metadata": "m", "taskCounts": {"active": 1}, "taskSlotCounts": {"active": 2}}
    assert api_versions.downgrade_body(old, counts) == {"odata.metadata": "m", "active": 1}
    assert api_versions.downgrade_body(new, counts) is counts
    error = {"code": "InvalidPropertyValue", "values": [{"key": "PropertyName", "value": "taskSlotsPerNode"}]}
    assert api_versions.downgrade_body(old, error)["values"] == [{"key": "PropertyName", "value": "maxTasksPerNode"}]
    assert not api_versions.reshapes("1999-01-01") and not api_versions.reshapes(new)
