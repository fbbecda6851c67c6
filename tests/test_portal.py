"""The web portal in real headless Chromium, following the guide: sign in, Pools → Add →
Custom Image (Linux/Windows) → the image → the rest → the pool's page (Operating System,
Properties, the heatmap reaching idle), a resize from the page, and the AllocationFailed
banner once the image is gone. Then what the portal refuses, and a 500-node pool's page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests

from batchyard.api.portal import PAGES
from conftest import base_image_reference, image_of_vm, run_script, vm_body, wait_for
from portal_browser import chromium, csrf_of, output_dir, signed_in_session
from test_authorization import BUILT_IN, account_id, assign, auth_client

RG = "portal-rg"
GALLERY = "portalgallery"


@pytest.fixture(scope="module")
def image(clients):
    c = clients.compute
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    builder = c.virtual_machines.begin_create_or_update(RG, "portal-builder", vm_body(
        clients.location, base_image_reference(c, clients.location))).result()
    run_script(c, RG, "portal-builder",
               "mkdir -p /opt/app && echo 'echo hello' > /opt/app/run && chmod +x /opt/app/run")
    return image_of_vm(c, clients.location, RG, builder, "portal-image")


@pytest.fixture(scope="module")
def browser(server):
    with chromium(server.port) as b:
        yield b


def _page(browser, viewport=(1280, 800)):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": viewport[0], "height": viewport[1]})
    return context.new_page()


def _sign_in(page, info):
    page.goto(info["portal_url"])
    assert "/portal/signin" in page.url
    page.get_by_label("Client ID").fill(info["client_id"])
    page.get_by_label("Client secret").fill(info["client_secret"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/accounts")


def _node_states(page, expected: str, timeout: float = 90):
    # null-safe: the predicate may run while a form's answer is loading
    page.wait_for_function("want => document.getElementById('pool-page')?.dataset.nodeStates === want",
                           arg=expected, timeout=timeout * 1000)


@pytest.fixture(scope="module")
def gallery(clients, image):
    """A gallery definition (Linux) with versions 1.0.0 and 1.1.0 of the portal's image, and
    a Windows definition with none."""
    c, loc = clients.compute, clients.location
    c.galleries.begin_create_or_update(RG, GALLERY, {"location": loc}).result()
    definition = c.gallery_images.begin_create_or_update(RG, GALLERY, "tool", {"location": loc, "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "contoso", "offer": "tool", "sku": "v1"}}}).result()
    versions = [c.gallery_image_versions.begin_create_or_update(RG, GALLERY, "tool", name, {
        "location": loc, "properties": {"storageProfile": {"source": {"id": image.id}}, "publishingProfile": {
            "targetRegions": [{"name": loc, "regionalReplicaCount": 1}]}}}).result() for name in ("1.0.0", "1.1.0")]
    c.gallery_images.begin_create_or_update(RG, GALLERY, "winimage", {"location": loc, "properties": {
        "osType": "Windows", "osState": "Generalized",
        "identifier": {"publisher": "contoso", "offer": "win", "sku": "v1"}}}).result()
    return definition, versions


def test_a_shared_image_pool_from_the_gallery_dropdowns(server, clients, gallery, browser):
    definition, versions = gallery
    page = _page(browser)
    _sign_in(page, server.info)
    page.goto(server.info["portal_url"] + "accounts/devbatch/pools-add")
    page.get_by_label("Pool ID").fill("gallery-pool")
    page.get_by_label("Shared Image").check()
    version = page.get_by_label("Image version")
    sku_choices = "s => Array.from(s.options).filter(o => !o.disabled).map(o => o.dataset.os)"
    page.get_by_label("Image definition").select_option(label=f"{GALLERY}/winimage")
    assert "linux" not in page.get_by_label("Publisher/Offer/Sku").evaluate(sku_choices)
    page.get_by_label("Image definition").select_option(label=f"{GALLERY}/tool")
    assert version.input_value() == definition.id  # "latest" (the definition) unless a version is chosen
    shown = version.evaluate("s => Array.from(s.querySelectorAll('optgroup:not([disabled]) option'), o => o.text)")
    assert shown == ["latest", "1.1.0", "1.0.0"]
    # Publisher/Offer/Sku: only the node agent SKUs of the definition's OS
    offered = page.get_by_label("Publisher/Offer/Sku").evaluate(sku_choices)
    assert offered and set(offered) == {"linux"}
    page.get_by_label("Node size").fill("standard_a1_v2")
    page.get_by_label("Target dedicated nodes").fill("1")
    page.screenshot(path=str(output_dir() / "add-gallery-pool.png"), full_page=True)
    page.get_by_role("button", name="OK").click()

    page.wait_for_url("**/pools/gallery-pool")
    assert page.locator("#os").inner_text() == "Custom VM Image"
    properties = page.locator("#properties").inner_text()
    assert f"{GALLERY}/tool" in properties and definition.id in properties
    assert page.locator("#image-version").inner_text() == "latest (1.1.0)"
    _node_states(page, "idle=1")
    page.screenshot(path=str(output_dir() / "gallery-pool.png"), full_page=True)
    reference = clients.batch.get_pool("gallery-pool").virtual_machine_configuration.image_reference
    assert reference.virtual_machine_image_id == definition.id

    # the Images page: the pool uses the definition's latest, which is 1.1.0; 1.0.0 has no pool
    page.get_by_role("link", name="Images").click()
    # the session's server is shared: other modules' galleries may be listed too
    rows = [r for r in page.locator("#gallery-images tbody tr").all_inner_texts() if r.startswith(f"{GALLERY}/")]
    assert [r.split("\t")[:2] for r in rows] == [
        [f"{GALLERY}/tool", "latest"], [f"{GALLERY}/tool", "1.1.0"], [f"{GALLERY}/tool", "1.0.0"],
        [f"{GALLERY}/winimage", "latest"]]
    assert "devbatch/gallery-pool" in rows[0] and "devbatch/gallery-pool" in rows[1]
    assert rows[2].rstrip().endswith("none") and rows[3].rstrip().endswith("none")
    page.screenshot(path=str(output_dir() / "images.png"), full_page=True)
    page.context.close()
    clients.batch.begin_delete_pool("gallery-pool")  # not waited for: nothing after it needs it gone


def test_the_guide_custom_image_pool_in_the_browser(server, clients, image, browser):
    info = server.info
    page = _page(browser)
    _sign_in(page, info)
    page.get_by_role("link", name=info["batch_account"]).click()
    page.get_by_role("link", name="Pools", exact=True).first.click()
    page.get_by_role("link", name="Add", exact=True).click()

    # the service's own validation, shown next to its field
    page.get_by_label("Pool ID").fill("no spaces allowed")
    page.get_by_label("Custom Image (Linux/Windows)").check()
    page.get_by_label("Custom VM image").select_option(label="portal-image")
    page.get_by_role("button", name="OK").click()
    assert "Pool ID" not in page.locator("#pool_id-error").inner_text()
    assert page.locator("#pool_id-error").is_visible()

    page.get_by_label("Pool ID").fill("guide-pool")
    assert page.get_by_label("Custom Image (Linux/Windows)").is_checked()  # the form kept what was typed
    page.get_by_label("Custom VM image").select_option(label="portal-image")
    page.get_by_label("Publisher/Offer/Sku").select_option(index=0)
    page.get_by_label("Node size").fill("standard_a1_v2")
    page.get_by_label("Target dedicated nodes").fill("2")
    page.get_by_label("Low-priority nodes").fill("1")
    page.get_by_text("Optional settings").click()
    page.get_by_label("Start task command line").fill("/bin/sh -c /opt/app/run")
    page.screenshot(path=str(output_dir() / "add-pool.png"), full_page=True)
    page.get_by_role("button", name="OK").click()

    page.wait_for_url("**/pools/guide-pool")
    pool_url = page.url
    assert page.locator("#os").inner_text() == "Custom VM Image"
    properties = page.locator("#properties").inner_text()
    assert "portal-image" in properties and image.id in properties
    _node_states(page, "idle=3")
    assert page.locator("#allocation-state").inner_text() == "steady"
    pool = clients.batch.get_pool("guide-pool")
    assert pool.virtual_machine_configuration.image_reference.virtual_machine_image_id == image.id
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (2, 1)
    assert pool.start_task.command_line == "/bin/sh -c /opt/app/run"

    # a node's page: its state, its start task and that task's output
    page.locator("#heatmap").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_url("**/pools/guide-pool/nodes/**")
    assert page.locator("#node-state").inner_text() == "idle"
    assert page.locator("#start-task-state").inner_text() == "completed"
    assert "hello" in page.locator("pre.output").first.inner_text()
    page.get_by_role("link", name="startup/stdout.txt").click()
    assert page.locator("#file-text").inner_text().strip() == "hello"
    page.goto(pool_url)
    _node_states(page, "idle=3")
    page.locator("#heatmap").click(position={"x": 4, "y": 4})  # the first tile
    page.wait_for_url("**/pools/guide-pool/nodes/**")
    assert page.locator("#node-state").inner_text() == "idle"
    page.goto(pool_url)

    page.get_by_label("Target dedicated nodes").fill("3")
    page.get_by_role("button", name="Resize", exact=True).click()
    _node_states(page, "idle=4")

    # a job on the pool: its task counts, its task's stdout and stderr
    clients.batch.create_job({"id": "portal-job", "poolInfo": {"poolId": "guide-pool"}})
    clients.batch.create_task("portal-job", {"id": "hello", "commandLine": "/bin/sh -c 'echo to-out; echo to-err >&2'"})
    wait_for(lambda: clients.batch.get_task("portal-job", "hello").state == "completed", what="the task")
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_role("link", name="portal-job").click()
    assert page.locator("#task-counts .succeeded dd").inner_text() == "1"
    # the page follows the job without being reloaded
    clients.batch.create_task("portal-job", {"id": "later", "commandLine": "true"})
    page.get_by_role("link", name="later").wait_for(timeout=30_000)
    page.locator("#task-counts .succeeded dd").get_by_text("2").wait_for(timeout=30_000)
    page.get_by_role("link", name="hello").click()
    assert page.locator("#task-state").inner_text() == "completed"
    assert page.locator("#stdout").inner_text().strip() == "to-out"
    assert page.locator("#stderr").inner_text().strip() == "to-err"
    # what uses what: the pool uses the image, the image was made from the snapshot
    page.get_by_role("link", name="Images").click()
    assert "devbatch/guide-pool" in page.get_by_role("row", name=re.compile("portal-image")).inner_text()
    page.get_by_role("link", name="Snapshots").click()
    assert "portal-image" in page.get_by_role("row", name=re.compile("portal-image-os")).inner_text()
    page.get_by_role("link", name="Virtual machines").click()
    assert page.get_by_role("row", name=re.compile("portal-builder")).is_visible()
    page.goto(pool_url)

    # Resize, then Stop resize at once: the pool stops where it got to, steady, its nodes idle
    page.get_by_label("Target dedicated nodes").fill("5")
    page.get_by_role("button", name="Resize", exact=True).click()
    page.get_by_role("button", name="Stop resize").click()
    page.wait_for_function("() => document.getElementById('allocation-state')?.textContent === 'steady'")
    pool = clients.batch.get_pool("guide-pool")
    assert pool.allocation_state == "steady" and 3 <= pool.current_dedicated_nodes <= 5
    nodes = pool.current_dedicated_nodes + 1
    _node_states(page, f"idle={nodes}")

    clients.compute.images.begin_delete(RG, "portal-image").result()
    page.get_by_label("Target dedicated nodes").fill(str(nodes + 1))
    page.get_by_role("button", name="Resize", exact=True).click()
    banner = page.locator("#resize-errors")
    banner.get_by_text("AllocationFailed").wait_for(timeout=60_000)
    assert "There was an error encountered while performing the last resize on the pool." in banner.inner_text()
    _node_states(page, f"idle={nodes}")  # it keeps the nodes it has
    page.screenshot(path=str(output_dir() / "guide-pool.png"), full_page=True)

    # the image is gone from the Images page, and signing out ends the session
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/portal/signin")
    page.goto(info["portal_url"] + "accounts")
    assert "/portal/signin" in page.url
    page.context.close()
    clients.batch.begin_delete_pool("guide-pool")  # not waited for: nothing after it needs it gone


def _filled(path: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: {"account": "devbatch"}.get(m[1], "x"), path)


def test_every_portal_route_refuses_strangers_and_forged_forms(server, clients, gallery):
    info, ca = server.info, server.info.get("ca_bundle")
    base = info["portal_url"].removesuffix("/portal/")
    assert len(PAGES) >= 15
    for method, path, _ in PAGES:
        answer = requests.request(method, base + _filled(path), verify=ca, timeout=30, allow_redirects=False,
                                  data={"csrf_token": "x"} if method == "POST" else None)
        if method == "GET":
            assert answer.status_code == 303 and "/portal/signin" in answer.headers["location"], (method, path)
        else:
            assert answer.status_code == 403, (method, path, answer.status_code)

    # the session cookie and a wrong secret
    http = requests.Session()
    http.verify = ca
    http.trust_env = False  # REQUESTS_CA_BUNDLE would override the CA given here
    form = http.get(info["portal_url"] + "signin", timeout=30)
    cookie = form.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    wrong = "not-the-secret-" + "z" * 20
    refused = http.post(info["portal_url"] + "signin", timeout=30, allow_redirects=False,
                        data={"csrf_token": csrf_of(form.text), "client_id": info["client_id"],
                              "client_secret": wrong})
    assert refused.status_code == 401 and wrong not in refused.text
    assert "Invalid client secret" in refused.text or "AADSTS" in refused.text
    no_token = http.post(info["portal_url"] + "signin", timeout=30, allow_redirects=False,
                         data={"client_id": info["client_id"], "client_secret": info["client_secret"]})
    assert no_token.status_code == 403
    assert wrong not in server.log.read_text(errors="replace")
    assert info["client_secret"] not in server.log.read_text(errors="replace")

    # signed in: every form still needs this session's CSRF token
    signed = signed_in_session(info["portal_url"], ca, info["client_id"], info["client_secret"])
    assert signed.get(base + "/portal/accounts", timeout=30).status_code == 200
    for method, path, _ in PAGES:
        if method != "POST":
            continue
        for data in ({}, {"csrf_token": "forged-" + "a" * 40}):
            answer = signed.post(base + _filled(path), data=data, timeout=30, allow_redirects=False)
            assert answer.status_code == 403, (path, data, answer.status_code)
    # with the token, the form works: a Marketplace pool, with the service's own reading of its fields
    token = csrf_of(signed.get(base + "/portal/accounts/devbatch/pools-add", timeout=30).text)
    made = signed.post(base + "/portal/accounts/devbatch/pools-add", timeout=30, allow_redirects=False,
                       data={"csrf_token": token, "pool_id": "portal-market", "image_type": "marketplace",
                             "image_sku": "0", "vm_size": "standard_a1_v2", "target_dedicated": "0",
                             "resize_timeout": "20", "task_slots": "2"})
    assert made.status_code == 303 and made.headers["location"].endswith("/pools/portal-market")
    pool = clients.batch.get_pool("portal-market")
    assert (pool.task_slots_per_node, pool.resize_timeout) == (2, timedelta(minutes=20))
    assert pool.virtual_machine_configuration.image_reference.publisher
    bad = signed.post(base + "/portal/accounts/devbatch/pools-add", timeout=30, allow_redirects=False,
                      data={"csrf_token": token, "pool_id": "portal-bad", "image_type": "marketplace",
                            "image_sku": "0", "vm_size": "standard_a1_v2", "target_dedicated": "many"})
    assert bad.status_code == 400 and 'id="target_dedicated-error"' in bad.text
    # a Shared Image (a gallery image version) goes to the service by its id, as the SDKs send it
    nowhere = (f"/subscriptions/{info['subscription_id']}/resourceGroups/{RG}/providers/Microsoft.Compute/"
               "galleries/nowhere/images/none/versions/1.0.0")
    shared = signed.post(base + "/portal/accounts/devbatch/pools-add", timeout=30, allow_redirects=False,
                         data={"csrf_token": token, "pool_id": "portal-shared", "image_type": "gallery",
                               "gallery_image": nowhere, "image_sku": "0", "vm_size": "standard_a1_v2"})
    assert shared.status_code == 400 and 'id="image-error"' in shared.text, shared.text[:2000]
    # a token from another session is no better
    other = signed_in_session(info["portal_url"], ca, info["client_id"], info["client_secret"])
    theirs = csrf_of(other.get(base + "/portal/accounts", timeout=30).text)
    assert signed.post(base + "/portal/signout", data={"csrf_token": theirs}, timeout=30,
                       allow_redirects=False).status_code == 403

    # a principal with no role sees nothing more in the portal than through the API
    token = clients.credential.get_token("https://management.azure.com/.default").token
    made = requests.post(base + "/batchyard/principals", json={"displayName": "portal-nobody"}, verify=ca,
                         timeout=30, headers={"Authorization": f"Bearer {token}"}).json()
    nobody = signed_in_session(info["portal_url"], ca, made["clientId"], made["clientSecret"])
    pools_page = nobody.get(base + "/portal/accounts/devbatch/pools", timeout=30)
    assert pools_page.status_code == 403 and "AuthorizationFailure" in pools_page.text
    assert nobody.get(base + "/portal/images", timeout=30).status_code == 200
    assert "portal-image" not in nobody.get(base + "/portal/images", timeout=30).text
    assert GALLERY not in nobody.get(base + "/portal/images", timeout=30).text
    created = nobody.post(base + "/portal/accounts/devbatch/pools-add", timeout=30, allow_redirects=False,
                          data={"csrf_token": csrf_of(nobody.get(base + "/portal/accounts", timeout=30).text),
                                "pool_id": "nobodys-pool", "vm_size": "standard_a1_v2", "image_sku": "0"})
    assert created.status_code == 403
    assert "nobodys-pool" not in [p.id for p in clients.batch.list_pools()]

    # the Shared Image choices are what ARM lets the principal list: none with a role on the
    # Batch account only, the gallery's definitions once it may read the subscription
    pooler = requests.post(base + "/batchyard/principals", json={"displayName": "portal-pooler"}, verify=ca,
                           timeout=30, headers={"Authorization": f"Bearer {token}"}).json()
    authz = auth_client(clients)
    assign(authz, account_id(), BUILT_IN["Azure Batch Account Contributor"], pooler["objectId"])
    pooler_http = signed_in_session(info["portal_url"], ca, pooler["clientId"], pooler["clientSecret"])
    form = pooler_http.get(base + "/portal/accounts/devbatch/pools-add", timeout=30)
    assert form.status_code == 200 and GALLERY not in form.text and "Select an image definition" in form.text
    assign(authz, f"/subscriptions/{info['subscription_id']}", BUILT_IN["Reader"], pooler["objectId"])
    form = pooler_http.get(base + "/portal/accounts/devbatch/pools-add", timeout=30)
    assert f">{GALLERY}/tool</option>" in form.text and f"{gallery[0].id}/versions/1.1.0" in form.text
    requests.delete(f"{base}/batchyard/principals/{pooler['clientId']}", verify=ca, timeout=30,
                    headers={"Authorization": f"Bearer {token}"}).raise_for_status()  # its roles go with it


def test_a_500_node_pool_page_and_a_2500_tile_heatmap(server, clients, browser):
    info = server.info
    skus = clients.batch_key.list_supported_images()
    first = next(iter(skus))
    clients.batch.create_pool({"id": "portal-big", "vmSize": "standard_a1_v2", "targetDedicatedNodes": 500,
                               "virtualMachineConfiguration": {"imageReference": first.image_reference.as_dict(),
                                                               "nodeAgentSKUId": first.node_agent_sku_id}})
    wait_for(lambda: len(list(clients.batch.list_nodes("portal-big"))) == 500, timeout=120, interval=1,
             what="500 nodes")
    for name, size in (("desktop", (1280, 800)), ("phone", (390, 844))):
        page = _page(browser, size)
        _sign_in(page, info)
        page.goto(info["portal_url"] + "accounts/devbatch/pools/portal-big")
        page.wait_for_function("() => (document.getElementById('pool-page')?.dataset.nodeStates || '')"
                               ".split(',').reduce((n, kv) => n + Number(kv.split('=')[1] || 0), 0) === 500")
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]  # nothing wider than the screen
        page.screenshot(path=str(output_dir() / f"pool-500-{name}.png"), full_page=True)
        if name == "desktop":
            # 2,500 tiles of every kind render (the timing is bench/portal_bench.py's)
            drawn = page.evaluate("""() => {
                const states = ['idle', 'running', 'creating', 'starttaskfailed', 'waitingforstarttask'];
                const nodes = Array.from({length: 2500}, (_, i) => ['n' + i, states[i % 5], i % 3, i % 4 ? 1 : 0]);
                const h = window.batchyardHeatmap;
                h.draw(nodes, 4);
                const c = h.canvas, ctx = c.getContext('2d');
                const corner = ctx.getImageData(1, 1, 1, 1).data;
                return {rows: Math.ceil(2500 / h.cols), height: c.height, side: h.side, corner: Array.from(corner)};
            }""")
            assert drawn["side"] >= 6 and drawn["height"] > 0 and drawn["corner"][3] == 255
            page.locator("#heatmap").hover(position={"x": 3, "y": 3})
            assert page.locator("#heatmap-tip").inner_text().startswith("n0: idle")
        page.context.close()
    clients.batch.begin_delete_pool("portal-big")
