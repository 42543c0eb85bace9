"""The on-demand vCPU quota before anything is created (issue 16): a launch reads Service Quotas
and what runs, skips what does not fit, stops with one message when nothing fits, asks AWS for
more only when told to, and goes on when Service Quotas is refused. The emulator answers
Service Quotas with botocore's shapes and EC2 enforces the quota, as AWS does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.loaders
import pytest

from local_cloud.cloud import Cloud
from local_cloud.quotas import QuotaState
from tests.aws_state import lab_state
from tests.playbook import REPO, run_playbook

G = "L-DB2E81BA"
REGION = "us-east-1"
LAB = {"gpu_lab_name": "qa", "gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false"}
NO_FIT = "does not fit the account's on-demand vCPU quota"


def flat(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())


def launch(cloud: Cloud, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_playbook("launch", cloud.env(), home, {**LAB, **extra})


def calls(cloud: Cloud) -> dict[str, int]:
    return dict(cloud.emulator.calls.snapshot()["by_action"])


@pytest.fixture
def faults(cloud: Cloud) -> Iterator[Any]:
    yield cloud.emulator.faults
    cloud.emulator.faults.clear()


# --- the emulator: Service Quotas' shapes, EC2's enforcement -------------------------------------

def _check_shape(model: dict[str, Any], shape_name: str, value: Any, where: str) -> None:
    """The value has the shape botocore's service model gives (members, types, enums)."""
    shape = model["shapes"][shape_name]
    kind = shape["type"]
    if kind == "structure":
        assert isinstance(value, dict), where
        unknown = set(value) - set(shape["members"])
        assert not unknown, f"{where}: {unknown} not in {shape_name}"
        for key, member in value.items():
            _check_shape(model, shape["members"][key]["shape"], member, f"{where}.{key}")
    elif kind == "list":
        assert isinstance(value, list), where
        for n, item in enumerate(value):
            _check_shape(model, shape["member"]["shape"], item, f"{where}[{n}]")
    elif kind == "map":
        assert isinstance(value, dict), where
        for key, item in value.items():
            _check_shape(model, shape["value"]["shape"], item, f"{where}.{key}")
    elif kind == "string":
        assert isinstance(value, str), where
        if "enum" in shape:
            assert value in shape["enum"], f"{where}: {value!r} not in {shape['enum']}"
    elif kind == "double":
        assert isinstance(value, float), where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind == "timestamp":
        assert isinstance(value, (int, float)), where  # the JSON protocol's epoch seconds
    elif kind in ("integer", "long"):
        assert isinstance(value, int), where


def test_service_quotas_answers_have_botocore_shapes() -> None:
    model = botocore.loaders.create_loader().load_service_model("service-quotas", "service-2")
    state = QuotaState(course=True)
    auth = f"AWS4-HMAC-SHA256 Credential=testing/20261202/{REGION}/servicequotas/aws4_request, X"

    def ask(operation: str, **params: Any) -> tuple[int, dict[str, Any]]:
        environ = {"HTTP_X_AMZ_TARGET": f"ServiceQuotasV20190624.{operation}", "HTTP_AUTHORIZATION": auth,
                   "PATH_INFO": "/"}
        status, headers, body = state(environ, json.dumps(params).encode(), f"servicequotas:{operation}")
        assert headers["Content-Type"] == "application/x-amz-json-1.1"
        answer = json.loads(body)
        if status == 200:
            _check_shape(model, model["operations"][operation]["output"]["shape"], answer, operation)
        return status, answer

    assert ask("GetServiceQuota", ServiceCode="ec2", QuotaCode=G)[1]["Quota"]["Value"] == 1024.0
    assert ask("GetAWSDefaultServiceQuota", ServiceCode="ec2", QuotaCode=G)[1]["Quota"]["Value"] == 0.0
    # The course account's increase is in its history, approved.
    history = ask("ListRequestedServiceQuotaChangeHistoryByQuota", ServiceCode="ec2", QuotaCode=G)[1]
    assert [(r["Status"], r["DesiredValue"]) for r in history["RequestedQuotas"]] == [("APPROVED", 1024.0)]
    filed = ask("RequestServiceQuotaIncrease", ServiceCode="ec2", QuotaCode=G, DesiredValue=2048.0)[1]
    request = filed["RequestedQuota"]
    assert request["Status"] == "PENDING"
    assert ask("GetRequestedServiceQuotaChange", RequestId=request["Id"])[1]["RequestedQuota"] == request
    # The course's approved G, P and G-spot increases, and the one just filed.
    assert len(ask("ListRequestedServiceQuotaChangeHistory", ServiceCode="ec2")[1]["RequestedQuotas"]) == 4
    # A second request while one is open is refused; so is an unknown quota.
    status, error = ask("RequestServiceQuotaIncrease", ServiceCode="ec2", QuotaCode=G, DesiredValue=4096.0)
    assert (status, error["__type"]) == (400, "ResourceAlreadyExistsException")
    assert model["shapes"]["ResourceAlreadyExistsException"]["type"] == "structure"
    status, error = ask("GetServiceQuota", ServiceCode="ec2", QuotaCode="L-00000000")
    assert (status, error["__type"]) == (400, "NoSuchResourceException")
    state.approve(request["Id"])
    assert ask("GetServiceQuota", ServiceCode="ec2", QuotaCode=G)[1]["Quota"]["Value"] == 2048.0
    state.new_account()
    assert ask("GetServiceQuota", ServiceCode="ec2", QuotaCode=G)[1]["Quota"]["Value"] == 0.0
    assert ask("GetServiceQuota", ServiceCode="ec2", QuotaCode="L-1216C47A")[1]["Quota"]["Value"] == 5.0


def test_ec2_refuses_runs_and_starts_over_the_quota(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    image = next(iter(cloud.emulator.dlami[REGION].values()))
    cloud.emulator.quotas.set(REGION, G, 4)

    def run(instance_type: str = "g4dn.xlarge") -> dict[str, Any]:
        return ec2.run_instances(ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1)["Instances"][0]

    first = run()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        run()
    error = refused.value.response
    assert error["Error"]["Code"] == "VcpuLimitExceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Message"].startswith("You have requested more vCPU capacity than your current vCPU "
                                                "limit of 4 allows for the instance bucket")
    live = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]
    assert [i["InstanceId"] for i in live] == [first["InstanceId"]]  # the refused one created nothing
    run("m5.large")  # another group, its own quota (a new account's Standard 5 vCPUs)
    ec2.stop_instances(InstanceIds=[first["InstanceId"]])
    second = run()  # a stopped instance uses no vCPUs
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.start_instances(InstanceIds=[first["InstanceId"]])
    assert refused.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    ec2.terminate_instances(InstanceIds=[second["InstanceId"]])
    ec2.start_instances(InstanceIds=[first["InstanceId"]])


# --- a launch -----------------------------------------------------------------------------------

def test_quota_zero_stops_before_anything_is_created(cloud: Cloud, aws: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    cloud.emulator.quotas.new_account()
    cloud.emulator.calls.reset()
    result = launch(cloud, tmp_path)
    out = flat(result)
    assert result.returncode != 0
    assert ("Lab qa does not fit the account's on-demand vCPU quota in us-east-1: Running On-Demand G and VT "
            "instances (L-DB2E81BA) is 0 vCPUs with 0 in use (g6.xlarge needs 4, g5.xlarge needs 4, g4dn.xlarge "
            "needs 4), so nothing was created.") in out, out[-4000:]
    assert ("`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA "
            "--desired-value 4 --region us-east-1`") in out
    assert "Service Quotas console" in out and "-e gpu_lab_request_quota=true" in out
    assert len(re.findall(r"msg\": \"Lab qa does not fit", result.stdout)) <= 1
    state = lab_state(aws("ec2"), "qa")
    assert not (state["instances"] or state["groups"] or state["key_pairs"] or state["addresses"])
    snapshot = cloud.emulator.calls.snapshot()
    assert snapshot["mutating"] == 0, snapshot["by_action"]
    assert snapshot["by_action"].get("servicequotas:GetServiceQuota") == 1  # the three candidates share one quota
    assert not cloud.emulator.quotas.requests(REGION)  # never filed unasked
    assert not (tmp_path / ".ssh" / "qa-server.pem").exists()


def test_one_lab_running_leaves_no_room_for_a_second(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    cloud.emulator.quotas.set(REGION, G, 4)
    one = {"gpu_lab_instance_type": "g4dn.xlarge", "gpu_lab_fallback_instance_types": "[]"}
    first = launch(cloud, tmp_path, **one)
    assert first.returncode == 0, flat(first)[-4000:]
    cloud.emulator.calls.reset()
    rerun = launch(cloud, tmp_path, **one)
    assert rerun.returncode == 0
    assert not any(a.startswith("servicequotas:") for a in calls(cloud))  # a lab with its instance asks nothing
    second = launch(cloud, tmp_path, gpu_lab_name="qb", **one)
    out = flat(second)
    assert second.returncode != 0
    assert ("Lab qb does not fit the account's on-demand vCPU quota in us-east-1: Running On-Demand G and VT "
            "instances (L-DB2E81BA) is 4 vCPUs with 4 in use (g4dn.xlarge needs 4)") in out, out[-4000:]
    assert "--desired-value 8 --region us-east-1" in out
    state = lab_state(aws("ec2"), "qb")
    assert not (state["instances"] or state["groups"] or state["key_pairs"])


def test_a_candidate_that_does_not_fit_is_skipped(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    cloud.emulator.quotas.set(REGION, G, 4)
    result = launch(cloud, tmp_path, gpu_lab_instance_type="g5.2xlarge",
                    gpu_lab_fallback_instance_types="g4dn.xlarge")
    out = flat(result)
    assert result.returncode == 0, out[-4000:]
    assert "Launched g4dn.xlarge in us-east-1a, after g5.2xlarge in no zone: quota." in out, out[-4000:]
    assert [i["InstanceType"] for i in lab_state(aws("ec2"), "qa")["instances"]] == ["g4dn.xlarge"]
    # RunInstances was never tried with the type that does not fit.
    assert calls(cloud).get("ec2:RunInstances") == 1


def test_service_quotas_refused_warns_once_and_launches(cloud: Cloud, aws: Callable[..., Any], faults: Any,
                                                         tmp_path: Path) -> None:
    faults.add("servicequotas:GetServiceQuota", "AccessDeniedException",
               message="User is not authorized to perform: servicequotas:GetServiceQuota")
    result = launch(cloud, tmp_path)
    out = flat(result)
    assert result.returncode == 0, out[-4000:]
    assert out.count("Could not read the on-demand vCPU quotas of us-east-1 from Service Quotas "
                     "(AccessDeniedException)") == 1, out[-4000:]
    assert [i["InstanceType"] for i in lab_state(aws("ec2"), "qa")["instances"]] == ["g6.xlarge"]


def status_lines(cloud: Cloud, home: Path) -> str:
    result = run_playbook("status", cloud.env(), home, LAB)
    assert result.returncode == 0, flat(result)[-4000:]
    return flat(result)


def test_the_request_is_filed_once_when_asked(cloud: Cloud, aws: Callable[..., Any], tmp_path: Path) -> None:
    quotas = cloud.emulator.quotas
    quotas.new_account()
    first = launch(cloud, tmp_path, gpu_lab_request_quota="true")
    out = flat(first)
    assert first.returncode != 0
    [request] = quotas.requests(REGION)
    assert (request["QuotaCode"], request["DesiredValue"], request["Status"]) == (G, 4.0, "PENDING")
    assert (f"Asked AWS to raise Running On-Demand G and VT instances (L-DB2E81BA) in us-east-1 to 4 vCPUs: "
            f"request {request['Id']}, status PENDING. Run launch.yml again once AWS approved it.") in out, out[-4000:]
    assert not lab_state(aws("ec2"), "qa")["key_pairs"]
    # status.yml shows the open request.
    assert re.search(rf"quota +request {request['Id']} to raise Running On-Demand G and VT instances to 4 "
                     r"vCPUs: PENDING", status_lines(cloud, tmp_path))
    # A second launch reports the request, and files none.
    second = launch(cloud, tmp_path, gpu_lab_request_quota="true")
    assert second.returncode != 0
    assert f"A request is already open asking AWS to raise Running On-Demand G and VT instances (L-DB2E81BA) " \
           f"in us-east-1 to 4 vCPUs: request {request['Id']}, status PENDING." in flat(second)
    assert len(quotas.requests(REGION)) == 1
    # AWS approves it: the launch goes through, and status has no open request left.
    quotas.approve(request["Id"])
    third = launch(cloud, tmp_path, gpu_lab_request_quota="true")
    assert third.returncode == 0, flat(third)[-4000:]
    assert len(quotas.requests(REGION)) == 1
    assert not re.search(r"quota +request", status_lines(cloud, tmp_path))


# --- a class ------------------------------------------------------------------------------------

CLASS, STUDENTS = "qc", [f"s{n}" for n in range(1, 6)]


@pytest.fixture
def small_class(tmp_path: Path) -> dict[str, Any]:
    """A class of 5 (a key made for each student), none waited for over SSH."""
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "csdl-class" / "group_vars", inventory / "group_vars")
    (inventory / "class.roster.yml").write_text(f"plugin: csdl.gpu_lab.roster\nclass: {CLASS}\nroster: roster.csv\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    rows = ["student,public_key,instance_type,region"]
    for student in STUDENTS:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / student)], check=True)
        rows.append(f"{student},{(keys / f'{student}.pub').read_text().strip()},g4dn.xlarge,")
    (inventory / "roster.csv").write_text("\n".join(rows) + "\n")
    return {"inventory": inventory, "home": tmp_path / "staff"}


def test_a_class_larger_than_its_quota(cloud: Cloud, aws: Callable[..., Any], small_class: dict[str, Any]) -> None:
    cloud.emulator.quotas.set(REGION, G, 12)
    cloud.emulator.calls.reset()
    result = run_playbook("launch", cloud.env(), small_class["home"],
                          {"gpu_lab_ssh_cidr": "198.51.100.0/24", "gpu_lab_wait_for_ssh": "false",
                           "gpu_lab_fallback_instance_types": "[]"},
                          "-i", str(small_class["inventory"]), timeout=900)
    out = flat(result)
    ec2 = aws("ec2")
    running = sorted(lab for lab in (f"{CLASS}-{s}" for s in STUDENTS) if lab_state(ec2, lab)["instances"])
    assert running == ["qc-s1", "qc-s2", "qc-s3"], out[-4000:]  # in play order
    for student, desired in (("s4", 16), ("s5", 20)):
        assert (f"Lab qc-{student} does not fit the account's on-demand vCPU quota in us-east-1: Running On-Demand "
                "G and VT instances (L-DB2E81BA) is 12 vCPUs with 12 in use (g4dn.xlarge needs 4)") in out, out[-4000:]
        assert f"--desired-value {desired} --region us-east-1" in out
        state = lab_state(ec2, f"{CLASS}-{student}")
        assert not (state["groups"] or state["key_pairs"])
    # Once per region for the whole class.
    assert calls(cloud).get("servicequotas:GetServiceQuota") == 1
