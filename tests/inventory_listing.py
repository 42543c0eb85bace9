"""Reading what ``ansible-inventory --list`` prints, for the inventory plugins' tests."""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """--list marks every string that came from outside (EC2, a roster) as untrusted:
    {"__ansible_unsafe": "..."}. This gives the plain values back."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def hosts_of(listing: dict[str, Any], group: str) -> set[str]:
    """The hosts directly in one group of a listing."""
    return set(listing.get(group, {}).get("hosts", []))
