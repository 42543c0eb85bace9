"""scripts/bootstrap.sh's last word, `ready: ansible [core X]`, without a BrokenPipe traceback.

It runs on a copy of the script and requirements (its repo is where the script lies), with a
cache whose environment for those requirements is this checkout's own: nothing is
installed, and this checkout's .venv and collection link are left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.playbook import REPO


def test_ready_line_names_ansible_core_even_when_head_would_break_the_pipe(tmp_path: Path) -> None:
    store = Path(os.path.realpath(REPO / ".venv"))
    if store.parent.name != "venvs":
        pytest.skip(f".venv is not an environment of scripts/bootstrap.sh's cache ({store})")
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "bootstrap.sh", repo / "scripts" / "bootstrap.sh")
    shutil.copytree(REPO / "requirements", repo / "requirements")
    cache = tmp_path / "cache"
    (cache / "venvs").mkdir(parents=True)
    (cache / "venvs" / store.name).symlink_to(store)
    # A `head` that exits before reading: `ansible --version | head -1` then always gets
    # EPIPE, as it sometimes does with the real head (Ansible still writing as head exits).
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "head").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "head").chmod(0o755)
    env = {**os.environ, "GPU_LAB_CACHE": str(cache), "PATH": f"{fake_bin}:{os.environ['PATH']}",
           # Should the requirements' hash name another environment, pip fails at once
           # offline instead of installing for a minute.
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    done = subprocess.run(["bash", str(repo / "scripts" / "bootstrap.sh"), "--no-system"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Python environment up to date" in done.stdout, "the copy did not find this checkout's environment"
    version = subprocess.run([str(store / "bin" / "python"), "-c", "import ansible.release as r; print(r.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert done.stdout.splitlines()[-1].endswith(f"ready: ansible [core {version}]")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
