# Copyright: gpu_lab developers
# MIT License
"""What the workstation role looks at on this machine, read-only: the tunnel's local port, the
server's host keys (ssh-keyscan) and what stands in the way of the role's files.

Used by the csdl.gpu_lab.workstation_files module (through module_utils/workstation.py).
Nothing here writes, and nothing imports Ansible.

- choose_port: the tunnel's local port. The order of preference:
  1. the port this lab's ssh_config already forwards, if it came from the same wanted port
     and no other lab uses it: free, or held by ssh (presumably the lab's own open tunnel),
     or held by a program this user cannot see. Re-runs then never move a working tunnel;
  2. otherwise the wanted port, or the next one up that nothing on this machine listens on
     and no other lab's ssh_config forwards;
- Keyscan: ssh-keyscan's lines, whether they hold a host key, and the tries it took (1 +
  retries at most, a delay apart, while the server boots). It runs while the rest is looked at;
- describe: a path's type, mode and (regular files) SHA-1, or None when missing;
- Access.wanted: for a directory the role keeps or a file it writes, what stands in the way,
  each as one sentence that says what to do, or None: "problem", something there that the
  role can never use (a file where the directory must be, a directory where the file must
  be, a file it must read but cannot), whatever it writes; "write", why this user cannot
  create or change it (the role fails on it only when it would write there). Symbolic links
  are followed, as the role's writes follow them.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

FORWARD = re.compile(r"^\s*LocalForward\s+(?:\S*:)?(\d+)\s", re.IGNORECASE | re.MULTILINE)
# A known_hosts line's key, host field optional: what the role pins (see workstation.pins_of_lines).
HOST_KEY = re.compile(r"^(?![#@])(?:(?!ssh-|ecdsa-|sk-)\S+\s+)?(?:ssh-|ecdsa-|sk-)\S+\s+[A-Za-z0-9+/]+={0,3}(?:\s|$)")


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
        # Fixed argv of lsof/ss, no shell; with a timeout, which run_command does not have.
        done = subprocess.run(  # noqa: S603  # pylint: disable=ansible-bad-function
            argv, capture_output=True, text=True, timeout=5, check=False)
        return done.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def choose_port(lab: str, gpu_lab_dir: Path, wanted: int, tries: int) -> dict[str, object]:
    others = {
        port: path.parent.name
        for path in sorted(gpu_lab_dir.glob("*/ssh_config"))
        if path.parent.name != lab and (port := forwarded_port(path)) is not None
    }
    window = range(wanted, min(wanted + tries, 65536))
    previous = forwarded_port(gpu_lab_dir / lab / "ssh_config")
    if previous in window and previous not in others:
        if not in_use(previous):
            return port_result(previous, wanted, others, kept=True)
        holders = listeners(previous)
        if not holders or all(name.startswith("ssh") for name in holders):
            return port_result(previous, wanted, others, kept=True)
    for port in window:
        if port not in others and not in_use(port):
            return port_result(port, wanted, others, kept=False)
    last = window[-1] if window else wanted
    return {
        "error": f"No free local port from {wanted} to {last} for the Jupyter tunnel: stop what uses "
        "them, or set workstation_local_port to another port."
    }


def port_result(port: int, wanted: int, others: dict[int, str], *, kept: bool) -> dict[str, object]:
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


class Keyscan:
    """ssh-keyscan of one address, started at once; retried (1 + retries tries) while it finds no host key."""

    def __init__(self, address: str, timeout: int, retries: int, delay: int) -> None:
        self.argv = ["ssh-keyscan", "-T", str(timeout), address]
        self.max_tries, self.delay, self.tries = 1 + max(retries, 0), delay, 0
        self.process = self.start()

    def start(self) -> subprocess.Popen[str] | None:
        self.tries += 1
        try:
            # Fixed argv, no shell; the address is one argument. Popen, not run_command: every
            # address is scanned at once, and run_command runs one command to its end.
            return subprocess.Popen(  # noqa: S603  # pylint: disable=ansible-bad-function
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError:
            return None

    def result(self) -> dict[str, object]:
        while True:
            lines = self.process.communicate()[0].splitlines() if self.process else []
            found = any(HOST_KEY.match(line.strip()) for line in lines)
            if found or self.tries >= self.max_tries:
                return {"lines": lines, "tries": self.tries, "found": found}
            time.sleep(self.delay)
            self.process = self.start()


def describe(path: Path) -> dict[str, str] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    kind = "directory" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
    seen = {"type": kind, "mode": f"{stat.S_IMODE(info.st_mode):04o}"}
    if kind == "file":
        try:
            seen["sha1"] = hashlib.sha1(path.read_bytes()).hexdigest()  # noqa: S324 - what Ansible's hash('sha1') gives
        except OSError:
            pass
    return seen


def kind_of(path: Path) -> str | None:
    """"directory", "file" or "other" (symbolic links followed), None when nothing is there."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def in_the_way(path: Path, found: str | None) -> str:
    """What to do about what is at path, where the role needs the other kind. The sentence
    depends on path alone: several wanted paths under one wrong file give it once."""
    what = {"directory": "a directory, not a file", "file": "a file, not a directory"}.get(
        found or "", "neither a file nor a directory")
    moved = shlex.quote(f"{path}.old")
    return f"{path} is {what}: move it out of the way (mv {shlex.quote(str(path))} {moved}) and run again."


class Access:
    """What this process may create or change, as sentences that say what to do about it."""

    def __init__(self) -> None:
        self.uid = os.geteuid()
        self.user = pwd.getpwuid(self.uid).pw_name

    def not_ours(self, path: Path) -> bool:
        return self.uid != 0 and path.stat().st_uid != self.uid

    def belongs(self, path: Path) -> str:
        uid = path.stat().st_uid
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            owner = f"user {uid}"
        return (f"{path} belongs to {owner}, not {self.user}: give it back"
                f" (sudo chown -R {self.user} {shlex.quote(str(path))}) and run again.")

    def read_only(self, path: Path) -> str:
        quoted = shlex.quote(str(path))
        return f"{path} is read-only for {self.user}: make it writable (chmod u+w {quoted}) and run again."

    def directory(self, path: Path) -> str | None:
        """Why files cannot be created or replaced in this directory, or None."""
        if os.access(path, os.W_OK | os.X_OK):
            return None
        return self.belongs(path) if self.not_ours(path) else self.read_only(path)

    def wanted(self, path: Path, kind: str) -> dict[str, str | None]:
        real = Path(os.path.realpath(path))
        found = kind_of(real)
        if found is None:
            base = real.parent
            while base.parent != base and kind_of(base) is None:
                base = base.parent
            if kind_of(base) != "directory":
                return {"problem": in_the_way(base, kind_of(base)), "write": None}
            return {"problem": None, "write": self.directory(base)}
        if found != kind:
            return {"problem": in_the_way(path, found), "write": None}
        if kind == "directory":
            # The role sets its directories' mode (0700), which only their owner may do.
            return {"problem": None, "write": self.belongs(real) if self.not_ours(real) else None}
        if not os.access(real, os.R_OK):
            return {"problem": f"{path} cannot be read by {self.user}: make it readable"
                               f" (chmod u+r {shlex.quote(str(path))}) and run again.", "write": None}
        if not os.access(real, os.W_OK):
            return {"problem": None, "write": self.read_only(path)}
        # A changed file is written beside it, then renamed over it.
        return {"problem": None, "write": self.directory(real.parent)}
