# Copyright: gpu_lab developers
# MIT License
"""The vCPU quotas (on-demand, and spot for a spot lab), checked before a launch creates anything.

AWS limits the vCPUs an account runs on demand per region and per group of instance families
(Service Quotas, service code ``ec2``), and the vCPUs of its Spot Instance requests the same way
(its own quotas: All G and VT Spot Instance Requests...). A new account's G and VT quota is usually 0, and
RunInstances then says ``VcpuLimitExceeded`` only after the key pair and the security group
exist. Here, from what csdl.gpu_lab.lab_info read (each quota's value, the vCPUs that run in
the region), the check step decides for every lab of a region in play order which candidates
fit, and says what to ask AWS for when none does. Pure: no call is made here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_CODE = "ec2"
# The quota of each group of instance families (AWS's "On-Demand Instance quotas").
QUOTA_NAMES = {
    "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "L-DB2E81BA": "Running On-Demand G and VT instances",
    "L-417A185B": "Running On-Demand P instances",
    "L-74FC7D96": "Running On-Demand F instances",
    "L-7295265B": "Running On-Demand X instances",
    "L-1945791B": "Running On-Demand Inf instances",
    "L-2C3B7624": "Running On-Demand Trn instances",
    "L-6E869C2A": "Running On-Demand DL instances",
}
# The spot quota of each group, by its on-demand quota (AWS's "Spot Instance quotas").
SPOT_QUOTAS = {
    "L-1216C47A": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
    "L-DB2E81BA": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "L-417A185B": ("L-7212CCBC", "All P Spot Instance Requests"),
    "L-74FC7D96": ("L-88CF9481", "All F Spot Instance Requests"),
    "L-7295265B": ("L-E3A00192", "All X Spot Instance Requests"),
    "L-1945791B": ("L-B5D1601B", "All Inf Spot Instance Requests"),
    "L-2C3B7624": ("L-6B0D517C", "All Trn Spot Instance Requests"),
    "L-6E869C2A": ("L-85EED4F7", "All DL Spot Instance Requests"),
}
QUOTA_NAMES.update(dict(SPOT_QUOTAS.values()))
# A family's leading letters -> its quota. Families not named here (mac, u-, hpc) are left to
# RunInstances: their quotas count other things (dedicated hosts) or are rare.
FAMILY_QUOTAS = {
    **dict.fromkeys(("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"), "L-1216C47A"),
    **dict.fromkeys(("g", "gr", "vt"), "L-DB2E81BA"),
    "p": "L-417A185B",
    "f": "L-74FC7D96",
    "x": "L-7295265B",
    "inf": "L-1945791B",
    "trn": "L-2C3B7624",
    "dl": "L-6E869C2A",
}
# A request still being decided: a second one for the same quota would be a duplicate.
OPEN_STATUSES = ("PENDING", "CASE_OPENED")
CONSOLE_PATH = ("Service Quotas console (https://console.aws.amazon.com/servicequotas/home), region {region}, "
                "AWS services, Amazon Elastic Compute Cloud (Amazon EC2), {name}, Request increase at account level")


def quota_code(instance_type: str, market: str = "on-demand") -> str:
    """The quota code of the type's group in the market ('' when gpu_lab does not check that group)."""
    family = instance_type.split(".", 1)[0].lower()
    letters = re.match(r"[a-z]+", family)
    code = FAMILY_QUOTAS.get(letters.group(0), "") if letters else ""
    return SPOT_QUOTAS.get(code, ("", ""))[0] if market == "spot" and code else code


def quota_codes(instance_types: Iterable[str], markets: Iterable[str] = ("on-demand",)) -> list[str]:
    types = list(instance_types)
    return list(dict.fromkeys(c for m in markets for c in (quota_code(t, m) for t in types) if c))


def quota_name(code: str) -> str:
    return QUOTA_NAMES.get(code, code)


def in_use(running: Mapping[str, Any], spot: Mapping[str, Any] | None = None) -> dict[str, int]:
    """vCPUs running per quota code, from lab_info's vCPUs running per instance type on demand
    (``running``) and as Spot Instances (``spot``)."""
    used: dict[str, int] = {}
    for (instance_type, vcpus), market in [*((r, "on-demand") for r in running.items()),
                                           *((r, "spot") for r in (spot or {}).items())]:
        code = quota_code(instance_type, market)
        if code:
            used[code] = used.get(code, 0) + int(vcpus or 0)
    return used


@dataclass(frozen=True)
class Want:
    """A lab that needs a new instance: its name and its candidates with their vCPUs, in order."""

    lab: str
    candidates: list[tuple[str, int]]
    market: str = "on-demand"


@dataclass
class Fit:
    """What the quota leaves a lab: the candidates to try, those skipped (as launch attempts),
    and when none is left, the one message; ``request`` is what would fit its first candidate
    (quota code, value), when that one does not fit."""

    candidates: list[str]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    msg: str = ""
    request: tuple[str, int] | None = None
    facts: str = ""  # msg without how to ask for more (a request filed says it instead)

    @property
    def fits(self) -> bool:
        return bool(self.candidates)


@dataclass(frozen=True)
class RegionQuotas:
    """What lab_info read of one region: each quota's value (None: not known) and the vCPUs running
    per quota code; ``unavailable`` says why Service Quotas could not be read ('' when it could)."""

    region: str
    values: Mapping[str, float | None]
    used: Mapping[str, int]
    unavailable: str = ""


def decide(quotas: RegionQuotas, wants: list[Want]) -> dict[str, Fit]:
    """Which candidates fit each lab, in play order: a lab that fits takes its first fitting
    candidate's vCPUs from what is left for the labs after it (a class of 30 against a quota
    of 64 vCPUs: the first 16 of 4 vCPUs fit). A candidate whose quota is not known is kept
    (RunInstances decides, as without the check); so is every candidate when Service Quotas
    could not be read."""
    taken: dict[str, int] = dict(quotas.used)
    # What the labs before that did not fit would need: a later lab asks for room for them too.
    queued: dict[str, int] = {}
    result: dict[str, Fit] = {}
    for want in wants:
        if quotas.unavailable:
            result[want.lab] = Fit([t for t, _rest in want.candidates])
            continue
        kept: list[str] = []
        skipped: list[dict[str, Any]] = []
        first_taken: tuple[str, int] | None = None
        for instance_type, vcpus in want.candidates:
            code = quota_code(instance_type, want.market)
            limit = quotas.values.get(code) if code else None
            if limit is None or not vcpus:
                kept.append(instance_type)
                continue
            using = taken.get(code, 0)
            if using + vcpus <= limit:
                kept.append(instance_type)
                first_taken = first_taken or (code, vcpus)
                continue
            skipped.append({"type": instance_type, "zone": "", "outcome": "quota", "code": "", "market": want.market,
                            "message": f"{quota_name(code)} ({code}) is {_n(limit)} vCPUs, {using} in use, "
                                       f"{instance_type} needs {vcpus}"})
        first_type, first_vcpus = want.candidates[0] if want.candidates else ("", 0)
        first_code = quota_code(first_type, want.market)
        request = None
        if skipped and skipped[0]["type"] == first_type and first_code:
            request = (first_code, taken.get(first_code, 0) + queued.get(first_code, 0) + first_vcpus)
            queued[first_code] = queued.get(first_code, 0) + first_vcpus
        if first_taken:
            taken[first_taken[0]] = taken.get(first_taken[0], 0) + first_taken[1]
        fit = Fit(kept, skipped, request=request)
        if not kept:
            fit.facts = no_fit_facts(want, quotas, taken)
            fit.msg = f"{fit.facts} {how_to_ask(quotas.region, first_code, request[1] if request else first_vcpus)}"
        result[want.lab] = fit
    return result


def _n(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def no_fit_facts(want: Want, quotas: RegionQuotas, taken: Mapping[str, int]) -> str:
    """The start of the message of a lab no candidate of which fits: each quota, what is in
    use, what is needed, and that nothing was created (how_to_ask follows)."""
    by_code: dict[str, list[tuple[str, int]]] = {}
    for instance_type, vcpus in want.candidates:
        by_code.setdefault(quota_code(instance_type, want.market), []).append((instance_type, vcpus))
    said = []
    for code, types in by_code.items():
        needs = ", ".join(f"{t} needs {v}" for t, v in types)
        said.append(f"{quota_name(code)} ({code}) is {_n(quotas.values.get(code) or 0)} vCPUs with "
                    f"{taken.get(code, 0)} in use ({needs})")
    return (f"Lab {want.lab} does not fit the account's {want.market} vCPU quota in {quotas.region}: "
            f"{'; '.join(said)}, so nothing was created.")


def how_to_ask(region: str, code: str, desired: int) -> str:
    """Exactly how to ask AWS for ``desired`` vCPUs of the quota: the console, the command, the opt-in."""
    console = CONSOLE_PATH.format(region=region, name=quota_name(code))
    return (f"Ask AWS for at least {desired} vCPUs: {console}; or `aws service-quotas request-service-quota-increase "
            f"--service-code {SERVICE_CODE} --quota-code {code} --desired-value {desired} --region {region}`; "
            "or re-run with -e gpu_lab_request_quota=true to have gpu_lab file it; then launch.yml again once "
            "AWS approved it (often minutes, sometimes a day).")


def requests_wanted(fits: Mapping[str, Fit]) -> dict[str, int]:
    """One request per quota code for all the labs of a region: the largest value any lab's
    first candidate needs (then every one of them fits)."""
    wanted: dict[str, int] = {}
    for fit in fits.values():
        if fit.request:
            code, value = fit.request
            wanted[code] = max(wanted.get(code, 0), value)
    return wanted


def request_sentence(answer: Mapping[str, Any], region: str) -> str:
    """What the request step did, for the lab's message or launch note."""
    name = f"{quota_name(str(answer.get('quota_code')))} ({answer.get('quota_code')})"
    if answer.get("error"):
        return f"Could not ask AWS to raise {name} in {region}: {answer['error']}"
    if answer.get("planned"):
        return f"Check mode: would ask AWS to raise {name} in {region} to {_n(answer.get('desired_value') or 0)} vCPUs."
    verb = "Asked AWS" if answer.get("filed") else "A request is already open asking AWS"
    return (f"{verb} to raise {name} in {region} to {_n(answer.get('desired_value') or 0)} vCPUs: request "
            f"{answer.get('id')}, status {answer.get('status')}.")


def unavailable_warning(region: str, reason: str) -> str:
    return (f"Could not read the on-demand vCPU quotas of {region} from Service Quotas ({reason}): going on, and "
            "RunInstances decides (allow servicequotas:GetServiceQuota to have quotas checked before anything "
            "is created).")


def open_requests(changes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The requests still being decided, as status.yml shows them."""
    return [{"id": c.get("Id", ""), "quota_code": c.get("QuotaCode", ""), "quota_name": c.get("QuotaName", ""),
             "desired_value": c.get("DesiredValue"), "status": c.get("Status", ""),
             "created": str(c.get("Created", ""))}
            for c in changes if c.get("Status") in OPEN_STATUSES]
