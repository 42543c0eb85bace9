"""The workstation's address: with gpu_lab_ssh_cidr empty, launch.yml asks the address check
(gpu_lab_ip_check_url; here local_cloud/checkip.py, a stand-in for checkip.amazonaws.com) once,
in the check step. A plain IPv4 answer becomes the security group's only SSH source (a /32);
an IPv6 address, a captive portal's page, another text, a check that hangs or refuses each
stop the launch with its own sentence, before any mutating call: nothing is created in the
emulator, and no key file on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cloud.checkip import ADDRESS, CheckIp
from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import run_playbook

LAB = "addr"
DETECT = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "", "gpu_lab_wait_for_ssh": "false"}
START = "Could not detect this machine's public IPv4 address: the address check "

BAD = [
    ("ipv6", "ipv6", "answered with the IPv6 address 2001:db8::7, and the security group's SSH rule needs an IPv4 "
     "address (your network seems IPv6-only, or the check answered over IPv6), so nothing was created: set "
     "gpu_lab_ssh_cidr to your public IPv4 address as a /32"),
    ("captive portal", "portal", "answered with a web page ('Guest Wi-Fi: log in') instead of an address, as a Wi-Fi "
     "captive portal does until you log in, so nothing was created: open a browser, log in to the network and run "
     "again, or set gpu_lab_ssh_cidr"),
    ("other text", "text", "answered 'Service busy, try again later', which is not an IP address, so nothing was "
     "created: set gpu_lab_ssh_cidr"),
    ("hangs", "hang", "did not answer (no answer within 5 s), so nothing was created: set gpu_lab_ssh_cidr to your "
     "public IPv4 address as a /32, e.g. -e gpu_lab_ssh_cidr=203.0.113.7/32, or gpu_lab_ip_check_url to an "
     "address check this machine can reach"),
    ("refused", None, "did not answer (connection refused), so nothing was created: set gpu_lab_ssh_cidr"),
]


@pytest.fixture
def check() -> Iterator[CheckIp]:
    with CheckIp() as served:
        yield served


def flat(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


def test_the_detected_address_is_the_only_ssh_source(cloud: Cloud, aws: Callable[..., Any], check: CheckIp,
                                                    tmp_path: Path) -> None:
    result = run_playbook("launch", cloud.env(), tmp_path / "home",
                          {**DETECT, "gpu_lab_ip_check_url": check.url("spaced")})
    assert result.returncode == 0, result.stdout[-3000:]
    assert check.asked == ["/spaced"]  # once, whitespace around the address and all
    (group,) = lab_state(aws("ec2"), LAB)["groups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]],
             p.get("Ipv6Ranges", [])) for p in group["IpPermissions"]] == [("tcp", 22, 22, [f"{ADDRESS}/32"], [])]


@pytest.mark.parametrize(("what", "path", "says"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_answer_stops_the_launch_with_nothing_created(cloud: Cloud, aws: Callable[..., Any], check: CheckIp,
                                                            tmp_path: Path, what: str, path: str | None,
                                                            says: str) -> None:
    url = check.url(path) if path is not None else check.refused_url()
    home = tmp_path / "home"
    cloud.emulator.calls.reset()
    began = time.monotonic()
    result = run_playbook("launch", cloud.env(), home, {**DETECT, "gpu_lab_ip_check_url": url}, timeout=120)
    took = time.monotonic() - began
    out = flat(result)
    assert result.returncode != 0, out[-3000:]
    assert f"{START}{url} {says}" in out, out[-3000:]
    assert out.count(START) == 1, out[-3000:]  # one sentence, said once
    assert check.asked == ([f"/{path}"] if path else [])
    calls = cloud.emulator.calls.snapshot()
    assert calls["mutating"] == 0, calls["by_action"]
    state = lab_state(aws("ec2"), LAB)
    assert {k: v for k, v in state.items() if v} == {}, state
    assert aws("ec2").describe_key_pairs()["KeyPairs"] == []
    assert not list(home.glob(".ssh/*.pem")) and not (home / ".gpu_lab" / LAB).exists()
    assert took < 30, took  # the hanging check gives up after IP_CHECK_TIMEOUT (5 s), not after minutes
