"""step=shelve and the status step that shelves first (plugin_utils/lab_shelve.py): which labs are
due (gpu_lab_shelve_after_days), one lab_host call (state=shelved) for them, the sentences, and a
status that shows the lab as it is after the shelving."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from tests.unit.plugins.plugin_utils.test_lab_lifecycle import ADDRESS, make_run

STOPPED = {"id": "i-a", "state": "stopped", "type": "g5.xlarge", "zone": "us-east-1a",
           "state_reason": "User initiated (2026-11-01 10:00:00 GMT)", "launch_time": "2026-10-30T09:00:00+00:00"}
NOW = dt.datetime(2026, 11, 10, 10, 0, 0, tzinfo=dt.UTC)  # 9 days after the stop
SHELF = {"image_id": "ami-0shelf", "name": "a1-shelf-20261110-100000", "creation_date": "2026-11-10T10:00:00.000Z",
         "snapshot_ids": ["snap-1"], "size_gib": 100}
SHELVED = {"changed": True, "shelf": SHELF, "removed": {"instances": ["i-a"], "addresses": ["127.0.0.9"]}}


def found(instance=None, **more):
    return {"instance": instance or {}, "addresses": [ADDRESS] if instance else [], "volumes": [], "orphans": [],
            **more}


def lab_of(plugin, tmp_path: Path, days: str):
    """A lab a1 whose gpu_lab_shelve_after_days is days."""
    return plugin("plugin_utils.lab_settings").settings_of("a1", {
        "ec2_gpu_host_lab_name": "a1", "ec2_gpu_host_home": str(tmp_path), "ec2_gpu_host_shelve_after_days": days})


def test_shelve_is_one_call_and_says_what_it_costs_and_how_back(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": found(STOPPED)}, {"labs": {"a1": SHELVED}})
    part = plugin("plugin_utils.lab_shelve").shelve_step(run)["a1"]
    assert [(name, args["state"]) for name, args in calls] == [("csdl.gpu_lab.lab_host", "shelved")]
    assert calls[0][1]["labs"][0]["instance"] == STOPPED and calls[0][1]["labs"][0]["addresses"] == [ADDRESS]
    assert part["changed"] and part["shelf"] == SHELF
    assert part["message"].startswith("Lab a1 is shelved: its disk is the image ami-0shelf (a1-shelf-20261110-100000)")
    assert "It costs at most $5.00/month (100 GiB of snapshots at $0.05/GiB-month)" in part["message"]


def test_a_lab_with_nothing_to_shelve_fails_and_asks_nothing(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": found()})
    part = plugin("plugin_utils.lab_shelve").shelve_step(run)["a1"]
    assert part["failed"] and "has no instance in us-east-1 to shelve" in part["msg"] and calls == []


def test_only_labs_stopped_past_their_days_are_due(plugin, tmp_path: Path) -> None:
    shelve = plugin("plugin_utils.lab_shelve")

    def lab(days: str):
        return lab_of(plugin, tmp_path, days)

    now = NOW.replace(tzinfo=None)
    assert shelve.due(lab("7"), STOPPED, now) and not shelve.due(lab("10"), STOPPED, now)
    assert not shelve.due(lab("0"), STOPPED, now)  # the default: never
    assert not shelve.due(lab("1"), {**STOPPED, "state": "running"}, now)
    assert not shelve.due(lab("1"), {**STOPPED, "state_reason": ""}, now)  # since when is not known


def test_status_shelves_the_due_labs_first_and_shows_them_shelved(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": found(STOPPED), "b2": found({**STOPPED, "id": "i-b"})},
                          lambda args: {"labs": {"a1": SHELVED}} if args.get("state") == "shelved" else {},
                          ec2_gpu_host_shelve_after_days="7")
    run.labs["b2"] = dataclasses.replace(run.labs["b2"], shelve_after_days=30.0)  # stopped 9 days: not due
    parts = plugin("plugin_utils.lab_shelve").status_step(run, now=NOW)
    shelved = [args for name, args in calls if args.get("state") == "shelved"]
    assert len(shelved) == 1 and [spec["lab"] for spec in shelved[0]["labs"]] == ["a1"]
    a1, b2 = parts["a1"], parts["b2"]
    assert a1["changed"] and a1["status"]["state"] == "shelved" and a1["status"]["shelf"]["image_id"] == "ami-0shelf"
    assert a1["status"]["warnings"][0].startswith("Lab a1 is shelved: its disk is the image ami-0shelf")
    assert not b2["changed"] and b2["status"]["state"] == "stopped"


def test_check_mode_only_says_what_it_would_do(plugin, tmp_path: Path) -> None:
    planned = {"labs": {"a1": {"changed": True, "planned": ["make an image of i-a", "terminate i-a"], "shelf": {}}}}
    run, _calls = make_run(plugin, tmp_path, {"a1": found(STOPPED)}, planned, check_mode=True)
    part = plugin("plugin_utils.lab_shelve").shelve_step(run)["a1"]
    assert not part["changed"] and part["message"] == "Check mode: lab a1 would make an image of i-a; terminate i-a."


def test_the_lab_s_recorded_days_apply_not_this_run_s(plugin, tmp_path: Path) -> None:
    """A status run in another shell (or the workstation's timer) gives no -e: the days launch
    recorded on the instance apply; this run's only for an instance that records none."""
    shelve = plugin("plugin_utils.lab_shelve")

    def lab(days: str):
        return lab_of(plugin, tmp_path, days)

    now = NOW.replace(tzinfo=None)
    recorded = {**STOPPED, "tags": {"gpu_lab:shelve_after_days": "7"}}
    assert lab("7").recorded_tags["gpu_lab:shelve_after_days"] == "7"
    assert shelve.due(lab("0"), recorded, now)  # no -e here: the lab's 7 days have come
    assert not shelve.due(lab("7"), {**recorded, "tags": {"gpu_lab:shelve_after_days": "0"}}, now)
    assert shelve.due(lab("7"), {**recorded, "tags": {"gpu_lab:shelve_after_days": "x"}}, now)  # unreadable: this run's
    assert shelve.differs_note(lab("0"), recorded) == ""  # nothing set here: nothing to say
    assert shelve.differs_note(lab("7"), recorded) == ""
    note = shelve.differs_note(lab("3"), {**recorded, "tags": {"gpu_lab:shelve_after_days": "0"}})
    assert note.startswith("Lab a1 records gpu_lab_shelve_after_days=0 (from its launch), so status.yml never "
                           "shelves it, not after 3: `ansible-playbook launch.yml -e gpu_lab_shelve_after_days=3`")


def test_status_says_when_this_run_s_days_are_not_the_lab_s(plugin, tmp_path: Path) -> None:
    stopped = {**STOPPED, "tags": {"gpu_lab:shelve_after_days": "30"}}  # stopped 9 days: not due for the lab
    run, calls = make_run(plugin, tmp_path, {"a1": found(stopped)}, {}, ec2_gpu_host_shelve_after_days="7")
    part = plugin("plugin_utils.lab_shelve").status_step(run, now=NOW)["a1"]
    assert [args for _name, args in calls if args.get("state") == "shelved"] == []
    assert not part["changed"] and part["status"]["state"] == "stopped"
    assert part["status"]["warnings"][0].startswith("Lab a1 records gpu_lab_shelve_after_days=30 (from its launch), "
                                                    "so status.yml shelves it after 30 days stopped, not after 7")
