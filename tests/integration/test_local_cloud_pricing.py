"""local_cloud/pricing.py: the emulated Price List API answers GetProducts as AWS does (filters,
pages, errors, only at the API's own endpoints), without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

pricing = pytest.importorskip("local_cloud.pricing", reason="no local_cloud/: the emulator is not built in")

EC2 = {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1"}


def region_filter(region: str) -> dict[str, str]:
    return {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}


def test_us_east_1_is_aws_list_price_and_the_shipped_table() -> None:
    from plugins.plugin_utils import lab_prices

    assert {t: p for t, p in pricing.HOURLY_USD["us-east-1"].items() if t in lab_prices.HOURLY_USD} == \
        lab_prices.HOURLY_USD
    assert pricing.GP3_GIB_MONTH_USD["us-east-1"] == lab_prices.GP3_GIB_MONTH_USD
    assert pricing.IPV4_HOUR_USD["us-east-1"] == lab_prices.PUBLIC_IPV4_HOUR_USD
    assert pricing.HOURLY_USD["eu-west-1"]["g5.xlarge"] != pricing.HOURLY_USD["us-east-1"]["g5.xlarge"]
    assert pricing.HOURLY_USD["us-west-2"]["g6.xlarge"] != pricing.HOURLY_USD["us-east-1"]["g6.xlarge"]


def test_entries_are_json_strings_with_the_published_shape() -> None:
    status, body = pricing.get_products(EC2 | {"Filters": [region_filter("eu-west-1"), {
        "Type": "TERM_MATCH", "Field": "instanceType", "Value": "g5.xlarge"}]})
    assert status == 200 and body["FormatVersion"] == "aws_v1"
    entries = [json.loads(e) for e in body["PriceList"]]
    assert all(isinstance(e, str) for e in body["PriceList"])
    assert {e["product"]["attributes"]["operatingSystem"] for e in entries} == {"Linux", "Windows"}
    linux = next(e for e in entries if e["product"]["attributes"]["usagetype"] == "EU-BoxUsage:g5.xlarge"
                 and e["product"]["attributes"]["operatingSystem"] == "Linux"
                 and e["product"]["attributes"]["tenancy"] == "Shared")
    (offer,) = linux["terms"]["OnDemand"].values()
    (dimension,) = offer["priceDimensions"].values()
    assert dimension["pricePerUnit"] == {"USD": "1.1230000000"} and dimension["unit"] == "Hrs"
    assert "Reserved" in linux["terms"] and linux["product"]["productFamily"] == "Compute Instance"


def test_any_of_none_of_contains_and_case() -> None:
    def types(flt: dict[str, str]) -> set[str]:
        status, body = pricing.get_products(EC2 | {"Filters": [region_filter("us-east-1"), flt]})
        assert status == 200, body
        return {json.loads(e)["product"]["attributes"].get("instanceType", "") for e in body["PriceList"]}

    assert types({"Type": "ANY_OF", "Field": "instanceType", "Value": "g5.xlarge, g6.xlarge"}) == {
        "g5.xlarge", "g6.xlarge"}
    assert "g5.xlarge" not in types({"Type": "NONE_OF", "Field": "instanceType", "Value": "g5.xlarge"})
    assert types({"Type": "CONTAINS", "Field": "instanceType", "Value": "g4dn"}) == {"g4dn.xlarge", "g4dn.2xlarge"}
    assert types({"Type": "TERM_MATCH", "Field": "instanceType", "Value": "G5.XLARGE"}) == {"g5.xlarge"}
    assert types({"Type": "TERM_MATCH", "Field": "noSuchAttribute", "Value": "x"}) == set()


def test_pages_follow_next_token_and_a_bad_token_is_refused() -> None:
    query = EC2 | {"Filters": [region_filter("us-west-2")], "MaxResults": 7}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        status, body = pricing.get_products(query | ({"NextToken": token} if token else {}))
        assert status == 200 and len(body["PriceList"]) <= 7
        seen += body["PriceList"]
        pages += 1
        token = body.get("NextToken")
        if not token:
            break
    everything = pricing.get_products(EC2 | {"Filters": [region_filter("us-west-2")]})[1]["PriceList"]
    assert pages > 1 and seen == everything
    assert pricing.get_products(query | {"NextToken": "bm9wZQ=="})[1]["__type"] == "InvalidNextTokenException"
    other = EC2 | {"Filters": [region_filter("eu-west-1")], "MaxResults": 7}
    first = pricing.get_products(query)[1]["NextToken"]
    assert pricing.get_products(other | {"NextToken": first})[0] == 400


def test_bad_requests_are_refused_as_aws_does() -> None:
    assert pricing.get_products({})[1]["__type"] == "InvalidParameterException"
    assert pricing.get_products(EC2 | {"FormatVersion": "aws_v2"})[1]["__type"] == "InvalidParameterException"
    assert pricing.get_products(EC2 | {"MaxResults": 101})[1]["__type"] == "InvalidParameterException"
    bad = {"Type": "REGEX", "Field": "instanceType", "Value": "g5.*"}
    assert pricing.get_products(EC2 | {"Filters": [bad]})[1]["__type"] == "InvalidParameterException"
    assert pricing.get_products({"ServiceCode": "AmazonNope"})[1]["__type"] == "NotFoundException"


def environ(region: str, operation: str = "GetProducts") -> dict[str, Any]:
    return {"HTTP_X_AMZ_TARGET": f"AWSPriceListService.{operation}",
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=testing/20261202/{region}/pricing/aws4_request, x"}


def test_only_the_api_endpoints_answer() -> None:
    api = pricing.PriceListAPI()
    body = json.dumps(EC2 | {"Filters": [region_filter("eu-west-1")], "MaxResults": 1}).encode()
    status, headers, payload = api(environ("us-east-1"), body, "pricing:GetProducts")
    assert status == 200 and headers["Content-Type"] == "application/x-amz-json-1.1"
    assert len(json.loads(payload)["PriceList"]) == 1
    status, _, payload = api(environ("eu-west-1"), body, "pricing:GetProducts")
    assert status == 404 and json.loads(payload)["__type"] == "EndpointNotFound"
    assert api(environ("eu-central-1", "DescribeServices"), b"{}", "pricing:DescribeServices")[0] == 400
    assert api({"HTTP_X_AMZ_TARGET": "AmazonSSM.GetParameter"}, b"{}", "ssm:GetParameter") is None
    assert api({}, b"Action=DescribeInstances", "ec2:DescribeInstances") is None
