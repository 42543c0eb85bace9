"""Reaching Jupyter on a lab host as a student does: through `ssh -L`, with the token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - loopback tunnel
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - loopback tunnel
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        raw = answer.read()
        return json.loads(raw) if raw else None


class Tunnel:
    """`ssh -N -L local:localhost:8888 <lab>` with the lab's own ssh entry (pinned key);
    with ``entry_forward`` only the entry's own LocalForward, as `ssh-<lab>` opens it."""

    def __init__(self, home: Path, local_port: int, lab: str, entry_forward: bool = False) -> None:
        self.local_port = local_port
        forward = [] if entry_forward else ["-L", f"127.0.0.1:{local_port}:localhost:8888"]
        self.proc = subprocess.Popen(
            # ssh reads the passwd entry's home, not $HOME: name the sandbox's config.
            ["ssh", "-F", str(home / ".ssh" / "config"), "-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
             *forward, lab],
            env={**os.environ, "HOME": str(home)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ssh tunnel exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", local_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("ssh tunnel did not open")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def wait_for_jupyter(base: str, token: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http(f"{base}/api/status?token={token}")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Jupyter did not answer at {base}")
