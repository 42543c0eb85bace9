"""Throttling on every 3rd API call changes nothing a user sees: every playbook succeeds with
the same PLAY RECAP as without faults, builds the same resources, and leaves nothing behind.

The AWS half of the lifecycle (``gpu_lab_wait_for_ssh=false``): launch, re-run, stop, start,
teardown; first without faults, then with the fault injector answering every 3rd API call
(counted over all services) with that service's throttling error: ``RequestLimitExceeded``
(HTTP 503) for EC2, ``ThrottlingException``/``Throttling`` (400) for SSM, STS, CloudWatch.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from local_cloud.cloud import Cloud
from local_cloud.emulator import READ_ONLY_PREFIXES, Emulator
from tests.playbook import changed_tasks, recaps, run_playbook

LAB = "thr"
EXTRA = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
         "gpu_lab_confirm_teardown": LAB,
         # The AWS half only: no host was set up to look at for unsaved work.
         "gpu_lab_force_teardown": "true"}
STEPS = [("launch", "launch"), ("re-run", "launch"), ("stop", "stop"), ("start", "start"), ("teardown", "teardown")]
EVERY = 3
# Services the emulator answers itself, not moto (local_cloud/quotas.py, pricing.py).
HARNESS_ANSWERED = ("servicequotas:", "pricing:")


def ec2_client(emulator: Emulator, service: str = "ec2") -> Any:
    return boto3.client(service, region_name="us-east-1", endpoint_url=emulator.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106


def is_read_only(action: str) -> bool:
    return action.split(":")[-1].startswith(READ_ONLY_PREFIXES)


def lab_resources(emulator: Emulator, home: Path) -> dict[str, Any]:
    """What the lab has on AWS and on the workstation, in a form two runs can compare."""
    ec2 = ec2_client(emulator)
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] != "terminated"]
    groups = [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    alarms = ec2_client(emulator, "cloudwatch").describe_alarms()["MetricAlarms"]
    return {
        "instances": sorted(i["State"]["Name"] for i in instances),
        "instance_tags": sorted({t["Value"] for i in instances for t in i.get("Tags", [])
                                 if t["Key"] == "gpu_lab:lab"}),
        "addresses": len(ec2.describe_addresses()["Addresses"]),
        "associated": len([a for a in ec2.describe_addresses()["Addresses"] if a.get("InstanceId")]),
        "security_groups": sorted(groups),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "alarms": sorted(a["AlarmName"] for a in alarms),
        "key_file": (home / ".ssh" / f"{LAB}-server.pem").exists(),
    }


def lifecycle(emulator: Emulator, home: Path) -> list[dict[str, Any]]:
    """Runs the five steps; per step: recap, resources after it, calls and injections."""
    results = []
    for step, playbook in STEPS:
        emulator.calls.reset()
        injected_before = len(emulator.faults.log)
        started = time.monotonic()
        done = run_playbook(playbook, emulator.env(), home, EXTRA)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"{step} failed{' under throttling' if emulator.faults.rules else ''}:\n" + \
            out[-5000:]
        results.append({
            "step": step,
            "recap": recaps(done.stdout),
            "changed": changed_tasks(done.stdout),
            "resources": lab_resources(emulator, home),
            "calls": emulator.calls.snapshot(),
            "injections": emulator.faults.log[injected_before:],
            "seconds": round(time.monotonic() - started, 1),
        })
    return results


def test_throttling_every_third_call(cloud: Cloud, tmp_path: Path) -> None:
    emulator = cloud.emulator
    calm = lifecycle(emulator, tmp_path / "calm")
    nothing_left = lab_resources(emulator, tmp_path / "calm")
    assert nothing_left == {"instances": [], "instance_tags": [], "addresses": 0, "associated": 0,
                            "security_groups": [], "key_pairs": [], "alarms": [], "key_file": False}
    # The fault-free run is the yardstick: it must have built and changed something.
    assert calm[0]["recap"]["localhost"]["changed"] > 0
    assert calm[0]["resources"] == {"instances": ["running"], "instance_tags": [LAB], "addresses": 1, "associated": 1,
                                    "security_groups": [f"{LAB}-ssh"], "key_pairs": [f"{LAB}-server"], "alarms": [],
                                    "key_file": True}
    assert calm[2]["resources"]["instances"] == ["stopped"] and calm[2]["resources"]["addresses"] == 1

    emulator.reset()
    rule = emulator.faults.add("*", "throttle", every=EVERY)
    stormy = lifecycle(emulator, tmp_path / "stormy")
    for before, after in zip(calm, stormy, strict=True):  # shown with -s or on failure
        print(f"{before['step']:9} calls {before['calls']['total']:3} -> {after['calls']['total']:3} "
              f"({after['calls']['injected']} throttled), {before['seconds']} s -> {after['seconds']} s, "
              f"recap {after['recap']['localhost']}; throttled mutating calls: "
              f"{sorted({i.action for i in after['injections'] if not is_read_only(i.action)})}")

    for before, after in zip(calm, stormy, strict=True):
        step = before["step"]
        assert after["recap"] == before["recap"], (
            f"{step}: PLAY RECAP under throttling {after['recap']} != without {before['recap']}\n"
            f"changed under throttling: {after['changed']}\nchanged without: {before['changed']}")
        assert after["resources"] == before["resources"], step
        # Faults really hit this step, on its own calls, and botocore/the modules retried them.
        injections = after["injections"]
        assert injections, f"{step}: no call was throttled"
        # Every fault is counted at the boundary; so are the answers of the harness's own
        # services (Service Quotas, the Price List), which are no faults.
        by_action = after["calls"]["injected_by_action"]
        faults = Counter(i.action for i in injections)
        assert all(by_action.get(action, 0) >= n for action, n in faults.items()), (by_action, faults)
        assert {a: n for a, n in by_action.items() if not a.startswith(HARNESS_ANSWERED)} == \
            {a: n for a, n in faults.items() if not a.startswith(HARNESS_ANSWERED)}
        assert after["calls"]["total"] > before["calls"]["total"], step  # the retries
        assert all(i.code == "RequestLimitExceeded" and i.status == 503 for i in injections
                   if i.action.startswith("ec2:")), step
    assert rule.injected == rule.matched // EVERY
    throttled_mutations = {i.action for i in emulator.faults.log if not is_read_only(i.action)}
    assert throttled_mutations, "no mutating call was throttled: the schedule proved little"

    emulator.faults.clear()
    assert lab_resources(emulator, tmp_path / "stormy") == nothing_left
    ec2 = ec2_client(emulator)
    assert ec2.describe_volumes()["Volumes"] == []  # the root volume went with the instance
