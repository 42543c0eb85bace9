"""Idle auto-stop through the user's playbooks: launch.yml turns it on, the unused host
powers itself off (the instance becomes `stopped`, not terminated), start.yml brings it back
with Jupyter answering, and status.yml says when auto-stop is not healthy, and why."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from tests.jupyter_access import Tunnel, free_port, wait_for_jupyter
from tests.playbook import run_playbook

LAB = "idleflow"
WINDOW_S, INTERVAL_S, GRACE_S = 30, 2, 2


def status_json(cloud: Cloud, home: Path, lab: dict[str, str]) -> dict[str, Any]:
    result = run_playbook("status", {**cloud.env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}, home,
                          {**lab, "gpu_lab_status_format": "json"})
    assert result.returncode == 0, result.stdout[-3000:]
    for play in json.loads(result.stdout)["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == "Show it as JSON":
                return json.loads(task["hosts"]["localhost"]["msg"])
    raise AssertionError("status.yml printed no JSON")


def test_idle_host_stops_itself_and_comes_back(hosts_cloud: Cloud, tmp_path: Path, aws: Any) -> None:
    cloud = hosts_cloud
    url, _ = make_course_repo(cloud.controller.share_dir, name="idlecourse")
    home = tmp_path / "home"
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url,
           "gpu_lab_idle_minutes": str(WINDOW_S / 60), "idle_autostop_interval": str(INTERVAL_S),
           "idle_autostop_grace_seconds": str(GRACE_S),
           # A stand-in shares this machine's kernel, so its load average is this machine's.
           "idle_autostop_load_threshold": "1000"}
    launched = run_playbook("launch", cloud.env(), home, lab)
    assert launched.returncode == 0, launched.stdout[-4000:]
    assert f"Idle auto-stop: after {WINDOW_S / 60} idle minutes" in launched.stdout
    up_at = time.monotonic()

    ec2 = aws("ec2")
    instance_id = ec2.describe_instances(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [LAB]}])[
        "Reservations"][0]["Instances"][0]["InstanceId"]
    deadline = up_at + WINDOW_S + INTERVAL_S + GRACE_S + 30
    while time.monotonic() < deadline:
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        if instance["State"]["Name"] == "stopped":
            break
        time.sleep(1)
    else:
        raise AssertionError("the idle host did not stop itself")
    assert instance["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    assert status_json(cloud, home, lab)["state"] == "stopped"

    started = run_playbook("start", cloud.env(), home, lab)
    assert started.returncode == 0, started.stdout[-4000:]
    token = (home / ".gpu_lab" / LAB / "jupyter_token").read_text().strip()
    tunnel = Tunnel(home, free_port(), lab=LAB)
    try:
        wait_for_jupyter(f"http://127.0.0.1:{tunnel.local_port}", token)
    finally:
        tunnel.close()

    # Jupyter down (within the window of the new boot): the checker cannot ask it, so the
    # host counts as in use and stays up past the window, and status.yml says auto-stop is
    # not healthy, and why.
    subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", LAB,
                    "sudo systemctl stop jupyter"], check=True, capture_output=True, timeout=30)
    down_at = time.monotonic()
    status = status_json(cloud, home, lab)
    assert any(w.startswith("Idle auto-stop is not healthy:") and "Jupyter" in w for w in status["warnings"]), status
    time.sleep(max(0.0, down_at + WINDOW_S + INTERVAL_S + GRACE_S + 5 - time.monotonic()))
    assert ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "running"
