"""The emulator's Spot Instances (local_cloud/spot.py), held to what AWS documents for a persistent
request with interruption behaviour stop: what moto lacks (the request, the owner's stop and
start, the interruption, EC2's own restart, the notice, the replacement after a terminate, the
spot quota, the price history) answers over real HTTP through boto3."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from local_cloud.cloud import Cloud

SPOT = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}}


def run(ec2: Any, market: dict[str, Any] | None = SPOT, instance_type: str = "g6.xlarge") -> dict[str, Any]:
    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}])
    extra = {"InstanceMarketOptions": market} if market else {}
    return ec2.run_instances(ImageId=image["Images"][0]["ImageId"], InstanceType=instance_type,
                             MinCount=1, MaxCount=1, **extra)["Instances"][0]


def request_of(ec2: Any, instance: dict[str, Any]) -> dict[str, Any]:
    return ec2.describe_spot_instance_requests(
        SpotInstanceRequestIds=[instance["SpotInstanceRequestId"]])["SpotInstanceRequests"][0]


def described(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def control(cloud: Cloud, spec: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{cloud.emulator.url}/_gpu_lab/spot", data=json.dumps(spec).encode(),  # noqa: S310
                                 method="POST")
    with urllib.request.urlopen(req) as answer:  # noqa: S310 - the emulator on loopback
        return json.loads(answer.read())


def test_a_spot_launch_is_a_persistent_request_with_stop(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    instance = run(ec2)
    assert instance["InstanceLifecycle"] == "spot"
    request = request_of(ec2, instance)
    assert (request["State"], request["Status"]["Code"]) == ("active", "fulfilled")
    assert (request["Type"], request["InstanceInterruptionBehavior"]) == ("persistent", "stop")
    assert request["InstanceId"] == instance["InstanceId"]
    on_demand = run(ec2, market=None)
    assert "SpotInstanceRequestId" not in on_demand and "InstanceLifecycle" not in on_demand


@pytest.mark.parametrize("options", [
    {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "terminate"},
    {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "stop"},
])
def test_ec2s_option_rules_refuse_and_create_nothing(cloud: Cloud, aws: Callable[..., Any],
                                                     options: dict[str, str]) -> None:
    ec2 = aws("ec2")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        run(ec2, {"MarketType": "spot", "SpotOptions": options})
    assert refused.value.response["Error"]["Code"] == "InvalidParameterCombination"
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_spot_instance_requests()["SpotInstanceRequests"] == []


def test_the_owners_stop_disables_the_request_and_start_activates_it(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    instance = run(ec2)
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    request = request_of(ec2, instance)
    assert (request["State"], request["Status"]["Code"]) == ("disabled", "instance-stopped-by-user")
    ec2.start_instances(InstanceIds=[instance["InstanceId"]])
    request = request_of(ec2, instance)
    assert (request["State"], request["Status"]["Code"]) == ("active", "fulfilled")


def test_a_one_time_requests_instance_cannot_be_stopped(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    instance = run(ec2, {"MarketType": "spot"})
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    assert refused.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert described(ec2, instance["InstanceId"])["State"]["Name"] == "running"


def test_an_interruption_stops_and_only_ec2_starts_it_again(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    instance = run(ec2)
    iid = instance["InstanceId"]
    notice = control(cloud, {"notice": iid, "seconds": 120})
    assert notice["action"] == "stop"
    when = dt.datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert 100 <= (when - dt.datetime.now(dt.UTC)).total_seconds() <= 125
    assert cloud.emulator.spot.instance_action(iid) == notice
    assert request_of(ec2, instance)["Status"]["Code"] == "marked-for-stop"
    first_launch = described(ec2, iid)["LaunchTime"]

    control(cloud, {"interrupt": iid})
    stopped = described(ec2, iid)
    assert stopped["State"]["Name"] == "stopped"
    assert stopped["StateReason"]["Code"] == "Server.SpotInstanceShutdown"
    assert stopped["StateTransitionReason"].startswith("Service initiated (")
    request = request_of(ec2, instance)
    assert (request["State"], request["Status"]["Code"]) == ("open", "instance-stopped-no-capacity")
    assert cloud.emulator.spot.instance_action(iid) is None
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.start_instances(InstanceIds=[iid])
    assert refused.value.response["Error"]["Code"] == "IncorrectSpotRequestState"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "g5.xlarge"})
    assert refused.value.response["Error"]["Code"] == "UnsupportedOperation"

    time.sleep(1.1)  # LaunchTime has seconds
    control(cloud, {"capacity_back": iid})
    back = described(ec2, iid)
    assert back["State"]["Name"] == "running" and back["LaunchTime"] > first_launch
    assert request_of(ec2, instance)["State"] == "active"


def test_terminate_without_cancel_launches_a_replacement(cloud: Cloud, aws: Callable[..., Any]) -> None:
    """AWS: a persistent request opens again when its instance is terminated: cancel it first."""
    ec2 = aws("ec2")
    instance = run(ec2)
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    request = request_of(ec2, instance)
    assert request["InstanceId"] != instance["InstanceId"]
    assert described(ec2, request["InstanceId"])["State"]["Name"] == "running"


def test_cancel_keeps_the_request_and_terminates_a_stopped_instance(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    running, stopped = run(ec2), run(ec2)
    ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])
    ec2.cancel_spot_instance_requests(
        SpotInstanceRequestIds=[running["SpotInstanceRequestId"], stopped["SpotInstanceRequestId"]])
    assert request_of(ec2, running)["State"] == request_of(ec2, stopped)["State"] == "cancelled"
    assert request_of(ec2, running)["Status"]["Code"] == "request-canceled-and-instance-running"
    assert described(ec2, running["InstanceId"])["State"]["Name"] == "running"
    assert described(ec2, stopped["InstanceId"])["State"]["Name"] == "terminated"
    ec2.terminate_instances(InstanceIds=[running["InstanceId"]])
    assert len(ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
               ["Reservations"]) == 0


def test_spot_launches_count_against_the_spot_quota(cloud: Cloud, aws: Callable[..., Any]) -> None:
    ec2 = aws("ec2")
    cloud.emulator.quotas.set("us-east-1", "L-3819A6DF", 4)  # g6.xlarge: 4 vCPUs
    run(ec2)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        run(ec2)
    assert refused.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    run(ec2, market=None)  # the on-demand quota is another one


def test_spot_prices_are_a_share_of_on_demand_and_current(cloud: Cloud, aws: Callable[..., Any]) -> None:
    from local_cloud.pricing import HOURLY_USD

    ec2 = aws("ec2")
    history = ec2.describe_spot_price_history(InstanceTypes=["g6.xlarge"], ProductDescriptions=["Linux/UNIX"],
                                              Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}],
                                              MaxResults=5)["SpotPriceHistory"]
    assert [h["AvailabilityZone"] for h in history] == ["us-east-1b"]
    price = float(history[0]["SpotPrice"])
    assert 0.2 * HOURLY_USD["us-east-1"]["g6.xlarge"] < price < 0.6 * HOURLY_USD["us-east-1"]["g6.xlarge"]
    assert dt.datetime.now(dt.UTC) - history[0]["Timestamp"] < dt.timedelta(minutes=5)
    control(cloud, {"price": {"region": "us-east-1", "type": "g6.xlarge", "value": 0.5}})
    again = ec2.describe_spot_price_history(InstanceTypes=["g6.xlarge"], MaxResults=5)["SpotPriceHistory"]
    assert {h["SpotPrice"] for h in again} == {"0.500000"}
