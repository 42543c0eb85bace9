"""Spot labs (gpu_lab_market: spot), through the playbooks against the emulated cloud: a persistent
Spot Instance request that stops on an interruption; stop and start as for on demand; an
interruption that status.yml explains and start.yml waits out (only AWS starts it again); spot
capacity moving on to the next zone, then type, then on demand as the last resort; the spot quota
checked before anything is created; a teardown that cancels the request first, so AWS launches
no replacement; every second run changed=0. The spot side of EC2 is local_cloud/spot.py
(tests/integration/test_local_cloud_spot.py holds it to AWS's documented behaviour)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import flat, run_playbook, succeeded

LAB = {"gpu_lab_name": "spt", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       "gpu_lab_market": "spot", "gpu_lab_start_capacity_wait_minutes": "0.05"}
TEARDOWN = {"gpu_lab_confirm_teardown": "spt", "gpu_lab_force_teardown": "true"}
NO_SPOT = "There is no Spot capacity available that matches your request."


def the_instance(aws: Callable[..., Any]) -> dict[str, Any]:
    (instance,) = lab_state(aws("ec2"), "spt")["instances"]
    return instance


def request_of(aws: Callable[..., Any], instance: dict[str, Any]) -> dict[str, Any]:
    return aws("ec2").describe_spot_instance_requests(
        SpotInstanceRequestIds=[instance["SpotInstanceRequestId"]])["SpotInstanceRequests"][0]


@pytest.fixture
def faults(cloud: Cloud) -> Any:
    yield cloud.emulator.faults
    cloud.emulator.faults.clear()


def test_a_spot_lab_stops_starts_is_interrupted_and_goes_without_a_trace(cloud: Cloud, aws: Callable[..., Any],
                                                                        tmp_path: Path) -> None:
    out = succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB), changed=None)
    instance = the_instance(aws)
    assert instance["InstanceLifecycle"] == "spot"
    request = request_of(aws, instance)
    assert (request["Type"], request["InstanceInterruptionBehavior"], request["State"]) == (
        "persistent", "stop", "active")
    assert {t["Key"]: t["Value"] for t in request.get("Tags", [])}.get("gpu_lab:lab") == "spt"
    assert f"Launched g6.xlarge as a spot instance in {instance['Placement']['AvailabilityZone']}" in out
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB), changed=0)

    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB))
    assert "market spot: $" in status and "% below on demand" in status, status[-3000:]

    # The owner's stop: the request is disabled (AWS will not start it by itself); start makes it active.
    succeeded(run_playbook("stop", cloud.env(), tmp_path, LAB), changed=1)
    assert request_of(aws, instance)["State"] == "disabled"
    succeeded(run_playbook("start", cloud.env(), tmp_path, LAB), changed=1)
    assert the_instance(aws)["State"]["Name"] == "running"
    assert request_of(aws, instance)["State"] == "active"

    # AWS interrupts it: status says so; start.yml waits for AWS, which does not come back in time.
    cloud.emulator.spot.interrupt(instance["InstanceId"])
    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB))
    assert "Interrupted by AWS at " in status and "Server.SpotInstanceShutdown" in status, status[-3000:]
    refused = run_playbook("start", cloud.env(), tmp_path, LAB)
    said = flat(refused)
    assert refused.returncode != 0, said[-3000:]
    assert f"AWS interrupted the lab's spot instance {instance['InstanceId']}" in said
    assert "only AWS can start it again" in said and "nothing changed" in said
    assert the_instance(aws)["State"]["Name"] == "stopped"

    # Capacity returns while start.yml waits: AWS starts it, and start.yml goes on from there.
    gpu_lab_wait = {**LAB, "gpu_lab_start_capacity_wait_minutes": "1"}
    back = threading.Timer(8.0, cloud.emulator.spot.capacity_back, args=[instance["InstanceId"]])
    back.start()
    try:
        started = succeeded(run_playbook("start", cloud.env(), tmp_path, gpu_lab_wait))
    finally:
        back.cancel()
    assert "it started it again after" in started, started[-3000:]
    assert the_instance(aws)["InstanceId"] == instance["InstanceId"]
    assert the_instance(aws)["State"]["Name"] == "running"

    # Teardown cancels the request before the instance goes: AWS launches no replacement.
    gone = succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**LAB, **TEARDOWN}))
    assert f"spot request {instance['SpotInstanceRequestId']}" in gone, gone[-3000:]
    time.sleep(0.5)
    ec2 = aws("ec2")
    live = [i for r in ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
        for i in r["Instances"]]
    assert live == []
    assert {r["State"] for r in ec2.describe_spot_instance_requests()["SpotInstanceRequests"]} == {"cancelled"}
    succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**LAB, **TEARDOWN}), changed=0)


def test_no_spot_capacity_moves_on_then_launches_on_demand(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                                           tmp_path: Path) -> None:
    faults.add("ec2:RunInstances", "InsufficientInstanceCapacity", message=NO_SPOT,
               where={"InstanceMarketOptions.MarketType": "spot"})
    settings = {**LAB, "gpu_lab_zones": "us-east-1a,us-east-1b", "gpu_lab_fallback_instance_types": "g5.xlarge"}
    out = succeeded(run_playbook("launch", cloud.env(), tmp_path, settings))
    instance = the_instance(aws)
    assert "InstanceLifecycle" not in instance and "SpotInstanceRequestId" not in instance
    assert (instance["InstanceType"], instance["Placement"]["AvailabilityZone"]) == ("g6.xlarge", "us-east-1a")
    assert [i.code for i in faults.log] == ["InsufficientInstanceCapacity"] * 4  # 2 types x 2 zones, spot
    assert ("Launched g6.xlarge on demand in us-east-1a, after g6.xlarge (spot) in us-east-1a: "
            "InsufficientInstanceCapacity; g6.xlarge (spot) in us-east-1b") in out, out[-3000:]
    assert "it runs on demand (gpu_lab_spot_fallback_on_demand)" in out
    status = succeeded(run_playbook("status", cloud.env(), tmp_path, settings))
    assert "market on-demand (spot would be $" in status, status[-3000:]
    succeeded(run_playbook("launch", cloud.env(), tmp_path, settings), changed=0)


def test_without_the_fallback_no_spot_capacity_creates_nothing(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                                               tmp_path: Path) -> None:
    faults.add("ec2:RunInstances", "InsufficientInstanceCapacity", message=NO_SPOT,
               where={"InstanceMarketOptions.MarketType": "spot"})
    settings = {**LAB, "gpu_lab_spot_fallback_on_demand": "false", "gpu_lab_fallback_instance_types": "[]"}
    result = run_playbook("launch", cloud.env(), tmp_path, settings)
    out = flat(result)
    assert result.returncode != 0, out[-3000:]
    assert "No candidate instance could be launched in us-east-1" in out and "g6.xlarge (spot) in us-east-1a" in out
    state = lab_state(aws("ec2"), "spt")
    assert state["instances"] == [] and state["addresses"] == [] and state["groups"] == []
    assert aws("ec2").describe_spot_instance_requests()["SpotInstanceRequests"] == []


def test_the_spot_quota_is_checked_before_anything_is_created(cloud: Cloud, aws: Callable[..., Any],
                                                              tmp_path: Path) -> None:
    cloud.emulator.quotas.set("us-east-1", "L-3819A6DF", 0)
    settings = {**LAB, "gpu_lab_spot_fallback_on_demand": "false"}
    result = run_playbook("launch", cloud.env(), tmp_path, settings)
    out = flat(result)
    assert result.returncode != 0, out[-3000:]
    assert "does not fit the account's spot vCPU quota in us-east-1" in out, out[-3000:]
    assert "All G and VT Spot Instance Requests (L-3819A6DF) is 0 vCPUs" in out
    assert "--quota-code L-3819A6DF" in out
    assert cloud.emulator.calls.snapshot()["by_action"].get("ec2:RunInstances", 0) == 0
    assert lab_state(aws("ec2"), "spt")["key_pairs"] == []
    # With the fallback, the on-demand quota still fits: it launches on demand, and says why.
    launched = succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    assert "InstanceLifecycle" not in the_instance(aws)
    assert ("Launched g6.xlarge on demand in us-east-1a, after g6.xlarge (spot) in no zone: quota" in launched
            and "it runs on demand (gpu_lab_spot_fallback_on_demand)" in launched), launched[-3000:]


def test_bad_market_settings_are_refused_before_anything(cloud: Cloud, aws: Callable[..., Any],
                                                         tmp_path: Path) -> None:
    result = run_playbook("launch", cloud.env(), tmp_path,
                          {**LAB, "gpu_lab_market": "spto", "gpu_lab_spot_max_price": "cheap"})
    out = flat(result)
    assert result.returncode != 0
    assert "Market 'spto' is not valid: set gpu_lab_market to on-demand or spot." in out
    assert "Spot price cap 'cheap' is not valid" in out
    assert cloud.emulator.calls.snapshot()["by_action"].get("ec2:RunInstances", 0) == 0


def test_a_lab_that_exists_keeps_its_market(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    on_demand = {**LAB, "gpu_lab_market": "on-demand"}
    succeeded(run_playbook("launch", cloud.env(), tmp_path, on_demand))
    out = succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB), changed=0)
    assert "Lab spt stays on-demand (gpu_lab_market spot applies to a new instance only" in out, out[-3000:]
    assert "InstanceLifecycle" not in the_instance(aws)
