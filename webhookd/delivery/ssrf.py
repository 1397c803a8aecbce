"""The SSRF guard: which addresses webhookd may deliver to (SPEC §5)."""

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

# Not always caught by ``is_global`` on every Python version, so named outright.
_ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour or (address.teredo[1] if address.teredo else None)


@dataclass(frozen=True, slots=True)
class AddressGuard:
    """Refuses loopback, private, link-local, CGNAT, multicast and reserved addresses, unless
    the address is in ``allowed`` or the guard is switched off."""

    allow_private: bool = False
    allowed: Sequence[IPNetwork] = ()

    def allows(self, address: IPAddress) -> bool:
        if self.allow_private or any(address in net for net in self.allowed):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                return self.allows(embedded)
        if any(address in net for net in _ALWAYS_BLOCKED if net.version == address.version):
            return False
        return address.is_global

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
