"""The SSRF guard's address table."""

from __future__ import annotations

import ipaddress

import pytest

from webhookd.delivery.ssrf import AddressGuard, literal_address
from webhookd.exceptions import DestinationBlocked

pytestmark = pytest.mark.anyio

BLOCKED = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.0.8",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",  # IPv4-mapped IPv6
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",  # NAT64 and 6to4 wrapping loopback
]
# IPv6 forms that embed or translate an IPv4 address: each is judged by the address it carries.
BLOCKED_IPV6_CARRYING_IPV4 = [
    "::127.0.0.1",  # IPv4-compatible, ::/96
    "::169.254.169.254",
    "::10.0.0.1",
    "::ffff:0:127.0.0.1",  # SIIT, ::ffff:0:0/96
    "::ffff:0:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # well-known NAT64 onto the metadata address
    "2002:a9fe:a9fe::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
]
# IPv6 ranges IANA marks as not globally reachable, which Python 3.11's is_global lets through.
BLOCKED_IPV6_NOT_GLOBAL = [
    "64:ff9b:1::7f00:1",  # local-use NAT64, 64:ff9b:1::/48
    "64:ff9b:1:ffff::1",
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "2001:db8::1",
    "3fff::1",  # documentation, 3fff::/20
    "5f00::1",  # SRv6 SIDs
    "fec0::1",  # site-local
    "2001:2::1",  # benchmarking
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "::ffff:0:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", BLOCKED + BLOCKED_IPV6_CARRYING_IPV4 + BLOCKED_IPV6_NOT_GLOBAL)
def test_blocked(address: str) -> None:
    assert not AddressGuard().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_allowed(address: str) -> None:
    assert AddressGuard().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("[::1]", "::1"),
        ("3232235777", "192.168.1.1"),
    ],
)
def test_decimal_hex_octal_and_short_literals_are_read_as_addresses(host: str, address: str) -> None:
    parsed = literal_address(host)
    assert parsed == ipaddress.ip_address(address)
    assert not AddressGuard().allows(parsed)


def test_a_name_is_not_a_literal() -> None:
    assert literal_address("hooks.example.com") is None


def test_allowlist_and_switch_lift_the_guard() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert AddressGuard(allowed=(ipaddress.ip_network("127.0.0.0/8"),)).allows(loopback)
    assert AddressGuard(allowed=(ipaddress.ip_network("127.0.0.0/8"),)).allows(
        ipaddress.ip_address("::ffff:127.0.0.1")
    )
    assert not AddressGuard(allowed=(ipaddress.ip_network("10.0.0.0/8"),)).allows(loopback)
    assert AddressGuard(allow_private=True).allows(loopback)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://2130706433/hook",
        "http://[::ffff:127.0.0.1]:8080/",
        "https://169.254.169.254/latest",
    ],
)
async def test_check_url_refuses_hosts_that_resolve_to_private_addresses(url: str) -> None:
    with pytest.raises(DestinationBlocked):
        await AddressGuard().check_url(url)


async def test_check_url_refuses_names_that_do_not_resolve() -> None:
    with pytest.raises(DestinationBlocked, match="cannot resolve"):
        await AddressGuard().check_url("https://no-such-host.invalid/hook")
