"""The SSRF guard: which addresses webhookd may deliver to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from webhookd.exceptions import DestinationBlocked

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Python's ``is_global`` lags IANA's special-purpose registries (and differs between patch releases),
# so every range that is not globally reachable is named outright.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation: reaches whatever the operator's NAT64 does
        "100::/63",  # discard-only and dummy prefixes
        "2001::/23",  # IETF protocol assignments (Teredo is handled by its embedded address first)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed by some stacks)
        "ff00::/8",  # multicast
    )
)
# Ranges whose low 32 bits are an IPv4 address that a host stack or a translator will reach.
_EMBEDS_V4_LOW32 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated, still accepted by some stacks)
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # SIIT (IPv4-translated)
        "64:ff9b::/96",  # well-known NAT64 prefix
    )
)
_TEREDO = ipaddress.IPv6Network("2001::/32")


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, including the decimal, hex and short IPv4 forms
    (``2130706433``, ``0x7f000001``, ``127.1``) that resolvers accept; ``None`` for a name."""
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(candidate))
    except OSError:
        return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries or translates to, for the ranges that do so."""
    if address in (_BLOCKED_V6[0], _BLOCKED_V6[1]):
        return None  # :: and ::1 sit inside ::/96 but are IPv6's own unspecified and loopback
    if any(address in net for net in _EMBEDS_V4_LOW32):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _TEREDO and address.teredo is not None:
        return address.teredo[1]
    return None


@dataclass(frozen=True, slots=True)
class AddressGuard:
    """Refuses loopback, private, link-local, CGNAT, multicast and reserved addresses, unless
    the address is in ``allowed`` or the guard is switched off."""

    allow_private: bool = False
    allowed: Sequence[IPNetwork] = ()

    def allows(self, address: IPAddress) -> bool:
        if self.allow_private or any(address in net for net in self.allowed):
            return True
        if isinstance(address, ipaddress.IPv4Address):
            return not any(address in net for net in _BLOCKED_V4) and address.is_global
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return self.allows(embedded)
        return not any(address in net for net in _BLOCKED_V6) and address.is_global

    def check_address(self, host: str, address: IPAddress) -> None:
        if not self.allows(address):
            raise DestinationBlocked(f"{host} resolves to {address}, a private or reserved address")

    async def check_url(self, url: str) -> None:
        """Resolve the URL's host now and refuse it if any address is blocked (create time)."""
        if self.allow_private:
            return
        host = urlsplit(url).hostname or ""
        literal = literal_address(host)
        if literal is not None:
            self.check_address(host, literal)
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationBlocked(f"cannot resolve {host}: {exc.strerror or exc}") from None
        for info in infos:
            self.check_address(host, ipaddress.ip_address(info[4][0]))
