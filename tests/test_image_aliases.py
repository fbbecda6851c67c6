"""Marketplace image aliases (`image-aliases.toml` in the data directory): Azure's references
appear in /supportedimages and the VM image catalog, VMs and pools made from them get the
target's content (the host's OS or a managed image), and edits take effect without a
restart."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from batchyard.services.compute.image_aliases import parse_alias
from conftest import Clients, Server, build_flow, pool_settled, run_script, vm_body
from test_batch_pools import IMAGE_CHECK, error_values
from test_batch_tasks import finished, read

RG = "aliases"
FOCAL = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-focal", "sku": "20_04-lts", "version": "latest"}
APP_ALIAS = '''
[[alias]]
publisher = "Contoso"
offer = "tool-offer"
sku = "v1"
version = "2.0.0"
node_agent_sku_id = "batch.node.ubuntu 22.04"
target = "{image_id}"
'''


@pytest.fixture(scope="module")
def aliased(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("aliases") / "data") as srv:
        clients = Clients(srv.info)
        image = build_flow(clients, RG)["image"]
        yield srv, clients, image


def table(server) -> str:
    return (server.data_dir / "image-aliases.toml").read_text()


def write_table(server, text: str) -> None:
    (server.data_dir / "image-aliases.toml").write_text(text)


def supported(clients) -> dict:
    return {(i.image_reference.publisher, i.image_reference.offer, i.image_reference.sku): i
            for i in clients.batch_key.list_supported_images()}


def host_os_id() -> str:
    release = dict(line.split("=", 1) for line in open("/etc/os-release").read().splitlines() if "=" in line)
    return release["ID"].strip('"')


def output_on_new_pool(batch, pool_id: str, reference: dict, agent: str, command: str) -> str:
    """stdout of `command` run as a task on a new one-node pool from `reference`."""
    batch.create_pool({"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": 1,
                       "virtualMachineConfiguration": {"imageReference": reference, "nodeAgentSKUId": agent}})
    pool_settled(batch, pool_id)
    batch.create_job({"id": f"{pool_id}-job", "poolInfo": {"poolId": pool_id}})
    batch.create_task(f"{pool_id}-job", {"id": "t", "commandLine": f"/bin/sh -c '{command}'"})
    finished(batch, f"{pool_id}-job", "t")
    return read(batch, f"{pool_id}-job", "t")


def test_default_table_is_written_and_listed(aliased):
    server, clients, _ = aliased
    assert '[[alias]]\npublisher = "canonical"\noffer = "0001-com-ubuntu-server-focal"' in table(server)
    images = supported(clients)
    assert images[("canonical", "0001-com-ubuntu-server-focal", "20_04-lts")].node_agent_sku_id == \
        "batch.node.ubuntu 20.04"
    assert images[("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts")].node_agent_sku_id == \
        "batch.node.ubuntu 22.04"
    assert images[("canonical", "ubuntu-24_04-lts", "server")].node_agent_sku_id == "batch.node.ubuntu 24.04"
    container = images[("microsoft-azure-batch", "ubuntu-server-container", "20-04-lts")]
    assert container.node_agent_sku_id == "batch.node.ubuntu 20.04" and container.capabilities == ["DockerCompatible"]
    assert images[("debian", "debian-12", "12")].node_agent_sku_id == "batch.node.debian 12"
    catalog = clients.compute.virtual_machine_images
    assert {"canonical", "debian", "microsoft-azure-batch", "batchyard"} <= \
        {p.name for p in catalog.list_publishers(clients.location)}
    assert {"0001-com-ubuntu-server-focal", "0001-com-ubuntu-server-jammy", "ubuntu-24_04-lts"} <= \
        {o.name for o in catalog.list_offers(clients.location, "canonical")}
    assert [s.name for s in catalog.list_skus(clients.location, "canonical", "0001-com-ubuntu-server-focal")] == \
        ["20_04-lts"]
    versions = catalog.list(clients.location, "canonical", "0001-com-ubuntu-server-focal", "20_04-lts")
    assert len(versions) == 1
    version = catalog.get(clients.location, "canonical", "0001-com-ubuntu-server-focal", "20_04-lts",
                          versions[0].name)
    assert version.os_disk_image.operating_system == "Linux"


def test_vm_and_pool_from_the_ubuntu_alias_run_the_host_os(aliased):
    _, clients, _ = aliased
    vm = clients.compute.virtual_machines.begin_create_or_update(RG, "focal", vm_body(clients.location, FOCAL)).result()
    assert vm.storage_profile.image_reference.offer == "0001-com-ubuntu-server-focal"
    assert vm.storage_profile.image_reference.exact_version
    assert run_script(clients.compute, RG, "focal", ". /etc/os-release && echo $ID").strip() == host_os_id()
    batch = clients.batch_key
    assert output_on_new_pool(batch, "focal", FOCAL, "batch.node.ubuntu 20.04",
                              ". /etc/os-release && echo $ID").strip() == host_os_id()
    with pytest.raises(HttpResponseError) as exc:
        batch.create_pool({"id": "wrong-agent", "vmSize": "standard_a1_v2", "virtualMachineConfiguration": {
            "imageReference": FOCAL, "nodeAgentSKUId": "batch.node.debian 12"}})
    assert "batch.node.ubuntu 20.04" in error_values(exc)["Reason"]


def test_alias_of_a_managed_image_gives_its_content_and_edits_apply_at_once(aliased):
    server, clients, image = aliased
    reference = {"publisher": "contoso", "offer": "tool-offer", "sku": "v1", "version": "latest"}
    assert ("Contoso", "tool-offer", "v1") not in supported(clients)
    write_table(server, table(server) + APP_ALIAS.format(image_id=image.id))
    app = supported(clients)[("Contoso", "tool-offer", "v1")]
    assert app.node_agent_sku_id == "batch.node.ubuntu 22.04" and app.image_reference.version == "2.0.0"
    catalog = clients.compute.virtual_machine_images
    assert [v.name for v in catalog.list(clients.location, "contoso", "tool-offer", "v1")] == ["2.0.0"]

    clients.compute.virtual_machines.begin_create_or_update(RG, "from-alias", vm_body(
        clients.location, {**reference, "version": "2.0.0"})).result()
    assert run_script(clients.compute, RG, "from-alias", "/opt/tool/run via-alias").strip() == "tool-v1 via-alias"
    platform_id = catalog.get(clients.location, "contoso", "tool-offer", "v1", "2.0.0").id
    disk = clients.compute.disks.begin_create_or_update(RG, "alias-disk", {"location": clients.location, "properties": {
        "creationData": {"createOption": "FromImage", "imageReference": {"id": platform_id}}}}).result()
    clients.compute.virtual_machines.begin_create_or_update(RG, "alias-disk-vm", {
        "location": clients.location, "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v3"}, "storageProfile": {
            "osDisk": {"createOption": "Attach", "osType": "Linux", "managedDisk": {"id": disk.id}}}}}).result()
    assert run_script(clients.compute, RG, "alias-disk-vm", "/opt/tool/run from-disk").strip() == "tool-v1 from-disk"

    # A shared key may use it, as any marketplace image; the nodes carry the image's disks.
    assert output_on_new_pool(clients.batch_key, "app", reference, "batch.node.ubuntu 22.04",
                              f"{IMAGE_CHECK} && echo checked") == "tool-v1 on-node\nchecked\n"

    # A table that does not parse leaves the one in force; a broken entry is skipped alone.
    write_table(server, "[[alias]\nnot toml")
    assert ("Contoso", "tool-offer", "v1") in supported(clients)
    write_table(server, APP_ALIAS.format(image_id=image.id) + '\n[[alias]]\npublisher = "x"\n')
    images = supported(clients)
    assert ("Contoso", "tool-offer", "v1") in images
    assert not any(publisher == "canonical" for publisher, _, _ in images)
    with pytest.raises(HttpResponseError) as exc:
        clients.compute.virtual_machines.begin_create_or_update(RG, "gone", vm_body(clients.location, FOCAL))
    assert exc.value.error.code == "VMMarketplaceInvalidInput"
    assert "image-aliases.toml" in exc.value.error.message


@pytest.mark.parametrize("entry, reason", [
    ({"offer": "o", "sku": "s", "node_agent_sku_id": "a", "target": "host"}, "'publisher'"),
    ({"publisher": "p", "offer": "o", "sku": "s", "node_agent_sku_id": "a", "target": "ubuntu"}, "neither"),
    ({"publisher": "p", "offer": "o", "sku": "s", "node_agent_sku_id": "a",
      "target": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d"}, "not a managed image"),
    ({"publisher": "p", "offer": "o", "sku": "s", "node_agent_sku_id": "a", "target": "host", "version": "latest"},
     "'version'"),
    ({"publisher": "p", "offer": "o", "sku": "s", "node_agent_sku_id": "a", "target": "host", "sizes": 1},
     "unknown keys: sizes"),
])
def test_broken_alias_entries_are_refused_with_the_reason(entry, reason):
    with pytest.raises(ValueError) as exc:
        parse_alias(entry)
    assert reason in str(exc.value)
