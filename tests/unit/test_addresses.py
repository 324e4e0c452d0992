"""The IPv4 fast path of natns.addresses (and the firewall's canonical_address) agrees with ipaddress.

An address written canonically is read without ipaddress's parser (a file of
5,000 floating IPs holds 10,000 of them); everything else goes through
ipaddress as before, with its error messages.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from natns.addresses import CANONICAL_V4, ipv4_address
from natns.errors import UserError
from natns.firewall.base import canonical_address

OCTETS = ["0", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255"]


def test_every_canonical_octet_reads_as_ipaddress_reads_it():
    for a, b in itertools.product(OCTETS, repeat=2):
        text = f"{a}.{b}.{b}.{a}"
        assert CANONICAL_V4.fullmatch(text)
        got = ipv4_address(text)
        assert type(got) is ipaddress.IPv4Address and got == ipaddress.IPv4Address(text)
        assert canonical_address(text) == text


@pytest.mark.parametrize("text", ["01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4\n",
                                  "\uff11.2.3.4", "1.2.3.-1", "0x1.2.3.4", "", "1..2.3"])
def test_what_is_not_canonical_gets_ipaddress_and_its_error(text):
    assert not CANONICAL_V4.fullmatch(text)
    with pytest.raises(ValueError, match="is not an IP address"):
        ipv4_address(text)
    with pytest.raises(UserError):
        canonical_address(text)


def test_ipv6_is_still_named_as_ipv6():
    with pytest.raises(ValueError, match="is IPv6"):
        ipv4_address("2001:db8::1")
