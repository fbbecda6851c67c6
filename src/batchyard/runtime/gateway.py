"""TCP relays between the host and the machines' private networks (networks.py), bytes as
they are (TLS included):
- the service's gateway: accepts connections at SERVICE_ADDRESS in the machines' hub and
  relays them to the service's own port. It is the only way from a machine to the
  service, and it leads to that one port only;
- inbound NAT: accepts connections at a host port (a Batch pool's `frontendPort`) and
  relays them to a port of one machine (`backendPort`), as Azure's load balancer does."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("batchyard.runtime")
CHUNK = 1 << 16


class Relay:
    """Accepts on `listener`; for each connection, `connect()` opens the other end. Every
    relay's listener waits in one shared acceptor thread (a pool of thousands of nodes has
    thousands of frontend ports); each connection gets a thread per direction."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket], name: str):
        self.listener = listener
        self.connect = connect
        self.name = name
        listener.setblocking(False)
        _ACCEPTOR.add(self)

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        conn.setblocking(True)
        threading.Thread(target=self._relay, args=(conn,), daemon=True, name=f"relay {self.name}").start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError as exc:
            log.info("relay %s: the other end is unreachable: %s", self.name, exc)
            conn.close()
            return
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True, name=f"relay {self.name}")
        back.start()
        _pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def close(self) -> None:
        _ACCEPTOR.remove(self)
        self.listener.close()


class _Acceptor:
    """One thread that waits on every relay's listener (epoll: listeners come and go while
    it waits)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, relay: Relay) -> None:
        with self._lock:
            self._selector.register(relay.listener, selectors.EVENT_READ, relay)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="relay acceptor")
                self._thread.start()

    def remove(self, relay: Relay) -> None:
        with self._lock:
            try:
                self._selector.unregister(relay.listener)
            except (KeyError, ValueError):
                pass

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                key.data.accept()


_ACCEPTOR = _Acceptor()


def host_listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies one direction until its end, then passes the end on."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass
