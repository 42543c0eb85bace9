"""drift: a lab's settings against the instance it has - applied, refused, or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from plugins.module_utils.drift import drift, no_drift, recorded_type


def instance(state: str = "running", type_: str = "g6.xlarge", asked: str | None = "g6.xlarge") -> dict[str, Any]:
    tags = {"gpu_lab:lab": "dl"} | ({"gpu_lab:instance_type": asked} if asked else {})
    return {"id": "i-0abc", "state": state, "type": type_, "tags": tags}


def test_no_instance_or_no_settings_is_no_drift() -> None:
    assert drift("dl", {}, {"instance_type": "g5.xlarge", "volume_size": 500}, None) == no_drift()
    assert drift("dl", instance(), None, 100) == no_drift()
    assert drift("dl", instance(), {}, 100) == no_drift()
    assert drift("dl", instance(), {"instance_type": None, "volume_size": None}, 100) == no_drift()


def test_same_settings_are_no_drift() -> None:
    assert drift("dl", instance(), {"instance_type": "g6.xlarge", "volume_size": 100}, 100) == no_drift()


def test_a_bigger_volume_is_applied_with_a_note_on_the_file_system() -> None:
    found = drift("dl", instance(), {"volume_size": 200}, 100)
    assert found["apply"] == {"volume_size": 200}
    assert found["refuse"] == []
    (note,) = found["notes"]
    assert "200 GiB, from 100" in note and "next boot" in note and "growpart" in note and "resize2fs" in note


def test_a_smaller_volume_is_refused_saying_the_size_to_set() -> None:
    found = drift("dl", instance(state="stopped"), {"volume_size": 50}, 100)
    assert found["apply"] == {}
    assert found["refuse"] == ["Lab dl's disk is 100 GiB and gpu_lab_volume_size is now 50, but a volume cannot "
                               "shrink: set gpu_lab_volume_size back to 100 or more."]


def test_an_unknown_root_size_is_not_compared() -> None:
    assert drift("dl", instance(), {"volume_size": 50}, None) == no_drift()


def test_fallback_type_with_the_setting_unchanged_is_no_drift() -> None:
    """Asked for g6 at launch, runs g5 after a capacity failover: the setting is still g6."""
    assert drift("dl", instance(type_="g5.xlarge", asked="g6.xlarge"), {"instance_type": "g6.xlarge"}, None) == \
        no_drift()


@pytest.mark.parametrize("state", ["running", "pending"])
def test_another_type_while_it_runs_is_refused(state: str) -> None:
    found = drift("dl", instance(state=state, type_="g5.xlarge", asked="g6.xlarge"),
                  {"instance_type": "g4dn.xlarge"}, None)
    assert found["apply"] == {}
    assert found["refuse"] == [
        "Lab dl runs g5.xlarge (asked for g6.xlarge at launch); gpu_lab_instance_type is now g4dn.xlarge. "
        "The type changes only while the instance is stopped: run stop.yml, then launch.yml again (it changes "
        "the type and starts it), or set gpu_lab_instance_type back to g6.xlarge."]


@pytest.mark.parametrize("state", ["stopped", "stopping"])
def test_another_type_while_stopped_is_applied(state: str) -> None:
    found = drift("dl", instance(state=state), {"instance_type": "g5.2xlarge"}, None)
    assert found == {"apply": {"instance_type": "g5.2xlarge"}, "refuse": [], "notes": []}


def test_without_the_tag_the_type_it_runs_is_what_was_asked_for() -> None:
    old = instance(type_="g5.xlarge", asked=None)
    assert recorded_type(old) == "g5.xlarge"
    assert drift("dl", old, {"instance_type": "g5.xlarge"}, None) == no_drift()
    (refusal,) = drift("dl", old, {"instance_type": "g6.xlarge"}, None)["refuse"]
    assert refusal.startswith("Lab dl runs g5.xlarge (asked for g5.xlarge at launch)")


def test_setting_the_fallback_it_runs_only_changes_the_record() -> None:
    """Running g5 after asking for g6, the setting is now g5: nothing to refuse, even running."""
    found = drift("dl", instance(type_="g5.xlarge", asked="g6.xlarge"), {"instance_type": "g5.xlarge"}, None)
    assert found == {"apply": {"instance_type": "g5.xlarge"}, "refuse": [], "notes": []}


def test_both_at_once_are_each_judged() -> None:
    found = drift("dl", instance(), {"instance_type": "g5.xlarge", "volume_size": 300}, 200)
    assert found["apply"] == {"volume_size": 300}
    assert len(found["refuse"]) == 1 and "gpu_lab_instance_type is now g5.xlarge" in found["refuse"][0]


def test_results_are_independent() -> None:
    first = drift("dl", instance(), {"volume_size": 200}, 100)
    first["apply"]["x"] = 1
    assert drift("dl", instance(), {}, 100) == no_drift()
