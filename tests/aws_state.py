"""What a lab has in the emulated account, for tests that check nothing is missing or left."""

from __future__ import annotations

from typing import Any


def lab_state(ec2: Any, lab: str) -> dict[str, Any]:
    """The lab's live instances, addresses, security group and key pair (by its tag and
    names), and every address and non-default group of the account (an untagged left-over
    would escape the lab's tag)."""
    tag = [{"Name": "tag:gpu_lab:lab", "Values": [lab]}]
    instances = [i for r in ec2.describe_instances(Filters=tag)["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] != "terminated"]
    return {
        "instances": instances,
        "addresses": ec2.describe_addresses(Filters=tag)["Addresses"],
        "groups": ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{lab}-ssh"]}])[
            "SecurityGroups"],
        "key_pairs": ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [f"{lab}-server"]}])["KeyPairs"],
        "all_addresses": ec2.describe_addresses()["Addresses"],
        "all_groups": [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"],
    }
