"""The cgroup directory each stand-in's systemd-nspawn runs in.

Testbed workaround: this VM's PID 1 is not systemd, so nspawn runs with
``--register=no --keep-unit`` and takes the cgroup it was started in as its own. Two
containers in one cgroup collide, so each gets ``gpu_lab/<state tag>/<instance>`` in
every hierarchy systemd uses (here: hybrid, the v2 ``unified`` one plus the v1
``name=systemd`` one), and the launcher moves itself there before exec'ing nspawn.
The same directories let us find and kill every process of a stand-in, even after a
crash of the controller that started it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
TOP = "gpu_lab"


def hierarchies() -> list[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT]
    found = [CGROUP_ROOT / name for name in ("unified", "systemd")
             if (CGROUP_ROOT / name / "cgroup.procs").exists()]
    if not found:
        raise RuntimeError("no cgroup hierarchy for systemd found under /sys/fs/cgroup")
    return found


def tag_dirs(tag: str) -> list[Path]:
    return [h / TOP / tag for h in hierarchies()]


def group_dirs(tag: str, name: str) -> list[Path]:
    return [d / name for d in tag_dirs(tag)]


def create(dirs: list[Path]) -> list[Path]:
    """Makes the directories; returns the cgroup.procs files the launcher writes to."""
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return [d / "cgroup.procs" for d in dirs]


def pids(dirs: list[Path]) -> set[int]:
    found: set[int] = set()
    for d in dirs:
        if not d.exists():
            continue
        for procs in d.rglob("cgroup.procs"):
            try:
                found.update(int(p) for p in procs.read_text().split())
            except OSError:  # the group went away while we walked
                pass
    return found


def kill(dirs: list[Path], timeout: float = 5) -> None:
    """SIGKILLs every process in the groups (and their children groups), and waits."""
    deadline = time.monotonic() + timeout
    while True:
        for d in dirs:
            if (d / "cgroup.kill").exists():  # v2: the kernel kills the whole subtree
                try:
                    (d / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        left = pids(dirs)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def remove(dirs: list[Path]) -> None:
    """rmdir's the groups, innermost first (a guest's systemd makes its own below)."""
    for d in dirs:
        if d.exists():
            for parent, _subdirs, _files in os.walk(d, topdown=False):
                _rmdir(Path(parent))


def remove_tag(tag: str) -> None:
    """Removes a state dir's groups, and the top one when nobody else uses it."""
    for d in tag_dirs(tag):
        remove([d])
        _rmdir(d.parent)


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:  # still in use (another state dir's groups, a process not dead yet)
        pass
