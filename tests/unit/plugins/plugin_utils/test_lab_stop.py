"""step=stop: what find found is stopped in one lab_host call; what does not run is left, and
said; a lab the module could not stop fails alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_run(plugin, tmp_path: Path, instances: dict[str, dict[str, Any]], answer: dict[str, Any]):
    settings, lab_run = plugin("plugin_utils.lab_settings"), plugin("plugin_utils.lab_run")
    calls: list[tuple[str, dict[str, Any]]] = []

    def execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return answer

    labs, facts = {}, {}
    for host, instance in instances.items():
        labs[host] = settings.settings_of(host, {"ec2_gpu_host_lab_name": host, "ec2_gpu_host_region": "us-east-1",
                                                 "ec2_gpu_host_home": str(tmp_path)})
        facts[host] = {"instance": instance, "address": "127.0.0.9",
                       "lab": {"name": host, "region": "us-east-1", "ssh_ready": True}}
    return lab_run.Run(labs=labs, facts=facts, execute=execute), calls


def test_only_running_instances_are_stopped_in_one_call(plugin, tmp_path: Path) -> None:
    stop = plugin("plugin_utils.lab_stop")
    run, calls = make_run(plugin, tmp_path, {
        "a1": {"id": "i-a", "state": "running"}, "b2": {"id": "i-b", "state": "stopped"}, "c3": {}},
        {"labs": {"a1": {"changed": True, "instance": {"id": "i-a", "state": "stopped"}}}})
    parts = stop.stop_step(run)
    assert [c[0] for c in calls] == ["csdl.gpu_lab.lab_host"]
    assert calls[0][1]["state"] == "stopped"
    assert [spec["lab"] for spec in calls[0][1]["labs"]] == ["a1"]
    assert parts["a1"]["changed"] and parts["a1"]["instance"]["state"] == "stopped"
    assert parts["a1"]["lab"]["ssh_ready"] is False
    assert parts["a1"]["message"] == "Stopping i-a; the disk and the address 127.0.0.9 are kept."
    assert not parts["b2"]["changed"] and parts["b2"]["message"] == ""
    assert parts["c3"]["message"] == "Lab c3 has no instance in us-east-1; nothing to stop."


def test_nothing_to_stop_makes_no_call(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": {"id": "i-a", "state": "stopped"}}, {})
    assert not plugin("plugin_utils.lab_stop").stop_step(run)["a1"]["failed"]
    assert calls == []


def test_a_lab_that_could_not_be_stopped_fails_alone(plugin, tmp_path: Path) -> None:
    running = {"a1": {"id": "i-a", "state": "running"}, "b2": {"id": "i-b", "state": "running"}}
    run, _unused = make_run(plugin, tmp_path, running,
                            {"labs": {"a1": {"failed": True, "msg": "Not stopped after 600 s: i-a (stopping)."},
                                      "b2": {"changed": True, "instance": {"id": "i-b", "state": "stopped"}}}})
    parts = plugin("plugin_utils.lab_stop").stop_step(run)
    assert parts["a1"] == {"failed": True, "changed": False, "msg": "Not stopped after 600 s: i-a (stopping)."}
    assert parts["b2"]["changed"] and not parts["b2"]["failed"]


def test_a_lab_not_looked_up_fails(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": {"id": "i-a", "state": "running"}}, {})
    run.facts.clear()
    assert "was not looked up" in plugin("plugin_utils.lab_stop").stop_step(run)["a1"]["msg"]
    assert calls == []
