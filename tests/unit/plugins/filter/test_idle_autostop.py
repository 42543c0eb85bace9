"""csdl.gpu_lab.idle_autostop_*: the idle_autostop role's decisions from one inspection."""

from __future__ import annotations

import json

from plugins.filter.idle_autostop import (
    idle_autostop_differs,
    idle_autostop_host,
    idle_autostop_problem,
    idle_autostop_status,
    idle_autostop_summary,
    idle_autostop_timer_as_wanted,
)

WANTED = [
    {"path": "/usr/local/lib/gpu_lab", "dir": True, "mode": "0755"},
    {"path": "/etc/gpu_lab/idle.json", "mode": "0600", "sha1": "abc"},
]
ROOT = {"exists": True, "owner": "root", "group": "root"}


def test_all_as_wanted():
    found = {"/usr/local/lib/gpu_lab": {**ROOT, "dir": True, "mode": "0755"},
             "/etc/gpu_lab/idle.json": {**ROOT, "dir": False, "mode": "0600", "sha1": "abc"}}
    assert idle_autostop_differs(found, WANTED) == []


def test_nothing_found_means_everything_differs():
    assert idle_autostop_differs({}, WANTED) == ["/usr/local/lib/gpu_lab", "/etc/gpu_lab/idle.json"]
    assert idle_autostop_differs(None, WANTED) == ["/usr/local/lib/gpu_lab", "/etc/gpu_lab/idle.json"]


def test_each_difference_counts():
    good = {**ROOT, "dir": False, "mode": "0600", "sha1": "abc"}
    for bad in ({"sha1": "abd"}, {"mode": "0644"}, {"owner": "ubuntu"}, {"group": "adm"}, {"dir": True},
                {"exists": False}):
        found = {"/usr/local/lib/gpu_lab": {**ROOT, "dir": True, "mode": "0755"},
                 "/etc/gpu_lab/idle.json": {**good, **bad}}
        assert idle_autostop_differs(found, WANTED) == ["/etc/gpu_lab/idle.json"], bad


def test_a_file_where_a_directory_is_wanted():
    found = {"/usr/local/lib/gpu_lab": {**ROOT, "dir": False, "mode": "0755", "sha1": None}}
    assert "/usr/local/lib/gpu_lab" in idle_autostop_differs(found, WANTED)


def test_status_is_the_checkers_answer():
    answer = {"enabled": True, "healthy": True, "installed": True}
    assert idle_autostop_status({"rc": 0, "stdout": '  {"enabled": true, "healthy": true, "installed": true}'},
                                "/s.py") == answer


def test_status_without_an_answer_says_why():
    for probe, why in [({"rc": 2, "stdout": "", "stderr": "python3: can't open file\n"}, "python3: can't open file"),
                       ({"rc": 0, "stdout": "oops", "stderr": ""}, "no answer"),
                       ({"rc": 1}, "no answer")]:
        status = idle_autostop_status(probe, "/usr/local/lib/gpu_lab/idle_check.py")
        assert status["installed"] is False and status["timer_active"] is False
        assert status["reason"] == ("auto-stop is not installed on this host, or its checker fails"
                                    f" (/usr/local/lib/gpu_lab/idle_check.py: {why})")


# --- The checks before anything changes --------------------------------------------------------

JUPYTER_CONFIG = "/home/ubuntu/.jupyter/jupyter_server_config.json"
CHECK = {"host": "lab1", "window_minutes": 60, "interval": 60, "grace_seconds": 300, "gpu_threshold": 10,
         "load_threshold": 0.5, "jupyter": True, "jupyter_port": 8888, "token_file": JUPYTER_CONFIG, "daily_stop": "",
         "timezone": "", "enabled": True, "python": "/usr/bin/python3", "zoneinfo": "/usr/share/zoneinfo/UTC"}
PATHS = ["/run/systemd/system", "/usr/bin/python3", "/usr/share/zoneinfo/UTC", "/usr/share/zoneinfo/Europe/Berlin",
         JUPYTER_CONFIG]
UNQUOTED = ('idle_autostop_daily_stop must be a quoted time such as "23:00" (unquoted, YAML reads 23:00 as the'
            " number 1380).")
BAD_SETTINGS = ("Check the idle_autostop_* settings: window in minutes (a number >= 0, 0 = off), interval in seconds"
                " (>= 1), grace in whole seconds, thresholds as numbers, a port 1-65535, an absolute token file path,"
                ' a daily stop as "HH:MM" or "HH:MM:SS" (or ""), and an IANA time zone such as "Europe/Berlin" (or'
                ' "" for the host\'s).')
BAD_HOST = ("lab1 needs systemd and /usr/bin/python3 for the idle auto-stop (a systemd timer running a Python"
            " script); a Deep Learning AMI has both.")
NO_ZONE = ("lab1 has no /usr/share/zoneinfo/Nowhere/Atlantis: set idle_autostop_timezone to a zone it knows"
           ' (timedatectl list-timezones), or to "" for the host\'s own.')
NO_TOKEN = (f"{JUPYTER_CONFIG} is not on lab1: apply csdl.gpu_lab.jupyter_server before this role, point"
            " idle_autostop_jupyter_token_file at Jupyter's config, or set idle_autostop_jupyter to false if this"
            " host runs no Jupyter.")


def inspected(*missing):
    paths = {path: {"exists": path not in missing} for path in PATHS + ["/usr/share/zoneinfo/Nowhere/Atlantis"]}
    return {"rc": 0, "stdout": json.dumps({"paths": paths, "timer": {"enabled": "enabled", "active": "active"}})}


def problem(probe=None, **check):
    return idle_autostop_problem({**CHECK, **check}, probe if probe is not None else inspected())


def test_nothing_wrong():
    assert problem() == ""
    assert problem(window_minutes="0.5", interval="1", jupyter_port="65535", daily_stop="23:00:30",
                   timezone="Europe/Berlin", zoneinfo="/usr/share/zoneinfo/Europe/Berlin") == ""


def test_an_unquoted_daily_stop():
    assert problem(daily_stop=1380) == UNQUOTED
    assert problem(daily_stop=None).endswith("as the number ).")


def test_each_bad_setting():
    for bad in ({"window_minutes": "sixty"}, {"window_minutes": -1}, {"interval": 0}, {"interval": 60.0},
                {"grace_seconds": 1.5}, {"gpu_threshold": "high"}, {"load_threshold": True}, {"jupyter_port": 0},
                {"jupyter_port": 65536}, {"jupyter_port": "http"}, {"token_file": "config.json"},
                {"daily_stop": "25:00"}, {"daily_stop": "23:60"}, {"daily_stop": "7:00"},
                {"timezone": "Europe Berlin"}):
        assert problem(**bad) == BAD_SETTINGS, bad


def test_each_problem_of_the_host():
    assert problem({"rc": 1, "stdout": "", "stderr": "python3: not found"}) == BAD_HOST
    assert problem(inspected("/run/systemd/system")) == BAD_HOST
    assert problem(inspected("/usr/bin/python3")) == BAD_HOST
    assert problem(inspected("/usr/share/zoneinfo/Nowhere/Atlantis"), timezone="Nowhere/Atlantis",
                   zoneinfo="/usr/share/zoneinfo/Nowhere/Atlantis") == NO_ZONE
    # The host's own zone needs no zone file.
    assert problem(inspected("/usr/share/zoneinfo/UTC")) == ""
    assert problem(inspected(JUPYTER_CONFIG)) == NO_TOKEN


def test_no_token_is_a_problem_only_when_it_is_read():
    assert problem(inspected(JUPYTER_CONFIG), jupyter=False) == ""
    assert problem(inspected(JUPYTER_CONFIG), window_minutes=0, enabled=False) == ""


def test_the_first_problem_that_applies_wins():
    everything = inspected("/run/systemd/system", "/usr/share/zoneinfo/Nowhere/Atlantis", JUPYTER_CONFIG)
    zone = {"timezone": "Nowhere/Atlantis", "zoneinfo": "/usr/share/zoneinfo/Nowhere/Atlantis"}
    assert problem(everything, daily_stop=1380, interval=0, **zone) == UNQUOTED
    assert problem(everything, interval=0, **zone) == BAD_SETTINGS
    assert problem(everything, **zone) == BAD_HOST
    assert problem(inspected("/usr/share/zoneinfo/Nowhere/Atlantis", JUPYTER_CONFIG), **zone) == NO_ZONE


def test_host_is_the_answer_or_nothing():
    assert idle_autostop_host({"rc": 0, "stdout": '{"paths": {}}'}) == {"paths": {}}
    assert idle_autostop_host({"rc": 1, "stdout": '{"paths": {}}'}) == {}
    assert idle_autostop_host({}) == {}


def test_the_timer_is_on_exactly_when_auto_stop_is():
    on, off = {"enabled": "enabled", "active": "active"}, {"enabled": "disabled", "active": "inactive"}
    assert idle_autostop_timer_as_wanted({"timer": on}, True) is True
    assert idle_autostop_timer_as_wanted({"timer": off}, False) is True
    assert idle_autostop_timer_as_wanted({"timer": on}, False) is False
    assert idle_autostop_timer_as_wanted({"timer": {"enabled": "enabled", "active": "inactive"}}, True) is False
    assert idle_autostop_timer_as_wanted({}, False) is False


def test_summary():
    s = {"enabled": True, "window_minutes": 60, "interval": 60, "grace_seconds": 300, "daily_stop": "", "timezone": ""}
    assert idle_autostop_summary(s) == (
        "Idle auto-stop: the host powers itself off after 60 min without use (checked every 60 s, 300 s warning).")
    assert idle_autostop_summary({**s, "window_minutes": "0.5", "daily_stop": "23:00"}) == (
        "Idle auto-stop: the host powers itself off after 0.5 min without use (checked every 60 s, 300 s warning);"
        " daily stop at 23:00 (host time).")
    assert idle_autostop_summary({**s, "daily_stop": "23:00", "timezone": "Europe/Berlin"}).endswith(
        "; daily stop at 23:00 (Europe/Berlin).")
    assert idle_autostop_summary({**s, "enabled": False, "daily_stop": "23:00"}) == (
        "Idle auto-stop is OFF (idle_autostop_window_minutes is 0): this host runs, and bills, until you stop it.")
