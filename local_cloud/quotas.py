"""Service Quotas for EC2's on-demand vCPU quotas, as the account a course runs on has them.

moto's Service Quotas backend knows a few default quotas of a few services and nothing of
EC2's vCPU quotas nor of increase requests. This interceptor (``Emulator.interceptors``,
after the fault injector, so an injected ``AccessDeniedException`` wins) answers the Service
Quotas JSON protocol (``X-Amz-Target: ServiceQuotasV20190624.<Operation>``) for service code
``ec2`` with the response shapes of botocore's service model:

* GetServiceQuota (the applied value), GetAWSDefaultServiceQuota (a new account's value);
* RequestServiceQuotaIncrease (PENDING; a second one for a quota with one open is refused
  with ResourceAlreadyExistsException, as AWS does), GetRequestedServiceQuotaChange,
  ListRequestedServiceQuotaChangeHistory, ListRequestedServiceQuotaChangeHistoryByQuota.

The state is per region. An account starts at a new account's quotas (G and VT 0 vCPUs, P 0,
Standard 5); the emulator's account is a course's, whose increase for G and VT (1024 vCPUs)
and P (64) was approved, as its request history shows (``QuotaState(course=True)``, the
default: every test and the demo launch G types). Tests change it in-process::

    emulator.quotas.new_account()                       # every region at a new account's quotas
    emulator.quotas.set("us-east-1", "L-DB2E81BA", 4)   # an applied value
    emulator.quotas.approve(request_id)                 # AWS approved a request: applied
    emulator.quotas.deny(request_id)

or over HTTP: ``GET /_gpu_lab/quotas`` (every region's applied values and requests),
``POST /_gpu_lab/quotas`` with ``{"account": "new"|"course"}``, ``{"region", "quota_code",
"value"}`` or ``{"approve": id}`` / ``{"deny": id}``.

EC2 enforces the same values (local_cloud/aws_rules.py): RunInstances and StartInstances are
refused with VcpuLimitExceeded when the region's pending and running vCPUs of the type's group
plus the new ones exceed the quota (``check_vcpus``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

TARGET_PREFIX = "ServiceQuotasV20190624"
PATH = "/_gpu_lab/quotas"
ACCOUNT_ID = "123456789012"
SERVICE_NAME = "Amazon Elastic Compute Cloud (Amazon EC2)"

# code -> (name, usage class, a new account's value in vCPUs)
QUOTAS: dict[str, tuple[str, str, float]] = {
    "L-1216C47A": ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "Standard/OnDemand", 5.0),
    "L-DB2E81BA": ("Running On-Demand G and VT instances", "G/OnDemand", 0.0),
    "L-417A185B": ("Running On-Demand P instances", "P/OnDemand", 0.0),
    "L-74FC7D96": ("Running On-Demand F instances", "F/OnDemand", 0.0),
    "L-7295265B": ("Running On-Demand X instances", "X/OnDemand", 0.0),
    "L-1945791B": ("Running On-Demand Inf instances", "Inf/OnDemand", 0.0),
    "L-2C3B7624": ("Running On-Demand Trn instances", "Trn/OnDemand", 0.0),
    "L-6E869C2A": ("Running On-Demand DL instances", "DL/OnDemand", 0.0),
    # Spot: a request's vCPUs count whether it runs or waits (local_cloud/spot.py has the codes by group).
    "L-34B43A08": ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "Standard/Spot", 5.0),
    "L-3819A6DF": ("All G and VT Spot Instance Requests", "G/Spot", 0.0),
    "L-7212CCBC": ("All P Spot Instance Requests", "P/Spot", 0.0),
}
# The course account's approved increases.
COURSE = {"L-DB2E81BA": 1024.0, "L-417A185B": 64.0, "L-3819A6DF": 1024.0}
_FAMILIES = {
    **dict.fromkeys(("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"), "L-1216C47A"),
    **dict.fromkeys(("g", "gr", "vt"), "L-DB2E81BA"),
    "p": "L-417A185B", "f": "L-74FC7D96", "x": "L-7295265B", "inf": "L-1945791B", "trn": "L-2C3B7624",
    "dl": "L-6E869C2A",
}
OPEN = ("PENDING", "CASE_OPENED")

# The emulator whose quotas EC2 enforces (aws_rules.py): moto's backends are per process, and so is this.
ACTIVE: QuotaState | None = None


def quota_code(instance_type: str) -> str:
    """The quota of the instance type's group ('' for one EC2 does not limit by vCPUs here)."""
    letters = re.match(r"[a-z]+", instance_type.split(".", 1)[0].lower())
    return _FAMILIES.get(letters.group(0), "") if letters else ""


def vcpu_limit_message(limit: float) -> str:
    """EC2's wording, word for word."""
    return (f"You have requested more vCPU capacity than your current vCPU limit of {int(limit)} allows for the "
            "instance bucket that the specified instance type belongs to. Please visit "
            "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.")


class QuotaState:
    """Each region's applied quota values and increase requests."""

    def __init__(self, course: bool = True) -> None:
        self._lock = threading.Lock()
        self.course = course
        self._applied: dict[str, dict[str, float]] = {}
        self._requests: dict[str, list[dict[str, Any]]] = {}
        self._approved_at = dt.datetime(2026, 8, 24, 9, 30, tzinfo=dt.UTC)  # before the term

    # --- control (tests, the HTTP endpoint)
    def reset(self, course: bool | None = None) -> None:
        with self._lock:
            self.course = self.course if course is None else course
            self._applied.clear()
            self._requests.clear()

    def new_account(self) -> None:
        self.reset(course=False)

    def set(self, region: str, code: str, value: float) -> None:
        with self._lock:
            self._region(region)[0][code] = float(value)

    def approve(self, request_id: str) -> dict[str, Any]:
        return self._decide(request_id, "APPROVED")

    def deny(self, request_id: str) -> dict[str, Any]:
        return self._decide(request_id, "DENIED")

    def value(self, region: str, code: str) -> float:
        with self._lock:
            return self._region(region)[0].get(code, QUOTAS[code][2] if code in QUOTAS else 0.0)

    def requests(self, region: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._region(region)[1]]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"course": self.course,
                    "regions": {region: {"applied": dict(applied), "requests": list(self._requests[region])}
                                for region, applied in self._applied.items()}}

    def _decide(self, request_id: str, status: str) -> dict[str, Any]:
        with self._lock:
            for region, requests in self._requests.items():
                for request in requests:
                    if request["Id"] == request_id:
                        request.update(Status=status, LastUpdated=_now())
                        if status == "APPROVED":
                            self._applied[region][request["QuotaCode"]] = float(request["DesiredValue"])
                        return dict(request)
        raise KeyError(f"no quota request {request_id}")

    def _region(self, region: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The region's state, made on first use (a course account: its approved increases)."""
        if region not in self._applied:
            self._applied[region], self._requests[region] = {}, []
            if self.course:
                for code, value in COURSE.items():
                    request = _change(region, code, value, "APPROVED", self._approved_at)
                    request["CaseId"] = "case-" + request["Id"][:10]
                    self._requests[region].append(request)
                    self._applied[region][code] = value
        return self._applied[region], self._requests[region]

    # --- the Service Quotas API
    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None
                 ) -> tuple[int, dict[str, str], bytes] | None:
        if environ.get("PATH_INFO") == PATH:
            return self._control(environ.get("REQUEST_METHOD", "GET"), body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(TARGET_PREFIX + "."):
            return None
        operation = target.split(".", 1)[1]
        region = _region_of(environ)
        try:
            params = json.loads(body or b"{}")
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                return None  # the rest of Service Quotas: moto's
            return _answer(200, handler(region, params))
        except ServiceQuotasError as e:
            return _answer(400, {"__type": e.code, "message": e.message})
        except (ValueError, KeyError, TypeError) as e:
            return _answer(400, {"__type": "IllegalArgumentException", "message": str(e)})

    def _quota(self, region: str, params: Mapping[str, Any]) -> str:
        service, code = params.get("ServiceCode"), params.get("QuotaCode")
        if not service or not code:
            raise ServiceQuotasError("IllegalArgumentException", "ServiceCode and QuotaCode are required.")
        if service != "ec2" or code not in QUOTAS:
            raise ServiceQuotasError("NoSuchResourceException",
                                     f"The request failed because the specified quota {code} of service {service} "
                                     "does not exist.")
        return str(code)

    def _op_GetServiceQuota(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        code = self._quota(region, params)
        return {"Quota": _service_quota(region, code, self.value(region, code), applied=True)}

    def _op_GetAWSDefaultServiceQuota(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        code = self._quota(region, params)
        return {"Quota": _service_quota(region, code, QUOTAS[code][2], applied=False)}

    def _op_RequestServiceQuotaIncrease(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        code = self._quota(region, params)
        desired = float(params["DesiredValue"])
        with self._lock:
            applied, requests = self._region(region)
            current = applied.get(code, QUOTAS[code][2])
            if desired <= current:
                raise ServiceQuotasError("IllegalArgumentException",
                                         f"The desired value {desired} must be greater than the current quota "
                                         f"value {current}.")
            if any(r["QuotaCode"] == code and r["Status"] in OPEN for r in requests):
                raise ServiceQuotasError("ResourceAlreadyExistsException",
                                         "The specified resource already exists: a quota increase request for "
                                         f"{code} is already open.")
            request = _change(region, code, desired, "PENDING", _now())
            requests.append(request)
            return {"RequestedQuota": dict(request)}

    def _op_GetRequestedServiceQuotaChange(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        wanted = params.get("RequestId")
        found = [r for r in self.requests(region) if r["Id"] == wanted]
        if not found:
            raise ServiceQuotasError("NoSuchResourceException", f"The request {wanted} does not exist.")
        return {"RequestedQuota": found[0]}

    def _op_ListRequestedServiceQuotaChangeHistory(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        found = [r for r in self.requests(region)
                 if params.get("ServiceCode") in (None, r["ServiceCode"])
                 and params.get("Status") in (None, r["Status"])]
        return {"RequestedQuotas": found}

    def _op_ListRequestedServiceQuotaChangeHistoryByQuota(self, region: str, params: dict[str, Any]) -> dict[str, Any]:
        code = self._quota(region, params)
        found = [r for r in self.requests(region)
                 if r["QuotaCode"] == code and params.get("Status") in (None, r["Status"])]
        return {"RequestedQuotas": found}

    def _control(self, method: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        if method == "GET":
            return 200, headers, json.dumps(self.snapshot(), default=str).encode()
        if method != "POST":
            return 405, headers, json.dumps({"error": f"{method} {PATH}: use GET or POST"}).encode()
        try:
            spec = json.loads(body or b"{}")
            if "account" in spec:
                if spec["account"] not in ("new", "course"):
                    raise ValueError("account is new or course")
                self.reset(course=spec["account"] == "course")
                answer: Any = {"account": spec["account"]}
            elif "approve" in spec:
                answer = self.approve(str(spec["approve"]))
            elif "deny" in spec:
                answer = self.deny(str(spec["deny"]))
            else:
                self.set(str(spec["region"]), str(spec["quota_code"]), float(spec["value"]))
                answer = {"region": spec["region"], "quota_code": spec["quota_code"], "value": float(spec["value"])}
        except (ValueError, KeyError, TypeError) as e:
            return 400, headers, json.dumps({"error": str(e)}).encode()
        return 200, headers, json.dumps(answer, default=str).encode()


class ServiceQuotasError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _region_of(environ: Mapping[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:  # AWS4-HMAC-SHA256 Credential=KEY/20250101/us-east-1/servicequotas/aws4_request, ...
        return auth.split("Credential=")[1].split(",")[0].split("/")[2]
    except IndexError:
        return "us-east-1"


def _answer(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}, \
        json.dumps(payload).encode()


def _service_quota(region: str, code: str, value: float, applied: bool) -> dict[str, Any]:
    name, usage_class, _ = QUOTAS[code]
    owner = ACCOUNT_ID if applied else ""
    return {
        "ServiceCode": "ec2", "ServiceName": SERVICE_NAME,
        "QuotaArn": f"arn:aws:servicequotas:{region}:{owner}:ec2/{code}", "QuotaCode": code, "QuotaName": name,
        "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False,
        "UsageMetric": {"MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount",
                        "MetricDimensions": {"Class": usage_class, "Resource": "vCPU", "Service": "EC2",
                                             "Type": "Resource"},
                        "MetricStatisticRecommendation": "Maximum"},
        "QuotaAppliedAtLevel": "ACCOUNT",
        "Description": f"Maximum number of vCPUs assigned to the {name}.",
    }


def _change(region: str, code: str, desired: float, status: str, when: dt.datetime | float) -> dict[str, Any]:
    stamp = when.timestamp() if isinstance(when, dt.datetime) else when
    return {
        "Id": uuid.uuid4().hex + uuid.uuid4().hex[:10], "ServiceCode": "ec2", "ServiceName": SERVICE_NAME,
        "QuotaCode": code, "QuotaName": QUOTAS[code][0], "DesiredValue": float(desired), "Status": status,
        "Created": stamp, "LastUpdated": stamp,
        "Requester": json.dumps({"accountId": ACCOUNT_ID, "callerArn": f"arn:aws:iam::{ACCOUNT_ID}:user/gpu-lab"}),
        "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT_ID}:ec2/{code}", "GlobalQuota": False, "Unit": "None",
        "QuotaRequestedAtLevel": "ACCOUNT",
    }


# --- EC2's side: what aws_rules.py enforces --------------------------------------------------

def type_vcpus(instance_type: str) -> int:
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return int(INSTANCE_TYPES.get(instance_type, {}).get("VCpuInfo", {}).get("DefaultVCpus", 0))


def market_code(instance_type: str, spot: bool) -> str:
    """The on-demand quota of the type's group, or its spot quota."""
    from local_cloud.spot import SPOT_QUOTA_OF

    code = quota_code(instance_type)
    return SPOT_QUOTA_OF.get(code, "") if spot else code


def check_vcpus(backend: Any, adding: list[str], spot: bool = False) -> None:
    """Raises EC2's VcpuLimitExceeded when the instances ``adding`` (their types; Spot Instances
    when ``spot``) would take a group of the backend's region over its on-demand or spot quota,
    counting what is pending or running there in the same market."""
    state = ACTIVE
    if state is None or not adding:
        return
    from moto.ec2.exceptions import EC2ClientError

    needed: dict[str, int] = {}
    for instance_type in adding:
        code = market_code(instance_type, spot)
        if code:
            needed[code] = needed.get(code, 0) + type_vcpus(instance_type)
    if not needed:
        return
    running: dict[str, int] = {}
    for instance in backend.all_instances():
        if instance.state in ("pending", "running"):
            code = market_code(instance.instance_type, getattr(instance, "lifecycle", None) == "spot")
            running[code] = running.get(code, 0) + type_vcpus(instance.instance_type)
    for code, vcpus in needed.items():
        limit = state.value(backend.region_name, code)
        if running.get(code, 0) + vcpus > limit:
            raise EC2ClientError("VcpuLimitExceeded", vcpu_limit_message(limit))
