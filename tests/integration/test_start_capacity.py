"""start.yml when AWS has no capacity for the stopped lab's type in its zone (its disk keeps it
there): the same type is tried again within gpu_lab_start_capacity_wait_minutes, then the
stopped instance is changed to a fallback type its zone offers (disk and Elastic IP stay);
when nothing fits, one message and nothing changed. Faults are injected by the emulator
(local_cloud/faults.py) on StartInstances, by the type the instance has at that moment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import ACCOUNT_ID
from tests.aws_state import lab_state
from tests.playbook import recap, run_playbook

LAB = {"gpu_lab_name": "scap", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       # Seconds, not minutes, so the tests stay fast: 0.05 min = 3 s of tries (0.5 s, 1 s, 1.5 s).
       "gpu_lab_start_capacity_wait_minutes": "0.05"}
CAPACITY = "InsufficientInstanceCapacity"   # HTTP 500, as AWS sends it


def type_now(request: Any) -> str:
    """The type the instance of a StartInstances has in the emulator at that moment."""
    from moto.ec2.models import ec2_backends

    instance_id = request.first("InstanceId.1") or ""
    return ec2_backends[ACCOUNT_ID][request.region or "us-east-1"].get_instance(instance_id).instance_type


def flat(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


def stopped_lab(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path, settings: dict[str, str]) -> dict[str, Any]:
    """Launches the lab and stops it; what it has then (instance, volume, address)."""
    launched = run_playbook("launch", cloud.env(), tmp_path, settings)
    assert launched.returncode == 0, launched.stdout[-3000:]
    stopped = run_playbook("stop", cloud.env(), tmp_path, settings)
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    return looked_at(aws)


def looked_at(aws: Callable[..., Any]) -> dict[str, Any]:
    state = lab_state(aws("ec2"), "scap")
    (instance,) = state["instances"]
    (address,) = state["addresses"]
    return {"id": instance["InstanceId"], "type": instance["InstanceType"], "state": instance["State"]["Name"],
            "zone": instance["Placement"]["AvailabilityZone"],
            "volumes": [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])],
            "tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])},
            "address": (address["PublicIp"], address["AllocationId"], address.get("InstanceId"))}


@pytest.fixture
def faults(cloud: Cloud) -> Any:
    yield cloud.emulator.faults
    cloud.emulator.faults.clear()


def test_capacity_back_after_two_refusals_starts_the_same_type(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                                               tmp_path: Path) -> None:
    before = stopped_lab(cloud, aws, tmp_path, LAB)
    faults.add("ec2:StartInstances", CAPACITY, first=2)
    result = run_playbook("start", cloud.env(), tmp_path, LAB)
    out = flat(result)
    assert result.returncode == 0, out[-3000:]
    assert recap(result.stdout)["changed"] == 1, out[-3000:]
    assert [i.code for i in faults.log] == [CAPACITY, CAPACITY]
    assert "If AWS has no capacity for it in us-east-1a, start.yml tries again for up to 0.05 minute(s)" in out
    assert (f"Lab scap started {before['id']} (g6.xlarge in us-east-1a) after 2 refusals for capacity "
            "(InsufficientInstanceCapacity).") in out, out[-3000:]
    after = looked_at(aws)
    assert (after["state"], after["type"], after["volumes"]) == ("running", "g6.xlarge", before["volumes"])
    assert after["address"][:2] == before["address"][:2] and after["address"][2] == before["id"]


def test_never_back_for_the_type_changes_it_keeping_disk_and_address(cloud: Cloud, aws: Callable[..., Any],
                                                                     faults: Any, tmp_path: Path) -> None:
    before = stopped_lab(cloud, aws, tmp_path, LAB)
    faults.add("ec2:StartInstances", CAPACITY, where=lambda request: type_now(request) == "g6.xlarge")
    result = run_playbook("start", cloud.env(), tmp_path, LAB)
    out = flat(result)
    assert result.returncode == 0, out[-3000:]
    assert len(faults.log) >= 2  # the first try and at least one more within the bound
    after = looked_at(aws)
    assert (after["state"], after["type"], after["id"]) == ("running", "g5.xlarge", before["id"])
    assert after["volumes"] == before["volumes"]
    assert after["address"][:2] == before["address"][:2] and after["address"][2] == before["id"]
    # The lab still asks for g6.xlarge: drift sees no changed setting, a launch would not refuse.
    assert after["tags"]["gpu_lab:instance_type"] == "g6.xlarge"
    assert (f"so lab scap's instance {before['id']} was changed from g6.xlarge to g5.xlarge while stopped and "
            "started; its disk and Elastic IP are the same") in out, out[-3000:]
    assert (f"To go back to g6.xlarge later, run stop.yml, then aws ec2 modify-instance-attribute --region us-east-1 "
            f"--instance-id {before['id']} --instance-type Value=g6.xlarge, then start.yml.") in out
    # Running now: EC2 (and the emulator) refuse a type change until it is stopped.
    with pytest.raises(botocore.exceptions.ClientError, match="IncorrectInstanceState"):
        aws("ec2").modify_instance_attribute(InstanceId=before["id"], InstanceType={"Value": "g6.xlarge"})
    again = run_playbook("start", cloud.env(), tmp_path, LAB)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout[-3000:]


def test_no_fallback_offered_in_that_zone_changes_nothing(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                                          tmp_path: Path) -> None:
    # us-east-1e offers p5.4xlarge but none of the g types: the lab's disk is there.
    settings = {**LAB, "gpu_lab_instance_type": "p5.4xlarge", "gpu_lab_zones": "us-east-1e",
                "gpu_lab_fallback_instance_types": "[]"}
    before = stopped_lab(cloud, aws, tmp_path, settings)
    assert (before["type"], before["zone"]) == ("p5.4xlarge", "us-east-1e")
    faults.add("ec2:StartInstances", CAPACITY)
    result = run_playbook("start", cloud.env(), tmp_path,
                          {**settings, "gpu_lab_fallback_instance_types": "g6.xlarge,g5.xlarge"})
    out = flat(result)
    assert result.returncode != 0
    assert (f"AWS has no capacity in us-east-1e for the lab's instance {before['id']}: tried p5.4xlarge (") in out
    assert ("and no other candidate type is offered in that zone; it stays stopped and nothing changed.") in out, \
        out[-3000:]
    # One message, from the failed task only (ansible-core shows it as [ERROR] and as fatal).
    assert out.count("AWS has no capacity in us-east-1e") == out.count("FAILED!") * 2 == 2
    after = looked_at(aws)
    assert after == before


def test_nothing_that_starts_puts_the_type_back(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                               tmp_path: Path) -> None:
    before = stopped_lab(cloud, aws, tmp_path, {**LAB, "gpu_lab_start_capacity_wait_minutes": "0"})
    faults.add("ec2:StartInstances", CAPACITY)
    result = run_playbook("start", cloud.env(), tmp_path, {**LAB, "gpu_lab_start_capacity_wait_minutes": "0"})
    out = flat(result)
    assert result.returncode != 0
    assert ("tried g6.xlarge (InsufficientInstanceCapacity, 1 try), then as g5.xlarge, g4dn.xlarge; it stays "
            "stopped (its type is g6.xlarge again) and nothing changed.") in out, out[-3000:]
    assert len(faults.log) == 3
    assert looked_at(aws) == before
