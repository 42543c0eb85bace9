"""csdl.gpu_lab.lab_info's discovery decisions: a lab's instances found by its tag, every page,
oldest first (the oldest is RV(instance)); the candidate types described in one call (one call
per type only when one of them is unknown, to say which); the image of a new lab from the DLAMI
lines in SSM (one GetParametersByPath per architecture, one DescribeImages for every image),
the pinned image as given, the lookups when SSM is refused; the quotas asked only for labs that
need a new instance, with the vCPUs running per type.

AWS answers through botocore's Stubber, in order; a call nobody queued fails the test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from tests.unit.collection import load

LIVE = ["pending", "running", "stopping", "stopped"]
PATH = "/aws/service/deeplearning/ami/{}/"
LINE_29 = "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-22.04"
LINE_212 = "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04"
SESSION = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")  # noqa: S106


@pytest.fixture(scope="module")
def lab_info() -> ModuleType:
    return load("modules.lab_info")


@pytest.fixture
def stubbed() -> Iterator[Any]:
    """stubbed(service) -> (client, Stubber); every queued answer must be used."""
    made: list[Stubber] = []

    def make(service: str = "ec2") -> tuple[Any, Stubber]:
        client = SESSION.client(service)
        stub = Stubber(client)
        stub.activate()
        made.append(stub)
        return client, stub

    yield make
    for stub in made:
        stub.assert_no_pending_responses()
        stub.deactivate()


def instance(instance_id: str, lab: str, day: int) -> dict[str, Any]:
    return {"InstanceId": instance_id, "State": {"Name": "running"}, "InstanceType": "g6.xlarge",
            "Placement": {"AvailabilityZone": "us-east-1a"}, "LaunchTime": dt.datetime(2026, 1, day, tzinfo=dt.UTC),
            "Tags": [{"Key": "gpu_lab:lab", "Value": lab}]}


def parameter(architecture: str, line: str, image_id: str) -> dict[str, Any]:
    return {"Name": f"{PATH.format(architecture)}{line}/latest/ami-id", "Value": image_id, "Type": "String"}


def image(image_id: str, name: str, created: str, architecture: str = "x86_64") -> dict[str, Any]:
    return {"ImageId": image_id, "Name": name, "CreationDate": created, "Architecture": architecture,
            "RootDeviceName": "/dev/sda1", "BlockDeviceMappings": [{"DeviceName": "/dev/sda1",
                                                                    "Ebs": {"VolumeSize": 75}}]}


def dlami_name(framework: str, ubuntu: str, date: str, arm: bool = False) -> str:
    return (f"Deep Learning {'ARM64 ' if arm else ''}OSS Nvidia Driver AMI GPU PyTorch {framework} (Ubuntu {ubuntu}) "
            f"{date}")


def wanted(**given: str) -> dict[str, Any]:
    return {"image_id": "", "dlami": "", "name_pattern": "", "owners": ["amazon"], **given}


# --- instances -----------------------------------------------------------------------------------

def test_instances_are_found_by_tag_on_every_page_oldest_first(lab_info: ModuleType, stubbed: Any) -> None:
    """One filtered DescribeInstances (paged) for both labs; the oldest instance comes first
    whatever page it was on; an instance of a lab not asked about is left out."""
    ec2, stub = stubbed()
    filters = [{"Name": "tag:gpu_lab:lab", "Values": ["a", "b"]}, {"Name": "instance-state-name", "Values": LIVE}]
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [instance("i-new", "a", 20),
                                                                             instance("i-x", "x", 1)]}],
                                             "NextToken": "page-2"}, {"Filters": filters})
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [instance("i-old", "a", 2)]},
                                                              {"Instances": [instance("i-b", "b", 5)]}]},
                      {"Filters": filters, "NextToken": "page-2"})
    found = lab_info._instances(ec2, ["a", "b"])
    assert {lab: [i["id"] for i in found[lab]] for lab in found} == {"a": ["i-old", "i-new"], "b": ["i-b"]}


def test_a_class_past_the_filter_limit_takes_a_call_per_200_labs(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, stub = stubbed()
    labs = [f"s{n:03}" for n in range(201)]
    for chunk in (labs[:200], labs[200:]):
        stub.add_response("describe_instances", {"Reservations": []}, {"Filters": [
            {"Name": "tag:gpu_lab:lab", "Values": chunk}, {"Name": "instance-state-name", "Values": LIVE}]})
    found = lab_info._instances(ec2, labs)
    assert len(found) == 201 and not any(found.values())


# --- the candidate types -------------------------------------------------------------------------

def described(name: str, vcpus: int = 4) -> dict[str, Any]:
    return {"InstanceType": name, "VCpuInfo": {"DefaultVCpus": vcpus},
            "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
            "GpuInfo": {"Gpus": [{"Name": "L4", "Manufacturer": "NVIDIA", "Count": 1,
                                  "MemoryInfo": {"SizeInMiB": 22888}}]}}


def test_the_candidates_are_described_in_one_call_in_the_order_asked(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, stub = stubbed()
    stub.add_response("describe_instance_types", {"InstanceTypes": [described("g5.xlarge"), described("g6.xlarge")]},
                      {"InstanceTypes": ["g6.xlarge", "g5.xlarge"]})
    found = lab_info._instance_types(ec2, ["g6.xlarge", "g5.xlarge"])
    assert [(t["name"], t["exists"]) for t in found] == [("g6.xlarge", True), ("g5.xlarge", True)]


def test_an_unknown_candidate_is_found_by_asking_for_each(lab_info: ModuleType, stubbed: Any) -> None:
    """AWS refuses the whole call for one unknown type: then one call per type says which."""
    ec2, stub = stubbed()
    stub.add_client_error("describe_instance_types", "InvalidInstanceType", "g9.huge is not valid",
                          expected_params={"InstanceTypes": ["g6.xlarge", "g9.huge", "g5.xlarge"]})
    stub.add_response("describe_instance_types", {"InstanceTypes": [described("g6.xlarge")]},
                      {"InstanceTypes": ["g6.xlarge"]})
    stub.add_client_error("describe_instance_types", "InvalidInstanceType", "g9.huge is not valid",
                          expected_params={"InstanceTypes": ["g9.huge"]})
    stub.add_response("describe_instance_types", {"InstanceTypes": [described("g5.xlarge", 8)]},
                      {"InstanceTypes": ["g5.xlarge"]})
    found = lab_info._instance_types(ec2, ["g6.xlarge", "g9.huge", "g5.xlarge"])
    assert [(t["name"], t["exists"], t["vcpus"]) for t in found] == [
        ("g6.xlarge", True, 4), ("g9.huge", False, 0), ("g5.xlarge", True, 8)]


def test_another_error_describing_the_types_is_not_taken_for_an_unknown_type(lab_info: ModuleType,
                                                                             stubbed: Any) -> None:
    ec2, stub = stubbed()
    stub.add_client_error("describe_instance_types", "UnauthorizedOperation", "no", http_status_code=403)
    with pytest.raises(botocore.exceptions.ClientError, match="UnauthorizedOperation"):
        lab_info._instance_types(ec2, ["g6.xlarge", "g5.xlarge"])
    assert lab_info._instance_types(ec2, []) == []  # and no call


# --- the image -----------------------------------------------------------------------------------

def test_a_new_labs_image_is_the_newest_line_in_ssm_and_a_pinned_one_stays(lab_info: ModuleType,
                                                                           stubbed: Any) -> None:
    """Two requests of x86_64: one SSM path read (both pages) for both, the newest line by
    version as numbers (2.12 after 2.9), and one DescribeImages for the pinned image and every
    published one."""
    ec2, ec2_stub = stubbed()
    ssm, ssm_stub = stubbed("ssm")
    path = {"Path": PATH.format("x86_64"), "Recursive": True}
    ssm_stub.add_response("get_parameters_by_path", {"Parameters": [parameter("x86_64", LINE_29, "ami-29")],
                                                     "NextToken": "more"}, path)
    ssm_stub.add_response("get_parameters_by_path", {"Parameters": [parameter("x86_64", LINE_212, "ami-212")]},
                          {**path, "NextToken": "more"})
    ec2_stub.add_response("describe_images", {"Images": [
        image("ami-pin", "my own image", "2026-03-01T00:00:00.000Z"),
        image("ami-212", dlami_name("2.12", "24.04", "20261120"), "2026-11-20T00:00:00.000Z"),
        image("ami-29", dlami_name("2.9", "22.04", "20261101"), "2026-11-01T00:00:00.000Z"),
    ]}, {"ImageIds": ["ami-pin", "ami-212", "ami-29"]})
    found = lab_info._images(ec2, ssm, {"latest": (wanted(), "x86_64"),
                                        "pinned": (wanted(image_id="ami-pin"), "x86_64")}, {})
    assert (found["latest"]["image_id"], found["latest"]["source"], found["latest"]["line"]) == (
        "ami-212", "ssm", LINE_212)
    assert (found["pinned"]["image_id"], found["pinned"]["source"]) == ("ami-pin", "pinned")
    assert found["latest"]["note"] == found["pinned"]["note"] == ""


def test_an_instances_image_is_told_of_a_newer_line_of_its_architecture(lab_info: ModuleType,
                                                                        stubbed: Any) -> None:
    """An arm64 instance's image: the arm64 lines are read (not the x86_64 ones), and a newer
    supported line is said."""
    ec2, ec2_stub = stubbed()
    ssm, ssm_stub = stubbed("ssm")
    ssm_stub.add_response("get_parameters_by_path", {"Parameters": [parameter("arm64", LINE_212, "ami-a212")]},
                          {"Path": PATH.format("arm64"), "Recursive": True})
    ec2_stub.add_response("describe_images", {"Images": [
        image("ami-old", dlami_name("2.9", "22.04", "20260101", arm=True), "2026-01-01T00:00:00.000Z", "arm64"),
        image("ami-a212", dlami_name("2.12", "24.04", "20261120", arm=True), "2026-11-20T00:00:00.000Z", "arm64"),
    ]}, {"ImageIds": ["ami-old", "ami-a212"]})
    found = lab_info._images(ec2, ssm, {}, {"ami-old": ("ami-old", "arm64")})["ami-old"]
    assert (found["source"], found["line"]) == ("instance", LINE_29)
    assert f"a newer supported line exists, {LINE_212}" in found["newer"]


def test_ssm_refused_the_image_is_found_by_its_name(lab_info: ModuleType, stubbed: Any) -> None:
    """No GetParametersByPath: no DescribeImages by id (there is none to ask), one by name, the
    newest supported line of the matches, and a note that says why."""
    ec2, ec2_stub = stubbed()
    ssm, ssm_stub = stubbed("ssm")
    ssm_stub.add_client_error("get_parameters_by_path", "AccessDeniedException", "not allowed", 400)
    pattern = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu *)*"
    ec2_stub.add_response("describe_images", {"Images": [
        image("ami-29", dlami_name("2.9", "22.04", "20261125"), "2026-11-25T00:00:00.000Z"),
        image("ami-212", dlami_name("2.12", "24.04", "20261120"), "2026-11-20T00:00:00.000Z"),
    ]}, {"Owners": ["amazon"], "Filters": [{"Name": "name", "Values": [pattern]},
                                           {"Name": "state", "Values": ["available"]},
                                           {"Name": "architecture", "Values": ["x86_64"]}]})
    found = lab_info._images(ec2, ssm, {"new": (wanted(name_pattern=pattern), "x86_64")}, {})["new"]
    assert (found["image_id"], found["source"]) == ("ami-212", "name")
    assert found["note"].startswith("The public SSM parameters of the Deep Learning AMIs could not be read "
                                    "(AccessDeniedException): the image was found by its name")


def test_ssm_path_refused_a_pinned_line_is_read_by_its_own_parameter(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, ec2_stub = stubbed()
    ssm, ssm_stub = stubbed("ssm")
    ssm_stub.add_client_error("get_parameters_by_path", "AccessDeniedException", "not allowed", 400)
    ssm_stub.add_response("get_parameter", {"Parameter": parameter("x86_64", LINE_29, "ami-29")},
                          {"Name": f"{PATH.format('x86_64')}{LINE_29}/latest/ami-id"})
    ec2_stub.add_response("describe_images", {"Images": [
        image("ami-29", dlami_name("2.9", "22.04", "20261101"), "2026-11-01T00:00:00.000Z")]},
        {"ImageIds": ["ami-29"]})
    found = lab_info._images(ec2, ssm, {"new": (wanted(dlami=LINE_29), "x86_64")}, {})["new"]
    assert (found["image_id"], found["source"], found["line"]) == ("ami-29", "ssm", LINE_29)


def test_ssm_failing_otherwise_is_not_taken_for_a_refusal(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, _ec2_stub = stubbed()
    ssm, ssm_stub = stubbed("ssm")
    ssm_stub.add_client_error("get_parameters_by_path", "InternalServerError", "oops", 500)
    with pytest.raises(botocore.exceptions.ClientError, match="InternalServerError"):
        lab_info._images(ec2, ssm, {"new": (wanted(name_pattern="x*"), "x86_64")}, {})


# --- quotas --------------------------------------------------------------------------------------

def module_with(clients: dict[str, Any]) -> Any:
    """What lab_info uses of an AnsibleAWSModule to make a client: the stubbed one of each service."""
    return SimpleNamespace(region="us-east-1", client=lambda service, config=None, **where: clients[service])


def quota_lab(name: str, check: bool = True, requests: bool = False) -> dict[str, Any]:
    return {"lab": name, "quota": {"codes": ["L-DB2E81BA"], "check": check, "requests": requests}}


def test_quotas_are_asked_for_labs_that_need_an_instance_with_the_vcpus_running(lab_info: ModuleType,
                                                                                stubbed: Any) -> None:
    """a has an instance (no quota check for it), b needs one: one GetServiceQuota of b's code,
    one look at what runs in the region (2 x g5.xlarge of the candidates, one of them a Spot Instance,
    counted apart; 1 x g4dn.2xlarge, not a candidate: described in one more call)."""
    ec2, ec2_stub = stubbed()
    quotas, quotas_stub = stubbed("service-quotas")
    quotas_stub.add_response("get_service_quota", {"Quota": {"QuotaCode": "L-DB2E81BA", "Value": 64.0}},
                             {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    running = [{**instance(f"i-{n}", "x", 1), "InstanceType": t}
               for n, t in enumerate(["g5.xlarge", "g4dn.2xlarge", "g5.xlarge"])]
    running[2]["InstanceLifecycle"] = "spot"
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": running}]},
                          {"Filters": [{"Name": "instance-state-name", "Values": ["pending", "running"]}]})
    ec2_stub.add_response("describe_instance_types", {"InstanceTypes": [described("g4dn.2xlarge", 8)]},
                          {"InstanceTypes": ["g4dn.2xlarge"]})
    candidates = {"g5.xlarge": {"name": "g5.xlarge", "vcpus": 4}}
    quota, requests = lab_info._region_quotas(module_with({"service-quotas": quotas}), "us-east-1", ec2,
                                              [quota_lab("a"), quota_lab("b")], {"a": [{"id": "i-a"}], "b": []},
                                              candidates)
    assert quota == {"applied": {"L-DB2E81BA": 64.0}, "running_vcpus": {"g5.xlarge": 4, "g4dn.2xlarge": 8},
                     "running_spot_vcpus": {"g5.xlarge": 4}, "unavailable": ""}
    assert requests == {}


def test_no_lab_needing_an_instance_asks_no_quota(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, _ec2_stub = stubbed()
    quotas, _quotas_stub = stubbed("service-quotas")
    assert lab_info._region_quotas(module_with({"service-quotas": quotas}), "us-east-1", ec2, [quota_lab("a")],
                                   {"a": [{"id": "i-a"}]}, {}) == ({}, {})


def test_service_quotas_refused_says_so_and_the_launch_goes_on(lab_info: ModuleType, stubbed: Any) -> None:
    ec2, ec2_stub = stubbed()
    quotas, quotas_stub = stubbed("service-quotas")
    quotas_stub.add_client_error("get_service_quota", "AccessDeniedException", "not allowed", 400)
    ec2_stub.add_response("describe_instances", {"Reservations": []},
                          {"Filters": [{"Name": "instance-state-name", "Values": ["pending", "running"]}]})
    quota = lab_info._quotas(module_with({"service-quotas": quotas}), "us-east-1", ec2, ["L-DB2E81BA"], {})
    assert quota == {"applied": {"L-DB2E81BA": None}, "running_vcpus": {}, "running_spot_vcpus": {},
                     "unavailable": "AccessDeniedException"}


def test_open_quota_requests_are_read_also_for_a_lab_with_an_instance(lab_info: ModuleType, stubbed: Any) -> None:
    """requests: the open ones (pending, case opened) of each code, whether or not the lab has an
    instance; a request approved or denied is not open."""
    ec2, _ec2_stub = stubbed()
    quotas, quotas_stub = stubbed("service-quotas")
    changes = [{"Id": f"r-{status}", "QuotaCode": "L-DB2E81BA", "QuotaName": "G and VT", "DesiredValue": 8.0,
                "Status": status, "Created": dt.datetime(2026, 11, 1, tzinfo=dt.UTC)}
               for status in ("PENDING", "APPROVED", "CASE_OPENED", "DENIED")]
    quotas_stub.add_response("list_requested_service_quota_change_history_by_quota", {"RequestedQuotas": changes},
                             {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    quota, requests = lab_info._region_quotas(module_with({"service-quotas": quotas}), "us-east-1", ec2,
                                              [quota_lab("a", check=False, requests=True)], {"a": [{"id": "i-a"}]},
                                              {})
    assert quota == {}
    assert [(r["id"], r["status"], r["created"]) for r in requests["L-DB2E81BA"]] == [
        ("r-PENDING", "PENDING", "2026-11-01T00:00:00+00:00"), ("r-CASE_OPENED", "CASE_OPENED",
                                                                "2026-11-01T00:00:00+00:00")]
