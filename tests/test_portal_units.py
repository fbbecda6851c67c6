"""The portal's form reading and its redirect target, without a server."""

from __future__ import annotations

from batchyard.api.portal.pool_form import field_errors, pool_body
from batchyard.api.portal.pools import image_of
from batchyard.api.portal.signin import _next
from batchyard.api.portal.sessions import Sessions
from batchyard.services.errors import Forbidden, InvalidInput

SKUS = [{"nodeAgentSKUId": "batch.node.debian 12",
         "imageReference": {"publisher": "batchyard", "offer": "host-debian", "sku": "12", "version": "latest"}}]


def test_the_add_form_becomes_the_body_the_pools_api_takes():
    custom = pool_body({"pool_id": " p ", "image_type": "custom", "custom_image": "/sub/x/images/i",
                        "image_sku": "0", "vm_size": "standard_a1_v2", "target_dedicated": "2",
                        "target_low_priority": "", "resize_timeout": "20", "start_task": "run",
                        "start_task_wait": "on", "task_slots": "4"}, SKUS)
    assert custom == {"id": "p", "vmSize": "standard_a1_v2", "targetDedicatedNodes": "2", "taskSlotsPerNode": "4",
                      "resizeTimeout": "PT20M", "startTask": {"commandLine": "run", "waitForSuccess": True},
                      "virtualMachineConfiguration": {"nodeAgentSKUId": "batch.node.debian 12",
                                                      "imageReference": {"virtualMachineImageId": "/sub/x/images/i"}}}
    market = pool_body({"pool_id": "m", "image_type": "marketplace", "image_sku": "0", "vm_size": "s"}, SKUS)
    assert market["virtualMachineConfiguration"]["imageReference"]["offer"] == "host-debian"
    # an index that is not one of the choices leaves the service to say what is missing
    assert pool_body({"image_sku": "7"}, SKUS)["virtualMachineConfiguration"] == {
        "nodeAgentSKUId": "", "imageReference": {}}
    for odd in ("²", "9" * 5000):  # a digit to isdigit() that int() refuses (the form's page was a 500)
        assert pool_body({"image_sku": odd, "resize_timeout": odd}, SKUS)["virtualMachineConfiguration"] == {
            "nodeAgentSKUId": "", "imageReference": {}}


def test_the_pool_page_names_a_gallery_image_by_gallery_definition_and_version():
    definition = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/yard/images/tool"

    def pool_with(image_id):
        return {"virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": image_id}}}
    latest = image_of(pool_with(definition), "1.2.0")
    assert latest["os"] == "Custom VM Image"
    assert latest["images"] == [{"id": definition, "name": "yard/tool", "kind": "Shared Image",
                                 "version": "latest (1.2.0)"}]
    exact = image_of(pool_with(definition + "/versions/1.0.0"), "1.0.0")["images"][0]
    assert (exact["name"], exact["version"]) == ("yard/tool", "1.0.0")
    managed = image_of(pool_with("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/base"))
    assert managed["images"][0]["name"] == "base" and "version" not in managed["images"][0]
    # the gallery form field is the version (or, for latest, the definition) as chosen
    shared = pool_body({"image_type": "gallery", "gallery_definition": definition, "gallery_image": definition,
                        "image_sku": "0"}, SKUS)
    assert shared["virtualMachineConfiguration"]["imageReference"] == {"virtualMachineImageId": definition}


def test_service_errors_land_next_to_their_field():
    bad = InvalidInput("InvalidPropertyValue", "The value is invalid.",
                       details=[{"key": "PropertyName", "value": "targetDedicatedNodes"}])
    assert list(field_errors(bad)) == ["target_dedicated"]
    nested = InvalidInput("InvalidPropertyValue", "x", details=[
        {"key": "PropertyName", "value": "virtualMachineConfiguration.imageReference.virtualMachineImageId"}])
    assert list(field_errors(nested)) == ["image"]
    assert list(field_errors(Forbidden("InsufficientPermissions", "no read on the image"))) == ["image"]
    assert list(field_errors(InvalidInput("PoolExists", "The specified pool already exists."))) == [""]


def test_sign_in_returns_only_to_a_portal_page():
    assert _next("/portal/pools") == "/portal/pools"
    for outside in ("https://elsewhere.example/", "//elsewhere.example/portal/", "/portal\\..\\x", None, "/x"):
        assert _next(outside) == "/portal/"


def test_sessions_are_found_by_their_id_only():
    sessions = Sessions()
    session_id, session = sessions.new()
    assert sessions.find(session_id) is session
    assert sessions.find(session_id + "x") is None and sessions.find(None) is None
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("") and not session.csrf_ok(session.csrf[:-1])
    sessions.end(session_id)
    assert sessions.find(session_id) is None


def test_anonymous_sessions_idle_out_sooner_and_are_capped(monkeypatch):
    """A flood of visits to the sign-in page cannot fill memory; signed-in sessions stay."""
    from batchyard.api.portal import sessions as module
    from batchyard.api.portal.sessions import Session
    from batchyard.services.authorization import Caller

    monkeypatch.setattr(module, "MAX_ANONYMOUS", 5)
    sessions = Sessions()
    signed_id, _ = sessions.new(Session(caller=Caller("AAD", "oid", "client")))
    first_id, _ = sessions.new()
    for _ in range(10):
        sessions.new()
    assert sessions.find(first_id) is None  # the oldest anonymous ones made room
    assert sessions.find(signed_id) is not None
    assert sum(s.caller is None for s in sessions._by_digest.values()) == 5
    idle_id, idle = sessions.new()
    idle.seen -= module.ANONYMOUS_IDLE_SECONDS + 1
    assert sessions.find(idle_id) is None
    signed = sessions.find(signed_id)
    signed.seen -= module.ANONYMOUS_IDLE_SECONDS + 1
    assert sessions.find(signed_id) is signed  # a signed-in session idles for IDLE_SECONDS
