"""csdl.gpu_lab.lab_host's launch decisions: the candidates in order (the types as given, for each
the zones that offer it, sorted, or O(zones) in its order), what each refusal moves on to (a
capacity code: the next zone; a quota code: the next type; anything else: the end), the attempts
recorded in order, the one message when every candidate is refused, and the idempotency token
of each RunInstances (the same for the same lab, group, type and zone; another for another).

EC2 answers through botocore's Stubber, strictly in order: a RunInstances of a type or in a
subnet the test did not queue fails the test, so "skipped" and "moved on" are proven by the
calls made. tests/integration/test_modules_lab_host.py runs launches on the emulator. Last, a Spot
Instance's: the spot pass before the on-demand last resort, an interrupted instance's start, and a
teardown that cancels the request first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tests.unit.collection import load

CAPACITY = "InsufficientInstanceCapacity"
SUBNETS = {"us-east-1a": ("subnet-1a", "vpc-1"), "us-east-1b": ("subnet-1b", "vpc-1"),
           "us-east-1c": ("subnet-1c", "vpc-1"), "us-east-1d": ("subnet-1d", "vpc-1")}


@pytest.fixture(scope="module")
def lab_host() -> ModuleType:
    return load("modules.lab_host")


# One session for every client: its loader reads the EC2 model once (a client each is slow).
SESSION = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")  # noqa: S106


def client() -> Any:
    return SESSION.client("ec2")


class FakeRegion:
    """What LabHost uses of a Region: a stubbed reading client, a stubbed launching client, and
    the zones offering each type with the default subnet of each zone."""

    def __init__(self, offered: dict[str, list[str]], subnets: dict[str, tuple[str, str]]) -> None:
        self.name = "us-east-1"
        self.offered, self.subnets = offered, subnets
        self.ec2, self.launcher = client(), client()
        self.reads, self.writes = Stubber(self.ec2), Stubber(self.launcher)

    def where(self, types: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        return {t: list(self.offered.get(t, [])) for t in types}, dict(self.subnets)


@pytest.fixture
def make_region() -> Iterator[Any]:
    """make_region(offered, subnets=SUBNETS) -> FakeRegion; every queued answer must be used."""
    made: list[FakeRegion] = []

    def make(offered: dict[str, list[str]], subnets: dict[str, tuple[str, str]] | None = None) -> FakeRegion:
        fake = FakeRegion(offered, SUBNETS if subnets is None else subnets)
        fake.reads.activate()
        fake.writes.activate()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.reads.assert_no_pending_responses()
        fake.writes.assert_no_pending_responses()
        fake.reads.deactivate()
        fake.writes.deactivate()


class Capture:
    """An expected parameter that matches anything and keeps what it was compared with (the
    Stubber compares ``expected != actual``)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __eq__(self, other: object) -> bool:
        self.values.append(other)
        return True

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]


def params(lab_host: ModuleType, **given: Any) -> dict[str, Any]:
    spec = {"lab": "dl", "instance_types": ["g6.xlarge", "g5.xlarge"], "image_id": "ami-1", "key_name": "dl-server",
            "security_group_id": "sg-1", "tags": {"gpu_lab:lab": "dl"}, **given}
    (checked,), invalid = lab_host.check_labs([spec], lab_host.LAB_OPTIONS)
    assert invalid == {}
    return checked


def run_params(type_: str, zone: str, token: Any = ANY, group: str = "sg-1") -> dict[str, Any]:
    """RunInstances of this type in this zone's default subnet (the zone is the subnet's)."""
    return {"ClientToken": token, "ImageId": "ami-1", "InstanceType": type_, "KeyName": "dl-server",
            "MinCount": 1, "MaxCount": 1,
            "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": SUBNETS[zone][0], "AssociatePublicIpAddress": False,
                                   "Groups": [group], "DeleteOnTermination": True}],
            "MetadataOptions": ANY, "InstanceInitiatedShutdownBehavior": "stop", "BlockDeviceMappings": ANY,
            "TagSpecifications": ANY}


def launched(instance_id: str = "i-0new", state: str = "pending") -> dict[str, Any]:
    return {"Instances": [{"InstanceId": instance_id, "State": {"Name": state}}]}


def refuse(region: FakeRegion, type_: str, zone: str, code: str, token: Any = ANY) -> None:
    region.writes.add_client_error("run_instances", service_error_code=code, service_message=f"{code} for {type_}",
                                   http_status_code=500 if code == CAPACITY else 400,
                                   expected_params=run_params(type_, zone, token))


def accept(region: FakeRegion, type_: str, zone: str, token: Any = ANY, instance_id: str = "i-0new") -> None:
    region.writes.add_response("run_instances", launched(instance_id), run_params(type_, zone, token))


def tried(host: Any) -> list[tuple[str, str, str, str]]:
    return [(a["type"], a["zone"], a["outcome"], a["code"]) for a in host.attempts]


# --- the candidates, in order ------------------------------------------------------------------

def test_a_capacity_refusal_moves_to_the_next_zone_in_sorted_order(lab_host: ModuleType, make_region: Any) -> None:
    """AWS lists the offering zones in no order: the module tries them sorted, and each
    capacity code (InsufficientInstanceCapacity, Unsupported) is tried once, not retried."""
    region = make_region({"g6.xlarge": ["us-east-1c", "us-east-1a", "us-east-1b"]})
    refuse(region, "g6.xlarge", "us-east-1a", CAPACITY)
    refuse(region, "g6.xlarge", "us-east-1b", "Unsupported")
    accept(region, "g6.xlarge", "us-east-1c")
    host = lab_host.LabHost(params(lab_host), region)
    assert host.launch()["InstanceId"] == "i-0new"
    assert tried(host) == [("g6.xlarge", "us-east-1a", "no capacity", CAPACITY),
                           ("g6.xlarge", "us-east-1b", "no capacity", "Unsupported"),
                           ("g6.xlarge", "us-east-1c", "launched", "")]
    assert host.attempts[0]["message"] == f"{CAPACITY} for g6.xlarge"
    assert host.instance_now == {"id": "i-0new", "type": "g6.xlarge", "zone": "us-east-1c", "state": "pending"}


@pytest.mark.parametrize("code", ["VcpuLimitExceeded", "InstanceLimitExceeded"])
def test_a_quota_refusal_skips_the_other_zones_of_the_type(lab_host: ModuleType, make_region: Any, code: str) -> None:
    """A quota is regional: after it, g6.xlarge in us-east-1b and 1c is not tried (the next
    RunInstances queued is of g5.xlarge; another would fail the Stubber)."""
    region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1b", "us-east-1c"],
                          "g5.xlarge": ["us-east-1b", "us-east-1a"]})
    refuse(region, "g6.xlarge", "us-east-1a", code)
    refuse(region, "g5.xlarge", "us-east-1a", CAPACITY)
    accept(region, "g5.xlarge", "us-east-1b")
    host = lab_host.LabHost(params(lab_host), region)
    host.launch()
    assert tried(host) == [("g6.xlarge", "us-east-1a", "quota", code),
                           ("g5.xlarge", "us-east-1a", "no capacity", CAPACITY),
                           ("g5.xlarge", "us-east-1b", "launched", "")]
    assert host.instance_now["type"] == "g5.xlarge"


def test_the_types_go_in_the_order_given_not_alphabetical(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({t: ["us-east-1a"] for t in ("p5.48xlarge", "g4dn.xlarge", "g6.xlarge")})
    for type_ in ("p5.48xlarge", "g4dn.xlarge"):
        refuse(region, type_, "us-east-1a", CAPACITY)
    accept(region, "g6.xlarge", "us-east-1a")
    host = lab_host.LabHost(params(lab_host, instance_types=["p5.48xlarge", "g4dn.xlarge", "g6.xlarge"]), region)
    host.launch()
    assert [a["type"] for a in host.attempts] == ["p5.48xlarge", "g4dn.xlarge", "g6.xlarge"]


def test_zones_given_keep_their_order_and_only_offered_ones_are_tried(lab_host: ModuleType,
                                                                      make_region: Any) -> None:
    """O(zones) c, d, b, a: b does not offer the type (left out, no attempt); d offers it but
    has no default subnet (an attempt, no call); then c refused, a launches."""
    subnets = {z: s for z, s in SUBNETS.items() if z != "us-east-1d"}
    region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1c", "us-east-1d"]}, subnets)
    refuse(region, "g6.xlarge", "us-east-1c", CAPACITY)
    accept(region, "g6.xlarge", "us-east-1a")
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"],
                                   zones=["us-east-1c", "us-east-1d", "us-east-1b", "us-east-1a"]), region)
    host.launch()
    assert tried(host) == [("g6.xlarge", "us-east-1c", "no capacity", CAPACITY),
                           ("g6.xlarge", "us-east-1d", "no subnet", ""),
                           ("g6.xlarge", "us-east-1a", "launched", "")]


def test_a_type_not_offered_is_recorded_and_the_next_type_tried(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g5.xlarge": ["us-east-1b"]})
    accept(region, "g5.xlarge", "us-east-1b")
    host = lab_host.LabHost(params(lab_host), region)
    host.launch()
    assert tried(host) == [("g6.xlarge", "", "not offered", ""), ("g5.xlarge", "us-east-1b", "launched", "")]


def test_another_error_ends_the_launch_without_trying_further(lab_host: ModuleType, make_region: Any) -> None:
    """Not capacity, not quota (a bad image, a missing permission): the next zone cannot help."""
    region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1b"], "g5.xlarge": ["us-east-1a"]})
    refuse(region, "g6.xlarge", "us-east-1a", "InvalidAMIID.NotFound")
    host = lab_host.LabHost(params(lab_host), region)
    with pytest.raises(lab_host.LabFailure, match=r"^Could not launch g6\.xlarge in us-east-1a: .*InvalidAMIID"):
        host.launch()


def test_every_candidate_refused_is_one_message_naming_each_and_the_group_goes(lab_host: ModuleType,
                                                                               make_region: Any) -> None:
    """The group this launch created is deleted again; the message names every attempt in
    order, and the quotas of the candidate families (G, P)."""
    region = make_region({"g6.xlarge": ["us-east-1b", "us-east-1a"], "p4d.24xlarge": ["us-east-1a"]})
    region.writes.add_response("create_security_group", {"GroupId": "sg-new"},
                               {"GroupName": "dl-ssh", "Description": "SSH to dl", "VpcId": "vpc-1",
                                "TagSpecifications": ANY})
    region.writes.add_response("authorize_security_group_ingress", {}, {"GroupId": "sg-new", "IpPermissions": ANY})
    for zone in ("us-east-1a", "us-east-1b"):
        region.writes.add_client_error("run_instances", service_error_code=CAPACITY, http_status_code=500,
                                       expected_params=run_params("g6.xlarge", zone, group="sg-new"))
    region.writes.add_client_error("run_instances", service_error_code="VcpuLimitExceeded", http_status_code=400,
                                   expected_params=run_params("p4d.24xlarge", "us-east-1a", group="sg-new"))
    region.writes.add_response("delete_security_group", {}, {"GroupId": "sg-new"})
    given = params(lab_host, instance_types=["g6.xlarge", "g9.huge", "p4d.24xlarge"], security_group_id=None,
                   security_group={"name": "dl-ssh", "description": "SSH to dl", "ssh_cidrs": ["198.51.100.7/32"]})
    host = lab_host.LabHost(given, region)
    with pytest.raises(lab_host.LabFailure) as caught:
        host.launch()
    assert caught.value.msg == (
        "No candidate instance could be launched in us-east-1 (g6.xlarge in us-east-1a: InsufficientInstanceCapacity; "
        "g6.xlarge in us-east-1b: InsufficientInstanceCapacity; g9.huge in no zone: not offered; p4d.24xlarge in "
        "us-east-1a: VcpuLimitExceeded). Try again later, add types to gpu_lab_fallback_instance_types or zones to "
        "gpu_lab_zones, or choose another gpu_lab_region; where the code is a limit, ask AWS to raise the quota "
        "Running On-Demand G and VT instances (L-DB2E81BA) / Running On-Demand P instances (L-417A185B) (Service "
        "Quotas console, EC2). No instance, address or security group was left.")
    assert [a["outcome"] for a in host.attempts] == ["no capacity", "no capacity", "not offered", "quota"]


def test_every_candidate_refused_keeps_a_group_it_did_not_create(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a"]})
    refuse(region, "g6.xlarge", "us-east-1a", CAPACITY)  # and no DeleteSecurityGroup of sg-1
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"]), region)
    with pytest.raises(lab_host.LabFailure, match=r"\(g6\.xlarge in us-east-1a: InsufficientInstanceCapacity\)"):
        host.launch()


def test_a_failed_launch_through_converge_carries_the_attempts_and_leaves_nothing(lab_host: ModuleType,
                                                                                  make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a"], "g5.xlarge": ["us-east-1a"]})
    refuse(region, "g6.xlarge", "us-east-1a", CAPACITY)
    refuse(region, "g5.xlarge", "us-east-1a", "InsufficientInstanceCapacity")
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.converge(params(lab_host), region)
    assert [(a["type"], a["zone"]) for a in caught.value.attempts] == [("g6.xlarge", "us-east-1a"),
                                                                       ("g5.xlarge", "us-east-1a")]
    part = lab_host._failed(caught.value, "present")
    assert part["changed"] is False and part["left"] == {"instance": {}, "address": {}}


# --- the zones on offer, asked once --------------------------------------------------------------

class Routed:
    """The reading client of a Region, with DescribeSubnets answered by a second stubbed client:
    Region asks for the offerings and the subnets side by side (two threads), and one Stubber
    would need them in one order."""

    def __init__(self, offers: Any, subnets: Any) -> None:
        self._offers, self._subnets = offers, subnets

    def describe_subnets(self, **kwargs: Any) -> dict[str, Any]:
        return self._subnets.describe_subnets(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._offers, name)


def test_the_zones_come_from_the_offerings_asked_once_per_set_of_types(lab_host: ModuleType) -> None:
    class Region(lab_host.Region):  # the real where() and _ask(), without an AnsibleAWSModule
        def __init__(self, ec2: Any) -> None:
            self.name, self.ec2, self._offers, self._lock = "us-east-1", ec2, {}, threading.Lock()

    offers, subnets = client(), client()
    with Stubber(offers) as offers_stub, Stubber(subnets) as subnets_stub:
        offers_stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
            {"InstanceType": "g6.xlarge", "Location": "us-east-1c", "LocationType": "availability-zone"},
            {"InstanceType": "g5.xlarge", "Location": "us-east-1a", "LocationType": "availability-zone"},
            {"InstanceType": "g6.xlarge", "Location": "us-east-1a", "LocationType": "availability-zone"},
        ]}, {"LocationType": "availability-zone",
             "Filters": [{"Name": "instance-type", "Values": ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]}]})
        subnets_stub.add_response("describe_subnets", {"Subnets": [
            {"AvailabilityZone": "us-east-1a", "SubnetId": "subnet-1a", "VpcId": "vpc-1"},
            {"AvailabilityZone": "us-east-1c", "SubnetId": "subnet-1c", "VpcId": "vpc-1"},
        ]}, {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]})
        region = Region(Routed(offers, subnets))
        types = ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]
        offered, found = region.where(types)
        assert offered == {"g6.xlarge": ["us-east-1c", "us-east-1a"], "g5.xlarge": ["us-east-1a"], "g4dn.xlarge": []}
        assert found == {"us-east-1a": ("subnet-1a", "vpc-1"), "us-east-1c": ("subnet-1c", "vpc-1")}
        assert region.where(list(types)) == (offered, found)  # a class's next lab: no call (none queued)
        offers_stub.assert_no_pending_responses()
        subnets_stub.assert_no_pending_responses()


# --- the idempotency token -----------------------------------------------------------------------

def test_the_same_attempt_of_the_same_lab_sends_the_same_token(lab_host: ModuleType, make_region: Any) -> None:
    """Two launches of one lab (one interrupted, run again; or two at once) send the same token
    for the same type and zone, so AWS makes one instance; each candidate has its own token."""
    runs = []
    for _run in range(2):
        region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1b"], "g5.xlarge": ["us-east-1a"]})
        tokens = [Capture() for _unused in range(3)]
        refuse(region, "g6.xlarge", "us-east-1a", CAPACITY, tokens[0])
        refuse(region, "g6.xlarge", "us-east-1b", CAPACITY, tokens[1])
        accept(region, "g5.xlarge", "us-east-1a", tokens[2])
        lab_host.LabHost(params(lab_host), region).launch()
        runs.append([t.values[-1] for t in tokens])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3  # another zone, another type: another token
    assert all(isinstance(t, str) and 0 < len(t) <= 64 for t in runs[0])  # AWS: at most 64 ASCII characters


@pytest.mark.parametrize("other", [{"lab": "dl2"}, {"security_group_id": "sg-2"}], ids=["another lab", "another group"])
def test_another_lab_or_group_sends_another_token(lab_host: ModuleType, make_region: Any,
                                                  other: dict[str, Any]) -> None:
    tokens = []
    for given in ({}, other):
        region = make_region({"g6.xlarge": ["us-east-1a"]})
        token = Capture()
        region.writes.add_response("run_instances", launched(),
                                   run_params("g6.xlarge", "us-east-1a", token, given.get("security_group_id", "sg-1")))
        lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"], **given), region).launch()
        tokens.append(token.values[-1])
    assert tokens[0] != tokens[1]


def test_a_throttled_run_instances_is_sent_again_with_the_same_token(lab_host: ModuleType, make_region: Any) -> None:
    """A transient error (throttling) is the same request again (after a 0.5 s pause): were the
    first one made after all, AWS answers the second with its instance."""
    region = make_region({"g6.xlarge": ["us-east-1a"]})
    token = Capture()
    refuse(region, "g6.xlarge", "us-east-1a", "RequestLimitExceeded", token)
    accept(region, "g6.xlarge", "us-east-1a", token)
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"]), region)
    host.launch()
    first, again = token.values
    assert first == again
    assert tried(host) == [("g6.xlarge", "us-east-1a", "launched", "")]  # a throttle is no attempt


def test_a_token_answered_with_a_terminated_instance_is_salted_with_its_id(lab_host: ModuleType,
                                                                           make_region: Any) -> None:
    """AWS answers a token whose instance was terminated with that instance: the launch sends a
    new token made with that instance's id (the same for every launch that saw that instance,
    another after another terminated instance) and gets a new instance."""
    tokens = []
    for terminated in ("i-0old", "i-0old", "i-0other"):
        region = make_region({"g6.xlarge": ["us-east-1a"]})
        token = Capture()
        region.writes.add_response("run_instances", launched(terminated, "terminated"),
                                   run_params("g6.xlarge", "us-east-1a", token))
        region.writes.add_response("run_instances", launched("i-0new"), run_params("g6.xlarge", "us-east-1a", token))
        host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"]), region)
        assert host.launch()["InstanceId"] == "i-0new"
        tokens.append(token.values)
    first, salted = tokens[0]
    assert first != salted
    assert tokens[0] == tokens[1]
    assert tokens[2][0] == first and tokens[2][1] not in (first, salted)


def test_a_token_that_keeps_answering_terminated_gives_up_after_three(lab_host: ModuleType,
                                                                      make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a"]})
    for n in range(3):
        region.writes.add_response("run_instances", launched(f"i-0old{n}", "shutting-down"),
                                   run_params("g6.xlarge", "us-east-1a"))
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"]), region)
    with pytest.raises(lab_host.LabFailure, match="RunInstances kept answering with a terminated instance"):
        host.launch()


# --- Spot Instances: the spot pass before the on-demand last resort, an interrupted start, teardown ---

SPOT = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}}


def spot_run_params(type_: str, zone: str, market: Any = None, token: Any = ANY) -> dict[str, Any]:
    spec = {"ClientToken": token, "ImageId": "ami-1", "InstanceType": type_, "KeyName": "dl-server",
            "MinCount": 1, "MaxCount": 1,
            "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": SUBNETS[zone][0], "AssociatePublicIpAddress": False,
                                   "Groups": ["sg-1"], "DeleteOnTermination": True}],
            "MetadataOptions": ANY, "InstanceInitiatedShutdownBehavior": "stop", "BlockDeviceMappings": ANY,
            "TagSpecifications": ANY}
    if market is not None:
        spec["InstanceMarketOptions"] = market
    return spec


def test_spot_first_then_on_demand_with_their_own_tokens(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1b"]})
    spot_tokens, demand_token, tags = Capture(), Capture(), Capture()
    for zone in ("us-east-1a", "us-east-1b"):
        region.writes.add_client_error("run_instances", service_error_code=CAPACITY, http_status_code=500,
                                       service_message="There is no Spot capacity available that matches your request.",
                                       expected_params={**spot_run_params("g6.xlarge", zone, SPOT, spot_tokens),
                                                        "TagSpecifications": tags})
    region.writes.add_response("run_instances", launched(),
                               spot_run_params("g6.xlarge", "us-east-1a", None, demand_token))
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"], spot_instance_types=["g6.xlarge"]), region)
    assert host.launch()["InstanceId"] == "i-0new"
    assert [(a["type"], a["zone"], a["market"], a["outcome"]) for a in host.attempts] == [
        ("g6.xlarge", "us-east-1a", "spot", "no capacity"), ("g6.xlarge", "us-east-1b", "spot", "no capacity"),
        ("g6.xlarge", "us-east-1a", "on-demand", "launched")]
    # Another token for the on-demand launch in the zone a spot try used: a token is one launch.
    assert demand_token.values[0] != spot_tokens.values[0]
    # The request carries the lab's tags (teardown and the left-over check find it by them).
    assert {"ResourceType": "spot-instances-request", "Tags": [{"Key": "gpu_lab:lab", "Value": "dl"}]} in tags.values[0]


def test_a_price_cap_goes_into_the_request_and_a_low_one_moves_on(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a", "us-east-1b"]})
    capped = {**SPOT, "SpotOptions": {**SPOT["SpotOptions"], "MaxPrice": "0.25"}}
    region.writes.add_client_error("run_instances", service_error_code="SpotMaxPriceTooLow", http_status_code=400,
                                   expected_params=spot_run_params("g6.xlarge", "us-east-1a", capped))
    region.writes.add_response("run_instances", launched(), spot_run_params("g6.xlarge", "us-east-1b", capped))
    host = lab_host.LabHost(params(lab_host, instance_types=[], spot_instance_types=["g6.xlarge"],
                                   spot_max_price="0.25"), region)
    host.launch()
    assert [a["outcome"] for a in host.attempts] == ["over the price cap", "launched"]


def test_without_the_on_demand_last_resort_no_on_demand_call(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a"]})
    region.writes.add_client_error("run_instances", service_error_code=CAPACITY, http_status_code=500,
                                   expected_params=spot_run_params("g6.xlarge", "us-east-1a", SPOT))
    host = lab_host.LabHost(params(lab_host, instance_types=[], spot_instance_types=["g6.xlarge"]), region)
    with pytest.raises(lab_host.LabFailure, match=r"g6\.xlarge \(spot\) in us-east-1a: InsufficientInstanceCapacity"):
        host.launch()


def test_plan_names_the_markets(lab_host: ModuleType, make_region: Any) -> None:
    host = lab_host.LabHost(params(lab_host, instance_types=["g6.xlarge"], spot_instance_types=["g6.xlarge"]),
                            make_region({}), check_mode=True)
    host.plan_launch()
    assert host.planned[-1] == ("launch g6.xlarge in the first zone that has capacity "
                                "(candidates: g6.xlarge (spot); then g6.xlarge (on-demand))")


INTERRUPTED = {"id": "i-0abc", "state": "stopped", "type": "g6.xlarge", "zone": "us-east-1a", "market": "spot",
               "spot_request": {"id": "sir-1", "state": "open", "status": "instance-stopped-no-capacity",
                                "updated": "2026-12-01T09:30:00+00:00"}}


def described(state: str) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": "i-0abc", "State": {"Name": state}}]}]}


def refuse_start(region: Any) -> None:
    region.writes.add_client_error("start_instances", service_error_code="IncorrectSpotRequestState",
                                   http_status_code=400, expected_params={"InstanceIds": ["i-0abc"]})


def test_an_interrupted_spot_instance_is_waited_for_not_changed(lab_host: ModuleType, make_region: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No ModifyInstanceAttribute (the Stubber would fail on one): only AWS starts it, and it does on the 3rd look."""
    monkeypatch.setattr(lab_host.time, "sleep", lambda s: None)
    region = make_region({"g6.xlarge": ["us-east-1a"], "g5.xlarge": ["us-east-1a"]})
    refuse_start(region)
    for state in ("stopped", "stopped", "pending"):
        region.reads.add_response("describe_instances", described(state), {"InstanceIds": ["i-0abc"]})
    host = lab_host.LabHost(params(lab_host, start_capacity_wait=60, start_change_type=True), region)
    assert host.start(dict(INTERRUPTED)) == INTERRUPTED
    assert [a["outcome"] for a in host.attempts] == ["failed", "started by AWS"]
    assert "it started it again after" in host.notes[0]


def test_an_interrupted_spot_instance_aws_keeps_stopped_is_one_message(lab_host: ModuleType, make_region: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_host.time, "sleep", lambda s: None)
    region = make_region({"g6.xlarge": ["us-east-1a"]})
    refuse_start(region)
    delays = lab_host.retry_delays(3)
    for _delay in delays:
        region.reads.add_response("describe_instances", described("stopped"), {"InstanceIds": ["i-0abc"]})
    host = lab_host.LabHost(params(lab_host, start_capacity_wait=3), region)
    with pytest.raises(lab_host.LabFailure) as failed:
        host.start(dict(INTERRUPTED))
    assert failed.value.msg.startswith("AWS interrupted the lab's spot instance i-0abc at 2026-12-01 09:30 UTC")
    assert f"{len(delays)} tries" in failed.value.msg and "nothing changed" in failed.value.msg


def test_a_spot_instance_without_capacity_keeps_its_type(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({"g6.xlarge": ["us-east-1a"], "g5.xlarge": ["us-east-1a"]})
    region.writes.add_client_error("start_instances", service_error_code=CAPACITY, http_status_code=500,
                                   expected_params={"InstanceIds": ["i-0abc"]})
    host = lab_host.LabHost(params(lab_host, start_capacity_wait=0, start_change_type=True), region)
    stopped = {**INTERRUPTED,
               "spot_request": {"id": "sir-1", "state": "disabled", "status": "instance-stopped-by-user"}}
    with pytest.raises(lab_host.LabFailure, match="a Spot Instance's type cannot be changed"):
        host.start(stopped)


def test_teardown_cancels_the_spot_request_before_the_instance_goes(lab_host: ModuleType, make_region: Any) -> None:
    region = make_region({})
    region.reads.add_response("cancel_spot_instance_requests", {"CancelledSpotInstanceRequests": [
        {"SpotInstanceRequestId": "sir-1", "State": "cancelled"}]}, {"SpotInstanceRequestIds": ["sir-1"]})
    region.reads.add_response("terminate_instances", {"TerminatingInstances": [
        {"InstanceId": "i-0abc", "PreviousState": {"Name": "running"}, "CurrentState": {"Name": "shutting-down"}}]},
        {"InstanceIds": ["i-0abc", "i-0old"]})
    region.reads.add_response("describe_instances", {"Reservations": [{"Instances": [
        {"InstanceId": "i-0abc", "State": {"Name": "terminated"}}]}]}, {"InstanceIds": ["i-0abc", "i-0old"]})
    instances = [{"id": "i-0abc", "spot_request_id": "sir-1", "spot_request": {"state": "active"}},
                 {"id": "i-0old", "spot_request_id": "sir-0", "spot_request": {"state": "cancelled"}}]
    removal = lab_host.LabRemoval(params(lab_host, instances=instances, security_group_id="", key_name=""), region)
    done = removal.run()
    assert done["removed"]["spot_requests"] == ["sir-1"] and done["removed"]["instances"] == ["i-0abc"]
    planned = lab_host.plan_removal(params(lab_host, instances=instances, security_group_id="", key_name=""), region)
    assert planned["planned"][:2] == ["cancel spot request sir-1", "terminate i-0abc"]


# --- Shelving: an image of the disk first, then the instance and its address go ---

STOPPED = {"id": "i-0abc", "state": "stopped", "type": "g6.xlarge", "zone": "us-east-1a", "market": "on-demand",
           "tags": {"gpu_lab:lab": "dl", "gpu_lab:instance_type": "g6.xlarge", "Name": "dl-server"}}
ADDRESS = {"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1", "association_id": "eipassoc-1",
           "instance_id": "i-0abc"}
IMAGE = {"ImageId": "ami-0shelf", "Name": "dl-shelf-20261203-140501", "State": "available",
         "CreationDate": "2026-12-03T14:05:01.000Z",
         "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 100}}]}


def test_shelve_images_the_disk_before_anything_goes(lab_host: ModuleType, make_region: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateImage (no reboot, image and snapshots tagged), waited for while pending, then the
    address released and the instance terminated; the key pair and group are not touched."""
    monkeypatch.setattr(lab_host.time, "sleep", lambda s: None)
    region = make_region({})
    tags = Capture()
    region.reads.add_response("create_image", {"ImageId": "ami-0shelf"}, {
        "InstanceId": "i-0abc", "Name": ANY, "Description": "gpu_lab shelf of lab dl (i-0abc)", "NoReboot": True,
        "TagSpecifications": tags})
    region.reads.add_response("describe_images", {"Images": [{**IMAGE, "State": "pending"}]},
                              {"ImageIds": ["ami-0shelf"]})
    region.reads.add_response("describe_images", {"Images": [IMAGE]}, {"ImageIds": ["ami-0shelf"]})
    region.reads.add_response("disassociate_address", {}, {"AssociationId": "eipassoc-1"})
    region.reads.add_response("release_address", {}, {"AllocationId": "eipalloc-1"})
    region.reads.add_response("terminate_instances", {"TerminatingInstances": [
        {"InstanceId": "i-0abc", "PreviousState": {"Name": "stopped"}, "CurrentState": {"Name": "shutting-down"}}]},
        {"InstanceIds": ["i-0abc"]})
    region.reads.add_response("describe_instances", {"Reservations": [{"Instances": [
        {"InstanceId": "i-0abc", "State": {"Name": "terminated"}}]}]}, {"InstanceIds": ["i-0abc"]})
    done = lab_host.shelve(params(lab_host, instance=STOPPED, addresses=[ADDRESS]), region)
    assert done["shelf"] == {"image_id": "ami-0shelf", "name": IMAGE["Name"], "creation_date": IMAGE["CreationDate"],
                             "snapshot_ids": ["snap-1"], "size_gib": 100}
    assert done["removed"]["instances"] == ["i-0abc"] and done["removed"]["addresses"] == ["203.0.113.5"]
    image_tags = {t["Key"]: t["Value"] for t in tags.values[0][0]["Tags"]}
    assert [s["ResourceType"] for s in tags.values[0]] == ["image", "snapshot"]
    assert image_tags["gpu_lab:shelf"] == "true" and image_tags["gpu_lab:shelf_of"] == "i-0abc"
    assert image_tags["gpu_lab:instance_type"] == "g6.xlarge" and image_tags["gpu_lab:lab"] == "dl"


def test_an_image_that_fails_terminates_nothing(lab_host: ModuleType, make_region: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_host.time, "sleep", lambda s: None)
    region = make_region({})
    region.reads.add_response("create_image", {"ImageId": "ami-0shelf"}, None)
    region.reads.add_response("describe_images", {"Images": [{**IMAGE, "State": "failed"}]},
                              {"ImageIds": ["ami-0shelf"]})
    with pytest.raises(lab_host.LabFailure, match="is failed: nothing was terminated"):
        lab_host.shelve(params(lab_host, instance=STOPPED, addresses=[ADDRESS]), region)


def test_an_image_made_by_an_earlier_run_is_used_and_a_shelved_lab_is_left(lab_host: ModuleType,
                                                                           make_region: Any) -> None:
    region = make_region({})
    earlier = {"image_id": "ami-0shelf", "tags": {"gpu_lab:shelf_of": "i-0abc"}}
    region.reads.add_response("describe_images", {"Images": [IMAGE]}, {"ImageIds": ["ami-0shelf"]})
    region.reads.add_response("terminate_instances", {"TerminatingInstances": []}, {"InstanceIds": ["i-0abc"]})
    region.reads.add_response("describe_instances", {"Reservations": []}, {"InstanceIds": ["i-0abc"]})
    assert lab_host.shelve(params(lab_host, instance=STOPPED, shelves=[earlier]), region)["shelf"]["image_id"] == \
        "ami-0shelf"
    assert lab_host.shelve(params(lab_host, shelves=[earlier]), region)["changed"] is False
    planned = lab_host.plan_shelve(params(lab_host, instance={**STOPPED, "state": "running"}, addresses=[ADDRESS]),
                                   region)["planned"]
    assert planned == ["stop i-0abc", "make an image of i-0abc (no reboot) and wait until it is available",
                       "release 203.0.113.5", "terminate i-0abc"]
