"""The status view prices the lab's own region from the AWS Price List API (emulated:
local_cloud/pricing.py), caches the answer a week in ~/.gpu_lab/prices/<region>.json, asks
nothing more within the week, asks again after it, and falls back to the shipped table,
saying so, when the API refuses."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from local_cloud import pricing as emulated
from local_cloud.cloud import Cloud
from tests.playbook import run_playbook

REGION = "eu-west-1"
LAB = {"gpu_lab_name": "pricelab", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       "gpu_lab_region": REGION, "gpu_lab_instance_type": "g5.xlarge", "gpu_lab_volume_size": "120"}
TODAY = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def status(cloud: Cloud, home: Path) -> tuple[dict[str, Any], str]:
    """The status JSON (gpu_lab_status_file) and the text lines the run printed."""
    out = home / "status.json"
    result = run_playbook("status", cloud.env(), home, {**LAB, "gpu_lab_status_file": str(out)})
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(out.read_text()), " ".join(result.stdout.split())


def get_products(cloud: Cloud) -> int:
    return int(cloud.emulator.calls.snapshot()["by_action"].get("pricing:GetProducts", 0))


@pytest.fixture
def launched(cloud: Cloud, tmp_path: Path) -> Path:
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    return tmp_path


def test_an_eu_west_1_lab_is_priced_at_eu_west_1_prices_and_cached(cloud: Cloud, launched: Path) -> None:
    cloud.emulator.calls.reset()
    started = time.monotonic()
    s, _ = status(cloud, launched)
    cold_s = time.monotonic() - started
    cold = get_products(cloud)
    assert s["region"] == REGION and s["type"] == "g5.xlarge"
    assert float(s["hourly_usd"]) == emulated.HOURLY_USD[REGION]["g5.xlarge"] != emulated.HOURLY_USD["us-east-1"][
        "g5.xlarge"]
    assert s["stopped_monthly_usd"]["disk"] == pytest.approx(120 * emulated.GP3_GIB_MONTH_USD[REGION])  # $10.56
    assert s["prices"] == f"AWS Price List API, {REGION}, fetched {TODAY}"
    assert 1 <= cold <= 3, cold  # the types in one call (ANY_OF), gp3, public IPv4
    cache = json.loads((launched / f".gpu_lab/prices/{REGION}.json").read_text())
    assert cache["hourly_usd"] == {"g4dn.xlarge": 0.587, "g5.xlarge": 1.123}  # its type and fallbacks
    assert cache["fetched"].startswith(TODAY)

    # Within the week: nothing asked.
    cloud.emulator.calls.reset()
    started = time.monotonic()
    again, text = status(cloud, launched)
    warm_s = time.monotonic() - started
    assert get_products(cloud) == 0
    assert again["hourly_usd"] == s["hourly_usd"] and again["prices"] == s["prices"]
    print(f"status: cold {cold} GetProducts {cold_s:.2f} s, warm 0 calls {warm_s:.2f} s")


def test_prices_older_than_a_week_are_asked_again(cloud: Cloud, launched: Path) -> None:
    status(cloud, launched)
    path = launched / f".gpu_lab/prices/{REGION}.json"
    cache = json.loads(path.read_text())
    eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    cache |= {"fetched": eight_days_ago.strftime("%Y-%m-%dT%H:%M:%SZ"), "hourly_usd": {"g5.xlarge": 9.99}}
    path.write_text(json.dumps(cache))
    cloud.emulator.calls.reset()
    s, _ = status(cloud, launched)
    assert get_products(cloud) >= 1
    assert float(s["hourly_usd"]) == emulated.HOURLY_USD[REGION]["g5.xlarge"]
    assert s["prices"] == f"AWS Price List API, {REGION}, fetched {TODAY}"
    assert json.loads(path.read_text())["fetched"].startswith(TODAY)


def test_no_permission_falls_back_to_the_table_and_says_so(cloud: Cloud, launched: Path) -> None:
    cloud.emulator.faults.add("pricing:GetProducts", "AccessDeniedException",
                              message="User is not authorized to perform: pricing:GetProducts")
    cloud.emulator.calls.reset()
    s, text = status(cloud, launched)
    assert get_products(cloud) >= 1
    assert float(s["hourly_usd"]) == 1.006  # the shipped table's us-east-1 price
    assert s["prices"] == ("shipped table, us-east-1 list prices 2026-11 (eu-west-1 costs up to about 30 % more), "
                           "AWS Price List not reachable: no permission for pricing:GetProducts "
                           "(AccessDeniedException)")
    assert "AWS Price List not reachable: no permission for pricing:GetProducts" in text
    # Not asked again at once (an hour later at the earliest).
    cloud.emulator.calls.reset()
    assert status(cloud, launched)[0]["prices"] == s["prices"]
    assert get_products(cloud) == 0


def test_the_price_list_is_asked_at_its_own_endpoint_only(cloud: Cloud, aws: Any) -> None:
    from botocore.exceptions import ClientError

    pricing = aws("pricing", "us-east-1")
    pages = pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", FormatVersion="aws_v1", PaginationConfig={"PageSize": 2},
        Filters=[{"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION},
                 {"Type": "ANY_OF", "Field": "instanceType", "Value": "g5.xlarge,g6.xlarge"}])
    entries = [json.loads(e) for page in pages for e in page["PriceList"]]
    assert {e["product"]["attributes"]["instanceType"] for e in entries} == {"g5.xlarge", "g6.xlarge"}
    assert cloud.emulator.calls.snapshot()["by_action"]["pricing:GetProducts"] > 1  # pages
    with pytest.raises(ClientError) as refused:
        aws("pricing", REGION).get_products(ServiceCode="AmazonEC2")
    assert refused.value.response["Error"]["Code"] == "EndpointNotFound"
