"""A Ray cluster of several nodes on this machine for the benchmarks (ray.cluster_utils,
Ray's own multi-node mode), each node bound to 127.0.0.2 as tests/test_ray_cluster.py binds
them, with a Batchyard server joined to it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from conftest import Server


@contextmanager
def server_on_ray(base: Path, nodes: int):
    """A live server whose machines run on a fresh `nodes`-node Ray cluster under `base`."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.2", "num_cpus": 2, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(node_ip_address="127.0.0.2", num_cpus=2)
        cluster.wait_for_nodes()
        with Server(base / "ray", args=["--ray-address", cluster.address,
                                        "--ray-host-dir", str(base / "hosts")]) as server:
            yield server
    finally:
        cluster.shutdown()
