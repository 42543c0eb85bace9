"""Benchmark: wall time and AWS API calls of each lifecycle step against the emulator.

    .venv/bin/python -m bench.lifecycle [--runs N] [--markdown]

Each run starts from an empty emulated account (and an empty home: no cached prices): cold
launch, re-run, status twice (prices asked, then cached), stop, start, teardown; then the
plain amazon.aws yardstick: bench/baseline_playbook.yml (launch), cold and re-run,
bench/baseline_stop.yml and bench/baseline_teardown.yml. API calls are counted at the
emulator's HTTP boundary, split into mutating and read-only. Prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_cloud.emulator import Emulator
from tests.playbook import REPO, recap, run_playbook

LAB = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false", "gpu_lab_confirm_teardown": "csdl",
       # The AWS half only: no host was set up to look at for unsaved work.
       "gpu_lab_force_teardown": "true"}
# Each step beside the plain amazon.aws playbook doing the same (bench/baseline_*.yml).
PLAYBOOKS = {
    "launch (cold)": "launch", "launch (re-run)": "launch",
    # The first status asks the Price List API for the region; the second finds them cached.
    "status (prices asked)": "status", "status (prices cached)": "status",
    "stop": "stop", "start": "start", "teardown": "teardown",
    "yardstick (cold)": "bench/baseline_playbook.yml", "yardstick (re-run)": "bench/baseline_playbook.yml",
    "yardstick stop": "bench/baseline_stop.yml", "yardstick teardown": "bench/baseline_teardown.yml",
}
STEPS = list(PLAYBOOKS)


def timed(emulator: Emulator, home: Path, playbook: str) -> tuple[float, dict[str, int], dict[str, int]]:
    emulator.calls.reset()
    start = time.perf_counter()
    if playbook.startswith("bench/"):
        env = {**emulator.env()}
        result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), playbook],
                                cwd=REPO, env={**env, "HOME": str(home), "PATH": "/usr/bin:/bin"},
                                capture_output=True, text=True, check=False)
    else:
        result = run_playbook(playbook, emulator.env(), home, LAB)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{playbook} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return elapsed, emulator.calls.snapshot(), recap(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    emulator = Emulator().start()
    results: dict[str, list[tuple[float, dict, dict]]] = {s: [] for s in STEPS}
    try:
        for _ in range(args.runs):
            emulator.reset()
            with tempfile.TemporaryDirectory() as tmp:
                home = Path(tmp)
                for step, playbook in PLAYBOOKS.items():
                    results[step].append(timed(emulator, home, playbook))
    finally:
        emulator.stop()
    rows = []
    for step in STEPS:
        runs = results[step]
        wall = statistics.median(r[0] for r in runs)
        calls = runs[-1][1]
        changed = runs[-1][2].get("changed", 0)
        rows.append((step, wall, min(r[0] for r in runs), max(r[0] for r in runs),
                     calls["total"], calls["mutating"], calls["read_only"], changed))
    header = "| step | wall median (s) | min-max (s) | API calls | mutating | read-only | changed |"
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {s} | {w:.2f} | {lo:.2f}-{hi:.2f} | {t} | {m} | {ro} | {c} |" for s, w, lo, hi, t, m, ro, c in rows]
    print("\n".join(lines))
    if not args.markdown:
        for step in ("launch (cold)", "status (prices asked)"):
            last = results[step][-1][1]["by_action"]
            print(f"\n{step} calls by action:", ", ".join(f"{a} {n}" for a, n in sorted(last.items())))


if __name__ == "__main__":
    main()
