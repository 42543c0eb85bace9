"""What users do that the happy path forgets (issue 14), against the emulated cloud: a second
command without the first one's -e, another folder, a changed setting on an existing lab,
--check, a script reading the status. Each test reproduces what went wrong in 0.3.0."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import REPO, playbook_command, recap, run_playbook

LAB = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
WEST = "us-west-2"


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output on one line (Ansible folds long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def launch(cloud: Cloud, home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_playbook("launch", cloud.env(), home, {**LAB, **extra}, *args)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def live(aws: Any, region: str = "us-east-1", lab: str = "csdl") -> list[dict[str, Any]]:
    return lab_state(aws("ec2", region), lab)["instances"]


# --- A lab is one lab, wherever it runs ---------------------------------------------------

def test_launch_in_another_region_refuses_a_second_lab(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home))
    record = json.loads((home / ".gpu_lab/csdl/lab.json").read_text())
    assert record["region"] == "us-east-1" and record["instance_id"] == live(aws)[0]["InstanceId"]

    cloud.emulator.calls.reset()
    second = launch(cloud, home, gpu_lab_region=WEST)
    out = flat(second)
    assert second.returncode != 0, out[-3000:]
    assert "Lab csdl already has an instance in us-east-1" in out, out[-3000:]
    assert "teardown.yml -e gpu_lab_region=us-east-1" in out
    assert cloud.emulator.calls.snapshot()["mutating"] == 0, "nothing may be created in the other region"
    west = lab_state(aws("ec2", WEST), "csdl")
    assert west["instances"] == [] and west["key_pairs"] == [] and west["groups"] == []
    assert len(live(aws)) == 1


def test_stop_without_the_launch_region_stops_the_lab_where_it_is(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home, gpu_lab_region=WEST))
    # Another shell, without the launch's -e: the settings say us-east-1.
    stopped = ok(run_playbook("stop", cloud.env(), home, {}))
    out = flat(stopped)
    assert "was launched in us-west-2" in out, out[-3000:]
    assert [i["State"]["Name"] for i in live(aws, WEST)] == ["stopped"]
    assert live(aws) == []

    status_file = tmp_path / "status.json"
    ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(status_file)}))
    assert json.loads(status_file.read_text())["region"] == WEST

    # The host was never set up (wait_for_ssh false): nothing to look at, so forced.
    torn = ok(run_playbook("teardown", cloud.env(), home, {"gpu_lab_confirm_teardown": "csdl",
                                                          "gpu_lab_force_teardown": "true"}))
    assert "Lab csdl: removed" in flat(torn)
    assert live(aws, WEST) == [] and not (home / ".gpu_lab/csdl/lab.json").exists()


# --- Runs from another folder, and a part that cannot be loaded ---------------------------

def test_launch_from_another_folder(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd, env = playbook_command(str(REPO / "launch"), cloud.env(), home, LAB, "-i", str(REPO / "inventories/csdl"))
    result = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL, check=False)
    ok(result)
    assert "Lab csdl is up" in flat(result)
    assert len(live(aws)) == 1


def test_a_launch_whose_roles_cannot_be_loaded_fails(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    """0.3.0 exited 0, with no summary, when the role could not be resolved (a fresh clone
    before set-up): the play's rescue swallowed it."""
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "playbooks", copy / "playbooks")
    shutil.copy(REPO / "launch.yml", copy / "launch.yml")
    cmd, env = playbook_command(str(copy / "launch"), cloud.env(), tmp_path / "home", LAB,
                                "-i", str(REPO / "inventories/csdl"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "no-collections")
    result = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL, check=False)
    out = flat(result)
    assert result.returncode != 0, out[-3000:]
    assert "gpu_lab could not be loaded" in out, out[-3000:]
    assert live(aws) == []


# --- A setting changed on a lab that exists -----------------------------------------------

def root_volume_size(aws: Any, instance: dict[str, Any]) -> int:
    ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    return aws("ec2").describe_volumes(VolumeIds=ids)["Volumes"][0]["Size"]


def test_a_bigger_volume_is_applied_a_smaller_refused(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home))
    grown = ok(launch(cloud, home, gpu_lab_volume_size="200"))
    assert recap(grown.stdout)["changed"] > 0
    assert root_volume_size(aws, live(aws)[0]) == 200
    assert recap(ok(launch(cloud, home, gpu_lab_volume_size="200")).stdout)["changed"] == 0

    shrunk = launch(cloud, home, gpu_lab_volume_size="150")
    assert shrunk.returncode != 0
    assert "cannot shrink" in flat(shrunk), flat(shrunk)[-3000:]
    assert root_volume_size(aws, live(aws)[0]) == 200


def test_another_type_is_refused_while_running_and_applied_when_stopped(cloud: Cloud, aws: Any,
                                                                        tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home))
    refused = launch(cloud, home, gpu_lab_instance_type="g5.xlarge")
    out = flat(refused)
    assert refused.returncode != 0, out[-3000:]
    assert "The type changes only while the instance is stopped" in out, out[-3000:]
    assert [i["InstanceType"] for i in live(aws)] == ["g6.xlarge"]

    ok(run_playbook("stop", cloud.env(), home, {}))
    ok(launch(cloud, home, gpu_lab_instance_type="g5.xlarge"))
    (instance,) = live(aws)
    assert (instance["InstanceType"], instance["State"]["Name"]) == ("g5.xlarge", "running")
    again = ok(launch(cloud, home, gpu_lab_instance_type="g5.xlarge"))
    assert recap(again.stdout)["changed"] == 0


# --- Check mode changes nothing, and says what it would do --------------------------------

def account(aws: Any) -> dict[str, Any]:
    ec2 = aws("ec2")
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"], i["InstanceType"])
                            for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]),
        "addresses": sorted(a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]),
        "groups": sorted(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
    }


def files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


PLAYBOOKS = ("launch", "start", "stop", "status", "shelve", "teardown")


def check_run(cloud: Cloud, home: Path, playbook: str) -> subprocess.CompletedProcess[str]:
    return run_playbook(playbook, cloud.env(), home,
                        {**LAB, "gpu_lab_confirm_teardown": "csdl", "gpu_lab_force_teardown": "true"},
                        "--check", "--diff")


def test_check_mode_on_a_fresh_account(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    """0.3.0 crashed here (object of type 'dict' has no attribute 'labs')."""
    home = tmp_path / "home"
    home.mkdir()
    before = account(aws)
    for playbook in PLAYBOOKS:
        result = check_run(cloud, home, playbook)
        out = flat(result)
        if playbook in ("start", "shelve"):
            # Nothing to start or shelve: the same refusal as without --check.
            assert result.returncode != 0 and "has no instance" in out, out[-3000:]
        else:
            assert result.returncode == 0, f"{playbook}: {out[-4000:]}"
        if playbook == "launch":
            assert "Check mode: lab csdl would make the private key" in out, out[-3000:]
            assert "launch g6.xlarge in the first zone that has capacity" in out, out[-3000:]
        assert account(aws) == before, playbook
        assert files(home) == {}, playbook


def test_check_mode_on_a_stopped_lab(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(launch(cloud, home))
    ok(run_playbook("stop", cloud.env(), home, {}))
    before, local = account(aws), files(home)
    for playbook in PLAYBOOKS:
        result = check_run(cloud, home, playbook)
        out = flat(result)
        assert result.returncode == 0, f"{playbook}: {out[-4000:]}"
        if playbook in ("launch", "start"):
            assert re.search(r"Check mode: lab csdl would .*start i-", out), f"{playbook}: {out[-3000:]}"
        if playbook == "shelve":
            assert re.search(r"Check mode: lab csdl would make an image of i-\w+ \(no reboot\) and wait until it is "
                             r"available; release [0-9.]+; terminate i-", out), out[-3000:]
        if playbook == "teardown":
            assert re.search(r"Check mode: lab csdl would release [0-9.]+; terminate i-", out), out[-3000:]
        assert account(aws) == before, playbook
        assert files(home) == local, playbook


# --- Output a user (or a script) reads ----------------------------------------------------

def test_status_file_holds_the_json_alone(cloud: Cloud, tmp_path: Path) -> None:
    home, path = tmp_path / "home", tmp_path / "out" / "status.json"
    path.parent.mkdir()
    ok(launch(cloud, home))
    ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(path)}))
    status = json.loads(path.read_text())
    assert status["lab"] == "csdl" and status["state"] == "running" and status["type"] == "g6.xlarge"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_no_host_pattern_warnings_and_a_second_teardown_asks_nothing(cloud: Cloud, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ok(launch(cloud, home))
    rerun = ok(launch(cloud, home))
    assert "None" not in [line.strip(' ",') for line in rerun.stdout.splitlines()], rerun.stdout[-3000:]
    for playbook in ("stop", "status"):
        result = ok(run_playbook(playbook, cloud.env(), home, {}))
        assert "Could not match supplied host pattern" not in result.stdout + result.stderr, playbook
    assert "Could not match supplied host pattern" not in first.stdout + first.stderr

    # Stopped above: its disk cannot be looked at, and teardown would delete it.
    blind = run_playbook("teardown", cloud.env(), home, {"gpu_lab_confirm_teardown": "csdl"})
    assert blind.returncode != 0 and "cannot be checked for unsaved work" in flat(blind), flat(blind)[-3000:]
    torn = ok(run_playbook("teardown", cloud.env(), home, {"gpu_lab_confirm_teardown": "csdl",
                                                          "gpu_lab_force_teardown": "true"}))
    assert "Lab csdl: removed" in flat(torn)
    # Nothing left: no prompt naming an instance and a disk, no confirmation needed.
    again = ok(run_playbook("teardown", cloud.env(), home, {}))
    out = flat(again)
    assert "nothing was left to remove" in out, out[-3000:]
    assert "deletes" not in out and "Type the lab name" not in out, out[-3000:]


def test_a_type_without_gpu_launches_when_allowed(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    result = ok(launch(cloud, tmp_path / "home", gpu_lab_instance_type="m5.xlarge", gpu_lab_allow_no_gpu="true",
                       gpu_lab_fallback_instance_types="[]"))
    assert "Lab csdl is up: m5.xlarge" in flat(result)
    assert [i["InstanceType"] for i in live(aws)] == ["m5.xlarge"]


def test_status_since_is_the_last_start(cloud: Cloud, tmp_path: Path) -> None:
    """0.3.0 said "running since" the first launch after a stop and start, and counted the
    stopped hours (the emulator kept LaunchTime; EC2 sets it at each start)."""
    import datetime as dt
    import time

    home, path = tmp_path / "home", tmp_path / "status.json"
    ok(launch(cloud, home))
    first = json.loads((ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(path)})),
                        path.read_text())[1])
    ok(run_playbook("stop", cloud.env(), home, {}))
    time.sleep(2)
    started_after = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    ok(run_playbook("start", cloud.env(), home, LAB))
    ok(run_playbook("status", cloud.env(), home, {"gpu_lab_status_file": str(path)}))
    again = json.loads(path.read_text())
    assert again["state"] == "running"
    since = dt.datetime.strptime(again["since_utc"], "%Y-%m-%d %H:%M:%S")
    assert since >= started_after > dt.datetime.strptime(first["since_utc"], "%Y-%m-%d %H:%M:%S"), (first, again)
