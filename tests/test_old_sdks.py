"""Old Batch SDKs, unchanged, in their own virtual environments (tests/clients/install.sh):
Azure's Batch Python quickstart with azure-batch 11.0.0 (its pin, api-version
2021-06-01.14.0) and 14.2.0 (2024-02-01.19.0), and azure-batch 6.0.0 (2018-12-01.8.0) with
the fields of its time, read back with the current SDK."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import tool

CLIENTS = Path(__file__).resolve().parent / "clients"
INPUTS = {"taskdata0.txt": "first input, read by Task0\n", "taskdata1.txt": "second input\n",
          "taskdata2.txt": "third input: the last\n"}


@pytest.fixture(scope="module")
def input_server(tmp_path_factory):
    """The task inputs over plain HTTP on loopback (the quickstart's SAS URLs stand-in)."""
    folder = tmp_path_factory.mktemp("inputs")
    for name, text in INPUTS.items():
        (folder / name).write_text(text)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run_client(venv: str, script: str, config: dict, info: dict) -> dict:
    python = tool(venv, "bin/python")
    env = {**os.environ, "REQUESTS_CA_BUNDLE": info["ca_bundle"]}
    result = subprocess.run([str(python), str(CLIENTS / script), json.dumps(config)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} with {venv} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def account_config(info: dict, **extra) -> dict:
    return {"account": info["batch_account"], "key": info["batch_account_key"], "url": info["batch_endpoint"],
            **extra}


@pytest.mark.parametrize("venv, api_version", [("azure-batch-11", "2021-06-01.14.0"),
                                               ("azure-batch-14", "2024-02-01.19.0")])
def test_python_quickstart(server, clients, input_server, venv, api_version):
    suffix = venv.rsplit("-", 1)[1]
    config = account_config(server.info, pool=f"PythonQuickstartPool{suffix}", job=f"PythonQuickstartJob{suffix}",
                            inputs=[{"url": f"{input_server}/{name}", "name": name} for name in INPUTS])
    out = run_client(venv, "batch_quickstart.py", config, server.info)
    assert out["api_version"] == api_version
    assert {task: o["stdout"] for task, o in out["outputs"].items()} == {
        f"Task{i}": text for i, text in enumerate(INPUTS.values())}
    assert all(o["exit_code"] == 0 and o["node"] for o in out["outputs"].values())
    assert out["pool"] == {"vm_size": "standard_ds1_v2", "task_slots_per_node": 1,
                           "image": "0001-com-ubuntu-server-focal"}
    assert ["canonical", "0001-com-ubuntu-server-focal", "20_04-lts", "batch.node.ubuntu 20.04"] in \
        out["supported_images"]
    # the quickstart deletes its job and pool at the end
    remaining = [p.state for p in clients.batch_key.list_pools() if p.id == config["pool"]]
    assert remaining in ([], ["deleting"])


def test_max_tasks_per_node_of_2018(server, clients):
    config = account_config(server.info, pool="old-max-tasks", job="old-max-tasks-job")
    out = run_client("azure-batch-6", "batch_max_tasks.py", config, server.info)
    assert out["api_version"] == "2018-12-01.8.0"
    assert ["canonical", "0001-com-ubuntu-server-jammy", "22_04-lts"] in out["agent_images"]
    assert out["max_tasks_per_node"] == 3
    assert out["selected"] == {"id": "old-max-tasks", "max_tasks_per_node": 3, "vm_size": None}
    assert out["listed"] == [3]
    assert out["nodes"] == [["idle", 1]]
    assert out["task_counts"] == {"completed": 1, "succeeded": 1, "active": 0}
    # an error names the field in the words of the client's version
    assert out["refusal"]["code"] == "InvalidPropertyValue"
    assert out["refusal"]["values"]["PropertyName"] == "maxTasksPerNode"
    # the same pool through the current SDK and api-version
    pool = clients.batch_key.get_pool("old-max-tasks")
    assert pool.task_slots_per_node == 3
    assert pool.virtual_machine_configuration.image_reference.offer == "0001-com-ubuntu-server-jammy"
    clients.batch_key.begin_delete_job("old-max-tasks-job", polling_interval=0.1).result()
    clients.batch_key.begin_delete_pool("old-max-tasks", polling_interval=0.1).result()
