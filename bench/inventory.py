#!/usr/bin/env python3
"""How fast `ansible-inventory --list` is with csdl.gpu_lab.gpu_lab, next to amazon.aws.aws_ec2.

Starts the EC2 emulator, launches about 500 lab instances over 3 regions (a few stopped, a few
terminated, one reservation per instance as when each student launches their own), and times
the real CLI for both plugins on the same instances with equivalent configurations:

* ours cold: the cache is on but every run passes --flush-cache, so each run asks EC2 and
  writes the cache;
* ours cache hit: the same file without --flush-cache (no EC2 call at all);
* aws_ec2: the same tag and state filters, hostnames from the Name tag, the same groups
  made with keyed_groups;
* both again on 3 regions that hold no instance;
* a whole class (issue 7, target: the inventory of 300 labs in a class under 2 s): the
  csdl.gpu_lab.roster plugin on a roster of --students students (300), and the gpu_lab
  plugin with `classes: [<class>]` listing that many class labs' instances (tagged
  gpu_lab:class, in three regions of their own so the fleet figures stay comparable), asking EC2
  each run and from its cache.

Each figure is the median of --runs runs after one warm-up run. Usage, from the repo root:

    .venv/bin/python -m bench.inventory [--instances 500] [--students 300] [--runs 5] [--markdown] [--class-only]

--class-only measures the class cases (and the baseline) alone, without the fleet.

--markdown prints a section to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from local_cloud.emulator import DEFAULT_REGIONS, Emulator

ANSIBLE_INVENTORY = REPO / ".venv" / "bin" / "ansible-inventory"
EMPTY_REGIONS = ("eu-central-1", "ap-southeast-2", "sa-east-1")
LAB_TAG = "gpu_lab:lab"
CLASS_TAG = "gpu_lab:class"
CLASS = "dl2026"
# The class's own regions, apart from the fleet's, so the fleet's figures stay comparable with earlier runs.
CLASS_REGIONS = ("ca-central-1", "ap-northeast-1", "eu-north-1")
STATES = ["pending", "running", "stopping", "stopped"]


@dataclass
class Case:
    """One way of running `ansible-inventory --list`, and what its runs measured."""

    name: str
    source: Path
    extra: tuple[str, ...] = ()
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + sys of ansible-inventory only
    calls: list[int] = field(default_factory=list)
    hosts: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def api_calls(self) -> float:
        return statistics.mean(self.calls)


def launch(emulator: Emulator, count: int, regions: tuple[str, ...]) -> dict[str, int]:
    """count lab instances spread over regions; every 20th stopped, every 25th terminated."""
    import boto3

    session = boto3.Session(**_credentials(emulator))
    clients = {r: session.client("ec2", region_name=r, endpoint_url=emulator.url) for r in regions}
    amis = {r: next(iter(emulator.dlami[r].values())) for r in regions}

    def run(n: int) -> tuple[str, str, int]:
        region = regions[n % len(regions)]
        lab = f"student{n:04d}"
        tags = [
            {"Key": LAB_TAG, "Value": lab},
            {"Key": "gpu_lab:managed_by", "Value": "csdl.gpu_lab"},
            {"Key": "Name", "Value": f"{lab}-server"},
        ]
        answer = clients[region].run_instances(
            ImageId=amis[region],
            InstanceType="g6.xlarge" if n % 7 else "g5.2xlarge",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        return region, answer["Instances"][0]["InstanceId"], n

    with ThreadPoolExecutor(max_workers=8) as pool:
        launched = list(pool.map(run, range(count)))

    stopped = [(r, i) for r, i, n in launched if n % 20 == 3]
    terminated = [(r, i) for r, i, n in launched if n % 25 == 7]
    for region in regions:
        if ids := [i for r, i in stopped if r == region]:
            clients[region].stop_instances(InstanceIds=ids)
        if ids := [i for r, i in terminated if r == region]:
            clients[region].terminate_instances(InstanceIds=ids)
    return {
        "launched": count,
        "stopped": len(stopped),
        "terminated": len(terminated),
        "listed": count - len(terminated),
    }


def launch_class(emulator: Emulator, students: int, regions: tuple[str, ...]) -> int:
    """One running lab per student of the class, tagged as the roster playbooks tag them."""
    import boto3

    session = boto3.Session(**_credentials(emulator))
    clients = {r: session.client("ec2", region_name=r, endpoint_url=emulator.url) for r in regions}
    amis = {r: next(iter(emulator.dlami[r].values())) for r in regions}

    def run(n: int) -> None:
        region = regions[n % len(regions)]
        student = f"s{n:04d}"
        tags = [
            {"Key": LAB_TAG, "Value": f"{CLASS}-{student}"},
            {"Key": CLASS_TAG, "Value": CLASS},
            {"Key": "gpu_lab:student", "Value": student},
            {"Key": "gpu_lab:managed_by", "Value": "csdl.gpu_lab"},
            {"Key": "Name", "Value": f"{CLASS}-{student}-server"},
        ]
        clients[region].run_instances(
            ImageId=amis[region],
            InstanceType="g6.xlarge",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, range(students)))
    return students


def write_class_configs(workdir: Path, regions: tuple[str, ...], students: int) -> tuple[Path, Path, Path]:
    """A roster of `students` (CSV, one well-formed ed25519 key each) and a gpu_lab source for the class."""
    import base64
    import struct

    folder = workdir / CLASS
    folder.mkdir()
    rows = ["student,public_key"]
    for n in range(students):
        blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + n.to_bytes(32, "big")
        rows.append(f"s{n:04d},ssh-ed25519 {base64.b64encode(blob).decode()} s{n:04d}@uni")
    (folder / "students.csv").write_text("\n".join(rows) + "\n")
    roster = folder / "class.roster.yml"
    roster.write_text(json.dumps({"plugin": "csdl.gpu_lab.roster", "class": CLASS, "roster": "students.csv"}))
    servers = folder / "servers.gpu_lab.yml"
    config = {"plugin": "csdl.gpu_lab.gpu_lab", "regions": list(regions), "classes": [CLASS]}
    servers.write_text(json.dumps(config))
    cached = folder / "cached.gpu_lab.yml"
    cache = {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(workdir / "class_cache"),
    }
    cached.write_text(json.dumps({**config, **cache, "cache_timeout": 3600}))
    return roster, servers, cached


def _credentials(emulator: Emulator) -> dict[str, str]:
    env = emulator.env()
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}


def write_configs(workdir: Path, regions: tuple[str, ...], name: str) -> tuple[Path, Path]:
    ours = workdir / f"{name}.gpu_lab.yml"
    ours.write_text(
        json.dumps(
            {
                "plugin": "csdl.gpu_lab.gpu_lab",
                "regions": list(regions),
                "labs": [],
                "cache": True,
                "cache_plugin": "ansible.builtin.jsonfile",
                "cache_connection": str(workdir / "cache"),
                "cache_timeout": 3600,
            },
            indent=2,
        )
    )
    theirs = workdir / f"{name}.aws_ec2.yml"
    theirs.write_text(
        json.dumps(
            {
                "plugin": "amazon.aws.aws_ec2",
                "regions": list(regions),
                "filters": {"tag-key": LAB_TAG, "instance-state-name": STATES},
                "hostnames": ["tag:Name"],
                "compose": {"ansible_host": "public_ip_address", "ansible_user": "'ubuntu'"},
                "keyed_groups": [
                    {"key": f"tags['{LAB_TAG}']", "separator": ""},
                    {"key": "state.name", "prefix": "state"},
                    {"key": "instance_type", "prefix": "type"},
                    {"key": "placement.region", "prefix": "region"},
                ],
            },
            indent=2,
        )
    )
    return ours, theirs


def run_case(emulator: Emulator, case: Case, record: bool) -> None:
    env = {**os.environ, **emulator.env(), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"}
    emulator.calls.reset()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(case.source), "--list", *case.extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{case.name}: ansible-inventory failed:\n{done.stderr}")
    case.hosts = len(json.loads(done.stdout).get("_meta", {}).get("hostvars", {}))
    if record:
        case.seconds.append(elapsed)
        case.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        case.calls.append(emulator.calls.snapshot()["total"])


def measure(emulator: Emulator, cases: dict[str, Case], runs: int) -> None:
    """Round-robin over the cases, so a busy moment of a shared machine hits all of them alike.

    Round 0 only warms up (.pyc files, the file system cache). In each round the cold run of
    gpu_lab comes right before its cache hit, which reads what the cold run wrote.
    """
    for round_ in range(runs + 1):
        for case in cases.values():
            run_case(emulator, case, record=round_ > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--class-only", action="store_true", help="only the class cases and the baseline")
    parser.add_argument("--markdown", action="store_true", help="print a section for docs/benchmarks.md")
    args = parser.parse_args()

    emulator = Emulator(regions=DEFAULT_REGIONS + CLASS_REGIONS).start()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_lab_bench_") as tmp:
            workdir = Path(tmp)
            started = time.perf_counter()
            fleet = {"launched": 0, "stopped": 0, "terminated": 0, "listed": 0}
            if not args.class_only:
                fleet = launch(emulator, args.instances, DEFAULT_REGIONS)
            fleet["class"] = launch_class(emulator, args.students, CLASS_REGIONS)
            setup = time.perf_counter() - started
            print(f"launched {fleet} in {setup:.1f} s", file=sys.stderr)

            results: dict[str, Case] = {}
            if not args.class_only:
                ours, theirs = write_configs(workdir, DEFAULT_REGIONS, "fleet")
                ours_empty, theirs_empty = write_configs(workdir, EMPTY_REGIONS, "empty")
                results = {
                    "ours": Case("gpu_lab, cold (--flush-cache)", ours, ("--flush-cache",)),
                    "hit": Case("gpu_lab, cache hit", ours),
                    "theirs": Case("amazon.aws.aws_ec2", theirs),
                    "ours_empty": Case("gpu_lab, empty regions", ours_empty, ("--flush-cache",)),
                    "theirs_empty": Case("amazon.aws.aws_ec2, empty regions", theirs_empty),
                }
            roster, servers, cached = write_class_configs(workdir, CLASS_REGIONS, args.students)
            results["roster"] = Case(f"roster, {args.students} students", roster)
            results["class"] = Case(f"gpu_lab, classes: [{CLASS}] (no cache)", servers)
            results["class_hit"] = Case(f"gpu_lab, classes: [{CLASS}], cache hit", cached)
            results["baseline"] = Case("baseline: one static host", REPO / "inventories" / "csdl" / "localhost.yml")
            load_before = os.getloadavg()[0]
            measure(emulator, results, args.runs)
            load_after = os.getloadavg()[0]
    finally:
        emulator.stop()

    for key in ("roster", "class", "class_hit"):
        if results[key].hosts != fleet["class"]:
            raise SystemExit(f"{results[key].name} listed {results[key].hosts} hosts, expected {fleet['class']}")
    for key in ("ours", "hit", "theirs") if not args.class_only else ():
        if results[key].hosts != fleet["listed"]:
            raise SystemExit(f"{results[key].name} listed {results[key].hosts} hosts, expected {fleet['listed']}")
    report(results, fleet, args, (load_before, load_after))


ORDER = ("ours", "hit", "theirs", "ours_empty", "theirs_empty", "roster", "class", "class_hit", "baseline")


def report(results: dict[str, Case], fleet: dict[str, int], args: Any, load: tuple[float, float]) -> None:
    base = results["baseline"]
    class_summary = (
        f"A class of {fleet['class']}: the roster {results['roster'].median:.2f} s "
        f"({results['roster'].median - base.median:+.2f} s over the baseline), its servers with classes "
        f"{results['class'].median:.2f} s asking EC2, {results['class_hit'].median:.2f} s from the cache "
        "(target under 2 s)."
    )
    if args.class_only:
        summary = class_summary
    else:
        ratio = results["ours"].median / results["theirs"].median
        ratio_cpu = results["ours"].cpu_median / results["theirs"].cpu_median
        ratio_empty = results["ours_empty"].median / results["theirs_empty"].median
        hit = results["hit"].median
        summary = (
            f"gpu_lab / aws_ec2 with {fleet['listed']} hosts: {ratio:.2f} wall, {ratio_cpu:.2f} CPU (target at most "
            f"0.50); empty regions: {ratio_empty:.2f}; cache hit: {hit:.2f} s (target under 1 s). {class_summary}"
        )
    order = [k for k in ORDER if k in results]
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    fleet_line = (
        f"{fleet['launched']} instances over {len(DEFAULT_REGIONS)} regions ({', '.join(DEFAULT_REGIONS)}), "
        f"{fleet['stopped']} stopped, {fleet['terminated']} terminated; empty regions: {', '.join(EMPTY_REGIONS)}; "
        f"plus {fleet['class']} running labs of class {CLASS} over {', '.join(CLASS_REGIONS)}"
    )
    load_line = f"load average {load[0]:.1f} before, {load[1]:.1f} after"
    if not args.markdown:
        print(f"{fleet_line}\n{machine}, {load_line}")
        print(f"median of {args.runs} interleaved runs of `ansible-inventory --list`\n")
        print(f"{'case':40} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>7} {'hosts':>6} {'API calls':>10}")
        for case in (results[k] for k in order):
            print(
                f"{case.name:40} {case.median:9.2f} {min(case.seconds):7.2f} {max(case.seconds):7.2f} "
                f"{case.cpu_median:7.2f} {case.hosts:6d} {case.api_calls:10.1f}"
            )
        print(f"\n{summary}")
        return
    print("## Inventory plugin: `csdl.gpu_lab.gpu_lab` vs `amazon.aws.aws_ec2`\n")
    print(
        f"`.venv/bin/python -m bench.inventory --instances {args.instances} --students {args.students} "
        f"--runs {args.runs} --markdown{' --class-only' if args.class_only else ''}`"
    )
    print(f"against the EC2 emulator: {fleet_line}. {machine}, {load_line}.")
    print(f"Each figure is the median of {args.runs} runs of `ansible-inventory --list`, the cases interleaved,")
    print("after one warm-up round. CPU is the user + system time of `ansible-inventory` alone (the emulator")
    print("runs in the benchmark's process), so it is the figure a busy machine disturbs least. Both plugins use")
    print("the same tag and state filters and make equivalent groups; the baseline is `ansible-inventory` on")
    print("one static host, that is Ansible's own start-up.\n")
    print("| case | median (s) | min (s) | max (s) | CPU (s) | hosts | API calls per run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in (results[k] for k in order):
        print(
            f"| {case.name} | {case.median:.2f} | {min(case.seconds):.2f} | {max(case.seconds):.2f} | "
            f"{case.cpu_median:.2f} | {case.hosts} | {case.api_calls:.0f} |"
        )
    print(f"\n{summary}")


if __name__ == "__main__":
    main()
