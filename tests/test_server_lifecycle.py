"""The server process itself: both stop signals end it cleanly."""

from __future__ import annotations

import signal

import pytest

from conftest import Server


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_shut_down_cleanly(tmp_path, stop_signal):
    server = Server(tmp_path / "data", tls=False)
    with server:
        connection = tmp_path / "data" / "connection.json"
        assert connection.exists()
        server.proc.send_signal(stop_signal)
        assert server.proc.wait(30) == 0
        # connection.json names a server that is gone once it stops: a clean stop removes it
        assert not connection.exists()
