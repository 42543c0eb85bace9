"""A disk carried through an image on the stand-in hosts, as EC2 carries an EBS volume through
CreateImage and RunInstances from the image (local_cloud/standin/disks.py):

* through the API: an image of a running instance (NoReboot) holds its disk as it is, files the
  guest deleted from the base image and directories it replaced included; an instance launched
  from it finds them, with its own host keys, its own key pair's key added to the keys already
  authorized, and the DLAMI's venv although the image is not named like a DLAMI; the image's
  disk is deleted when the image is deregistered;
* through the playbooks: launch.yml, a file and a commit on the host, shelve.yml (instance,
  stand-in and address gone; the image holds the disk), launch.yml again: the file and the
  commit are on the new instance at its new address, Jupyter answers through the tunnel, and the
  image, its snapshots and its stored disk are gone.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from local_cloud.emulator import DLAMI_LINES, dlami_parameter_name
from local_cloud.standin import disks, net
from local_cloud.standin.host import merged_authorized_keys
from tests.jupyter_access import Tunnel, free_port, http, wait_for_jupyter
from tests.playbook import run_playbook

LAB = "shlf"


def ssh(key: Path, ip: str, command: str, known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    known = ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts \
        else ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return subprocess.run(["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", *known, f"ubuntu@{ip}", command],
                          capture_output=True, text=True, timeout=60, check=False)


def lab_ssh(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """This machine's ssh entry for the lab (address and pinned host key as launch.yml wrote them)."""
    return subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", LAB, command],
                          capture_output=True, text=True, timeout=60, check=False)


def host_key(ip: str) -> str:
    scan = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", ip], capture_output=True, text=True,
                          timeout=30, check=False)
    return next((line.split()[2] for line in scan.stdout.splitlines() if not line.startswith("#")), "")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f} s"
        time.sleep(0.2)
    return found


def key_pair(ec2: Any, folder: Path) -> tuple[str, Path]:
    name = f"disk-{uuid.uuid4().hex[:8]}"
    key = folder / f"{name}.pem"
    key.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    key.chmod(0o600)
    return name, key


def test_keys_already_authorized_stay_and_the_key_pair_is_added() -> None:
    present = ('# mine\nssh-ed25519 AAAAold old@laptop\n\nfrom="10.0.0.0/8" ssh-rsa AAAAstaff staff\n'
               'ssh-ed25519 AAAApair pair-renamed\n')
    merged = merged_authorized_keys(present, ["ssh-ed25519 AAAApair pair", "ssh-rsa AAAAstaff again",
                                              "ecdsa-sha2-nistp256 AAAAnew new", "ecdsa-sha2-nistp256 AAAAnew new"])
    assert merged == ('# mine\nssh-ed25519 AAAAold old@laptop\nfrom="10.0.0.0/8" ssh-rsa AAAAstaff staff\n'
                      'ssh-ed25519 AAAApair pair-renamed\necdsa-sha2-nistp256 AAAAnew new\n')
    assert merged_authorized_keys("", ["ssh-ed25519 AAAApair pair", " "]) == "ssh-ed25519 AAAApair pair\n"


@pytest.mark.hosts
def test_an_image_carries_the_disk_to_a_new_instance(hosts_cloud: Cloud, aws: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    controller = hosts_cloud.controller
    ec2 = aws("ec2")
    dlami = aws("ssm").get_parameter(Name=dlami_parameter_name(DLAMI_LINES[0]))["Parameter"]["Value"]
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]

    def launch(image: str, key_name: str) -> tuple[str, str, str]:
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                                KeyName=key_name, SubnetId=subnet)["Instances"][0]["InstanceId"]
        address = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(InstanceId=iid, AllocationId=address["AllocationId"])
        controller.wait_until(iid, "booted", timeout=60)
        return iid, address["PublicIp"], address["AllocationId"]

    first_name, first_key = key_pair(ec2, tmp_path)
    first, first_ip, first_allocation = launch(dlami, first_name)
    first_host_key = host_key(first_ip)
    wrote = ssh(first_key, first_ip,
                "echo kept > ~/marker.txt && ln -s marker.txt ~/link && sudo rm /etc/motd"
                " && sudo rm -rf /etc/skel && sudo mkdir /etc/skel && sudo touch /etc/skel/only")
    assert wrote.returncode == 0, wrote.stderr

    image = ec2.create_image(InstanceId=first, Name="disk-carried", NoReboot=True)["ImageId"]
    disk = wait_for("stored", lambda: disks.stored(controller.state_dir, image))
    assert (disk / "home/ubuntu/marker.txt").read_text() == "kept\n"
    assert controller.host(first).booted  # NoReboot: the running instance was copied as it is
    ec2.disassociate_address(PublicIp=first_ip)
    ec2.release_address(AllocationId=first_allocation)
    ec2.terminate_instances(InstanceIds=[first])
    controller.wait_until(first, "gone")
    assert disks.stored(controller.state_dir, image) == disk  # the image keeps it

    second_name, second_key = key_pair(ec2, tmp_path)
    second, second_ip, second_allocation = launch(image, second_name)
    found = ssh(second_key, second_ip,
                "cat ~/marker.txt; readlink ~/link; test -e /etc/motd || echo no-motd; ls -A /etc/skel;"
                " test -x /opt/pytorch/bin/jupyter && echo venv; hostname; stat -c %U:%a ~/.ssh/authorized_keys")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["kept", "marker.txt", "no-motd", "only", "venv",
                                    "ip-" + second_ip.replace(".", "-"), "ubuntu:600"]
    assert ssh(first_key, second_ip, "true").returncode == 0  # keys on the disk stay authorized
    assert host_key(second_ip) not in ("", first_host_key)  # a new instance makes its own host keys

    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[image])["Images"][0][
        "BlockDeviceMappings"] if "Ebs" in m]
    ec2.deregister_image(ImageId=image)
    for snapshot_id in snapshot_ids:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    wait_for("deleted", lambda: not disk.parent.exists())
    assert ssh(second_key, second_ip, "cat ~/marker.txt").stdout == "kept\n"  # the instance's own copy
    ec2.disassociate_address(PublicIp=second_ip)
    ec2.release_address(AllocationId=second_allocation)
    ec2.terminate_instances(InstanceIds=[second])
    controller.wait_until(second, "gone")


def shelf_images(ec2: Any) -> list[dict[str, Any]]:
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]}])["Images"]


def shelf_snapshots(ec2: Any) -> list[dict[str, Any]]:
    return ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]}])[
        "Snapshots"]


def running(ec2: Any) -> list[dict[str, Any]]:
    return [i for r in ec2.describe_instances(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]}])["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]


@pytest.mark.hosts
def test_a_shelved_lab_comes_back_with_its_disk(hosts_cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    cloud = hosts_cloud
    controller = cloud.controller
    ec2 = aws("ec2")
    url, head = make_course_repo(controller.share_dir, name="shlfcourse")
    home = tmp_path / "home"
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url}

    launched = run_playbook("launch", cloud.env(), home, lab)
    assert launched.returncode == 0, launched.stdout[-4000:] + launched.stderr[-2000:]
    (first,) = running(ec2)
    old_id, old_ip = first["InstanceId"], first["PublicIpAddress"]
    wrote = lab_ssh(home, "echo 'my notes' > ~/notes.txt && cd ~/shlfcourse && echo solved > answer.txt"
                          " && git add answer.txt && git -c user.name=Student -c user.email=s@example.invalid"
                          " commit -qm 'my answer' && git rev-parse HEAD")
    assert wrote.returncode == 0, wrote.stderr
    commit = wrote.stdout.strip()
    assert commit != head

    shelved = run_playbook("shelve", cloud.env(), home, lab)
    assert shelved.returncode == 0, shelved.stdout[-4000:] + shelved.stderr[-2000:]
    (image,) = shelf_images(ec2)
    assert running(ec2) == [] and ec2.describe_addresses()["Addresses"] == []
    controller.wait_until(old_id, "gone")
    assert not (controller.state_dir / old_id).exists()
    assert not [ns for ns in net.list_netns() if ns.endswith(old_id)]
    disk = disks.stored(controller.state_dir, image["ImageId"])
    assert disk is not None and (disk / "home/ubuntu/notes.txt").read_text() == "my notes\n"

    back = run_playbook("launch", cloud.env(), home, lab)
    assert back.returncode == 0, back.stdout[-4000:] + back.stderr[-2000:]
    (restored,) = running(ec2)
    assert restored["ImageId"] == image["ImageId"] and restored["InstanceId"] != old_id
    new_ip = restored["PublicIpAddress"]
    assert new_ip != old_ip
    resolved = subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-G", LAB], capture_output=True,
                              text=True, check=True).stdout.splitlines()
    assert f"hostname {new_ip}" in resolved  # this machine's entry names the new address
    found = lab_ssh(home, "cat ~/notes.txt; git -C ~/shlfcourse log -1 --format=%H; cat ~/shlfcourse/answer.txt")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == ["my notes", commit, "solved"], found.stdout

    token = (home / ".gpu_lab" / LAB / "jupyter_token").read_text().strip()
    tunnel = Tunnel(home, free_port(), LAB)
    try:
        wait_for_jupyter(f"http://127.0.0.1:{tunnel.local_port}", token)
        assert http(f"http://127.0.0.1:{tunnel.local_port}/api/contents/answer.txt?token={token}")[0] == 200
    finally:
        tunnel.close()

    assert shelf_images(ec2) == [] and shelf_snapshots(ec2) == []
    wait_for("deleted", lambda: disks.stored_ids(controller.state_dir) == [], timeout=10)
