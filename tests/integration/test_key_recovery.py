"""A lost key recovered with the disk kept (issue 16): launch.yml on a stand-in host, a file
written on its disk and a second authorized key (as a class's staff key would be), the key
file deleted, recover_key.yml: the new key logs in and finds the file on the same volume, the
lost key no longer does, the other key still does, the instance's user data is its own again,
this machine's ssh entry still works, and a second run changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from tests.playbook import changed_tasks, recap, run_playbook

pytestmark = pytest.mark.hosts

LAB = "keyflow"


def ssh(key: Path, ip: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", f"ubuntu@{ip}", command],
                          capture_output=True, text=True, timeout=60, check=False)


def test_lost_key_is_recovered_with_the_disk_kept(hosts_cloud: Cloud, tmp_path: Path, aws: Any) -> None:
    cloud = hosts_cloud
    url, _ = make_course_repo(cloud.controller.share_dir, name="keycourse")
    home = tmp_path / "home"
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url}
    launched = run_playbook("launch", cloud.env(), home, lab)
    assert launched.returncode == 0, launched.stdout[-4000:]

    ec2 = aws("ec2")
    instance = ec2.describe_instances(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]},
                                               {"Name": "instance-state-name", "Values": ["running"]}])[
        "Reservations"][0]["Instances"][0]
    instance_id, ip = instance["InstanceId"], instance["PublicIpAddress"]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    user_data_before = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData").get("UserData")

    key = home / ".ssh" / f"{LAB}-server.pem"
    lost = tmp_path / "lost.pem"  # the test keeps what the student lost, to try it afterwards
    shutil.copy(key, lost)
    os.chmod(lost, 0o400)
    staff = tmp_path / "staff"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(staff)], check=True)
    wrote = ssh(key, ip, f"echo precious > ~/precious.txt && echo '{(tmp_path / 'staff.pub').read_text().strip()}'"
                         " >> ~/.ssh/authorized_keys")
    assert wrote.returncode == 0, wrote.stderr
    key.unlink()

    checked = run_playbook("recover_key", cloud.env(), home, lab | {"gpu_lab_confirm_recover": LAB}, "--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert f"Check mode: lab {LAB} would make a new private key {key}" in " ".join(checked.stdout.split())
    assert not key.exists()
    assert ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "running"

    # The instance runs: recovery stops it, so it is confirmed (here with -e, as in scripts).
    recovered = run_playbook("recover_key", cloud.env(), home, lab | {"gpu_lab_confirm_recover": LAB})
    assert recovered.returncode == 0, recovered.stdout[-6000:]
    said = " ".join(recovered.stdout.split())  # the callback wraps long messages
    assert f"Lab {LAB}: the new key {key}" in said, recovered.stdout[-3000:]
    assert "the lost key no longer does" in said, recovered.stdout[-3000:]

    assert key.exists() and (key.stat().st_mode & 0o777) == 0o400
    assert key.read_bytes() != lost.read_bytes()
    found = ssh(key, ip, "cat ~/precious.txt")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "precious"
    refused = ssh(lost, ip, "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    assert ssh(staff, ip, "true").returncode == 0  # every other authorized key stays

    after = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert after["State"]["Name"] == "running"
    assert after["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] == volume_id
    assert after["PublicIpAddress"] == ip
    assert ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData").get("UserData") == \
        user_data_before
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
    pair = ec2.describe_key_pairs(KeyNames=[f"{LAB}-server"], IncludePublicKey=True)["KeyPairs"][0]
    assert pair["PublicKey"].split()[1] == public.split()[1]
    assert after["KeyName"] == f"{LAB}-server"

    # This machine's ssh entry (same address, same pinned host key) works with the new key.
    entry = subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", LAB, "cat precious.txt"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert entry.returncode == 0 and entry.stdout.strip() == "precious", entry.stderr

    again = run_playbook("recover_key", cloud.env(), home, lab)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "nothing to recover" in " ".join(again.stdout.split()), again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)
    assert ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "running"
    # The recovered lab is a lab like any other: a launch finds nothing to change.
    relaunched = run_playbook("launch", cloud.env(), home, lab)
    assert relaunched.returncode == 0, relaunched.stdout[-4000:]
    assert recap(relaunched.stdout)["changed"] == 0, changed_tasks(relaunched.stdout)


def test_recovery_of_a_stopped_lab_leaves_it_stopped(hosts_cloud: Cloud, tmp_path: Path, aws: Any) -> None:
    """No question for a stopped lab (nothing runs to be stopped); it is started to authorize
    the key, and stopped again with its own user data. A key file that is not the lab's is
    kept aside, never overwritten."""
    cloud = hosts_cloud
    url, _ = make_course_repo(cloud.controller.share_dir, name="keycourse2")
    home = tmp_path / "home"
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url}
    launched = run_playbook("launch", cloud.env(), home, lab)
    assert launched.returncode == 0, launched.stdout[-4000:]
    stopped = run_playbook("stop", cloud.env(), home, lab)
    assert stopped.returncode == 0, stopped.stdout[-4000:]

    key = home / ".ssh" / f"{LAB}-server.pem"
    lost = tmp_path / "lost.pem"
    shutil.copy(key, lost)
    os.chmod(lost, 0o400)
    key.chmod(0o600)
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)  # not the lab's
    wrong = key.read_bytes()

    recovered = run_playbook("recover_key", cloud.env(), home, lab)
    assert recovered.returncode == 0, recovered.stdout[-6000:]
    assert "stopped again, as it was" in " ".join(recovered.stdout.split()), recovered.stdout[-3000:]
    aside = [p for p in key.parent.iterdir() if p.name.startswith(f"{key.name}.replaced-")]
    assert len(aside) == 1 and aside[0].read_bytes() == wrong

    ec2 = aws("ec2")
    instance = ec2.describe_instances(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]}])[
        "Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "stopped"
    assert ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData").get(
        "UserData", {}).get("Value", "") == ""

    started = run_playbook("start", cloud.env(), home, lab)
    assert started.returncode == 0, started.stdout[-4000:]
    ip = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0][
        "PublicIpAddress"]
    assert ssh(key, ip, "true").returncode == 0
    assert ssh(lost, ip, "true").returncode == 255
