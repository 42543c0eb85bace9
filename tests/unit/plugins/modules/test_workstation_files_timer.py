"""csdl.gpu_lab.workstation_files' daily shelve timer (shelve_timer), on a throwaway home: the
script, the systemd units and the LaunchAgent byte for byte (no secret ever written), the plan
(written when on, a second run unchanged, removed when off or absent, the undo record naming
its files), the note of a home that is not the login one, the warning about credentials that
are only environment variables, and what the module asks the service manager (a recording
runner: no user manager is started by a test).
"""

from __future__ import annotations

import os
import plistlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.collection import load
from tests.unit.plugins.modules.test_workstation_files import call, tree
from tests.unit.plugins.modules.test_workstation_files import lab_args as base_lab_args

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"  # noqa: S105 - a fake one
STATUS = "/venv/bin/ansible-playbook -i /p/inventories/csdl /p/status.yml"
ENV = {"AWS_PROFILE": "course", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
       "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:5001", "ANSIBLE_CONFIG": "/p/ansible.cfg",
       "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": SECRET + "session",
       "AWS_REGION": "", "PATH": "/usr/bin", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def module() -> ModuleType:
    return load("modules.workstation_files")


@pytest.fixture(scope="module")
def ws() -> ModuleType:
    return load("module_utils.workstation")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".bashrc").write_text("# my bashrc\n")
    (home / ".bashrc").chmod(0o644)
    key = home / ".ssh" / "csdl-server.pem"
    key.write_text("not a real key\n")
    key.chmod(0o400)
    return home


def lab_args(home: Path, port: int, **more: Any) -> dict[str, Any]:
    """test_workstation_files' lab, with the timer on."""
    return base_lab_args(home, port, commands={"start": "ap start.yml", "stop": "ap stop.yml", "status": STATUS},
                         shelve_timer=True, timer_environment=ENV) | more


def units(home: Path) -> Path:
    return home / ".config" / "systemd" / "user"


# --- What the files hold ------------------------------------------------------------------

def test_the_script_keeps_only_the_non_secret_settings(ws: ModuleType) -> None:
    w = ws.Wanted(lab="csdl", home="/home/me", commands={"status": STATUS}, run_dir="/home/me/my course")
    files = ws.TimerFiles("csdl", "/home/me", "Linux")
    kept = ws.timer_environment(ENV)
    assert kept == {"ANSIBLE_CONFIG": "/p/ansible.cfg", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:5001",
                    "AWS_PROFILE": "course"}
    assert ws.render_shelve_script(w, files, kept) == (
        "#!/bin/sh\n"
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        "# The csdl lab's daily shelve check (systemd: gpu-lab-csdl-shelve.timer): what csdl-status runs. The lab's\n"
        "# status shelves it once it has been stopped for its gpu_lab_shelve_after_days days. No AWS\n"
        "# secret here: the credentials come from the profile or the shared credentials file.\n"
        "export ANSIBLE_CONFIG=/p/ansible.cfg\n"
        "export AWS_DEFAULT_REGION=us-east-1\n"
        "export AWS_ENDPOINT_URL=http://127.0.0.1:5000\n"
        "export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:5001\n"
        "export AWS_PROFILE=course\n"
        "export HOME=/home/me\n"
        f"cd '/home/me/my course' && exec env {STATUS}\n"
    )


def test_an_installed_collections_status_command_runs_through_env(ws: ModuleType, tmp_path: Path) -> None:
    """`exec NAME=value cmd` would look for a program called NAME=value: `exec env` takes it."""
    out = tmp_path / "out"
    command = f"GPU_LAB_PROBE=from-the-command sh -c 'echo \"$GPU_LAB_PROBE $HOME\" > {out}'"
    w = ws.Wanted(lab="csdl", home=str(tmp_path), commands={"status": command}, run_dir=str(tmp_path))
    script = tmp_path / "shelve-check.sh"
    script.write_text(ws.render_shelve_script(w, ws.TimerFiles("csdl", str(tmp_path), "Linux"), {}))
    assert os.system(f"env -i PATH=/usr/bin:/bin /bin/sh {script}") == 0  # noqa: S605 - a fixed test command
    assert out.read_text() == f"from-the-command {tmp_path}\n"


def test_the_systemd_units(ws: ModuleType) -> None:
    w = ws.Wanted(lab="csdl", home="/home/me 2")
    files = ws.TimerFiles("csdl", "/home/me 2", "Linux")
    assert ws.render_shelve_service(w, files) == (
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        "[Unit]\n"
        "Description=gpu_lab: shelve the csdl lab if it has been stopped too long (its status)\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        'ExecStart=/bin/sh "/home/me 2/.gpu_lab/csdl/shelve-check.sh"\n'
    )
    timer = ws.render_shelve_timer(w)
    for line in ("[Timer]", "OnCalendar=daily", "Persistent=true", "RandomizedDelaySec=1h", "[Install]",
                 "WantedBy=timers.target"):
        assert line in timer.splitlines()
    assert (files.service, files.timer, files.link) == (
        "/home/me 2/.config/systemd/user/gpu-lab-csdl-shelve.service",
        "/home/me 2/.config/systemd/user/gpu-lab-csdl-shelve.timer",
        "/home/me 2/.config/systemd/user/timers.target.wants/gpu-lab-csdl-shelve.timer")
    assert ws.systemd_quote("/a/100%/$x") == "/a/100%%/$$x"


def test_the_launch_agent(ws: ModuleType) -> None:
    files = ws.TimerFiles("csdl", "/Users/me", "Darwin")
    assert files.plist == "/Users/me/Library/LaunchAgents/io.github.csdl.gpu-lab.csdl.shelve.plist"
    agent = plistlib.loads(ws.render_shelve_plist(files).encode())
    assert agent == {"Label": "io.github.csdl.gpu-lab.csdl.shelve",
                     "ProgramArguments": ["/bin/sh", "/Users/me/.gpu_lab/csdl/shelve-check.sh"],
                     "StartCalendarInterval": {"Hour": 12, "Minute": 0},
                     "StandardOutPath": "/Users/me/.gpu_lab/csdl/shelve-check.log",
                     "StandardErrorPath": "/Users/me/.gpu_lab/csdl/shelve-check.log"}


# --- The plan, through the module ----------------------------------------------------------

def test_on_writes_the_timer_enabled_and_a_second_run_is_unchanged(
        module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    before = tree(home)
    checked, _unused = call(module, capsys, lab_args(home, port), check=True, diff=True)
    assert tree(home) == before
    link_diff = next(d for d in checked["diff"] if d["after_header"].endswith("timers.target.wants/"
                                                                              "gpu-lab-csdl-shelve.timer"))
    assert link_diff["after"] == f"symbolic link to {units(home)}/gpu-lab-csdl-shelve.timer\n"

    result, out = call(module, capsys, lab_args(home, port))
    assert SECRET not in out and "AKIAEXAMPLE" not in out
    script = home / ".gpu_lab" / "csdl" / "shelve-check.sh"
    files = tree(home)
    assert files[".gpu_lab/csdl/shelve-check.sh"][0] == "f0700"
    assert files[".config/systemd/user/gpu-lab-csdl-shelve.service"][0] == "f0644"
    assert files[".config/systemd/user/gpu-lab-csdl-shelve.timer"][0] == "f0644"
    assert files[".config/systemd/user/timers.target.wants/gpu-lab-csdl-shelve.timer"] == (
        "link", f"{units(home)}/gpu-lab-csdl-shelve.timer")
    for folder in (".config", ".config/systemd", ".config/systemd/user", ".config/systemd/user/timers.target.wants"):
        assert files[folder][0] == "d0700"
    for _mode, content in files.values():
        assert not (isinstance(content, bytes) and (SECRET.encode() in content or b"AKIAEXAMPLE" in content))
    assert f"cd /p && exec env {STATUS}\n" in script.read_text()
    undo = (home / ".gpu_lab" / "workstation_undo").read_text().splitlines()
    assert [line for line in undo if line.startswith(("timer", f"created {home}/.config"))] == [
        f"created {home}/.config", f"created {home}/.config/systemd", f"created {units(home)}",
        f"created {units(home)}/timers.target.wants", f"timer {units(home)}/gpu-lab-csdl-shelve.service",
        f"timer {units(home)}/gpu-lab-csdl-shelve.timer",
        f"timer {units(home)}/timers.target.wants/gpu-lab-csdl-shelve.timer"]

    timer = result["summary"]["timer"]
    assert (timer["enabled"], timer["system"], timer["name"], timer["started"]) == (
        True, "systemd", "gpu-lab-csdl-shelve.timer", False)
    assert timer["files"] == [str(script), f"{units(home)}/gpu-lab-csdl-shelve.service",
                              f"{units(home)}/gpu-lab-csdl-shelve.timer",
                              f"{units(home)}/timers.target.wants/gpu-lab-csdl-shelve.timer"]
    assert f"It is written in {home}, not your login home: not started." in timer["note"]
    assert "Remove it: launch.yml without gpu_lab_shelve_timer, or teardown.yml." in timer["note"]
    assert timer["warnings"] == []  # a profile: no warning

    after = tree(home)
    again, _unused = call(module, capsys, lab_args(home, port), diff=True)
    assert (again["changed"], again["changes"]) == (False, [])
    assert tree(home) == after and again["summary"] == result["summary"]


def test_off_removes_the_timer_and_absent_leaves_the_home_as_it_was(
        module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    pristine = tree(home)
    call(module, capsys, lab_args(home, port, shelve_timer=False))
    without = tree(home)
    call(module, capsys, lab_args(home, port))
    off, _unused = call(module, capsys, lab_args(home, port, shelve_timer=False))
    assert off["changed"] is True
    timer = off["summary"]["timer"]
    assert (timer["enabled"], timer["files"]) == (False, [])
    assert sorted(timer["removed"]) == sorted([f"{home}/.gpu_lab/csdl/shelve-check.sh",
                                               f"{units(home)}/gpu-lab-csdl-shelve.service",
                                               f"{units(home)}/gpu-lab-csdl-shelve.timer",
                                               f"{units(home)}/timers.target.wants/gpu-lab-csdl-shelve.timer"])
    assert timer["note"] == f"The daily shelve timer (systemd gpu-lab-csdl-shelve.timer) is removed from {home}."
    # The folders it created stay (recorded) until the last lab goes; its files and lines are gone.
    left = tree(home)
    assert not [p for p in left if p.endswith(("shelve-check.sh", ".service", ".timer"))]
    undo = ".gpu_lab/workstation_undo"
    assert {p: m for p, m in left.items() if not p.startswith(".config") and p != undo} == {
        p: m for p, m in without.items() if p != undo}
    lines = (home / undo).read_text().splitlines()
    assert not [line for line in lines if line.startswith("timer ")]
    assert [line for line in lines if line not in without[undo][1].decode().splitlines()] == [
        f"created {home}/.config", f"created {home}/.config/systemd", f"created {units(home)}",
        f"created {units(home)}/timers.target.wants"]
    quiet, _unused = call(module, capsys, lab_args(home, port, shelve_timer=False))
    assert (quiet["changed"], quiet["summary"]["timer"]["note"]) == (False, "")

    call(module, capsys, lab_args(home, port))
    gone, _unused = call(module, capsys, {"lab": "csdl", "home": str(home), "state": "absent"})
    assert "the daily shelve timer" in gone["summary"]["removed"]
    assert tree(home) == pristine


def test_absent_keeps_another_labs_timer(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path,
                                         port: int) -> None:
    (home / ".ssh" / "nlp-server.pem").write_text("k\n")
    call(module, capsys, lab_args(home, port))
    call(module, capsys, lab_args(home, port + 1 if port < 65535 else port - 1, lab="nlp",
                                  key_file=f"{home}/.ssh/nlp-server.pem"))
    call(module, capsys, {"lab": "csdl", "home": str(home), "state": "absent"})
    assert not (units(home) / "gpu-lab-csdl-shelve.timer").exists()
    assert (units(home) / "timers.target.wants" / "gpu-lab-nlp-shelve.timer").is_symlink()
    undo = (home / ".gpu_lab" / "workstation_undo").read_text()
    assert f"timer {units(home)}/gpu-lab-nlp-shelve.timer\n" in undo and "csdl-shelve" not in undo
    call(module, capsys, {"lab": "nlp", "home": str(home), "state": "absent"})
    assert not (home / ".config").exists() and not (home / ".gpu_lab").exists()


def test_macos_gets_a_launch_agent(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    (home / "Library").mkdir()
    result, _unused = call(module, capsys, lab_args(home, port))
    plist = home / "Library" / "LaunchAgents" / "io.github.csdl.gpu-lab.csdl.shelve.plist"
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][1] == f"{home}/.gpu_lab/csdl/shelve-check.sh"
    assert not (home / ".config").exists()
    assert (result["summary"]["timer"]["system"], result["summary"]["timer"]["name"]) == (
        "launchd", "io.github.csdl.gpu-lab.csdl.shelve")
    call(module, capsys, {"lab": "csdl", "home": str(home), "state": "absent"})
    # ~/Library was there before: only the folder the role created goes.
    assert (home / "Library").is_dir() and not (home / "Library" / "LaunchAgents").exists()


def test_a_file_in_the_way_of_the_timer_fails_before_any_write(
        module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    (home / ".config").write_text("")
    before = tree(home)
    result, _unused = call(module, capsys, lab_args(home, port))
    assert result["failed"] is True and f"{home}/.config is a file, not a directory" in result["msg"]
    assert tree(home) == before


# --- Notes and warnings ---------------------------------------------------------------------

def test_credentials_only_in_the_environment_are_warned_about(module: ModuleType, capsys: pytest.CaptureFixture[str],
                                                              home: Path, port: int) -> None:
    env_only = {k: v for k, v in ENV.items() if k != "AWS_PROFILE"}
    result, _unused = call(module, capsys, lab_args(home, port, timer_environment=env_only))
    warning = result["summary"]["timer"]["warnings"]
    assert len(warning) == 1 and "`aws configure`" in warning[0] and "AWS_PROFILE" in warning[0]
    assert warning[0] in result["summary"]["notes"]
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = x\n")
    saved, _unused = call(module, capsys, lab_args(home, port, timer_environment=env_only))
    assert saved["summary"]["timer"]["warnings"] == [] and saved["summary"]["notes"] == []
    # Without the timer nothing is said about it.
    (home / ".aws" / "credentials").unlink()
    off, _unused = call(module, capsys, lab_args(home, port, timer_environment=env_only, shelve_timer=False))
    assert off["summary"]["notes"] == []


def test_a_kit_gets_no_timer(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    key = home / ".ssh" / "id_ed25519"
    key.write_text("k\n")
    key.chmod(0o600)
    result, _unused = call(module, capsys, lab_args(home, port, key_file=str(key), kit="/kits/ana/kit.yml"))
    assert result["summary"]["timer"]["enabled"] is False
    notes = result["summary"]["notes"]
    assert any(n.startswith("gpu_lab_shelve_timer is ignored with a connection kit") for n in notes)
    assert not (home / ".config").exists() and not (home / ".gpu_lab" / "csdl" / "shelve-check.sh").exists()


# --- The service manager, with a recording runner -------------------------------------------

class Runner:
    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        return self.answers.get(" ".join(argv[:3]), (0, "active\n", ""))


def own_plan(ws: ModuleType, *, on: bool, changed: bool, system: str = "Linux") -> tuple[Any, Any]:
    w = ws.Wanted(lab="csdl", home="/home/me", commands={"status": STATUS}, run_dir="/p")
    files = ws.TimerFiles("csdl", "/home/me", system)
    before, after = ws.timer_commands(files, on=on, changed=changed)
    summary = {"timer": {"enabled": on, "system": files.manager, "name": files.name, "script": files.script,
                         "files": files.files if on else [], "removed": [] if on else files.files, "started": False,
                         "note": "", "warnings": []}}
    return w, ws.Plan(summary=summary, timer_run=ws.TimerRun(files, on, True, before, after))


def test_a_timer_written_in_the_login_home_is_started(ws: ModuleType) -> None:
    w, plan = own_plan(ws, on=True, changed=True)
    run = Runner()
    ws.timer_before(plan, run, check_mode=False)
    ws.finish_timer(w, plan, run, check_mode=False)
    assert run.calls == [["systemctl", "--user", "daemon-reload"],
                         ["systemctl", "--user", "start", "gpu-lab-csdl-shelve.timer"]]
    assert plan.summary["timer"]["started"] is True and "It is started." in plan.summary["timer"]["note"]


def test_no_user_manager_means_the_next_login(ws: ModuleType) -> None:
    w, plan = own_plan(ws, on=True, changed=True)
    run = Runner({"systemctl --user daemon-reload": (1, "", "Failed to connect to bus: No medium found\n")})
    ws.finish_timer(w, plan, run, check_mode=False)
    assert len(run.calls) == 1 and plan.summary["timer"]["started"] is False
    assert ("No user service manager answered (systemctl --user daemon-reload: Failed to connect to bus: No medium"
            " found): it starts at your next login.") in plan.summary["timer"]["note"]


def test_unchanged_it_only_asks_and_check_mode_starts_nothing(ws: ModuleType) -> None:
    w, plan = own_plan(ws, on=True, changed=False)
    run = Runner({"systemctl --user is-active": (3, "inactive\n", "")})
    ws.finish_timer(w, plan, run, check_mode=False)
    assert run.calls == [["systemctl", "--user", "is-active", "gpu-lab-csdl-shelve.timer"]]
    assert "It is not active now: it starts at your next login (or now: systemctl --user start" \
        in plan.summary["timer"]["note"]
    w, plan = own_plan(ws, on=True, changed=True)
    run = Runner()
    ws.timer_before(plan, run, check_mode=True)
    ws.finish_timer(w, plan, run, check_mode=True)
    assert run.calls == [] and "Check mode: not started." in plan.summary["timer"]["note"]


def test_a_timer_removed_is_stopped_first(ws: ModuleType) -> None:
    w, plan = own_plan(ws, on=False, changed=True)
    run = Runner()
    ws.timer_before(plan, run, check_mode=False)
    assert run.calls == [["systemctl", "--user", "stop", "gpu-lab-csdl-shelve.timer"]]
    ws.finish_timer(w, plan, run, check_mode=False)
    assert run.calls[-1] == ["systemctl", "--user", "daemon-reload"]
    assert plan.summary["timer"]["note"] == "The daily shelve timer (systemd gpu-lab-csdl-shelve.timer) is removed."


def test_launchd_commands(ws: ModuleType, tmp_path: Path) -> None:
    files = ws.TimerFiles("csdl", str(tmp_path), "Darwin")
    assert ws.timer_commands(files, on=True, changed=True) == ([], [["launchctl", "load", "-w", files.plist]])
    Path(files.plist).parent.mkdir(parents=True)
    Path(files.plist).write_text("")
    assert ws.timer_commands(files, on=True, changed=True) == (
        [["launchctl", "unload", files.plist]], [["launchctl", "load", "-w", files.plist]])
    assert ws.timer_commands(files, on=False, changed=True) == ([["launchctl", "unload", files.plist]], [])
    assert ws.timer_query(files) == ["launchctl", "list", "io.github.csdl.gpu-lab.csdl.shelve"]
