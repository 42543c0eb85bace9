#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""The lab's instance, running at its Elastic IP: launch with capacity failover, or start."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_host
short_description: Run the lab's one GPU instance at the lab's Elastic IP, failing over on capacity; or remove the lab
version_added: 0.2.0
description:
  - Brings a lab's instance to C(running) and associates the lab's Elastic IP with it. Acts on
    what M(csdl.gpu_lab.lab_info) found, so it never looks the lab up again.
  - With no instance, launches one, trying the candidate instance types in order and, for each,
    the zones that offer it (M(amazon.aws.ec2_instance) retries a capacity error for minutes
    and cannot fail over). A capacity error (C(InsufficientInstanceCapacity), C(Unsupported))
    moves on to the next zone at once; a quota error (C(VcpuLimitExceeded)) to the next type.
    When every candidate fails, says what was tried and which quota to raise, and nothing is
    left allocated.
  - Each launch attempt carries an idempotency token made from the lab, its security group,
    the type and the zone, so two launches of one lab at the same time get one instance.
  - Creates the lab's security group when there is none (one rule, SSH from one CIDR), tagged
    in the same call, without M(amazon.aws.ec2_security_group)'s fixed wait after a create.
  - Every resource is tagged in the call that creates it (C(TagSpecifications)), so an
    interrupted launch leaves nothing untagged, and the next run finds and reuses it.
  - With a stopped instance, starts it; a capacity error then says what to do and changes
    nothing.
  - With O(labs), brings many labs up at once (a class), side by side, sharing one set of
    clients per region and one look at the zones offering the candidate types. Each lab fails
    over on its own; a lab that cannot be brought up gets C(failed) and C(msg) under RV(labs),
    and the others go on (the module itself does not fail).
  - With O(state=absent), removes what M(csdl.gpu_lab.lab_info) found of each lab, in the order
    that leaves nothing billable behind - the Elastic IPs (disassociated, then released), then
    the instances (terminated, waited for), then the security group (retried while AWS still
    counts the terminated instance's network interface), then the key pair; then the
    O(orphans). A class is one call (the labs side by side, one set of clients per region).
author: gpu_lab developers
options:
  state:
    description:
      - C(present) runs each lab's instance at its address; C(absent) removes each lab's
        resources (O(addresses), O(instances), O(security_group_id), O(key_name), O(orphans)).
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.3.0
  lab:
    description:
      - The lab's name.
      - One of O(lab) and O(labs) is required.
    type: str
  labs:
    description:
      - Many labs at once. Each element takes the options of one lab (O(lab), required, and
        O(instance), O(addresses), O(instance_types), O(zones), O(image_id),
        O(root_device_name), O(volume_size), O(key_name), O(key_pair), O(user_data),
        O(security_group_id), O(security_group), O(tags), O(instance_tags), O(wait_timeout),
        O(instances), O(orphans)), and C(region) (default O(region)).
    type: list
    elements: dict
    version_added: 0.3.0
  instance:
    description: The lab's live instance as M(csdl.gpu_lab.lab_info) returned it (C({}) when none).
    type: dict
    default: {}
  addresses:
    description: The lab's Elastic IPs as M(csdl.gpu_lab.lab_info) returned them.
    type: list
    elements: dict
    default: []
  instances:
    description:
      - With O(state=absent), the instances to terminate, as M(csdl.gpu_lab.lab_info) returned
        them (its RV(csdl.gpu_lab.lab_info#module:instances), every live instance of the lab).
    type: list
    elements: dict
    default: []
    version_added: 0.3.0
  orphans:
    description:
      - With O(state=absent), resources other labs left behind in the lab's region, as
        M(csdl.gpu_lab.lab_info) returned them with its O(csdl.gpu_lab.lab_info#module:orphans)
        (kind, id, lab, detail). Each is removed once, however many labs of the call name it;
        one of a lab of the call is that lab's own.
    type: list
    elements: dict
    default: []
    version_added: 0.3.0
  instance_types:
    description: Candidate instance types, most wanted first (used only to launch).
    type: list
    elements: str
    default: []
  zones:
    description: Zones to try, in order; empty means every zone of the region offering the type.
    type: list
    elements: str
    default: []
  image_id:
    description: AMI of a new instance.
    type: str
  root_device_name:
    description: The AMI's root device.
    type: str
    default: /dev/sda1
  volume_size:
    description: Root volume size in GiB (encrypted gp3).
    type: int
    default: 100
  key_name:
    description: Key pair of a new instance; with O(state=absent), the key pair to delete.
    type: str
  key_pair:
    description:
      - Import this public key as the key pair O(key_pair.name) before launching (tagged with
        O(tags)); a key pair of that name made meanwhile is kept. Only used to launch.
    type: dict
    version_added: 0.3.0
    suboptions:
      name:
        description: The key pair's name (normally O(key_name)).
        type: str
        required: true
      public_key:
        description: The OpenSSH public key line.
        type: str
        required: true
  user_data:
    description:
      - User data of a new instance (plain text; encoded on the way). gpu_lab gives a class lab
        a cloud-config document whose C(ssh_authorized_keys) authorizes the staff's class key
        beside the student's key pair.
    type: str
    default: ''
    version_added: 0.3.0
  security_group_id:
    description:
      - Security group of a new instance; without it, the group O(security_group) is created.
      - With O(state=absent), the group to delete.
    type: str
  security_group:
    description:
      - The group to create when O(security_group_id) is not given, tagged at creation, with one
        ingress rule (SSH from O(security_group.ssh_cidr)) and nothing else. Changes to an
        existing group are M(amazon.aws.ec2_security_group)'s job.
    type: dict
    suboptions:
      name:
        description: Group name.
        type: str
        required: true
      description:
        description: Group description.
        type: str
        required: true
      ssh_cidrs:
        description: The only sources allowed in, on port 22 (IPv4 CIDRs).
        type: list
        elements: str
        required: true
        aliases: [ssh_cidr]
      rule_description:
        description: The rule's description.
        type: str
        default: SSH from the lab's workstation
  tags:
    description: Tags of everything it creates (plus a C(Name) for the instance, volume and address).
    type: dict
    default: {}
  instance_tags:
    description: Further tags of a new instance and its volume (settings the lab records there).
    type: dict
    default: {}
  wait_timeout:
    description:
      - Seconds to wait for the instance to run.
      - With O(state=absent), for the instances to be gone, and again for AWS to let go of the
        security group.
    type: int
    default: 600
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Run the lab's instance at its address
  csdl.gpu_lab.lab_host:
    region: us-east-1
    lab: csdl
    instance: "{{ found.instance }}"
    addresses: "{{ found.addresses }}"
    instance_types: [g6.xlarge, g5.xlarge, g4dn.xlarge]
    image_id: ami-0123456789abcdef0
    key_name: csdl-server
    security_group:
      name: csdl-ssh
      description: SSH to the csdl GPU lab host
      ssh_cidrs: [203.0.113.7/32]
    tags: {gpu_lab:lab: csdl}

- name: Remove every lab of a class (what lab_info found of each)
  csdl.gpu_lab.lab_host:
    state: absent
    labs:
      - lab: bio101-s01
        instances: "{{ found.labs['bio101-s01'].instances }}"
        addresses: "{{ found.labs['bio101-s01'].addresses }}"
        security_group_id: "{{ found.labs['bio101-s01'].security_group.group_id }}"
        key_name: bio101-s01-server
"""

RETURN = r"""
labs:
  description:
    - With O(labs), each lab's result by lab name, with the keys below and C(changed) (or
      C(failed), C(msg) and C(attempts)).
    - Without it, the keys below are returned at the top level.
  returned: with O(labs)
  type: dict
instance:
  description: The running instance (id, state, type, zone, image, launch_time).
  returned: success
  type: dict
security_group_id:
  description: The security group of a launched instance (created or given).
  returned: when launched
  type: str
address:
  description: The lab's Elastic IP (public_ip, allocation_id).
  returned: success
  type: dict
attempts:
  description: Each launch or start attempt (type, zone, outcome, code, message), in order.
  returned: always
  type: list
  elements: dict
removed:
  description:
    - With O(state=absent), what was removed - C(addresses) (public IPs), C(instances) (ids),
      C(security_group) (id, or empty), C(key_pair) (name, or empty), C(orphans) (each orphan's
      C(summary) or kind and detail) - so far, also when the lab failed.
  returned: with O(state=absent)
  type: dict
  version_added: 0.3.0
launched:
  description: Whether a new instance was launched.
  returned: success
  type: bool
started:
  description: Whether a stopped instance was started.
  returned: success
  type: bool
"""

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import botocore.config
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.csdl.gpu_lab.plugins.module_utils.labs import check_labs

# No capacity for this type in this zone: try the next zone.
CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported",
                  "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity"}
# The account may not run more of this family in the region: try the next type.
QUOTA_CODES = {"VcpuLimitExceeded", "InstanceLimitExceeded"}
# Worth another try of the same call.
TRANSIENT_CODES = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
                   "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout"}
# Labs brought up at the same time by one call (each mostly waits on EC2).
MAX_PARALLEL = 32
QUOTAS = {
    "g": "Running On-Demand G and VT instances (L-DB2E81BA)",
    "p": "Running On-Demand P instances (L-417A185B)",
}


def _quota_of(instance_type: str) -> str:
    return QUOTAS.get(instance_type[:1], "Running On-Demand Standard instances (L-1216C47A)")


def _code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


class LabFailure(Exception):
    """This lab cannot be brought up; the message says why and what to do."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class Region:
    """The clients of one region, shared by every lab launched there (boto3 clients are
    thread-safe), and what the region offers, asked once for all of them."""

    def __init__(self, module: AnsibleAWSModule, region: str | None) -> None:
        where = {"region": region} if region else {}
        self.name = region or module.region or "the configured region"
        # Capacity errors come back as HTTP 500, which botocore would retry with backoff: the
        # launch calls go through a client that never retries, and `_call` retries only what
        # is transient (throttling, internal errors), so a capacity error moves on at once.
        self.ec2 = module.client("ec2", config=botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=50), **where)
        self.launcher = module.client("ec2", config=botocore.config.Config(
            retries={"total_max_attempts": 1}, max_pool_connections=50), **where)
        self._offers: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def where(self, types: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        """Zones offering each candidate type, and the default subnet of each zone: asked once
        per set of candidate types (a class launching 30 labs asks once)."""
        with self._lock:
            key = tuple(types)
            if key not in self._offers:
                self._offers[key] = self._ask(types)
            return self._offers[key]

    def _ask(self, types: list[str]) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            offers = pool.submit(self.ec2.describe_instance_type_offerings, LocationType="availability-zone",
                                 Filters=[{"Name": "instance-type", "Values": types}])
            subnets = pool.submit(self.ec2.describe_subnets,
                                  Filters=[{"Name": "default-for-az", "Values": ["true"]}])
        offered: dict[str, list[str]] = {t: [] for t in types}
        for o in offers.result()["InstanceTypeOfferings"]:
            offered[o["InstanceType"]].append(o["Location"])
        return offered, {s["AvailabilityZone"]: (s["SubnetId"], s["VpcId"]) for s in subnets.result()["Subnets"]}


class LabHost:
    def __init__(self, params: dict[str, Any], region: Region) -> None:
        self.p = params
        self.region = region
        self.ec2 = region.ec2
        self.launcher = region.launcher
        self.attempts: list[dict[str, Any]] = []
        self.tags = dict(self.p["tags"])
        self.created_group = ""

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        delay = 0.5
        for attempt in range(8):
            try:
                return getattr(self.launcher, method)(**kwargs)
            except botocore.exceptions.ClientError as e:
                if _code(e) not in TRANSIENT_CODES or attempt == 7:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 8)
        raise AssertionError("unreachable")

    # --- launch
    def _token(self, instance_type: str, zone: str, salt: str = "") -> str:
        seed = f"gpu_lab:{self.p['lab']}:{self.p['security_group_id']}:{instance_type}:{zone}:{salt}"
        return hashlib.sha256(seed.encode()).hexdigest()[:64]

    def _run(self, instance_type: str, zone: str, subnet_id: str) -> dict[str, Any]:
        spec = {
            "ImageId": self.p["image_id"],
            "InstanceType": instance_type,
            "KeyName": self.p["key_name"],
            "MinCount": 1,
            "MaxCount": 1,
            # The Elastic IP is the address: no auto-assigned public IPv4 (billed, and it changes).
            "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet_id, "AssociatePublicIpAddress": False,
                                   "Groups": [self.p["security_group_id"]], "DeleteOnTermination": True}],
            "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required"},
            "InstanceInitiatedShutdownBehavior": "stop",
            **({"UserData": self.p["user_data"]} if self.p["user_data"] else {}),
            "BlockDeviceMappings": [{"DeviceName": self.p["root_device_name"],
                                     "Ebs": {"VolumeSize": self.p["volume_size"], "VolumeType": "gp3",
                                             "Encrypted": True, "DeleteOnTermination": True}}],
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": [{"Key": k, "Value": str(v)} for k, v in
                                                {**self.tags, **self.p["instance_tags"],
                                                 "Name": f"{self.p['lab']}-server"}.items()]}
                for kind in ("instance", "volume")
            ],
        }
        salt = ""
        for _ in range(3):
            instance = self._call("run_instances", ClientToken=self._token(instance_type, zone, salt),
                                  **spec)["Instances"][0]
            # A token reused after its instance was terminated answers with that instance.
            if instance["State"]["Name"] not in ("shutting-down", "terminated"):
                return instance
            salt = instance["InstanceId"]
        raise LabFailure("RunInstances kept answering with a terminated instance.")

    def security_group(self, vpc_id: str) -> str:
        """Creates the lab's group (one SSH rule); a group of that name made meanwhile is used."""
        spec = self.p["security_group"]
        tags = [{"Key": k, "Value": str(v)} for k, v in self.tags.items()]
        try:
            group_id = self._call("create_security_group", GroupName=spec["name"], Description=spec["description"],
                                  VpcId=vpc_id, TagSpecifications=[{"ResourceType": "security-group",
                                                                    "Tags": tags}])["GroupId"]
            self.created_group = group_id
        except botocore.exceptions.ClientError as e:
            if _code(e) != "InvalidGroup.Duplicate":  # another launch of this lab got there first
                raise
            group_id = self.ec2.describe_security_groups(Filters=[
                {"Name": "group-name", "Values": [spec["name"]]}, {"Name": "vpc-id", "Values": [vpc_id]}],
            )["SecurityGroups"][0]["GroupId"]
        try:
            self._call("authorize_security_group_ingress", GroupId=group_id, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                "IpRanges": [{"CidrIp": cidr, "Description": spec["rule_description"]} for cidr in spec["ssh_cidrs"]]}])
        except botocore.exceptions.ClientError as e:
            if _code(e) != "InvalidPermission.Duplicate":
                raise
        return group_id

    def key_pair(self) -> None:
        """Imports the lab's public key as its key pair (only the public half ever leaves the
        machine that made it); one imported meanwhile by another launch of the lab is kept."""
        spec = self.p["key_pair"]
        tags = [{"Key": k, "Value": str(v)} for k, v in self.tags.items()]
        try:
            self._call("import_key_pair", KeyName=spec["name"], PublicKeyMaterial=spec["public_key"].encode(),
                       TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
        except botocore.exceptions.ClientError as e:
            if _code(e) != "InvalidKeyPair.Duplicate":
                raise

    def launch(self) -> dict[str, Any]:
        p = self.p
        missing = [k for k in ("image_id", "key_name") if not p[k]]
        if not (p["security_group_id"] or p["security_group"]):
            missing.append("security_group_id or security_group")
        if missing or not p["instance_types"]:
            raise LabFailure(f"To launch, lab_host needs {', '.join(missing) or 'instance_types'}.")
        if p["key_pair"]:
            self.key_pair()
        offered, subnets = self.region.where(p["instance_types"])
        if subnets and not p["security_group_id"]:
            p["security_group_id"] = self.security_group(next(iter(subnets.values()))[1])
        if not subnets:
            raise LabFailure(f"The region {self.region.name} has no default subnet to launch into: "
                             "create a default VPC (aws ec2 create-default-vpc).")
        for instance_type in p["instance_types"]:
            zones = [z for z in (p["zones"] or sorted(offered[instance_type])) if z in offered[instance_type]]
            if not zones:
                self.attempts.append({"type": instance_type, "zone": "", "outcome": "not offered",
                                      "code": "", "message": "not offered in the zones tried"})
                continue
            for zone in zones:
                if zone not in subnets:
                    self.attempts.append({"type": instance_type, "zone": zone, "outcome": "no subnet",
                                          "code": "", "message": "no default subnet in this zone"})
                    continue
                try:
                    instance = self._run(instance_type, zone, subnets[zone][0])
                except botocore.exceptions.ClientError as e:
                    code = _code(e)
                    if code not in CAPACITY_CODES | QUOTA_CODES:
                        raise LabFailure(f"Could not launch {instance_type} in {zone}: {e}") from e
                    self.attempts.append({"type": instance_type, "zone": zone, "code": code,
                                          "outcome": "quota" if code in QUOTA_CODES else "no capacity",
                                          "message": e.response.get("Error", {}).get("Message", "")})
                    if code in QUOTA_CODES:
                        break  # a regional quota: other zones cannot help this type
                    continue
                self.attempts.append({"type": instance_type, "zone": zone, "outcome": "launched",
                                      "code": "", "message": ""})
                return instance
        if self.created_group:  # nothing of this failed launch stays behind
            try:
                self._call("delete_security_group", GroupId=self.created_group)
            except botocore.exceptions.ClientError:
                pass  # teardown.yml removes it; it costs nothing meanwhile
        tried = "; ".join(f"{a['type']} in {a['zone'] or 'no zone'}: {a['code'] or a['outcome']}"
                          for a in self.attempts)
        quotas = sorted({_quota_of(t) for t in p["instance_types"]})
        raise LabFailure(
            f"No candidate instance could be launched in {self.region.name} ({tried}). Try again later, "
            f"add types to gpu_lab_fallback_instance_types or zones to gpu_lab_zones, or choose "
            f"another gpu_lab_region; where the code is a limit, ask AWS to raise the quota "
            f"{' / '.join(quotas)} (Service Quotas console, EC2). No instance, address or "
            "security group was left.")

    def start(self, instance: dict[str, Any]) -> None:
        try:
            self._call("start_instances", InstanceIds=[instance["id"]])
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            self.attempts.append({"type": instance["type"], "zone": instance["zone"], "code": code,
                                  "outcome": "no capacity" if code in CAPACITY_CODES else "failed",
                                  "message": e.response.get("Error", {}).get("Message", "")})
            if code in CAPACITY_CODES | QUOTA_CODES:
                raise LabFailure(
                    f"AWS has no {instance['type']} capacity in {instance['zone']} right now ({code}), so "
                    f"the lab's instance {instance['id']} stays stopped and nothing changed. Try "
                    "start.yml again in a few minutes; or keep your work and move: teardown.yml "
                    "removes the instance and its disk, so first push your work, then teardown.yml "
                    "and launch.yml with gpu_lab_zones or gpu_lab_fallback_instance_types set.") from e
            raise LabFailure(f"Could not start {instance['id']}: {e}") from e
        self.attempts.append({"type": instance["type"], "zone": instance["zone"], "outcome": "started",
                              "code": "", "message": ""})

    def wait_running(self, instance_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.p["wait_timeout"]
        delay = 0.2
        while True:
            try:
                found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            except botocore.exceptions.ClientError as e:
                if _code(e) != "InvalidInstanceID.NotFound":  # eventual consistency just after launch
                    raise
                found = []
            instance = found[0]["Instances"][0] if found else {}
            state = instance.get("State", {}).get("Name", "")
            if state == "running":
                return instance
            if state in ("shutting-down", "terminated"):
                reason = instance.get("StateReason", {}).get("Message", state)
                raise LabFailure(f"The instance {instance_id} ended while starting: {reason}")
            if time.monotonic() > deadline:
                raise LabFailure(f"The instance {instance_id} was not running after "
                                 f"{self.p['wait_timeout']} s (state: {state or 'unknown'}).")
            time.sleep(delay)
            delay = min(delay * 2, 5)

    # --- address
    def associate(self, instance_id: str) -> tuple[dict[str, str], bool]:
        addresses = self.p["addresses"]
        mine = [a for a in addresses if a.get("instance_id") == instance_id]
        if mine:
            return {"public_ip": mine[0]["public_ip"], "allocation_id": mine[0]["allocation_id"]}, False
        # One address per lab: an address left by an interrupted launch is reused.
        free = [a for a in addresses if not a.get("association_id")] or addresses
        if free:
            address = {"public_ip": free[0]["public_ip"], "allocation_id": free[0]["allocation_id"]}
            self._call("associate_address", AllocationId=address["allocation_id"], InstanceId=instance_id,
                       AllowReassociation=True)
            return address, True
        tags = [{"Key": k, "Value": str(v)} for k, v in {**self.tags, "Name": f"{self.p['lab']}-eip"}.items()]
        answer = self._call("allocate_address", Domain="vpc",
                            TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}])
        self._call("associate_address", AllocationId=answer["AllocationId"], InstanceId=instance_id,
                   AllowReassociation=True)
        return self._one_address(instance_id), True

    def _one_address(self, instance_id: str) -> dict[str, str]:
        """One address per lab. Launches racing each other may each allocate one: every one of
        them then keeps the lab's lowest allocation id at the instance and releases the rest,
        so they all end with the same single address."""
        lab = self.ec2.describe_addresses(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [self.p["lab"]]}])["Addresses"]
        keep = min(lab, key=lambda a: a["AllocationId"])
        for other in lab:
            if other["AllocationId"] == keep["AllocationId"] or other.get("InstanceId") not in (None, "", instance_id):
                continue
            try:
                if other.get("AssociationId"):
                    self._call("disassociate_address", AssociationId=other["AssociationId"])
                self._call("release_address", AllocationId=other["AllocationId"])
            except botocore.exceptions.ClientError as e:
                if "NotFound" not in _code(e):  # the other launch released it first
                    raise
        if keep.get("InstanceId") != instance_id:
            self._call("associate_address", AllocationId=keep["AllocationId"], InstanceId=instance_id,
                       AllowReassociation=True)
        return {"public_ip": keep["PublicIp"], "allocation_id": keep["AllocationId"]}


def nothing_removed() -> dict[str, Any]:
    """RV(labs.removed) before anything went: it grows as each resource is removed."""
    return {"addresses": [], "instances": [], "security_group": "", "key_pair": "", "orphans": []}


class LabRemoval:
    """Removes what lab_info found of one lab, in the order that leaves nothing billable: an
    address released before its instance goes (AWS keeps billing an address left associated
    with nothing), the group after the instance (its interface holds the group for a while)."""

    def __init__(self, params: dict[str, Any], region: Region) -> None:
        self.p = params
        self.ec2 = region.ec2  # botocore's standard retries cover throttling and internal errors
        self.removed = nothing_removed()

    def run(self) -> dict[str, Any]:
        p = self.p
        for address in p["addresses"]:
            if self._release(address["allocation_id"], address.get("association_id") or ""):
                self.removed["addresses"].append(address["public_ip"])
        ids = [i["id"] for i in p["instances"]]
        if ids:
            self.removed["instances"] = self._terminate(ids)
        if p["security_group_id"] and self._delete_group(p["security_group_id"]):
            self.removed["security_group"] = p["security_group_id"]
        if p["key_name"]:
            self.ec2.delete_key_pair(KeyName=p["key_name"])  # no error when it is gone already
            self.removed["key_pair"] = p["key_name"]
        for orphan in p["orphans"]:
            kind = orphan.get("kind")
            if kind == "elastic_ip":
                gone = self._release(orphan["id"], "")
            elif kind == "security_group":
                gone = self._delete_group(orphan["id"])
            elif kind == "key_pair":
                self.ec2.delete_key_pair(KeyName=orphan["detail"])
                gone = True
            else:
                raise LabFailure(f"Unknown kind of left-over resource: {orphan!r}")
            if gone:
                self.removed["orphans"].append(orphan.get("summary") or f"{kind} {orphan.get('detail', '')}")
        changed = any(self.removed.values())
        return {"changed": changed, "removed": self.removed, "attempts": []}

    def _release(self, allocation_id: str, association_id: str) -> bool:
        """Disassociates (when associated) and releases one address; False when already gone."""
        for _ in range(3):
            try:
                if association_id:
                    self.ec2.disassociate_address(AssociationId=association_id)
                self.ec2.release_address(AllocationId=allocation_id)
                return True
            except botocore.exceptions.ClientError as e:
                code = _code(e)
                if code in ("InvalidAllocationID.NotFound", "InvalidAddress.NotFound"):
                    return False
                if code == "InvalidAssociationID.NotFound":
                    association_id = ""  # disassociated meanwhile: release it
                    continue
                if code != "InvalidIPAddress.InUse":
                    raise
            # Associated since it was found (or an orphan at a stopped instance): ask where.
            found = self.ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
            association_id = found[0].get("AssociationId", "") if found else ""
        raise LabFailure(f"The address {allocation_id} stayed associated; release it in the EC2 console.")

    def _terminate(self, ids: list[str]) -> list[str]:
        """Terminates the instances and waits until every one is gone; returns those it ended."""
        try:
            answer = self.ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
        except botocore.exceptions.ClientError as e:
            if _code(e) != "InvalidInstanceID.NotFound":
                raise
            answer = []
        ended = [i["InstanceId"] for i in answer if i["PreviousState"]["Name"] not in ("shutting-down", "terminated")]
        deadline = time.monotonic() + self.p["wait_timeout"]
        delay = 0.2
        while True:
            try:
                left = [i["InstanceId"] for r in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
                        for i in r["Instances"] if i["State"]["Name"] != "terminated"]
            except botocore.exceptions.ClientError as e:
                if _code(e) != "InvalidInstanceID.NotFound":  # long gone: AWS forgets them
                    raise
                left = []
            if not left:
                return ended
            if time.monotonic() > deadline:
                raise LabFailure(f"The instances {', '.join(left)} were not gone after {self.p['wait_timeout']} s: "
                                 "run teardown.yml again.")
            time.sleep(delay)
            delay = min(delay * 2, 5)

    def _delete_group(self, group_id: str) -> bool:
        """Deletes a group, retrying while AWS still counts a terminated instance's interface
        (DependencyViolation, for a minute or two on AWS); False when already gone."""
        deadline = time.monotonic() + self.p["wait_timeout"]
        delay = 1.0
        while True:
            try:
                self.ec2.delete_security_group(GroupId=group_id)
                return True
            except botocore.exceptions.ClientError as e:
                code = _code(e)
                if code in ("InvalidGroup.NotFound", "InvalidGroupId.NotFound"):
                    return False
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    raise LabFailure(f"Could not delete the security group {group_id}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 6)


def _summary(instance: dict[str, Any]) -> dict[str, Any]:
    launch_time = instance.get("LaunchTime")
    return {
        "id": instance["InstanceId"],
        "state": instance["State"]["Name"],
        "type": instance["InstanceType"],
        "zone": instance["Placement"]["AvailabilityZone"],
        "image": instance.get("ImageId", ""),
        "launch_time": launch_time.isoformat() if hasattr(launch_time, "isoformat") else str(launch_time or ""),
    }


LAB_OPTIONS: dict[str, Any] = {
    "lab": {"type": "str", "required": True},
    "region": {"type": "str"},
    "instance": {"type": "dict", "default": {}},
    "addresses": {"type": "list", "elements": "dict", "default": []},
    "instances": {"type": "list", "elements": "dict", "default": []},
    "orphans": {"type": "list", "elements": "dict", "default": []},
    "instance_types": {"type": "list", "elements": "str", "default": []},
    "zones": {"type": "list", "elements": "str", "default": []},
    "image_id": {"type": "str"},
    "root_device_name": {"type": "str", "default": "/dev/sda1"},
    "volume_size": {"type": "int", "default": 100},
    "key_name": {"type": "str", "no_log": False},
    "key_pair": {"type": "dict", "no_log": False, "options": {
        "name": {"type": "str", "required": True},
        "public_key": {"type": "str", "required": True, "no_log": False},
    }},
    "user_data": {"type": "str", "default": ""},
    "security_group_id": {"type": "str"},
    "security_group": {"type": "dict", "options": {
        "name": {"type": "str", "required": True},
        "description": {"type": "str", "required": True},
        "ssh_cidrs": {"type": "list", "elements": "str", "required": True, "aliases": ["ssh_cidr"]},
        "rule_description": {"type": "str", "default": "SSH from the lab's workstation"},
    }},
    "tags": {"type": "dict", "default": {}},
    "instance_tags": {"type": "dict", "default": {}},
    "wait_timeout": {"type": "int", "default": 600},
}


def converge(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Brings one lab's instance to running at its address; raises LabFailure (with the
    attempts made so far in .attempts) when it cannot."""
    host = LabHost(params, region)
    known = params["instance"] or {}
    launched = started = False
    try:
        if not known:
            instance_id = host.launch()["InstanceId"]
            launched = True
        else:
            instance_id = known["id"]
            if known["state"] in ("stopped", "stopping"):
                if known["state"] == "stopping":
                    host.ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id])
                host.start(known)
                started = True
        instance = host.wait_running(instance_id)
        address, associated = host.associate(instance_id)
    except LabFailure as e:
        e.attempts = host.attempts  # type: ignore[attr-defined]
        raise
    except botocore.exceptions.ClientError as e:
        failure = LabFailure(f"Could not run the lab's instance: {e}")
        failure.attempts = host.attempts  # type: ignore[attr-defined]
        raise failure from e
    except botocore.exceptions.WaiterError as e:
        failure = LabFailure(f"The instance did not stop: {e}")
        failure.attempts = host.attempts  # type: ignore[attr-defined]
        raise failure from e
    return {"changed": launched or started or associated, "instance": _summary(instance), "address": address,
            "attempts": host.attempts, "launched": launched, "started": started,
            "security_group_id": params["security_group_id"] or ""}


def remove(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Removes one lab's resources; raises LabFailure (with what was removed so far in
    .removed) when it cannot."""
    removal = LabRemoval(params, region)
    try:
        return removal.run()
    except LabFailure as e:
        e.removed = removal.removed  # type: ignore[attr-defined]
        raise
    except botocore.exceptions.ClientError as e:
        failure = LabFailure(f"Could not remove lab {params['lab']}: {e}")
        failure.removed = removal.removed  # type: ignore[attr-defined]
        raise failure from e


def _orphans_once(labs: list[dict[str, Any]]) -> None:
    """Each left-over resource is removed by one lab of the call only; one of a lab of the
    call (in its region) is left to that lab (lab_info lists it among the lab's own)."""
    ours = {(lab["region"] or "", lab["lab"]) for lab in labs}
    seen: set[tuple[str, str, str]] = set()
    for lab in labs:
        region = lab["region"] or ""
        kept = []
        for orphan in lab["orphans"]:
            key = (region, str(orphan.get("kind")), str(orphan.get("id")))
            if key in seen or (region, orphan.get("lab")) in ours:
                continue
            seen.add(key)
            kept.append(orphan)
        lab["orphans"] = kept


def _failed(e: LabFailure, state: str) -> dict[str, Any]:
    """One lab's part of the answer when it failed: with O(state=absent), what was removed
    before (nothing, for a lab that failed its check)."""
    failed = {"failed": True, "changed": False, "msg": e.msg, "attempts": getattr(e, "attempts", [])}
    if state == "absent":
        removed = getattr(e, "removed", None) or nothing_removed()
        failed.update(removed=removed, changed=any(removed.values()))
    return failed


def converge_labs(module: AnsibleAWSModule, given: list[dict[str, Any]],
                  state: str = "present") -> dict[str, dict[str, Any]]:
    """Every lab of O(labs) side by side (brought up, or removed with O(state=absent)),
    sharing one set of clients per region. One lab's failure is its own: the others go on."""
    todo, invalid = check_labs(given, LAB_OPTIONS)
    result = {name: _failed(LabFailure(msg), state) for name, msg in invalid.items()}
    if state == "absent":
        _orphans_once(todo)
    regions: dict[str, Region] = {}
    for lab in todo:
        key = lab["region"] or ""
        if key not in regions:
            regions[key] = Region(module, lab["region"])

    def one(lab: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            act = remove if state == "absent" else converge
            return lab["lab"], act(lab, regions[lab["region"] or ""])
        except LabFailure as e:
            return lab["lab"], _failed(e, state)

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(todo)))) as pool:
        result.update(pool.map(one, todo))
    return result


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            **{k: v for k, v in LAB_OPTIONS.items() if k not in ("lab", "region")},
            "lab": {"type": "str"},
            "labs": {"type": "list", "elements": "dict"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_one_of=[["lab", "labs"]],
        mutually_exclusive=[["lab", "labs"]],
        supports_check_mode=False,
    )
    state = module.params["state"]
    if module.params["labs"] is not None:
        labs = converge_labs(module, module.params["labs"], state)
        module.exit_json(changed=any(r.get("changed") for r in labs.values()), labs=labs)
    params = {k: module.params.get(k) for k in LAB_OPTIONS}
    try:
        result = (remove if state == "absent" else converge)(params, Region(module, None))
    except LabFailure as e:
        module.fail_json(msg=e.msg, attempts=getattr(e, "attempts", []), **(
            {"removed": getattr(e, "removed", {})} if state == "absent" else {}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
