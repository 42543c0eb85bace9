"""What a teardown would lose, its refusal and the offer to keep the disk (plugins/filter/lab_teardown.py)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.unit.collection import load


@pytest.fixture(scope="module")
def f() -> ModuleType:
    return load("filter.lab_teardown")


RUNNING = {"id": "i-1", "state": "running"}
WORK = {"checked": True, "error": None, "any": True, "report": ["/home/ubuntu/course has 2 unpushed commit(s)"],
        "repos": [{"path": "/home/ubuntu/course", "any": True}], "loose_files_count": 0, "incomplete": []}


def test_a_stopped_lab_cannot_be_checked_and_is_at_risk(f: ModuleType) -> None:
    risk = f.lab_teardown_risk({"name": "csdl", "ssh_ready": False}, {"id": "i-1", "state": "stopped"}, {})
    assert risk["at_risk"] and risk["what"] == "lab csdl is stopped, so its disk cannot be checked for unsaved work"
    assert risk["refusal"].startswith("Lab csdl is stopped, so its disk cannot be checked for unsaved work, and "
                                      "teardown deletes the disk: run start.yml and push or copy your work first")
    assert "-e gpu_lab_keep_archive=true" in risk["refusal"] and "-e gpu_lab_force_teardown=true" in risk["refusal"]
    silent = f.lab_teardown_risk({"name": "csdl", "ssh_ready": False}, RUNNING, {})
    assert silent["what"] == "lab csdl does not answer SSH, so its disk cannot be checked for unsaved work"
    assert "deletes the disk: make it answer (status.yml says why it does not) and push" in silent["refusal"]


def test_the_guard_s_findings_make_a_running_lab_at_risk(f: ModuleType) -> None:
    risk = f.lab_teardown_risk({"name": "csdl", "ssh_ready": True}, RUNNING, WORK)
    assert risk["at_risk"] and risk["what"] == "on csdl-server, /home/ubuntu/course has 2 unpushed commit(s)"
    assert risk["refusal"].startswith("Refusing to go on: on csdl-server, /home/ubuntu/course has 2 unpushed")
    assert "Commit and push what is in the repos (git -C /home/ubuntu/course status shows it)" in risk["refusal"]
    assert "run again with -e gpu_lab_keep_archive=true" in risk["refusal"]
    assert not f.lab_teardown_risk({"name": "csdl", "ssh_ready": True}, RUNNING, {**WORK, "any": False})["at_risk"]


def test_nothing_is_at_risk_forced_kept_or_without_an_instance(f: ModuleType) -> None:
    lab, stopped = {"name": "csdl", "ssh_ready": False}, {"id": "i-1", "state": "stopped"}
    assert not f.lab_teardown_risk(lab, stopped, {}, force="true")["at_risk"]
    assert not f.lab_teardown_risk(lab, stopped, {}, keep=True)["at_risk"]
    assert not f.lab_teardown_risk(lab, {}, {})["at_risk"]  # shelved, or gone: no disk to lose
    assert f.lab_teardown_risk(lab, stopped, {}, force="false", keep="no")["at_risk"]


def test_one_offer_names_every_lab_at_risk(f: ModuleType) -> None:
    a = f.lab_teardown_risk({"name": "a", "ssh_ready": False}, {"id": "i-1", "state": "stopped"}, {})
    b = f.lab_teardown_risk({"name": "b", "ssh_ready": True}, RUNNING, WORK)
    safe = f.lab_teardown_risk({"name": "c", "ssh_ready": True}, RUNNING, {})
    assert f.lab_keep_offer([safe, None]) == ""
    one = f.lab_keep_offer([a, safe])
    assert one.startswith("Teardown deletes the disk, and lab a is stopped, so its disk cannot be checked for unsaved "
                          "work. Type keep to keep its disk as an image instead")
    both = f.lab_keep_offer([a, b, safe])
    assert "; on b-server, /home/ubuntu/course has 2 unpushed" in both and "keep the disks of a, b as an image" in both
    assert both.endswith("or press Enter to stop here")


def test_only_keep_keeps(f: ModuleType) -> None:
    assert f.lab_keep_chosen(" Keep\n") and f.lab_keep_chosen("keep")
    assert not f.lab_keep_chosen("") and not f.lab_keep_chosen(None) and not f.lab_keep_chosen("csdl")
