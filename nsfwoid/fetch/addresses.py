"""The address guard: every connection a download makes is refused unless its address is globally reachable.

It runs as aiohttp's `socket_factory`, after DNS resolution, for every address actually connected to, so DNS
rebinding cannot get past it.
"""

from __future__ import annotations

import ipaddress
import socket

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(OSError):
    """Raised instead of connecting to a non-public address. One message, so aiohappyeyeballs keeps it."""

    def __init__(self) -> None:
        super().__init__("address is not public")


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# IANA's IPv4 and IPv6 Special-Purpose Address Registries: every block not globally reachable, plus
# multicast and deprecated site-local. Spelled out, because Python 3.11's ipaddress calls some of them
# (192.0.0.0/24, fec0::/10, 3fff::/20, 5f00::/16 …) global, and Pythons patched for CVE-2024-4032 differ
# from those that are not. 6to4 (2002::/16), which the registry leaves open, is refused, as patched Pythons
# refuse it: it is deprecated (RFC 7526), and no image host needs it.
NOT_GLOBAL = _networks(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::ffff:0:0/96", "::/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)
# The registry's globally reachable exceptions inside 2001::/23.
GLOBAL_EXCEPTIONS = _networks(
    "2001:1::1/128", "2001:1::2/128", "2001:1::3/128", "2001:3::/32", "2001:4:112::/48", "2001:20::/28",
    "2001:30::/28",
)


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
    if any(address in network for network in GLOBAL_EXCEPTIONS):
        return True
    if any(address in network for network in NOT_GLOBAL if network.version == address.version):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def guarded_socket(addr_info) -> socket.socket:
    """aiohttp socket_factory: runs for every address actually connected to, after DNS resolution."""
    family, type_, proto, _, sockaddr = addr_info
    address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
    if not is_public_address(address):
        raise BlockedAddress()
    return socket.socket(family=family, type=type_, proto=proto)
