"""Small helpers around the commands and kernel interfaces the stand-ins use."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Machine-wide state shared by every controller (all state dirs): the lock that
# serialises network changes and the saved ip_forward value.
RUN_DIR = Path("/run/gpu_lab")


class CommandError(RuntimeError):
    pass


def run(cmd: Sequence[str], check: bool = True, input: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs a command quietly; on failure the error names the command and its stderr."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, input=input,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandError(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock: serialises work between threads, processes and test runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _unescape_mount_path(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below root, deepest first (the order to unmount them in)."""
    root = Path(os.path.realpath(root))
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = Path(_unescape_mount_path(line.split()[4]))
            if target == root or root in target.parents:
                found.append(target)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def is_mounted(path: Path) -> bool:
    return Path(os.path.realpath(path)) in mounts_under(path)


def unmount(path: Path, attempts: int = 20) -> None:
    """Unmounts path and everything below it; lazily if still busy after a few tries."""
    for target in mounts_under(path):
        for _ in range(attempts):
            if run(["umount", str(target)], check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            run(["umount", "--lazy", str(target)], check=False)
