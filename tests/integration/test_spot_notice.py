"""The spot interruption notice and EC2's own restart (roles/idle_autostop, local_cloud/imds.py).

Locally, with no host and no sleeping: the checker's watcher (files/idle_check.py
``--watch-spot``) driven by a fake host and a fake metadata service, and the emulator's metadata
service (local_cloud/imds.py) asked over HTTP on loopback by the checker's own IMDSv2 client.

On stand-in hosts, one lab of three configured by one ansible-playbook run with the idle
auto-stop (no Jupyter; the load check out of reach, see test_idle_autostop.py):

    notice    spot, a 60 min window: the metadata from inside; the notice reaches an ssh terminal
    ondemand  on-demand: the metadata tells the two apart; the watcher ends, the role stays idempotent
    restart   spot, a 15 s window: interrupted by EC2, started again by EC2 (capacity back); the idle
              auto-stop powers it off by itself, which disables the request (EC2 will not start it)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.emulator import DLAMI_LINES, dlami_parameter_name
from local_cloud.imds import ImdsService
from local_cloud.standin import net
from tests.integration.test_idle_autostop import Lab, LabHost, checker
from tests.playbook import changed_tasks, recaps
from tests.standins import key_pair_file, standin_clients

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
SPOT = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}}


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the watcher, locally ----------------------------------------------------------------

class FakeHost:
    def __init__(self) -> None:
        self.clock = T0
        self.logs: list[tuple[str, str]] = []
        self.walls: list[str] = []

    def log(self, priority: str, message: str) -> None:
        self.logs.append((priority, message))

    def wall(self, message: str) -> None:
        self.walls.append(message)

    def sleep(self, seconds: float) -> None:
        self.clock += max(0.0, seconds)

    def now(self) -> float:
        return self.clock

    def warnings(self) -> list[str]:
        return [m for p, m in self.logs if p == checker.WARNING]


class FakeImds:
    """Answers by path: a string, None (404), or an exception to raise; callables get the clock."""

    def __init__(self, host: FakeHost, **answers: Any) -> None:
        self.host = host
        self.answers = {"instance-life-cycle": "spot", "spot/instance-action": None, **answers}
        self.asked: list[tuple[float, str]] = []

    def get(self, path: str) -> str | None:
        self.asked.append((self.host.clock, path))
        answer = self.answers[path]
        if callable(answer):
            answer = answer(self.host.clock)
        if isinstance(answer, Exception):
            raise answer
        return answer


def spot_config(tmp_path: Path, poll: int = 5) -> dict[str, Any]:
    return {"lab": "unit", "spot": {"enabled": True, "poll_seconds": poll, "state_file": str(tmp_path / "spot.json")}}


def test_a_notice_is_told_once_at_once(tmp_path: Path) -> None:
    host = FakeHost()
    notice_at = T0 + 32  # EC2 posts it between two looks
    notice = json.dumps({"action": "stop", "time": _stamp(notice_at + 120)})
    imds = FakeImds(host, **{"spot/instance-action": lambda now: notice if now >= notice_at else None})
    state = checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=30)
    assert len(host.walls) == 1, host.walls
    wall = host.walls[0]
    assert wall.startswith(f"gpu_lab unit: AWS is taking this spot GPU server back at "
                           f"{dt.datetime.fromtimestamp(notice_at + 120, dt.UTC):%H:%M:%S} UTC (in about ")
    assert "save your work now" in wall and "It stops; its disk stays" in wall
    told_at = state["notified_at"]
    assert notice_at <= told_at <= notice_at + 5, "told at the first look after the notice"
    assert "(in about 117 s)" in wall or "(in about 118 s)" in wall or "(in about 120 s)" in wall
    warnings = host.warnings()
    assert len(warnings) == 1 and warnings[0].startswith("spot interruption notice: gpu_lab unit: AWS is taking")
    assert [p for _, p in imds.asked].count("instance-life-cycle") == 1  # asked once, then only the notice
    looks = [t for t, path in imds.asked if path == "spot/instance-action"]
    assert {b - a for a, b in zip(looks, looks[1:], strict=False)} == {5.0}

    # Another notice (EC2 posts a new time) is told again.
    later = json.dumps({"action": "stop", "time": _stamp(T0 + 600)})
    imds.answers["spot/instance-action"] = later
    checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=3)
    assert len(host.walls) == 2


def test_a_restarted_watcher_does_not_tell_it_twice_but_a_new_boot_does(tmp_path: Path) -> None:
    host = FakeHost()
    imds = FakeImds(host, **{"spot/instance-action": json.dumps({"action": "stop", "time": _stamp(T0 + 120)})})
    checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=2)
    checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=2)  # systemd restarted it
    assert len(host.walls) == 1
    saved = json.loads((tmp_path / "spot.json").read_text())
    assert saved["notified"] == f"stop@{_stamp(T0 + 120)}" and saved["boot_id"] == "boot-1"
    checker.watch_spot(spot_config(tmp_path), host, imds, "boot-2", polls=1)
    assert len(host.walls) == 2


def test_the_status_says_a_notice_came_before_this_boot(tmp_path: Path) -> None:
    """The notice told stays in the watcher's state across boots: the host's status then says
    AWS stopped the host and started it again since (the status view warns of an unasked run)."""
    config = {**spot_config(tmp_path), "state_file": str(tmp_path / "idle.json")}
    assert checker.spot_notice_status(config["spot"]["state_file"], "boot-1") is None
    host = FakeHost()
    imds = FakeImds(host, **{"spot/instance-action": json.dumps({"action": "stop", "time": _stamp(T0 + 120)})})
    checker.watch_spot(config, host, imds, "boot-1", polls=1)
    said = checker.status(config, T0 + 10, True, "boot-1")["spot_notice"]
    assert (said["time"], said["action"], said["this_boot"]) == (_stamp(T0 + 120), "stop", True)
    imds.answers["spot/instance-action"] = None  # EC2 started it again: no notice now
    checker.watch_spot(config, host, imds, "boot-2", polls=1)
    after = checker.status(config, T0 + 900, True, "boot-2")["spot_notice"]
    assert (after["time"], after["this_boot"]) == (_stamp(T0 + 120), False)


def test_an_on_demand_host_is_left_alone(tmp_path: Path) -> None:
    host = FakeHost()
    imds = FakeImds(host, **{"instance-life-cycle": "on-demand"})
    state = checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1")  # no poll limit: it must end
    assert state["lifecycle"] == "on-demand" and host.walls == [] and host.clock == T0
    assert [p for _, p in imds.asked] == ["instance-life-cycle"]
    assert host.logs == [(checker.INFO, "not a Spot Instance (instance-life-cycle: on-demand): no interruption "
                                        "notice to watch for")]


def test_no_metadata_service_is_counted_logged_less_and_backs_off(tmp_path: Path) -> None:
    host = FakeHost()
    refused = checker.ImdsError("no instance metadata at http://169.254.169.254: [Errno 111] Connection refused")
    imds = FakeImds(host, **{"instance-life-cycle": lambda now: refused if now < T0 + 86400 else "spot"})
    state = checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=20)
    assert host.walls == []
    assert state["errors"] == 20 and "Connection refused" in state["last_error"]
    logged = host.warnings()
    assert [m.split("(")[1].split(" ")[0] for m in logged] == ["1", "2", "4", "8", "16"]
    looks = [t for t, _ in imds.asked]
    gaps = [b - a for a, b in zip(looks, looks[1:], strict=False)]
    assert gaps[:4] == [10.0, 20.0, 40.0, 80.0] and max(gaps) == checker.SPOT_MAX_BACKOFF
    assert json.loads((tmp_path / "spot.json").read_text())["errors"] == 20

    host.clock = T0 + 86400  # the service answers (again): said once, the count starts over
    state = checker.watch_spot(spot_config(tmp_path), host, imds, "boot-1", polls=2)
    assert state["errors"] == 0 and state["lifecycle"] == "spot"
    assert (checker.INFO, "the instance metadata answers again, after 20 failed tries") in host.logs


def test_errors_on_a_spot_host_keep_the_pace_and_a_crash_does_not_end_the_loop(tmp_path: Path) -> None:
    host = FakeHost()
    failing = checker.ImdsError("the instance metadata answered 500 to spot/instance-action")
    imds = FakeImds(host, **{"spot/instance-action": failing})
    state = checker.watch_spot(spot_config(tmp_path, poll=2), host, imds, "boot-1", polls=6)
    assert state["errors"] == 6 and host.clock == T0 + 12  # a notice gives two minutes: still every 2 s
    imds.answers["spot/instance-action"] = "{not json"
    state = checker.watch_spot(spot_config(tmp_path, poll=2), host, imds, "boot-1", polls=1)
    assert state["errors"] == 7 and "not JSON" in state["last_error"]
    imds.answers["spot/instance-action"] = lambda now: 1 / 0  # a bug
    state = checker.watch_spot(spot_config(tmp_path, poll=2), host, imds, "boot-1", polls=3)
    assert state["errors"] == 10 and "ZeroDivisionError" in state["last_error"] and host.walls == []
    assert sum("crashed" in m for _, m in host.logs) == 3


@pytest.mark.parametrize(("notice", "expect"), [
    ({"action": "terminate", "time": _stamp(T0 + 90)}, "at 08:01:30 UTC (in about 90 s): save your work now.\n"
                                                       "It is terminated: what is on its disk is lost."),
    ({"action": "hibernate", "time": _stamp(T0 - 5)}, "at 07:59:55 UTC (now)"),
    ({"action": "stop"}, "back in about two minutes: save your work now."),
])
def test_notice_message_forms(notice: dict[str, Any], expect: str) -> None:
    assert expect in checker.spot_notice_message("lab", notice, T0)


# --- the metadata service, locally (over loopback) ----------------------------------------

@pytest.fixture
def imds_here() -> Iterator[tuple[ImdsService, str, dict[str, Any]]]:
    clock = {"now": 1000.0}
    service = ImdsService(clock=lambda: clock["now"])
    leaves = {"instance-id": "i-0123456789abcdef0", "instance-life-cycle": "spot",
              "placement/availability-zone": "us-east-1b", "placement/region": "us-east-1"}
    port = service.attach("i-0123456789abcdef0", "127.0.0.1", "127.0.0.1", lambda: dict(leaves))
    try:
        yield service, f"http://127.0.0.1:{port}", {"clock": clock, "leaves": leaves}
    finally:
        service.close()


def _ask(url: str, method: str = "GET", **headers: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_imdsv2_token_rules(imds_here: tuple[ImdsService, str, dict[str, Any]]) -> None:
    service, url, world = imds_here
    ttl = "X-aws-ec2-metadata-token-ttl-seconds"
    assert _ask(f"{url}/latest/meta-data/instance-id")[0] == 401
    for bad in ("0", "21601", "ten", ""):
        assert _ask(f"{url}/latest/api/token", "PUT", **{ttl: bad})[0] == 400, bad
    assert _ask(f"{url}/latest/api/token", "PUT")[0] == 400
    assert _ask(f"{url}/latest/api/token", "PUT", **{ttl: "60", "X-Forwarded-For": "10.0.0.9"})[0] == 403
    assert _ask(f"{url}/latest/api/token", "GET", **{ttl: "60"})[0] == 405
    status, token = _ask(f"{url}/latest/api/token", "PUT", **{ttl: "60"})
    assert status == 200 and len(token) > 40
    auth = {"X-aws-ec2-metadata-token": token}
    assert _ask(f"{url}/latest/meta-data/instance-id", **auth) == (200, "i-0123456789abcdef0")
    assert _ask(f"{url}/latest/meta-data/", **auth) == (200, "instance-id\ninstance-life-cycle\nplacement/")
    assert _ask(f"{url}/latest/meta-data/placement/", **auth) == (200, "availability-zone\nregion")
    assert _ask(f"{url}/latest/meta-data/spot/instance-action", **auth)[0] == 404
    assert _ask(f"{url}/latest/meta-data/instance-id", **{"X-aws-ec2-metadata-token": "forged"})[0] == 401
    document = json.loads(_ask(f"{url}/latest/dynamic/instance-identity/document", **auth)[1])
    assert (document["instanceId"], document["region"]) == ("i-0123456789abcdef0", "us-east-1")
    world["clock"]["now"] += 61  # the token's TTL has passed
    assert _ask(f"{url}/latest/meta-data/instance-id", **auth)[0] == 401
    service.detach("i-0123456789abcdef0")
    assert service.served() == {}


def test_the_checkers_client_against_it(imds_here: tuple[ImdsService, str, dict[str, Any]]) -> None:
    service, url, world = imds_here
    client = checker.Imds(url)
    assert client.get("instance-life-cycle") == "spot"
    assert client.get("spot/instance-action") is None
    world["leaves"]["spot/instance-action"] = json.dumps({"action": "stop", "time": "2027-01-15T08:02:00Z"})
    assert checker.parse_notice(client.get("spot/instance-action") or "") == {"action": "stop",
                                                                               "time": "2027-01-15T08:02:00Z"}
    world["clock"]["now"] += checker.IMDS_TOKEN_TTL + 1  # the service saw its token expire: a new one, once
    assert client.get("instance-life-cycle") == "spot"
    service.close()
    with pytest.raises(checker.ImdsError, match="no instance metadata at"):
        checker.Imds(url, timeout=1).get("instance-life-cycle")


# --- on stand-in hosts --------------------------------------------------------------------

WINDOW, INTERVAL, GRACE = 15, 2, 2
SLACK = 8
NOTICE_WITHIN = 15  # the brief's bound; the notice host looks every second
COMMON_VARS = {"idle_autostop_interval": INTERVAL, "idle_autostop_grace_seconds": GRACE,
               "idle_autostop_load_threshold": 1000, "idle_autostop_jupyter": False}
SCENARIOS: dict[str, dict[str, Any]] = {
    "notice": {"idle_autostop_window_minutes": 60, "idle_autostop_spot_poll_seconds": 1},
    "ondemand": {"idle_autostop_window_minutes": 60},
    "restart": {"idle_autostop_window_minutes": WINDOW / 60, "idle_autostop_spot_poll_seconds": 2},
}
SITE = """\
- name: Lab hosts with the idle auto-stop
  hosts: all
  gather_facts: false
  tasks:
    - name: Apply the idle auto-stop
      ansible.builtin.include_role:
        name: csdl.gpu_lab.idle_autostop
"""
IMDS_SH = """\
set -eu
M=http://169.254.169.254
echo "none $(curl -s -o /dev/null -w '%{http_code}' $M/latest/meta-data/instance-id)"
echo "badttl $(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 0' \
  $M/latest/api/token)"
T=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' $M/latest/api/token)
for p in instance-id instance-life-cycle instance-type placement/availability-zone; do
  echo "$p $(curl -sf -H "X-aws-ec2-metadata-token: $T" $M/latest/meta-data/$p)"
done
echo "action $(curl -s -o /dev/null -w '%{http_code}' -H "X-aws-ec2-metadata-token: $T" \
  $M/latest/meta-data/spot/instance-action)"
"""


class SpotLab(Lab):
    restarted_at: float = 0.0
    interrupted_first_boots: int = 0


def _launch(cloud: Cloud, ec2: Any, ssm: Any) -> dict[str, LabHost]:
    image = ssm.get_parameter(Name=dlami_parameter_name(DLAMI_LINES[0]))["Parameter"]["Value"]
    vpc = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.41.1.0/24")["Subnet"]["SubnetId"]
    hosts = {}
    for name in SCENARIOS:
        market = {} if name == "ondemand" else {"InstanceMarketOptions": SPOT}
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g6.xlarge",
                                     KeyName="spot-lab", SubnetId=subnet, InstanceInitiatedShutdownBehavior="stop",
                                     **market)["Instances"][0]
        address = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(InstanceId=instance["InstanceId"], AllocationId=address["AllocationId"])
        hosts[name] = LabHost(name, instance["InstanceId"], address["PublicIp"], address["AllocationId"])
    for h in hosts.values():
        cloud.controller.wait_until(h.instance_id, "booted", timeout=60)
    return hosts


@pytest.fixture(scope="module")
def lab(cloud_session: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpotLab]:
    """Three stand-ins with the auto-stop; the restart host interrupted and back at once."""
    ec2, ssm = standin_clients(cloud_session)
    workdir = tmp_path_factory.mktemp("spot_lab")
    key = key_pair_file(ec2, workdir, "spot-lab")
    lab = SpotLab(cloud_session, ec2, key, workdir / "known_hosts", workdir / "home", workdir, {})
    try:
        lab.hosts = _launch(cloud_session, ec2, ssm)
        ssh_args = " ".join(lab.ssh_options()[2:])
        inventory = {"all": {"hosts": {
            name: {"ansible_host": h.ip, "ansible_user": "ubuntu", "ansible_ssh_common_args": ssh_args,
                   "idle_autostop_lab_name": name, **COMMON_VARS, **SCENARIOS[name]}
            for name, h in lab.hosts.items()}}}
        (workdir / "inventory.json").write_text(json.dumps(inventory, indent=2))
        lab.playbook(SITE)

        # The restart host: EC2's notice, its interruption, and its own start once capacity is back,
        # before its 15 s window can pass (the idle clock starts at the end of the playbook).
        restart = lab.hosts["restart"].instance_id
        assert lab.state("restart") == "running", "the restart host stopped before it was interrupted"
        spot = cloud_session.emulator.spot
        spot.notify(restart)
        spot.interrupt(restart)
        cloud_session.controller.wait_until(restart, "off", timeout=30)
        info = cloud_session.controller.host(restart)
        lab.interrupted_first_boots = info.boots if info else 0
        spot.capacity_back(restart)
        lab.restarted_at = time.time()
        cloud_session.controller.wait_until(restart, "booted", timeout=30)
        yield lab
    finally:
        for h in lab.hosts.values():  # release (disassociating first) before terminating, as on AWS
            with contextlib.suppress(Exception):
                for address in ec2.describe_addresses(AllocationIds=[h.allocation_id])["Addresses"]:
                    if address.get("AssociationId"):
                        ec2.disassociate_address(AssociationId=address["AssociationId"])
                ec2.release_address(AllocationId=h.allocation_id)
        with contextlib.suppress(Exception):
            requests = ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
            if requests:  # or the persistent requests would launch replacements
                ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[r["SpotInstanceRequestId"]
                                                                          for r in requests])
        if lab.hosts:
            ec2.terminate_instances(InstanceIds=[h.instance_id for h in lab.hosts.values()])
        ec2.delete_key_pair(KeyName="spot-lab")
        cloud_session.controller.wait_settled()


def _imds(lab: Lab, name: str) -> dict[str, str]:
    out = lab.ssh(name, "sh -s", stdin=IMDS_SH).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


@pytest.mark.hosts
def test_the_metadata_listener_and_rule_go_with_the_stand_in(hosts_cloud: Cloud, aws: Any) -> None:
    ec2 = aws("ec2")
    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}])
    iid = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], InstanceType="g6.xlarge", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=iid, AllocationId=address["AllocationId"])
    controller = hosts_cloud.controller
    controller.wait_until(iid, "booted", timeout=60)
    host_addr, port = controller.imds.listeners()[iid]
    netns = next(ns for ns in net.list_netns() if ns.endswith(f"-{iid}"))
    rule = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip", net.IMDS_TABLE],
                          capture_output=True, text=True, check=True).stdout
    assert f"ip daddr 169.254.169.254 tcp dport 80 dnat to {host_addr}:{port}" in rule
    mine = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert net.IMDS_TABLE not in mine, "this machine's own 169.254.169.254 must stay as it is"

    ec2.disassociate_address(AssociationId=ec2.describe_addresses(AllocationIds=[address["AllocationId"]])[
        "Addresses"][0]["AssociationId"])
    ec2.release_address(AllocationId=address["AllocationId"])
    ec2.terminate_instances(InstanceIds=[iid])
    controller.wait_until(iid, "gone", timeout=30)
    assert iid not in controller.imds.listeners() and controller.imds.served() == {}
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert host_addr not in listening
    assert netns not in net.list_netns()


@pytest.mark.hosts
def test_the_metadata_from_inside_each_stand_in(lab: SpotLab) -> None:
    spot, ondemand = _imds(lab, "notice"), _imds(lab, "ondemand")
    assert (spot["none"], spot["badttl"]) == ("401", "400")  # HttpTokens required, as the role expects
    assert spot["instance-id"] == lab.hosts["notice"].instance_id
    assert ondemand["instance-id"] == lab.hosts["ondemand"].instance_id
    assert (spot["instance-life-cycle"], ondemand["instance-life-cycle"]) == ("spot", "on-demand")
    assert spot["instance-type"] == "g6.xlarge" and spot["placement/availability-zone"].startswith("us-east-1")
    assert spot["action"] == "404"  # no notice yet


class Terminal:
    """An ssh session with a terminal (ssh -tt), kept open; what it shows, as it comes."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.proc = subprocess.Popen(["ssh", "-tt", *lab.ssh_options(), f"ubuntu@{lab.hosts[name].ip}", "sleep 120"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            self.seen += chunk

    def wait_for(self, text: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text.encode() in self.seen.replace(b"\r\n", b"\n").replace(b"\n", b" "):
                return time.monotonic()
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.hosts
def test_the_notice_reaches_a_logged_in_terminal_and_the_journal(lab: SpotLab) -> None:
    iid = lab.hosts["notice"].instance_id
    terminal = Terminal(lab, "notice")
    try:
        for _ in range(50):  # logged in: in utmp, where wall looks
            if "pts/" in lab.ssh("notice", "who").stdout:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the ssh session with a terminal never showed in who")
        notified = time.monotonic()
        notice = lab.cloud.emulator.spot.notify(iid)
        at = dt.datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").strftime("%H:%M:%S")
        shown = terminal.wait_for(f"AWS is taking this spot GPU server back at {at} UTC", NOTICE_WITHIN)
        assert shown is not None, f"no notice on the terminal within {NOTICE_WITHIN} s: {terminal.seen[-600:]!r}"
        print(f"\n[spot lab] the notice reached the terminal {shown - notified:.1f} s after EC2 posted it")
        assert terminal.wait_for("save your work now", 2) and terminal.wait_for("its disk stays", 2)
    finally:
        terminal.close()

    out = _imds(lab, "notice")
    auth = ("T=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token);"
            " curl -sf -H \"X-aws-ec2-metadata-token: $T\" http://169.254.169.254/latest/meta-data/spot/instance-action")
    assert out["action"] == "200" and json.loads(lab.ssh("notice", auth).stdout) == notice

    time.sleep(3)  # three more looks: the notice is told once
    journal = lab.ssh("notice", "sudo journalctl -t gpu_lab_idle -p warning --no-pager -o cat").stdout.splitlines()
    told = [line for line in journal if line.startswith("spot interruption notice:")]
    assert len(told) == 1, journal
    assert f"AWS is taking this spot GPU server back at {at} UTC" in told[0] and "save your work now" in told[0]
    assert lab.state("notice") == "running"  # a notice stops nothing by itself


@pytest.mark.hosts
def test_an_on_demand_host_is_left_alone_and_the_role_is_idempotent(lab: SpotLab) -> None:
    journal = lab.ssh("ondemand", "sudo journalctl -t gpu_lab_idle --no-pager -o cat").stdout
    assert "not a Spot Instance (instance-life-cycle: on-demand): no interruption notice to watch for" in journal
    assert "spot interruption notice" not in journal and "cannot read the instance metadata" not in journal
    assert lab.ssh("ondemand", "systemctl is-active gpu_lab_spot.service").stdout.strip() == "active"
    assert lab.ssh("notice", "systemctl is-active gpu_lab_spot.service").stdout.strip() == "active"
    again = lab.playbook(SITE, "--limit", "notice,ondemand")
    counts = recaps(again.stdout)
    assert (counts["notice"]["changed"], counts["ondemand"]["changed"]) == (0, 0), changed_tasks(again.stdout)


@pytest.mark.hosts
def test_ec2s_own_restart_is_watched_by_the_idle_auto_stop(lab: SpotLab) -> None:
    iid = lab.hosts["restart"].instance_id
    deadline = lab.restarted_at + WINDOW + INTERVAL + GRACE + SLACK + 10
    while lab.state("restart") != "stopped":
        assert time.time() < deadline, f"the restarted host still {lab.state('restart')}: nothing stopped it"
        time.sleep(0.25)
    stopped_at = time.time()
    assert stopped_at - lab.restarted_at >= WINDOW, "stopped before a whole idle window had passed"
    instance = lab.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert instance["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"  # its own power-off
    request = lab.ec2.describe_spot_instance_requests(
        SpotInstanceRequestIds=[instance["SpotInstanceRequestId"]])["SpotInstanceRequests"][0]
    assert (request["State"], request["Status"]["Code"]) == ("disabled", "instance-stopped-by-user")
    lab.cloud.controller.wait_until(iid, "off", timeout=30)
    info = lab.cloud.controller.host(iid)
    assert info is not None and info.boots == lab.interrupted_first_boots + 1  # booted once more, by EC2
    # Its disk (the overlay's upper layer, readable while it is off): the idle check's last stop.
    state = json.loads((info.machine_path.parent / "upper" / "var/lib/gpu_lab/idle_state.json").read_text())
    assert state["last_stop"]["kind"] == "idle" and state["last_stop"]["at"] >= lab.restarted_at
