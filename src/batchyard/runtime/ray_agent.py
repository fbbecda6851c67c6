"""The host agent of a Ray cluster node: an actor pinned to its node (ray_provider.py makes
one per node) that owns the node's host daemon (host_daemon.py: its layer cache, machines
and command runner) and relays to it. Commands' exits are queued here until the service
collects them (`next_exits`), so a command never waits on the service.

Imported only on a cluster, where Ray is installed.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

import ray


def _raylet_pidfd() -> int | None:
    """A descriptor that turns readable when this worker's parent, the node's raylet, ends;
    None if the parent is not a raylet. The parent is asked again after the open, so the
    descriptor cannot be of another process that took a dead raylet's pid."""
    parent = os.getppid()
    try:
        fd = os.pidfd_open(parent)
        named = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:  # a kernel before 5.3, or the parent gone already
        return None
    if os.getppid() != parent or named != "raylet":
        os.close(fd)
        return None
    return fd


@ray.remote(num_cpus=0, max_concurrency=256)
class HostAgent:
    def __init__(self, root: str, options: dict):
        ours, theirs = socket.socketpair()
        # The daemon watches the node's raylet: a worker may outlive a raylet that was
        # killed, and the host's machines must not.
        raylet = _raylet_pidfd()
        options = {**options, "raylet_fd": raylet}
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "batchyard.runtime.host_daemon", str(theirs.fileno()), root, json.dumps(options)],
            pass_fds=[theirs.fileno()] + ([raylet] if raylet is not None else []), stdin=subprocess.DEVNULL)
        theirs.close()
        if raylet is not None:
            os.close(raylet)
        self.conn = Connection(ours.detach())
        self.info = self.conn.recv()[2]
        self.node_id = ray.get_runtime_context().get_node_id()
        self.send_lock = threading.Lock()
        self.ids = itertools.count(1)
        self.waiting: dict[int, Future] = {}
        self.commands: dict[int, tuple[str, str]] = {}  # request -> the command it starts
        self.exits: list[tuple] = []
        self.exits_ready = threading.Condition()
        self.received: list[str] = []  # layers this host pulled, in order (each once)
        threading.Thread(target=self._read, daemon=True, name="daemon-reader").start()

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "exit":
                self._exit(message[1:])
                continue
            kind, request_id, value = message
            future = self.waiting.pop(request_id, None)
            command = self.commands.pop(request_id, None)
            if future is not None:
                future.set_result((kind, value))
            elif command is not None and kind == "err":
                self._exit((*command, 1, False))  # it never started: the attempt fails, never hangs
        with self.exits_ready:
            self.exits.append(("gone",))
            self.exits_ready.notify_all()

    def _exit(self, event: tuple) -> None:
        with self.exits_ready:
            self.exits.append(event)
            self.exits_ready.notify_all()

    def _send(self, target, method: str, args: tuple) -> int:
        request_id = next(self.ids)
        with self.send_lock:
            self.conn.send((request_id, target, method, args))
        return request_id

    # what the provider calls ------------------------------------------------------------------

    def describe(self) -> dict:
        return {"node_id": self.node_id, **self.info}

    def call(self, target, method: str, args: tuple = ()) -> tuple:
        """("ok", value) or ("err", exception): the provider raises it as it was raised here."""
        future: Future = Future()
        request_id = next(self.ids)
        self.waiting[request_id] = future
        with self.send_lock:
            self.conn.send((request_id, target, method, args))
        return future.result()

    def run(self, key: str, command_id: str, args: tuple) -> None:
        """Starts a command; its exit comes through next_exits."""
        request_id = next(self.ids)
        self.commands[request_id] = (key, command_id)
        with self.send_lock:
            self.conn.send((request_id, ("runner", key), "run", (command_id, *args)))
        # an answer "ok" only says it started; the entry goes when any answer comes
        # (see _read), so the table never grows with commands that started

    def kill(self, key: str, command_id: str) -> None:
        self._send(("runner", key), "kill", (command_id,))

    def commands(self, batch: list[tuple]) -> None:
        """("run", key, command id, args) and ("kill", key, command id), in order."""
        for kind, *args in batch:
            (self.run if kind == "run" else self.kill)(*args)

    def next_exits(self, timeout: float) -> list[tuple]:
        with self.exits_ready:
            if not self.exits:
                self.exits_ready.wait(timeout)
            events, self.exits = self.exits, []
        return events

    def pull(self, layer: str, data: bytes) -> str:
        kind, value = self.call("daemon", "receive", (layer, data))
        if kind == "err":
            raise value
        self.received.append(layer)
        return value

    def pulled(self) -> list[str]:
        return list(self.received)
