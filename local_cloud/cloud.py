"""The emulated cloud: the EC2 API emulator plus, where the machine allows, a booted
stand-in host for every emulated instance, answering on the instance's Elastic IP.

Used three ways:
* by pytest, in-process (``Cloud(...).start()``, see tests/conftest.py);
* by the embedded default (``make demo``) and molecule, as a background process:

    python -m local_cloud up   --state-dir DIR [--no-hosts]
    python -m local_cloud env  --state-dir DIR     # shell exports for the API
    python -m local_cloud down --state-dir DIR     # leaves nothing behind
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_cloud.emulator import DEFAULT_REGIONS, Emulator

if TYPE_CHECKING:
    from local_cloud.standin.controller import Want

REPO = Path(__file__).resolve().parents[1]


def hosts_unavailable_reason() -> str | None:
    """Why stand-in hosts cannot boot here, or None when they can."""
    if sys.platform != "linux":
        return "stand-in hosts need Linux (systemd-nspawn, network namespaces)"
    if os.geteuid() != 0:
        return "stand-in hosts need root (mounts, network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "mmdebstrap", "ip", "nft", "zstd"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(":")):
            return f"stand-in hosts need `{tool}` (run scripts/bootstrap.sh as root)"
    return None


class Cloud:
    """The emulator and the stand-in hosts tied to its instances."""

    def __init__(self, state_dir: Path, hosts: bool = True, port: int = 0,
                 regions: tuple[str, ...] = DEFAULT_REGIONS, want: Want | None = None) -> None:
        """want: which running instances get a stand-in (None: all); tests change it
        with ``cloud.controller.only(predicate)``."""
        self.state_dir = Path(state_dir)
        self.emulator = Emulator(port=port, regions=regions)
        self.want = want
        self.hosts_reason = hosts_unavailable_reason() if hosts else "stand-in hosts turned off"
        self.controller: Any = None

    @property
    def hosts(self) -> bool:
        return self.hosts_reason is None

    def env(self) -> dict[str, str]:
        return self.emulator.env()

    def start(self) -> Cloud:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.emulator.start()
        if self.hosts:
            from local_cloud.standin.controller import HostController

            self.controller = HostController(self.emulator, self.state_dir / "hosts", want=self.want)
            self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        self.emulator.stop()


# --- the background process -------------------------------------------------------------

def _info_path(state_dir: Path) -> Path:
    return state_dir / "cloud.json"


def serve(state_dir: Path, hosts: bool, port: int) -> None:
    cloud = Cloud(state_dir, hosts=hosts, port=port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    info = {"pid": os.getpid(), "env": cloud.env(), "hosts": cloud.hosts,
            "hosts_reason": cloud.hosts_reason, "course_repo": ""}
    if cloud.controller is not None:
        from local_cloud.course import make_course_repo

        info["course_repo"], _ = make_course_repo(cloud.controller.share_dir)
    tmp = _info_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.rename(_info_path(state_dir))
    try:
        done.wait()
    finally:
        cloud.stop()
        _info_path(state_dir).unlink(missing_ok=True)


def read_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(_info_path(state_dir).read_text())
        os.kill(info["pid"], 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


def up(state_dir: Path, hosts: bool, port: int, timeout: float = 60) -> dict[str, Any]:
    state_dir.mkdir(parents=True, exist_ok=True)
    info = read_info(state_dir)
    if info:
        return info
    _info_path(state_dir).unlink(missing_ok=True)
    if hosts and hosts_unavailable_reason() is None:
        # The first build of the stand-in image (about 40 s, once) runs here, in the
        # foreground, where its progress lines reach the terminal (the background cloud's
        # output goes to cloud.log), and before the start's bound below begins.
        from local_cloud.standin.image import ensure_base

        ensure_base()
    log = (state_dir / "cloud.log").open("ab")
    cmd = [sys.executable, "-m", "local_cloud", "serve", "--state-dir", str(state_dir),
           "--port", str(port)] + ([] if hosts else ["--no-hosts"])
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulated cloud exited early; see {state_dir / 'cloud.log'}")
        info = read_info(state_dir)
        if info:
            return info
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"the emulated cloud did not start in {timeout:.0f} s; see {state_dir / 'cloud.log'}")


def down(state_dir: Path, timeout: float = 60) -> bool:
    info = read_info(state_dir)
    if not info:
        return False
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it when this process started it (up() in-process), or it stays a zombie.
            if os.waitpid(info["pid"], os.WNOHANG)[0] == info["pid"]:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(info["pid"], 0)
        except OSError:
            return True
        time.sleep(0.1)
    os.kill(info["pid"], signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cloud", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env", "serve"])
    parser.add_argument("--state-dir", type=Path, default=REPO / ".demo" / "cloud")
    parser.add_argument("--no-hosts", action="store_true", help="the EC2 API only, no stand-in hosts")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "serve":
        serve(state_dir, hosts=not args.no_hosts, port=args.port)
    elif args.command == "up":
        info = up(state_dir, hosts=not args.no_hosts, port=args.port)
        print(f"emulated EC2 API at {info['env']['AWS_ENDPOINT_URL']}", file=sys.stderr)
        if not info["hosts"]:
            print(f"no stand-in hosts: {info['hosts_reason']}; only the AWS half runs", file=sys.stderr)
    elif args.command == "env":
        info = read_info(state_dir)
        if not info:
            print(f"no emulated cloud is running for {state_dir}", file=sys.stderr)
            return 1
        for key, value in info["env"].items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "down":
        print("stopped the emulated cloud" if down(state_dir) else "no emulated cloud was running",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
