"""A whole class at once (issue 7): a roster of 30 students, one lab each, on the emulated EC2
API, with booted stand-in hosts for three of them (as many as a 2-core test machine holds).

One launch brings all 30 up side by side. Two students' first choices have no capacity and
fall over (one to another type, one to another zone); one student gets no capacity anywhere
and is reported, without stopping the others. The three stand-in students get a configured
host (Jupyter, idle auto-stop) reached with the class admin key, and a connection kit; a
student installs theirs and reaches their Jupyter with their OWN key, which the staff never
held. Then stop, start and teardown of a subset and of all, and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.jupyter_access import Tunnel, free_port, http
from tests.playbook import REPO, changed_tasks, recaps, run_playbook

CLASS = "cls"
STUDENTS = [f"s{i:02d}" for i in range(1, 31)]
ON_STAND_INS = ["s01", "s02", "s03"]
TYPE_FAILOVER, ZONE_FAILOVER, NO_CAPACITY = "s05", "s12", "s21"
CIDRS = "198.51.100.0/24,203.0.113.7/32"
CAPACITY = "InsufficientInstanceCapacity"


def lab(student: str) -> str:
    return f"{CLASS}-{student}"


def flat(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


def lab_of(request: Any) -> str:
    """The gpu_lab:lab tag a RunInstances carries (TagSpecification.N.Tag.M.Key/Value)."""
    params = request.params
    for key, values in params.items():
        if key.startswith("TagSpecification.") and key.endswith(".Key") and values == ["gpu_lab:lab"]:
            return params.get(key[: -len("Key")] + "Value", [""])[0]
    return ""


def refused(request: Any) -> bool:
    """No capacity: for one student anywhere, for one in us-east-1a, for one in g6.xlarge."""
    name, itype, zone = lab_of(request), request.first("InstanceType"), request.first("zone")
    return (name == lab(NO_CAPACITY)
            or (name == lab(TYPE_FAILOVER) and itype == "g6.xlarge")
            or (name == lab(ZONE_FAILOVER) and zone == "us-east-1a"))


@pytest.fixture
def classroom(tmp_path: Path) -> dict[str, Any]:
    """The class's inventory (the example class's settings, a roster of 30 with a key made for
    each student, as students would send them), the staff's home, and each student's key."""
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "csdl-class" / "group_vars", inventory / "group_vars")
    (inventory / "class.roster.yml").write_text(
        f"plugin: csdl.gpu_lab.roster\nclass: {CLASS}\nroster: roster.csv\n")
    keys = tmp_path / "student-keys"
    keys.mkdir()
    rows = ["student,public_key,instance_type,region"]
    for student in STUDENTS:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{student}@laptop",
                        "-f", str(keys / student)], check=True)
        rows.append(f"{student},{(keys / f'{student}.pub').read_text().strip()},,")
    (inventory / "roster.csv").write_text("\n".join(rows) + "\n")
    # The students without a stand-in host are only provisioned: nothing would answer SSH.
    (inventory / "host_vars").mkdir()
    for student in STUDENTS:
        if student not in ON_STAND_INS:
            (inventory / "host_vars" / f"{lab(student)}.yml").write_text("gpu_lab_wait_for_ssh: false\n")
    return {"inventory": inventory, "home": tmp_path / "staff", "keys": keys, "tmp": tmp_path}


@pytest.fixture
def faults(cloud: Cloud) -> Iterator[Any]:
    yield cloud.emulator.faults
    cloud.emulator.faults.clear()


def play(cloud: Cloud, room: dict[str, Any], name: str, *args: str, **extra: str) -> Any:
    return run_playbook(name, cloud.env(), room["home"], {"gpu_lab_ssh_cidr": CIDRS, **extra},
                        "-i", str(room["inventory"]), *args, timeout=900)


def class_state(ec2: Any) -> dict[str, dict[str, Any]]:
    """Per lab of the class: its live instances, addresses, groups, key pairs."""
    tag = [{"Name": "tag:gpu_lab:class", "Values": [CLASS]}]
    state: dict[str, dict[str, Any]] = {}

    def of(resource: dict[str, Any]) -> dict[str, Any]:
        name = {t["Key"]: t["Value"] for t in resource.get("Tags", [])}.get("gpu_lab:lab", "?")
        return state.setdefault(name, {"instances": [], "addresses": [], "groups": [], "key_pairs": []})

    for r in ec2.describe_instances(Filters=tag)["Reservations"]:
        for i in r["Instances"]:
            if i["State"]["Name"] != "terminated":
                of(i)["instances"].append(i)
    for a in ec2.describe_addresses(Filters=tag)["Addresses"]:
        of(a)["addresses"].append(a)
    for g in ec2.describe_security_groups(Filters=tag)["SecurityGroups"]:
        of(g)["groups"].append(g)
    for k in ec2.describe_key_pairs(Filters=tag)["KeyPairs"]:
        of(k)["key_pairs"].append(k)
    return state


def account_leftovers(ec2: Any) -> dict[str, list[str]]:
    """Everything billable or named the account still has (the default group aside)."""
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                      if i["State"]["Name"] != "terminated"],
        "addresses": [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]],
        "groups": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
                   if g["GroupName"] != "default"],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
    }


def class_status(cloud: Cloud, room: dict[str, Any]) -> dict[str, Any]:
    """status.yml's class view, as JSON (the json callback, so the output parses)."""
    result = run_playbook("status", {**cloud.env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}, room["home"],
                          {"gpu_lab_ssh_cidr": CIDRS, "gpu_lab_status_format": "json"}, "-i", str(room["inventory"]))
    assert result.returncode == 0, result.stdout[-3000:]
    for task in (t for p in json.loads(result.stdout)["plays"] for t in p["tasks"]):
        if task["task"]["name"] == "Show the class's status as JSON":
            (answer,) = [h["msg"] for h in task["hosts"].values() if "msg" in h]
            return json.loads(answer)
    raise AssertionError("status.yml printed no class JSON")


def states(ec2: Any) -> dict[str, str]:
    return {name: s["instances"][0]["State"]["Name"] for name, s in class_state(ec2).items() if s["instances"]}


def test_class_of_30(hosts_cloud: Cloud, aws: Callable[..., Any], classroom: dict[str, Any], faults: Any) -> None:
    cloud, room, ec2 = hosts_cloud, classroom, aws("ec2")
    cloud.controller.only(lambda o: o.tags.get("gpu_lab:student") in ON_STAND_INS)
    faults.add(["ec2:RunInstances"], CAPACITY, where=refused)

    # --- launch: all side by side; failover per student; one reported, the others go on
    result = play(cloud, room, "launch")
    out, counts = flat(result), recaps(result.stdout)
    assert result.returncode == 2, result.stdout[-5000:]
    assert {h for h, c in counts.items() if c["failed"]} == {lab(NO_CAPACITY)}, counts
    assert f"Class {CLASS}: 29 of 30 labs up, 1 not launched" in out
    assert f"{NO_CAPACITY} NOT LAUNCHED: No candidate instance could be launched" in out
    assert re.search(rf"- {ZONE_FAILOVER} +g6\.xlarge +us-east-1b +127[.0-9]+ +provisioned only \(host not "
                     r"reached\), after no capacity for g6\.xlarge in us-east-1a -", out), out[-5000:]
    assert re.search(rf"- {ON_STAND_INS[0]} +g6\.xlarge +us-east-1\w +127[.0-9]+ +ready -", out), out[-5000:]
    summary = json.loads((room["home"] / ".gpu_lab" / CLASS / "kits" / "summary.json").read_text())
    rows = {r["student"]: r for r in summary["labs"]}
    assert set(rows) == set(STUDENTS)
    assert not rows[NO_CAPACITY]["launched"] and "InsufficientInstanceCapacity" in rows[NO_CAPACITY]["error"]
    assert rows[TYPE_FAILOVER]["type"] == "g5.xlarge", rows[TYPE_FAILOVER]
    assert rows[TYPE_FAILOVER]["failed_over_from"][0] == "g6.xlarge in us-east-1a"
    assert (rows[ZONE_FAILOVER]["type"], rows[ZONE_FAILOVER]["zone"]) == ("g6.xlarge", "us-east-1b")
    assert all(rows[s]["configured"] for s in ON_STAND_INS), summary
    assert not any(r["configured"] for s, r in rows.items() if s not in ON_STAND_INS)

    state = class_state(ec2)
    assert lab(NO_CAPACITY) not in state or state[lab(NO_CAPACITY)]["instances"] == []
    assert not state.get(lab(NO_CAPACITY), {}).get("addresses") and not state.get(lab(NO_CAPACITY), {}).get("groups")
    launched = [s for s in STUDENTS if s != NO_CAPACITY]
    for student in launched:
        mine = state[lab(student)]
        assert [i["State"]["Name"] for i in mine["instances"]] == ["running"], student
        instance = mine["instances"][0]
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert (tags["gpu_lab:class"], tags["gpu_lab:student"]) == (CLASS, student)
        assert instance["KeyName"] == f"{lab(student)}-server"
        assert [a.get("InstanceId") for a in mine["addresses"]] == [instance["InstanceId"]], student
        (group,) = mine["groups"]
        rules = [sorted(r["CidrIp"] for r in p["IpRanges"]) for p in group["IpPermissions"]]
        assert rules == [sorted(CIDRS.split(","))], (student, rules)
        assert [k["KeyName"] for k in mine["key_pairs"]] == [f"{lab(student)}-server"]
    assert len({s["addresses"][0]["PublicIp"] for n, s in state.items() if s["addresses"]}) == 29

    # --- the staff hold the class admin key and no student's private key
    staff_ssh = sorted(p.name for p in (room["home"] / ".ssh").iterdir())
    assert staff_ssh == [f"{CLASS}-admin.pem"], staff_ssh
    # The body lines after the first (which every OpenSSH ed25519 key file shares): the private part.
    secrets = [line for s in STUDENTS for line in (room["keys"] / s).read_text().splitlines()[2:-1] if len(line) > 20]
    for path in room["home"].rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(secret in text for secret in secrets), f"a student's private key in {path}"
    # The staff's own ssh config and shell files are not filled with 30 students.
    assert not (room["home"] / ".ssh" / "config").exists()

    # --- a student installs the kit on their machine and reaches Jupyter with their own key
    student, student_home = ON_STAND_INS[0], room["tmp"] / "student-home"
    kit = room["home"] / ".gpu_lab" / CLASS / "kits" / student / "kit.yml"
    assert kit.stat().st_mode & 0o077 == 0
    (student_home / ".ssh").mkdir(parents=True)
    shutil.copy(room["keys"] / student, student_home / ".ssh" / "id_ed25519")
    os.chmod(student_home / ".ssh" / "id_ed25519", 0o600)
    installed = run_playbook("install_kit", cloud.env(), student_home, {"kit": str(kit)})
    assert installed.returncode == 0, installed.stdout[-3000:]
    port = free_port()
    tunnel = Tunnel(student_home, port, lab(student))
    try:
        token = (student_home / ".gpu_lab" / lab(student) / "jupyter_token").read_text().strip()
        assert http(f"http://127.0.0.1:{port}/api/status?token={token}")[0] == 200
        assert http(f"http://127.0.0.1:{port}/api/status")[0] in (401, 403)
    finally:
        tunnel.close()
    # ... and with the staff's admin key, every stand-in host runs Jupyter and idle auto-stop.
    for s in ON_STAND_INS:
        address = rows[s]["address"]
        check = subprocess.run(
            ["ssh", "-i", str(room["home"] / ".ssh" / f"{CLASS}-admin.pem"), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={room['home'] / '.gpu_lab' / lab(s) / 'known_hosts'}",
             "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", f"ubuntu@{address}",
             "systemctl is-active jupyter gpu_lab_idle.timer"],
            capture_output=True, text=True, timeout=60, check=False)
        assert check.stdout.split() == ["active", "active"], (s, check.stdout, check.stderr)

    # --- capacity is back: the next launch brings the missing student up, changes no one else
    faults.clear()
    again = play(cloud, room, "launch")
    assert again.returncode == 0, again.stdout[-5000:]
    counts = recaps(again.stdout)
    assert counts[lab(NO_CAPACITY)]["changed"] > 0
    # Only the missing student's lab changed, and the class's summary.json, which now lists it.
    changed = [t for t in changed_tasks(again.stdout) if lab(NO_CAPACITY) not in t]
    assert changed == [f"Keep the summary for scripts: changed: [{lab(ON_STAND_INS[0])} -> localhost]"], changed
    assert "30 of 30 labs up" in flat(again)

    # --- stop three, start one of them, look at the class's cost
    subset = ",".join(lab(s) for s in ON_STAND_INS)
    stopped = play(cloud, room, "stop", "--limit", subset)
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    now = states(ec2)
    assert sorted(n for n, s in now.items() if s == "stopped") == sorted(lab(s) for s in ON_STAND_INS)
    assert sum(s == "running" for s in now.values()) == 27
    started = play(cloud, room, "start", "--limit", lab(ON_STAND_INS[1]))
    assert started.returncode == 0, started.stdout[-3000:]
    assert states(ec2)[lab(ON_STAND_INS[1])] == "running"
    report = class_status(cloud, room)
    assert (report["totals"]["labs"], report["totals"]["running"], report["totals"]["stopped"]) == (30, 28, 2)
    hourly = sum(float(r["hourly_usd"]) for r in report["labs"] if r["state"] == "running")
    assert abs(float(report["totals"]["hourly_usd_now"]) - round(hourly, 2)) < 0.011
    assert float(report["totals"]["stopped_monthly_usd"]) > 0

    # --- teardown: a wrong confirmation removes nothing; one student; then the whole class
    # (Forced past the unsaved-work guard: s30's host cannot be looked at, see below.)
    refused_teardown = play(cloud, room, "teardown", "--limit", lab("s30"), gpu_lab_confirm_teardown=lab("s30"),
                            gpu_lab_force_teardown="true")
    assert refused_teardown.returncode != 0 and "Teardown not confirmed" in flat(refused_teardown)
    assert states(ec2)[lab("s30")] == "running"
    # s30 has no stand-in: its host cannot be looked at for unsaved work, so teardown refuses.
    blind = play(cloud, room, "teardown", "--limit", lab("s30"), gpu_lab_confirm_teardown=CLASS)
    assert blind.returncode != 0 and "could not be looked at" in flat(blind), flat(blind)[-3000:]
    assert states(ec2)[lab("s30")] == "running"
    one = play(cloud, room, "teardown", "--limit", lab("s30"), gpu_lab_confirm_teardown=CLASS,
               gpu_lab_force_teardown="true")
    assert one.returncode == 0, one.stdout[-3000:]
    after = class_state(ec2)
    assert lab("s30") not in after and len(after) == 29, sorted(after)
    everyone = play(cloud, room, "teardown", gpu_lab_confirm_teardown=CLASS, gpu_lab_force_teardown="true")
    assert everyone.returncode == 0, everyone.stdout[-3000:]
    assert account_leftovers(ec2) == {"instances": [], "addresses": [], "groups": [], "key_pairs": []}
    assert not (room["home"] / ".gpu_lab" / CLASS / "kits" / student).exists()
    # The admin key stays for the class's next launch (docs/classes.md).
    assert (room["home"] / ".ssh" / f"{CLASS}-admin.pem").exists()
