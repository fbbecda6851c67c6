"""Azure Compute Gallery through the real clients (azure-mgmt-compute, azure-batch,
azure-mgmt-authorization) against the session's live server: gallery -> definition ->
versions from a managed image and from snapshots -> pools from a version and from the
definition (its latest) whose nodes see the image's files; excludeFromLatest, the
region/replica rule, the beginGetAccess rule, the shared-key refusal, and a definition
that cannot go while it has versions."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import build_flow, pool_settled, run_script, vm_body, wait_for
from test_authorization import BUILT_IN, CONTRIBUTOR, READER, account_id, assign, auth_client, batch_values, \
    clients_as, principal_cli, refused
from test_batch_pools import IMAGE_CHECK, custom_pool

RG = "gallery"
GALLERY = "yard"
DEFINITION = "tool"


def error_of(call, *args, status: int, **kwargs) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as excinfo:
        result = call(*args, **kwargs)
        if hasattr(result, "result"):
            result.result()
    assert excinfo.value.status_code == status, excinfo.value
    return excinfo.value


def version_body(location: str, storage: dict, regions=("westus",), **publishing) -> dict:
    return {"location": location, "properties": {"storageProfile": storage, "publishingProfile": {
        "targetRegions": [{"name": r, "regionalReplicaCount": 2} for r in regions], **publishing}}}


@pytest.fixture(scope="module")
def made(clients):
    """The builder's image and snapshots; a gallery and definition; version 1.0.0 from the
    managed image (replicated to westus and eastus) and 1.1.0 from the snapshots, excluded
    from latest."""
    flow = build_flow(clients, RG)
    c, loc = clients.compute, clients.location
    gallery = c.galleries.begin_create_or_update(RG, GALLERY, {"location": loc, "properties": {
        "description": "tools"}}).result()
    definition = c.gallery_images.begin_create_or_update(RG, GALLERY, DEFINITION, {"location": loc, "properties": {
        "osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
        "identifier": {"publisher": "contoso", "offer": "tool", "sku": "v1"}}}).result()
    from_image = c.gallery_image_versions.begin_create_or_update(RG, GALLERY, DEFINITION, "1.0.0", version_body(
        loc, {"source": {"id": flow["image"].id}}, regions=("westus", "eastus"),
        endOfLifeDate="2099-01-01T00:00:00Z")).result()
    os_snap, data_snap = flow["snapshots"]
    from_snapshots = c.gallery_image_versions.begin_create_or_update(RG, GALLERY, DEFINITION, "1.1.0", version_body(
        loc, {"osDiskImage": {"source": {"id": os_snap.id}},
              "dataDiskImages": [{"lun": 0, "source": {"id": data_snap.id}}]}, excludeFromLatest=True)).result()
    return {"flow": flow, "gallery": gallery, "definition": definition, "from_image": from_image,
            "from_snapshots": from_snapshots}


def test_gallery_resources_read_back_as_azure_shapes_them(clients, made):
    c = clients.compute
    gallery = c.galleries.get(RG, GALLERY)
    assert gallery.properties.identifier.unique_name == f"{clients.subscription}-YARD"
    assert gallery.properties.provisioning_state == "Succeeded"
    assert [g.name for g in c.galleries.list_by_resource_group(RG)] == [GALLERY]
    updated = c.galleries.begin_update(RG, GALLERY, {"properties": {"description": "tools, v2"}}).result()
    assert updated.properties.description == "tools, v2"
    assert error_of(c.galleries.begin_update, RG, "nothing", {"properties": {}}, status=404).error.code == \
        "ResourceNotFound"
    definition = c.gallery_images.get(RG, GALLERY, DEFINITION)
    assert (definition.properties.os_state, definition.properties.identifier.sku) == ("Generalized", "v1")
    versions = list(c.gallery_image_versions.list_by_gallery_image(RG, GALLERY, DEFINITION))
    assert [v.name for v in versions] == ["1.0.0", "1.1.0"]
    plain = c.gallery_image_versions.get(RG, GALLERY, DEFINITION, "1.0.0")
    assert plain.properties.replication_status is None  # only with $expand, as in Azure
    assert plain.properties.storage_profile.source.id == made["flow"]["image"].id
    assert plain.properties.storage_profile.data_disk_images[0].lun == 0
    profile = plain.properties.publishing_profile
    assert profile.end_of_life_date.year == 2099 and profile.published_date is not None
    assert [(t.name, t.regional_replica_count) for t in profile.target_regions] == [("westus", 2), ("eastus", 2)]
    expanded = c.gallery_image_versions.get(RG, GALLERY, DEFINITION, "1.0.0", expand="ReplicationStatus")
    status = expanded.properties.replication_status
    assert status.aggregated_state == "Completed"
    assert [(s.region, s.state, s.progress) for s in status.summary] == [("westus", "Completed", 100),
                                                                          ("eastus", "Completed", 100)]
    snaps = made["from_snapshots"].properties
    assert snaps.publishing_profile.exclude_from_latest is True and snaps.provisioning_state == "Succeeded"
    assert snaps.storage_profile.os_disk_image.source.id == made["flow"]["snapshots"][0].id

    # Azure's refusals, with its words
    error = error_of(c.gallery_images.begin_create_or_update, RG, GALLERY, "same", {
        "location": clients.location, "properties": {"osType": "Linux", "osState": "Generalized",
                                                     "identifier": {"publisher": "contoso", "offer": "tool",
                                                                    "sku": "v1"}}}, status=409)
    assert "already exists. Choose a different publisher, offer, sku combination." in error.message
    error = error_of(c.gallery_images.begin_create_or_update, RG, GALLERY, DEFINITION, {
        "location": clients.location, "properties": {"osType": "Linux", "osState": "Specialized",
                                                     "identifier": {"publisher": "contoso", "offer": "tool",
                                                                    "sku": "v1"}}}, status=409)
    assert "Changing property 'galleryImage.properties.osState' is not allowed." in error.message
    image_source = {"source": {"id": made["flow"]["image"].id}}
    error = error_of(c.gallery_image_versions.begin_create_or_update, RG, GALLERY, DEFINITION, "2",
                     version_body(clients.location, image_source), status=400)
    assert error.error.code == "InvalidParameter"
    error = error_of(c.gallery_image_versions.begin_create_or_update, RG, GALLERY, DEFINITION, "3.0.0",
                     version_body(clients.location, image_source, regions=("eastus",)), status=400)
    assert "must contain the location of image version 'westus'" in error.message
    again = c.gallery_image_versions.begin_create_or_update(RG, GALLERY, DEFINITION, "1.0.0", version_body(
        clients.location, image_source, regions=("westus", "eastus"))).result()  # the same PUT again
    assert again.properties.storage_profile.source.id == made["flow"]["image"].id
    error = error_of(c.gallery_image_versions.begin_create_or_update, RG, GALLERY, DEFINITION, "1.1.0",
                     version_body(clients.location, image_source), status=409)
    assert "storageProfile.osDiskImage.source.id' is not allowed" in error.message
    error = error_of(c.gallery_image_versions.begin_create_or_update, RG, GALLERY, "nothing", "1.0.0",
                     version_body(clients.location, image_source), status=404)
    assert error.error.code == "ParentResourceNotFound"


def test_a_disk_from_a_gallery_version_alone(clients, made):
    """creationData.galleryImageReference with no imageReference: the version's OS disk."""
    disk = clients.compute.disks.begin_create_or_update(RG, "from-gallery", {
        "location": clients.location, "properties": {"creationData": {
            "createOption": "FromImage", "galleryImageReference": {"id": made["from_image"].id}}}}).result()
    assert disk.provisioning_state == "Succeeded" and disk.os_type == "Linux"
    clients.compute.disks.begin_delete(RG, "from-gallery").result()


def test_a_definition_with_versions_cannot_be_deleted(clients, made):
    c = clients.compute
    c.gallery_images.begin_create_or_update(RG, GALLERY, "scratch", {"location": clients.location, "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "contoso", "offer": "scratch", "sku": "v1"}}}).result()
    c.gallery_image_versions.begin_create_or_update(RG, GALLERY, "scratch", "0.0.1", version_body(
        clients.location, {"source": {"id": made["flow"]["image"].id}})).result()
    for call, args in ((c.gallery_images.begin_delete, (RG, GALLERY, "scratch")),
                       (c.galleries.begin_delete, (RG, GALLERY))):
        error = error_of(call, *args, status=409)
        assert (error.error.code, error.error.message) == ("CannotDeleteResource", "Can not delete resource before "
                                                                                   "nested resources are deleted.")
    c.gallery_image_versions.begin_delete(RG, GALLERY, "scratch", "0.0.1").result()
    c.gallery_images.begin_delete(RG, GALLERY, "scratch").result()
    assert [d.name for d in c.gallery_images.list_by_gallery(RG, GALLERY)] == [DEFINITION]


def test_pools_from_a_version_and_from_the_definition_run_the_image(clients, made):
    batch = clients.batch
    version_id = made["from_snapshots"].id
    check = {"commandLine": f"/bin/sh -c '{IMAGE_CHECK}'", "waitForSuccess": True}
    batch.create_pool(custom_pool("gallery-version", version_id, startTask=check))
    batch.create_pool(custom_pool("gallery-latest", made["definition"].id, startTask=check))
    for pool_id, named, exact in (("gallery-version", version_id, "1.1.0"),
                                  ("gallery-latest", made["definition"].id, "1.0.0")):  # 1.1.0: excluded
        pool, nodes = pool_settled(batch, pool_id)
        assert pool.current_dedicated_nodes == 1 and not pool.resize_errors
        reference = nodes[0].virtual_machine_info.image_reference
        assert (reference.virtual_machine_image_id, reference.exact_version) == (named, exact)
        assert nodes[0].start_task_info.exit_code == 0  # the image's program and data disk are there

    # once 1.1.0 counts for latest, the definition's pool grows from it
    clients.compute.gallery_image_versions.begin_update(RG, GALLERY, DEFINITION, "1.1.0", {"properties": {
        "publishingProfile": {"excludeFromLatest": False}}}).result()
    batch.begin_resize_pool("gallery-latest", {"targetDedicatedNodes": 2}, polling_interval=0.1).result()
    _, nodes = pool_settled(batch, "gallery-latest")
    assert sorted(n.virtual_machine_info.image_reference.exact_version for n in nodes) == ["1.0.0", "1.1.0"]
    assert all(n.start_task_info.exit_code == 0 for n in nodes)
    for pool_id in ("gallery-version", "gallery-latest"):
        batch.begin_delete_pool(pool_id, polling_interval=0.1).result()

    # the same resolver makes a VM from a version
    vm = clients.compute.virtual_machines.begin_create_or_update(RG, "from-gallery", vm_body(
        clients.location, {"id": version_id})).result()
    assert vm.storage_profile.image_reference.exact_version == "1.1.0"
    assert run_script(clients.compute, RG, "from-gallery", "/opt/tool/run from-gallery").strip() == \
        "tool-v1 from-gallery"


def test_shared_key_is_refused_for_gallery_pools(clients, made):
    error = refused(clients.batch_key.create_pool, custom_pool("gallery-key", made["from_image"].id))
    assert error.error.code == "InsufficientPermissions"
    assert error.error.message.startswith("The specified type of authentication SharedKey is not allowed when "
                                                "external resources of type Compute are linked.")


def test_a_version_serves_a_region_only_with_a_replica_there(clients, made):
    c, batch = clients.compute, clients.batch
    base = c.virtual_machine_images.list_publishers("eastus")[0].name
    offer = c.virtual_machine_images.list_offers("eastus", base)[0].name
    sku = c.virtual_machine_images.list_skus("eastus", base, offer)[0].name
    platform = c.virtual_machine_images.get("eastus", base, offer, sku, "1.0.0")
    disk = c.disks.begin_create_or_update(RG, "east-os", {"location": "eastus", "properties": {
        "creationData": {"createOption": "FromImage", "imageReference": {"id": platform.id}}}}).result()
    snap = c.snapshots.begin_create_or_update(RG, "east-snap", {"location": "eastus", "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": disk.id}}}).result()
    east = c.gallery_image_versions.begin_create_or_update(RG, GALLERY, DEFINITION, "1.2.0", version_body(
        "eastus", {"osDiskImage": {"source": {"id": snap.id}}}, regions=("eastus",))).result()

    error = refused(batch.create_pool, custom_pool("east-only", east.id, dedicated=0), status=400)
    assert "has no replica in the Batch account's region 'westus'" in batch_values(error)["Reason"]
    # the definition's latest for westus is still 1.1.0: 1.2.0 is not replicated here
    batch.create_pool(custom_pool("latest-west", made["definition"].id))
    _, nodes = pool_settled(batch, "latest-west")
    assert nodes[0].virtual_machine_info.image_reference.exact_version == "1.1.0"

    c.gallery_image_versions.begin_update(RG, GALLERY, DEFINITION, "1.2.0", {"properties": {"publishingProfile": {
        "targetRegions": [{"name": "eastus"}, {"name": "westus", "regionalReplicaCount": 1}]}}}).result()
    batch.create_pool(custom_pool("east-and-west", east.id, dedicated=0))
    # steady before the resize below (a resize while one runs is refused: PoolBeingResized)
    wait_for(lambda: batch.get_pool("east-and-west").allocation_state == "steady", what="the new pool to settle")
    # taking westus away again: the pool may not grow
    c.gallery_image_versions.begin_update(RG, GALLERY, DEFINITION, "1.2.0", {"properties": {"publishingProfile": {
        "targetRegions": [{"name": "eastus"}]}}}).result()
    batch.begin_resize_pool("east-and-west", {"targetDedicatedNodes": 1}, polling_interval=0.1).result()
    pool = wait_for(lambda: (p := batch.get_pool("east-and-west")).allocation_state == "steady" and p,
                    what="the resize to end")
    assert pool.current_dedicated_nodes == 0 and pool.resize_errors[0].code == "AllocationFailed"
    for pool_id in ("latest-west", "east-and-west"):
        batch.begin_delete_pool(pool_id, polling_interval=0.1).result()
    c.gallery_image_versions.begin_delete(RG, GALLERY, DEFINITION, "1.2.0").result()


def test_a_gallery_pool_needs_begin_get_access_not_reader(server, clients, made):
    authz = auth_client(clients)
    made_principal = principal_cli(server, "create", "--name", "gallery-pooler")
    oid = made_principal["objectId"]
    assign(authz, account_id(), BUILT_IN["Azure Batch Account Contributor"], oid)
    assign(authz, f"/subscriptions/{clients.subscription}/resourceGroups/{RG}", READER, oid)
    pooler = clients_as(server.info, made_principal)
    version_id = made["from_image"].id
    # Reader reads the image: enough for the managed image, not for the gallery version
    pooler.batch.create_pool(custom_pool("by-reader-managed", made["flow"]["image"].id, dedicated=0))
    error = refused(pooler.batch.create_pool, custom_pool("by-reader", version_id, dedicated=0))
    assert error.error.code == "InsufficientPermissions"
    assert batch_values(error)["Reason"] == ("The user identity used for this operation does not have the required "
                                             "privelege Microsoft.Compute/disks/beginGetAccess/action on the "
                                             f"specified resource {version_id}")
    assign(authz, made["gallery"].id, CONTRIBUTOR, oid)
    pooler.batch.create_pool(custom_pool("by-contributor", version_id, dedicated=0))
    for pool_id in ("by-reader-managed", "by-contributor"):
        clients.batch.begin_delete_pool(pool_id, polling_interval=0.1).result()


def test_only_generalized_gallery_images_make_pools(clients, made):
    c, batch = clients.compute, clients.batch
    c.gallery_images.begin_create_or_update(RG, GALLERY, "special", {"location": clients.location, "properties": {
        "osType": "Linux", "osState": "Specialized",
        "identifier": {"publisher": "contoso", "offer": "tool", "sku": "special"}}}).result()
    special = c.gallery_image_versions.begin_create_or_update(RG, GALLERY, "special", "1.0.0", version_body(
        clients.location, {"osDiskImage": {"source": {"id": made["flow"]["snapshots"][0].id}}})).result()
    error = refused(batch.create_pool, custom_pool("special", special.id, dedicated=0), status=400)
    assert "Batch pools need a generalized image" in batch_values(error)["Reason"]
    # a managed image whose osState differs from the definition's cannot be its version
    error = error_of(c.gallery_image_versions.begin_create_or_update, RG, GALLERY, "special", "2.0.0", version_body(
        clients.location, {"source": {"id": made["flow"]["image"].id}}), status=409)
    assert "since the OS State in the parent gallery image (Specialized) is not Generalized" in error.message
    error = refused(batch.create_pool, custom_pool("a-gallery", made["gallery"].id, dedicated=0), status=400)
    assert "gallery image definition or version" in batch_values(error)["Reason"]
    c.gallery_image_versions.begin_delete(RG, GALLERY, "special", "1.0.0").result()
    c.gallery_images.begin_delete(RG, GALLERY, "special").result()
