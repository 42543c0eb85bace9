"""The emulator answers like AWS where the playbooks look, and counts calls at the HTTP boundary."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import boto3
import botocore.exceptions
import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import (
    AMAZON_OWNER_ID,
    DEFAULT_REGIONS,
    DLAMI_LINES,
    DlamiLine,
    Emulator,
    dlami_parameter_name,
)
from tests.playbook import REPO


@pytest.fixture
def emulator(cloud: Cloud) -> Emulator:
    return cloud.emulator


def client(emulator: Emulator, service: str, region: str = "us-east-1"):  # noqa: ANN201
    return boto3.client(service, region_name=region, endpoint_url=emulator.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_dlami_parameter_points_at_the_newest_amazon_image(emulator: Emulator, region: str) -> None:
    line = DLAMI_LINES[0]
    ami = client(emulator, "ssm", region).get_parameter(Name=dlami_parameter_name(line))["Parameter"]["Value"]
    images = client(emulator, "ec2", region).describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": [f"{line.name_prefix} *"]}])["Images"]
    assert len(images) == len(line.releases) >= 2
    newest = max(images, key=lambda i: i["CreationDate"])
    assert newest["ImageId"] == ami
    assert newest["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == line.root_gib


def test_amis_differ_between_regions(emulator: Emulator) -> None:
    assert set(emulator.dlami["us-east-1"].values()).isdisjoint(emulator.dlami["eu-west-1"].values())


def test_counts_mutating_and_read_only_calls(emulator: Emulator) -> None:
    emulator.calls.reset()
    ec2 = client(emulator, "ec2")
    ec2.describe_key_pairs()
    ec2.create_key_pair(KeyName="counted")
    ec2.delete_key_pair(KeyName="counted")
    with urllib.request.urlopen(f"{emulator.url}/_gpu_lab/calls") as answer:  # noqa: S310 - loopback
        calls = json.load(answer)
    assert calls["by_action"] == {"ec2:DescribeKeyPairs": 1, "ec2:CreateKeyPair": 1, "ec2:DeleteKeyPair": 1}
    assert (calls["mutating"], calls["read_only"]) == (2, 1)


def test_p3_is_in_the_catalogue(emulator: Emulator) -> None:
    types = client(emulator, "ec2").describe_instance_types(InstanceTypes=["p3.2xlarge"])["InstanceTypes"]
    assert types[0]["GpuInfo"]["Gpus"][0]["Name"] == "V100"


def test_reset_forgets_resources_and_seeds_again(emulator: Emulator) -> None:
    client(emulator, "ec2").create_key_pair(KeyName="forgotten")
    emulator.reset()
    assert client(emulator, "ec2").describe_key_pairs()["KeyPairs"] == []
    line = DLAMI_LINES[1]
    assert client(emulator, "ssm").get_parameter(Name=dlami_parameter_name(line))["Parameter"]["Value"]


FIRST_KEY_PAIRS_CALL = """
import boto3
from moto.ec2.responses._base_response import EC2BaseResponse
from local_cloud.emulator import Emulator

emulator = Emulator().start()
shared = EC2BaseResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER
before = len(shared)
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=emulator.url,
                   aws_access_key_id="testing", aws_secret_access_key="testing")
ec2.describe_key_pairs()
ec2.describe_key_pairs(IncludePublicKey=True)
print(before, len(shared))
emulator.stop()
"""


def test_first_describe_key_pairs_leaves_shared_state_alone() -> None:
    """moto's first DescribeKeyPairs in a process adds a key to a dict every EC2 response is
    serialized with; a response serialized in another thread meanwhile failed with HTTP 500
    (lab_info reads in parallel). A fresh emulator must have settled that dict: a first call
    (in a fresh process, as in a new test run) changes nothing in its size."""
    done = subprocess.run([sys.executable, "-c", FIRST_KEY_PAIRS_CALL], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = done.stdout.split()
    assert before == after


# --- as strict as EC2 where the flows touch it (local_cloud/aws_rules.py) -------------

def launch_time(ec2: Any, instance_id: str) -> dt.datetime:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["LaunchTime"]


def test_start_sets_launch_time_to_the_start(emulator: Emulator) -> None:
    """EC2's LaunchTime is the last start (the status view's "running since"); moto kept
    the first launch's."""
    ec2 = client(emulator, "ec2")
    image = emulator.dlami["us-east-1"][dlami_parameter_name(DLAMI_LINES[0])]
    instance = ec2.run_instances(ImageId=image, InstanceType="g6.xlarge", MinCount=1, MaxCount=1)["Instances"][0]
    launched = instance["LaunchTime"]
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    time.sleep(1.1)  # LaunchTime has whole seconds
    assert launch_time(ec2, instance["InstanceId"]) == launched  # a stop leaves it
    before_start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    started = ec2.start_instances(InstanceIds=[instance["InstanceId"]])["StartingInstances"][0]
    assert started["PreviousState"]["Name"] == "stopped"
    restarted = launch_time(ec2, instance["InstanceId"])
    assert restarted > launched
    assert before_start <= restarted <= dt.datetime.now(dt.UTC)
    # Starting a running instance does not start it again: its LaunchTime stays.
    time.sleep(1.1)
    ec2.start_instances(InstanceIds=[instance["InstanceId"]])
    assert launch_time(ec2, instance["InstanceId"]) == restarted


ARCHITECTURE_MISMATCH = ("The architecture '{type}' of the specified instance type does not match the architecture "
                         "'{ami}' of the specified AMI. Specify an instance type and an AMI that have matching "
                         "architectures, and try again. You can use 'describe-instance-types' or 'describe-images' "
                         "to discover the architecture of the instance type or AMI.")


def created(ec2: Any) -> dict[str, int]:
    """What a RunInstances would leave behind, counted."""
    return {"reservations": len(ec2.describe_instances()["Reservations"]),
            "volumes": len(ec2.describe_volumes()["Volumes"]),
            "interfaces": len(ec2.describe_network_interfaces()["NetworkInterfaces"])}


@pytest.mark.parametrize(("line", "instance_type", "type_arch", "ami_arch"), [
    (DLAMI_LINES[0], "g5g.xlarge", "arm64", "x86_64"),   # an arm64-only type, the x86_64 DLAMI
    (DLAMI_LINES[-1], "g6.xlarge", "x86_64", "arm64"),    # the arm64 DLAMI on an x86_64 type
])
def test_run_instances_refuses_an_ami_of_another_architecture(emulator: Emulator, line: DlamiLine,
                                                              instance_type: str, type_arch: str,
                                                              ami_arch: str) -> None:
    ec2 = client(emulator, "ec2")
    image = emulator.dlami["us-east-1"][dlami_parameter_name(line)]
    before = created(ec2)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.run_instances(ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1)
    answer = refused.value.response
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert answer["Error"]["Code"] == "InvalidParameterValue"
    assert answer["Error"]["Message"] == ARCHITECTURE_MISMATCH.format(type=type_arch, ami=ami_arch)
    assert created(ec2) == before  # nothing made, not even half an instance
    # The same AMI on a type of its own architecture launches: the rule, not the image, refused.
    fitting = "g5g.xlarge" if ami_arch == "arm64" else "g6.xlarge"
    ec2.run_instances(ImageId=image, InstanceType=fitting, MinCount=1, MaxCount=1)
    assert created(ec2)["reservations"] == before["reservations"] + 1


def test_a_launch_template_is_held_to_the_same_rule(emulator: Emulator) -> None:
    """moto takes the type and image from a launch template inside RunInstances: the
    check must see them there too."""
    ec2 = client(emulator, "ec2")
    image = emulator.dlami["us-east-1"][dlami_parameter_name(DLAMI_LINES[0])]
    ec2.create_launch_template(LaunchTemplateName="arm", LaunchTemplateData={"InstanceType": "g5g.xlarge",
                                                                             "ImageId": image})
    with pytest.raises(botocore.exceptions.ClientError, match="architecture 'arm64' of the specified instance type"):
        ec2.run_instances(LaunchTemplate={"LaunchTemplateName": "arm"}, MinCount=1, MaxCount=1)
    assert ec2.describe_instances()["Reservations"] == []


@pytest.mark.parametrize("region", DEFAULT_REGIONS)
def test_each_region_has_an_arm64_dlami_beside_the_x86_64_ones(emulator: Emulator, region: str) -> None:
    ssm, ec2 = client(emulator, "ssm", region), client(emulator, "ec2", region)
    arm_lines = {line.parameter for line in DLAMI_LINES if line.architecture == "arm64"}
    assert arm_lines == {f"oss-nvidia-driver-gpu-pytorch-{v}" for v in ("2.7-ubuntu-22.04", "2.9-ubuntu-24.04",
                                                                         "2.12-ubuntu-24.04")}
    for line in DLAMI_LINES:
        ami = ssm.get_parameter(Name=dlami_parameter_name(line))["Parameter"]["Value"]
        image = ec2.describe_images(ImageIds=[ami])["Images"][0]
        assert (image["Architecture"], image["OwnerId"]) == (line.architecture, AMAZON_OWNER_ID)
        assert image["Name"].startswith(line.name_prefix)
        assert ("ARM64" in image["Name"]) == (line.architecture == "arm64")  # as AWS names them
    # The default name pattern matches both builds; lab_info's fallback asks for one architecture.
    pattern = "Deep Learning *OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 24.04) *"
    found = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [pattern]}])["Images"]
    assert {i["Architecture"] for i in found} == {"x86_64", "arm64"}
    found = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [pattern]},
                                                           {"Name": "architecture", "Values": ["arm64"]}])["Images"]
    assert found and {i["Architecture"] for i in found} == {"arm64"}
    # A test that takes "a DLAMI" (the first of a region's) gets an x86_64 one.
    first = next(iter(emulator.dlami[region].values()))
    assert ec2.describe_images(ImageIds=[first])["Images"][0]["Architecture"] == "x86_64"


@pytest.mark.parametrize("region", DEFAULT_REGIONS)
def test_get_parameters_by_path_lists_every_line_of_an_architecture(emulator: Emulator, region: str) -> None:
    """AWS's public DLAMI parameters, read as lab_info reads them: GetParametersByPath over HTTP,
    pages of at most 10."""
    ssm = client(emulator, "ssm", region)
    for architecture in ("x86_64", "arm64"):
        pages = ssm.get_paginator("get_parameters_by_path").paginate(
            Path=f"/aws/service/deeplearning/ami/{architecture}/", Recursive=True)
        found = {p["Name"]: p["Value"] for page in pages for p in page["Parameters"]}
        wanted = {dlami_parameter_name(line) for line in DLAMI_LINES if line.architecture == architecture}
        assert set(found) == wanted
        assert all(found[name] == emulator.dlami[region][name] for name in wanted)
    # Not recursive: the lines are two levels further down.
    assert ssm.get_parameters_by_path(Path="/aws/service/deeplearning/ami/x86_64")["Parameters"] == []


def test_a_line_publishes_a_newer_image_in_one_region(emulator: Emulator) -> None:
    line = next(line for line in DLAMI_LINES if line.parameter.endswith("2.12-ubuntu-24.04")
                and line.architecture == "x86_64")
    name = dlami_parameter_name(line)
    before = client(emulator, "ssm").get_parameter(Name=name)["Parameter"]
    other_region = emulator.dlami["eu-west-1"][name]
    image = emulator.publish_dlami("us-east-1", line, "20261201")
    after = client(emulator, "ssm").get_parameter(Name=name)["Parameter"]
    assert (after["Value"], after["Version"]) == (image, before["Version"] + 1)
    described = client(emulator, "ec2").describe_images(ImageIds=[image])["Images"][0]
    assert described["Name"] == f"{line.name_prefix} 20261201"
    assert described["CreationDate"].startswith("2026-12-01")
    assert emulator.dlami["us-east-1"][name] == image and emulator.dlami["eu-west-1"][name] == other_region
