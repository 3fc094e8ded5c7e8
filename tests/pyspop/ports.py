"""Loopback port helpers."""

import socket


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port that was free a moment ago (bound to port 0, then released). Callers that start a
    process on it must retry when the process reports the port in use (see agent.Agent)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ipv6_loopback_usable():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()
