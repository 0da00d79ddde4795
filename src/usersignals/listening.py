"""Whether a TCP port can be listened on, asked before a server starts.

The API's workers (granian) and their metrics exporters listen with ``SO_REUSEPORT``, so
that every worker of one server shares its port. The same option let a second server start
on a port a first one held, and the kernel split the requests between the two deployments.
A bind without ``SO_REUSEPORT``, which no listener of another program admits (with that
option or without), tells before anything starts; the socket is closed at once. It sets
``SO_REUSEADDR``, as the servers do: without it, the closed connections of a server just
stopped (in TIME_WAIT for a minute) would refuse a port the restarted server binds fine.
"""

from __future__ import annotations

import socket

from usersignals.errors import ConfigurationError


def check_can_listen(host: str, port: int, setting: str) -> None:
    """Raise :class:`ConfigurationError` naming ``setting`` when ``host:port`` is taken (or
    cannot be bound at all)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, protocol, _, address = infos[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            probe.listen()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"{setting} {port}: cannot listen on {host}: {reason}") from None
