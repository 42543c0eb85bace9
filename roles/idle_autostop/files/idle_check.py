#!/usr/bin/env python3
# Copyright: gpu_lab developers
# MIT License
"""gpu_lab idle auto-stop: powers the lab host off when nobody has used it for a while.

Installed by the csdl.gpu_lab.idle_autostop role and run by a systemd timer:

    idle_check.py --config /etc/gpu_lab/idle.json            one check (the timer's service)
    idle_check.py --config /etc/gpu_lab/idle.json --status   the state as JSON, for status.yml
    idle_check.py --config /etc/gpu_lab/idle.json --watch-spot   the spot notice watcher (its service)

The host is *in use* while any of these held within the idle window:
  * a Jupyter kernel is busy, or a kernel or terminal had activity (Jupyter's REST API);
  * an interactive login (ssh with a terminal) saw input: the access time of its tty;
  * the GPU is busy (nvidia-smi utilization above a threshold), where nvidia-smi exists;
  * the 1-minute load average is above a threshold.
A check that fails counts as *in use* (a host is never stopped on a guess) and is recorded
as a failure, so the status playbook shows that auto-stop is not healthy.

After a whole window without use: a wall message, a grace period in which any use cancels
the stop, then `systemctl poweroff` (on EC2 this stops the instance: the disk stays). An
optional daily stop time stops the host whatever it is doing, after the same warning.

Every run prints one line with its decision and the reason to stdout: the journal
(`journalctl -t gpu_lab_idle`). The state (last use, last decision, failures, last stop)
is kept in a JSON file. Standard library only: it runs on the host's system Python 3.

On a Spot Instance, `--watch-spot` (a service of its own) asks the instance metadata (IMDSv2)
every few seconds for EC2's interruption notice (spot/instance-action) and, once per notice,
writes it to every logged-in terminal (wall) and to the journal at warning priority, so the
student has the two minutes to save. On an on-demand host it says so and ends; where there is
no metadata service (not EC2), or it errs, it counts the failures, logs the first and then
fewer (the 2nd, 4th, 8th...), and tries again later.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_VERSION = 1
UTMP_FILES = ("/run/utmp", "/var/run/utmp")
# glibc's struct utmp on Linux (x86_64 and aarch64 alike): 384 bytes.
UTMP_RECORD = struct.Struct("hi32s4s32s256shhiii4i20s")
USER_PROCESS = 7
HTTP_TIMEOUT = 10
NVIDIA_SMI_TIMEOUT = 30
# syslog priority prefixes understood by journald (SyslogLevelPrefix=yes, the default)
NOTICE, INFO, WARNING, ERR = "<5>", "<6>", "<4>", "<3>"


# --- the readings ------------------------------------------------------------------------

@dataclass
class Reading:
    """What one check saw: detail, as of now; active_at, when it last saw use (None: no use
    seen), and use, what that use was; failure, why the check could not tell (a failure
    counts as use now)."""

    check: str
    detail: str
    active_at: float | None = None
    use: str = ""
    failure: str | None = None


def _iso_to_epoch(value: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _ago(now: float, then: float | None) -> str:
    return "unknown" if then is None else f"{duration(now - then)} ago"


def clock(epoch: float) -> str:
    """A moment on the host's clock, for log lines and reasons."""
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def read_token(token_file: str) -> str:
    """The token from Jupyter's JSON config (IdentityProvider.token, or the older
    ServerApp/NotebookApp.token), or a file holding just the token."""
    text = Path(token_file).read_text().strip()
    try:
        config = json.loads(text)
    except ValueError:
        return text
    if not isinstance(config, dict):
        return ""
    for section in ("IdentityProvider", "ServerApp", "NotebookApp"):
        token = (config.get(section) or {}).get("token")
        if token:
            return str(token)
    return ""


def _jupyter_get(url: str, token: str) -> Any:
    # The URL is http://127.0.0.1:<port> from the role's config, never user input.
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
        return json.load(response)


def check_jupyter(config: dict[str, Any], now: float) -> list[Reading]:
    jupyter = config.get("jupyter") or {}
    if not jupyter.get("enabled"):
        return []
    url = str(jupyter["url"]).rstrip("/")
    try:
        token = read_token(jupyter["token_file"])
    except OSError as exc:
        return [Reading("jupyter", "", failure=f"cannot read the token file {jupyter['token_file']}: {exc.strerror}")]
    if not token:
        return [Reading("jupyter", "", failure=f"no token in {jupyter['token_file']}")]
    try:
        kernels = _jupyter_get(f"{url}/api/kernels", token)
    except urllib.error.HTTPError as exc:
        return [Reading("jupyter", "", failure=f"Jupyter at {url} answered {exc.code} {exc.reason} to /api/kernels")]
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Reading("jupyter", "", failure=f"Jupyter does not answer at {url}: {reason}")]
    try:
        terminals = _jupyter_get(f"{url}/api/terminals", token)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # 404: terminals are turned off in this Jupyter
            return [Reading("jupyter", "",
                            failure=f"Jupyter at {url} answered {exc.code} {exc.reason} to /api/terminals")]
        terminals = []
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Reading("jupyter", "", failure=f"Jupyter does not answer at {url}: {reason}")]

    readings = []
    for kernel in kernels:
        name = f"kernel {str(kernel.get('id', '?'))[:8]} ({kernel.get('name', '?')})"
        state = kernel.get("execution_state")
        if state in ("busy", "starting"):
            readings.append(Reading("jupyter", f"{name} is {state}", active_at=now, use=f"{name} {state}"))
            continue
        last = _iso_to_epoch(kernel.get("last_activity", ""))
        readings.append(Reading("jupyter", f"{name} {state}, last activity {_ago(now, last)}",
                                active_at=last, use=f"{name} activity"))
    for terminal in terminals:
        name = f"Jupyter terminal {terminal.get('name', '?')}"
        last = _iso_to_epoch(terminal.get("last_activity", ""))
        readings.append(Reading("jupyter", f"{name}, last activity {_ago(now, last)}",
                                active_at=last, use=f"{name} activity"))
    if not readings:
        readings.append(Reading("jupyter", "no kernels or terminals"))
    return readings


def login_ttys() -> list[tuple[str, str, str]] | None:
    """(tty, user, from where) of each interactive login in utmp; None without utmp."""
    for path in UTMP_FILES:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        logins = []
        for offset in range(0, len(data) - UTMP_RECORD.size + 1, UTMP_RECORD.size):
            fields = UTMP_RECORD.unpack_from(data, offset)
            if fields[0] != USER_PROCESS:
                continue
            line, user, host = (f.split(b"\0", 1)[0].decode(errors="replace")
                                for f in (fields[2], fields[4], fields[5]))
            if line:
                logins.append((line, user, host))
        return logins
    return None


def check_ttys(config: dict[str, Any], now: float) -> list[Reading]:
    """The kernel sets a terminal's access time when a program reads input from it
    (typing, in short; output sets only the modification time), to 8 s precision."""
    logins = login_ttys()
    if logins is None:  # no utmp on this host: every pseudo-terminal, owner as the user
        logins = [(f"pts/{p.name}", "", "") for p in Path("/dev/pts").glob("[0-9]*")]
    readings = []
    for line, user, host in logins:
        try:
            atime = os.stat(f"/dev/{line}").st_atime
        except OSError:
            continue  # the session ended while we looked
        who = f"{user or 'someone'} on {line}" + (f" from {host}" if host else "")
        readings.append(Reading("login", f"terminal of {who}: last input {_ago(now, atime)}", active_at=atime,
                                use=f"input on the terminal of {who}"))
    if not readings:
        readings.append(Reading("login", "no terminal logins"))
    return readings


def check_gpu(config: dict[str, Any], now: float) -> list[Reading]:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []  # no GPU driver here: nothing to look at, and nothing wrong
    threshold = float(config["gpu_threshold"])
    try:
        proc = subprocess.run(  # noqa: S603 (fixed arguments)
            [nvidia_smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Reading("gpu", "", failure=f"nvidia-smi failed: {exc}")]
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return [Reading("gpu", "", failure=f"nvidia-smi exited {proc.returncode}: {message[0] if message else ''}")]
    try:
        usage = [float(line) for line in proc.stdout.split() if line.strip()]
    except ValueError:
        return [Reading("gpu", "", failure=f"nvidia-smi gave no utilization: {proc.stdout.strip()[:80]!r}")]
    if not usage:
        return [Reading("gpu", "", failure="nvidia-smi listed no GPU")]
    busiest = max(usage)
    if busiest > threshold:
        return [Reading("gpu", f"GPU utilization {busiest:g}% > {threshold:g}%", active_at=now,
                        use=f"GPU utilization {busiest:g}%")]
    return [Reading("gpu", f"GPU utilization {busiest:g}% <= {threshold:g}%")]


def check_load(config: dict[str, Any], now: float) -> list[Reading]:
    threshold = float(config["load_threshold"])
    try:
        load = os.getloadavg()[0]
    except OSError as exc:
        return [Reading("load", "", failure=f"cannot read the load average: {exc}")]
    if load > threshold:
        return [Reading("load", f"load average {load:.2f} > {threshold:g}", active_at=now,
                        use=f"load average {load:.2f}")]
    return [Reading("load", f"load average {load:.2f} <= {threshold:g}")]


CHECKS = (check_jupyter, check_ttys, check_gpu, check_load)


def read_all(config: dict[str, Any], now: float) -> list[Reading]:
    readings = []
    for check in CHECKS:
        try:
            readings.extend(check(config, now))
        except Exception as exc:  # a bug in one check must not stop the others
            readings.append(Reading(check.__name__[len("check_"):], "", failure=f"check crashed: {exc!r}"))
    return readings


# --- the decision ------------------------------------------------------------------------

def daily_stop_due(daily_stop: str, timezone: str, now: float) -> float | None:
    """The most recent moment (epoch) at or before now that is daily_stop ("HH:MM" or
    "HH:MM:SS") on the clock of timezone ("" = the host's local time); None when off."""
    if not daily_stop:
        return None
    parts = [int(p) for p in daily_stop.split(":")] + [0]
    hour, minute, second = parts[0], parts[1], parts[2]
    if timezone:
        from zoneinfo import ZoneInfo  # Python 3.9+; only needed with a named zone

        zone = ZoneInfo(timezone)
        local_now = dt.datetime.fromtimestamp(now, zone)
        moment = local_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if moment > local_now:
            moment = (moment.replace(tzinfo=None) - dt.timedelta(days=1)).replace(tzinfo=zone)
        return moment.timestamp()
    # Naive local time: .timestamp() resolves it with the host's zone rules (mktime), DST included.
    local_now = dt.datetime.fromtimestamp(now)
    moment = local_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    if moment > local_now:
        moment -= dt.timedelta(days=1)
    return moment.timestamp()


def fresh_state(boot_id: str, now: float, previous: dict[str, Any]) -> dict[str, Any]:
    """A new boot (or a first run): the idle clock starts now; the last stop is kept."""
    return {
        "version": STATE_VERSION,
        "boot_id": boot_id,
        "armed_at": now,
        "daily_stop": None,
        "daily_done": None,
        "last_run": None,
        "last_in_use": now,
        "in_use": ["start of auto-stop (boot, or first check)"],
        "decision": "started",
        "reason": "",
        "failures": [],
        "failing_since": None,
        "warned_at": None,
        "last_stop": previous.get("last_stop"),
    }


def window_of(config: dict[str, Any]) -> float:
    return float(config.get("window_seconds") or 0)


def counted(readings: list[Reading], since: float) -> list[Reading]:
    """The readings that saw use after `since`, most recent first."""
    used = [r for r in readings if r.failure is None and r.active_at is not None and r.active_at > since]
    return sorted(used, key=lambda r: r.active_at or 0.0, reverse=True)


def account(state: dict[str, Any], readings: list[Reading], now: float) -> None:
    """Folds one round of readings into the state: the last use (and what it was), failures."""
    failures = [f"{r.check}: {r.failure}" for r in readings if r.failure]
    used = counted(readings, state["last_in_use"])
    if failures:
        state["last_in_use"] = now
        state["in_use"] = [f"{f} (a failed check counts as use)" for f in failures] + [r.use for r in used]
    elif used:
        state["last_in_use"] = max(r.active_at or 0.0 for r in used)
        state["in_use"] = [r.use for r in used]
    if failures and not state.get("failures"):
        state["failing_since"] = now
    elif not failures:
        state["failing_since"] = None
    state["failures"] = failures


def used_since(readings: list[Reading], since: float) -> list[str]:
    """What shows use after `since` (failures included: they count as use)."""
    return [r.detail for r in counted(readings, since)] + [f"{r.check}: {r.failure}" for r in readings if r.failure]


def now_summary(readings: list[Reading]) -> str:
    return "; ".join(r.detail for r in readings if r.detail and r.failure is None) or "nothing to look at"


def last_use(state: dict[str, Any]) -> str:
    return f"last use {clock(state['last_in_use'])}: {', '.join(state.get('in_use') or ['unknown'])}"


# --- side effects ------------------------------------------------------------------------

class Host:
    """What the checker does to the host. One place, so the decision logic stays pure."""

    def log(self, priority: str, message: str) -> None:
        print(f"{priority}{message}", flush=True)

    def wall(self, message: str) -> None:
        wall = shutil.which("wall")
        if wall is None:
            self.log(WARNING, "no `wall` on this host: logged-in users were not warned")
            return
        try:
            subprocess.run([wall], input=message, text=True, timeout=30, check=False,  # noqa: S603
                           capture_output=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log(WARNING, f"wall failed: {exc}")

    def poweroff(self) -> bool:
        systemctl = shutil.which("systemctl") or "/bin/systemctl"
        proc = subprocess.run([systemctl, "poweroff"], capture_output=True, text=True,  # noqa: S603
                              timeout=120, check=False)
        if proc.returncode != 0:
            self.log(ERR, f"systemctl poweroff exited {proc.returncode}: {proc.stderr.strip()}")
            return False
        return True

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def now(self) -> float:
        return time.time()


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def load_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: str, state: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, target)


# --- one run -----------------------------------------------------------------------------

def run_once(config: dict[str, Any], host: Host, current_boot: str) -> dict[str, Any]:
    """One timer tick: read, decide, and (after the warning and grace) power off.
    Returns the state as saved."""
    state_file = config["state_file"]
    previous = load_json(state_file)
    now = host.now()
    window = window_of(config)

    if previous.get("version") != STATE_VERSION or previous.get("boot_id") != current_boot:
        state = fresh_state(current_boot, now, previous)
    else:
        state = previous
    state["last_run"] = now
    state["window_seconds"] = window

    if window <= 0:
        state.update(decision="disabled", reason="auto-stop is disabled (idle window 0)", failures=[],
                     failing_since=None, warned_at=None)
        host.log(INFO, state["reason"])
        save_state(state_file, state)
        return state

    daily_stop = str(config.get("daily_stop") or "")
    timezone = str(config.get("timezone") or "")
    if state.get("daily_stop") != daily_stop or state.get("timezone") != timezone:
        # Set or changed now (or the first check since boot): only later moments count, so a
        # host started, or configured, at 23:30 with a 23:00 stop runs until tomorrow's. The
        # first check of a boot looks back one interval: a host started at 22:59:30 still
        # stops at 23:00 although its first check runs after that.
        first = state["decision"] == "started"
        armed_at = now - float(config.get("interval_seconds") or 60) if first else now
        state.update(daily_stop=daily_stop, timezone=timezone, armed_at=armed_at, daily_done=None)

    readings = read_all(config, now)
    account(state, readings, now)

    try:
        due = daily_stop_due(daily_stop, timezone, now)
    except Exception as exc:  # an unknown zone, no zoneinfo: never stop on a guess, say so
        due = None
        state["failures"].append(f"daily stop: cannot place {daily_stop} in time zone {timezone or 'local'}: {exc}")
    if due is not None and due > state["armed_at"] and due != state.get("daily_done"):
        reason = f"daily stop time {daily_stop} ({timezone or 'host time'}) reached at {clock(due)}"
        return stop(config, host, state, "daily", reason, due=due)

    idle = now - state["last_in_use"]
    if idle >= window:
        reason = (f"idle for {duration(idle)} (window {duration(window)}); {last_use(state)}; "
                  f"now: {now_summary(readings)}")
        return stop(config, host, state, "idle", reason)

    state["warned_at"] = None
    recent = counted(readings, now - window)
    if state["failures"]:
        state["decision"] = "in-use"
        state["reason"] = (f"a check failed, which counts as use (the host does not stop by itself while it "
                           f"fails): {'; '.join(state['failures'])}")
        host.log(WARNING, f"in use: {state['reason']}")
    elif recent:
        state["decision"] = "in-use"
        state["reason"] = (f"{'; '.join(r.detail for r in recent)} (stops after {duration(window)} without use)")
        host.log(INFO, f"in use: {state['reason']}")
    else:
        state["decision"] = "idle"
        state["reason"] = f"idle for {duration(idle)} of {duration(window)}; {last_use(state)}; now: " \
                          f"{now_summary(readings)}"
        host.log(INFO, f"idle: {state['reason']}")
    save_state(state_file, state)
    return state


def stop(config: dict[str, Any], host: Host, state: dict[str, Any], kind: str, reason: str,
         due: float | None = None) -> dict[str, Any]:
    """Warn, wait out the grace period (any use cancels an idle stop), power off."""
    state_file = config["state_file"]
    lab = config.get("lab", "gpu_lab")
    grace = float(config.get("grace_seconds") or 0)
    interval = float(config.get("interval_seconds") or 60)
    warned_at = host.now()
    state.update(decision="warned", reason=f"powering off in {duration(grace)}: {reason}", warned_at=warned_at)
    if due is not None:
        state["daily_done"] = due  # acted on, whatever happens next
    save_state(state_file, state)
    host.log(NOTICE, f"warning: {state['reason']}")
    if kind == "idle":
        cause = f"nobody has used it for {duration(window_of(config))}"
        hint = "Run a notebook cell or type in a terminal to keep it on."
    else:
        cause = f"its daily stop time {config.get('daily_stop')} has come"
        hint = "Save your work now; start the server again afterwards if you need it."
    host.wall(f"gpu_lab {lab}: this server powers off in {duration(grace)} because {cause}.\n{hint}\n"
              f"Why: journalctl -t gpu_lab_idle\n")

    end = warned_at + grace
    while True:
        remaining = end - host.now()
        if remaining > 0:
            host.sleep(min(interval, remaining))
        now = host.now()
        if kind == "idle":
            readings = read_all(config, now)
            account(state, readings, now)
            used = used_since(readings, warned_at)
            if used:
                state.update(decision="in-use", reason=f"power-off cancelled, in use again: {'; '.join(used)}",
                             warned_at=None, last_run=now)
                save_state(state_file, state)
                host.log(NOTICE, state["reason"])
                host.wall(f"gpu_lab {lab}: power-off cancelled, the server is in use again.\n")
                return state
        if now >= end:
            break

    now = host.now()
    state.update(decision="poweroff", reason=reason, last_run=now,
                 last_stop={"at": now, "kind": kind, "reason": reason, "last_in_use": state["last_in_use"],
                            "boot_id": state["boot_id"]})
    save_state(state_file, state)
    host.log(NOTICE, f"powering off: {reason}")
    if not host.poweroff():
        state["failures"] = [*state.get("failures", []), "poweroff: systemctl poweroff failed (see the journal)"]
        state.update(decision="error", reason="systemctl poweroff failed, so the host keeps running")
        save_state(state_file, state)
    return state


# --- status ------------------------------------------------------------------------------

STATUS_KEYS = ("enabled", "healthy", "installed", "reason", "last_decision", "failures", "failing_since",
               "idle_minutes", "window", "daily_stop", "timezone", "last_run", "last_stop", "timer_active",
               "spot_notice")


def status(config: dict[str, Any], now: float, timer_active: bool, current_boot: str) -> dict[str, Any]:
    """What the status playbook shows: enabled, healthy, and why (keys: STATUS_KEYS)."""
    result: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    result.update(enabled=False, healthy=False, installed=bool(config), failures=[], daily_stop="", timezone="",
                  timer_active=timer_active)
    if not config:
        result["reason"] = "auto-stop is not installed on this host"
        return result
    window = window_of(config)
    interval = float(config.get("interval_seconds") or 60)
    grace = float(config.get("grace_seconds") or 0)
    saved = load_json(config["state_file"])
    last_stop = saved.get("last_stop") if isinstance(saved.get("last_stop"), dict) else None
    state = saved if saved.get("boot_id") == current_boot else {}  # an earlier boot's says nothing of now
    result.update(
        enabled=window > 0,
        window=round(window / 60, 2),
        daily_stop=config.get("daily_stop") or "",
        timezone=config.get("timezone") or "",
        last_decision=state.get("decision"),
        failures=state.get("failures") or [],
        failing_since=_iso(state.get("failing_since")),
        idle_minutes=(round((now - state["last_in_use"]) / 60, 1) if state.get("last_in_use") and window > 0
                      else None),
        last_run=_iso(state.get("last_run")),
        last_stop=({**last_stop, "at": _iso(last_stop.get("at")), "last_in_use": _iso(last_stop.get("last_in_use"))}
                   if last_stop else None),
        spot_notice=spot_notice_status((config.get("spot") or {}).get("state_file"), current_boot),
    )
    # A run that warned waits in its grace period before it ends: allow for that.
    stale_after = 3 * interval + grace + 60
    if window <= 0:
        result["reason"] = "auto-stop is disabled (idle window 0): this host never stops by itself"
    elif not timer_active:
        result["reason"] = (f"the timer {config.get('timer', 'gpu_lab_idle.timer')} is not active: nothing checks "
                            f"whether the host is idle")
    elif not state.get("last_run"):
        result["reason"] = "no check has run since the host started"
    elif now - float(state["last_run"]) > stale_after:
        result["reason"] = (f"the last check ran {duration(now - float(state['last_run']))} ago (one every "
                            f"{interval:g} s expected): see journalctl -t gpu_lab_idle")
    elif result["failures"]:
        result["reason"] = ("checks fail, which counts as use, so the host does not stop by itself: "
                            + "; ".join(result["failures"]))
    else:
        result.update(healthy=True, reason=state.get("reason") or "")
    return result


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)):
        return None
    # dt.timezone.utc, not dt.UTC: the host's Python may be 3.10 (Ubuntu 22.04).
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


def timer_is_active(unit: str) -> bool:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    proc = subprocess.run([systemctl, "is-active", "--quiet", unit], check=False,  # noqa: S603
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.returncode == 0


# --- the spot interruption notice ----------------------------------------------------------

IMDS_URL = "http://169.254.169.254"
IMDS_TIMEOUT = 2
IMDS_TOKEN_TTL = 21600  # seconds, the most IMDSv2 gives
SPOT_STATE_VERSION = 1
SPOT_POLL_SECONDS = 5
SPOT_MAX_BACKOFF = 300  # between tries while it is not known whether this is a Spot Instance
_SPOT_FATES = {
    "stop": "It stops; its disk stays, and AWS starts it again when it has the capacity back.",
    "hibernate": "It hibernates; its memory and disk stay, and AWS resumes it when it has the capacity back.",
    "terminate": "It is terminated: what is on its disk is lost.",
}


class ImdsError(Exception):
    """The instance metadata did not answer, or not as documented."""


class Imds:
    """The instance metadata service, IMDSv2: a session token, then GETs with it."""

    def __init__(self, url: str = IMDS_URL, timeout: float = IMDS_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = ""
        self._token_until = 0.0
        # Never through a proxy (an http_proxy in the environment): the metadata is the host's own.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, method=method, headers=headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), ""
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out: not EC2, or IMDS off
            raise ImdsError(f"no instance metadata at {self.url}: {getattr(exc, 'reason', exc)}") from None

    def token(self) -> str:
        if self._token and time.monotonic() < self._token_until:
            return self._token
        status, body = self._request("PUT", "/latest/api/token",
                                     {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL)})
        if status != 200 or not body.strip():
            raise ImdsError(f"the instance metadata answered {status} to the token request")
        self._token, self._token_until = body.strip(), time.monotonic() + IMDS_TOKEN_TTL - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The metadata at path (under /latest/meta-data/); None where there is none (404)."""
        status = 0
        body = ""
        for _try in range(2):
            status, body = self._request("GET", f"/latest/meta-data/{path}",
                                         {"X-aws-ec2-metadata-token": self.token()})
            if status != 401:
                break
            self._token = ""  # expired, or the service restarted: once more with a new one
        if status == 200:
            return body
        if status == 404:
            return None
        raise ImdsError(f"the instance metadata answered {status} to {path}")


def parse_notice(text: str) -> dict[str, Any]:
    """spot/instance-action's JSON: {"action": "stop", "time": "2027-01-15T08:02:00Z"}."""
    try:
        notice = json.loads(text)
    except ValueError:
        raise ImdsError(f"spot/instance-action is not JSON: {text[:80]!r}") from None
    if not isinstance(notice, dict) or not notice.get("action"):
        raise ImdsError(f"spot/instance-action has no action: {text[:80]!r}")
    return notice


def spot_notice_message(lab: str, notice: dict[str, Any], now: float) -> str:
    """What the logged-in terminals are told."""
    when = _iso_to_epoch(str(notice.get("time") or ""))
    if when is None:
        at = "in about two minutes"
    else:
        left = when - now
        at = (f"at {dt.datetime.fromtimestamp(when, dt.timezone.utc):%H:%M:%S} UTC "  # noqa: UP017
              + (f"(in about {left:.0f} s)" if left >= 1 else "(now)"))
    action = str(notice.get("action"))
    fate = _SPOT_FATES.get(action, f"EC2's action: {action}.")
    return (f"gpu_lab {lab}: AWS is taking this spot GPU server back {at}: save your work now.\n{fate}\n"
            "Why: journalctl -t gpu_lab_idle\n")


def spot_notice_status(state_file: Any, current_boot: str) -> dict[str, Any] | None:
    """The last interruption notice the watcher told (None: none): when it came, and whether it
    came in this boot (else AWS stopped the host and started it again since)."""
    notice = load_json(str(state_file)).get("last_notice") if state_file else None
    if not isinstance(notice, dict):
        return None
    return {"time": notice.get("time"), "action": notice.get("action"), "told_at": _iso(notice.get("told_at")),
            "this_boot": notice.get("boot_id") == current_boot}


def fresh_spot_state(current_boot: str, previous: dict[str, Any]) -> dict[str, Any]:
    """The watcher's state at its start: kept within a boot (a restarted watcher does not tell a
    notice twice), new for a new boot."""
    if previous.get("version") == SPOT_STATE_VERSION and previous.get("boot_id") == current_boot:
        return previous
    # The last notice told stays across boots: the status view says AWS interrupted the host
    # and started it again by itself (a boot after the notice's).
    kept = previous.get("last_notice") if isinstance(previous.get("last_notice"), dict) else None
    return {"version": SPOT_STATE_VERSION, "boot_id": current_boot, "lifecycle": None, "errors": 0,
            "last_error": None, "notified": None, "notified_at": None, "last_notice": kept}


def spot_poll(config: dict[str, Any], host: Host, imds: Any, state: dict[str, Any]) -> float | None:
    """One look at the instance metadata: tells a new interruption notice (once). Returns the
    seconds until the next look, or None when there is nothing to watch (not a Spot Instance)."""
    every = float((config.get("spot") or {}).get("poll_seconds") or SPOT_POLL_SECONDS)
    try:
        if state.get("lifecycle") != "spot":
            lifecycle = imds.get("instance-life-cycle")
            if lifecycle is None or lifecycle.strip() != "spot":
                state["lifecycle"] = (lifecycle or "").strip() or "unknown"
                host.log(INFO, f"not a Spot Instance (instance-life-cycle: {state['lifecycle']}): no interruption "
                               "notice to watch for")
                return None
            state["lifecycle"] = "spot"
            host.log(INFO, f"a Spot Instance: watching for EC2's interruption notice every {every:g} s")
        text = imds.get("spot/instance-action")
        notice = parse_notice(text) if text is not None else None
    except ImdsError as exc:
        state["errors"] = int(state.get("errors") or 0) + 1
        state["last_error"] = str(exc)
        errors = state["errors"]
        if errors & (errors - 1) == 0:  # the 1st, 2nd, 4th, 8th...: the journal is not flooded
            host.log(WARNING, f"cannot read the instance metadata ({errors} failed in a row): {exc}")
        if state.get("lifecycle") == "spot":
            return every  # a notice gives two minutes: keep looking as often
        return min(every * 2 ** min(errors, 10), float(SPOT_MAX_BACKOFF))
    if state.get("errors"):
        host.log(INFO, f"the instance metadata answers again, after {state['errors']} failed tries")
        state.update(errors=0, last_error=None)
    if notice is not None:
        key = f"{notice.get('action')}@{notice.get('time')}"
        if key != state.get("notified"):
            now = host.now()
            message = spot_notice_message(str(config.get("lab", "gpu_lab")), notice, now)
            state.update(notified=key, notified_at=now, last_notice={
                "time": str(notice.get("time")), "action": str(notice.get("action")), "told_at": now,
                "boot_id": state.get("boot_id")})
            host.log(WARNING, f"spot interruption notice: {' '.join(message.splitlines()[:2])}")
            host.wall(message)
    return every


def watch_spot(config: dict[str, Any], host: Host, imds: Any, current_boot: str,
               polls: int | None = None) -> dict[str, Any]:
    """The watcher's loop (polls: at most that many looks, for tests). A look that crashes is
    counted like an unanswered one: the loop never ends on an error."""
    state_file = str((config.get("spot") or {}).get("state_file") or "")
    state = fresh_spot_state(current_boot, load_json(state_file) if state_file else {})
    done = 0
    while polls is None or done < polls:
        done += 1
        before = json.dumps(state, sort_keys=True)
        try:
            delay = spot_poll(config, host, imds, state)
        except Exception as exc:  # a bug: say it, count it, go on more slowly
            state["errors"] = int(state.get("errors") or 0) + 1
            state["last_error"] = f"crashed: {exc!r}"
            host.log(ERR, f"the spot notice watcher crashed ({state['errors']} failed in a row): {exc!r}")
            delay = float(SPOT_MAX_BACKOFF)
        if state_file and json.dumps(state, sort_keys=True) != before:
            try:
                save_state(state_file, state)
            except OSError as exc:
                host.log(WARNING, f"cannot save {state_file}: {exc}")
        if delay is None:
            break
        host.sleep(delay)
    return state


# --- main --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="/etc/gpu_lab/idle.json")
    parser.add_argument("--status", action="store_true", help="print the state as JSON and change nothing")
    parser.add_argument("--watch-spot", action="store_true", help="watch for a spot interruption notice (a loop)")
    args = parser.parse_args(argv)
    config = load_json(args.config)
    if args.watch_spot:
        spot = config.get("spot") or {}
        if not spot.get("enabled"):
            Host().log(INFO, "the spot notice watcher is off in the configuration")
            return 0
        watch_spot(config, Host(), Imds(str(spot.get("imds_url") or IMDS_URL)), boot_id())
        return 0
    if args.status:
        unit = str(config.get("timer") or "gpu_lab_idle.timer")
        print(json.dumps(status(config, time.time(), timer_is_active(unit), boot_id()), indent=2, sort_keys=True))
        return 0
    host = Host()
    if not config:
        host.log(ERR, f"no readable configuration at {args.config}: nothing checked, the host will not stop")
        return 1
    try:
        run_once(config, host, boot_id())
    except Exception as exc:
        host.log(ERR, f"the check crashed, so the host will not stop: {exc!r}\n{traceback.format_exc()}")
        with_failure = load_json(config.get("state_file", ""))
        if with_failure:
            with_failure["failures"] = [f"checker crashed: {exc!r}"]
            with_failure.update(decision="error", reason=f"the checker crashed: {exc!r}", last_run=time.time())
            try:
                save_state(config["state_file"], with_failure)
            except OSError:
                pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
