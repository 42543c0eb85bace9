"""Unit tests of csdl.gpu_lab.lab_info's pieces: the summaries the preflight checks read
(architectures, GPU count, image architecture, root volume), the batched volume call, the
other regions asked once for every lab, the timeout sentence. EC2 answers through botocore's
Stubber; tests/integration/test_modules_lab_info.py runs the module against the emulator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from tests.unit.collection import load

REPO = Path(__file__).resolve().parents[4]
LIVE = ["pending", "running", "stopping", "stopped"]


@pytest.fixture(scope="module")
def lab_info() -> ModuleType:
    """The module, loaded as Ansible loads it (its module_utils through the collection)."""
    return load("modules.lab_info")


def ec2(region: str = "us-east-1") -> Any:
    return boto3.client("ec2", region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # noqa: S106


@pytest.fixture
def stubbed() -> Iterator[Any]:
    """stubbed(region) -> (client, Stubber); every stub's answers must all be used."""
    made: list[Stubber] = []

    def make(region: str = "us-east-1") -> tuple[Any, Stubber]:
        client = ec2(region)
        stub = Stubber(client)
        stub.activate()
        made.append(stub)
        return client, stub

    yield make
    for stub in made:
        stub.assert_no_pending_responses()
        stub.deactivate()


# --- the summaries ------------------------------------------------------------------------

def test_type_summary_has_architectures_and_gpu_count(lab_info: ModuleType) -> None:
    described = {"InstanceType": "g5.12xlarge", "VCpuInfo": {"DefaultVCpus": 48},
                 "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
                 "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 4,
                                       "MemoryInfo": {"SizeInMiB": 22888}}]}}
    assert lab_info._type_summary("g5.12xlarge", described) == {
        "name": "g5.12xlarge", "exists": True, "vcpus": 48, "gpus": "4 x NVIDIA A10G (22 GiB)",
        "architectures": ["x86_64"], "gpu_count": 4}


def test_type_summary_counts_every_gpu_kind(lab_info: ModuleType) -> None:
    described = {"ProcessorInfo": {"SupportedArchitectures": ["arm64"]},
                 "GpuInfo": {"Gpus": [{"Name": "T4g", "Count": 2}, {"Name": "T4g", "Count": 1}]}}
    summary = lab_info._type_summary("g5g.16xlarge", described)
    assert (summary["gpu_count"], summary["architectures"]) == (3, ["arm64"])


def test_type_without_gpu_info_has_none(lab_info: ModuleType) -> None:
    summary = lab_info._type_summary("m7i.large", {"ProcessorInfo": {"SupportedArchitectures": ["x86_64"]}})
    assert (summary["gpu_count"], summary["gpus"], summary["architectures"]) == (0, "", ["x86_64"])


def test_unknown_type_has_no_architecture_and_no_gpu(lab_info: ModuleType) -> None:
    assert lab_info._type_summary("g9.huge", None) == {
        "name": "g9.huge", "exists": False, "vcpus": 0, "gpus": "", "gpu_count": 0, "architectures": []}


def test_image_summary_has_the_architecture(lab_info: ModuleType) -> None:
    image = {"ImageId": "ami-0abc", "Name": "DLAMI ARM64", "Architecture": "arm64", "RootDeviceName": "/dev/sda1",
             "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}]}
    summary = lab_info._image_summary(image, "ssm")
    assert (summary["architecture"], summary["root_size_gib"], summary["source"]) == ("arm64", 75, "ssm")


def test_instance_summary_names_the_root_volume(lab_info: ModuleType) -> None:
    raw = {"InstanceId": "i-0abc", "State": {"Name": "running"}, "InstanceType": "g5.xlarge",
           "Placement": {"AvailabilityZone": "us-east-1a"}, "LaunchTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
           "RootDeviceName": "/dev/sda1",
           "BlockDeviceMappings": [{"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": "vol-data"}},
                                   {"DeviceName": "/dev/sda1", "Ebs": {"VolumeId": "vol-root"}}]}
    summary = lab_info._instance_summary(raw, {"gpu_lab:instance_type": "g6.xlarge"})
    assert (summary["root_device_name"], summary["root_volume_id"]) == ("/dev/sda1", "vol-root")
    assert summary["root_volume_ids"] == ["vol-data", "vol-root"]
    assert lab_info._instance_summary({**raw, "BlockDeviceMappings": []}, {})["root_volume_id"] == ""


# --- the calls ----------------------------------------------------------------------------

def volume(volume_id: str, size: int) -> dict[str, Any]:
    return {"VolumeId": volume_id, "Size": size, "VolumeType": "gp3", "Encrypted": True}


def test_volumes_are_one_call_by_filter(lab_info: ModuleType, stubbed: Any) -> None:
    client, stub = stubbed()
    stub.add_response("describe_volumes", {"Volumes": [volume("vol-1", 100), volume("vol-2", 200)]},
                      {"Filters": [{"Name": "volume-id", "Values": ["vol-1", "vol-2"]}]})
    found = lab_info._volumes(client, ["vol-1", "vol-2", "vol-1"])
    assert [(v["id"], v["size_gib"]) for v in found] == [("vol-1", 100), ("vol-2", 200)]


def test_volumes_past_the_filter_limit_take_a_call_per_200(lab_info: ModuleType, stubbed: Any) -> None:
    client, stub = stubbed()
    ids = [f"vol-{n:03}" for n in range(201)]
    stub.add_response("describe_volumes", {"Volumes": []}, {"Filters": [{"Name": "volume-id", "Values": ids[:200]}]})
    stub.add_response("describe_volumes", {"Volumes": []}, {"Filters": [{"Name": "volume-id", "Values": ids[200:]}]})
    assert lab_info._volumes(client, ids) == []
    assert lab_info._volumes(client, []) == []  # and no call at all


def reservation(instance_id: str, lab: str, region: str) -> dict[str, Any]:
    return {"Instances": [{"InstanceId": instance_id, "State": {"Name": "running"}, "InstanceType": "g6.xlarge",
                           "Placement": {"AvailabilityZone": f"{region}a"},
                           "LaunchTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                           "Tags": [{"Key": "gpu_lab:lab", "Value": lab}]}]}


def lab(name: str, region: str, other_regions: list[str]) -> dict[str, Any]:
    return {"lab": name, "region": region, "other_regions": other_regions}


def test_other_regions_are_asked_once_each_for_every_lab(lab_info: ModuleType, stubbed: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """a and b (us-east-1) ask about us-west-2, a also about eu-west-1; c lives in us-west-2
    and asks about its own region (left out) and us-east-1. One DescribeInstances per other
    region for all the labs asking; eu-west-1 cannot be read: a fails, b does not."""
    clients: dict[str, Any] = {}
    west, west_stub = stubbed("us-west-2")
    west_stub.add_response("describe_instances", {"Reservations": [reservation("i-west", "a", "us-west-2")]},
                           {"Filters": [{"Name": "tag:gpu_lab:lab", "Values": ["a", "b"]},
                                        {"Name": "instance-state-name", "Values": LIVE}]})
    east, east_stub = stubbed("us-east-1")
    east_stub.add_response("describe_instances", {"Reservations": []},
                           {"Filters": [{"Name": "tag:gpu_lab:lab", "Values": ["c"]},
                                        {"Name": "instance-state-name", "Values": LIVE}]})
    eu, eu_stub = stubbed("eu-west-1")
    eu_stub.add_client_error("describe_instances", "UnauthorizedOperation", "You are not authorized.", 403)
    clients.update({"us-west-2": west, "us-east-1": east, "eu-west-1": eu})
    monkeypatch.setattr(lab_info, "_client", lambda module, service, region: clients[region])
    own_regions: list[tuple[str, list[str]]] = []

    def discover(module: Any, region: str, labs: list[dict[str, Any]], volumes: bool, orphans: bool) -> Any:
        own_regions.append((region, [x["lab"] for x in labs]))
        return {x["lab"]: {"instance": {}, "elsewhere": []} for x in labs}

    monkeypatch.setattr(lab_info, "discover", discover)
    found = lab_info.discover_all(SimpleNamespace(region="us-east-1"), [
        lab("a", "us-east-1", ["us-west-2", "eu-west-1"]), lab("b", "us-east-1", ["us-west-2", "us-west-2"]),
        lab("c", "us-west-2", ["us-west-2", "us-east-1"])], False, False)
    assert sorted(own_regions) == [("us-east-1", ["a", "b"]), ("us-west-2", ["c"])]
    assert found["a"]["failed"] and "Could not read the lab's resources in eu-west-1" in found["a"]["msg"]
    assert found["b"] == {"instance": {}, "elsewhere": []}
    assert found["c"] == {"instance": {}, "elsewhere": []}


def test_an_instance_elsewhere_is_returned_with_its_region(lab_info: ModuleType, stubbed: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    west, west_stub = stubbed("us-west-2")
    west_stub.add_response("describe_instances", {"Reservations": [reservation("i-west", "a", "us-west-2")]},
                           {"Filters": [{"Name": "tag:gpu_lab:lab", "Values": ["a"]},
                                        {"Name": "instance-state-name", "Values": LIVE}]})
    monkeypatch.setattr(lab_info, "_client", lambda module, service, region: west)
    monkeypatch.setattr(lab_info, "discover", lambda module, region, labs, volumes, orphans: {
        x["lab"]: {"instance": {}, "elsewhere": []} for x in labs})
    found = lab_info.discover_all(SimpleNamespace(region="us-east-1"), [lab("a", "us-east-1", ["us-west-2"])],
                                  False, False)
    (other,) = found["a"]["elsewhere"]
    assert other["region"] == "us-west-2"
    assert (other["instance"]["id"], other["instance"]["state"], other["instance"]["zone"]) == (
        "i-west", "running", "us-west-2a")


def test_a_timeout_is_one_sentence(lab_info: ModuleType) -> None:
    error = botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:9/", error="Read timed out")
    error.gpu_lab_wait = {"attempts": 2, "connect_timeout": 10.0, "read_timeout": 30.0}  # type: ignore[attr-defined]
    assert lab_info._failure(error, "us-east-1") == (
        "AWS (http://127.0.0.1:9) accepted the connection but did not answer within 30 s (tried 2 times): check "
        "your network or AWS_ENDPOINT_URL, then run again.")
