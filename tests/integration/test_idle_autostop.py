"""Idle auto-stop (roles/idle_autostop): the checker's decisions, locally, and the whole
thing on stand-in hosts of the emulated cloud.

The local tests import the role's checker (files/idle_check.py) and drive it with made-up
readings and a fake clock: no host, no sleeping.

The host tests share one lab of six stand-ins, configured by one ansible-playbook run
(csdl.gpu_lab.jupyter_server, then csdl.gpu_lab.idle_autostop) with a 15 s window, a check
every 2 s and a 2 s grace, so that the scenarios play out side by side:

    idle          nobody uses it: it powers itself off, and starts again with Jupyter answering
    notebook      a notebook cell busy past the window: stays up; stops once idle
    typing        an ssh terminal with input every 2 s: stays up; stops after the session
    jupyter_down  Jupyter stopped, so the check fails: stays up, status says unhealthy
    disabled      window 0: the timer is off, stays up, status says disabled
    daily         a 60 min window and a daily stop a few seconds ahead of the host's clock

A stand-in's load average is the test machine's (two cores shared by everything running),
not its own, so the hosts get a load threshold out of reach; the load check is tested
locally. The emulator stores CloudWatch alarms but never evaluates them: the alarm test
checks the alarm's definition only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from local_cloud.cloud import REPO, Cloud
from local_cloud.emulator import DLAMI_LINES, dlami_parameter_name
from tests.playbook import recap, run_playbook
from tests.standins import emulator_client, key_pair_file, standin_clients

CHECKER_PATH = REPO / "roles" / "idle_autostop" / "files" / "idle_check.py"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_lab_idle_check", CHECKER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


checker = _load_checker()
Reading = checker.Reading


# --- the checker, locally ---------------------------------------------------------------

class FakeHost:
    """The checker's side effects, recorded; a clock that sleeping moves forward."""

    def __init__(self, start: float) -> None:
        self.clock = start
        self.logs: list[str] = []
        self.walls: list[str] = []
        self.poweroffs = 0
        self.poweroff_works = True

    def log(self, priority: str, message: str) -> None:
        self.logs.append(message)

    def wall(self, message: str) -> None:
        self.walls.append(message)

    def poweroff(self) -> bool:
        self.poweroffs += 1
        return self.poweroff_works

    def sleep(self, seconds: float) -> None:
        self.clock += max(0.0, seconds)

    def now(self) -> float:
        return self.clock


@dataclass
class World:
    """What the fake checks see, as a function of the (fake) time."""

    readings: Callable[[float], list[Any]] = field(default=lambda now: [Reading("load", "load average 0.01 <= 0.5")])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World()
    monkeypatch.setattr(checker, "CHECKS", (lambda config, now: w.readings(now),))
    return w


T0 = 1_800_000_000.0  # a Friday in 2027, 08:00 UTC


def config_for(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = {"lab": "unit", "window_seconds": 600.0, "interval_seconds": 60, "grace_seconds": 120,
              "gpu_threshold": 10.0, "load_threshold": 0.5, "daily_stop": "", "timezone": "",
              "jupyter": {"enabled": False}, "state_file": str(tmp_path / "state.json"),
              "timer": "gpu_lab_idle.timer"}
    config.update(overrides)
    return config


def tick(config: dict[str, Any], host: FakeHost, boot: str = "boot-1") -> dict[str, Any]:
    """One timer run, then the clock moves on by one interval."""
    state = checker.run_once(config, host, boot)
    host.sleep(config["interval_seconds"])
    return state


def test_idle_host_is_warned_then_powered_off(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path)
    host = FakeHost(T0)
    decisions = []
    while host.poweroffs == 0 and host.clock < T0 + 3600:
        decisions.append(tick(config, host)["decision"])
    assert decisions[:10] == ["idle"] * 10  # window 600 s, a check every 60 s
    assert decisions[-1] == "poweroff"
    state = json.loads(Path(config["state_file"]).read_text())
    # Warned at the first check 600 s after the start, powered off after the 120 s grace.
    assert state["last_stop"]["at"] == T0 + 600 + 120
    assert state["last_stop"]["kind"] == "idle"
    assert "idle for 10.0 min (window 10.0 min)" in state["last_stop"]["reason"]
    assert len(host.walls) == 1 and "powers off in 2.0 min" in host.walls[0]
    assert any(line.startswith("powering off: idle for") for line in host.logs)


def test_use_in_the_grace_period_cancels_the_power_off(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path)
    host = FakeHost(T0)
    typed_at = T0 + 600 + 30  # someone reads the wall message and types
    world.readings = lambda now: ([Reading("login", "terminal of ubuntu on pts/0: last input", active_at=typed_at,
                                           use="input on the terminal of ubuntu on pts/0")] if now >= typed_at else [])
    states = [tick(config, host) for _ in range(12)]
    assert host.poweroffs == 0
    assert [s["decision"] for s in states][10] == "in-use"
    assert "power-off cancelled, in use again: terminal of ubuntu" in states[10]["reason"]
    assert len(host.walls) == 2 and "cancelled" in host.walls[1]
    assert states[-1]["last_in_use"] == typed_at


@pytest.mark.parametrize(("reading", "in_use"), [
    (Reading("jupyter", "kernel busy", active_at=T0, use="kernel busy"), True),
    (Reading("jupyter", "kernel idle", active_at=T0 - 500, use="kernel activity"), True),
    (Reading("jupyter", "kernel idle", active_at=T0 - 700, use="kernel activity"), False),
    (Reading("gpu", "", failure="nvidia-smi exited 9: driver mismatch"), True),
])
def test_what_counts_as_use_within_the_window(tmp_path: Path, world: World, reading: Any, in_use: bool) -> None:
    config = config_for(tmp_path)
    host = FakeHost(T0 - 900)
    world.readings = lambda now: []
    checker.run_once(config, host, "boot-1")  # started 15 min ago, nothing used since
    host.clock = T0
    world.readings = lambda now: [reading]
    state = checker.run_once(config, host, "boot-1")
    assert (host.poweroffs == 0) is in_use
    assert state["decision"] == ("in-use" if in_use else "poweroff")


def test_a_failing_check_keeps_the_host_up_and_status_unhealthy(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path)
    host = FakeHost(T0)
    down = "Jupyter does not answer at http://127.0.0.1:8888: [Errno 111] Connection refused"
    world.readings = lambda now: [Reading("jupyter", "", failure=down)] if now < T0 + 3600 else []
    for _ in range(60):
        tick(config, host)
    assert host.poweroffs == 0
    report = checker.status(config, host.clock, True, "boot-1")
    assert report["enabled"] is True and report["healthy"] is False
    assert down in report["reason"] and report["failures"] == [f"jupyter: {down}"]
    assert report["last_decision"] == "in-use"

    for _ in range(3):  # Jupyter answers again: healthy, and the idle clock runs from the last failure
        tick(config, host)
    report = checker.status(config, host.clock, True, "boot-1")
    assert report["healthy"] is True and report["failures"] == []
    while host.poweroffs == 0:
        tick(config, host)
    assert host.clock - (T0 + 3600) <= 600 + 60 + 120 + 60


def test_a_new_boot_restarts_the_idle_clock_and_keeps_the_last_stop(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path)
    host = FakeHost(T0)
    while host.poweroffs == 0:
        tick(config, host, boot="boot-1")
    host.clock += 3 * 86400  # stopped over the weekend, started again
    state = checker.run_once(config, host, "boot-2")
    assert state["decision"] == "idle" and host.poweroffs == 1
    assert state["last_stop"]["boot_id"] == "boot-1"
    report = checker.status(config, host.clock, True, "boot-2")
    assert report["last_stop"]["kind"] == "idle" and report["idle_minutes"] == 0.0
    # Before the first check of a boot, an earlier boot's state is not passed off as now's.
    fresh = checker.status(config, host.clock, True, "boot-3")
    assert fresh["healthy"] is False and fresh["last_decision"] is None
    assert fresh["reason"] == "no check has run since the host started"


def test_status_of_disabled_stale_and_missing(tmp_path: Path, world: World) -> None:
    host = FakeHost(T0)
    disabled = config_for(tmp_path, window_seconds=0.0)
    assert checker.run_once(disabled, host, "b")["decision"] == "disabled"
    report = checker.status(disabled, T0, False, "b")
    assert (report["enabled"], report["healthy"]) == (False, False) and "disabled" in report["reason"]

    config = config_for(tmp_path)
    checker.run_once(config, host, "b")
    assert checker.status(config, T0 + 60, True, "b")["healthy"] is True
    stale = checker.status(config, T0 + 3600, True, "b")
    assert stale["healthy"] is False and "the last check ran 60.0 min ago" in stale["reason"]
    off = checker.status(config, T0 + 60, False, "b")
    assert off["healthy"] is False and "gpu_lab_idle.timer is not active" in off["reason"]

    missing = checker.status({}, T0, False, "b")
    assert missing["installed"] is False and missing["reason"] == "auto-stop is not installed on this host"
    assert set(missing) == set(report) == set(checker.STATUS_KEYS)


def _utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()  # noqa: UP017


@pytest.mark.parametrize(("daily_stop", "zone", "now", "due"), [
    ("23:00", "Asia/Kolkata", "2027-01-10T18:00:00", "2027-01-10T17:30:00"),     # 23:30 IST: today's
    ("23:45", "Asia/Kolkata", "2027-01-10T18:00:00", "2027-01-09T18:15:00"),     # not yet: yesterday's
    ("23:00", "Europe/Berlin", "2027-03-28T22:30:00", "2027-03-28T21:00:00"),    # the day summer time starts
    ("06:30:15", "America/New_York", "2027-11-07T12:00:00", "2027-11-07T11:30:15"),  # ... and ends
])
def test_daily_stop_moment_in_a_time_zone(daily_stop: str, zone: str, now: str, due: str) -> None:
    assert checker.daily_stop_due(daily_stop, zone, _utc(now)) == _utc(due)


def test_daily_stop_fires_once_even_in_use_and_not_when_set_late(tmp_path: Path, world: World) -> None:
    host = FakeHost(T0)
    local = dt.datetime.fromtimestamp(T0)
    in_5_min = (local + dt.timedelta(minutes=5)).strftime("%H:%M")
    config = config_for(tmp_path, daily_stop=in_5_min, window_seconds=7200.0)
    world.readings = lambda now: [Reading("jupyter", "kernel busy", active_at=now, use="kernel busy")]
    states = [tick(config, host) for _ in range(7)]
    assert host.poweroffs == 1, "the daily stop is a hard stop: a busy kernel does not cancel it"
    stop = next(s for s in states if s["decision"] == "poweroff")
    assert stop["last_stop"]["kind"] == "daily" and f"daily stop time {in_5_min}" in stop["reason"]
    assert len(host.walls) == 1 and "daily stop time" in host.walls[0]

    # Started again the same day, after the stop time: runs on until tomorrow's.
    host.clock += 3600
    for _ in range(30):
        tick(config, host, boot="boot-2")
    assert host.poweroffs == 1

    # Configured at 08:00 with a 07:00 stop: the first one to count is tomorrow's.
    an_hour_ago = (local - dt.timedelta(hours=1)).strftime("%H:%M")
    late = config_for(tmp_path / "late", daily_stop=an_hour_ago, window_seconds=7200.0)
    (tmp_path / "late").mkdir()
    late_host = FakeHost(T0)
    for _ in range(10):
        tick(late, late_host)
    assert late_host.poweroffs == 0

    # Booted 30 s before the stop time, first check 30 s after it: it still stops.
    in_30_s = (local + dt.timedelta(seconds=30)).strftime("%H:%M:%S")
    close = config_for(tmp_path / "close", daily_stop=in_30_s, window_seconds=7200.0)
    (tmp_path / "close").mkdir()
    close_host = FakeHost(T0 + 60)
    tick(close, close_host, boot="boot-1")
    assert close_host.poweroffs == 1


def test_a_bad_time_zone_is_a_failure_not_a_stop(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path, daily_stop="07:00", timezone="Nowhere/Atlantis")
    host = FakeHost(T0)
    state = checker.run_once(config, host, "b")
    assert host.poweroffs == 0
    assert any("Nowhere/Atlantis" in f for f in state["failures"])


def test_poweroff_that_fails_is_recorded(tmp_path: Path, world: World) -> None:
    config = config_for(tmp_path, window_seconds=60.0, grace_seconds=0)
    host = FakeHost(T0)
    host.poweroff_works = False
    states = [tick(config, host) for _ in range(3)]
    assert states[1]["decision"] == "error"
    assert "poweroff: systemctl poweroff failed (see the journal)" in states[1]["failures"]


# --- the checks themselves, locally -----------------------------------------------------

def test_load_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checker.os, "getloadavg", lambda: (1.7, 0.4, 0.2))
    busy = checker.check_load({"load_threshold": 0.5}, T0)
    assert busy[0].active_at == T0 and busy[0].use == "load average 1.70"
    assert checker.check_load({"load_threshold": 2}, T0)[0].active_at is None


def test_gpu_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert checker.check_gpu({"gpu_threshold": 10}, T0) == []  # no driver: nothing to look at

    fake.write_text("#!/bin/sh\nprintf '3\\n57\\n'\n")
    fake.chmod(0o755)
    busy = checker.check_gpu({"gpu_threshold": 10}, T0)
    assert busy[0].active_at == T0 and "57%" in busy[0].detail
    assert checker.check_gpu({"gpu_threshold": 60}, T0)[0].active_at is None

    fake.write_text("#!/bin/sh\necho 'Failed to initialize NVML: Driver/library version mismatch' >&2\nexit 18\n")
    failed = checker.check_gpu({"gpu_threshold": 10}, T0)
    assert failed[0].failure == "nvidia-smi exited 18: Failed to initialize NVML: Driver/library version mismatch"


def test_token_file_forms(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(json.dumps({"IdentityProvider": {"token": "abc"}, "ServerApp": {"ip": "127.0.0.1"}}))
    assert checker.read_token(str(path)) == "abc"
    path.write_text(json.dumps({"ServerApp": {"token": "old"}}))
    assert checker.read_token(str(path)) == "old"
    path.write_text("plain-token\n")
    assert checker.read_token(str(path)) == "plain-token"
    path.write_text("{}")
    assert checker.read_token(str(path)) == ""


class _FakeJupyter(http.server.BaseHTTPRequestHandler):
    kernels: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "token sesame":
            self.send_error(403)
            return
        body = {"/api/kernels": self.kernels, "/api/terminals": []}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_jupyter_check(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeJupyter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "jupyter_server_config.json"
    token.write_text(json.dumps({"IdentityProvider": {"token": "sesame"}}))
    config = {"jupyter": {"enabled": True, "url": f"http://127.0.0.1:{server.server_address[1]}",
                          "token_file": str(token)}}
    try:
        _FakeJupyter.kernels = [
            {"id": "k1", "name": "python3", "execution_state": "busy", "last_activity": "2027-01-15T08:00:00Z"},
            {"id": "k2", "name": "python3", "execution_state": "idle", "last_activity": "2027-01-15T07:40:00.5Z"},
        ]
        busy, idle = checker.check_jupyter(config, T0)
        assert busy.active_at == T0 and busy.detail == "kernel k1 (python3) is busy"
        assert idle.active_at == _utc("2027-01-15T07:40:00.500000")

        _FakeJupyter.kernels = []
        assert checker.check_jupyter(config, T0)[0].detail == "no kernels or terminals"

        token.write_text(json.dumps({"IdentityProvider": {"token": "wrong"}}))
        assert "answered 403" in checker.check_jupyter(config, T0)[0].failure
    finally:
        server.shutdown()
        server.server_close()
    token.write_text(json.dumps({"IdentityProvider": {"token": "sesame"}}))
    assert "does not answer" in checker.check_jupyter(config, T0)[0].failure
    token.unlink()
    assert "cannot read the token file" in checker.check_jupyter(config, T0)[0].failure


# --- on stand-in hosts ------------------------------------------------------------------

WINDOW, INTERVAL, GRACE = 15, 2, 2
# The time a check takes, the timer's 1 s accuracy, a poweroff, the controller noticing it.
SLACK = 6
TTY_PRECISION = 8  # the kernel updates a terminal's access time in 8 s steps
BUSY_SECONDS = 30  # twice the window
TYPING_SECONDS = 30
# The daily stop time is this far ahead when the role is re-run to set it: the re-run
# took over 20 s (2026-12-04) while other test runs loaded the machine, and a time set too
# late never fires. The tests before test_daily_stop_time take longer than this anyway.
DAILY_LEAD = 45

COMMON_VARS = {
    "idle_autostop_window_minutes": WINDOW / 60,
    "idle_autostop_interval": INTERVAL,
    "idle_autostop_grace_seconds": GRACE,
    "idle_autostop_load_threshold": 1000,  # see the module docstring
}
# Jupyter where the scenario needs it (it is the slow part of the set-up); elsewhere the
# auto-stop runs with its Jupyter check off.
SCENARIOS: dict[str, dict[str, Any]] = {
    "idle": {"idle_test_jupyter": True},
    "notebook": {"idle_test_jupyter": True},
    "jupyter_down": {"idle_test_jupyter": True},
    "typing": {"idle_autostop_jupyter": False},
    "disabled": {"idle_autostop_jupyter": False, "idle_autostop_window_minutes": 0},
    "daily": {"idle_autostop_jupyter": False, "idle_autostop_window_minutes": 60},
}

SITE = """\
- name: Lab hosts with Jupyter and the idle auto-stop
  hosts: all
  gather_facts: false
  tasks:
    - name: Run Jupyter
      ansible.builtin.include_role:
        name: csdl.gpu_lab.jupyter_server
      when: idle_test_jupyter | default(false)

    - name: Apply the idle auto-stop
      ansible.builtin.include_role:
        name: csdl.gpu_lab.idle_autostop
"""

STATUS = """\
- name: Read the auto-stop's status
  hosts: all
  gather_facts: false
  tasks:
    - name: Run the status entry point
      ansible.builtin.include_role:
        name: csdl.gpu_lab.idle_autostop
        tasks_from: status

    - name: Keep it for the test
      ansible.builtin.copy:
        content: "{{ idle_autostop_status | to_json }}"
        dest: "{{ idle_test_out }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
"""

# Runs in the guest with the DLAMI venv's Python: starts a kernel through Jupyter's REST
# API, sends it a cell that sleeps, waits until the kernel says busy, and leaves it running.
BUSY_KERNEL = """\
import asyncio, json, sys, urllib.request, uuid
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

config = json.load(open("/home/ubuntu/.jupyter/jupyter_server_config.json"))
auth = {"Authorization": "token " + config["IdentityProvider"]["token"]}
base = "127.0.0.1:8888"
request = urllib.request.Request(f"http://{base}/api/kernels", data=b"{}", method="POST",
                                 headers={**auth, "Content-Type": "application/json"})
kernel = json.load(urllib.request.urlopen(request))


async def run_cell(code):
    ws = await websocket_connect(HTTPRequest(f"ws://{base}/api/kernels/{kernel['id']}/channels", headers=auth))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "student",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    while True:
        msg = json.loads(await ws.read_message())
        if (msg.get("msg_type") == "status" and msg["parent_header"].get("msg_id") == msg_id
                and msg["content"]["execution_state"] == "busy"):
            break
    ws.close()


asyncio.run(run_cell(f"import time; time.sleep({float(sys.argv[1])})"))
print(kernel["id"])
"""


@dataclass
class LabHost:
    name: str
    instance_id: str
    ip: str
    allocation_id: str


class Watch(threading.Thread):
    """Notes when each instance is first seen stopped (the scenarios run side by side,
    the tests one after the other), and reads the checker's state at chosen moments."""

    def __init__(self, ec2: Any, hosts: dict[str, LabHost]) -> None:
        super().__init__(name="idle-watch", daemon=True)
        self.ec2 = ec2
        self.hosts = hosts
        self.stopped_at: dict[str, float] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.timers: list[threading.Timer] = []
        self.done = threading.Event()

    def run(self) -> None:
        names = {h.instance_id: n for n, h in self.hosts.items()}
        while not self.done.wait(0.25):
            with contextlib.suppress(Exception):  # the emulator going away at the end
                reservations = self.ec2.describe_instances(InstanceIds=list(names))["Reservations"]
                for instance in (i for r in reservations for i in r["Instances"]):
                    name = names[instance["InstanceId"]]
                    if instance["State"]["Name"] == "stopped" and name not in self.stopped_at:
                        self.stopped_at[name] = time.time()

    def snapshot_at(self, when: float, name: str, read: Callable[[], dict[str, Any]]) -> None:
        def take() -> None:
            with contextlib.suppress(Exception):
                self.snapshots[name] = read()

        timer = threading.Timer(max(0.0, when - time.time()), take)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def stop(self) -> None:
        self.done.set()
        for timer in self.timers:
            timer.cancel()
        self.join(timeout=5)


@dataclass
class Lab:
    cloud: Cloud
    ec2: Any
    key: Path
    known_hosts: Path
    home: Path
    workdir: Path
    hosts: dict[str, LabHost]
    kicked: dict[str, float] = field(default_factory=dict)  # scenario -> when its activity started
    daily_stop: tuple[float, str] = (0.0, "")  # (epoch, "HH:MM:SS" on the host's clock)
    typing: threading.Thread | None = None
    watch: Watch | None = None

    def ssh_options(self) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def ssh(self, name: str, command: str, stdin: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ssh", *self.ssh_options(), f"ubuntu@{self.hosts[name].ip}", command],
                              input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {name} {command!r} exited {proc.returncode}: {proc.stderr}")
        return proc

    def playbook(self, text: str, *args: str, **extra_vars: Any) -> subprocess.CompletedProcess[str]:
        path = self.workdir / f"play-{uuid.uuid4().hex[:6]}"
        path.with_suffix(".yml").write_text(text)
        # Short-lived ssh masters: nothing of this test lingers after it.
        env = {**self.cloud.env(), "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=10s"}
        cmd_args = ["-i", str(self.workdir / "inventory.json"), *args]
        for key, value in extra_vars.items():
            cmd_args += ["-e", json.dumps({key: value})]
        proc = run_playbook(str(path), env, self.home, None, *cmd_args, timeout=300)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        return proc

    def state(self, name: str) -> str:
        return self.ec2.describe_instances(InstanceIds=[self.hosts[name].instance_id])[
            "Reservations"][0]["Instances"][0]["State"]["Name"]

    def wait_stopped(self, name: str, deadline: float) -> float:
        """When the instance was first seen stopped; fails if that is not so by `deadline`."""
        assert self.watch is not None
        while name not in self.watch.stopped_at:
            assert time.time() < deadline, f"{name} is still {self.state(name)} {time.time() - deadline:.0f} s " \
                                           f"past its deadline"
            time.sleep(0.25)
        return self.watch.stopped_at[name]

    def stays_up(self, name: str, until: float) -> None:
        while time.time() < until:
            assert self.state(name) == "running", f"{name} stopped {until - time.time():.0f} s too early"
            time.sleep(0.5)

    def start_again(self, name: str) -> None:
        self.ec2.start_instances(InstanceIds=[self.hosts[name].instance_id])
        self.cloud.controller.wait_until(self.hosts[name].instance_id, "booted", timeout=30)

    def checker_state(self, name: str) -> dict[str, Any]:
        return json.loads(self.ssh(name, "cat /var/lib/gpu_lab/idle_state.json").stdout)

    def status_here(self, name: str) -> dict[str, Any]:
        """What the status entry point runs, run directly."""
        out = self.ssh(name, "sudo python3 /usr/local/lib/gpu_lab/idle_check.py --status").stdout
        return json.loads(out)


def _launch(cloud: Cloud, ec2: Any, ssm: Any, key_name: str, count: int) -> list[tuple[str, str, str]]:
    image = ssm.get_parameter(Name=dlami_parameter_name(DLAMI_LINES[0]))["Parameter"]["Value"]
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    instances = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="g6.xlarge",
                                  KeyName=key_name, SubnetId=subnet,
                                  InstanceInitiatedShutdownBehavior="stop")["Instances"]
    made = []
    for instance in instances:
        address = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(InstanceId=instance["InstanceId"], AllocationId=address["AllocationId"])
        made.append((instance["InstanceId"], address["PublicIp"], address["AllocationId"]))
    for instance_id, _, _ in made:
        cloud.controller.wait_until(instance_id, "booted", timeout=60)
    return made


def _type_into_a_terminal(lab: Lab, name: str, seconds: float) -> None:
    """An ssh session with a terminal (ssh -tt), typing a line every 2 s, then logging out."""
    proc = subprocess.Popen(["ssh", "-tt", *lab.ssh_options(), f"ubuntu@{lab.hosts[name].ip}", "cat >/dev/null"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        end = time.time() + seconds
        while time.time() < end and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.write("print('hello')\n")
            proc.stdin.flush()
            time.sleep(2)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def lab(cloud_session: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Six stand-ins with the auto-stop, each with its scenario under way."""
    ec2, ssm = standin_clients(cloud_session)
    workdir = tmp_path_factory.mktemp("idle_lab")
    key = key_pair_file(ec2, workdir, "idle-lab")
    lab = Lab(cloud_session, ec2, key, workdir / "known_hosts", workdir / "home", workdir, {})
    try:
        for name, (iid, ip, alloc) in zip(SCENARIOS, _launch(cloud_session, ec2, ssm, "idle-lab", len(SCENARIOS)),
                                          strict=True):
            lab.hosts[name] = LabHost(name, iid, ip, alloc)
        ssh_args = " ".join(lab.ssh_options()[2:])  # without -F /dev/null: Ansible's own ssh config stays
        inventory = {"all": {"hosts": {
            name: {"ansible_host": h.ip, "ansible_user": "ubuntu", "ansible_ssh_common_args": ssh_args,
                   "jupyter_server_lab_name": name, "idle_autostop_lab_name": name,
                   **COMMON_VARS, **SCENARIOS[name]}
            for name, h in lab.hosts.items()}}}
        (workdir / "inventory.json").write_text(json.dumps(inventory, indent=2))
        started = time.monotonic()
        lab.playbook(SITE)
        print(f"\n[idle lab] six hosts configured in {time.monotonic() - started:.0f} s", file=sys.stderr)
        lab.watch = Watch(emulator_client(cloud_session, "ec2"), lab.hosts)
        lab.watch.start()

        lab.kicked["idle"] = time.time()
        lab.ssh("notebook", f"/opt/pytorch/bin/python - {BUSY_SECONDS}", stdin=BUSY_KERNEL)
        lab.kicked["notebook"] = time.time()
        lab.watch.snapshot_at(lab.kicked["notebook"] + BUSY_SECONDS - 4, "notebook",
                              lambda: lab.checker_state("notebook"))
        lab.typing = threading.Thread(target=_type_into_a_terminal, args=(lab, "typing", TYPING_SECONDS), daemon=True)
        lab.typing.start()
        lab.kicked["typing"] = time.time()
        lab.watch.snapshot_at(lab.kicked["typing"] + TYPING_SECONDS - 4, "typing", lambda: lab.checker_state("typing"))
        lab.ssh("jupyter_down", "sudo systemctl stop jupyter.service")
        lab.kicked["jupyter_down"] = time.time()

        # The daily stop: DAILY_LEAD s ahead of the host's clock, set by a re-run of the role.
        stop_at = int(lab.ssh("daily", "date +%s").stdout) + DAILY_LEAD
        stop_time = lab.ssh("daily", f"date -d @{stop_at} +%H:%M:%S").stdout.strip()
        lab.playbook(SITE, "--limit", "daily", idle_autostop_daily_stop=stop_time)
        assert time.time() < stop_at - 2, "the role's re-run took too long for this test's daily stop time"
        lab.daily_stop = (stop_at, stop_time)
        yield lab
    finally:
        if lab.typing is not None:
            lab.typing.join(timeout=TYPING_SECONDS + 15)
        if lab.watch is not None:
            lab.watch.stop()
        for h in lab.hosts.values():  # release (disassociating first) before terminating, as on AWS
            with contextlib.suppress(Exception):
                for address in ec2.describe_addresses(AllocationIds=[h.allocation_id])["Addresses"]:
                    if address.get("AssociationId"):
                        ec2.disassociate_address(AssociationId=address["AssociationId"])
                ec2.release_address(AllocationId=h.allocation_id)
        if lab.hosts:
            ec2.terminate_instances(InstanceIds=[h.instance_id for h in lab.hosts.values()])
        ec2.delete_key_pair(KeyName="idle-lab")
        cloud_session.controller.wait_settled()


@pytest.fixture(scope="module")
def statuses(lab: Lab) -> dict[str, dict[str, Any]]:
    """The status entry point's idle_autostop_status of the two hosts that stay up, once
    the time in which they would have stopped has passed."""
    out = lab.workdir / "status"
    out.mkdir()
    lab.stays_up("jupyter_down", lab.kicked["jupyter_down"] + WINDOW + INTERVAL + GRACE + SLACK)
    lab.playbook(STATUS, "--limit", "jupyter_down,disabled", idle_test_out=str(out))
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


@pytest.mark.hosts
def test_nobody_using_it_powers_off_and_starts_again(lab: Lab) -> None:
    stopped_at = lab.wait_stopped("idle", lab.kicked["idle"] + WINDOW + INTERVAL + GRACE + SLACK + 5)
    instance = lab.ec2.describe_instances(InstanceIds=[lab.hosts["idle"].instance_id])["Reservations"][0][
        "Instances"][0]
    assert instance["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"  # stopped, not terminated

    lab.start_again("idle")
    token = (lab.home / ".gpu_lab" / "idle" / "jupyter_token").read_text().strip()
    # The token goes through stdin into a private file, never onto a command line.
    wait_for_jupyter = ("umask 077; cat > /tmp/auth; for i in $(seq 60); do c=$(curl -s -o /dev/null "
                        "-w '%{http_code}' -H @/tmp/auth http://127.0.0.1:8888/api/status); "
                        "[ \"$c\" = 200 ] && break; sleep 0.25; done; rm -f /tmp/auth; echo $c")
    code = lab.ssh("idle", wait_for_jupyter, stdin=f"Authorization: token {token}\n").stdout.strip()
    assert code == "200", "Jupyter does not answer after the start"

    status = lab.status_here("idle")
    last = status["last_stop"]
    assert last["kind"] == "idle" and last["reason"].startswith("idle for")
    off_at = dt.datetime.fromisoformat(last["at"]).timestamp()
    idle_for = off_at - dt.datetime.fromisoformat(last["last_in_use"]).timestamp()  # (whole seconds)
    assert WINDOW + GRACE - 1 <= idle_for <= WINDOW + INTERVAL + GRACE + SLACK, f"off after {idle_for:.0f} s idle"
    assert stopped_at - off_at < SLACK
    # "Why did my server stop?": the previous boot's journal says it.
    journal = lab.ssh("idle", "sudo journalctl -b -1 -t gpu_lab_idle --no-pager -o cat").stdout
    assert "warning: powering off in 2 s: idle for" in journal
    assert "powering off: idle for" in journal.splitlines()[-1]


@pytest.mark.hosts
def test_a_busy_notebook_cell_keeps_it_up_until_idle(lab: Lab) -> None:
    busy_until = lab.kicked["notebook"] + BUSY_SECONDS
    stopped_at = lab.wait_stopped("notebook", busy_until + WINDOW + INTERVAL + GRACE + SLACK)
    assert stopped_at > busy_until + WINDOW, "stopped while the cell ran, or before a window had passed"
    assert lab.watch is not None
    during = lab.watch.snapshots["notebook"]
    assert during["decision"] == "in-use" and "(python3) is busy" in during["reason"], during


@pytest.mark.hosts
def test_typing_in_an_ssh_terminal_keeps_it_up(lab: Lab) -> None:
    typing_until = lab.kicked["typing"] + TYPING_SECONDS
    stopped_at = lab.wait_stopped("typing", typing_until + TTY_PRECISION + WINDOW + INTERVAL + GRACE + SLACK)
    # The last key at typing_until - 2, seen up to TTY_PRECISION s late: never before this.
    assert stopped_at > typing_until - 2 - TTY_PRECISION + WINDOW, "stopped while somebody was typing"
    assert lab.watch is not None
    during = lab.watch.snapshots["typing"]
    assert during["decision"] == "in-use" and "terminal of ubuntu on pts/" in during["reason"], during


@pytest.mark.hosts
def test_jupyter_down_keeps_it_up_and_status_says_why(lab: Lab, statuses: dict[str, dict[str, Any]]) -> None:
    assert lab.state("jupyter_down") == "running"
    status = statuses["jupyter_down"]
    assert status["enabled"] is True and status["healthy"] is False
    assert status["last_decision"] == "in-use"
    assert status["failures"] and "Jupyter does not answer at http://127.0.0.1:8888" in status["reason"]
    assert status["timer_active"] is True


@pytest.mark.hosts
def test_disabled_stays_up_and_status_says_so(lab: Lab, statuses: dict[str, dict[str, Any]]) -> None:
    assert lab.state("disabled") == "running"
    status = statuses["disabled"]
    assert (status["enabled"], status["healthy"], status["timer_active"]) == (False, False, False)
    assert "disabled" in status["reason"]
    timer = lab.ssh("disabled", "systemctl is-enabled gpu_lab_idle.timer; systemctl is-active gpu_lab_idle.timer",
                    check=False).stdout.split()
    assert timer == ["disabled", "inactive"]


@pytest.mark.hosts
def test_daily_stop_time(lab: Lab) -> None:
    stop_at, stop_time = lab.daily_stop
    stopped_at = lab.wait_stopped("daily", stop_at + INTERVAL + GRACE + SLACK)
    assert stopped_at >= stop_at + GRACE - 1, "stopped before its time"

    # Started again after the stop time: it runs on (until tomorrow's).
    lab.start_again("daily")
    lab.stays_up("daily", time.time() + 3 * INTERVAL + 2)
    status = lab.status_here("daily")
    assert status["last_stop"]["kind"] == "daily"
    assert f"daily stop time {stop_time} (host time)" in status["last_stop"]["reason"]
    assert status["last_decision"] in ("idle", "in-use"), status


# --- the CloudWatch backstop (emulator only) ---------------------------------------------

ALARM = """\
- name: The idle-stop alarm
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Apply the alarm entry point
      ansible.builtin.include_role:
        name: csdl.gpu_lab.idle_autostop
        tasks_from: alarm
"""


def test_cloudwatch_alarm_definition(cloud_session: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    """Created, updated, removed with the lab. The emulator never evaluates alarms: this
    checks what AWS would act on (metric, threshold, periods, the stop action), not that
    it fires."""
    play = tmp_path / "alarm"
    play.with_suffix(".yml").write_text(ALARM)
    env = cloud_session.env()
    common = ["-i", "localhost,", "-e", json.dumps({"idle_autostop_lab_name": "alarmlab",
                                                    "idle_autostop_region": "eu-west-1",
                                                    "idle_autostop_instance_id": "i-0123456789abcdef0"})]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_playbook(str(play), env, tmp_path / "home", None, *common, *args, timeout=120)

    def changed(proc: subprocess.CompletedProcess[str]) -> int:
        assert proc.returncode == 0, proc.stdout[-3000:]
        return recap(proc.stdout)["changed"]

    cloudwatch = aws("cloudwatch", region="eu-west-1")
    assert changed(run("-e", "idle_autostop_alarm=false")) == 0  # off by default: nothing to remove
    assert changed(run("-e", "idle_autostop_alarm=true")) == 1
    assert changed(run("-e", "idle_autostop_alarm=true")) == 0
    alarm = cloudwatch.describe_alarms(AlarmNames=["alarmlab-idle-stop"])["MetricAlarms"][0]
    assert {k: alarm[k] for k in ("Namespace", "MetricName", "Statistic", "ComparisonOperator", "Threshold",
                                   "Period", "EvaluationPeriods", "TreatMissingData", "AlarmActions")} == {
        "Namespace": "AWS/EC2", "MetricName": "CPUUtilization", "Statistic": "Average",
        "ComparisonOperator": "LessThanThreshold", "Threshold": 2.0, "Period": 300, "EvaluationPeriods": 24,
        "TreatMissingData": "notBreaching", "AlarmActions": ["arn:aws:automate:eu-west-1:ec2:stop"]}
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123456789abcdef0"}]

    assert changed(run("-e", "idle_autostop_alarm=true", "-e", "idle_autostop_alarm_minutes=60")) == 1
    assert cloudwatch.describe_alarms(AlarmNames=["alarmlab-idle-stop"])["MetricAlarms"][0]["EvaluationPeriods"] == 12

    assert changed(run("-e", "idle_autostop_alarm=true", "-e", "idle_autostop_alarm_state=absent")) == 1
    assert cloudwatch.describe_alarms(AlarmNames=["alarmlab-idle-stop"])["MetricAlarms"] == []

    refused = run("-e", "idle_autostop_alarm=true", "-e", "idle_autostop_alarm_minutes=7")
    assert refused.returncode != 0 and "a multiple of 5" in refused.stdout
    missing = run("-e", "idle_autostop_alarm=true", "-e", "idle_autostop_instance_id=")
    assert missing.returncode != 0 and "the instance id (i-...)" in missing.stdout
