# Copyright: gpu_lab developers
# MIT License
"""The prices the status view's cost figures use: a region's own on-demand prices from the AWS
Price List API (asked through csdl.gpu_lab.lab_info, cached a week on this machine:
lab_price_cache.py), or, when the API cannot be asked, the table shipped here.

The table: on-demand Linux, us-east-1, from https://aws.amazon.com/ec2/pricing/on-demand/ and
https://aws.amazon.com/ebs/pricing/, read 2026-11; other regions cost up to about 30 % more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AS_OF = "2026-11"
REGION = "us-east-1"
HOURLY_USD = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6e.xlarge": 1.861,
    "gr6.4xlarge": 1.5417,
    "p3.2xlarge": 3.06,
}
GP3_GIB_MONTH_USD = 0.08
PUBLIC_IPV4_HOUR_USD = 0.005
# EBS snapshots (standard tier), per GiB-month: AWS bills the blocks stored, at most the volume's
# size; the same in the regions gpu_lab prices (a shelved lab: lab_shelve.py).
SNAPSHOT_GIB_MONTH_USD = 0.05
HOURS_PER_MONTH = 730
API = "AWS Price List API"


def hourly(instance_type: str) -> float | None:
    """The table's on-demand price of the type per hour (None for a type it does not list)."""
    return HOURLY_USD.get(instance_type)


def disk_monthly(gib: float, gib_month_usd: float = GP3_GIB_MONTH_USD) -> float:
    return round(gib * gib_month_usd, 2)


def shelf_monthly(gib: float, gib_month_usd: float = SNAPSHOT_GIB_MONTH_USD) -> float:
    """What a shelf of ``gib`` GiB of snapshots costs a month at most (AWS bills the blocks used)."""
    return round(gib * gib_month_usd, 2)


def addresses_monthly(count: int, hour_usd: float = PUBLIC_IPV4_HOUR_USD) -> float:
    return round(count * hour_usd * HOURS_PER_MONTH, 2)


def described(region: str = REGION, why: str = "") -> str:
    """Where the table's figures come from, as the status view names them (and, when the
    Price List API was not reachable, why)."""
    text = f"shipped table, {REGION} list prices {AS_OF}"
    if region != REGION:
        text += f" ({region} costs up to about 30 % more)"
    return f"{text}, AWS Price List not reachable: {why}" if why else text


@dataclass(frozen=True)
class Prices:
    """One region's prices, and where they come from (``source``, the status view's words)."""

    region: str
    hourly_usd: Mapping[str, float | None] = field(default_factory=dict)
    gp3_gib_month_usd: float = GP3_GIB_MONTH_USD
    public_ipv4_hour_usd: float = PUBLIC_IPV4_HOUR_USD
    source: str = ""
    from_api: bool = False

    def hourly(self, instance_type: str) -> float | None:
        return self.hourly_usd.get(instance_type)

    def disk_monthly(self, gib: float) -> float:
        return disk_monthly(gib, self.gp3_gib_month_usd)

    def addresses_monthly(self, count: int) -> float:
        return addresses_monthly(count, self.public_ipv4_hour_usd)


def table(region: str = REGION, why: str = "") -> Prices:
    """The shipped table's prices, for any region (it has only us-east-1's)."""
    return Prices(region, dict(HOURLY_USD), source=described(region, why))


def from_api(region: str, entry: Mapping[str, Any], stale_because: str = "") -> Prices:
    """The Price List API's prices as cached (lab_price_cache.py), with the date they were
    fetched. A figure the API had none for comes from the table (gp3, IPv4), or is unknown
    (an instance type the region does not sell)."""
    gp3 = entry.get("gp3_gib_month_usd")
    ipv4 = entry.get("public_ipv4_hour_usd")
    source = f"{API}, {region}, fetched {str(entry.get('fetched', ''))[:10]}"
    if stale_because:
        source += f" (could not be refreshed: {stale_because})"
    return Prices(region, {str(k): (float(v) if v is not None else None)
                           for k, v in dict(entry.get("hourly_usd") or {}).items()},
                  float(gp3) if gp3 is not None else GP3_GIB_MONTH_USD,
                  float(ipv4) if ipv4 is not None else PUBLIC_IPV4_HOUR_USD,
                  source, from_api=True)
