"""The embedded default, driven the way the README tells a newcomer: `make demo`'s script, then
the shortcuts and playbooks in the demo shell (a second command there comes without the
first one's -e), teardown with unsaved work on the host, and the one clean-up command. The
user's own ~/.ssh is never touched."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from local_cloud.cloud import hosts_unavailable_reason
from tests.playbook import REPO, recaps

pytestmark = pytest.mark.hosts


def demo(demo_dir: Path, *args: str, stdin: str | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"GPU_LAB_DEMO_DIR": str(demo_dir), "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                "TERM": "dumb"})
    return subprocess.run([str(REPO / "scripts" / "demo.sh"), *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ssh_dir_state() -> dict[str, bytes]:
    ssh = Path(os.path.expanduser("~")) / ".ssh"
    return {p.name: p.read_bytes() for p in sorted(ssh.glob("*")) if p.is_file()} if ssh.is_dir() else {}


STEP = re.compile(r"^__rc (\S+) (\d+)$", re.M)


def steps(output: str) -> dict[str, int]:
    """The exit code of each step the shell script below marks with `__rc <name> <code>`
    (the interactive shell also echoes the commands: only lines of their own count)."""
    return {m[1]: int(m[2]) for m in STEP.finditer(output)}


def step_output(output: str, name: str) -> str:
    """What the shell printed from the end of the step before `name` to `name`'s mark."""
    start = 0
    for m in STEP.finditer(output):
        if m[1] == name:
            return output[start:m.start()]
        start = m.end()
    raise AssertionError(f"no step {name} in:\n{output[-3000:]}")


def test_the_demo_as_a_newcomer_runs_it(tmp_path: Path) -> None:
    reason = hosts_unavailable_reason()
    if reason:
        pytest.skip(f"the demo's stand-in host cannot boot here: {reason}")
    demo_dir = tmp_path / "demo"
    real_ssh = ssh_dir_state()
    try:
        up = demo(demo_dir, "up")
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        assert "sandbox home" in up.stdout and "Lab csdl is up" in up.stdout, up.stdout[-3000:]
        course = json.loads((demo_dir / "cloud" / "cloud.json").read_text())["course_repo"]
        course_dir = re.sub(r"\.git$", "", course.rstrip("/").rsplit("/", 1)[-1])

        script = f"""
ssh -n csdl 'echo "print(42)" > ~/{course_dir}/my_work.py'; echo "__rc work $?"
csdl-status; echo "__rc status $?"
ansible-playbook launch.yml; echo "__rc relaunch $?"
csdl-stop; echo "__rc stop $?"
csdl-start; echo "__rc start $?"
ansible-playbook teardown.yml -e gpu_lab_confirm_teardown=csdl; echo "__rc teardown $?"
ssh -n -o BatchMode=yes -o StrictHostKeyChecking=accept-new -i ~/.ssh/csdl-server.pem ubuntu@$CSDL_IP true
echo "__rc tutorial_ssh $?"
exit
"""
        shell = demo(demo_dir, "shell", stdin=script)
        out = shell.stdout + shell.stderr
        flat = " ".join(out.split())
        assert steps(out) == {"work": 0, "status": 0, "relaunch": 0, "stop": 0, "start": 0, "teardown": 2,
                              "tutorial_ssh": 0}, out[-5000:]
        relaunch = step_output(out, "relaunch")
        assert {h: c["changed"] for h, c in recaps(relaunch).items()} == {"localhost": 0, "csdl-server": 0}, relaunch
        stop = step_output(out, "stop")
        assert "my_work.py" in stop, stop[-3000:]
        teardown = step_output(out, "teardown")
        assert "Refusing to go on" in " ".join(teardown.split()) and "my_work.py" in teardown, teardown[-3000:]
        assert "running" in flat
        # The tutorial's own ssh line wrote its host key into the sandbox, not the user's home.
        assert (demo_dir / "home" / ".ssh" / "known_hosts").is_file()
        assert ssh_dir_state() == real_ssh, "the demo touched the user's own ~/.ssh"
    finally:
        down = demo(demo_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not demo_dir.exists()
    assert ssh_dir_state() == real_ssh
