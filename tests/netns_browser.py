"""Runs a browser in a network namespace of its own, its loopback relayed to the host's.

Chromium drops every request in flight (ERR_NETWORK_CHANGED) when any interface of its
network namespace changes, and machines and other services on a test host make and remove
interfaces all the time. In a namespace with nothing but `lo` nothing changes; a relay
listening on that `lo` at the server's port carries each connection through a Unix socket
(which crosses namespaces) to the host side (portal_browser.py), which connects to the
server. Usage (after `unshare --net`): netns_browser.py SOCKET PORT BROWSER [ARG...]"""

from __future__ import annotations

import os
import socket
import sys
import threading

from pyroute2 import IPRoute


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(listener: socket.socket, unix_path: str, parent: int) -> None:
    """Until the browser (our parent, once exec'd) is gone."""
    listener.settimeout(1)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(unix_path)
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main() -> None:
    unix_path, port, browser, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    with IPRoute() as ip:
        ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    parent = os.getpid()
    if os.fork() == 0:
        for fd in (3, 4):  # the browser's pipes to its driver: theirs alone, so they close with it
            if fd != listener.fileno():
                try:
                    os.close(fd)
                except OSError:
                    pass
        relay(listener, unix_path, parent)
        os._exit(0)
    listener.close()
    os.execv(browser, [browser, *args])


if __name__ == "__main__":
    main()
