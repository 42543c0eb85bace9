"""The fault injector answers chosen API calls as AWS does, on the schedule asked for.

Each rule kind is proven with a real boto3 client against the emulator: the error code,
the HTTP status, the response body AWS sends, what botocore makes of it, the schedules
(nth, every, first, always), the predicates, the HTTP control endpoint, the log.

botocore retries 500/503 and throttling by default; where exact counts matter the client
makes one attempt only (``total_max_attempts=1``: ``max_attempts`` counts retries, so
``max_attempts=1`` still makes two attempts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from local_cloud.cloud import Cloud
from local_cloud.emulator import Emulator
from local_cloud.faults import FaultInjector, RemoteFaults
from tests.playbook import REPO

ONE_ATTEMPT = Config(retries={"total_max_attempts": 1})


@pytest.fixture
def emulator(cloud: Cloud) -> Emulator:
    return cloud.emulator


def client(emulator: Emulator, service: str, config: Config | None = ONE_ATTEMPT, region: str = "us-east-1") -> Any:
    return boto3.client(service, region_name=region, endpoint_url=emulator.url, config=config,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106


def error_of(call: Callable[[], Any]) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return caught.value


def run_g6(ec2: Any, emulator: Emulator, **extra: Any) -> Any:
    image = next(iter(emulator.dlami["us-east-1"].values()))
    return ec2.run_instances(ImageId=image, InstanceType=extra.pop("InstanceType", "g6.xlarge"),
                             MinCount=1, MaxCount=1, **extra)


def live_instances(ec2: Any) -> list[dict[str, Any]]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]


def subnet_in(ec2: Any, zone: str) -> str:
    return next(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"] if s["AvailabilityZone"] == zone)


def raw_call(emulator: Emulator, form: str, service: str = "ec2",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request as botocore sends it (form body, SigV4 scope naming the service)."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        emulator.url + "/", data=form.encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                 "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/{service}/aws4_request, "
                                  "SignedHeaders=host, Signature=0", **(headers or {})})
    try:
        with urllib.request.urlopen(request) as answer:  # noqa: S310 - loopback
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def control(emulator: Emulator, method: str, path: str = "", payload: Any = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{emulator.url}/_gpu_lab/faults{path}", data=data, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request) as answer:  # noqa: S310 - loopback
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


# --- the errors themselves ---------------------------------------------------------------

EC2_ERRORS = [
    ("InsufficientInstanceCapacity", 500, "We currently do not have sufficient g6.xlarge capacity"),
    ("Unsupported", 400, "Your requested instance type (g6.xlarge) is not supported"),
    ("RequestLimitExceeded", 503, "Request limit exceeded."),
    ("VcpuLimitExceeded", 400, "You have requested more vCPU capacity than your current vCPU limit"),
    ("InternalError", 500, "An internal error has occurred"),
]


@pytest.mark.parametrize(("code", "status", "message"), EC2_ERRORS, ids=[e[0] for e in EC2_ERRORS])
def test_ec2_error_as_aws_sends_it(emulator: Emulator, code: str, status: int, message: str) -> None:
    ec2 = client(emulator, "ec2")
    emulator.faults.add("ec2:RunInstances", code)
    error = error_of(lambda: run_g6(ec2, emulator, Placement={"AvailabilityZone": "us-east-1a"}))
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["Error"]["Message"].startswith(message)
    (injected,) = emulator.faults.log
    assert (injected.action, injected.code, injected.status, injected.call) == ("ec2:RunInstances", code, status, 1)
    assert error.response["ResponseMetadata"]["RequestId"] == injected.request_id
    assert live_instances(ec2) == []  # moto never saw it
    calls = emulator.calls.snapshot()
    assert calls["by_action"]["ec2:RunInstances"] == 1
    assert calls["injected_by_action"] == {"ec2:RunInstances": 1}


def test_capacity_message_names_the_type_and_the_other_zones(emulator: Emulator) -> None:
    ec2 = client(emulator, "ec2")
    emulator.faults.add("RunInstances", "InsufficientInstanceCapacity")
    error = error_of(lambda: run_g6(ec2, emulator, SubnetId=subnet_in(ec2, "us-east-1c")))
    message = error.response["Error"]["Message"]
    assert "sufficient g6.xlarge capacity in the Availability Zone you requested (us-east-1c)" in message
    assert "choosing us-east-1a, us-east-1b, us-east-1d" in message


def test_ec2_error_body_is_the_ec2_query_protocol(emulator: Emulator) -> None:
    emulator.faults.add("ec2:DescribeKeyPairs", "RequestLimitExceeded")
    status, headers, body = raw_call(emulator, "Action=DescribeKeyPairs&Version=2016-11-15")
    assert status == 503
    assert headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(body)  # noqa: S314 - our own answer
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Errors", "RequestID"]
    assert root.findtext("Errors/Error/Code") == "RequestLimitExceeded"
    assert root.findtext("Errors/Error/Message") == "Request limit exceeded."
    assert root.findtext("RequestID") == emulator.faults.log[0].request_id


def test_any_code_and_status(emulator: Emulator) -> None:
    ec2 = client(emulator, "ec2")
    emulator.faults.add("ec2:CreateKeyPair", "UnauthorizedOperation", status=403,
                        message="You are not authorized to perform this operation ({KeyName}).")
    error = error_of(lambda: ec2.create_key_pair(KeyName="denied"))
    assert error.response["Error"] == {"Code": "UnauthorizedOperation",
                                       "Message": "You are not authorized to perform this operation (denied)."}
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_json_protocol_error_is_parsed_as_the_modeled_exception(emulator: Emulator) -> None:
    ssm = client(emulator, "ssm")
    emulator.faults.add("ssm:GetParameter", "ParameterNotFound", where={"Name": "/gpu_lab/*"})
    with pytest.raises(ssm.exceptions.ParameterNotFound) as caught:
        ssm.get_parameter(Name="/gpu_lab/anything")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert caught.value.response["ResponseMetadata"]["RequestId"] == emulator.faults.log[0].request_id
    # The predicate reads the JSON body: other names reach moto.
    assert error_of(lambda: ssm.get_parameter(Name="/other")).response["Error"]["Code"] == "ParameterNotFound"
    assert len(emulator.faults.log) == 1


def test_json_protocol_body(emulator: Emulator) -> None:
    emulator.faults.add("ssm:DescribeParameters", "InternalServerError")
    request = urllib.request.Request(  # noqa: S310 - loopback
        emulator.url + "/", data=b"{}", method="POST",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.DescribeParameters",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=t/20250101/us-east-1/ssm/aws4_request, S=0"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)  # noqa: S310 - loopback
    assert caught.value.code == 500
    assert caught.value.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert caught.value.headers["x-amzn-RequestId"] == emulator.faults.log[0].request_id
    assert json.load(caught.value) == {"__type": "InternalServerError", "message": "An internal error has occurred"}


@pytest.mark.parametrize(("service", "call", "action", "code", "status"), [
    ("ec2", lambda c: c.describe_instances(), "ec2:DescribeInstances", "RequestLimitExceeded", 503),
    ("ssm", lambda c: c.describe_parameters(), "ssm:DescribeParameters", "ThrottlingException", 400),
    ("sts", lambda c: c.get_caller_identity(), "sts:GetCallerIdentity", "Throttling", 400),
    ("cloudwatch", lambda c: c.describe_alarms(), "monitoring:DescribeAlarms", "Throttling", 400),
], ids=["ec2", "ssm", "sts", "cloudwatch"])
def test_throttle_is_each_services_own_error(emulator: Emulator, service: str, call: Callable[[Any], Any],
                                             action: str, code: str, status: int) -> None:
    emulator.faults.add("*", "throttle")
    error = error_of(lambda: call(client(emulator, service)))
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert [(i.action, i.code) for i in emulator.faults.log] == [(action, code)]


# --- schedules -----------------------------------------------------------------------------

def failed_calls(emulator: Emulator, n: int) -> list[int]:
    """Makes n DescribeKeyPairs calls (one attempt each): which ones failed (1-based)."""
    ec2 = client(emulator, "ec2")
    failed = []
    for call in range(1, n + 1):
        try:
            ec2.describe_key_pairs()
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "RequestLimitExceeded"
            failed.append(call)
    return failed


@pytest.mark.parametrize(("schedule", "failed"), [
    ({}, [1, 2, 3, 4, 5, 6, 7]),
    ({"nth": 2}, [2]),
    ({"every": 3}, [3, 6]),
    ({"first": 2}, [1, 2]),
], ids=["always", "nth", "every", "first"])
def test_schedule(emulator: Emulator, schedule: dict[str, int], failed: list[int]) -> None:
    rule = emulator.faults.add("ec2:DescribeKeyPairs", "RequestLimitExceeded", **schedule)
    assert failed_calls(emulator, 7) == failed
    assert [i.call for i in emulator.faults.log] == failed
    assert (rule.matched, rule.injected) == (7, len(failed))
    calls = emulator.calls.snapshot()
    assert (calls["by_action"]["ec2:DescribeKeyPairs"], calls["injected"]) == (7, len(failed))


def test_each_rule_counts_the_calls_it_selects(emulator: Emulator) -> None:
    ec2 = client(emulator, "ec2")
    keys = emulator.faults.add("ec2:DescribeKeyPairs", "RequestLimitExceeded", every=2)
    groups = emulator.faults.add("ec2:DescribeSecurityGroups", "InternalError", nth=1)
    outcomes = []
    for call in [ec2.describe_key_pairs, ec2.describe_security_groups, ec2.describe_key_pairs,
                 ec2.describe_security_groups, ec2.describe_key_pairs, ec2.describe_key_pairs]:
        try:
            call()
            outcomes.append("ok")
        except botocore.exceptions.ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["ok", "InternalError", "RequestLimitExceeded", "ok", "ok", "RequestLimitExceeded"]
    assert [(i.rule, i.call, i.request) for i in emulator.faults.log] == [(groups.id, 1, 2), (keys.id, 2, 3),
                                                                          (keys.id, 4, 6)]


def test_first_rule_that_fires_answers_but_every_rule_counts(emulator: Emulator) -> None:
    first = emulator.faults.add("ec2:DescribeKeyPairs", "InternalError", nth=1)
    second = emulator.faults.add("*", "RequestLimitExceeded", nth=2)
    ec2 = client(emulator, "ec2")
    codes = [error_of(ec2.describe_key_pairs).response["Error"]["Code"],
             error_of(ec2.describe_key_pairs).response["Error"]["Code"]]
    ec2.describe_key_pairs()
    assert codes == ["InternalError", "RequestLimitExceeded"]
    assert (first.matched, second.matched) == (3, 3)


def test_botocore_retries_through_a_short_burst(emulator: Emulator) -> None:
    ec2 = client(emulator, "ec2", config=None)  # botocore's default retries
    emulator.faults.add("ec2:DescribeKeyPairs", "RequestLimitExceeded", first=2)
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [i.call for i in emulator.faults.log] == [1, 2]
    assert emulator.calls.snapshot()["by_action"]["ec2:DescribeKeyPairs"] == 3


# --- predicates ----------------------------------------------------------------------------

def test_type_in_zone_has_no_capacity(emulator: Emulator) -> None:
    """"g6.xlarge in us-east-1a has no capacity", whether the zone is asked for by placement
    or through a subnet; other zones and other types are unaffected."""
    ec2 = client(emulator, "ec2")
    emulator.faults.add("ec2:RunInstances", "InsufficientInstanceCapacity",
                        where={"InstanceType": "g6.xlarge", "zone": "us-east-1a"})
    outcomes = {}
    for label, kwargs in [
        ("g6 1a placement", {"Placement": {"AvailabilityZone": "us-east-1a"}}),
        ("g6 1a subnet", {"SubnetId": subnet_in(ec2, "us-east-1a")}),
        ("g6 1a interface", {"NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet_in(ec2, "us-east-1a")}]}),
        ("g6 1b subnet", {"SubnetId": subnet_in(ec2, "us-east-1b")}),
        ("g5 1a subnet", {"SubnetId": subnet_in(ec2, "us-east-1a"), "InstanceType": "g5.xlarge"}),
    ]:
        try:
            placed = run_g6(ec2, emulator, **kwargs)["Instances"][0]["Placement"]["AvailabilityZone"]
            outcomes[label] = placed
        except botocore.exceptions.ClientError as exc:
            outcomes[label] = exc.response["Error"]["Code"]
    assert outcomes == {"g6 1a placement": "InsufficientInstanceCapacity",
                        "g6 1a subnet": "InsufficientInstanceCapacity",
                        "g6 1a interface": "InsufficientInstanceCapacity",
                        "g6 1b subnet": "us-east-1b", "g5 1a subnet": "us-east-1a"}
    assert len(live_instances(ec2)) == 2
    assert emulator.faults.rules[0].matched == 3  # a rule counts only the calls it selects


def test_where_takes_alternatives_globs_and_region(emulator: Emulator) -> None:
    emulator.faults.add("ec2:RunInstances", "Unsupported",
                        where={"InstanceType": ["p3.*", "g6e.xlarge"], "region": "us-east-1"})
    east = client(emulator, "ec2")
    assert error_of(lambda: run_g6(east, emulator, InstanceType="p3.2xlarge")).response["Error"]["Code"] == \
        "Unsupported"
    assert error_of(lambda: run_g6(east, emulator, InstanceType="g6e.xlarge")).response["Error"]["Code"] == \
        "Unsupported"
    run_g6(east, emulator)  # g6.xlarge
    west = client(emulator, "ec2", region="us-west-2")
    image = next(iter(emulator.dlami["us-west-2"].values()))
    west.run_instances(ImageId=image, InstanceType="p3.2xlarge", MinCount=1, MaxCount=1)
    assert len(emulator.faults.log) == 2


def test_callable_predicate(emulator: Emulator) -> None:
    def big_volume(request: Any) -> bool:
        return int(request.first("BlockDeviceMapping.1.Ebs.VolumeSize") or 0) > 500

    emulator.faults.add("ec2:RunInstances", "VcpuLimitExceeded", where=big_volume)
    ec2 = client(emulator, "ec2")

    def launch(size: int) -> Any:
        return run_g6(ec2, emulator, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": size}}])

    launch(100)
    assert error_of(lambda: launch(1000)).response["Error"]["Code"] == "VcpuLimitExceeded"
    assert emulator.faults.rules[0].as_dict()["where"] == "<predicate big_volume>"


def test_failed_call_reaches_no_later_interceptor(emulator: Emulator) -> None:
    """A failed call did nothing on AWS: the stand-in controller's hook (after the injector)
    must not see a RebootInstances that was refused."""
    seen: list[str | None] = []

    def later(environ: dict[str, Any], body: bytes, action: str | None) -> None:
        seen.append(action)

    emulator.interceptors.append(later)
    try:
        ec2 = client(emulator, "ec2")
        iid = run_g6(ec2, emulator)["Instances"][0]["InstanceId"]
        seen.clear()
        emulator.faults.add("ec2:RebootInstances", "InternalError")
        error_of(lambda: ec2.reboot_instances(InstanceIds=[iid]))
        ec2.describe_instances()
    finally:
        emulator.interceptors.remove(later)
    assert seen == ["ec2:DescribeInstances"]


def test_only_api_calls_are_faulted(emulator: Emulator) -> None:
    emulator.faults.add("*", "InternalError")
    with urllib.request.urlopen(f"{emulator.url}/_gpu_lab/calls") as answer:  # noqa: S310 - loopback
        assert answer.status == 200
    assert control(emulator, "GET")[0] == 200
    assert emulator.faults.log == []


# --- control: in-process, HTTP, CLI; reset ------------------------------------------------

def test_http_control(emulator: Emulator) -> None:
    status, added = control(emulator, "POST", payload=[
        {"action": "ec2:DescribeKeyPairs", "code": "RequestLimitExceeded", "every": 2},
        {"action": "ec2:RunInstances", "code": "InsufficientInstanceCapacity",
         "where": {"InstanceType": "g6.xlarge", "zone": "us-east-1a"}},
    ])
    assert status == 201
    keys, capacity = added["rules"]
    assert (keys["schedule"], keys["every"], capacity["status"]) == ("every", 2, None)
    assert failed_calls(emulator, 4) == [2, 4]
    ec2 = client(emulator, "ec2")
    assert error_of(lambda: run_g6(ec2, emulator, Placement={"AvailabilityZone": "us-east-1a"})).response[
        "Error"]["Code"] == "InsufficientInstanceCapacity"

    status, state = control(emulator, "GET")
    assert status == 200
    assert [(i["rule"], i["action"], i["code"], i["status"], i["call"]) for i in state["log"]] == [
        (keys["id"], "ec2:DescribeKeyPairs", "RequestLimitExceeded", 503, 2),
        (keys["id"], "ec2:DescribeKeyPairs", "RequestLimitExceeded", 503, 4),
        (capacity["id"], "ec2:RunInstances", "InsufficientInstanceCapacity", 500, 1),
    ]
    assert all(isinstance(i["time"], float) for i in state["log"])
    assert [(r["matched"], r["injected"]) for r in state["rules"]] == [(4, 2), (1, 1)]

    assert control(emulator, "DELETE", f"/{keys['id']}") == (200, {"rules": [state["rules"][0]]})
    assert control(emulator, "DELETE", f"/{keys['id']}")[0] == 404
    assert failed_calls(emulator, 2) == []
    status, before = control(emulator, "DELETE")
    assert status == 200 and len(before["log"]) == 3
    assert control(emulator, "GET") == (200, {"rules": [], "log": []})
    run_g6(ec2, emulator, Placement={"AvailabilityZone": "us-east-1a"})


@pytest.mark.parametrize(("payload", "message"), [
    ({"action": "ec2:RunInstances"}, "a rule needs a code"),
    ({"code": "InternalError", "nth": 1, "every": 2}, "give one schedule"),
    ({"code": "InternalError", "every": 0}, "every must be a whole number of at least 1"),
    ({"code": "InternalError", "status": 200}, "status must be an HTTP error status"),
    ({"code": "InternalError", "when": "always"}, "unknown rule fields: ['when']"),
    ({"code": "InternalError", "where": {"InstanceType": 3}}, "where must map request fields"),
    ({"code": "InternalError", "message": 3}, "message must be text"),
    ([{"code": "InternalError"}, {"code": ""}], "code must name an AWS error code"),
    ("InternalError", "a rule is a JSON object"),
], ids=["no code", "two schedules", "every 0", "status 200", "unknown field", "where value", "message",
        "one bad of two",
        "not an object"])
def test_http_control_refuses_bad_rules(emulator: Emulator, payload: Any, message: str) -> None:
    status, answer = control(emulator, "POST", payload=payload)
    assert status == 400
    assert message in answer["error"]
    assert emulator.faults.rules == []  # all or nothing


def test_remote_client_and_cli(emulator: Emulator) -> None:
    remote = RemoteFaults(emulator.url)
    rule = remote.add("ec2:DescribeKeyPairs", "RequestLimitExceeded", nth=1)
    assert failed_calls(emulator, 2) == [1]
    assert [(i["rule"], i["call"]) for i in remote.log] == [(rule["id"], 1)]
    assert remote.remove(rule["id"]) and not remote.remove(rule["id"])

    cli = subprocess.run(
        [sys.executable, "-m", "local_cloud.faults", "--endpoint", emulator.url, "add", "ec2:RunInstances",
         "Unsupported", "--where", "InstanceType=g6.xlarge", "--where", "zone=us-east-1e", "--first", "1"],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["where"] == {"InstanceType": ["g6.xlarge"], "zone": ["us-east-1e"]}
    ec2 = client(emulator, "ec2")
    error = error_of(lambda: run_g6(ec2, emulator, Placement={"AvailabilityZone": "us-east-1e"}))
    assert "not supported in your requested Availability Zone (us-east-1e)" in error.response["Error"]["Message"]
    run_g6(ec2, emulator, Placement={"AvailabilityZone": "us-east-1e"})  # first=1: only the first

    bad = subprocess.run([sys.executable, "-m", "local_cloud.faults", "--endpoint", emulator.url, "add", "*",
                          "InternalError", "--status", "200"], cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "status must be an HTTP error status" in bad.stderr
    remote.clear()
    assert remote.rules == [] and remote.log == []


def test_active_context_and_reset(emulator: Emulator) -> None:
    with emulator.faults.active("ec2:DescribeKeyPairs", "RequestLimitExceeded"):
        assert failed_calls(emulator, 1) == [1]
    assert failed_calls(emulator, 1) == []
    emulator.faults.add("*", "InternalError")
    emulator.reset()
    assert emulator.faults.rules == [] and emulator.faults.log == []
    assert failed_calls(emulator, 1) == []


def test_in_process_api_refuses_bad_rules() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="give one schedule"):
        faults.add("*", "InternalError", nth=1, first=1)
    with pytest.raises(ValueError, match="nth must be a whole number"):
        faults.add("*", "InternalError", nth=-1)
    assert faults.rules == []
