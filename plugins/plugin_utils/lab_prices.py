# Copyright: gpu_lab developers
# MIT License
"""The prices the status view's cost figures use, as they are: the AWS Price List API is not
asked (it needs its own permissions and answers slowly). On-demand Linux, us-east-1, from
https://aws.amazon.com/ec2/pricing/on-demand/ and https://aws.amazon.com/ebs/pricing/,
read 2026-11; other regions cost up to about 30 % more."""

from __future__ import annotations

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
HOURS_PER_MONTH = 730


def hourly(instance_type: str) -> float | None:
    """The on-demand price of the type per hour (None for a type the table does not list)."""
    return HOURLY_USD.get(instance_type)


def disk_monthly(gib: float) -> float:
    return round(gib * GP3_GIB_MONTH_USD, 2)


def addresses_monthly(count: int) -> float:
    return round(count * PUBLIC_IPV4_HOUR_USD * HOURS_PER_MONTH, 2)


def described() -> str:
    """Where the figures come from, as the status view names them."""
    return f"on-demand list prices, {REGION}, {AS_OF}"
