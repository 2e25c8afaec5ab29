"""Is a host name or address this machine's loopback? Shared by `dockd serve` and the dock's
configuration, which both relax their transport-security rules only for loopback."""

from __future__ import annotations

import ipaddress

# Names that resolve to loopback by definition (RFC 6761), without asking a resolver that an
# attacker might influence.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, an IPv4-mapped loopback and "localhost"; False for anything
    else, including "" (all interfaces) and names that merely happen to resolve to loopback."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
