"""lab_settings: a lab's role variables into LabSettings - the names, tags, candidates and
the record of where the lab lives that vars/main.yml used to derive in Jinja."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def values(home: Path, **more: Any) -> dict[str, Any]:
    return {"ec2_gpu_host_lab_name": "csdl", "ec2_gpu_host_region": "us-east-1",
            "ec2_gpu_host_instance_type": "g6.xlarge", "ec2_gpu_host_home": str(home),
            "ec2_gpu_host_fallback_instance_types": ["g5.xlarge", "g6.xlarge"],
            "ec2_gpu_host_autostop_minutes": 60, "ec2_gpu_host_idle_alarm": "false"} | more


def test_names_tags_and_candidates(plugin, tmp_path: Path) -> None:
    lab = plugin("plugin_utils.lab_settings").settings_of(
        "localhost", values(tmp_path, ec2_gpu_host_tags={"gpu_lab:class": "bio"}, gpu_lab_class="bio"))
    assert (lab.key_name, lab.sg_name, lab.instance_name) == ("csdl-server", "csdl-ssh", "csdl-server")
    assert lab.tags == {"gpu_lab:class": "bio", "gpu_lab:lab": "csdl", "gpu_lab:managed_by": "csdl.gpu_lab"}
    assert lab.recorded_tags == {"gpu_lab:autostop_minutes": "60", "gpu_lab:idle_alarm": "false",
                                 "gpu_lab:shelve_after_days": "0"}
    assert lab.candidates == ["g6.xlarge", "g5.xlarge"]  # the wanted type first, once
    assert lab.confirm_word == "bio"
    assert lab.dlami_line == "latest"
    assert lab.ssm_parameter() == "/aws/service/deeplearning/ami/x86_64/"
    assert lab.ssm_parameter("arm64") == "/aws/service/deeplearning/ami/arm64/"
    pinned = plugin("plugin_utils.lab_settings").settings_of(
        "localhost", values(tmp_path, ec2_gpu_host_dlami="oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04"))
    assert pinned.ssm_parameter("arm64") == ("/aws/service/deeplearning/ami/arm64/"
                                             "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id")


def test_list_settings_as_given_on_the_command_line(plugin, tmp_path: Path) -> None:
    lab = plugin("plugin_utils.lab_settings").settings_of(
        "localhost", values(tmp_path, ec2_gpu_host_zones="us-east-1a,us-east-1b", ec2_gpu_host_ssh_cidr=""))
    assert lab.zones == ["us-east-1a", "us-east-1b"]
    assert lab.ssh_cidrs == []


def test_the_recorded_region_is_where_the_lab_is(plugin, tmp_path: Path) -> None:
    settings = plugin("plugin_utils.lab_settings")
    record = tmp_path / ".gpu_lab" / "csdl" / "lab.json"
    assert settings.settings_of("localhost", values(tmp_path)).recorded_region == ""
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"lab": "csdl", "region": "us-west-2", "instance_id": "i-1"}))
    lab = settings.settings_of("localhost", values(tmp_path))
    assert lab.record_file == str(record)
    assert lab.recorded_region == "us-west-2"
    assert settings.settings_of("localhost", values(tmp_path, ec2_gpu_host_region="us-west-2")).recorded_region == ""
    record.write_text("not json")
    assert settings.settings_of("localhost", values(tmp_path)).recorded_region == ""


def test_published_facts_are_not_settings(plugin, tmp_path: Path) -> None:
    settings = plugin("plugin_utils.lab_settings")
    given = values(tmp_path, ec2_gpu_host_lab={"name": "csdl"}, ec2_gpu_host_instance={"id": "i-1"},
                   ec2_gpu_host_launch_note="x")
    assert set(settings.wanted_names(given)) >= {"ec2_gpu_host_lab", "ec2_gpu_host_instance"}
    assert "ec2_gpu_host_launch_note" not in settings.wanted_names(given)
    assert settings.facts_of(given) == {"lab": {"name": "csdl"}, "instance": {"id": "i-1"}}
    assert settings.settings_of("localhost", given).name == "csdl"
