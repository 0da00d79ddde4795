"""The port probe: a port a live listener holds is refused; one whose closed connections
linger in TIME_WAIT is not (the servers, with SO_REUSEADDR, bind it), nor a free one."""

from __future__ import annotations

import socket

import pytest

from usersignals.errors import ConfigurationError
from usersignals.listening import check_can_listen


def test_a_port_with_a_live_listener_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"serving.port {port}: cannot listen"):
            check_can_listen("127.0.0.1", port, "serving.port")


def test_a_port_whose_closed_connections_linger_is_free() -> None:
    """The server side closes first (as wsgiref does after every /readyz), so its end of
    the connection stays in TIME_WAIT after the listener is gone. Before, the probe bound
    without SO_REUSEADDR and refused such a port for a minute."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: it is the one in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    check_can_listen("127.0.0.1", port, "serving.port")
