"""The emulator answers like AWS where the playbooks look, and counts calls at the HTTP boundary."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import boto3
import pytest

from tests.harness.cloud import Cloud
from tests.harness.emulator import DLAMI_LINES, Emulator, dlami_parameter_name
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
    assert len(images) == 2
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
from tests.harness.emulator import Emulator

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
