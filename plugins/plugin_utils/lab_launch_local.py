# Copyright: gpu_lab developers
# MIT License
"""What a launch keeps on this machine: the labs' private keys and the record of where each
lab lives (~/.gpu_lab/<lab>/lab.json). Controller-side, like the keys and records themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalKey:
    """A key file's public half (its OpenSSH line), whether this run made the file, or why not."""

    public: str = ""
    created: bool = False
    error: str = ""


def make_key(path: str) -> LocalKey:
    """The key file at ``path``, made when there is none, and its public half.

    The key is made here and only its public half is sent to AWS, so the private key never
    crosses the network, and an interrupted launch can never leave a key pair whose private
    half was lost on the way. It is made aside and linked into place (atomic: of two launches
    racing, both end up with the same key). A key file left from an earlier lab is reused."""
    created = False
    try:
        if not os.path.exists(path):
            created = _make_aside_and_link(path)
        shown = _ssh_keygen("-y", "-f", path)
    except (OSError, subprocess.CalledProcessError) as error:
        return LocalKey(error=f"Could not make the private key {path} on this machine: {_reason(error)}")
    return LocalKey(public=shown.strip(), created=created)


def _make_aside_and_link(path: str) -> bool:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    new = f"{path}.{os.getpid()}.new"
    comment = os.path.splitext(os.path.basename(path))[0]
    try:
        _ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", new)
        os.chmod(new, 0o400)
        try:
            os.link(new, path)
        except FileExistsError:
            return False  # another launch made it first: use theirs
        return True
    finally:
        for leftover in (new, f"{new}.pub"):
            if os.path.lexists(leftover):
                os.remove(leftover)


def _ssh_keygen(*args: str) -> str:
    # OpenSSH's own tool, from PATH as the shell would take it; the arguments are ours.
    done = subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=True,  # noqa: S603, S607
                          stdin=subprocess.DEVNULL)
    return done.stdout


def _reason(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        return (error.stderr or "").strip() or f"ssh-keygen exited with {error.returncode}"
    return str(error)


def make_keys(paths: list[str]) -> dict[str, LocalKey]:
    """Each key file once (a class's labs share one)."""
    return {path: make_key(path) for path in dict.fromkeys(paths)}


# --- The record of where the lab lives ---------------------------------------------------------

def record_of(lab: str, region: str, instance_id: str) -> dict[str, Any]:
    return {"lab": lab, "region": region, "instance_id": instance_id}


def record_text(record: dict[str, Any]) -> str:
    """As the role's copy task wrote it (to_nice_json, then a newline)."""
    return json.dumps(record, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def write_record(path: str, record: dict[str, Any]) -> None:
    """The lab's record, in its own 0700 folder, as a 0600 file replaced at once (a run
    interrupted here leaves the old record or the new one, never half of one)."""
    folder = Path(path).parent
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".lab.json.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(record_text(record))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


# --- The course repository, read from here ------------------------------------------------------

# git asks nothing and gives up on a stalled transfer (the host clones the course later: a typo
# or a missing branch stops the launch before anything is created).
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=10",
           "GIT_HTTP_LOW_SPEED_LIMIT": "1", "GIT_HTTP_LOW_SPEED_TIME": "15"}


def read_course(repo: str, branch: str, timeout: float) -> tuple[int, str]:
    """`git ls-remote --exit-code --heads REPO BRANCH`: its exit code (2: no such branch; 124:
    no answer in time, as timeout(1) says it) and what it said on stderr. Out of time, git and
    what it started (its transport, ssh) are stopped together."""
    try:
        process = subprocess.Popen(["git", "ls-remote", "--exit-code", "--heads", repo, branch],  # noqa: S603, S607
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env=os.environ | GIT_ENV, start_new_session=True)
    except OSError as error:
        return 127, str(error)
    try:
        _stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return 124, ""
    return process.returncode, stderr
