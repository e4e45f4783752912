"""Whether something listens at an address: the one TCP check the master, the instances and the self-tests share."""

from __future__ import annotations

import socket


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port is accepted within timeout seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
