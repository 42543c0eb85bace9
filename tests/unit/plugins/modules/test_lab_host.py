"""Unit tests of csdl.gpu_lab.lab_host's pieces: check mode's plans (no changing call), the
changes of O(modify) in their order (ModifyInstanceAttribute only while stopped, before the
start), the launch's recorded type tag, and what a half-way failure says is left.

EC2 answers through botocore's Stubber: a call nobody stubbed fails the test, so "no call"
is proven, not assumed. tests/integration/test_modules_lab_host.py runs it on the emulator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tests.unit.collection import load

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def lab_host() -> ModuleType:
    return load("modules.lab_host")


class FakeRegion:
    """What LabHost uses of a Region: two stubbed clients and the zones on offer."""

    def __init__(self) -> None:
        self.name = "us-east-1"
        self.ec2 = boto3.client("ec2", region_name=self.name, aws_access_key_id="testing",
                                aws_secret_access_key="testing")  # noqa: S106
        self.launcher = boto3.client("ec2", region_name=self.name, aws_access_key_id="testing",
                                     aws_secret_access_key="testing")  # noqa: S106
        self.reads = Stubber(self.ec2)
        self.writes = Stubber(self.launcher)

    def where(self, types: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        return {t: ["us-east-1a"] for t in types}, {"us-east-1a": ("subnet-1a", "vpc-1")}


@pytest.fixture
def region() -> Iterator[FakeRegion]:
    fake = FakeRegion()
    with fake.reads, fake.writes:
        yield fake
        fake.reads.assert_no_pending_responses()
        fake.writes.assert_no_pending_responses()


def params(lab_host: ModuleType, **given: Any) -> dict[str, Any]:
    (checked,), invalid = lab_host.check_labs([{"lab": "dl", **given}], lab_host.LAB_OPTIONS)
    assert invalid == {}
    return checked


def known(state: str = "stopped", type_: str = "g5.xlarge", asked: str = "g6.xlarge") -> dict[str, Any]:
    return {"id": "i-0abc", "state": state, "type": type_, "zone": "us-east-1a", "image": "ami-1",
            "launch_time": "2026-01-01T00:00:00+00:00", "root_volume_id": "vol-root",
            "tags": {"gpu_lab:lab": "dl", "gpu_lab:instance_type": asked}}


ADDRESS = {"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1", "association_id": "eipassoc-1",
           "instance_id": "i-0abc"}
NEW_LAB = {"instance_types": ["g6.xlarge", "g5.xlarge"], "image_id": "ami-1", "key_name": "dl-server",
           "key_pair": {"name": "dl-server", "public_key": "ssh-ed25519 AAAA dl"},
           "security_group": {"name": "dl-ssh", "description": "SSH to dl", "ssh_cidrs": ["198.51.100.7/32"]},
           "tags": {"gpu_lab:lab": "dl"}}


def running(instance_id: str = "i-0abc", type_: str = "g6.xlarge") -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{
        "InstanceId": instance_id, "State": {"Name": "running"}, "InstanceType": type_,
        "Placement": {"AvailabilityZone": "us-east-1a"}, "ImageId": "ami-1",
        "LaunchTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}]}]}


# --- check mode -----------------------------------------------------------------------------

def test_plan_of_a_new_lab_makes_no_call(lab_host: ModuleType, region: FakeRegion) -> None:
    planned = lab_host.plan(params(lab_host, **NEW_LAB), region)
    assert planned["planned"] == [
        "import key pair dl-server",
        "create security group dl-ssh",
        "launch g6.xlarge in the first zone that has capacity (candidates: g6.xlarge, g5.xlarge)",
        "allocate and associate an Elastic IP",
    ]
    assert planned["changed"] is True
    assert (planned["instance"], planned["address"], planned["launched"], planned["started"]) == ({}, {}, False, False)


def test_plan_names_the_zones_and_a_free_address_to_reuse(lab_host: ModuleType, region: FakeRegion) -> None:
    free = {**ADDRESS, "association_id": "", "instance_id": ""}
    given = {**NEW_LAB, "key_pair": None, "security_group_id": "sg-1", "zones": ["us-east-1b", "us-east-1c"],
             "addresses": [free]}
    assert lab_host.plan(params(lab_host, **given), region)["planned"] == [
        "launch g6.xlarge in the first zone that has capacity (candidates: g6.xlarge, g5.xlarge; zones: "
        "us-east-1b, us-east-1c)",
        "associate the Elastic IP 203.0.113.5 with it",
    ]


def test_plan_of_a_new_lab_still_refuses_what_the_launch_would(lab_host: ModuleType, region: FakeRegion) -> None:
    with pytest.raises(lab_host.LabFailure, match="To launch, lab_host needs image_id"):
        lab_host.plan(params(lab_host, **{**NEW_LAB, "image_id": None}), region)


def test_plan_of_a_stopped_lab_with_changes_reads_the_volume_only(lab_host: ModuleType, region: FakeRegion) -> None:
    region.reads.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-root", "Size": 100}]},
                              {"VolumeIds": ["vol-root"]})
    planned = lab_host.plan(params(lab_host, instance=known(), addresses=[ADDRESS],
                                   modify={"volume_size": 200, "instance_type": "g6.xlarge"}), region)
    assert planned["planned"] == [
        "grow the disk vol-root of i-0abc from 100 to 200 GiB",
        "change the type of i-0abc from g5.xlarge to g6.xlarge",
        "tag i-0abc gpu_lab:instance_type=g6.xlarge",
        "start i-0abc",
    ]
    assert planned["instance"]["id"] == "i-0abc" and planned["instance"]["state"] == "stopped"
    assert planned["address"] == {"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1"}


def test_plan_of_a_running_lab_at_its_address_is_nothing(lab_host: ModuleType, region: FakeRegion) -> None:
    planned = lab_host.plan(params(lab_host, instance=known(state="running"), addresses=[ADDRESS]), region)
    assert (planned["planned"], planned["changed"]) == ([], False)


def test_plan_refuses_another_type_while_it_runs(lab_host: ModuleType, region: FakeRegion) -> None:
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.plan(params(lab_host, instance=known(state="running"), modify={"instance_type": "g4dn.xlarge"}),
                      region)
    assert caught.value.msg.startswith("Lab dl runs g5.xlarge (asked for g6.xlarge at launch); "
                                       "gpu_lab_instance_type is now g4dn.xlarge.")


def test_plan_refuses_a_smaller_volume(lab_host: ModuleType, region: FakeRegion) -> None:
    region.reads.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-root", "Size": 100}]},
                              {"VolumeIds": ["vol-root"]})
    with pytest.raises(lab_host.LabFailure, match="a volume cannot shrink: set gpu_lab_volume_size back to 100"):
        lab_host.plan(params(lab_host, instance=known(), modify={"volume_size": 80}), region)


def test_plan_of_a_removal_lists_it_in_order_and_removes_nothing(lab_host: ModuleType) -> None:
    given = params(lab_host, addresses=[ADDRESS], instances=[known(), {**known(), "id": "i-0def"}],
                   security_group_id="sg-1", key_name="dl-server",
                   orphans=[{"kind": "elastic_ip", "id": "eipalloc-9", "lab": "old", "detail": "203.0.113.9",
                             "summary": "elastic ip 203.0.113.9 of lab old"}])
    planned = lab_host.plan_removal(given, None)
    assert planned == {"changed": True, "removed": lab_host.nothing_removed(), "attempts": [], "planned": [
        "release 203.0.113.5", "terminate i-0abc", "terminate i-0def", "delete security group sg-1",
        "delete key pair dl-server", "remove the left-over elastic ip 203.0.113.9 of lab old"]}
    assert lab_host.plan_removal(params(lab_host), None)["changed"] is False


# --- changed settings -----------------------------------------------------------------------

def test_a_stopped_lab_grows_changes_type_then_starts(lab_host: ModuleType, region: FakeRegion) -> None:
    """ModifyVolume, then ModifyInstanceAttribute and the record of the type, then the start:
    AWS changes a type only while the instance is stopped."""
    region.reads.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-root", "Size": 100}]},
                              {"VolumeIds": ["vol-root"]})
    region.writes.add_response("modify_volume", {"VolumeModification": {"VolumeId": "vol-root", "TargetSize": 200}},
                               {"VolumeId": "vol-root", "Size": 200})
    region.writes.add_response("modify_instance_attribute", {},
                               {"InstanceId": "i-0abc", "InstanceType": {"Value": "g6.xlarge"}})
    region.writes.add_response("create_tags", {}, {"Resources": ["i-0abc"],
                                                   "Tags": [{"Key": "gpu_lab:instance_type", "Value": "g6.xlarge"}]})
    region.writes.add_response("start_instances", {"StartingInstances": []}, {"InstanceIds": ["i-0abc"]})
    region.reads.add_response("describe_instances", running(), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host, instance=known(), addresses=[ADDRESS],
                                    modify={"volume_size": 200, "instance_type": "g6.xlarge"}), region)
    assert (done["changed"], done["started"], done["instance"]["type"]) == (True, True, "g6.xlarge")
    grew, changed = done["notes"]
    assert grew.startswith("Grew the disk vol-root of i-0abc from 100 to 200 GiB; a volume cannot shrink back")
    assert changed == ("Changed the type of i-0abc from g5.xlarge to g6.xlarge while it was stopped; to go back, "
                       "run stop.yml, set gpu_lab_instance_type back to g6.xlarge, then launch.yml.")


def test_a_running_lab_grows_its_volume_and_stays_up(lab_host: ModuleType, region: FakeRegion) -> None:
    region.reads.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-root", "Size": 100}]},
                              {"VolumeIds": ["vol-root"]})
    region.writes.add_response("modify_volume", {"VolumeModification": {"VolumeId": "vol-root"}},
                               {"VolumeId": "vol-root", "Size": 150})
    region.reads.add_response("describe_instances", running(type_="g5.xlarge"), {"InstanceIds": ["i-0abc"]})
    done = lab_host.converge(params(lab_host, instance=known(state="running"), addresses=[ADDRESS],
                                    modify={"volume_size": 150}), region)
    assert (done["changed"], done["started"], len(done["notes"])) == (True, False, 1)


def test_a_running_lab_is_not_given_another_type(lab_host: ModuleType, region: FakeRegion) -> None:
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.converge(params(lab_host, instance=known(state="running"), addresses=[ADDRESS],
                                 modify={"instance_type": "g6.2xlarge"}), region)
    assert "The type changes only while the instance is stopped" in caught.value.msg
    assert caught.value.left == {"instance": {}, "address": {}}  # nothing touched, nothing said left


# --- launch ---------------------------------------------------------------------------------

def run_instances_answer(instance_id: str = "i-0new") -> dict[str, Any]:
    return {"Instances": [{"InstanceId": instance_id, "State": {"Name": "pending"}, "InstanceType": "g6.xlarge",
                           "Placement": {"AvailabilityZone": "us-east-1a"}}]}


def run_instances_params(instance_tags: Any = ANY, volume_tags: Any = ANY) -> dict[str, Any]:
    return {"ClientToken": ANY, "ImageId": "ami-1", "InstanceType": "g6.xlarge", "KeyName": "dl-server",
            "MinCount": 1, "MaxCount": 1, "NetworkInterfaces": ANY, "MetadataOptions": ANY,
            "InstanceInitiatedShutdownBehavior": "stop", "BlockDeviceMappings": ANY,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": instance_tags},
                                  {"ResourceType": "volume", "Tags": volume_tags}]}


def test_a_new_instance_records_the_type_asked_for(lab_host: ModuleType, region: FakeRegion) -> None:
    tags = [{"Key": "gpu_lab:instance_type", "Value": "g6.xlarge"}, {"Key": "gpu_lab:lab", "Value": "dl"},
            {"Key": "gpu_lab:autostop_minutes", "Value": "30"}, {"Key": "Name", "Value": "dl-server"}]
    # The volume keeps the tags it had: the type asked for is the instance's.
    region.writes.add_response("run_instances", run_instances_answer(), run_instances_params(tags, tags[1:]))
    host = lab_host.LabHost(params(lab_host, **{**NEW_LAB, "key_pair": None, "security_group_id": "sg-1",
                                                "instance_tags": {"gpu_lab:autostop_minutes": 30}}), region)
    assert host.launch()["InstanceId"] == "i-0new"


def test_the_callers_recorded_type_wins(lab_host: ModuleType, region: FakeRegion) -> None:
    tags = [{"Key": "gpu_lab:instance_type", "Value": "g6.2xlarge"}, {"Key": "gpu_lab:lab", "Value": "dl"},
            {"Key": "Name", "Value": "dl-server"}]
    # The caller's instance tags go on the volume too, as before.
    volume_tags = [tags[1], tags[0], tags[2]]
    region.writes.add_response("run_instances", run_instances_answer(), run_instances_params(tags, volume_tags))
    host = lab_host.LabHost(params(lab_host, **{**NEW_LAB, "key_pair": None, "security_group_id": "sg-1",
                                                "instance_tags": {"gpu_lab:instance_type": "g6.2xlarge"}}), region)
    host.launch()


def test_a_launch_that_fails_at_the_address_says_what_runs(lab_host: ModuleType, region: FakeRegion,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_host.time, "sleep", lambda seconds: None)  # the transient retries' backoff
    region.writes.add_response("run_instances", run_instances_answer(), run_instances_params())
    region.reads.add_response("describe_instances", running("i-0new"), {"InstanceIds": ["i-0new"]})
    for _unused in range(8):  # _call's tries of a transient error
        region.writes.add_client_error("allocate_address", "Unavailable", "Please try again shortly.", 503)
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.converge(params(lab_host, **{**NEW_LAB, "key_pair": None, "security_group_id": "sg-1"}), region)
    assert caught.value.msg.endswith(
        "Please try again shortly. Left running: i-0new (g6.xlarge, us-east-1a), billed by the hour until stopped; "
        "no Elastic IP yet. Run launch.yml again to finish (it reuses the instance), or teardown.yml to remove it.")
    assert caught.value.left == {"instance": {"id": "i-0new", "type": "g6.xlarge", "zone": "us-east-1a",
                                              "state": "running"}, "address": {}}
    failed = lab_host._failed(caught.value, "present")
    assert failed["changed"] is True and failed["left"] == caught.value.left


# --- what is left, in words ------------------------------------------------------------------

INSTANCE = {"id": "i-0abc", "type": "g5.xlarge", "zone": "us-east-1b", "state": "running"}


@pytest.mark.parametrize(("left", "launched", "started", "said"), [
    ({"instance": {}, "address": {}}, True, False, ""),
    ({"instance": INSTANCE, "address": {}}, False, True,
     "Left running: i-0abc (g5.xlarge, us-east-1b), billed by the hour until stopped; no Elastic IP yet. "
     "Run start.yml again to finish, or stop.yml to stop it."),
    ({"instance": {**INSTANCE, "state": "pending"}, "address": {"public_ip": "203.0.113.5", "associated": False}},
     True, False,
     "Left starting: i-0abc (g5.xlarge, us-east-1b), billed by the hour until stopped; its Elastic IP 203.0.113.5 "
     "(billed by the hour too) is not associated with it yet. Run launch.yml again to finish (it reuses the "
     "instance), or teardown.yml to remove it."),
    ({"instance": INSTANCE, "address": {"public_ip": "203.0.113.5", "associated": True}}, False, False,
     "Left running: i-0abc (g5.xlarge, us-east-1b) at Elastic IP 203.0.113.5, billed by the hour until stopped. "
     "Run launch.yml again to finish (it reuses the address), or teardown.yml to remove the lab."),
    ({"instance": {}, "address": {"public_ip": "203.0.113.5", "associated": False}}, True, False,
     "Left: the Elastic IP 203.0.113.5, billed by the hour until released. Run launch.yml again to finish (it "
     "reuses the instance), or teardown.yml to remove it."),
], ids=["nothing", "started, no address", "pending, address apart", "address new at a running one", "address only"])
def test_left_sentence(lab_host: ModuleType, left: dict[str, Any], launched: bool, started: bool, said: str) -> None:
    assert lab_host.left_sentence(left, launched, started) == said


def _reservation(*states: tuple[str, str]) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": i, "State": {"Name": s}} for i, s in states]}]}


def test_stop_is_one_call_for_the_region_and_one_wait(lab_host: ModuleType, region: FakeRegion) -> None:
    """Two labs of one region: one StopInstances with both ids (a stopping one is only waited
    for), then DescribeInstances until every one is stopped."""
    labs = [params(lab_host, instance={"id": "i-a", "state": "running"}, wait_timeout=60),
            params(lab_host, lab="dl2", instance={"id": "i-b", "state": "stopping"}, wait_timeout=60)]
    region.ec2.stop_instances = region.launcher.stop_instances  # the stub that holds the expectation
    region.writes.add_response("stop_instances", {"StoppingInstances": []}, {"InstanceIds": ["i-a"]})
    region.reads.add_response("describe_instances", _reservation(("i-a", "stopping"), ("i-b", "stopped")),
                              {"InstanceIds": ["i-a", "i-b"]})
    region.reads.add_response("describe_instances", _reservation(("i-a", "stopped"), ("i-b", "stopped")),
                              {"InstanceIds": ["i-a", "i-b"]})
    assert lab_host._stop_region(region, labs) == {"i-a": "stopped", "i-b": "stopped"}


def test_stop_says_which_instance_did_not_stop_in_time(lab_host: ModuleType, region: FakeRegion) -> None:
    labs = [params(lab_host, instance={"id": "i-a", "state": "stopping"}, wait_timeout=0)]
    region.reads.add_response("describe_instances", _reservation(("i-a", "stopping")), {"InstanceIds": ["i-a"]})
    with pytest.raises(lab_host.LabFailure, match=r"Not stopped after 0 s: i-a \(stopping\)\."):
        lab_host._stop_region(region, labs)
