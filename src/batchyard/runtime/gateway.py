"""Relays between the host and the machines' private networks (networks.py), bytes as
they are (TLS included):
- the service's gateway: accepts connections at SERVICE_ADDRESS in the machines' hub and
  relays them to the service's own port. It is the only way from a machine to the
  service, and it leads to that one port only;
- inbound NAT: accepts connections (TCP) or datagrams (UDP) at a host port (a Batch
  pool's `frontendPort`) and relays them to a port of one machine (`backendPort`), as
  Azure's load balancer does, letting through only what the pool's network security group
  rules admit (security_rules.py)."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("batchyard.runtime")
CHUNK = 1 << 16
DATAGRAM = 65535
UDP_IDLE = 120.0  # seconds before a UDP client's flow is forgotten (a load balancer's idle timeout)
Admits = Callable[[tuple], bool]  # (address, port) of a client -> whether it may pass


def _everyone(peer: tuple) -> bool:
    return True


class _Listening:
    """A listener that waits in the one shared acceptor thread (a pool of thousands of nodes
    has thousands of frontend ports) and calls `accept` when a client arrives; `connect()`
    opens the machine's end, `admits` says which clients may pass."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket], name: str,
                 admits: Admits = _everyone):
        self.listener = listener
        self.connect = connect
        self.name = name
        self.admits = admits
        listener.setblocking(False)
        _ACCEPTOR.add(listener, self.accept)

    def accept(self) -> None:
        raise NotImplementedError


class Relay(_Listening):
    """TCP: for each connection, `connect()` opens the other end; a thread per direction."""

    def accept(self) -> None:
        try:
            conn, peer = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        if not self.admits(peer):
            conn.close()
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
        _ACCEPTOR.remove(self.listener)
        self.listener.close()


class DatagramRelay(_Listening):
    """UDP: each client (address, port) gets a socket of its own toward the machine, made
    by `connect()`, so the machine's replies go back to that client from the frontend
    port; a flow idle for UDP_IDLE seconds is forgotten. All in the acceptor thread."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket], name: str,
                 admits: Admits = _everyone):
        self._flows: dict[tuple, tuple[socket.socket, float]] = {}
        self._lock = threading.Lock()  # close() comes from another thread
        super().__init__(listener, connect, name, admits)  # last: the acceptor may call accept at once

    def accept(self) -> None:
        with self._lock:
            while True:
                try:
                    data, peer = self.listener.recvfrom(DATAGRAM)
                except OSError:  # BlockingIOError included: nothing more for now
                    break
                if self.admits(peer):
                    self._forward(data, peer)
            self._forget_idle()

    def _forward(self, data: bytes, peer: tuple) -> None:
        upstream = self._flows.get(peer, (None, 0.0))[0]
        if upstream is None:
            try:
                upstream = self.connect()
            except OSError as exc:
                log.info("relay %s: the other end is unreachable: %s", self.name, exc)
                return
            upstream.setblocking(False)
            _ACCEPTOR.add(upstream, lambda: self._back(upstream, peer))
        self._flows[peer] = (upstream, time.monotonic())
        try:
            upstream.send(data)
        except OSError:
            pass  # a datagram may be lost, as on any network

    def _back(self, upstream: socket.socket, peer: tuple) -> None:
        while True:
            try:
                data = upstream.recv(DATAGRAM)
                self.listener.sendto(data, peer)
            except OSError:
                return

    def _forget_idle(self) -> None:
        deadline = time.monotonic() - UDP_IDLE
        for peer, (upstream, last) in list(self._flows.items()):
            if last < deadline:
                self._drop(peer, upstream)

    def _drop(self, peer: tuple, upstream: socket.socket) -> None:
        self._flows.pop(peer, None)
        _ACCEPTOR.remove(upstream)
        upstream.close()

    def close(self) -> None:
        _ACCEPTOR.remove(self.listener)
        with self._lock:
            for peer, (upstream, _) in list(self._flows.items()):
                self._drop(peer, upstream)
        self.listener.close()


class _Acceptor:
    """One thread that waits on every relay's sockets (epoll: sockets come and go while it
    waits) and calls what each asks for when it is readable."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, sock: socket.socket, ready: Callable[[], None]) -> None:
        with self._lock:
            self._selector.register(sock, selectors.EVENT_READ, ready)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="relay acceptor")
                self._thread.start()

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                key.data()


_ACCEPTOR = _Acceptor()


def host_listener(address: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A TCP listener, or a bound UDP socket, at address:port of the host."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
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
