"""csdl.gpu_lab.lab_status_with_host / lab_status_lines: the status view of one's own lab."""

from __future__ import annotations

import copy

import pytest

from plugins.filter.lab_status import FilterModule, lab_status_lines, lab_status_with_host

RUNNING = {
    "lab": "lab1", "region": "us-east-1", "state": "running", "since_utc": "2026-11-10 10:00:00",
    "hours_in_state": 5.0, "instance_id": "i-a", "type": "g5.xlarge", "zone": "us-east-1a", "address": "127.0.0.9",
    "hourly_usd": 1.006, "running_period_usd": 5.03, "disk_gib": 120,
    "stopped_monthly_usd": {"disk": 9.6, "addresses": 3.65}, "autostop_minutes": "60",
    "prices": "AWS Price List API, us-east-1, fetched 2026-11-10", "orphans": [], "warnings": ["W1.", "W2."],
}
ABSENT = {
    "lab": "lab1", "region": "us-east-1", "state": "absent", "since_utc": "", "hours_in_state": 0.0,
    "instance_id": "", "type": "", "zone": "", "address": "", "hourly_usd": None, "running_period_usd": 0,
    "disk_gib": 0, "stopped_monthly_usd": {"disk": 0.0, "addresses": 0.0}, "autostop_minutes": "",
    "prices": "shipped table, us-east-1 list prices 2026-11", "orphans": [], "warnings": [],
}


def test_the_lines_of_a_running_lab():
    status = RUNNING | {"autostop": {"enabled": True, "healthy": True, "last_decision": "keep",
                                     "reason": "a kernel is busy"}}
    assert lab_status_lines(status) == [
        "lab        lab1 (us-east-1)",
        "state      running since 2026-11-10 10:00:00 UTC (5.0 h)",
        "instance   i-a g5.xlarge us-east-1a",
        "address    127.0.0.9",
        "price      $1.006/h on demand",
        "prices     AWS Price List API, us-east-1, fetched 2026-11-10",
        "this run   $5.03 so far",
        "stopped    $13.25/month while stopped: 120 GiB disk $9.60 + Elastic IP $3.65",
        "auto-stop  after 60 idle minutes",
        "last check keep: a kernel is busy",
        "warnings   W1. | W2.",
    ]


def test_the_lines_of_a_lab_without_an_instance():
    assert lab_status_lines(ABSENT) == ["lab        lab1 (us-east-1)", "state      absent", "address    -"]


def test_a_stopped_lab_has_no_running_cost_and_auto_stop_off_says_so():
    lines = lab_status_lines(RUNNING | {"state": "stopped", "running_period_usd": 0, "autostop_minutes": "0",
                                        "warnings": []})
    assert not any(line.startswith("this run") for line in lines)
    assert "auto-stop  off" in lines
    assert "stopped    $13.25/month while stopped: 120 GiB disk $9.60 + Elastic IP $3.65" in lines
    assert not any(line.startswith(("last check", "warnings")) for line in lines)


def test_a_type_without_a_price():
    lines = lab_status_lines(RUNNING | {"hourly_usd": None, "running_period_usd": 0})
    assert "price      unknown for this type" in lines
    assert not any(line.startswith("this run") for line in lines)


def test_with_host_warns_when_auto_stop_is_enabled_but_not_healthy():
    idle = {"enabled": True, "healthy": False, "reason": "the checker timer is not active"}
    before = copy.deepcopy(RUNNING)
    status = lab_status_with_host(RUNNING, idle)
    assert status["autostop"] == idle
    assert status["warnings"] == ["W1.", "W2.", "Idle auto-stop is not healthy: the checker timer is not active"]
    assert {k: v for k, v in status.items() if k not in ("autostop", "warnings")} == {
        k: v for k, v in RUNNING.items() if k != "warnings"}
    assert RUNNING == before  # the input is left as it was


@pytest.mark.parametrize("idle", [
    {"enabled": True, "healthy": True, "reason": "kept: a kernel is busy"},
    {"enabled": False, "healthy": False, "reason": "disabled"},
    {"enabled": True, "healthy": False, "reason": "no check has run since the host started (2 min ago)"},
    {},
    None,
])
def test_with_host_does_not_warn(idle):
    status = lab_status_with_host(RUNNING, idle)
    assert status["warnings"] == ["W1.", "W2."]
    assert status["autostop"] == (idle or {})


def test_with_host_without_warnings_and_the_filters_names():
    status = lab_status_with_host({k: v for k, v in RUNNING.items() if k != "warnings"},
                                  {"enabled": True, "healthy": False, "reason": "late by 20 min"})
    assert status["warnings"] == ["Idle auto-stop is not healthy: late by 20 min"]
    assert FilterModule().filters() == {"lab_status_with_host": lab_status_with_host,
                                        "lab_status_lines": lab_status_lines}


def test_the_image_line_names_it_and_what_is_newer():
    image = {"name": "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260715",
             "creation_date": "2026-07-15", "newer": "Image ...: a newer image of its line exists, ..."}
    lines = lab_status_lines(RUNNING | {"image": image})
    assert lines[3] == ("image      Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260715 "
                        "(2026-07-15); Image ...: a newer image of its line exists, ...")
    assert "image      ami-1" in lab_status_lines(RUNNING | {"image": {"name": "ami-1", "creation_date": "",
                                                                       "newer": ""}})
    assert not any(line.startswith("image") for line in lab_status_lines(ABSENT | {"image": {"name": ""}}))


def test_the_market_line_of_a_spot_lab_and_of_an_on_demand_one():
    spot = RUNNING | {"market": "spot", "spot": {"usd_per_hour": 0.3058, "zone": "us-east-1a", "saving_percent": 62}}
    assert "market     spot: $0.3058/h now in us-east-1a (62 % below on demand)" in lab_status_lines(spot)
    on_demand = spot | {"market": "on-demand"}
    assert ("market     on-demand (spot would be $0.3058/h now in us-east-1a (62 % below on demand))"
            in lab_status_lines(on_demand))
    assert "market     spot" in lab_status_lines(spot | {"spot": {}})
    assert not [line for line in lab_status_lines(ABSENT | {"market": ""}) if line.startswith("market")]


def test_a_spot_lab_aws_started_again_by_itself_is_said():
    idle = {"enabled": True, "healthy": True, "spot_notice": {"time": "2026-12-01T09:32:00Z", "this_boot": False}}
    warned = lab_status_with_host(RUNNING, idle)["warnings"]
    assert warned[-1].startswith("AWS interrupted this spot lab (its notice was for 2026-12-01T09:32:00Z) and "
                                 "started it again by itself since")
    assert lab_status_with_host(RUNNING, {**idle, "spot_notice": {"time": "x", "this_boot": True}})["warnings"] == [
        "W1.", "W2."]
    assert lab_status_with_host(RUNNING | {"state": "stopped"}, idle)["warnings"] == ["W1.", "W2."]
