"""Where a server of ours may listen: the loopback interface, unless other machines are let in on purpose."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1, bracketed or not); False for any
    other address or host name (a name may resolve to anything)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, allow_remote: bool, what: str) -> None:
    """Refuse, with what to do instead, to listen where other machines can reach unless allowed."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"{host} is reachable from other machines, and {what}. Listen on 127.0.0.1,"
            " or allow it explicitly (--allow-remote; with tokens and TLS)"
        )
