#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""Read-only discovery of one lab's AWS resources, in one round of parallel calls."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_info
short_description: Find everything a gpu_lab lab has in AWS, in one read-only step
version_added: 0.1.0
description:
  - Finds a lab's instance, Elastic IPs, security group and key pair by the lab's tag and
    names, and describes the wanted instance type, with the describe calls made in parallel.
  - The lab's playbooks act on what this returns, so a run on an unchanged lab makes no
    mutating call at all, and failures (credentials, unknown type) surface before anything
    is created.
  - Never changes anything.
  - With O(labs), finds many labs at once (a class); each kind of resource is asked for once
    per region for all of them (filters with many values), regions side by side, and each
    lab's findings come back under RV(labs). A lab that cannot be read gets C(failed) and
    C(msg) there; the module itself does not fail.
author: gpu_lab developers
options:
  lab:
    description:
      - The lab's name (value of the C(gpu_lab:lab) tag).
      - One of O(lab) and O(labs) is required.
    type: str
  labs:
    description:
      - Many labs at once. Each element takes O(lab) (required), O(key_name),
        O(security_group_name), O(instance_types), O(image) and C(region) (default O(region)).
      - O(volumes) and O(orphans) apply to every lab.
    type: list
    elements: dict
    version_added: 0.3.0
  key_name:
    description: Name of the lab's key pair.
    type: str
  security_group_name:
    description: Name of the lab's security group.
    type: str
  instance_types:
    description:
      - Instance types to describe (whether each exists in the region, its GPUs), that is the
        lab's candidates. One call for all of them while they all exist.
    type: list
    elements: str
    default: []
  image:
    description:
      - When the lab has no live instance, also resolve the image a new one would use, that is the
        pinned O(image.image_id); else the AMI id in the public SSM parameter
        O(image.ssm_parameter); else the newest image owned by O(image.owners) whose name
        matches O(image.name_pattern). An existing instance is never given another image, so
        a lab with an instance makes none of these calls.
    type: dict
    suboptions:
      image_id:
        description: A pinned AMI id.
        type: str
        default: ''
      ssm_parameter:
        description: The public SSM parameter holding the latest AMI id of an image line.
        type: str
        default: ''
      name_pattern:
        description: The fallback name pattern.
        type: str
        default: ''
      owners:
        description: Owners of the fallback images.
        type: list
        elements: str
        default: [amazon]
  volumes:
    description: Also describe the lab instance's EBS volumes (size, type), for the cost view.
    type: bool
    default: false
  orphans:
    description:
      - Also look for resources tagged by the collection (any lab of the region) that belong to
        no live instance of their lab - an Elastic IP, security group or key pair left behind.
    type: bool
    default: false
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Find the csdl lab
  csdl.gpu_lab.lab_info:
    region: us-east-1
    lab: csdl
    key_name: csdl-server
    security_group_name: csdl-ssh
    instance_types: [g6.xlarge, g5.xlarge]
  register: lab
"""

RETURN = r"""
labs:
  description:
    - With O(labs), each lab's findings by lab name, with the keys below (or C(failed) and C(msg)).
    - Without it, the keys below are returned at the top level.
  returned: with O(labs)
  type: dict
instance:
  description: The lab's live instance (pending, running, stopping or stopped), or an empty dict.
  returned: always
  type: dict
  sample: {id: i-0abc, state: running, type: g6.xlarge, zone: us-east-1a, public_ip: 203.0.113.5}
instance_count:
  description: How many live instances carry the lab's tag (more than 1 means a duplicate).
  returned: always
  type: int
instances:
  description: Every live instance of the lab, oldest first (same keys as O(instance)).
  returned: always
  type: list
  elements: dict
addresses:
  description: The lab's Elastic IPs (public_ip, allocation_id, association_id, instance_id).
  returned: always
  type: list
  elements: dict
security_group:
  description: The lab's security group (group_id, vpc_id, ingress rules), or an empty dict.
  returned: always
  type: dict
key_pair:
  description: The lab's key pair (name, id, fingerprint, type), or an empty dict.
  returned: always
  type: dict
instance_types:
  description: Each described instance type (name, exists, vcpus, gpus), in the order asked.
  returned: always
  type: list
  elements: dict
image:
  description:
    - With O(image) and no live instance, the image a new instance would use (image_id, name,
      creation_date, root_device_name, root_size_gib, source = pinned, ssm or name), or an
      empty dict when none was found.
  returned: always
  type: dict
volumes:
  description: The lab instance's EBS volumes (id, size_gib, type, encrypted), with O(volumes).
  returned: always
  type: list
  elements: dict
orphans:
  description: With O(orphans), what no live lab uses (kind, id, lab, detail, summary).
  returned: always
  type: list
  elements: dict
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.csdl.gpu_lab.plugins.module_utils.labs import check_labs

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
MAX_FILTER_VALUES = 200  # EC2's limit per filter
CREDENTIAL_ERRORS = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "ExpiredTokenException",
}


def _chunks(values: list[str], size: int = MAX_FILTER_VALUES) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)] or [[]]


def _instances(ec2: Any, labs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The live instances of each lab, oldest first: one paged call per 200 labs."""
    found: list[dict[str, Any]] = []
    for chunk in _chunks(labs):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:gpu_lab:lab", "Values": chunk},
                {"Name": "instance-state-name", "Values": LIVE_STATES},
            ]
        )
        found += [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    found.sort(key=lambda i: i["LaunchTime"])
    by_lab: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labs}
    for i in found:
        tags = boto3_tag_list_to_ansible_dict(i.get("Tags", []))
        if tags.get("gpu_lab:lab") in by_lab:
            by_lab[tags["gpu_lab:lab"]].append(_instance_summary(i, tags))
    return by_lab


def _instance_summary(i: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": i["InstanceId"],
        "state": i["State"]["Name"],
        "type": i["InstanceType"],
        "zone": i["Placement"]["AvailabilityZone"],
        "image": i.get("ImageId", ""),
        "launch_time": i["LaunchTime"].isoformat(),
        "public_ip": i.get("PublicIpAddress", ""),
        "key_name": i.get("KeyName", ""),
        "subnet_id": i.get("SubnetId", ""),
        # moto leaves SecurityGroups empty for an instance launched with a network
        # interface spec (AWS fills it): the primary interface's groups are the same.
        "security_groups": [g["GroupId"] for g in i.get("SecurityGroups") or
                            [g for n in i.get("NetworkInterfaces", [])[:1] for g in n.get("Groups", [])]],
        "root_volume_ids": [m["Ebs"]["VolumeId"] for m in i.get("BlockDeviceMappings", []) if "Ebs" in m],
        # "User initiated (2026-11-26 10:00:00 GMT)": when a stopped instance stopped.
        "state_reason": i.get("StateTransitionReason", ""),
        "tags": tags,
    }


def _addresses(ec2: Any, labs: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_lab: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labs}
    for chunk in _chunks(labs):
        for a in ec2.describe_addresses(Filters=[{"Name": "tag:gpu_lab:lab", "Values": chunk}])["Addresses"]:
            lab = boto3_tag_list_to_ansible_dict(a.get("Tags", [])).get("gpu_lab:lab")
            if lab in by_lab:
                by_lab[lab].append({
                    "public_ip": a["PublicIp"],
                    "allocation_id": a.get("AllocationId", ""),
                    "association_id": a.get("AssociationId", ""),
                    "instance_id": a.get("InstanceId", ""),
                })
    return by_lab


def _security_groups(ec2: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each named group, or {} when there is none: one call per 200 names."""
    found: dict[str, dict[str, Any]] = {name: {} for name in names}
    for chunk in _chunks([n for n in names if n]):
        if not chunk:
            continue
        for g in ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": chunk}])["SecurityGroups"]:
            if found.get(g["GroupName"]) == {}:
                found[g["GroupName"]] = _group_summary(g)
    return found


def _group_summary(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "group_id": g["GroupId"],
        "vpc_id": g.get("VpcId", ""),
        "ingress": [
            {
                "protocol": p.get("IpProtocol"),
                "from_port": p.get("FromPort"),
                "to_port": p.get("ToPort"),
                "cidrs": sorted(r["CidrIp"] for r in p.get("IpRanges", [])),
                "ipv6_cidrs": sorted(r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])),
                "groups": len(p.get("UserIdGroupPairs", [])),
            }
            for p in g.get("IpPermissions", [])
        ],
        "tags": boto3_tag_list_to_ansible_dict(g.get("Tags", [])),
    }


def _key_pairs(ec2: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each named key pair, or {} when there is none: one call per 200 names."""
    found: dict[str, dict[str, Any]] = {name: {} for name in names}
    for chunk in _chunks([n for n in names if n]):
        if not chunk:
            continue
        for k in ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": chunk}])["KeyPairs"]:
            found[k["KeyName"]] = {
                "name": k["KeyName"],
                "id": k.get("KeyPairId", ""),
                "fingerprint": k.get("KeyFingerprint", ""),
                "type": k.get("KeyType", ""),
            }
    return found


def _instance_types(ec2: Any, names: list[str]) -> list[dict[str, Any]]:
    if not names:
        return []
    try:
        described = {t["InstanceType"]: t for t in ec2.describe_instance_types(InstanceTypes=names)["InstanceTypes"]}
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("InvalidInstanceType", "InvalidParameterValue"):
            raise
        if len(names) == 1:
            return [_type_summary(names[0], None)]
        # One unknown type fails the whole call: ask for each, to say which.
        return [t for name in names for t in _instance_types(ec2, [name])]
    return [_type_summary(name, described.get(name)) for name in names]


def _type_summary(name: str, described: dict[str, Any] | None) -> dict[str, Any]:
    if not described:
        return {"name": name, "exists": False, "vcpus": 0, "gpus": ""}
    gpus = described.get("GpuInfo", {}).get("Gpus", [])
    return {
        "name": name,
        "exists": True,
        "vcpus": described.get("VCpuInfo", {}).get("DefaultVCpus", 0),
        "gpus": ", ".join(
            f"{g.get('Count', 1)} x {g.get('Manufacturer', '')} {g.get('Name', '')} "
            f"({g.get('MemoryInfo', {}).get('SizeInMiB', 0) // 1024} GiB)"
            for g in gpus
        ),
    }


def _image(ec2: Any, ssm: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The image a new instance would use (the DLAMI resolution order), or {}."""
    image_id, source = wanted.get("image_id") or "", "pinned"
    if not image_id and wanted.get("ssm_parameter"):
        try:
            image_id = ssm.get_parameter(Name=wanted["ssm_parameter"])["Parameter"]["Value"]
            source = "ssm"
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] not in ("ParameterNotFound", "AccessDeniedException"):
                raise
    if image_id:
        try:
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        except botocore.exceptions.ClientError as e:
            if not e.response["Error"]["Code"].startswith("InvalidAMIID"):
                raise
            images = []
        if images or source == "pinned":
            return _image_summary(images[0], source) if images else {}
    if not wanted.get("name_pattern"):
        return {}
    images = ec2.describe_images(Owners=wanted.get("owners") or ["amazon"], Filters=[
        {"Name": "name", "Values": [wanted["name_pattern"]]}, {"Name": "state", "Values": ["available"]}])["Images"]
    return _image_summary(max(images, key=lambda i: i.get("CreationDate", "")), "name") if images else {}


def _image_summary(image: dict[str, Any], source: str) -> dict[str, Any]:
    root = image.get("RootDeviceName", "/dev/sda1")
    sizes = [m["Ebs"].get("VolumeSize", 8) for m in image.get("BlockDeviceMappings", [])
             if m.get("DeviceName") == root and "Ebs" in m]
    return {"image_id": image["ImageId"], "name": image.get("Name", ""), "creation_date": image.get("CreationDate", ""),
            "root_device_name": root, "root_size_gib": sizes[0] if sizes else 8, "source": source}


def _volumes(ec2: Any, volume_ids: list[str]) -> list[dict[str, Any]]:
    if not volume_ids:
        return []
    found = ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"]
    return [{"id": v["VolumeId"], "size_gib": v["Size"], "type": v.get("VolumeType", ""),
             "encrypted": v.get("Encrypted", False)} for v in found]


def _orphans(ec2: Any) -> list[dict[str, Any]]:
    """Collection-tagged resources of the region that no live instance of their lab uses."""
    managed = [{"Name": "tag-key", "Values": ["gpu_lab:lab"]}]
    with ThreadPoolExecutor(max_workers=4) as pool:
        live = pool.submit(lambda: [
            i for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[*managed, {"Name": "instance-state-name", "Values": LIVE_STATES}])
            for r in page["Reservations"] for i in r["Instances"]])
        addresses = pool.submit(lambda: ec2.describe_addresses(Filters=managed)["Addresses"])
        groups = pool.submit(lambda: ec2.describe_security_groups(Filters=managed)["SecurityGroups"])
        keys = pool.submit(lambda: ec2.describe_key_pairs(Filters=managed)["KeyPairs"])
    live_ids = {i["InstanceId"] for i in live.result()}
    live_labs = {boto3_tag_list_to_ansible_dict(i.get("Tags", [])).get("gpu_lab:lab") for i in live.result()}

    def lab_of(resource: dict[str, Any]) -> str:
        return boto3_tag_list_to_ansible_dict(resource.get("Tags", [])).get("gpu_lab:lab", "")

    found = [{"kind": "elastic_ip", "id": a.get("AllocationId", a["PublicIp"]), "lab": lab_of(a),
              "detail": a["PublicIp"]}
             for a in addresses.result() if a.get("InstanceId") not in live_ids]
    found += [{"kind": "security_group", "id": g["GroupId"], "lab": lab_of(g), "detail": g["GroupName"]}
              for g in groups.result() if lab_of(g) not in live_labs]
    found += [{"kind": "key_pair", "id": k.get("KeyPairId", k["KeyName"]), "lab": lab_of(k),
               "detail": k["KeyName"]}
              for k in keys.result() if lab_of(k) not in live_labs]
    for orphan in found:
        orphan["summary"] = f"{orphan['kind'].replace('_', ' ')} {orphan['detail']} of lab {orphan['lab']}"
    return found


LAB_OPTIONS: dict[str, Any] = {
    "lab": {"type": "str", "required": True},
    "region": {"type": "str"},
    "key_name": {"type": "str", "no_log": False},
    "security_group_name": {"type": "str"},
    "instance_types": {"type": "list", "elements": "str", "default": []},
    "image": {"type": "dict", "options": {
        "image_id": {"type": "str", "default": ""},
        "ssm_parameter": {"type": "str", "default": ""},
        "name_pattern": {"type": "str", "default": ""},
        "owners": {"type": "list", "elements": "str", "default": ["amazon"]},
    }},
}


def discover(module: AnsibleAWSModule, region: str | None, labs: list[dict[str, Any]],
             volumes: bool, orphans: bool) -> dict[str, dict[str, Any]]:
    """What each lab of one region has: every kind of resource asked for once, for all the
    labs together (filters with many values), the kinds side by side."""
    ec2 = module.client("ec2", region=region) if region else module.client("ec2")
    names = [lab["lab"] for lab in labs]
    types = list(dict.fromkeys(t for lab in labs for t in lab["instance_types"]))
    with ThreadPoolExecutor(max_workers=6) as pool:
        jobs = {
            "instances": pool.submit(_instances, ec2, names),
            "addresses": pool.submit(_addresses, ec2, names),
            "security_group": pool.submit(_security_groups, ec2, [lab["security_group_name"] or "" for lab in labs]),
            "key_pair": pool.submit(_key_pairs, ec2, [lab["key_name"] or "" for lab in labs]),
            "instance_types": pool.submit(_instance_types, ec2, types),
            "orphans": pool.submit(_orphans, ec2) if orphans else None,
        }
        found = {kind: job.result() if job else [] for kind, job in jobs.items()}
    described = {t["name"]: t for t in found["instance_types"]}
    # A new instance's image, resolved once per distinct request (a class asks one).
    wanted_images = {repr(lab["image"]): lab["image"] for lab in labs
                     if lab["image"] and not found["instances"][lab["lab"]]}
    images: dict[str, dict[str, Any]] = {}
    if wanted_images:
        ssm = module.client("ssm", region=region) if region else module.client("ssm")
        images = {key: _image(ec2, ssm, wanted) for key, wanted in wanted_images.items()}
    volume_ids = [v for lab in labs for i in found["instances"][lab["lab"]][:1] for v in i["root_volume_ids"]]
    all_volumes = {v["id"]: v for v in _volumes(ec2, volume_ids)} if volumes else {}
    result = {}
    for lab in labs:
        instances = found["instances"][lab["lab"]]
        result[lab["lab"]] = {
            "instance": instances[0] if instances else {},
            "instance_count": len(instances),
            "instances": instances,
            "addresses": found["addresses"][lab["lab"]],
            "security_group": found["security_group"].get(lab["security_group_name"] or "", {}),
            "key_pair": found["key_pair"].get(lab["key_name"] or "", {}),
            "instance_types": [described[t] for t in lab["instance_types"]],
            "image": images.get(repr(lab["image"]), {}) if lab["image"] and not instances else {},
            "volumes": [all_volumes[v] for i in instances[:1] for v in i["root_volume_ids"] if v in all_volumes],
            "orphans": found["orphans"],
        }
    return result


def _failure(e: Exception, region: str) -> str:
    """One sentence for what stopped the discovery of a region."""
    if isinstance(e, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return _no_credentials(str(e))
    if isinstance(e, botocore.exceptions.ClientError):
        code = e.response["Error"]["Code"]
        if code in CREDENTIAL_ERRORS:
            return _no_credentials(code)
        return f"Could not read the lab's resources in {region}: {e}"
    if isinstance(e, botocore.exceptions.EndpointConnectionError):
        return f"Could not reach the EC2 API of {region} ({e}): check the region and your network."
    return f"Could not read the lab's resources in {region}: {e}"


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            **{k: v for k, v in LAB_OPTIONS.items() if k not in ("lab", "region")},
            "lab": {"type": "str"},
            "labs": {"type": "list", "elements": "dict"},
            "volumes": {"type": "bool", "default": False},
            "orphans": {"type": "bool", "default": False},
        },
        required_one_of=[["lab", "labs"]],
        mutually_exclusive=[["lab", "labs"]],
        supports_check_mode=True,
    )
    p = module.params
    if p["lab"]:
        region = p.get("region") or "the configured region"
        lab = {k: p[k] for k in LAB_OPTIONS if k != "region"}
        try:
            found = discover(module, None, [lab], p["volumes"], p["orphans"])[p["lab"]]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            module.fail_json(msg=_failure(e, region))
        module.exit_json(changed=False, **found)
    module.exit_json(changed=False, labs=discover_labs(module, p["labs"], p["volumes"], p["orphans"]))


def discover_labs(module: AnsibleAWSModule, given: list[dict[str, Any]], volumes: bool,
                  orphans: bool) -> dict[str, dict[str, Any]]:
    """Every lab of O(labs), the regions side by side. A lab whose entry is invalid, whose
    name another entry also has, or whose region could not be read gets failed and msg."""
    valid, invalid = check_labs(given, LAB_OPTIONS)
    result: dict[str, dict[str, Any]] = {name: {"failed": True, "msg": msg} for name, msg in invalid.items()}
    by_region: dict[str, list[dict[str, Any]]] = {}
    for lab in valid:
        by_region.setdefault(lab["region"] or module.region or "", []).append(lab)

    def one_region(region: str, labs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            return discover(module, region or None, labs, volumes, orphans)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            msg = _failure(e, region or "the configured region")
            return {lab["lab"]: {"failed": True, "msg": msg} for lab in labs}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_region)))) as pool:
        for found in pool.map(lambda item: one_region(*item), by_region.items()):
            result.update(found)
    return result


def _no_credentials(reason: str) -> str:
    if reason in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
        return (
            f"Your AWS session has expired ({reason}): log in again (`aws sso login --profile NAME`, or new "
            "temporary keys in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN), then re-run."
        )
    return (
        f"No working AWS credentials ({reason}): run `aws configure`, or `aws sso login --profile NAME` "
        "and export AWS_PROFILE=NAME, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )


if __name__ == "__main__":
    main()
