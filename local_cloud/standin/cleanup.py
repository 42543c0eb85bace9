"""Leaving nothing behind, even after a crash.

Each state dir in use has an owner record, ``/run/gpu_lab/owners/<tag>.json``: the pid
(and start time, against pid reuse) of the process whose controller runs its stand-ins,
the state dir, and the Elastic IPs it blocked (routes that belong to no veth). With it:

* ``cleanup_stale(state_dir)`` removes what a dead owner of that state dir left:
  processes, mounts, namespaces, veths, routes, cgroups, disks (the instances' and the
  images', disks.py);
* ``reap_orphans()`` does so for every state dir whose owner died, which matters for
  pytest: each run has a new tmp state dir, so the next run's ``cleanup_stale`` of its
  own dir would never see a killed run's hosts.

The instance metadata (local_cloud/imds.py) leaves nothing of its own to remove: its listeners
live in the controller's process, and its DNAT rule inside each stand-in's namespace goes with
the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from local_cloud.standin import cgroups, disks, net
from local_cloud.standin.host import state_tag
from local_cloud.standin.system import RUN_DIR, mounts_under, unmount

OWNERS = RUN_DIR / "owners"


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat); None if it is gone or a
    zombie (killed, not yet waited for: its controller is dead all the same)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _record_path(state_dir: Path) -> Path:
    return OWNERS / f"{state_tag(state_dir)}.json"


def read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(state_dir).read_text())
    except (OSError, ValueError):
        return None


def _alive(record: dict[str, Any]) -> bool:
    return record.get("start") is not None and _start_time(int(record["pid"])) == record["start"]


def _write_record(state_dir: Path, blocked: list[str]) -> None:
    OWNERS.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "start": _start_time(os.getpid()),
              "state_dir": os.path.realpath(state_dir), "blocked": blocked}
    path = _record_path(state_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(path)


def claim(state_dir: Path) -> None:
    """Makes this process the state dir's owner (after cleanup_stale)."""
    _write_record(state_dir, [])


def record_blocked(state_dir: Path, ips: set[str]) -> None:
    _write_record(state_dir, sorted(ips))


def cleanup_stale(state_dir: Path) -> None:
    """Removes what stand-ins of this state dir left on the machine. Refuses while
    another live process owns the state dir; never touches other state dirs' hosts."""
    state_dir = Path(state_dir)
    record = read_record(state_dir)
    if record and record["pid"] != os.getpid() and _alive(record):
        raise RuntimeError(f"{state_dir} is in use by the stand-in controller of pid {record['pid']}")
    tag = state_tag(state_dir)
    cgroups.kill(cgroups.tag_dirs(tag))  # every process first: nothing holds what follows
    metas: list[dict[str, Any]] = []
    if state_dir.exists():
        for meta in state_dir.glob("*/meta.json"):
            try:
                metas.append(json.loads(meta.read_text()))
            except (OSError, ValueError):
                pass
        for child in state_dir.iterdir():
            if child.is_dir():
                unmount(child)
    for meta in metas:
        net.delete_link(meta["netns"], meta["veth"])  # the EIP route goes with the veth
    for ns in net.list_netns():
        if ns.startswith(f"{net.NETNS_PREFIX}{tag}-"):
            net.delete_link(ns, "")
    for ip in (record or {}).get("blocked", []):
        net.unroute_eip(ip)
    cgroups.remove_tag(tag)
    if state_dir.exists():
        for meta_file in state_dir.glob("*/meta.json"):
            if not mounts_under(meta_file.parent):
                shutil.rmtree(meta_file.parent, ignore_errors=True)
        if not mounts_under(disks.store(state_dir)):
            disks.forget_all(state_dir)  # images' disks: the images went with the emulator
    _record_path(state_dir).unlink(missing_ok=True)
    net.release_shared()


def reap_orphans() -> list[Path]:
    """Cleans up every state dir whose owner died without stopping; returns them."""
    reaped = []
    for path in sorted(OWNERS.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(record):
            continue
        state_dir = Path(record["state_dir"])
        try:
            cleanup_stale(state_dir)
        except RuntimeError:  # claimed again meanwhile by a live process
            continue
        path.unlink(missing_ok=True)
        reaped.append(state_dir)
    return reaped
