"""Bad input fails before anything is created, with one sentence that says what to fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import boto3
import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import Emulator
from tests.playbook import run_playbook

GOOD = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}

CASES = [
    ("lab name", {"gpu_lab_name": "CSDL_lab!"}, "Lab name 'CSDL_lab!' is not valid: set gpu_lab_name"),
    ("lab name too long", {"gpu_lab_name": "a" * 40}, "is not valid: set gpu_lab_name"),
    ("unknown region", {"gpu_lab_region": "us-easst-1"}, "Region 'us-easst-1' is not an AWS region"),
    ("malformed CIDR", {"gpu_lab_ssh_cidr": "203.0.113.300/32"}, "is not an IPv4 network in CIDR form"),
    ("CIDR with host bits", {"gpu_lab_ssh_cidr": "203.0.113.7/24"}, "is not an IPv4 network in CIDR form"),
    ("world-open CIDR", {"gpu_lab_ssh_cidr": "0.0.0.0/0"}, "opens the server to the whole internet"),
    ("empty instance type", {"gpu_lab_instance_type": "''"}, "Instance type '' is not valid"),
    ("unknown instance type", {"gpu_lab_instance_type": "g9.huge"},
     "Instance type 'g9.huge' does not exist in us-east-1"),
    ("volume not a number", {"gpu_lab_volume_size": "lots"}, "Volume size 'lots' is not valid"),
    ("volume smaller than AMI", {"gpu_lab_volume_size": "40"}, "smaller than the AMI's 75 GiB snapshot"),
    ("malformed AMI id", {"gpu_lab_ami_id": "ubuntu"}, "AMI id 'ubuntu' is not valid"),
    ("unknown DLAMI line", {"gpu_lab_dlami": "no-such-line", "gpu_lab_ami_name_pattern": "Nothing *"},
     "No Deep Learning AMI found in us-east-1 for the line 'no-such-line'"),
    ("malformed fallback type", {"gpu_lab_fallback_instance_types": "g5.xlarge,big"},
     "Fallback instance types g5.xlarge,big are not valid"),
    ("unknown fallback type", {"gpu_lab_fallback_instance_types": "g5.xlarge,g9.huge"},
     "Fallback instance type g9.huge does not exist in us-east-1"),
    # AWS refuses another architecture at RunInstances, after the key pair and group exist.
    # The image is the preferred type's architecture (x86_64 for g6): an arm64 fallback cannot run it.
    ("arm64 fallback, x86_64 image", {"gpu_lab_fallback_instance_types": "g5g.xlarge"},
     "Instance type g5g.xlarge cannot run the image"),
    ("line without an arm64 build", {"gpu_lab_instance_type": "g5g.xlarge",
                                     "gpu_lab_fallback_instance_types": "g5g.2xlarge",
                                     "gpu_lab_dlami": "base-oss-nvidia-driver-gpu-ubuntu-24.04"},
     "No Deep Learning AMI found in us-east-1 for the line 'base-oss-nvidia-driver-gpu-ubuntu-24.04' on arm64"),
    ("type without a GPU", {"gpu_lab_instance_type": "m5.xlarge"}, "Instance type m5.xlarge has no GPU"),
    ("fallback without a GPU", {"gpu_lab_fallback_instance_types": "g5.xlarge,t3.xlarge"},
     "Instance type t3.xlarge has no GPU"),
    ("zone of another region", {"gpu_lab_zones": "us-west-2a"}, "Zones us-west-2a are not all zones of us-east-1"),
    ("Jupyter port out of range", {"gpu_lab_jupyter_port": "70000"}, "Jupyter port '70000' is not valid"),
    ("Jupyter port privileged", {"gpu_lab_jupyter_port": "80"}, "Jupyter port '80' is not valid"),
    ("course repo not a URL", {"gpu_lab_course_repo": "course.git"}, "Course repository 'course.git' is not a git URL"),
    ("course repo unreachable", {"gpu_lab_course_repo": "https://127.0.0.1:9/course.git"},
     "Could not read the course repository https://127.0.0.1:9/course.git from this machine"),
    ("idle minutes not a number", {"gpu_lab_idle_minutes": "1h"}, "Idle minutes '1h' is not valid"),
    ("daily stop not a time", {"gpu_lab_daily_stop": "25:00"}, "Daily stop '25:00' is not a time"),
]


@pytest.fixture
def emulator(cloud: Cloud) -> Emulator:
    return cloud.emulator


def assert_nothing_created(emulator: Emulator, home: Path) -> None:
    calls = emulator.calls.snapshot()
    assert calls["mutating"] == 0, calls["by_action"]
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=emulator.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert not list(home.glob(".ssh/*.pem"))


@pytest.mark.parametrize(("what", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_early(emulator: Emulator, tmp_path: Path, what: str, extra: dict[str, str],
                               message: str) -> None:
    emulator.calls.reset()
    result = run_playbook("launch", emulator.env(), tmp_path / "home", {**GOOD, **extra})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    assert message in " ".join(out.split()), out[-3000:]
    assert_nothing_created(emulator, tmp_path / "home")


def test_no_credentials_names_the_ways(emulator: Emulator, tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": emulator.url, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    emulator.calls.reset()
    result = run_playbook("launch", env, tmp_path / "home", GOOD)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "No working AWS credentials" in out and "aws sso login" in out and "AWS_ACCESS_KEY_ID" in out, out[-3000:]
    assert_nothing_created(emulator, tmp_path / "home")


def test_ami_from_another_region(emulator: Emulator, tmp_path: Path) -> None:
    other = next(iter(emulator.dlami["us-west-2"].values()))
    emulator.calls.reset()
    result = run_playbook("launch", emulator.env(), tmp_path / "home", {**GOOD, "gpu_lab_ami_id": other})
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"AMI {other} does not exist in us-east-1" in out, out[-3000:]
    assert_nothing_created(emulator, tmp_path / "home")


def test_lost_private_key_stops_before_launch(emulator: Emulator, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=emulator.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    ec2.create_key_pair(KeyName="lost-server")
    try:
        emulator.calls.reset()
        result = run_playbook("launch", emulator.env(), tmp_path / "home", {**GOOD, "gpu_lab_name": "lost"})
        out = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0
        assert "Key pair lost-server exists in us-east-1 but its private key" in out, out[-3000:]
        assert "gpu_lab_rotate_key=true" in out
        assert emulator.calls.snapshot()["mutating"] == 0
        assert ec2.describe_instances()["Reservations"] == []
    finally:
        ec2.delete_key_pair(KeyName="lost-server")


def test_expired_credentials_say_log_in_again(emulator: Emulator, tmp_path: Path) -> None:
    emulator.calls.reset()
    with emulator.faults.active("*", "ExpiredToken"):
        result = run_playbook("launch", emulator.env(), tmp_path / "home", GOOD)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Your AWS session has expired (ExpiredToken): log in again" in out, out[-3000:]
    assert_nothing_created(emulator, tmp_path / "home")


def test_key_file_readable_by_others_stops_before_launch(emulator: Emulator, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "csdl-server.pem"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o644)
    emulator.calls.reset()
    result = run_playbook("launch", emulator.env(), home, GOOD)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"The private key {key} can be read by others (mode 644)" in out, out[-3000:]
    assert f"chmod 400 {key}" in out
    assert oct(key.stat().st_mode & 0o777) == "0o644", "the user's file was changed"
    assert emulator.calls.snapshot()["mutating"] == 0
