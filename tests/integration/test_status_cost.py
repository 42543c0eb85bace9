"""status.yml's cost view: figures for a known scenario match a hand computation, and
left-over resources are found and removed by teardown."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import ACCOUNT_ID
from tests.playbook import run_playbook

LAB = {"gpu_lab_name": "costlab", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
       "gpu_lab_instance_type": "g5.xlarge", "gpu_lab_volume_size": "120", "gpu_lab_confirm_teardown": "costlab",
       # The AWS half only: no host was set up to look at for unsaved work.
       "gpu_lab_force_teardown": "true"}
G5_XLARGE_USD_H = 1.006
GP3_USD_GIB_MONTH = 0.08
IPV4_USD_MONTH = 0.005 * 730


def status(cloud: Cloud, home: Path, **extra: str) -> dict[str, Any]:
    result = run_playbook("status", {**cloud.env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}, home,
                          {**LAB, **extra, "gpu_lab_status_format": "json"})
    assert result.returncode == 0, result.stdout[-3000:]
    run = json.loads(result.stdout)
    for play in run["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == "Show it as JSON":
                return json.loads(task["hosts"]["localhost"]["msg"])
    raise AssertionError("status.yml printed no JSON")


def backend_instance(instance_id: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[ACCOUNT_ID]["us-east-1"].get_instance(instance_id)


@pytest.fixture
def launched(cloud: Cloud, tmp_path: Path) -> dict[str, Any]:
    result = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert result.returncode == 0, result.stdout[-3000:]
    return status(cloud, tmp_path)


def test_running_figures_match_a_hand_computation(cloud: Cloud, tmp_path: Path, launched: dict[str, Any]) -> None:
    # The instance has run for 5 hours (the emulator's clock is set back, as if launched then).
    backend_instance(launched["instance_id"]).launch_time = (
        dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    s = status(cloud, tmp_path)
    assert s["state"] == "running" and s["type"] == "g5.xlarge"
    assert s["hours_in_state"] == pytest.approx(5.0, abs=0.02)
    assert float(s["hourly_usd"]) == G5_XLARGE_USD_H
    assert s["running_period_usd"] == pytest.approx(5.0 * G5_XLARGE_USD_H, abs=0.03)  # $5.03
    assert s["disk_gib"] == 120
    assert s["stopped_monthly_usd"] == {"disk": pytest.approx(120 * GP3_USD_GIB_MONTH),  # $9.60
                                        "addresses": pytest.approx(IPV4_USD_MONTH)}     # $3.65
    assert s["warnings"] == []


def test_long_stopped_lab_and_disabled_autostop_warn(cloud: Cloud, tmp_path: Path, launched: dict[str, Any]) -> None:
    run_playbook("launch", cloud.env(), tmp_path, {**LAB, "gpu_lab_idle_minutes": "0"})
    assert any("auto-stop disabled" in w for w in status(cloud, tmp_path)["warnings"])
    assert run_playbook("stop", cloud.env(), tmp_path, LAB).returncode == 0
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    backend_instance(launched["instance_id"])._reason = f"User initiated ({ten_days_ago:%Y-%m-%d %H:%M:%S} UTC)"
    s = status(cloud, tmp_path)
    assert s["state"] == "stopped"
    assert s["hours_in_state"] == pytest.approx(240, abs=0.1)
    assert s["running_period_usd"] == 0
    monthly = 120 * GP3_USD_GIB_MONTH + IPV4_USD_MONTH
    assert [w for w in s["warnings"] if w.startswith("Stopped for 10.0 days")] == [
        f"Stopped for 10.0 days: disk and address still cost about ${monthly:.2f}/month; teardown.yml removes them."]


def test_leaked_address_is_found_and_removed(cloud: Cloud, tmp_path: Path, launched: dict[str, Any], aws: Any) -> None:
    ec2 = aws("ec2")
    leaked = ec2.allocate_address(Domain="vpc")
    ec2.create_tags(Resources=[leaked["AllocationId"]], Tags=[{"Key": "gpu_lab:lab", "Value": "ghost"}])
    s = status(cloud, tmp_path)
    assert [o["detail"] for o in s["orphans"]] == [leaked["PublicIp"]]
    assert any(leaked["PublicIp"] in w and "lab ghost" in w for w in s["warnings"])

    result = run_playbook("teardown", cloud.env(), tmp_path, {**LAB, "gpu_lab_remove_orphans": "true"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"left-over elastic ip {leaked['PublicIp']} of lab ghost" in " ".join(result.stdout.split())
    assert ec2.describe_addresses()["Addresses"] == []
    assert status(cloud, tmp_path)["orphans"] == []
