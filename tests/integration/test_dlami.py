"""The Deep Learning AMI a lab gets, against the emulated cloud seeded like a real region (issue 16):
the newest supported PyTorch line of the type's architecture, from AWS's public SSM parameters;
a pinned line or image id; the fallback by name when SSM is refused; and an image published
after the launch, which status.yml shows and which never replaces the instance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import dlami_line, dlami_parameter_name
from tests.aws_state import lab_state
from tests.playbook import changed_tasks, recap, run_playbook

LAB = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
REGION = "us-east-1"
P27 = "oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04"
P29 = "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04"
P212 = "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04"
ARM = {"gpu_lab_instance_type": "g5g.xlarge", "gpu_lab_fallback_instance_types": "g5g.2xlarge"}


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output on one line (Ansible folds long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def launch(cloud: Cloud, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_playbook("launch", cloud.env(), home, {**LAB, **extra})


def newest(cloud: Cloud, line: str, architecture: str = "x86_64", region: str = REGION) -> str:
    """The image the line's SSM parameter points at."""
    return cloud.emulator.dlami[region][dlami_parameter_name(dlami_line(line, architecture))]


def image_of(aws: Any, region: str = REGION) -> dict[str, Any]:
    """The lab's one instance's image, described."""
    ec2 = aws("ec2", region)
    instances = lab_state(ec2, "csdl")["instances"]
    assert len(instances) == 1, instances
    return ec2.describe_images(ImageIds=[instances[0]["ImageId"]])["Images"][0]


def images_of_line(aws: Any, line: str, region: str = REGION) -> list[dict[str, Any]]:
    """The line's x86_64 images, oldest first."""
    prefix = dlami_line(line).name_prefix
    found = aws("ec2", region).describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": [f"{prefix} *"]}])["Images"]
    return sorted(found, key=lambda i: i["CreationDate"])


def test_the_default_is_the_newest_image_of_the_newest_supported_x86_64_line(cloud: Cloud, aws: Any,
                                                                             tmp_path: Path) -> None:
    cloud.emulator.calls.reset()
    out = flat(ok(launch(cloud, tmp_path / "home")))
    calls = cloud.emulator.calls.snapshot()["by_action"]
    image = image_of(aws)
    # 2.12 before 2.9 (numbers, not text); the unsupported 2.7 and the base line are published too.
    assert image["ImageId"] == newest(cloud, P212)
    assert image["Name"] == "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260822"
    assert image["Architecture"] == "x86_64"
    assert (f"Image: {image['Name']} ({image['ImageId']}, created 2026-08-22, line {P212})." in out), out[-3000:]
    # One SSM path read (one page here) and one DescribeImages find it; no GetParameter any more.
    # (The other DescribeImages looks for the lab's shelf, the image a shelved lab comes back from.)
    assert (calls.get("ssm:GetParametersByPath"), calls.get("ec2:DescribeImages"), calls.get("ssm:GetParameter")) == (
        1, 2, None), calls


def test_an_arm64_type_gets_the_arm64_build_of_the_newest_line(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    out = flat(ok(launch(cloud, tmp_path / "home", **ARM)))
    image = image_of(aws)
    assert image["ImageId"] == newest(cloud, P212, "arm64")
    assert (image["Architecture"], image["Name"]) == (
        "arm64", "Deep Learning ARM64 OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260822")
    assert "Launched g5g.xlarge" in out, out[-3000:]


def test_another_region_has_its_own_image_of_the_line(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    ok(launch(cloud, tmp_path / "home", gpu_lab_region="eu-west-1"))
    assert image_of(aws, "eu-west-1")["ImageId"] == newest(cloud, P212, region="eu-west-1") != newest(cloud, P212)


def test_a_pinned_line_is_honoured_and_the_newer_line_is_named(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    out = flat(ok(launch(cloud, tmp_path / "home", gpu_lab_dlami=P29)))
    assert image_of(aws)["ImageId"] == newest(cloud, P29)
    assert f"a newer supported line exists, {P212}: set gpu_lab_dlami=latest" in out, out[-3000:]


def test_a_pinned_unsupported_line_launches_with_a_warning(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    out = flat(ok(launch(cloud, tmp_path / "home", gpu_lab_dlami=P27)))
    assert image_of(aws)["ImageId"] == newest(cloud, P27)
    assert f"its line {P27} is no longer patched (support ended 2026-04-23)" in out, out[-3000:]


def test_a_pinned_image_id_is_honoured(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    older = images_of_line(aws, P212)[0]
    assert older["ImageId"] != newest(cloud, P212)
    out = flat(ok(launch(cloud, tmp_path / "home", gpu_lab_ami_id=older["ImageId"])))
    assert image_of(aws)["ImageId"] == older["ImageId"]
    assert "a newer image of its line exists, Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) " \
           "20260822 (2026-08-22)" in out, out[-3000:]


@pytest.mark.parametrize("pinned", ["id", "line"])
def test_a_pinned_image_that_does_not_fit_the_type_creates_nothing(cloud: Cloud, aws: Any, tmp_path: Path,
                                                                   pinned: str) -> None:
    settings = ({"gpu_lab_ami_id": newest(cloud, P212)} if pinned == "id"
                else {"gpu_lab_dlami": "base-oss-nvidia-driver-gpu-ubuntu-24.04"})  # published for x86_64 only
    cloud.emulator.calls.reset()
    result = launch(cloud, tmp_path / "home", **ARM, **settings)
    out = flat(result)
    assert result.returncode != 0, out[-3000:]
    if pinned == "id":
        assert (f"The image gpu_lab_ami_id pins, {newest(cloud, P212)}, is x86_64, and instance types g5g.xlarge, "
                "g5g.2xlarge run arm64: set gpu_lab_ami_id to an image of that architecture") in out, out[-3000:]
    else:
        assert ("No Deep Learning AMI found in us-east-1 for the line 'base-oss-nvidia-driver-gpu-ubuntu-24.04' on "
                "arm64") in out, out[-3000:]
    assert cloud.emulator.calls.snapshot()["mutating"] == 0
    state = lab_state(aws("ec2"), "csdl")
    assert state["instances"] == [] and state["key_pairs"] == [] and state["groups"] == []


def test_an_image_published_after_the_launch_shows_in_status_and_replaces_nothing(cloud: Cloud, aws: Any,
                                                                                  tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home))
    launched = image_of(aws)
    status_file = tmp_path / "status.json"
    ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(status_file)}))
    first = json.loads(status_file.read_text())
    assert first["image"] == {"name": launched["Name"], "creation_date": "2026-08-22", "newer": ""}

    published = cloud.emulator.publish_dlami(REGION, dlami_line(P212), "20261201")
    again = ok(launch(cloud, home))
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)
    assert image_of(aws)["ImageId"] == launched["ImageId"] != published

    cloud.emulator.calls.reset()
    shown = ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(status_file)}))
    calls = cloud.emulator.calls.snapshot()["by_action"]
    status = json.loads(status_file.read_text())
    assert status["image"]["name"] == launched["Name"]
    assert status["image"]["newer"].startswith(
        f"Image {launched['Name']}: a newer image of its line exists, Deep Learning OSS Nvidia Driver AMI GPU "
        "PyTorch 2.12 (Ubuntu 24.04) 20261201 (2026-12-01): the instance keeps its image;"), status["image"]
    assert f"image {launched['Name']} (2026-08-22); Image" in flat(shown), flat(shown)[-3000:]
    # One DescribeImages for the instance's image and what is newer; one for the lab's shelves and
    # one for the images any lab left (the left-over snapshots are those no image of ours uses).
    assert (calls.get("ssm:GetParametersByPath"), calls.get("ec2:DescribeImages")) == (1, 3), calls


def test_the_fallback_by_name_when_ssm_is_refused(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    cloud.emulator.faults.add("ssm:*", "AccessDeniedException")
    out = flat(ok(launch(cloud, tmp_path / "home")))
    # The default pattern matches every PyTorch line on 24.04 of both architectures: the newest
    # image of the newest supported line, of the type's architecture, is the one SSM names.
    image = image_of(aws)
    assert image["ImageId"] == newest(cloud, P212)
    assert ("The public SSM parameters of the Deep Learning AMIs could not be read (AccessDeniedException): the "
            "image was found by its name (gpu_lab_ami_name_pattern).") in out, out[-3000:]
    refused = [i.action for i in cloud.emulator.faults.log]
    assert "ssm:GetParametersByPath" in refused, refused


def test_the_fallback_by_name_finds_the_arm64_build_for_an_arm64_type(cloud: Cloud, aws: Any,
                                                                      tmp_path: Path) -> None:
    cloud.emulator.faults.add("ssm:*", "AccessDeniedException")
    ok(launch(cloud, tmp_path / "home", **ARM))
    assert image_of(aws)["ImageId"] == newest(cloud, P212, "arm64")
