"""Shelving (shelve.yml, gpu_lab_shelve_after_days, teardown -e gpu_lab_keep_archive=true), through the
playbooks against the emulated cloud: an image of the disk stays (tagged as the lab's shelf), the
instance and its Elastic IP go; status.yml shows the shelf and what it costs; launch.yml brings
the lab back from the image and then deletes it and its snapshots; a teardown keeps the archive
or removes it; every second run is changed=0 and nothing billable is left that was not meant to be."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import flat, run_playbook, run_playbook_typing, succeeded

LAB = {"gpu_lab_name": "shv", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
TEARDOWN = {"gpu_lab_confirm_teardown": "shv", "gpu_lab_force_teardown": "true"}


def shelves(aws: Callable[..., Any]) -> list[dict[str, Any]]:
    return aws("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:gpu_lab:lab", "Values": ["shv"]}, {"Name": "tag:gpu_lab:shelf", "Values": ["true"]}])["Images"]


def snapshots(aws: Callable[..., Any]) -> list[dict[str, Any]]:
    return aws("ec2").describe_snapshots(OwnerIds=["self"],
                                         Filters=[{"Name": "tag:gpu_lab:lab", "Values": ["shv"]}])["Snapshots"]


def test_shelve_then_launch_brings_the_disk_back_and_deletes_the_shelf(cloud: Cloud, aws: Callable[..., Any],
                                                                       tmp_path: Path) -> None:
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    (first,) = lab_state(aws("ec2"), "shv")["instances"]
    shelved = succeeded(run_playbook("shelve", cloud.env(), tmp_path, LAB), changed=1)
    (image,) = shelves(aws)
    assert f"Lab shv is shelved: its disk is the image {image['ImageId']}" in shelved, shelved[-3000:]
    assert "at most $5.00/month (100 GiB of snapshots" in shelved
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert (tags["gpu_lab:shelf_of"], tags["gpu_lab:shelf_type"]) == (first["InstanceId"], "g6.xlarge")
    state = lab_state(aws("ec2"), "shv")
    assert state["instances"] == [] and state["addresses"] == []
    assert state["key_pairs"] and state["groups"]  # kept: the lab comes back with them
    assert [s["SnapshotId"] for s in snapshots(aws)] == [m["Ebs"]["SnapshotId"]
                                                       for m in image["BlockDeviceMappings"] if "Ebs" in m]
    again = succeeded(run_playbook("shelve", cloud.env(), tmp_path, LAB), changed=0)
    assert f"Lab shv is shelved already: {image['ImageId']}" in again
    start = run_playbook("start", cloud.env(), tmp_path, LAB)
    assert start.returncode != 0 and f"Lab shv is shelved in us-east-1 (its disk is the image {image['ImageId']}): " \
        "`ansible-playbook launch.yml` brings it back from it." in flat(start)

    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB))
    assert "state shelved" in status and f"shelf {image['ImageId']} of " in status, status[-3000:]
    assert "100 GiB of snapshots, at most $5.00/month; launch.yml brings the lab back from it" in status

    back = succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    (restored,) = lab_state(aws("ec2"), "shv")["instances"]
    assert restored["ImageId"] == image["ImageId"] and restored["InstanceId"] != first["InstanceId"]
    assert f"Brought back from its shelf ({image['ImageId']})" in back, back[-3000:]
    assert shelves(aws) == [] and snapshots(aws) == []
    (address,) = lab_state(aws("ec2"), "shv")["addresses"]
    assert address.get("InstanceId") == restored["InstanceId"]
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB), changed=0)


def test_an_interrupted_spot_lab_moves_with_its_disk_and_leaves_no_request(cloud: Cloud, aws: Callable[..., Any],
                                                                          tmp_path: Path) -> None:
    """Only AWS starts an interrupted Spot Instance again: start.yml's message says how to move it
    with its disk instead (shelve.yml, then launch.yml), and that works, leaving no open request
    (which would make AWS launch a replacement)."""
    spot = {**LAB, "gpu_lab_market": "spot", "gpu_lab_start_capacity_wait_minutes": "0"}
    succeeded(run_playbook("launch", cloud.env(), tmp_path, spot))
    (first,) = lab_state(aws("ec2"), "shv")["instances"]
    cloud.emulator.spot.interrupt(first["InstanceId"])
    refused = run_playbook("start", cloud.env(), tmp_path, spot)
    assert refused.returncode != 0 and "shelve.yml, then launch.yml" in flat(refused), flat(refused)[-3000:]
    succeeded(run_playbook("shelve", cloud.env(), tmp_path, spot), changed=1)
    time.sleep(0.5)
    ec2 = aws("ec2")
    assert {r["State"] for r in ec2.describe_spot_instance_requests()["SpotInstanceRequests"]} == {"cancelled"}
    assert lab_state(ec2, "shv")["instances"] == []
    succeeded(run_playbook("launch", cloud.env(), tmp_path, spot))
    (restored,) = lab_state(ec2, "shv")["instances"]
    assert restored.get("InstanceLifecycle") == "spot"


def test_a_lab_stopped_long_enough_is_shelved_when_status_runs(cloud: Cloud, aws: Callable[..., Any],
                                                               tmp_path: Path) -> None:
    # 0.00002 days = 1.7 s: the lab is due right after its stop.
    settings = {**LAB, "gpu_lab_shelve_after_days": "0.00002"}
    succeeded(run_playbook("launch", cloud.env(), tmp_path, settings))
    quiet = succeeded(run_playbook("status", cloud.env(), tmp_path, settings), changed=0)  # running: not due
    assert "shelved" not in quiet
    succeeded(run_playbook("stop", cloud.env(), tmp_path, LAB))
    time.sleep(3)
    # Another shell, without the launch's -e: the days the launch recorded on the instance apply.
    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB), changed=1)
    assert "Lab shv is shelved: its disk is the image" in status and "state shelved" in status, status[-3000:]
    assert len(shelves(aws)) == 1 and lab_state(aws("ec2"), "shv")["instances"] == []
    succeeded(run_playbook("status", cloud.env(), tmp_path, settings), changed=0)
    # Off by default: a stopped lab stays stopped whatever its age, and a status run's own -e
    # does not shelve a lab whose launch recorded none (it says which setting applies).
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    (restored,) = lab_state(aws("ec2"), "shv")["instances"]
    assert {t["Key"]: t["Value"] for t in restored["Tags"]}["gpu_lab:shelve_after_days"] == "0"
    succeeded(run_playbook("stop", cloud.env(), tmp_path, LAB))
    time.sleep(2)
    succeeded(run_playbook("status", cloud.env(), tmp_path, LAB), changed=0)
    told = succeeded(run_playbook("status", cloud.env(), tmp_path, settings), changed=0)
    assert "Lab shv records gpu_lab_shelve_after_days=0 (from its launch), so status.yml never shelves it" in told
    assert lab_state(aws("ec2"), "shv")["instances"][0]["State"]["Name"] == "stopped"


def test_teardown_can_keep_the_disk_as_an_archive(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    key_file = tmp_path / ".ssh" / "shv-server.pem"
    assert key_file.exists()
    archive = {**LAB, **TEARDOWN, "gpu_lab_keep_archive": "true"}
    kept = succeeded(run_playbook("teardown", cloud.env(), tmp_path, archive))
    (image,) = shelves(aws)
    assert f"Its disk is kept as the image {image['ImageId']}" in kept, kept[-3000:]
    state = lab_state(aws("ec2"), "shv")
    assert state["instances"] == [] and state["addresses"] == [] and state["groups"] == []
    assert state["key_pairs"] and key_file.exists()
    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB))
    assert f"shelf {image['ImageId']}" in status and "at most $5.00/month" in status
    succeeded(run_playbook("teardown", cloud.env(), tmp_path, archive), changed=0)

    gone = succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**LAB, **TEARDOWN}))
    assert f"shelf {image['ImageId']} and its snapshots" in gone, gone[-3000:]
    assert shelves(aws) == [] and snapshots(aws) == []
    state = lab_state(aws("ec2"), "shv")
    assert state["key_pairs"] == [] and not key_file.exists()
    succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**LAB, **TEARDOWN}), changed=0)


def test_at_a_terminal_teardown_offers_to_keep_a_disk_it_cannot_check(cloud: Cloud, aws: Callable[..., Any],
                                                                      tmp_path: Path) -> None:
    """A stopped lab's disk cannot be looked at for unsaved work: at a terminal, teardown offers to
    keep it as an image (type keep) before it refuses; Enter refuses, as a run without a terminal
    does, and nothing is deleted."""
    succeeded(run_playbook("launch", cloud.env(), tmp_path, LAB))
    succeeded(run_playbook("stop", cloud.env(), tmp_path, LAB))
    confirmed = {**LAB, "gpu_lab_confirm_teardown": "shv"}
    offer = "Type keep to keep its disk as an image instead"
    refused = run_playbook_typing("teardown", cloud.env(), tmp_path, confirmed, [(offer, "")])
    out = " ".join(refused.stdout.split())
    assert refused.returncode != 0, out[-3000:]
    assert ("Teardown deletes the disk, and lab shv is stopped, so its disk cannot be checked for unsaved work. "
            f"{offer}") in out
    assert "Lab shv is stopped, so its disk cannot be checked for unsaved work, and teardown deletes the disk" in out
    state = lab_state(aws("ec2"), "shv")
    assert [i["State"]["Name"] for i in state["instances"]] == ["stopped"] and state["addresses"] and not shelves(aws)

    kept = run_playbook_typing("teardown", cloud.env(), tmp_path, confirmed, [(offer, "keep")])
    out = " ".join(kept.stdout.split())
    assert kept.returncode == 0, out[-3000:]
    (image,) = shelves(aws)
    assert f"Its disk is kept as the image {image['ImageId']}" in out, out[-3000:]
    state = lab_state(aws("ec2"), "shv")
    assert state["instances"] == [] and state["addresses"] == [] and state["key_pairs"]
    # Nothing at risk any more (no instance): no offer, nothing to do.
    succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**confirmed, "gpu_lab_keep_archive": "true"}), changed=0)


def test_a_snapshot_left_by_no_image_is_a_left_over(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    """A shelf's snapshot whose image is gone (a restore or teardown that stopped half-way)."""
    ec2 = aws("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=100)
    tags = [{"Key": "gpu_lab:lab", "Value": "ghost"}, {"Key": "gpu_lab:shelf", "Value": "true"}]
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"], TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": tags}])["SnapshotId"]
    ec2.delete_volume(VolumeId=volume["VolumeId"])
    status = succeeded(run_playbook("status", cloud.env(), tmp_path, LAB))
    assert f"Left over: snapshot {snapshot} (100 GiB) of lab ghost" in status, status[-3000:]
    succeeded(run_playbook("teardown", cloud.env(), tmp_path, {**LAB, **TEARDOWN, "gpu_lab_remove_orphans": "true"}))
    assert [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            if s["SnapshotId"] == snapshot] == []
