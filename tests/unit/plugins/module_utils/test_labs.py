"""check_labs: the O(labs) list of lab_info and lab_host, each entry checked on its own."""

from __future__ import annotations

from typing import Any

from plugins.module_utils.labs import check_labs

OPTIONS: dict[str, Any] = {
    "lab": {"type": "str", "required": True},
    "region": {"type": "str"},
    "instance_types": {"type": "list", "elements": "str", "default": []},
}


def test_valid_entries_get_their_defaults_in_order() -> None:
    valid, invalid = check_labs([{"lab": "b", "region": "eu-west-1"}, {"lab": "a"}], OPTIONS)
    assert invalid == {}
    assert valid == [
        {"lab": "b", "region": "eu-west-1", "instance_types": []},
        {"lab": "a", "region": None, "instance_types": []},
    ]


def test_a_bad_entry_fails_alone() -> None:
    valid, invalid = check_labs([{"lab": "a", "instance_types": "g4dn.xlarge"},
                                 {"lab": "b", "colour": "red"}, {"lab": "c"}], OPTIONS)
    assert [lab["lab"] for lab in valid] == ["a", "c"]
    assert valid[0]["instance_types"] == ["g4dn.xlarge"]  # a string is a list of one, as for a module
    assert set(invalid) == {"b"}
    assert invalid["b"].startswith("Lab 'b': ") and "colour" in invalid["b"]


def test_an_entry_without_a_name() -> None:
    valid, invalid = check_labs([{"region": "us-east-1"}], OPTIONS)
    assert valid == []
    assert "lab" in invalid[""] and "required" in invalid[""]


def test_a_name_given_twice_fails_both_and_says_how_many() -> None:
    valid, invalid = check_labs([{"lab": "dl-s1"}, {"lab": "dl-s2"}, {"lab": "dl-s1"}], OPTIONS)
    assert [lab["lab"] for lab in valid] == ["dl-s2"]
    assert invalid == {"dl-s1": "Lab dl-s1 is named by 2 hosts of the play: "
                                "each lab needs its own name (gpu_lab_name)."}
