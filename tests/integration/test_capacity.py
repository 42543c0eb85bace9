"""Capacity failover: a launch moves on from a (type, zone) AWS has no capacity for, at once,
says what it got, and when every candidate fails says what was tried and leaves nothing."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cloud import Cloud
from tests.playbook import recap, run_playbook

LAB = {"gpu_lab_name": "cap", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       "gpu_lab_confirm_teardown": "cap"}
CAPACITY = ("InsufficientInstanceCapacity", 500,
            "We currently do not have sufficient {type} capacity in the Availability Zone you requested ({zone}).")
QUOTA = ("VcpuLimitExceeded", 400,
         "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket "
         "that the specified instance type belongs to.")


class NoCapacity:
    """An emulator interceptor: RunInstances/StartInstances of chosen (type, zone) pairs fail
    as AWS fails them (the EC2 query protocol's error document, AWS's status code)."""

    def __init__(self, refuse: Callable[[str, str], tuple[str, int, str] | None]) -> None:
        self.refuse = refuse
        self.runs: list[tuple[str, str, str]] = []   # (type, zone, answer code or "ok")
        self.subnet_zones: dict[str, str] = {}

    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None) -> tuple[int, dict, bytes] | None:
        if action not in ("ec2:RunInstances", "ec2:StartInstances"):
            return None
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        itype = form.get("InstanceType", "")
        zone = self.subnet_zones.get(form.get("NetworkInterface.1.SubnetId", ""), "")
        if action == "ec2:StartInstances":
            itype, zone = "start", form.get("InstanceId.1", "")
        answer = self.refuse(itype, zone)
        self.runs.append((itype, zone, answer[0] if answer else "ok"))
        if answer is None:
            return None
        code, status, message = answer
        payload = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                   f"<Message>{message.format(type=itype, zone=zone)}</Message></Error></Errors>"
                   "<RequestID>gpu-lab-fault</RequestID></Response>").encode()
        return status, {"Content-Type": "text/xml"}, payload


@pytest.fixture
def refuse(cloud: Cloud, aws: Callable[..., Any]) -> Iterator[Callable[..., NoCapacity]]:
    installed: list[NoCapacity] = []
    subnets = {s["SubnetId"]: s["AvailabilityZone"] for s in aws("ec2").describe_subnets()["Subnets"]}

    def install(rule: Callable[[str, str], tuple[str, int, str] | None]) -> NoCapacity:
        hook = NoCapacity(rule)
        hook.subnet_zones = subnets
        cloud.emulator.interceptors.append(hook)
        installed.append(hook)
        return hook

    yield install
    for hook in installed:
        if hook in cloud.emulator.interceptors:
            cloud.emulator.interceptors.remove(hook)


def lab_resources(aws: Callable[..., Any]) -> dict[str, list[Any]]:
    ec2 = aws("ec2")
    lab = [{"Name": "tag:gpu_lab:lab", "Values": ["cap"]}]
    return {
        "instances": [i for r in ec2.describe_instances(Filters=lab)["Reservations"] for i in r["Instances"]
                      if i["State"]["Name"] != "terminated"],
        "addresses": ec2.describe_addresses(Filters=lab)["Addresses"],
        "groups": ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["cap-ssh"]}])["SecurityGroups"],
    }


def flat(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


def test_moves_to_the_next_zone_at_once(cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., NoCapacity],
                                        tmp_path: Path) -> None:
    hook = refuse(lambda t, z: CAPACITY if t == "g6.xlarge" and z in ("us-east-1a", "us-east-1b") else None)
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    # One try per (type, zone): a capacity error is never retried, so it surfaces in seconds.
    assert hook.runs == [("g6.xlarge", "us-east-1a", "InsufficientInstanceCapacity"),
                         ("g6.xlarge", "us-east-1b", "InsufficientInstanceCapacity"),
                         ("g6.xlarge", "us-east-1c", "ok")]
    out = flat(result)
    assert ("Launched g6.xlarge in us-east-1c, after g6.xlarge in us-east-1a: InsufficientInstanceCapacity; "
            "g6.xlarge in us-east-1b: InsufficientInstanceCapacity.") in out, out[-3000:]
    found = lab_resources(aws)
    assert [(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in found["instances"]] == [
        ("g6.xlarge", "us-east-1c")]
    assert len(found["addresses"]) == 1 and found["addresses"][0]["InstanceId"] == found["instances"][0]["InstanceId"]


def test_falls_over_to_the_next_type(cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., NoCapacity],
                                     tmp_path: Path) -> None:
    hook = refuse(lambda t, z: QUOTA if t == "g6.xlarge" else None)
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    # A quota is regional: the other zones of that type are not tried.
    assert hook.runs == [("g6.xlarge", "us-east-1a", "VcpuLimitExceeded"), ("g5.xlarge", "us-east-1a", "ok")]
    assert "Launched g5.xlarge in us-east-1a, after g6.xlarge in us-east-1a: VcpuLimitExceeded." in flat(result)
    assert [i["InstanceType"] for i in lab_resources(aws)["instances"]] == ["g5.xlarge"]


def test_zones_setting_limits_where_it_tries(cloud: Cloud, aws: Callable[..., Any],
                                             refuse: Callable[..., NoCapacity], tmp_path: Path) -> None:
    hook = refuse(lambda t, z: CAPACITY if z == "us-east-1d" else None)
    result = run_playbook("launch", cloud.env(), tmp_path,
                          {**LAB, "gpu_lab_zones": "us-east-1d,us-east-1f", "gpu_lab_fallback_instance_types": "[]"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert hook.runs == [("g6.xlarge", "us-east-1d", "InsufficientInstanceCapacity"), ("g6.xlarge", "us-east-1f", "ok")]


def test_no_capacity_anywhere_says_what_was_tried_and_leaves_nothing(
        cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., NoCapacity], tmp_path: Path) -> None:
    hook = refuse(lambda t, z: QUOTA if t.startswith("g4dn") else CAPACITY)
    start = time.monotonic()
    result = run_playbook("launch", cloud.env(), tmp_path, {**LAB, "gpu_lab_zones": "us-east-1a,us-east-1b"})
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    out = flat(result)
    assert ("No candidate instance could be launched in us-east-1 (g6.xlarge in us-east-1a: "
            "InsufficientInstanceCapacity; g6.xlarge in us-east-1b: InsufficientInstanceCapacity; g5.xlarge in "
            "us-east-1a: InsufficientInstanceCapacity; g5.xlarge in us-east-1b: InsufficientInstanceCapacity; "
            "g4dn.xlarge in us-east-1a: VcpuLimitExceeded).") in out, out[-3000:]
    assert "Running On-Demand G and VT instances (L-DB2E81BA)" in out
    assert len(hook.runs) == 5, hook.runs
    assert lab_resources(aws) == {"instances": [], "addresses": [], "groups": []}
    # Not a timing test: a sanity bound far above the few seconds it takes (docs/reliability.md).
    assert elapsed < 120, elapsed


def test_start_without_capacity_changes_nothing(cloud: Cloud, aws: Callable[..., Any],
                                                refuse: Callable[..., NoCapacity], tmp_path: Path) -> None:
    assert run_playbook("launch", cloud.env(), tmp_path, LAB).returncode == 0
    assert run_playbook("stop", cloud.env(), tmp_path, LAB).returncode == 0
    before = lab_resources(aws)
    hook = refuse(lambda t, z: CAPACITY if t == "start" else None)
    result = run_playbook("start", cloud.env(), tmp_path, LAB)
    assert result.returncode != 0
    out = flat(result)
    assert "AWS has no g6.xlarge capacity in us-east-1a right now (InsufficientInstanceCapacity)" in out, out[-3000:]
    assert "Try start.yml again in a few minutes" in out and "gpu_lab_zones" in out
    assert len(hook.runs) == 1
    after = lab_resources(aws)
    assert [i["State"]["Name"] for i in after["instances"]] == ["stopped"]
    assert after["addresses"] == before["addresses"]
    cloud.emulator.interceptors.remove(hook)
    again = run_playbook("start", cloud.env(), tmp_path, LAB)
    assert again.returncode == 0 and recap(again.stdout)["changed"] >= 1, again.stdout[-3000:]
