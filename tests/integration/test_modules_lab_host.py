"""csdl.gpu_lab.lab_host against the emulated EC2 API, run as Ansible runs it: check mode
(what it would do, nothing changed), a failure half-way (what is left running and billed,
then a re-run that finishes), and changed settings on labs that exist (lab_info's drift,
applied by lab_host's modify, or refused).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.integration.test_modules_lab_info import (
    Modules,
    launch_spec,
    live_instances,
    modules_for,
    query,
    rerun_spec,
)


@pytest.fixture
def modules(cloud: Cloud, tmp_path: Path) -> Modules:
    return modules_for(cloud, tmp_path)


def mutating_calls(cloud: Cloud) -> dict[str, int]:
    snapshot = cloud.emulator.calls.snapshot()
    return {a: n for a, n in snapshot["by_action"].items()
            if not a.split(":")[-1].startswith(("Describe", "Get", "List"))}


def root_size(aws: Callable[..., Any], instance: dict[str, Any]) -> int:
    return aws("ec2").describe_volumes(VolumeIds=[instance["root_volume_id"]])["Volumes"][0]["Size"]


def stop(aws: Callable[..., Any], instance_id: str) -> None:
    aws("ec2").stop_instances(InstanceIds=[instance_id])  # moto: stopped at once


# --- check mode -----------------------------------------------------------------------------

def test_check_mode_plans_new_labs_and_changes_nothing(cloud: Cloud, aws: Callable[..., Any],
                                                       modules: Modules) -> None:
    fresh = launch_spec(cloud, aws, "plan-a", key_pair={"name": "plan-a-server", "public_key": "ssh-ed25519 AAAA x"})
    zoned = launch_spec(cloud, aws, "plan-b", zones=["us-east-1b"], instance_types=["g5.xlarge"])
    cloud.emulator.calls.reset()
    planned = modules.host(fresh, zoned, check=True)
    assert planned["plan-a"]["planned"] == [
        "import key pair plan-a-server",
        "create security group plan-a-ssh",
        "launch g6.xlarge in the first zone that has capacity (candidates: g6.xlarge, g5.xlarge)",
        "allocate and associate an Elastic IP",
    ]
    assert planned["plan-b"]["planned"][-2:] == [
        "launch g5.xlarge in the first zone that has capacity (candidates: g5.xlarge; zones: us-east-1b)",
        "allocate and associate an Elastic IP"]
    for lab in planned.values():
        assert (lab["changed"], lab["instance"], lab["address"], lab["launched"]) == (True, {}, {}, False)
    assert mutating_calls(cloud) == {}
    assert live_instances(aws, "plan-a") == [] and aws("ec2").describe_addresses()["Addresses"] == []
    # And for real, the same specs launch.
    assert all(lab.get("launched") for lab in modules.host(fresh, zoned).values())


def test_check_mode_plans_start_and_teardown_and_changes_nothing(cloud: Cloud, aws: Callable[..., Any],
                                                                 modules: Modules) -> None:
    spec = launch_spec(cloud, aws, "plan-s")
    instance_id = modules.host(spec)["plan-s"]["instance"]["id"]
    stop(aws, instance_id)
    found = modules.info(query("plan-s"))["plan-s"]
    cloud.emulator.calls.reset()

    start = modules.host(rerun_spec(spec, found), check=True)["plan-s"]
    # The address stays with a stopped instance: starting is all there is to do.
    assert (start["planned"], start["changed"]) == ([f"start {instance_id}"], True)
    assert (start["instance"]["id"], start["instance"]["state"]) == (instance_id, "stopped")
    assert start["address"]["public_ip"] == found["addresses"][0]["public_ip"]

    teardown = {"lab": "plan-s", "addresses": found["addresses"], "instances": found["instances"],
                "security_group_id": found["security_group"]["group_id"], "key_name": "plan-s-server"}
    removal = modules.host(teardown, check=True, state="absent")["plan-s"]
    assert removal["planned"] == [f"release {found['addresses'][0]['public_ip']}", f"terminate {instance_id}",
                                  f"delete security group {found['security_group']['group_id']}",
                                  "delete key pair plan-s-server"]
    assert removal["changed"] is True
    assert removal["removed"] == {"addresses": [], "instances": [], "security_group": "", "key_pair": "",
                                  "orphans": [], "spot_requests": [], "shelves": []}
    assert mutating_calls(cloud) == {}
    (still,) = live_instances(aws, "plan-s")
    assert still["State"]["Name"] == "stopped"
    assert len(aws("ec2").describe_addresses()["Addresses"]) == 1


# --- a failure half-way ---------------------------------------------------------------------

def test_an_address_that_cannot_be_had_says_what_runs_and_a_rerun_finishes(
        cloud: Cloud, aws: Callable[..., Any], modules: Modules) -> None:
    """AllocateAddress keeps answering 503 (ServiceUnavailable, Unavailable) or 500
    (InternalError) after RunInstances or StartInstances succeeded: each lab fails saying
    which instance runs and bills, the instance is really there, and a run without the fault
    finishes with one instance and one address each."""
    # hw-start: a lab whose instance is stopped and whose address was released meanwhile.
    start_spec = launch_spec(cloud, aws, "hw-start")
    started = modules.host(start_spec)["hw-start"]
    ec2 = aws("ec2")
    (address,) = ec2.describe_addresses(Filters=[{"Name": "tag:gpu_lab:lab", "Values": ["hw-start"]}])["Addresses"]
    ec2.disassociate_address(AssociationId=address["AssociationId"])
    ec2.release_address(AllocationId=address["AllocationId"])
    stop(aws, started["instance"]["id"])
    for lab, code, status in (("hw-503", "ServiceUnavailable", 503), ("hw-500", "InternalError", 500),
                              ("hw-start", "Unavailable", 503)):
        cloud.emulator.faults.add("ec2:AllocateAddress", code, status=status,
                                  message="The service is unavailable. Please try again shortly.",
                                  where={"TagSpecification.1.Tag.*.Value": lab})
    specs = {"hw-503": launch_spec(cloud, aws, "hw-503"), "hw-500": launch_spec(cloud, aws, "hw-500"),
             "hw-start": rerun_spec(start_spec, modules.info(query("hw-start"))["hw-start"])}
    failed = modules.host(*specs.values())
    for lab, verb in (("hw-503", "launch.yml again to finish (it reuses the instance)"),
                      ("hw-500", "launch.yml again to finish (it reuses the instance)"),
                      ("hw-start", "start.yml again to finish")):
        part = failed[lab]
        assert part["failed"] and part["changed"], part
        (instance,) = live_instances(aws, lab)
        assert instance["State"]["Name"] == "running"
        left = part["left"]["instance"]
        assert (left["id"], left["type"], left["state"]) == (instance["InstanceId"], instance["InstanceType"],
                                                             "running")
        assert part["left"]["address"] == {}
        assert part["msg"].endswith(
            f"Left running: {instance['InstanceId']} ({instance['InstanceType']}, "
            f"{instance['Placement']['AvailabilityZone']}), billed by the hour until stopped; no Elastic IP yet. "
            f"Run {verb}, or {'stop.yml to stop it' if lab == 'hw-start' else 'teardown.yml to remove it'}."), \
            part["msg"]
        assert "Please try again shortly." in part["msg"]
    assert aws("ec2").describe_addresses()["Addresses"] == []

    cloud.emulator.faults.clear()
    found = modules.info(*(query(lab) for lab in specs))
    again = modules.host(*(rerun_spec(spec, found[lab]) for lab, spec in specs.items()))
    for lab in specs:
        assert not again[lab].get("failed"), again[lab]
        (instance,) = live_instances(aws, lab)
        (address,) = aws("ec2").describe_addresses(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [lab]}])[
            "Addresses"]
        assert address["InstanceId"] == instance["InstanceId"] == again[lab]["instance"]["id"]
        assert again[lab]["launched"] is False  # the instance left running was reused


# --- changed settings on a lab that exists --------------------------------------------------

def test_a_running_lab_grows_its_volume_and_refuses_to_shrink(cloud: Cloud, aws: Callable[..., Any],
                                                              modules: Modules) -> None:
    spec = launch_spec(cloud, aws, "grow")
    modules.host(spec)
    found = modules.info(query("grow", wanted={"instance_type": "g6.xlarge", "volume_size": 200}))["grow"]
    assert found["drift"]["apply"] == {"volume_size": 200} and found["drift"]["refuse"] == []
    assert "next boot" in found["drift"]["notes"][0]
    assert root_size(aws, found["instance"]) == 100

    grown = modules.host(rerun_spec(spec, found, modify=found["drift"]["apply"]))["grow"]
    assert not grown.get("failed"), grown
    assert grown["changed"] and not grown["started"]
    assert grown["notes"][0].startswith(f"Grew the disk {found['instance']['root_volume_id']} of "
                                        f"{found['instance']['id']} from 100 to 200 GiB")
    assert root_size(aws, found["instance"]) == 200
    (instance,) = live_instances(aws, "grow")
    assert instance["State"]["Name"] == "running"

    again = modules.info(query("grow", wanted={"instance_type": "g6.xlarge", "volume_size": 200}))["grow"]
    assert again["drift"] == {"apply": {}, "refuse": [], "notes": []}
    smaller = modules.info(query("grow", wanted={"volume_size": 150}))["grow"]
    assert smaller["drift"]["refuse"] == ["Lab grow's disk is 200 GiB and gpu_lab_volume_size is now 150, but a "
                                          "volume cannot shrink: set gpu_lab_volume_size back to 200 or more."]
    refused = modules.host(rerun_spec(spec, again, modify={"volume_size": 150}))["grow"]
    assert refused["failed"] and "a volume cannot shrink" in refused["msg"]
    assert root_size(aws, found["instance"]) == 200


def test_a_stopped_lab_changes_type_then_starts_and_a_running_one_is_refused(
        cloud: Cloud, aws: Callable[..., Any], modules: Modules) -> None:
    specs = {lab: launch_spec(cloud, aws, lab) for lab in ("retype", "busy")}
    launched = modules.host(*specs.values())
    assert {lab: part["instance"]["type"] for lab, part in launched.items()} == {"retype": "g6.xlarge",
                                                                                 "busy": "g6.xlarge"}
    (recorded,) = live_instances(aws, "retype")
    assert {"Key": "gpu_lab:instance_type", "Value": "g6.xlarge"} in recorded["Tags"]  # set at launch
    stop(aws, launched["retype"]["instance"]["id"])
    wanted = {"instance_type": "g5.2xlarge", "volume_size": 100}
    cloud.emulator.calls.reset()
    found = modules.info(query("retype", wanted=wanted), query("busy", wanted=wanted))
    # Both root volumes (the wanted size is compared) in one call.
    assert cloud.emulator.calls.snapshot()["by_action"]["ec2:DescribeVolumes"] == 1
    assert found["retype"]["drift"] == {"apply": {"instance_type": "g5.2xlarge"}, "refuse": [], "notes": []}
    assert found["busy"]["drift"]["apply"] == {}
    assert found["busy"]["drift"]["refuse"] == [
        "Lab busy runs g6.xlarge (asked for g6.xlarge at launch); gpu_lab_instance_type is now g5.2xlarge. The type "
        "changes only while the instance is stopped: run stop.yml, then launch.yml again (it changes the type and "
        "starts it), or set gpu_lab_instance_type back to g6.xlarge."]

    cloud.emulator.calls.reset()
    # lab_host refuses it as well, for a caller that asks anyway; the stopped one changes.
    done = modules.host(rerun_spec(specs["retype"], found["retype"], modify=found["retype"]["drift"]["apply"]),
                        rerun_spec(specs["busy"], found["busy"], modify={"instance_type": "g5.2xlarge"}))
    assert not done["retype"].get("failed"), done["retype"]
    assert (done["retype"]["started"], done["retype"]["instance"]["type"]) == (True, "g5.2xlarge")
    assert done["retype"]["notes"] == [
        f"Changed the type of {found['retype']['instance']['id']} from g6.xlarge to g5.2xlarge while it was stopped; "
        "to go back, run stop.yml, set gpu_lab_instance_type back to g6.xlarge, then launch.yml."]
    (retyped,) = live_instances(aws, "retype")
    assert (retyped["InstanceType"], retyped["State"]["Name"]) == ("g5.2xlarge", "running")
    assert {"Key": "gpu_lab:instance_type", "Value": "g5.2xlarge"} in retyped["Tags"]
    assert done["busy"]["failed"] and "The type changes only while the instance is stopped" in done["busy"]["msg"]
    assert done["busy"]["left"] == {"instance": {}, "address": {}}
    (busy,) = live_instances(aws, "busy")
    assert (busy["InstanceType"], busy["State"]["Name"]) == ("g6.xlarge", "running")
    assert mutating_calls(cloud) == {"ec2:ModifyInstanceAttribute": 1, "ec2:CreateTags": 1, "ec2:StartInstances": 1}

    after = modules.info(query("retype", wanted=wanted))["retype"]
    assert after["drift"] == {"apply": {}, "refuse": [], "notes": []}


def test_a_lab_launched_on_a_fallback_type_with_the_setting_unchanged_has_no_drift(
        cloud: Cloud, aws: Callable[..., Any], modules: Modules) -> None:
    cloud.emulator.faults.add("ec2:RunInstances", "InsufficientInstanceCapacity",
                              where={"InstanceType": "g6.xlarge"})
    launched = modules.host(launch_spec(cloud, aws, "fallback"))["fallback"]
    assert launched["instance"]["type"] == "g5.xlarge", launched
    found = modules.info(query("fallback", wanted={"instance_type": "g6.xlarge", "volume_size": 100}))["fallback"]
    assert found["instance"]["tags"]["gpu_lab:instance_type"] == "g6.xlarge"
    assert found["instance"]["type"] == "g5.xlarge"
    assert found["drift"] == {"apply": {}, "refuse": [], "notes": []}
