"""The real Azure CLI, unchanged, against a live server: told nothing but the resource
manager's address (`az cloud register --endpoint-resource-manager`), no instance
discovery, and a service principal login. Everything else it finds through the server's
cloud metadata and ARM discovery, as it does in Azure: the custom-image flow from a VM to
a Batch pool, then tasks with numeric options and their output.

The CLI comes from tests/clients/install.sh (its own virtual environment under .tools/)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Clients, Server, base_image_reference, pool_settled, tool, wait_for

RG = "azcli"


class Az:
    """`az` as a subprocess with its own configuration directory; JSON output parsed."""

    def __init__(self, executable: Path, config_dir: Path, ca_bundle: str):
        self.executable = executable
        self.env = {**os.environ, "AZURE_CONFIG_DIR": str(config_dir), "REQUESTS_CA_BUNDLE": ca_bundle,
                    # nothing leaves this machine: no telemetry, no survey prompts
                    "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_SURVEY_MESSAGE": "false",
                    "AZURE_CORE_NO_COLOR": "true"}

    def __call__(self, *args: str):
        done = subprocess.run([str(self.executable), *args, "--only-show-errors", "-o", "json"], env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"az {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("azcli") / "data") as srv:
        yield srv.info


@pytest.fixture(scope="module")
def az(live, tmp_path_factory) -> Az:
    run = Az(tool("az", "bin/az"), tmp_path_factory.mktemp("azconfig"), live["ca_bundle"])
    run("cloud", "register", "-n", "batchyard", "--endpoint-resource-manager", live["arm_endpoint"])
    run("cloud", "set", "-n", "batchyard")
    run("config", "set", "core.instance_discovery=false")
    # --password=: a generated secret may begin with '-', which az would read as an option
    accounts = run("login", "--service-principal", "-u", live["client_id"], f"--password={live['client_secret']}",
                   "--tenant", live["tenant_id"])
    assert [a["id"] for a in accounts] == [live["subscription_id"]]
    return run


def test_custom_image_pool_and_tasks(az, live, tmp_path):
    sdk = Clients(live)  # reads state the CLI has no quick command for (waits)
    az("group", "create", "-n", RG, "-l", live["location"])
    vm = az("resource", "create", "-g", RG, "-n", "builder", "--resource-type", "Microsoft.Compute/virtualMachines",
            "--is-full-object", "--properties", json.dumps({"location": live["location"], "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                "storageProfile": {"imageReference": base_image_reference(sdk.compute, live["location"])}}}))
    ran = az("vm", "run-command", "invoke", "-g", RG, "-n", "builder", "--command-id", "RunShellScript",
             "--scripts", "mkdir -p /opt/app && printf '#!/bin/sh\\necho from-the-image \"$@\"\\n' > /opt/app/run "
                          "&& chmod +x /opt/app/run && /opt/app/run built")
    assert "from-the-image built" in ran["value"][0]["message"]
    snapshot = az("snapshot", "create", "-g", RG, "-n", "os-snap",
                  "--source", vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"])
    image = az("image", "create", "-g", RG, "-n", "app-image", "--source", snapshot["id"], "--os-type", "Linux")
    assert image["provisioningState"] == "Succeeded"

    az("batch", "account", "login", "-g", live["resource_group"], "-n", live["batch_account"])  # AAD, no key
    node_agent = next(i.node_agent_sku_id for i in sdk.batch.list_supported_images())
    az("batch", "pool", "create", "--id", "cli-pool", "--image", image["id"], "--node-agent-sku-id", node_agent,
       "--vm-size", "Standard_D2s_v3", "--target-dedicated-nodes", "1")
    pool, nodes = pool_settled(sdk.batch, "cli-pool")
    assert pool.current_dedicated_nodes == 1 and [n.state for n in nodes] == ["idle"]

    az("batch", "job", "create", "--id", "cli-job", "--pool-id", "cli-pool", "--priority", "10",
             "--max-parallel-tasks", "2", "--job-max-task-retry-count", "2", "--uses-task-dependencies")
    az("batch", "task", "create", "--job-id", "cli-job", "--task-id", "options",
       "--command-line", "/bin/sh -c '/opt/app/run options > out.txt'", "--max-task-retry-count", "3",
       "--max-wall-clock-time", "PT10M", "--retention-time", "PT1H")
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps([{"id": "from-file", "commandLine": "/bin/sh -c '/opt/app/run file'",
                                       "dependsOn": {"taskIds": ["options"]}, "requiredSlots": 1,
                                       "constraints": {"maxTaskRetryCount": 1, "maxWallClockTime": "PT5M"}}]))
    az("batch", "task", "create", "--job-id", "cli-job", "--json-file", str(tasks_file))
    done = wait_for(lambda: (lambda ts: ts if all(t.state == "completed" for t in ts) else None)(
        list(sdk.batch.list_tasks("cli-job"))), what="tasks to complete")
    assert {t.id: t.execution_info.exit_code for t in done} == {"options": 0, "from-file": 0}
    options = sdk.batch.get_task("cli-job", "options")
    assert options.constraints.max_task_retry_count == 3 and options.constraints.max_wall_clock_time.total_seconds() == 600
    job = sdk.batch.get_job("cli-job")
    assert (job.priority, job.max_parallel_tasks, job.constraints.max_task_retry_count) == (10, 2, 2)

    target = tmp_path / "out.txt"
    az("batch", "task", "file", "download", "--job-id", "cli-job", "--task-id", "options", "--file-path",
       "wd/out.txt", "--destination", str(target))
    assert target.read_text() == "from-the-image options\n"


def test_discovery_commands(az, live):
    regions = {loc["name"]: loc for loc in az("account", "list-locations")}
    assert regions[live["location"]]["displayName"] == "West US"
    sizes = {s["name"]: s for s in az("vm", "list-sizes", "-l", live["location"])}
    assert sizes["Standard_D2s_v3"]["numberOfCores"] == 2 and sizes["Standard_D2s_v3"]["memoryInMB"] == 8192
    assert az("batch", "location", "quotas", "show", "-l", live["location"])["accountQuota"] >= 1
