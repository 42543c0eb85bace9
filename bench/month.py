"""A month of a typical course, priced from gpu_lab's own cost view (docs/cost.md).

Runs the real playbooks against the emulated cloud (no stand-in hosts): an on-demand lab and a
spot lab are launched and their `status.yml` JSON read (the region's prices from the emulated
Price List API; the spot price of the type in the lab's zone from DescribeSpotPriceHistory);
then the lab is stopped and shelved, and the shelf's monthly cost read from status.yml too.
From those figures alone: 40 hours of use in a month, stopped the rest, then a month shelved;
beside the tutorial's way (p3.2xlarge, stopped by hand) and SkyPilot's (on demand with
autostop; its spot clusters cannot stop). The emulator's spot price is a share of on demand
(local_cloud/spot.py, SPOT_SHARE: the middle of the 50-70 % AWS's Spot Instance Advisor shows
for G types); a real account's varies by zone and hour.

    .venv/bin/python -m bench.month [--hours 40] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from local_cloud.cloud import Cloud
from local_cloud.pricing import HOURLY_USD
from tests.playbook import run_playbook

LAB = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
HOURS_PER_MONTH = 730


def status(cloud: Cloud, home: Path, settings: dict[str, str]) -> dict[str, Any]:
    out = home / "status.json"
    ran = run_playbook("status", cloud.env(), home, {**settings, "gpu_lab_status_file": str(out)})
    if ran.returncode != 0:
        raise SystemExit(f"status.yml failed:\n{ran.stdout[-2000:]}")
    return json.loads(out.read_text())


def step(cloud: Cloud, home: Path, name: str, settings: dict[str, str]) -> None:
    ran = run_playbook(name, cloud.env(), home, settings)
    if ran.returncode != 0:
        raise SystemExit(f"{name}.yml failed:\n{ran.stdout[-2000:]}")


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        cloud = Cloud(root / "cloud", hosts=False).start()
        try:
            home = root / "home"
            home.mkdir()
            on_demand = {**LAB, "gpu_lab_name": "month"}
            step(cloud, home, "launch", on_demand)
            running = status(cloud, home, on_demand)
            step(cloud, home, "stop", on_demand)
            step(cloud, home, "shelve", on_demand)
            shelved = status(cloud, home, on_demand)
            spot_home = root / "spot"
            spot_home.mkdir()
            spot = {**LAB, "gpu_lab_name": "month-spot", "gpu_lab_market": "spot"}
            step(cloud, spot_home, "launch", spot)
            spot_running = status(cloud, spot_home, spot)
        finally:
            cloud.stop()
    return {"running": running, "shelved": shelved, "spot": spot_running}


def month(figures: dict[str, Any], hours: float) -> list[tuple[str, float, str]]:
    running, shelved, spot = figures["running"], figures["shelved"], figures["spot"]
    hourly = float(running["hourly_usd"])
    spot_hourly = float(spot["spot"]["usd_per_hour"])
    stopped = float(running["stopped_monthly_usd"]["disk"]) + float(running["stopped_monthly_usd"]["addresses"])
    shelf = float(shelved["shelf"]["monthly_usd"])
    disk = float(running["stopped_monthly_usd"]["disk"])
    p3 = HOURLY_USD["us-east-1"]["p3.2xlarge"]
    return [
        (f"gpu_lab on demand ({running['type']}), {hours:g} h, stopped the rest", hours * hourly + stopped,
         f"{hours:g} x ${hourly} + disk and address ${stopped:.2f}"),
        (f"gpu_lab spot ({spot['type']}), {hours:g} h, stopped the rest", hours * spot_hourly + stopped,
         f"{hours:g} x ${spot_hourly} ({spot['spot']['saving_percent']} % below) + ${stopped:.2f}"),
        ("gpu_lab, a month stopped (no use)", stopped, f"disk ${disk:.2f} + Elastic IP ${stopped - disk:.2f}"),
        ("gpu_lab, a month shelved (after the course)", shelf,
         f"{shelved['shelf']['size_gib']} GiB of snapshots at most; instance and address gone"),
        ("the tutorial: p3.2xlarge on demand, stopped by hand, Elastic IP", hours * p3 + stopped,
         f"{hours:g} x ${p3} + ${stopped:.2f}; a weekend forgotten running adds ${48 * p3:.2f}"),
        (f"SkyPilot on demand ({running['type']}) with autostop, no Elastic IP", hours * hourly + disk + hours * 0.005,
         f"{hours:g} x ${hourly} + disk ${disk:.2f} + IPv4 while running; its address changes at each start"),
        ("SkyPilot spot: cannot stop (its issue #257), so kept up or torn down",
         HOURS_PER_MONTH * spot_hourly + disk,
         f"kept up: {HOURS_PER_MONTH} x ${spot_hourly} + disk; or down: the disk is lost"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=40.0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = month(measure(), args.hours)
    if args.markdown:
        print("| a month of | USD | how |")
        print("| --- | ---: | --- |")
        for what, usd, how in rows:
            print(f"| {what} | {usd:.2f} | {how} |")
    else:
        for what, usd, how in rows:
            print(f"{usd:9.2f}  {what}  ({how})")


if __name__ == "__main__":
    main()
