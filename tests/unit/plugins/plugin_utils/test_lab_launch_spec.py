"""lab_launch_spec: what lab_host is asked to bring up for a lab, and what the role publishes
of it afterwards (address, launch note, warnings, whether SSH can be waited for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TAGS = {"gpu_lab:autostop_minutes": "60", "gpu_lab:idle_alarm": "false",
        "gpu_lab:shelve_after_days": "0"}
RUNNING = {"id": "i-1", "state": "running", "type": "g6.xlarge", "zone": "us-east-1a", "image": "ami-0aaaaaaaa",
           "tags": TAGS}
ADDRESS = {"public_ip": "127.0.0.9", "allocation_id": "eipalloc-1", "instance_id": "i-1"}


@pytest.fixture
def spec(plugin):
    return plugin("plugin_utils.lab_launch_spec")


@pytest.fixture
def lab_of(plugin, tmp_path: Path):
    settings = plugin("plugin_utils.lab_settings")

    def make(**given: Any):
        values = {"ec2_gpu_host_lab_name": "csdl", "ec2_gpu_host_region": "us-east-1",
                  "ec2_gpu_host_instance_type": "g6.xlarge", "ec2_gpu_host_fallback_instance_types": ["g5.xlarge"],
                  "ec2_gpu_host_home": str(tmp_path), "ec2_gpu_host_key_file": str(tmp_path / "k.pem"),
                  "ec2_gpu_host_volume_size": "100", "ec2_gpu_host_autostop_minutes": 60}
        return settings.settings_of("localhost", values | {f"ec2_gpu_host_{k}": v for k, v in given.items()})
    return make


def found_of(**more: Any) -> dict[str, Any]:
    return {"instance": {}, "addresses": [], "security_group": {}, "key_pair": {},
            "instance_types": [{"name": "g6.xlarge", "exists": True, "gpu_count": 1}],
            "image": {"image_id": "ami-0bbbbbbbb", "root_device_name": "/dev/xvda", "root_size_gib": 75},
            "drift": {"apply": {}, "refuse": [], "notes": []}} | more


def test_a_new_lab_is_launched_with_its_key_pair(spec, lab_of) -> None:
    lab = lab_of()
    found = found_of()
    assert spec.needs_run(found) and spec.needs_key(lab, found, rotated=False)
    asked = spec.run_spec(lab, {"found": found, "cidrs": ["198.51.100.7/32"]}, "ssh-ed25519 AAAA csdl-server", False)
    assert asked == {
        "lab": "csdl", "region": "us-east-1", "instance": {}, "addresses": [],
        "instance_types": ["g6.xlarge", "g5.xlarge"], "spot_instance_types": [], "spot_max_price": "",
        "zones": [], "image_id": "ami-0bbbbbbbb",
        "root_device_name": "/dev/xvda", "volume_size": 100, "key_name": "csdl-server",
        "key_pair": {"name": "csdl-server", "public_key": "ssh-ed25519 AAAA csdl-server"}, "user_data": "",
        "security_group_id": None,
        "security_group": {"name": "csdl-ssh", "description": "SSH to the csdl GPU lab host (managed by csdl.gpu_lab)",
                           "ssh_cidrs": ["198.51.100.7/32"]},
        "tags": {"gpu_lab:lab": "csdl", "gpu_lab:managed_by": "csdl.gpu_lab"},
        "instance_tags": TAGS, "modify": None, "shelves": [], "wait_timeout": 600}


def test_a_student_key_pair_authorizes_this_machine_key_at_first_boot(spec, lab_of) -> None:
    lab = lab_of(key_pair_public_key="ssh-ed25519 BBBB student")
    found = found_of(key_pair={"name": "csdl-server"}, image={})
    assert spec.needs_key(lab, found, rotated=False)  # the instance is new: its first boot needs this key
    asked = spec.run_spec(lab, {"found": found, "cidrs": []}, "ssh-ed25519 AAAA admin", False)
    assert asked["key_pair"] is None  # the student's is there already
    assert asked["user_data"] == "#cloud-config\nssh_authorized_keys:\n- ssh-ed25519 AAAA admin\n"
    assert (asked["image_id"], asked["root_device_name"]) == (None, "/dev/sda1")
    rotated = spec.run_spec(lab, {"found": found, "cidrs": []}, "ssh-ed25519 AAAA admin", True)
    assert rotated["key_pair"] == {"name": "csdl-server", "public_key": "ssh-ed25519 BBBB student"}


def test_a_running_lab_at_its_address_needs_nothing(spec, lab_of) -> None:
    found = found_of(instance=RUNNING, addresses=[ADDRESS], key_pair={"name": "csdl-server"}, image={})
    assert not spec.needs_run(found)
    assert not spec.needs_key(lab_of(), found, rotated=False)
    assert spec.needs_key(lab_of(), found, rotated=True)
    assert spec.needs_run(found_of(instance=RUNNING, addresses=[ADDRESS | {"instance_id": ""}]))
    assert spec.needs_run(found_of(instance=RUNNING | {"state": "stopped"}, addresses=[ADDRESS]))
    grow = found_of(instance=RUNNING, addresses=[ADDRESS], drift={"apply": {"volume_size": 200}})
    assert spec.needs_run(grow)
    assert spec.run_spec(lab_of(), {"found": grow, "cidrs": []}, "", False)["modify"] == {"volume_size": 200}


def test_the_launch_note(spec, lab_of) -> None:
    ran = {"launched": True, "instance": {"type": "g5.xlarge", "zone": "us-east-1b"},
           "attempts": [{"type": "g6.xlarge", "zone": "us-east-1a", "outcome": "capacity",
                         "code": "InsufficientInstanceCapacity"},
                        {"type": "g6.xlarge", "zone": "", "outcome": "quota", "code": ""},
                        {"type": "g5.xlarge", "zone": "us-east-1b", "outcome": "launched", "code": ""}]}
    assert spec.launch_note(lab_of(), found_of(), ran) == (
        "Launched g5.xlarge in us-east-1b, after g6.xlarge in us-east-1a: InsufficientInstanceCapacity; "
        "g6.xlarge in no zone: quota.")
    assert spec.launch_note(lab_of(), found_of(), {}) == ""
    found = found_of(instance=RUNNING, drift={"notes": ["Grows at the next boot."]})
    note = spec.launch_note(lab_of(ami_id="ami-0ccccccccc", zones=["us-east-1c"]), found, {"notes": ["Changed."]})
    assert note == ("Changed. Grows at the next boot. Lab csdl keeps its image ami-0aaaaaaaa (gpu_lab_ami_id "
                    "ami-0ccccccccc applies to a new instance only: teardown.yml, then launch.yml, to change it). "
                    "Lab csdl stays in us-east-1a, where its disk is (gpu_lab_zones applies to a new instance only).")


def test_warnings_for_types_current_dlamis_do_not_support(spec) -> None:
    assert spec.warnings("g6.xlarge", found_of()) == []
    assert spec.warnings("", found_of()) == []
    assert spec.warnings("p3.2xlarge", found_of()) == [
        "Warning: p3.2xlarge is not among the instance families current Deep Learning AMIs support (g4dn, g5, g6, "
        "g6e, gr6, p4d, p4de, p5, p5e, p5en, p6-b200); it launches, but the GPU driver may not work (P3 is Volta, "
        "which CUDA 12.8+ dropped)."]
    assert spec.warnings("g4ad.xlarge", found_of())[0].endswith("the GPU driver may not work.")
    cpu = found_of(instance_types=[{"name": "m5.xlarge", "exists": True, "gpu_count": 0}])
    assert spec.warnings("m5.xlarge", cpu) == [
        "Note: m5.xlarge has no GPU (gpu_lab_allow_no_gpu): notebooks run on the CPU."]


def test_what_is_published(spec, lab_of, tmp_path: Path) -> None:
    ran = {"changed": True, "launched": True, "instance": RUNNING, "address": {"public_ip": "127.0.0.5"},
           "attempts": [{"type": "g6.xlarge", "zone": "us-east-1a", "outcome": "launched"}]}
    out = spec.outcome(lab_of(), found_of(), ran, check_mode=False)
    assert out["lab"] == {"name": "csdl", "region": "us-east-1", "address": "127.0.0.5", "user": "ubuntu",
                          "key_file": str(tmp_path / "k.pem"), "ssh_ready": True, "alarm_check": False,
                          "warnings": []}
    assert (out["instance"], out["address"], out["region"]) == (RUNNING, "127.0.0.5", "us-east-1")
    assert out["launch_note"] == "Launched g6.xlarge in us-east-1a."
    assert out["launch_attempts"] == ran["attempts"]
    # Nothing to do: what was found is published; in check mode a new lab is not waited for.
    kept = spec.outcome(lab_of(), found_of(instance=RUNNING, addresses=[ADDRESS]), {}, check_mode=True)
    assert (kept["address"], kept["lab"]["ssh_ready"], kept["launch_attempts"]) == ("127.0.0.9", True, [])
    assert not spec.outcome(lab_of(), found_of(), {"planned": ["launch"], "instance": {}}, True)["lab"]["ssh_ready"]
    assert not spec.outcome(lab_of(wait_for_ssh="false"), found_of(), ran, False)["lab"]["ssh_ready"]


def test_the_alarm_is_checked_when_wanted_or_had(spec, lab_of) -> None:
    assert not spec.alarm_check(lab_of(), found_of())
    assert spec.alarm_check(lab_of(idle_alarm="true"), found_of())
    assert spec.alarm_check(lab_of(), found_of(instance={"id": "i-1", "tags": {}}))  # from before 0.2
    assert not spec.alarm_check(lab_of(), found_of(instance=RUNNING))


def test_the_check_mode_sentence(spec, lab_of, tmp_path: Path) -> None:
    planned = {"planned": ["import key pair csdl-server", "launch g6.xlarge"]}
    assert spec.check_note(lab_of(), planned, key_file_exists=False) == (
        f"Check mode: lab csdl would make the private key {tmp_path / 'k.pem'} on this machine; import key pair "
        "csdl-server; launch g6.xlarge.")
    assert spec.check_note(lab_of(), planned, key_file_exists=True) == (
        "Check mode: lab csdl would import key pair csdl-server; launch g6.xlarge.")
    assert spec.check_note(lab_of(), {"planned": []}, key_file_exists=False) == ""


def test_the_launch_names_a_new_instances_image_and_what_is_newer(spec, lab_of) -> None:
    image = {"image_id": "ami-0bbbbbbbb", "root_device_name": "/dev/sda1", "root_size_gib": 75,
             "name": "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) 20260310",
             "creation_date": "2026-03-10T00:00:00.000Z", "line": "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04",
             "newer": "Image ...: a newer supported line exists, ...", "note": "Found by name."}
    ran = {"launched": True, "instance": {"type": "g6.xlarge", "zone": "us-east-1a", "id": "i-1"}}
    assert spec.launch_note(lab_of(), found_of(image=image), ran) == (
        "Launched g6.xlarge in us-east-1a. Image: Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) "
        "20260310 (ami-0bbbbbbbb, created 2026-03-10, line oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04). "
        "Found by name.")
    published = spec.outcome(lab_of(), found_of(image=image), ran, False)
    assert image["newer"] in published["lab"]["warnings"]
    # A re-run launches nothing: nothing said about images.
    assert image["newer"] not in spec.outcome(lab_of(), found_of(image=image), {}, False)["lab"]["warnings"]
