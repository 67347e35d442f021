"""Network reachability, checked before a client library waits minutes on a dead address."""

from __future__ import annotations

import socket

CONNECT_TIMEOUT_S = 5.0


def unreachable(host: str, port: int) -> str | None:
    """Why nothing answers at ``host:port`` within a few seconds, or None when something does."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__
