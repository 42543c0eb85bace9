"""Benchmark: a class's launch (and stop, start, teardown) with 1, 10 and 30 labs in one run
against the emulator: wall time and AWS API calls, and how the time grows with the class.

    .venv/bin/python -m bench.class_scale [--sizes 1,10,30] [--runs N] [--lifecycle]

Each run starts from an empty emulated account and a fresh staff home, with a roster of N
students (each with an ed25519 key of their own) and the example class's settings
(inventories/csdl-class), provisioning only (gpu_lab_wait_for_ssh=false: no host to
configure). The target of issue 7: 30 labs in at most 4 times the time of one lab. Prints
medians; --lifecycle also times stop, start and teardown of the whole class.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from local_cloud.emulator import Emulator
from tests.playbook import REPO, recaps, run_playbook

CLASS = "bench"
EXTRA = {"gpu_lab_ssh_cidr": "198.51.100.0/24", "gpu_lab_wait_for_ssh": "false", "gpu_lab_confirm_teardown": CLASS,
         # The AWS half only: no host was set up to look at for unsaved work.
         "gpu_lab_force_teardown": "true"}


def make_class(root: Path, size: int, keys: list[str]) -> Path:
    inventory = root / "inventory"
    shutil.copytree(REPO / "inventories" / "csdl-class" / "group_vars", inventory / "group_vars")
    (inventory / "class.roster.yml").write_text(f"plugin: csdl.gpu_lab.roster\nclass: {CLASS}\nroster: roster.csv\n")
    rows = ["student,public_key"] + [f"s{i:03d},{keys[i]}" for i in range(size)]
    (inventory / "roster.csv").write_text("\n".join(rows) + "\n")
    return inventory


def student_keys(count: int, where: Path) -> list[str]:
    keys = []
    for i in range(count):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(where / f"k{i}")], check=True)
        keys.append((where / f"k{i}.pub").read_text().strip())
    return keys


def timed(emulator: Emulator, inventory: Path, home: Path, playbook: str) -> tuple[float, dict]:
    emulator.calls.reset()
    start = time.perf_counter()
    result = run_playbook(playbook, emulator.env(), home, EXTRA, "-i", str(inventory), timeout=1800)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{playbook} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    failed = [h for h, c in recaps(result.stdout).items() if c["failed"]]
    if failed:
        raise SystemExit(f"{playbook}: failed hosts {failed}")
    return elapsed, emulator.calls.snapshot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,30")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lifecycle", action="store_true", help="also stop, start and teardown")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = ["launch", "stop", "start", "teardown"] if args.lifecycle else ["launch"]
    emulator = Emulator().start()
    results: dict[tuple[int, str], list[tuple[float, dict]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = student_keys(max(sizes), Path(tmp))
            for _ in range(args.runs):
                for size in sizes:
                    emulator.reset()
                    run_root = Path(tmp) / f"run-{size}"
                    shutil.rmtree(run_root, ignore_errors=True)
                    inventory = make_class(run_root, size, keys)
                    for step in steps:
                        results.setdefault((size, step), []).append(
                            timed(emulator, inventory, run_root / "home", step))
    finally:
        emulator.stop()
    base = {step: statistics.median(r[0] for r in results[(sizes[0], step)]) for step in steps}
    lines = ["| labs | step | wall median (s) | min-max (s) | x one lab | API calls | mutating | calls per lab |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        for step in steps:
            runs = results[(size, step)]
            walls = [r[0] for r in runs]
            wall, calls = statistics.median(walls), runs[-1][1]
            lines.append(f"| {size} | {step} | {wall:.2f} | {min(walls):.2f}-{max(walls):.2f} "
                         f"| {wall / base[step]:.2f} | {calls['total']} | {calls['mutating']} "
                         f"| {calls['total'] / size:.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
