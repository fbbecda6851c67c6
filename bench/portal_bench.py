"""Portal benchmark: the pool page's heatmap in Debian's chromium (headless, Playwright).

- draw: one update of the canvas heatmap for 2,500 nodes (states, slot shading and
  low-priority stripes changing between updates) until its pixels can be read back, median
  and worst of 50 (target: < 100 ms)
- poll: one whole live update of the pool page for a real pool of --nodes nodes on a live
  server: fetch live.json, parse it, redraw the heatmap and the history chart, update the
  counts (median and worst of 20)

Usage: bench/portal_bench.py [--nodes 2500] [--no-server]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server  # noqa: E402
from portal_browser import chromium  # noqa: E402

SYNTHETIC = """(count) => {
    const states = ['idle', 'running', 'creating', 'starting', 'waitingforstarttask', 'starttaskfailed',
                    'leavingpool', 'preempted'];
    const h = window.batchyardHeatmap;
    const times = [];
    for (let round = 0; round < 50; round++) {
        const nodes = Array.from({length: count}, (_, i) =>
            ['node-' + i, states[(i * 7 + round) % states.length], (i + round) % 5, (i + round) % 6 ? 1 : 0]);
        const started = performance.now();
        h.draw(nodes, 4);
        h.ctx.getImageData(0, 0, 1, 1);  // waits for the canvas to be painted, not only the commands
        times.push(performance.now() - started);
    }
    return times;
}"""

POLL = """async () => {
    const root = document.getElementById('pool-page');
    const h = window.batchyardHeatmap;
    const times = [];
    for (let round = 0; round < 20; round++) {
        const started = performance.now();
        const live = await (await fetch(root.dataset.liveUrl, {credentials: 'same-origin'})).json();
        h.draw(live.nodes, live.pool.taskSlotsPerNode);
        h.ctx.getImageData(0, 0, 1, 1);
        times.push(performance.now() - started);
    }
    return times;
}"""


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms"


def sign_in(page, info: dict) -> None:
    page.goto(info["portal_url"])
    page.get_by_label("Client ID").fill(info["client_id"])
    page.get_by_label("Client secret").fill(info["client_secret"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/accounts")


def draw_times(browser) -> list[float]:
    """The heatmap alone, on a page of its own with the pool page's elements."""
    heatmap_js = (Path(__file__).resolve().parent.parent / "src/batchyard/api/portal/static/heatmap.js").read_text()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_content('<div id="pool-page"><div id="legend"></div><canvas id="heatmap" style="width:100%">'
                     '</canvas><div id="heatmap-tip"></div><p id="node-summary"></p>'
                     '<canvas id="history"></canvas></div>')
    page.add_script_tag(content=heatmap_js.replace("  poll();\n", ""))
    page.evaluate("document.dispatchEvent(new Event('DOMContentLoaded'))")
    return page.evaluate(SYNTHETIC, 2500)


def poll_times(browser, server: Server, nodes: int) -> list[float]:
    """Whole live updates of the pool page of a real pool of `nodes` nodes."""
    server.set_quotas(server.info["batch_account"], "--dedicated-cores", "1000000")
    clients = Clients(server.info)
    image = next(iter(clients.batch_key.list_supported_images()))
    started = time.monotonic()
    clients.batch.create_pool({"id": "bench", "vmSize": "standard_a1_v2", "targetDedicatedNodes": nodes,
                               "virtualMachineConfiguration": {"imageReference": image.image_reference.as_dict(),
                                                               "nodeAgentSKUId": image.node_agent_sku_id}})
    while len(list(clients.batch.list_nodes("bench"))) < nodes:
        time.sleep(1)
    print(f"{nodes} nodes listed after {time.monotonic() - started:.0f} s")
    page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800}).new_page()
    sign_in(page, server.info)
    page.goto(server.info["portal_url"] + "accounts/devbatch/pools/bench")
    page.wait_for_function("() => window.batchyardHeatmap && window.batchyardHeatmap.nodes.length > 0")
    times = page.evaluate(POLL)
    clients.batch.begin_delete_pool("bench").result()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=2500)
    parser.add_argument("--no-server", action="store_true", help="only the drawing, on a page of its own")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data")
        with contextlib.ExitStack() as stack:
            if not args.no_server:
                stack.enter_context(server)
            browser = stack.enter_context(chromium(server.port))
            print(f"draw, 2,500 nodes: {summary(draw_times(browser))}")
            if not args.no_server:
                print(f"poll (fetch + parse + draw), {args.nodes} real nodes: "
                      f"{summary(poll_times(browser, server, args.nodes))}")


if __name__ == "__main__":
    main()
