"""Benchmark: end-to-end launch until Jupyter answers through the SSH tunnel, and its re-run.

    .venv/bin/python -m bench.launch_e2e [--runs N]

Needs root on Linux (a booted stand-in host, whose /opt/pytorch already has JupyterLab, as
the Deep Learning AMI does). Each run starts from an empty emulated account and a fresh
sandbox home. Prints wall times (median), changed counts, and the slowest tasks of the last
cold run and re-run (ansible.posix.profile_tasks), so docs/benchmarks.md can say where the
time goes.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from tests.playbook import recaps, run_playbook

LAB = "bench"


def jupyter_through_tunnel(home: Path, timeout: float = 60) -> float:
    """Seconds until /api/status answers 200 through `ssh -L` with the lab's ssh entry."""
    start = time.perf_counter()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = (home / ".gpu_lab" / LAB / "jupyter_token").read_text().strip()
    tunnel = subprocess.Popen(["ssh", "-F", str(home / ".ssh" / "config"), "-N", "-o", "BatchMode=yes",
                               "-L", f"127.0.0.1:{port}:localhost:8888", LAB], stdin=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",  # noqa: S310
                                            timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise SystemExit("Jupyter did not answer through the tunnel")
    finally:
        tunnel.terminate()
        tunnel.wait()


def slowest(output: str, n: int = 8) -> list[str]:
    """The profile_tasks recap lines (task --- seconds), slowest first."""
    lines = [line for line in output.splitlines() if re.search(r" -+ \d+\.\d+s$", line)]
    return lines[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=8, help="how many of the slowest tasks to print")
    args = parser.parse_args()
    cloud = Cloud(Path(tempfile.mkdtemp(prefix="gpu_lab_bench_")), hosts=True).start()
    if not cloud.hosts:
        raise SystemExit(f"needs stand-in hosts: {cloud.hosts_reason}")
    env = {**cloud.env(), "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
    cold, tunnel, rerun, profiles = [], [], [], {}
    try:
        for _ in range(args.runs):
            cloud.emulator.reset()
            cloud.controller.wait_settled()
            url, _ = make_course_repo(cloud.controller.share_dir)
            lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url,
                   "gpu_lab_confirm_teardown": LAB, "gpu_lab_force_teardown": "true"}
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp)
                start = time.perf_counter()
                first = run_playbook("launch", env, home, lab)
                cold.append(time.perf_counter() - start)
                if first.returncode != 0:
                    raise SystemExit(first.stdout[-3000:])
                tunnel.append(jupyter_through_tunnel(home))
                start = time.perf_counter()
                again = run_playbook("launch", env, home, lab)
                rerun.append(time.perf_counter() - start)
                changed = {h: r["changed"] for h, r in recaps(again.stdout).items()}
                profiles = {"cold": slowest(first.stdout, args.tasks), "re-run": slowest(again.stdout, args.tasks)}
                run_playbook("teardown", env, home, lab)
    finally:
        cloud.stop()
    print("| step | median (s) | runs (s) |")
    print("| --- | ---: | --- |")
    for name, values in (("launch, cold (to the summary)", cold),
                         ("then Jupyter through the tunnel", tunnel),
                         ("launch to Jupyter answering", [c + t for c, t in zip(cold, tunnel, strict=True)]),
                         ("launch, re-run", rerun)):
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\nre-run changed counts: {changed}")
    for name, lines in profiles.items():
        print(f"\nslowest tasks, {name}:")
        print("\n".join(f"    {line.strip()}" for line in lines))


if __name__ == "__main__":
    main()
