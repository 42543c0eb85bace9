"""csdl.gpu_lab.lab_host: starting a stopped lab when AWS has no capacity for its type in its
zone - the same type again within the bound, then another type (ModifyInstanceAttribute while
stopped), the type put back when nothing starts, a quota not waited for.

EC2 answers through botocore's Stubber, in order: a call nobody stubbed fails the test.
tests/integration/test_start_capacity.py runs the same on the emulator with injected faults.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from tests.unit.collection import load

REPO = Path(__file__).resolve().parents[4]
CAPACITY = "InsufficientInstanceCapacity"
CANDIDATES = ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]


@pytest.fixture(scope="module")
def lab_host() -> ModuleType:
    return load("modules.lab_host")


class FakeRegion:
    """What LabHost uses of a Region: two stubbed clients and the zones offering each type."""

    def __init__(self, offered: dict[str, list[str]]) -> None:
        self.name = "us-east-1"
        self.offered = offered
        self.ec2 = boto3.client("ec2", region_name=self.name, aws_access_key_id="testing",
                                aws_secret_access_key="testing")  # noqa: S106
        self.launcher = boto3.client("ec2", region_name=self.name, aws_access_key_id="testing",
                                     aws_secret_access_key="testing")  # noqa: S106
        self.reads = Stubber(self.ec2)
        self.writes = Stubber(self.launcher)

    def where(self, types: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        return {t: self.offered.get(t, []) for t in types}, {"us-east-1a": ("subnet-1a", "vpc-1")}


@pytest.fixture
def region(request: pytest.FixtureRequest) -> Iterator[FakeRegion]:
    offered = getattr(request, "param", None) or {t: ["us-east-1a"] for t in CANDIDATES}
    fake = FakeRegion(offered)
    with fake.reads, fake.writes:
        yield fake
        fake.reads.assert_no_pending_responses()
        fake.writes.assert_no_pending_responses()


def stopped(type_: str = "g6.xlarge", tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": "i-0abc", "state": "stopped", "type": type_, "zone": "us-east-1a", "image": "ami-1",
            "launch_time": "2026-01-01T00:00:00+00:00", "root_volume_id": "vol-root",
            "tags": {"gpu_lab:lab": "dl", "gpu_lab:instance_type": "g6.xlarge"} if tags is None else tags}


ADDRESS = {"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1", "association_id": "eipassoc-1",
           "instance_id": "i-0abc"}


def params(lab_host: ModuleType, **given: Any) -> dict[str, Any]:
    spec = {"lab": "dl", "instance": stopped(), "addresses": [ADDRESS], "instance_types": CANDIDATES,
            "start_capacity_wait": 0, "start_change_type": True, **given}
    (checked,), invalid = lab_host.check_labs([spec], lab_host.LAB_OPTIONS)
    assert invalid == {}
    return checked


def running(type_: str) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{
        "InstanceId": "i-0abc", "State": {"Name": "running"}, "InstanceType": type_,
        "Placement": {"AvailabilityZone": "us-east-1a"}, "ImageId": "ami-1",
        "LaunchTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}]}]}


def start_ok(region: FakeRegion) -> None:
    region.writes.add_response("start_instances", {"StartingInstances": []}, {"InstanceIds": ["i-0abc"]})


def start_refused(region: FakeRegion, code: str = CAPACITY) -> None:
    region.writes.add_client_error("start_instances", service_error_code=code, service_message=f"{code} here",
                                   http_status_code=500 if code == CAPACITY else 400,
                                   expected_params={"InstanceIds": ["i-0abc"]})


def change_to(region: FakeRegion, type_: str) -> None:
    region.writes.add_response("modify_instance_attribute", {},
                               {"InstanceId": "i-0abc", "InstanceType": {"Value": type_}})


def test_capacity_back_after_two_refusals_starts_the_same_type(lab_host: ModuleType, region: FakeRegion) -> None:
    start_refused(region)
    start_refused(region)
    start_ok(region)
    region.reads.add_response("describe_instances", running("g6.xlarge"), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host, start_capacity_wait=1.5), region)
    assert done["started"] is True and done["changed"] is True and done["notes"] == []
    assert done["instance"]["type"] == "g6.xlarge"
    assert [(a["type"], a["outcome"], a["code"], a["retry"]) for a in done["attempts"]] == [
        ("g6.xlarge", "no capacity", CAPACITY, 0), ("g6.xlarge", "no capacity", CAPACITY, 1),
        ("g6.xlarge", "started", "", 2)]


def test_no_capacity_for_the_type_changes_it_to_the_next_and_starts(lab_host: ModuleType,
                                                                    region: FakeRegion) -> None:
    start_refused(region)
    change_to(region, "g5.xlarge")
    start_ok(region)
    region.reads.add_response("describe_instances", running("g5.xlarge"), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host), region)
    assert done["instance"]["type"] == "g5.xlarge" and done["started"] is True
    assert [(a["type"], a["outcome"]) for a in done["attempts"]] == [("g6.xlarge", "no capacity"),
                                                                     ("g5.xlarge", "started")]
    (note,) = done["notes"]
    assert "changed from g6.xlarge to g5.xlarge while stopped" in note
    assert "--instance-type Value=g6.xlarge, then start.yml" in note


def test_an_instance_without_the_recorded_type_tag_gets_it_after_the_change(lab_host: ModuleType,
                                                                            region: FakeRegion) -> None:
    start_refused(region)
    change_to(region, "g5.xlarge")
    start_ok(region)
    region.writes.add_response("create_tags", {}, {"Resources": ["i-0abc"],
                                                   "Tags": [{"Key": "gpu_lab:instance_type", "Value": "g6.xlarge"}]})
    region.reads.add_response("describe_instances", running("g5.xlarge"), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host, instance=stopped(tags={"gpu_lab:lab": "dl"})), region)
    assert done["instance"]["type"] == "g5.xlarge"


def test_each_refused_fallback_moves_on_and_nothing_fits_puts_the_type_back(lab_host: ModuleType,
                                                                            region: FakeRegion) -> None:
    start_refused(region)
    change_to(region, "g5.xlarge")
    start_refused(region)
    change_to(region, "g4dn.xlarge")
    start_refused(region, "VcpuLimitExceeded")  # a quota of that family: the next type
    change_to(region, "g6.xlarge")  # back as it was
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.converge(params(lab_host), region)
    message = caught.value.msg
    assert message.startswith("AWS has no capacity in us-east-1a for the lab's instance i-0abc: tried g6.xlarge "
                              "(InsufficientInstanceCapacity, 1 try), then as g5.xlarge, g4dn.xlarge; it stays "
                              "stopped (its type is g6.xlarge again) and nothing changed."), message
    part = lab_host._failed(caught.value, "present")
    assert part["changed"] is False and part["left"] == {"instance": {}, "address": {}}


@pytest.mark.parametrize("region", [{"g6.xlarge": ["us-east-1a"], "g5.xlarge": ["us-east-1b"]}], indirect=True)
def test_no_fallback_offered_in_the_zone_changes_nothing(lab_host: ModuleType, region: FakeRegion) -> None:
    start_refused(region)
    with pytest.raises(lab_host.LabFailure, match="and no other candidate type is offered in that zone; it stays "
                                                  "stopped and nothing changed"):
        lab_host.converge(params(lab_host, instance_types=["g6.xlarge", "g5.xlarge"]), region)


def test_type_changes_turned_off_only_retry(lab_host: ModuleType, region: FakeRegion) -> None:
    start_refused(region)
    with pytest.raises(lab_host.LabFailure, match="set gpu_lab_start_change_type to true"):
        lab_host.converge(params(lab_host, start_change_type=False), region)


def test_a_quota_refusal_is_not_waited_for(lab_host: ModuleType, region: FakeRegion) -> None:
    start_refused(region, "VcpuLimitExceeded")  # once, though the bound allows many tries
    with pytest.raises(lab_host.LabFailure, match="this is the quota, not capacity") as caught:
        lab_host.converge(params(lab_host, start_capacity_wait=60), region)
    assert "L-DB2E81BA" in caught.value.msg
    assert [a["outcome"] for a in caught.value.attempts] == ["quota"]


def test_a_type_that_cannot_be_changed_to_is_skipped(lab_host: ModuleType, region: FakeRegion) -> None:
    start_refused(region)
    region.writes.add_client_error("modify_instance_attribute", service_error_code="InvalidParameterValue",
                                   service_message="not supported", http_status_code=400)
    change_to(region, "g4dn.xlarge")
    start_ok(region)
    region.reads.add_response("describe_instances", running("g4dn.xlarge"), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host), region)
    assert [(a["type"], a["outcome"]) for a in done["attempts"]] == [
        ("g6.xlarge", "no capacity"), ("g5.xlarge", "not changed"), ("g4dn.xlarge", "started")]
