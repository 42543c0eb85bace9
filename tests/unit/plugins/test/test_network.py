from __future__ import annotations

import pytest

from plugins.test import network
from plugins.test.network import ipv4_cidr


@pytest.mark.parametrize("value", ["203.0.113.7/32", "10.0.0.0/8", "0.0.0.0/0", "192.168.1.0/24"])
def test_accepts_networks(value: str) -> None:
    assert ipv4_cidr(value)


@pytest.mark.parametrize("value", ["203.0.113.7", "203.0.113.300/32", "203.0.113.7/24", "2001:db8::/32",
                                   "10.0.0.0/33", "", None, 42, "a.b.c.d/32"])
def test_rejects_everything_else(value: object) -> None:
    assert not ipv4_cidr(value)


def test_is_registered_under_its_name() -> None:
    assert network.TestModule().tests()["ipv4_cidr"] is ipv4_cidr
