"""The AWS Price List API (service ``pricing``) for the emulated cloud: moto has none.

An emulator interceptor (``Emulator.interceptors``) that answers the JSON protocol's
``AWSPriceListService.GetProducts`` with the response shape of botocore's service model:
``{"FormatVersion": "aws_v1", "PriceList": [<JSON string>, ...], "NextToken": ...}``, each
entry a product as AWS publishes it (``product.attributes``, ``terms.OnDemand`` and
``terms.Reserved``, ``serviceCode``, ``version``, ``publicationDate``). Filters are applied
as the API does: every filter must match; ``TERM_MATCH`` and ``EQUALS`` (case-insensitive,
whole value), ``CONTAINS``, ``ANY_OF`` and ``NONE_OF`` (values comma-separated); the field
``ServiceCode`` is the service. Pages of ``MaxResults`` (1-100, default 100) with an opaque
``NextToken``.

The catalogue (``CATALOGUE``): on-demand Linux prices of the GPU types gpu_lab uses, gp3
storage and public IPv4 addresses, in us-east-1 (the real list prices, the same as
plugins/plugin_utils/lab_prices.py's table), eu-west-1 and us-west-2 (figures of the real
order, different from us-east-1's so a test sees which region was priced), with the rows a
careless query also gets: Windows, dedicated tenancy, SQL Server, unused reservations,
reserved terms, gp3 IOPS and throughput, idle IPv4 addresses.

Only the API's own endpoints answer (the SigV4 scope's region is us-east-1, eu-central-1 or
ap-south-1): a client made for the lab's region has no such endpoint on AWS
(``api.pricing.eu-west-1.amazonaws.com`` does not resolve), here it gets HTTP 404
``EndpointNotFound``. DescribeServices, GetAttributeValues and the price list files are not
emulated (``UnknownOperationException``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TARGET_PREFIX = "AWSPriceListService"
ENDPOINT_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
PUBLICATION = "2026-11-20T18:00:00Z"
VERSION = "20261120180000"

# region -> (location, usage type prefix)
REGIONS = {
    "us-east-1": ("US East (N. Virginia)", ""),
    "us-west-2": ("US West (Oregon)", "USW2-"),
    "eu-west-1": ("EU (Ireland)", "EU-"),
}

# On-demand Linux USD per hour. us-east-1: AWS's list prices (lab_prices.HOURLY_USD).
HOURLY_USD: dict[str, dict[str, float]] = {
    "us-east-1": {"g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g5.xlarge": 1.006, "g5.2xlarge": 1.212,
                  "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6e.xlarge": 1.861, "gr6.4xlarge": 1.5417,
                  "p3.2xlarge": 3.06, "g5g.xlarge": 0.42},
    "eu-west-1": {"g4dn.xlarge": 0.587, "g4dn.2xlarge": 0.838, "g5.xlarge": 1.123, "g5.2xlarge": 1.353,
                  "g6.xlarge": 0.8976, "g6.2xlarge": 1.0904, "g6e.xlarge": 2.075, "p3.2xlarge": 3.305,
                  "g5g.xlarge": 0.469},
    "us-west-2": {"g4dn.xlarge": 0.5418, "g4dn.2xlarge": 0.7746, "g5.xlarge": 1.0362, "g5.2xlarge": 1.2484,
                  "g6.xlarge": 0.8289, "g6.2xlarge": 1.0069, "g6e.xlarge": 1.917, "p3.2xlarge": 3.06,
                  "g5g.xlarge": 0.42},
}
GP3_GIB_MONTH_USD = {"us-east-1": 0.08, "eu-west-1": 0.088, "us-west-2": 0.0816}
IPV4_HOUR_USD = {"us-east-1": 0.005, "eu-west-1": 0.005, "us-west-2": 0.005}


@dataclass(frozen=True)
class Product:
    service: str
    family: str
    attributes: dict[str, str]
    on_demand: float
    unit: str
    description: str

    @property
    def sku(self) -> str:
        key = json.dumps([self.service, self.attributes], sort_keys=True).encode()
        return base64.b32encode(hashlib.sha256(key).digest())[:16].decode()

    def entry(self) -> dict[str, Any]:
        sku, offer = self.sku, "JRTCKXETXF"
        dimension = f"{sku}.{offer}.6YS6EN2CT7"
        terms: dict[str, Any] = {"OnDemand": {f"{sku}.{offer}": {
            "priceDimensions": {dimension: {
                "unit": self.unit, "endRange": "Inf", "description": self.description, "appliesTo": [],
                "rateCode": dimension, "beginRange": "0", "pricePerUnit": {"USD": f"{self.on_demand:.10f}"}}},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": offer, "termAttributes": {}}}}
        if self.family == "Compute Instance":  # a 1-year reservation: its fee is not the list price
            reserved = f"{sku}.6QCMYABX3D"
            terms["Reserved"] = {reserved: {
                "priceDimensions": {f"{reserved}.2TG2D8R56U": {
                    "unit": "Quantity", "description": "Upfront Fee", "appliesTo": [],
                    "rateCode": f"{reserved}.2TG2D8R56U", "pricePerUnit": {"USD": f"{self.on_demand * 5000:.0f}"}}},
                "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "6QCMYABX3D",
                "termAttributes": {"LeaseContractLength": "1yr", "OfferingClass": "standard",
                                   "PurchaseOption": "All Upfront"}}}
        return {"product": {"productFamily": self.family, "attributes": dict(self.attributes), "sku": sku},
                "serviceCode": self.service, "terms": terms, "version": VERSION, "publicationDate": PUBLICATION}


def _instance_rows(region: str, location: str, prefix: str, name: str, usd: float) -> list[Product]:
    base = {"servicecode": "AmazonEC2", "location": location, "locationType": "AWS Region", "regionCode": region,
            "instanceType": name, "instanceFamily": "GPU instance", "operatingSystem": "Linux", "tenancy": "Shared",
            "preInstalledSw": "NA", "capacitystatus": "Used", "licenseModel": "No License required",
            "usagetype": f"{prefix}BoxUsage:{name}", "operation": "RunInstances", "servicename": "Amazon Elastic "
            "Compute Cloud"}
    rows = [(base, usd, f"${usd} per On Demand Linux {name} Instance Hour")]
    rows.append((base | {"operatingSystem": "Windows", "operation": "RunInstances:0002"}, usd + 0.184 * 4,
                 f"Windows {name}"))
    rows.append((base | {"tenancy": "Dedicated", "usagetype": f"{prefix}DedicatedUsage:{name}"}, usd * 1.1,
                 f"Dedicated {name}"))
    rows.append((base | {"preInstalledSw": "SQL Std", "operation": "RunInstances:0006"}, usd + 0.48,
                 f"SQL Server Standard {name}"))
    rows.append((base | {"capacitystatus": "UnusedCapacityReservation",
                         "usagetype": f"{prefix}UnusedBox:{name}"}, usd, f"Unused reservation {name}"))
    return [Product("AmazonEC2", "Compute Instance", attrs, price, "Hrs", text) for attrs, price, text in rows]


def _catalogue() -> list[Product]:
    found: list[Product] = []
    for region, (location, prefix) in REGIONS.items():
        for name, usd in HOURLY_USD[region].items():
            found += _instance_rows(region, location, prefix, name, usd)
        storage = {"servicecode": "AmazonEC2", "location": location, "locationType": "AWS Region",
                   "regionCode": region, "volumeApiName": "gp3", "volumeType": "General Purpose",
                   "storageMedia": "SSD-backed", "usagetype": f"{prefix}EBS:VolumeUsage.gp3", "operation": ""}
        gp3 = GP3_GIB_MONTH_USD[region]
        found.append(Product("AmazonEC2", "Storage", storage, gp3, "GB-Mo",
                             f"${gp3} per GB-month of General Purpose (gp3) provisioned storage"))
        found.append(Product("AmazonEC2", "Storage", storage | {"volumeApiName": "gp2",
                                                                "usagetype": f"{prefix}EBS:VolumeUsage.gp2"},
                             round(gp3 * 1.25, 4), "GB-Mo", "gp2 provisioned storage"))
        found.append(Product("AmazonEC2", "System Operation", storage | {"usagetype": f"{prefix}EBS:VolumeP-IOPS.gp3",
                                                                         "group": "EBS IOPS"},
                             0.005, "IOPS-Mo", "gp3 IOPS above 3000"))
        found.append(Product("AmazonEC2", "Provisioned Throughput",
                             storage | {"usagetype": f"{prefix}EBS:VolumeP-Throughput.gp3"},
                             0.04, "GiBps-mo", "gp3 throughput above 125 MiB/s"))
        ipv4 = {"servicecode": "AmazonVPC", "location": location, "locationType": "AWS Region", "regionCode": region,
                "group": "VPCPublicIPv4Address", "groupDescription": "Hourly charge for Public IPv4 Addresses",
                "operation": "", "usagetype": f"{prefix}PublicIPv4:InUseAddress"}
        usd = IPV4_HOUR_USD[region]
        found.append(Product("AmazonVPC", "IP Address", ipv4, usd, "Hrs",
                             f"${usd} per In-use public IPv4 address per hour"))
        found.append(Product("AmazonVPC", "IP Address", ipv4 | {"usagetype": f"{prefix}PublicIPv4:IdleAddress"},
                             usd, "Hrs", f"${usd} per Idle public IPv4 address per hour"))
        found.append(Product("AmazonVPC", "IP Address", ipv4 | {"usagetype": f"{prefix}PublicIPv4:ContiguousBlock"},
                             0.008, "Hrs", "Contiguous IPv4 block per hour"))
    return found


CATALOGUE = _catalogue()
FILTER_TYPES = ("TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF")


def _matches(product: Product, flt: Mapping[str, Any]) -> bool:
    field, kind, value = str(flt.get("Field", "")), str(flt.get("Type", "")), str(flt.get("Value", ""))
    have = product.service if field == "ServiceCode" else product.family if field == "productFamily" \
        else product.attributes.get(field)
    if have is None:
        return kind == "NONE_OF"
    have_l, value_l = have.lower(), value.lower()
    if kind in ("TERM_MATCH", "EQUALS"):
        return have_l == value_l
    if kind == "CONTAINS":
        return value_l in have_l
    options = [v.strip().lower() for v in value.split(",")]
    return (have_l in options) == (kind == "ANY_OF")


def _error(code: str, message: str, status: int = 400) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}, \
        json.dumps({"__type": code, "Message": message}).encode()


def _region_of(environ: Mapping[str, Any]) -> str | None:
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    try:  # AWS4-HMAC-SHA256 Credential=KEY/20261202/us-east-1/pricing/aws4_request, ...
        return auth.split("Credential=")[1].split(",")[0].split("/")[2]
    except IndexError:
        return None


def get_products(request: Mapping[str, Any], catalogue: Iterable[Product] = CATALOGUE) -> tuple[int, dict[str, Any]]:
    """GetProducts' answer (HTTP status, JSON body) for a request body."""
    service = request.get("ServiceCode")
    if not isinstance(service, str) or not service:
        return 400, {"__type": "InvalidParameterException", "Message": "ServiceCode is required."}
    if request.get("FormatVersion", "aws_v1") != "aws_v1":
        return 400, {"__type": "InvalidParameterException",
                     "Message": f"Invalid FormatVersion {request.get('FormatVersion')!r}: aws_v1 is the only one."}
    filters = request.get("Filters") or []
    for flt in filters:
        if not isinstance(flt, Mapping) or flt.get("Type") not in FILTER_TYPES or not flt.get("Field") \
                or not str(flt.get("Value", "")):
            return 400, {"__type": "InvalidParameterException",
                         "Message": f"Invalid filter {flt!r}: Type one of {', '.join(FILTER_TYPES)}, a Field, a Value."}
    size = request.get("MaxResults", 100)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
        return 400, {"__type": "InvalidParameterException", "Message": "MaxResults must be between 1 and 100."}
    products = [p for p in catalogue if p.service == service and all(_matches(p, f) for f in filters)]
    if not products and service not in {p.service for p in catalogue}:
        return 400, {"__type": "NotFoundException", "Message": f"Service {service} is not found."}
    start = 0
    if request.get("NextToken"):
        try:
            token = json.loads(base64.urlsafe_b64decode(str(request["NextToken"]).encode()))
            start = int(token["start"])
            if token.get("query") != _query_key(request):
                raise ValueError("another query")
        except (ValueError, KeyError, TypeError):
            return 400, {"__type": "InvalidNextTokenException", "Message": "The NextToken is not valid."}
    page = products[start:start + size]
    body: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p.entry()) for p in page]}
    if start + size < len(products):
        body["NextToken"] = base64.urlsafe_b64encode(
            json.dumps({"start": start + size, "query": _query_key(request)}).encode()).decode()
    return 200, body


def _query_key(request: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([request.get("ServiceCode"), request.get("Filters") or []],
                                     sort_keys=True).encode()).hexdigest()[:16]


class PriceListAPI:
    """The interceptor: ``hook(environ, body, action) -> (status, headers, body) | None``."""

    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None
                 ) -> tuple[int, dict[str, str], bytes] | None:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith(TARGET_PREFIX + "."):
            return None
        region = _region_of(environ)
        if region not in ENDPOINT_REGIONS:
            return _error("EndpointNotFound",
                          f"There is no Price List API endpoint in {region} (api.pricing.{region}.amazonaws.com "
                          f"does not resolve): it is served from {', '.join(ENDPOINT_REGIONS)}.", 404)
        operation = target.split(".", 1)[1]
        if operation != "GetProducts":
            return _error("UnknownOperationException", f"{operation} is not emulated by local_cloud.")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _error("SerializationException", "The request body is not JSON.")
        status, answer = get_products(request if isinstance(request, dict) else {})
        if status != 200:
            return _error(answer["__type"], answer["Message"], status)
        return 200, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}, \
            json.dumps(answer).encode()
