"""csdl.gpu_lab.lab_host with O(state=absent): the order AWS needs (each address disassociated,
then released, before its instance goes; the instances terminated and waited for before the
security group is deleted; then the key pair, then the left-overs), a resource already gone is
no error and is not counted as removed, and a failure says what was removed before it and
removes nothing after it. Also: each left-over is removed by one lab of a call only.

EC2 answers through botocore's Stubber, which takes the calls strictly in the order queued:
a call out of order, or one more, fails the test. tests/integration/test_modules_lab_host.py
tears labs down on the emulator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from tests.unit.collection import load

SESSION = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")  # noqa: S106


@pytest.fixture(scope="module")
def lab_host() -> ModuleType:
    return load("modules.lab_host")


class FakeRegion:
    """What LabRemoval uses of a Region: the reading client (botocore's retries), stubbed."""

    def __init__(self) -> None:
        self.name = "us-east-1"
        self.ec2 = SESSION.client("ec2")
        self.launcher = SESSION.client("ec2")  # unused by a removal: nothing is queued on it
        self.stub = Stubber(self.ec2)


@pytest.fixture
def region() -> Iterator[FakeRegion]:
    fake = FakeRegion()
    with fake.stub, Stubber(fake.launcher):
        yield fake
        fake.stub.assert_no_pending_responses()


def params(lab_host: ModuleType, **given: Any) -> dict[str, Any]:
    (checked,), invalid = lab_host.check_labs([{"lab": "dl", "wait_timeout": 0, **given}], lab_host.LAB_OPTIONS)
    assert invalid == {}
    return checked


ASSOCIATED = {"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1", "association_id": "eipassoc-1",
              "instance_id": "i-0abc"}
FREE = {"public_ip": "203.0.113.6", "allocation_id": "eipalloc-2", "association_id": "", "instance_id": ""}
INSTANCES = [{"id": "i-0abc", "state": "running"}, {"id": "i-0def", "state": "stopped"}]


def terminating(*previous: tuple[str, str]) -> dict[str, Any]:
    return {"TerminatingInstances": [{"InstanceId": i, "PreviousState": {"Name": state},
                                      "CurrentState": {"Name": "shutting-down"}} for i, state in previous]}


def described(*states: tuple[str, str]) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": i, "State": {"Name": state},
                                             "LaunchTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
                                            for i, state in states]}]}


def error(region: FakeRegion, operation: str, code: str, expected: dict[str, Any], status: int = 400) -> None:
    region.stub.add_client_error(operation, service_error_code=code, service_message=f"{code} here",
                                 http_status_code=status, expected_params=expected)


def test_a_lab_goes_in_the_order_that_leaves_nothing_billed(lab_host: ModuleType, region: FakeRegion) -> None:
    """Address: disassociated, then released (a free one only released); then one
    TerminateInstances for all, and the wait until they are terminated; only then the group
    (a live interface holds it), the key pair, and the left-overs of other labs."""
    s = region.stub
    s.add_response("disassociate_address", {}, {"AssociationId": "eipassoc-1"})
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-1"})
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-2"})
    s.add_response("terminate_instances", terminating(("i-0abc", "running"), ("i-0def", "stopped")),
                   {"InstanceIds": ["i-0abc", "i-0def"]})
    s.add_response("describe_instances", described(("i-0abc", "terminated"), ("i-0def", "terminated")),
                   {"InstanceIds": ["i-0abc", "i-0def"]})
    s.add_response("delete_security_group", {}, {"GroupId": "sg-1"})
    s.add_response("delete_key_pair", {}, {"KeyName": "dl-server"})
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-9"})
    s.add_response("delete_security_group", {}, {"GroupId": "sg-9"})
    s.add_response("delete_key_pair", {}, {"KeyName": "old-server"})
    orphans = [{"kind": "elastic_ip", "id": "eipalloc-9", "lab": "old", "detail": "203.0.113.9"},
               {"kind": "security_group", "id": "sg-9", "lab": "old", "detail": "old-ssh",
                "summary": "security group old-ssh of lab old"},
               {"kind": "key_pair", "id": "key-9", "lab": "old", "detail": "old-server"}]
    done = lab_host.remove(params(lab_host, addresses=[ASSOCIATED, FREE], instances=INSTANCES,
                                  security_group_id="sg-1", key_name="dl-server", orphans=orphans), region)
    assert done == {"changed": True, "attempts": [], "removed": {
        "addresses": ["203.0.113.5", "203.0.113.6"], "spot_requests": [], "instances": ["i-0abc", "i-0def"],
        "shelves": [], "security_group": "sg-1",
        "key_pair": "dl-server",
        "orphans": ["elastic_ip 203.0.113.9", "security group old-ssh of lab old", "key_pair old-server"]}}


def test_what_is_gone_already_is_no_error_and_not_counted(lab_host: ModuleType, region: FakeRegion) -> None:
    """A second teardown after an interrupted one: the address released meanwhile, the
    association gone (the address is still released), the instances forgotten by AWS, the
    group deleted."""
    s = region.stub
    error(region, "disassociate_address", "InvalidAssociationID.NotFound", {"AssociationId": "eipassoc-1"})
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-1"})  # without a second disassociate
    error(region, "release_address", "InvalidAllocationID.NotFound", {"AllocationId": "eipalloc-2"})
    error(region, "terminate_instances", "InvalidInstanceID.NotFound", {"InstanceIds": ["i-0abc", "i-0def"]})
    error(region, "describe_instances", "InvalidInstanceID.NotFound", {"InstanceIds": ["i-0abc", "i-0def"]})
    error(region, "delete_security_group", "InvalidGroup.NotFound", {"GroupId": "sg-1"})
    done = lab_host.remove(params(lab_host, addresses=[ASSOCIATED, FREE], instances=INSTANCES,
                                  security_group_id="sg-1"), region)
    assert done["removed"] == {"addresses": ["203.0.113.5"], "instances": [], "security_group": "",
                               "key_pair": "", "orphans": [], "spot_requests": [], "shelves": []}
    assert done["changed"] is True


def test_nothing_left_is_no_call_and_no_change(lab_host: ModuleType, region: FakeRegion) -> None:
    assert lab_host.remove(params(lab_host), region) == {"changed": False, "removed": lab_host.nothing_removed(),
                                                         "attempts": []}


def test_instances_ending_already_are_waited_for_but_not_counted(lab_host: ModuleType, region: FakeRegion) -> None:
    s = region.stub
    s.add_response("terminate_instances", terminating(("i-0abc", "shutting-down"), ("i-0def", "stopped")),
                   {"InstanceIds": ["i-0abc", "i-0def"]})
    s.add_response("describe_instances", described(("i-0abc", "terminated"), ("i-0def", "terminated")),
                   {"InstanceIds": ["i-0abc", "i-0def"]})
    s.add_response("delete_security_group", {}, {"GroupId": "sg-1"})
    done = lab_host.remove(params(lab_host, instances=INSTANCES, security_group_id="sg-1"), region)
    assert done["removed"]["instances"] == ["i-0def"]


def test_an_address_associated_since_it_was_found_is_looked_up_and_let_go(lab_host: ModuleType,
                                                                          region: FakeRegion) -> None:
    """Found free, associated meanwhile (InvalidIPAddress.InUse): DescribeAddresses says where,
    then DisassociateAddress, then ReleaseAddress."""
    s = region.stub
    error(region, "release_address", "InvalidIPAddress.InUse", {"AllocationId": "eipalloc-2"})
    s.add_response("describe_addresses", {"Addresses": [{"AllocationId": "eipalloc-2", "AssociationId": "eipassoc-7",
                                                         "PublicIp": "203.0.113.6"}]},
                   {"AllocationIds": ["eipalloc-2"]})
    s.add_response("disassociate_address", {}, {"AssociationId": "eipassoc-7"})
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-2"})
    done = lab_host.remove(params(lab_host, addresses=[FREE]), region)
    assert done["removed"]["addresses"] == ["203.0.113.6"]


def test_an_address_that_stays_associated_fails_after_three_tries(lab_host: ModuleType, region: FakeRegion) -> None:
    for _try in range(3):
        error(region, "release_address", "InvalidIPAddress.InUse", {"AllocationId": "eipalloc-2"})
        region.stub.add_response("describe_addresses", {"Addresses": [{"AllocationId": "eipalloc-2",
                                                                       "PublicIp": "203.0.113.6"}]},
                                 {"AllocationIds": ["eipalloc-2"]})
    with pytest.raises(lab_host.LabFailure, match="The address eipalloc-2 stayed associated; release it in the EC2"):
        lab_host.remove(params(lab_host, addresses=[FREE], instances=INSTANCES), region)  # and no TerminateInstances


def test_instances_not_gone_in_time_stop_the_removal_before_the_group(lab_host: ModuleType,
                                                                      region: FakeRegion) -> None:
    """wait_timeout 0: one look, still shutting down: the failure says so, lists the address
    released before, and neither the group nor the key pair is touched (no call queued)."""
    s = region.stub
    s.add_response("release_address", {}, {"AllocationId": "eipalloc-2"})
    s.add_response("terminate_instances", terminating(("i-0abc", "running")), {"InstanceIds": ["i-0abc"]})
    s.add_response("describe_instances", described(("i-0abc", "shutting-down")), {"InstanceIds": ["i-0abc"]})
    with pytest.raises(lab_host.LabFailure) as caught:
        lab_host.remove(params(lab_host, addresses=[FREE], instances=INSTANCES[:1], security_group_id="sg-1",
                               key_name="dl-server"), region)
    assert caught.value.msg == "The instances i-0abc were not gone after 0 s: run teardown.yml again."
    assert caught.value.removed == {"addresses": ["203.0.113.6"], "instances": [], "security_group": "",
                                    "key_pair": "", "orphans": [], "spot_requests": [], "shelves": []}
    part = lab_host._failed(caught.value, "absent")
    assert part["changed"] is True and part["removed"] == caught.value.removed


def test_a_group_still_in_use_past_the_wait_fails_before_the_key_pair(lab_host: ModuleType,
                                                                      region: FakeRegion) -> None:
    s = region.stub
    s.add_response("terminate_instances", terminating(("i-0abc", "running")), {"InstanceIds": ["i-0abc"]})
    s.add_response("describe_instances", described(("i-0abc", "terminated")), {"InstanceIds": ["i-0abc"]})
    error(region, "delete_security_group", "DependencyViolation", {"GroupId": "sg-1"})
    with pytest.raises(lab_host.LabFailure, match=r"^Could not delete the security group sg-1: .*DependencyViolation"):
        lab_host.remove(params(lab_host, instances=INSTANCES[:1], security_group_id="sg-1", key_name="dl-server"),
                        region)


def test_another_error_fails_the_lab_with_what_went_before(lab_host: ModuleType, region: FakeRegion) -> None:
    region.stub.add_response("release_address", {}, {"AllocationId": "eipalloc-2"})
    error(region, "terminate_instances", "UnauthorizedOperation", {"InstanceIds": ["i-0abc"]}, 403)
    with pytest.raises(lab_host.LabFailure, match="^Could not remove lab dl: .*UnauthorizedOperation") as caught:
        lab_host.remove(params(lab_host, addresses=[FREE], instances=INSTANCES[:1], key_name="dl-server"), region)
    assert caught.value.removed["addresses"] == ["203.0.113.6"]


def test_an_unknown_kind_of_left_over_fails_and_says_what_went(lab_host: ModuleType, region: FakeRegion) -> None:
    region.stub.add_response("delete_key_pair", {}, {"KeyName": "dl-server"})
    with pytest.raises(lab_host.LabFailure, match="Unknown kind of left-over resource") as caught:
        lab_host.remove(params(lab_host, key_name="dl-server", orphans=[{"kind": "volume", "id": "vol-1"}]), region)
    assert caught.value.removed["key_pair"] == "dl-server"


# --- a class: each left-over once --------------------------------------------------------------

def test_each_left_over_goes_with_one_lab_and_a_labs_own_with_that_lab(lab_host: ModuleType) -> None:
    """Both labs of us-east-1 were given the same left-overs (lab_info lists the region's): the
    first lab removes the address of lab old; the second does not again. The group of lab b (of
    this call) is b's own business, not an orphan of a. The same address id in another region is
    another address."""
    shared = [{"kind": "elastic_ip", "id": "eipalloc-9", "lab": "old"},
              {"kind": "security_group", "id": "sg-b", "lab": "b"}]
    labs = [{"lab": "a", "region": "us-east-1", "orphans": list(shared)},
            {"lab": "b", "region": "us-east-1", "orphans": list(shared)},
            {"lab": "c", "region": "eu-west-1", "orphans": list(shared)}]
    lab_host._orphans_once(labs)
    assert [[o["id"] for o in lab["orphans"]] for lab in labs] == [["eipalloc-9"], [], ["eipalloc-9", "sg-b"]]
