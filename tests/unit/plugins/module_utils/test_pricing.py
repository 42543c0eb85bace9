"""pricing: the Price List API's filters for a region's prices, and the reading of its answer
(PriceList entries are JSON strings), on answers shaped as AWS sends them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plugins.module_utils import pricing

emulated = pytest.importorskip("local_cloud.pricing", reason="no local_cloud/: the emulator is not built in")


def answer(service: str, filters: list[dict[str, str]]) -> list[str]:
    """What the emulated API answers (PriceList: JSON strings), every page."""
    status, body = emulated.get_products({"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1"})
    assert status == 200, body
    assert "NextToken" not in body
    return body["PriceList"]


def entry(usd: str, **attributes: str) -> str:
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": "SKU1"},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {"SKU1.JRTCKXETXF": {"priceDimensions": {"SKU1.JRTCKXETXF.6YS6EN2CT7": {
            "unit": "Hrs", "beginRange": "0", "endRange": "Inf", "pricePerUnit": {"USD": usd}}}}},
            "Reserved": {"SKU1.4NA7Y494T4": {"priceDimensions": {"SKU1.4NA7Y494T4.2TG2D8R56U": {
                "unit": "Quantity", "description": "Upfront Fee", "pricePerUnit": {"USD": "5000"}}}}}},
    })


LINUX = {"instanceType": "g5.xlarge", "regionCode": "eu-west-1", "operatingSystem": "Linux", "tenancy": "Shared",
         "preInstalledSw": "NA", "capacitystatus": "Used", "usagetype": "EU-BoxUsage:g5.xlarge"}


def test_one_call_asks_for_every_type_with_any_of() -> None:
    filters = pricing.instance_filters("eu-west-1", ["g6.xlarge", "g5.xlarge", "g6.xlarge"])
    assert filters[:2] == [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": "eu-west-1"},
                           {"Type": "ANY_OF", "Field": "instanceType", "Value": "g5.xlarge,g6.xlarge"}]
    assert {f["Field"]: f["Value"] for f in filters[2:]} == {
        "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    assert pricing.instance_filters("us-east-1", ["g6.xlarge"])[1] == {
        "Type": "TERM_MATCH", "Field": "instanceType", "Value": "g6.xlarge"}
    with pytest.raises(ValueError):
        pricing.instance_filters("us-east-1", [])


def test_entries_are_json_strings_and_the_on_demand_term_is_the_price() -> None:
    items = pricing.products([entry("1.1230000000", **LINUX), "not json", json.dumps({"no": "product"})])
    assert len(items) == 1
    assert pricing.on_demand_usd(items[0]) == 1.123  # not the reservation's upfront fee
    assert pricing.on_demand_usd({"terms": {"Reserved": {}}}) is None


def test_other_os_tenancy_software_or_region_is_not_the_price() -> None:
    rows = [entry("9.0", **LINUX | {"operatingSystem": "Windows"}), entry("8.0", **LINUX | {"tenancy": "Dedicated"}),
            entry("7.0", **LINUX | {"capacitystatus": "UnusedCapacityReservation"}),
            entry("6.0", **LINUX | {"regionCode": "us-east-1"}), entry("1.123", **LINUX)]
    found = pricing.hourly_by_type(pricing.products(rows), "eu-west-1", ["g5.xlarge", "g6.xlarge"])
    assert found == {"g5.xlarge": 1.123, "g6.xlarge": None}  # None: no price for it there


@pytest.mark.parametrize(("region", "g5", "gp3"), [("us-east-1", 1.006, 0.08), ("eu-west-1", 1.123, 0.088)])
def test_a_region_priced_from_answers_with_the_noise_aws_sends(region: str, g5: float, gp3: float) -> None:
    types = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
    items = pricing.products(answer("AmazonEC2", pricing.instance_filters(region, types)))
    assert len(items) == 3  # the filters leave one product per type
    hourly = pricing.hourly_by_type(items, region, types)
    assert hourly["g5.xlarge"] == g5
    assert hourly == {t: emulated.HOURLY_USD[region][t] for t in types}
    # Without the filters (a careless query), the reading still finds the right rows.
    careless = pricing.products(answer("AmazonEC2", [pricing.term("regionCode", region)]))
    assert pricing.hourly_by_type(careless, region, types) == hourly
    assert pricing.gp3_gib_month(careless, region) == gp3
    storage = pricing.products(answer("AmazonEC2", pricing.storage_filters(region)))
    assert pricing.gp3_gib_month(storage, region) == gp3  # the GB-month, not gp3's IOPS or throughput
    ipv4 = pricing.products(answer(pricing.IPV4_SERVICE, pricing.ipv4_filters(region)))
    assert len(ipv4) == 3 and pricing.ipv4_hour(ipv4, region) == 0.005  # in use; not idle, not a block


def test_nothing_found_is_none() -> None:
    assert pricing.gp3_gib_month([], "eu-west-1") is None
    assert pricing.ipv4_hour([], "eu-west-1") is None
    assert pricing.hourly_by_type([], "eu-west-1", ["g5.xlarge", ""]) == {"g5.xlarge": None}


def test_the_usage_type_is_read_without_its_region_prefix() -> None:
    usage: dict[str, Any] = {"usagetype": "USW2-EBS:VolumeUsage.gp3"}
    assert pricing._usage(usage) == "EBS:VolumeUsage.gp3"
    assert pricing._usage({"usagetype": "BoxUsage:g5.xlarge"}) == "BoxUsage:g5.xlarge"
