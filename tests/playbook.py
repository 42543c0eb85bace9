"""Runs the project's playbooks the way a user does: `ansible-playbook X.yml` from the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_playbook(
    name: str,
    env: Mapping[str, str],
    home: Path,
    extra_vars: Mapping[str, object] | None = None,
    *args: str,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook <name>.yml -e k=v ...` in the repo, with HOME=home and env added."""
    cmd = [str(BIN / "ansible-playbook"), f"{name}.yml", *args]
    for key, value in (extra_vars or {}).items():
        cmd += ["-e", f"{key}={value}"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full_env.update(env)
    full_env.update({"HOME": str(home), "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                     "PATH": f"{BIN}:{full_env.get('PATH', '')}"})
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of localhost (ok, changed, failed...)."""
    for line in output.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (p.split("=") for p in line.split(":", 1)[1].split())}
    raise AssertionError(f"no PLAY RECAP for localhost in:\n{output[-3000:]}")
