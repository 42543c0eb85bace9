"""lab_run: find asks lab_info once for every lab, where each lab is (its record wins for
all but a launch), and only for the details the step needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def make_run(plugin, tmp_path: Path, options: dict[str, Any], answer: dict[str, Any]):
    settings, lab_run = plugin("plugin_utils.lab_settings"), plugin("plugin_utils.lab_run")
    calls: list[tuple[str, dict[str, Any]]] = []

    def execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return answer

    labs = {host: settings.settings_of(host, {"ec2_gpu_host_lab_name": host, "ec2_gpu_host_region": "us-east-1",
                                              "ec2_gpu_host_home": str(tmp_path)}) for host in ("a1", "b2")}
    return lab_run.Run(labs=labs, options=options, execute=execute), calls


@pytest.mark.parametrize(("options", "volumes", "orphans"), [
    ({}, False, False), ({"details": True}, True, True), ({"orphans": True}, False, True)])
def test_find_asks_once_for_what_the_step_needs(plugin, tmp_path: Path, options, volumes, orphans) -> None:
    running = {"id": "i-a", "state": "running"}
    answer = {"labs": {"a1": {"instance": running, "addresses": [{"public_ip": "127.0.0.9"}]},
                       "b2": {"instance": {}, "addresses": []}}}
    run, calls = make_run(plugin, tmp_path, options, answer)
    parts = plugin("plugin_utils.lab_run").find_step(run)
    assert [(name, args["volumes"], args["orphans"]) for name, args in calls] == [
        ("csdl.gpu_lab.lab_info", volumes, orphans)]
    assert [entry["lab"] for entry in calls[0][1]["labs"]] == ["a1", "b2"]
    assert parts["a1"]["lab"] == {"name": "a1", "region": "us-east-1", "address": "127.0.0.9", "user": "ubuntu",
                                  "key_file": "", "ssh_ready": True}
    assert (parts["b2"]["instance"], parts["b2"]["address"], parts["b2"]["lab"]["ssh_ready"]) == ({}, "", False)


def test_a_lab_is_found_where_this_machine_recorded_it(plugin, tmp_path: Path) -> None:
    record = tmp_path / ".gpu_lab" / "a1" / "lab.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"region": "eu-west-1"}))
    run, calls = make_run(plugin, tmp_path, {}, {"labs": {"a1": {"instance": {}}, "b2": {"instance": {}}}})
    parts = plugin("plugin_utils.lab_run").find_step(run)
    assert [entry["region"] for entry in calls[0][1]["labs"]] == ["eu-west-1", "us-east-1"]
    assert parts["a1"]["region_note"].startswith("Lab a1 was launched in eu-west-1 (recorded in ")
    assert parts["b2"]["region_note"] == ""


def test_aws_that_cannot_be_read_fails_every_lab_with_its_sentence(plugin, tmp_path: Path) -> None:
    run, _unused = make_run(plugin, tmp_path, {}, {"failed": True, "msg": "AWS said no."})
    parts = plugin("plugin_utils.lab_run").find_step(run)
    assert {host: (p["failed"], p["msg"]) for host, p in parts.items()} == {
        "a1": (True, "AWS said no."), "b2": (True, "AWS said no.")}
