#!/usr/bin/env python3
"""Choose the local port of a lab's Jupyter tunnel and print the choice as JSON.

Read-only. The order of preference:
1. the port this lab's ssh_config already forwards, if it came from the same wanted port
   and no other lab uses it: free, or held by ssh (presumably the lab's own open tunnel),
   or held by a program this user cannot see. Re-runs then never move a working tunnel;
2. otherwise the wanted port, or the next one up that nothing on this machine listens on
   and no other lab's ssh_config forwards.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

FORWARD = re.compile(r"^\s*LocalForward\s+(?:\S*:)?(\d+)\s", re.IGNORECASE | re.MULTILINE)


def forwarded_port(ssh_config: Path) -> int | None:
    """The local port an ssh_config written by the role forwards, if any."""
    try:
        match = FORWARD.search(ssh_config.read_text(encoding="utf-8"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def in_use(port: int) -> bool:
    """True when something answers on localhost:port or the port cannot be bound."""
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((address, port)) == 0:
                    return True
        except OSError:
            continue  # no IPv6 on this machine
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # ssh sets SO_REUSEADDR on its listeners too: test the bind it would do.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def listeners(port: int) -> set[str]:
    """Names of the programs listening on the port, as far as this user can see them."""
    names: set[str] = set()
    if shutil.which("lsof"):
        out = run(["lsof", "-nP", "-a", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fc"])
        names.update(line[1:] for line in out.splitlines() if line.startswith("c"))
    elif shutil.which("ss"):
        out = run(["ss", "-Hltnp", f"sport = :{port}"])
        names.update(re.findall(r'\(\("([^"]+)"', out))
    return names


def run(argv: list[str]) -> str:
    try:
        # Fixed argv of lsof/ss, no shell.
        return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return ""


def choose(lab: str, gpu_lab_dir: Path, wanted: int, tries: int) -> dict[str, object]:
    others = {
        port: path.parent.name
        for path in sorted(gpu_lab_dir.glob("*/ssh_config"))
        if path.parent.name != lab and (port := forwarded_port(path)) is not None
    }
    window = range(wanted, min(wanted + tries, 65536))
    previous = forwarded_port(gpu_lab_dir / lab / "ssh_config")
    if previous in window and previous not in others:
        if not in_use(previous):
            return result(previous, wanted, others, kept=True)
        holders = listeners(previous)
        if not holders or all(name.startswith("ssh") for name in holders):
            return result(previous, wanted, others, kept=True)
    for port in window:
        if port not in others and not in_use(port):
            return result(port, wanted, others, kept=False)
    last = window[-1] if window else wanted
    sys.exit(
        f"No free local port from {wanted} to {last} for the Jupyter tunnel: stop what uses "
        "them, or set workstation_local_port to another port."
    )


def result(port: int, wanted: int, others: dict[int, str], *, kept: bool) -> dict[str, object]:
    reason = ""
    if port != wanted:
        if wanted in others:
            why = f"lab {others[wanted]} forwards it"
        else:
            why = "another program on this machine listens on it (a local Jupyter?)"
        if kept and not in_use(wanted) and wanted not in others:
            why = "it was taken when the lab was set up; the port stays put so links keep working"
        reason = f"local port {wanted} is not used: {why}; the tunnel uses {port}"
    return {"port": port, "wanted": wanted, "changed": port != wanted, "reason": reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True)
    parser.add_argument("--gpu-lab-dir", required=True, type=Path)
    parser.add_argument("--wanted", required=True, type=int)
    parser.add_argument("--tries", default=20, type=int)
    args = parser.parse_args()
    print(json.dumps(choose(args.lab, args.gpu_lab_dir, args.wanted, args.tries)))


if __name__ == "__main__":
    main()
