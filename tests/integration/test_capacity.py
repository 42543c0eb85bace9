"""Capacity failover: a launch moves on from a (type, zone) AWS has no capacity for, at once,
says what it got, and when every candidate fails says what was tried and leaves nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import recap, run_playbook

LAB = {"gpu_lab_name": "cap", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       "gpu_lab_confirm_teardown": "cap",
       # The AWS half only: no host was set up to look at for unsaved work.
       "gpu_lab_force_teardown": "true"}
CAPACITY = "InsufficientInstanceCapacity"   # HTTP 500, as AWS sends it (local_cloud/faults.py)
QUOTA = "VcpuLimitExceeded"                 # HTTP 400
LAUNCH_CALLS = ["ec2:RunInstances", "ec2:StartInstances"]


def attempt(request: Any) -> tuple[str, str]:
    """(type, zone) of a RunInstances; ("start", instance id) of a StartInstances."""
    if request.operation == "StartInstances":
        return "start", request.first("InstanceId.1") or ""
    return request.first("InstanceType") or "", request.first("zone") or ""


@pytest.fixture
def refuse(cloud: Cloud) -> Iterator[Callable[..., list[tuple[str, str, str]]]]:
    """refuse(code_for) makes the emulator answer each launch attempt (type, zone) with the AWS
    error code_for(type, zone) returns (None: launch); gives the list of every attempt seen,
    as (type, zone, code or "ok"), in order."""
    faults = cloud.emulator.faults

    def install(code_for: Callable[[str, str], str | None]) -> list[tuple[str, str, str]]:
        attempts: list[tuple[str, str, str]] = []

        def observe(request: Any) -> bool:  # selects nothing: only notes the attempt
            attempts.append((*attempt(request), code_for(*attempt(request)) or "ok"))
            return False

        faults.add(LAUNCH_CALLS, "InternalError", where=observe)
        for code in (CAPACITY, QUOTA):
            faults.add(LAUNCH_CALLS, code, where=lambda request, code=code: code_for(*attempt(request)) == code)
        return attempts

    yield install
    faults.clear()


def lab_resources(aws: Callable[..., Any]) -> dict[str, list[Any]]:
    """The capacity lab's live instances, addresses and security group."""
    state = lab_state(aws("ec2"), "cap")
    return {key: state[key] for key in ("instances", "addresses", "groups")}


def flat(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


def test_moves_to_the_next_zone_at_once(cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., list],
                                        tmp_path: Path) -> None:
    runs = refuse(lambda t, z: CAPACITY if t == "g6.xlarge" and z in ("us-east-1a", "us-east-1b") else None)
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    # One try per (type, zone): a capacity error is never retried, so it surfaces in seconds.
    assert runs == [("g6.xlarge", "us-east-1a", "InsufficientInstanceCapacity"),
                         ("g6.xlarge", "us-east-1b", "InsufficientInstanceCapacity"),
                         ("g6.xlarge", "us-east-1c", "ok")]
    out = flat(result)
    assert ("Launched g6.xlarge in us-east-1c, after g6.xlarge in us-east-1a: InsufficientInstanceCapacity; "
            "g6.xlarge in us-east-1b: InsufficientInstanceCapacity.") in out, out[-3000:]
    found = lab_resources(aws)
    assert [(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in found["instances"]] == [
        ("g6.xlarge", "us-east-1c")]
    assert len(found["addresses"]) == 1 and found["addresses"][0]["InstanceId"] == found["instances"][0]["InstanceId"]


def test_falls_over_to_the_next_type(cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., list],
                                     tmp_path: Path) -> None:
    runs = refuse(lambda t, z: QUOTA if t == "g6.xlarge" else None)
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    # A quota is regional: the other zones of that type are not tried.
    assert runs == [("g6.xlarge", "us-east-1a", "VcpuLimitExceeded"), ("g5.xlarge", "us-east-1a", "ok")]
    assert "Launched g5.xlarge in us-east-1a, after g6.xlarge in us-east-1a: VcpuLimitExceeded." in flat(result)
    assert [i["InstanceType"] for i in lab_resources(aws)["instances"]] == ["g5.xlarge"]


def test_zones_setting_limits_where_it_tries(cloud: Cloud, aws: Callable[..., Any],
                                             refuse: Callable[..., list], tmp_path: Path) -> None:
    runs = refuse(lambda t, z: CAPACITY if z == "us-east-1d" else None)
    result = run_playbook("launch", cloud.env(), tmp_path,
                          {**LAB, "gpu_lab_zones": "us-east-1d,us-east-1f", "gpu_lab_fallback_instance_types": "[]"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert runs == [("g6.xlarge", "us-east-1d", "InsufficientInstanceCapacity"), ("g6.xlarge", "us-east-1f", "ok")]


def test_no_capacity_anywhere_says_what_was_tried_and_leaves_nothing(
        cloud: Cloud, aws: Callable[..., Any], refuse: Callable[..., list], tmp_path: Path) -> None:
    runs = refuse(lambda t, z: QUOTA if t.startswith("g4dn") else CAPACITY)
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
    assert len(runs) == 5, runs
    assert lab_resources(aws) == {"instances": [], "addresses": [], "groups": []}
    # Not a timing test: a sanity bound far above the few seconds it takes (docs/reliability.md).
    assert elapsed < 120, elapsed


def test_start_without_capacity_changes_nothing(cloud: Cloud, aws: Callable[..., Any],
                                                refuse: Callable[..., list], tmp_path: Path) -> None:
    assert run_playbook("launch", cloud.env(), tmp_path, LAB).returncode == 0
    assert run_playbook("stop", cloud.env(), tmp_path, LAB).returncode == 0
    before = lab_resources(aws)
    runs = refuse(lambda t, z: CAPACITY if t == "start" else None)
    # No wait, no type change: one try (tests/integration/test_start_capacity.py has the rest).
    once = {**LAB, "gpu_lab_start_capacity_wait_minutes": "0", "gpu_lab_start_change_type": "false"}
    result = run_playbook("start", cloud.env(), tmp_path, once)
    assert result.returncode != 0
    out = flat(result)
    assert "AWS has no capacity in us-east-1a for the lab's instance" in out, out[-3000:]
    assert "tried g6.xlarge (InsufficientInstanceCapacity, 1 try); it stays stopped and nothing changed" in out
    assert "Try start.yml again later" in out and "gpu_lab_zones" in out
    assert len(runs) == 1
    after = lab_resources(aws)
    assert [i["State"]["Name"] for i in after["instances"]] == ["stopped"]
    assert after["addresses"] == before["addresses"]
    cloud.emulator.faults.clear()
    again = run_playbook("start", cloud.env(), tmp_path, once)
    assert again.returncode == 0 and recap(again.stdout)["changed"] >= 1, again.stdout[-3000:]
