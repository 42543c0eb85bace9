"""Interrupted and concurrent launches: whatever the moment a launch is stopped (Ctrl-C, then
SIGKILL), the next launch ends with exactly one instance, address, security group and key
pair for the lab, and nothing orphaned; two launches at once end with one instance."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import REPO, playbook_command, recap, run_playbook

LAB = {"gpu_lab_name": "intr", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
# Each provisioning call of a cold launch, in order: the launch is interrupted just before it,
# so everything before it is done.
STEPS = ["ImportKeyPair", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RunInstances",
         "AllocateAddress", "AssociateAddress"]


class Hold:
    """An emulator interceptor that holds the first call of one action (the launch sits just
    before that step) until released, then answers it with an error (it never reaches moto)."""

    def __init__(self, action: str) -> None:
        self.action = f"ec2:{action}"
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None) -> tuple[int, dict, bytes] | None:
        if action != self.action or self.reached.is_set():
            return None
        self.reached.set()
        self.release.wait(60)
        return 503, {"Content-Type": "text/xml"}, (
            b"<Response><Errors><Error><Code>ServiceUnavailable</Code><Message>held by the test</Message></Error>"
            b"</Errors><RequestID>gpu-lab-hold</RequestID></Response>")


def assert_exactly_one_of_each(state: dict[str, Any], home: Path, lab: str) -> None:
    assert [i["State"]["Name"] for i in state["instances"]] == ["running"], state["instances"]
    instance_id = state["instances"][0]["InstanceId"]
    assert [a.get("InstanceId") for a in state["addresses"]] == [instance_id]
    assert len(state["all_addresses"]) == 1, state["all_addresses"]
    assert len(state["groups"]) == 1 and len(state["all_groups"]) == 1, state["all_groups"]
    # The primary interface's groups (moto leaves the instance's SecurityGroups empty for an
    # instance launched with a network interface spec; AWS fills both).
    attached = [g["GroupId"] for g in state["instances"][0]["NetworkInterfaces"][0]["Groups"]]
    assert attached == [state["groups"][0]["GroupId"]]
    rules = state["groups"][0]["IpPermissions"]
    assert [(r["FromPort"], [x["CidrIp"] for x in r["IpRanges"]]) for r in rules] == [(22, ["198.51.100.7/32"])]
    assert len(state["key_pairs"]) == 1
    key = home / ".ssh" / f"{lab}-server.pem"
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o400"
    assert not list((home / ".ssh").glob("*.new*")), "a half-made key was left"


@pytest.mark.parametrize("step", STEPS)
def test_interrupted_launch_then_launch_again(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path,
                                               step: str) -> None:
    hold = Hold(step)
    cloud.emulator.interceptors.append(hold)
    cmd, env = playbook_command("launch", cloud.env(), tmp_path, LAB)
    try:
        launch = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            assert hold.reached.wait(120), f"the launch never reached {step}"
            os.killpg(launch.pid, signal.SIGINT)      # Ctrl-C, as a terminal sends it to the group
            try:
                launch.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)  # ... and then the hard way
                launch.wait(10)
        finally:
            hold.release.set()
            if launch.poll() is None:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait(10)
    finally:
        cloud.emulator.interceptors.remove(hold)
    again = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert again.returncode == 0, again.stdout[-3000:]
    assert_exactly_one_of_each(lab_state(aws("ec2"), "intr"), tmp_path, "intr")
    third = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert recap(third.stdout)["changed"] == 0, third.stdout[-3000:]


class Barrier:
    """Holds the first RunInstances until a second one arrives (or 60 s), so two launches
    really race at the step that creates the instance."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.count = 0
        self.lock = threading.Lock()
        self.both = threading.Event()

    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None) -> None:
        if action != "ec2:RunInstances":
            return None
        with self.lock:
            self.count += 1
            if self.count == 2:
                self.both.set()
        self.both.wait(60)
        return None


def test_two_launches_at_once_make_one_instance(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    barrier = Barrier()
    cloud.emulator.interceptors.append(barrier)
    try:
        cmd, env = playbook_command("launch", cloud.env(), tmp_path, LAB)
        launches = [subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in launches]
    finally:
        cloud.emulator.interceptors.remove(barrier)
    assert barrier.both.is_set(), "never met at RunInstances:\n" + "\n".join(o[-2000:] for o in outputs)
    assert [p.returncode for p in launches] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert_exactly_one_of_each(lab_state(aws("ec2"), "intr"), tmp_path, "intr")
    again = run_playbook("launch", cloud.env(), tmp_path, LAB)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]
