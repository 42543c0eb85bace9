# Copyright: gpu_lab developers
# MIT License
"""Filters for csdl.gpu_lab.idle_autostop: its decisions, from what files/install_state.py found.

The role looks at the host once; which paths differ, whether the timer is as wanted, the first
problem of the settings or the host, and what the role says it set up are decided here.
"""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import json
import os
import re
from collections.abc import Mapping
from typing import Any

NUMBER = r"^[0-9]+(\.[0-9]+)?$"
WHOLE = r"^[0-9]+$"
DAILY_STOP = r"^(([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?)?$"
TIMEZONE = r"^([A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*)?$"
SYSTEMD = "/run/systemd/system"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    """A value as Ansible renders it inside a sentence (None as nothing)."""
    return "" if value is None else str(value)


def _matches(value: Any, pattern: str) -> bool:
    """Ansible's `value | string is match(pattern)`."""
    return re.match(pattern, str(value)) is not None


def is_as_wanted(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    return (bool(have.get("exists", False))
            and bool(have.get("dir", False)) == bool(want.get("dir", False))
            and have.get("mode") == want["mode"]
            and [have.get("owner"), have.get("group")] == ["root", "root"]
            and have.get("sha1") == want.get("sha1"))


def idle_autostop_differs(found: Mapping[str, Any] | None, wanted: list[Mapping[str, Any]]) -> list[str]:
    found = found or {}
    return [want["path"] for want in wanted if not is_as_wanted(found.get(want["path"]) or {}, want)]


def idle_autostop_host(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The inspection's answer (the registered command's result), parsed; {} when it failed."""
    stdout = probe.get("stdout") if probe.get("rc", 1) == 0 else ""
    return json.loads(stdout or "{}")


def idle_autostop_timer_as_wanted(host: Mapping[str, Any], enabled: bool, unit: str = "timer") -> bool:
    """The timer (or, with unit "watcher", the spot notice watcher's service) is enabled and
    active when on, disabled and inactive when off."""
    timer = _map(host.get(unit))
    wanted = ["enabled", "active"] if enabled else ["disabled", "inactive"]
    return [timer.get("enabled"), timer.get("active")] == wanted


def settings_right(s: Mapping[str, Any]) -> bool:
    """Numbers where numbers are wanted, a port 1-65535, an absolute token file path, a daily stop
    as HH:MM or HH:MM:SS (or empty) and a time zone's name (or empty)."""
    return (_matches(s["window_minutes"], NUMBER)
            and _matches(s["interval"], WHOLE) and int(str(s["interval"])) >= 1
            and _matches(s["grace_seconds"], WHOLE)
            and _matches(s.get("spot_poll_seconds", 5), WHOLE)
            and _matches(s["gpu_threshold"], NUMBER) and _matches(s["load_threshold"], NUMBER)
            and _matches(s["jupyter_port"], WHOLE) and 1 <= int(str(s["jupyter_port"])) <= 65535
            and isinstance(s["token_file"], str) and os.path.isabs(s["token_file"])
            and _matches(s["daily_stop"], DAILY_STOP) and _matches(s["timezone"], TIMEZONE))


def idle_autostop_problem(s: Mapping[str, Any], probe: Mapping[str, Any]) -> str:
    """The first problem that applies, in this order, as the one sentence the role fails with; ""
    for none. s: host (the inventory name), the role's settings without their prefix
    (window_minutes, interval, grace_seconds, gpu_threshold, load_threshold, jupyter, jupyter_port,
    token_file, daily_stop, timezone), enabled, python and zoneinfo (the paths the host must have);
    probe: the inspection's result."""
    if not isinstance(s["daily_stop"], str):
        return ('idle_autostop_daily_stop must be a quoted time such as "23:00" (unquoted, YAML reads 23:00 as'
                f" the number {_text(s['daily_stop'])}).")
    if not settings_right(s):
        return ("Check the idle_autostop_* settings: window in minutes (a number >= 0, 0 = off), interval in"
                " seconds (>= 1), grace in whole seconds, thresholds as numbers, a port 1-65535, an absolute"
                ' token file path, a daily stop as "HH:MM" or "HH:MM:SS" (or ""), and an IANA time zone such'
                ' as "Europe/Berlin" (or "" for the host\'s).')
    paths = _map(idle_autostop_host(probe).get("paths"))

    def there(path: str) -> bool:
        return bool(_map(paths.get(path)).get("exists"))

    if probe.get("rc", 1) != 0 or not (there(SYSTEMD) and there(s["python"])):
        return (f"{s['host']} needs systemd and {s['python']} for the idle auto-stop"
                " (a systemd timer running a Python script); a Deep Learning AMI has both.")
    if s["timezone"] and not there(s["zoneinfo"]):
        return (f"{s['host']} has no /usr/share/zoneinfo/{s['timezone']}: set idle_autostop_timezone"
                ' to a zone it knows (timedatectl list-timezones), or to "" for the host\'s own.')
    # Without the token every check would fail, count as use, and the host would never stop.
    if s["jupyter"] and s["enabled"] and not there(s["token_file"]):
        return (f"{s['token_file']} is not on {s['host']}: apply"
                " csdl.gpu_lab.jupyter_server before this role, point idle_autostop_jupyter_token_file at"
                " Jupyter's config, or set idle_autostop_jupyter to false if this host runs no Jupyter.")
    return ""


def idle_autostop_summary(s: Mapping[str, Any]) -> str:
    """How the host stops itself, in one line. s: enabled, window_minutes, interval, grace_seconds,
    daily_stop, timezone; spot_poll_seconds, if given (the spot notice watcher, 0 = off)."""
    spot = ""
    if _matches(s.get("spot_poll_seconds", 0), WHOLE) and int(str(s.get("spot_poll_seconds", 0))) > 0:
        spot = (" On a Spot Instance, EC2's interruption notice reaches logged-in terminals within"
                f" {s['spot_poll_seconds']} s.")
    if not s["enabled"]:
        return ("Idle auto-stop is OFF (idle_autostop_window_minutes is 0): this host runs, and bills,"
                " until you stop it." + spot)
    line = (f"Idle auto-stop: the host powers itself off after {s['window_minutes']} min without use"
            f" (checked every {s['interval']} s, {s['grace_seconds']} s warning)")
    if s["daily_stop"]:
        line += f"; daily stop at {s['daily_stop']} ({s['timezone'] or 'host time'})"
    return line + "." + spot


def idle_autostop_status(probe: Mapping[str, Any], script: str) -> dict[str, Any]:
    """The checker's own view of its state; where it gives none, a state that says why."""
    stdout = str(probe.get("stdout") or "")
    if probe.get("rc") == 0 and re.match(r"^\s*\{", stdout):
        return json.loads(stdout)
    lines = str(probe.get("stderr") or "").splitlines()
    why = lines[-1] if lines else "no answer"
    return {"enabled": False, "healthy": False, "installed": False, "last_decision": None,
            "reason": f"auto-stop is not installed on this host, or its checker fails ({script}: {why})",
            "failures": [], "failing_since": None, "idle_minutes": None, "window": None, "daily_stop": "",
            "timezone": "", "last_run": None, "last_stop": None, "timer_active": False}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"idle_autostop_differs": idle_autostop_differs, "idle_autostop_status": idle_autostop_status,
                "idle_autostop_host": idle_autostop_host, "idle_autostop_problem": idle_autostop_problem,
                "idle_autostop_timer_as_wanted": idle_autostop_timer_as_wanted,
                "idle_autostop_summary": idle_autostop_summary}
