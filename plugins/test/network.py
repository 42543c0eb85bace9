# Copyright: gpu_lab developers
# MIT License
"""Jinja tests for network settings of a lab."""

from __future__ import annotations

import ipaddress
from typing import Any


def ipv4_cidr(value: Any) -> bool:
    """True for an IPv4 network in CIDR form with no host bits set (203.0.113.7/32, 10.0.0.0/8)."""
    if not isinstance(value, str) or "/" not in value:
        return False
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return True


class TestModule:
    def tests(self) -> dict[str, Any]:
        return {"ipv4_cidr": ipv4_cidr}
