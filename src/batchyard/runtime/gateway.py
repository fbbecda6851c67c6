"""The service's gateway for machines: a TCP forwarder that accepts connections at
SERVICE_ADDRESS in the machines' hub network (networks.py) and relays them, bytes as they
are (TLS included), to the service's own port. It is the only way from a machine to the
service, and it leads to that one port only."""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger("batchyard.runtime")
CHUNK = 1 << 16


class Gateway:
    def __init__(self, listener: socket.socket, target: tuple[str, int]):
        self.listener = listener
        self.target = target
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="machine-gateway").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn,), daemon=True, name="gateway-relay").start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError as exc:
            log.warning("gateway: the service is unreachable at %s:%s: %s", *self.target, exc)
            conn.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True, name="gateway-relay")
        back.start()
        _pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


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
