"""csdl.gpu_lab.workstation_files as Ansible runs it (module args in, JSON out), on a throwaway
home: check mode writes nothing and its diff shows the change, a second run is changed=False,
absent removes exactly what was written and keeps the user's own lines, a file in the way
fails with its sentence before any write, and the Jupyter token never appears in the output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

from tests.unit.collection import load

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
BASHRC = "# my bashrc\nalias ll='ls -alF'\n"
TOKEN = "secrettoken0123456789abcdefghijklmnopqrstuvwxyz01"  # noqa: S105 - a fake one


@pytest.fixture(scope="module")
def module() -> ModuleType:
    return load("modules.workstation_files")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".bashrc").write_text(BASHRC)
    (home / ".bashrc").chmod(0o644)
    key = home / ".ssh" / "csdl-server.pem"
    key.write_text("not a real key\n")
    key.chmod(0o400)
    return home


def tree(home: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Every path under home: its kind and mode and its bytes (a link: its target)."""
    found: dict[str, tuple[str, bytes | str | None]] = {}
    for path in sorted(home.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(home))] = ("link", os.readlink(path))
            continue
        mode = f"{'d' if path.is_dir() else 'f'}{path.lstat().st_mode & 0o7777:04o}"
        found[str(path.relative_to(home))] = (mode, None if path.is_dir() else path.read_bytes())
    return found


def call(module: ModuleType, capsys: pytest.CaptureFixture[str], args: dict[str, Any], *, check: bool = False,
         diff: bool = False) -> tuple[dict[str, Any], str]:
    """Runs the module's main(); returns its result and its raw output."""
    with patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": diff}), pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def lab_args(home: Path, port: int, **more: Any) -> dict[str, Any]:
    return {"lab": "csdl", "home": str(home), "host_address": "127.0.0.77", "key_file": f"{home}/.ssh/csdl-server.pem",
            "jupyter_port": port, "local_port": port, "host_keys": [KEY], "login_shell": "/bin/bash",
            "commands": {"start": "ap start.yml", "stop": "ap stop.yml", "status": "ap status.yml"},
            "run_dir": "/p"} | more


def test_check_mode_writes_nothing_and_diff_shows_the_change(module: ModuleType, capsys: pytest.CaptureFixture[str],
                                                             home: Path, port: int) -> None:
    before = tree(home)
    result, _unused = call(module, capsys, lab_args(home, port), check=True, diff=True)
    assert result["changed"] is True
    assert tree(home) == before
    diffs = {d["after_header"]: d for d in result["diff"]}
    assert diffs[f"{home}/.gpu_lab/csdl/known_hosts"]["after"] == f"csdl,127.0.0.77 {KEY}\n"
    bashrc = diffs[f"{home}/.bashrc"]
    assert bashrc["before"] == BASHRC
    assert bashrc["after"].startswith(BASHRC + "# BEGIN gpu_lab csdl (managed by ansible: csdl.gpu_lab.workstation)\n")
    assert f"write {home}/.ssh/config" in result["changes"]
    assert result["summary"]["local_port"] == port


def test_a_second_run_is_unchanged(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path,
                                   port: int) -> None:
    first, _unused = call(module, capsys, lab_args(home, port))
    assert first["changed"] is True
    after = tree(home)
    again, _unused = call(module, capsys, lab_args(home, port), diff=True)
    assert (again["changed"], again["changes"], "diff" in again) == (False, [], False)
    assert tree(home) == after
    assert again["summary"] == first["summary"]


def test_absent_removes_exactly_what_was_written(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path,
                                                 port: int) -> None:
    pristine = tree(home)
    call(module, capsys, lab_args(home, port))
    with (home / ".bashrc").open("a") as rc:
        rc.write("export MINE=1\n")  # the user's own line, after the block
    result, _unused = call(module, capsys, {"lab": "csdl", "home": str(home), "state": "absent"})
    assert result["changed"] is True
    removed = ["the ssh entry (Host csdl) and the shell shortcuts", "the pinned host key"]
    assert result["summary"] == {"lab": "csdl", "state": "absent", "labs_left": [], "removed": removed}
    assert (home / ".bashrc").read_text() == BASHRC + "export MINE=1\n"
    (home / ".bashrc").write_text(BASHRC)
    assert tree(home) == pristine
    again, _unused = call(module, capsys, {"lab": "csdl", "home": str(home), "state": "absent"})
    assert again["changed"] is False


def test_a_file_in_the_way_fails_before_any_write(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path,
                                                  port: int) -> None:
    (home / ".gpu_lab").write_text("")
    before = tree(home)
    result, _unused = call(module, capsys, lab_args(home, port))
    assert result["failed"] is True
    assert result["msg"] == (f"{home}/.gpu_lab is a file, not a directory: move it out of the way"
                             f" (mv {home}/.gpu_lab {home}/.gpu_lab.old) and run again.")
    assert tree(home) == before


def test_the_token_never_shows(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    key = home / ".ssh" / "id_ed25519"
    key.write_text("k\n")
    key.chmod(0o600)
    args = lab_args(home, port, key_file=str(key), kit="/kits/ana/kit.yml", kit_token=TOKEN, host_keys_from_kit=True)
    result, out = call(module, capsys, args, diff=True)
    assert TOKEN not in out
    assert (home / ".gpu_lab" / "csdl" / "jupyter_url").read_text() == f"http://localhost:{port}/lab?token={TOKEN}\n"
    assert result["summary"]["host_keys"] == "from the kit"
    assert result["summary"]["commands"] == {}
    url_diff = next(d for d in result["diff"] if d["after_header"].endswith("jupyter_url"))
    assert url_diff["after"] == f"http://localhost:{port}/lab?token=********\n"


def test_jupyter_url_only(module: ModuleType, capsys: pytest.CaptureFixture[str], home: Path, port: int) -> None:
    call(module, capsys, lab_args(home, port))
    only = {"lab": "csdl", "home": str(home), "jupyter_url_only": True}
    assert call(module, capsys, only)[0]["changed"] is False  # no token yet
    (home / ".gpu_lab" / "csdl" / "jupyter_token").write_text(TOKEN + "\n")
    result, out = call(module, capsys, only)
    assert (result["changed"], "summary" in result, TOKEN in out) == (True, False, False)
    assert call(module, capsys, only)[0]["changed"] is False
