"""Runs the project's playbooks the way a user does: `ansible-playbook X.yml` from the repo."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def playbook_command(
    name: str,
    env: Mapping[str, str],
    home: Path,
    extra_vars: Mapping[str, object] | None = None,
    *args: str,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `ansible-playbook <name>.yml -e k=v ...` run in the
    repo with HOME=home and env added (for a test that needs the process itself)."""
    cmd = [str(BIN / "ansible-playbook"), f"{name}.yml", *args]
    for key, value in (extra_vars or {}).items():
        cmd += ["-e", f"{key}={value}"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full_env.update(env)
    full_env.update({"HOME": str(home), "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                     "PATH": f"{BIN}:{full_env.get('PATH', '')}"})
    home.mkdir(parents=True, exist_ok=True)
    return cmd, full_env


def run_playbook(
    name: str,
    env: Mapping[str, str],
    home: Path,
    extra_vars: Mapping[str, object] | None = None,
    *args: str,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook <name>.yml -e k=v ...` in the repo, with HOME=home and env added."""
    cmd, full_env = playbook_command(name, env, home, extra_vars, *args)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


QUIET = 1.5  # seconds of no output after a prompt's text: it reads now


def controlling_terminal() -> None:
    """In the child, after setsid: make its stdin (the pty) the session's controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_playbook_typing(
    name: str,
    env: Mapping[str, str],
    home: Path,
    extra_vars: Mapping[str, object] | None,
    answers: Sequence[tuple[str, str]],
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """run_playbook at a terminal (a pty for stdin and output, as a user's shell gives it): each
    (text, reply) in turn waits for text in the output since the last reply and QUIET seconds
    without output after it, then types reply and Enter. The output (stdout and stderr together,
    with the replies' echo) is the result's stdout; an answer whose text never came fails the
    test, with the output."""
    cmd, full_env = playbook_command(name, env, home, extra_vars)
    master, slave = pty.openpty()
    # A session of its own with the pty as its controlling terminal, as a login shell has it
    # (ansible's prompt sets the terminal's modes).
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            start_new_session=True, preexec_fn=controlling_terminal)
    os.close(slave)
    output, seen_from, pending = b"", 0, list(answers)
    # Ansible's prompt shows its text, then drops what was typed before it reads (a terminal's
    # typeahead): a reply waits until the output has been quiet for QUIET seconds after the text.
    asked_at: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the playbook ended: the pty is closed
                    break
                if not data:
                    break
                output += data
                asked_at = time.monotonic() if asked_at is not None else None
            if pending and asked_at is None and pending[0][0].encode() in output[seen_from:]:
                asked_at = time.monotonic()
            if pending and asked_at is not None and time.monotonic() - asked_at >= QUIET:
                seen_from, asked_at = len(output), None
                os.write(master, pending.pop(0)[1].encode() + b"\r")
            if not ready and proc.poll() is not None:
                break
        else:
            proc.kill()
        proc.wait(timeout=30)
    finally:
        os.close(master)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    assert not pending, f"never asked {pending[0][0]!r}:\n{text[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout=text, stderr="")


def recaps(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters (ok, changed, failed...) of every host."""
    found: dict[str, dict[str, int]] = {}
    recap_started = False
    for line in output.splitlines():
        recap_started = recap_started or line.startswith("PLAY RECAP")
        if recap_started and " ok=" in line and ":" in line:
            host, counters = line.split(":", 1)
            found[host.strip()] = {k: int(v) for k, v in (p.split("=") for p in counters.split())}
    if not found:
        raise AssertionError(f"no PLAY RECAP in:\n{output[-3000:]}")
    return found


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of localhost."""
    return recaps(output)["localhost"]


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change, with the host: for failure messages."""
    task, found = "", []
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
        elif line.startswith("changed:"):
            found.append(f"{task}: {line}")
    return found


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with every run of whitespace one space (Ansible wraps long lines)."""
    return " ".join((result.stdout + result.stderr).split())


def succeeded(result: subprocess.CompletedProcess[str], changed: int | None = None) -> str:
    """The run's flat output, after asserting it exited 0 (and, given, localhost's changed count)."""
    out = flat(result)
    assert result.returncode == 0, out[-3000:]
    if changed is not None:
        assert recap(result.stdout)["changed"] == changed, out[-3000:]
    return out
