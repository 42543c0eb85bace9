# Copyright: gpu_lab developers
# MIT License
"""The AWS Price List API's questions and answers, without the client: the GetProducts
filters for a region's on-demand Linux prices of some instance types, its gp3 storage and an
in-use public IPv4 address, and the reading of the answer (each ``PriceList`` entry is a JSON
string: ``product.attributes`` and ``terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD``).
csdl.gpu_lab.lab_info makes the calls (O(prices)); these are pure functions with unit tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# The API is served from these regions only; a client elsewhere has no endpoint to reach.
ENDPOINT_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
ENDPOINT_REGION = "us-east-1"
FORMAT_VERSION = "aws_v1"
MAX_RESULTS = 100  # GetProducts' largest page
# An instance's on-demand Linux price, as the EC2 console shows it: no licensed software,
# shared tenancy, an instance in use (not an unused capacity reservation).
INSTANCE_ATTRIBUTES = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                       "capacitystatus": "Used"}
# Public IPv4 addresses are billed by Amazon VPC since 2024-02 (idle and in use alike).
IPV4_SERVICE = "AmazonVPC"
IPV4_GROUP = "VPCPublicIPv4Address"
IPV4_IN_USE = "PublicIPv4:InUseAddress"
GP3_USAGE = "EBS:VolumeUsage.gp3"


def term(field: str, value: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": field, "Value": value}


def instance_filters(region: str, types: Iterable[str]) -> list[dict[str, str]]:
    """GetProducts filters (ServiceCode AmazonEC2) for the on-demand Linux prices of ``types``
    in ``region``: one call for all of them (ANY_OF takes the values comma-separated)."""
    wanted = sorted(dict.fromkeys(t for t in types if t))
    if not wanted:
        raise ValueError("instance_filters needs at least one instance type")
    by_type = term("instanceType", wanted[0]) if len(wanted) == 1 else {
        "Type": "ANY_OF", "Field": "instanceType", "Value": ",".join(wanted)}
    return [term("regionCode", region), by_type, *(term(k, v) for k, v in INSTANCE_ATTRIBUTES.items())]


def storage_filters(region: str) -> list[dict[str, str]]:
    """GetProducts filters (AmazonEC2) for gp3 storage, per GB-month, in ``region``."""
    return [term("regionCode", region), term("productFamily", "Storage"), term("volumeApiName", "gp3")]


def ipv4_filters(region: str) -> list[dict[str, str]]:
    """GetProducts filters (AmazonVPC) for the public IPv4 address products of ``region``."""
    return [term("regionCode", region), term("group", IPV4_GROUP)]


def products(price_list: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The PriceList entries as dicts (the API sends each as a JSON string); an entry that is
    not a product is left out."""
    found = []
    for entry in price_list:
        try:
            item = json.loads(entry) if isinstance(entry, str) else dict(entry)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("product"), dict):
            found.append(item)
    return found


def attributes(item: Mapping[str, Any]) -> dict[str, str]:
    return dict((item.get("product") or {}).get("attributes") or {})


def on_demand_usd(item: Mapping[str, Any]) -> float | None:
    """The product's on-demand USD price per unit: the first tier (beginRange 0) of its
    OnDemand term, or None when it has none (a Reserved term alone is not a list price)."""
    prices: list[tuple[float, float]] = []
    for offer in ((item.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (offer.get("priceDimensions") or {}).values():
            try:
                usd = float((dimension.get("pricePerUnit") or {})["USD"])
                begin = float(dimension.get("beginRange") or 0)
            except (KeyError, TypeError, ValueError):
                continue
            prices.append((begin, usd))
    return min(prices)[1] if prices else None


def _usage(attrs: Mapping[str, str]) -> str:
    """The usage type without its region prefix: us-east-1 has none ("BoxUsage:g5.xlarge"),
    the others have one ("EU-BoxUsage:g5.xlarge", "USW2-EBS:VolumeUsage.gp3")."""
    usage = str(attrs.get("usagetype", ""))
    head, sep, rest = usage.partition("-")
    return rest if sep and ":" not in head and head.isupper() else usage


def hourly_by_type(items: Iterable[Mapping[str, Any]], region: str, types: Iterable[str]) -> dict[str, float | None]:
    """Each asked type's on-demand Linux price per hour in ``region`` (None: the Price List has
    none there). Entries of another region, OS, tenancy, software or capacity status, and
    reservation fees, are not the price even if an answer holds them."""
    found: dict[str, float | None] = dict.fromkeys(t for t in types if t)
    for item in items:
        attrs = attributes(item)
        name = attrs.get("instanceType", "")
        if name not in found or found[name] is not None or attrs.get("regionCode", region) != region:
            continue
        if any(attrs.get(k, v) != v for k, v in INSTANCE_ATTRIBUTES.items()):
            continue
        if not _usage(attrs).startswith("BoxUsage"):
            continue
        found[name] = on_demand_usd(item)
    return found


def gp3_gib_month(items: Iterable[Mapping[str, Any]], region: str) -> float | None:
    """gp3 storage's price per GB-month in ``region`` (not its IOPS or throughput)."""
    for item in items:
        attrs = attributes(item)
        if (attrs.get("volumeApiName") == "gp3" and attrs.get("regionCode", region) == region
                and _usage(attrs) == GP3_USAGE):
            return on_demand_usd(item)
    return None


def ipv4_hour(items: Iterable[Mapping[str, Any]], region: str) -> float | None:
    """An in-use public IPv4 address's price per hour in ``region`` (not an idle one's, nor a
    contiguous block's)."""
    for item in items:
        attrs = attributes(item)
        if (attrs.get("group") == IPV4_GROUP and attrs.get("regionCode", region) == region
                and _usage(attrs) == IPV4_IN_USE):
            return on_demand_usd(item)
    return None
