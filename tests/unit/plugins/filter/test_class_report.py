"""csdl.gpu_lab.class_report_rows / class_report_lines / class_status / class_status_lines."""

from __future__ import annotations

from plugins.filter.class_report import class_report_lines, class_report_rows, class_status, class_status_lines

LAUNCHED = {
    "gpu_lab_student": "ada", "gpu_lab_name": "cs1-ada",
    "ec2_gpu_host_instance": {"type": "g5.xlarge", "zone": "us-east-1b", "id": "i-0123456789abcdef0"},
    "ec2_gpu_host_lab": {"address": "127.1.0.5", "warnings": ["WARNING: p3 is old."]},
    "ec2_gpu_host_launch_attempts": [{"type": "g5.xlarge", "zone": "us-east-1a", "outcome": "no capacity"},
                                     {"type": "g5.xlarge", "zone": "us-east-1b", "outcome": "launched"}],
}
FAILED = {"gpu_lab_student": "bob", "gpu_lab_name": "cs1-bob", "gpu_lab_launch_error": "no capacity anywhere"}


def test_rows_are_sorted_and_say_what_each_lab_got():
    rows = class_report_rows(["cs1-bob", "cs1-ada"], {"cs1-ada": LAUNCHED, "cs1-bob": FAILED}, ["cs1-ada-server"])
    assert [r["student"] for r in rows] == ["ada", "bob"]
    assert rows[0] == {"student": "ada", "lab": "cs1-ada", "launched": True, "type": "g5.xlarge",
                       "zone": "us-east-1b", "instance_id": "i-0123456789abcdef0", "address": "127.1.0.5",
                       "configured": True, "failed_over_from": ["g5.xlarge in us-east-1a"], "error": "",
                       "warnings": ["WARNING: p3 is old."]}
    assert rows[1]["launched"] is False and rows[1]["type"] == "" and rows[1]["configured"] is False


def test_a_host_without_names_is_named_by_its_inventory_name():
    row = class_report_rows(["lab1"], {"lab1": {}})[0]
    assert (row["student"], row["lab"], row["failed_over_from"], row["warnings"]) == ("lab1", "lab1", [], [])


def test_lines():
    rows = class_report_rows(["a", "b", "c"], {"a": LAUNCHED, "b": FAILED, "c": LAUNCHED})
    lines = class_report_lines(rows, "cs1", "/kits/cs1")
    assert lines[0] == "Class cs1: 2 of 3 labs up, 1 not launched. Kits: /kits/cs1"
    assert lines[1] == ("ada          g5.xlarge   us-east-1b   127.1.0.5       provisioned only (host not reached)"
                        ", after no capacity for g5.xlarge in us-east-1a")
    assert lines[2] == "bob          NOT LAUNCHED: no capacity anywhere"
    assert lines[4:] == ["WARNING: p3 is old."]


def test_lines_when_all_are_up():
    rows = class_report_rows(["a"], {"a": {**LAUNCHED, "ec2_gpu_host_launch_attempts": []}}, ["cs1-ada-server"])
    assert class_report_lines(rows, "cs1", "/k") == [
        "Class cs1: 1 of 1 labs up. Kits: /k",
        "ada          g5.xlarge   us-east-1b   127.1.0.5       ready", "WARNING: p3 is old."]


def _status(state, hourly, period, **more):
    return {"ec2_gpu_host_status": {"state": state, "type": "g5.xlarge" if state != "absent" else "",
                                    "hours_in_state": 1.5, "hourly_usd": hourly, "running_period_usd": period,
                                    "stopped_monthly_usd": {"disk": "8.0", "addresses": 3.6},
                                    "warnings": ["Left over: vol-1", "slow"], **more}}


def test_class_status_and_its_table():
    api = "AWS Price List API, eu-west-1, fetched 2026-12-02"
    hostvars = {"b": {**_status("running", "1.006", "2.5", orphans=[{"summary": "vol-1 (8 GiB)"}], prices=api),
                      "gpu_lab_student": "bo"},
                "a": _status("stopped", None, 0, prices=api), "c": _status("absent", None, None, prices="")}
    status = class_status(["b", "a", "c"], hostvars, "cs1")
    assert [r["student"] for r in status["labs"]] == ["a", "bo", "c"]
    assert all("orphans" not in r for r in status["labs"])
    assert status["labs"][0]["warnings"] == ["slow"]
    assert status["labs"][0]["stopped_monthly_usd_total"] == 11.6
    assert status["totals"] == {"labs": 3, "running": 1, "stopped": 1, "absent": 1, "hourly_usd_now": 1.01,
                                "running_periods_usd": 2.5, "stopped_monthly_usd": 34.8}
    assert status["left_over"] == ["vol-1 (8 GiB)"]
    lines = class_status_lines(status)
    assert lines[0] == "student      state     type            hours  this run  stopped/mo  warnings"
    assert lines[1] == "a            stopped   g5.xlarge         1.5     $0.00      $11.60  slow"
    assert lines[3].startswith("c            absent    -  ")
    assert lines[4] == ("Class cs1: 3 labs, 1 running ($1.01/h now), 1 stopped, 1 without an instance; running"
                        " periods so far $2.50; while stopped $34.80/month (disks and addresses).")
    assert status["prices"] == [api]
    assert lines[5:] == [f"Prices: {api}", "Left over: vol-1 (8 GiB)"]


def test_no_hourly_cost_sums_to_zero():
    status = class_status(["a"], {"a": _status("stopped", None, None)}, "cs1")
    assert status["totals"]["hourly_usd_now"] == 0
