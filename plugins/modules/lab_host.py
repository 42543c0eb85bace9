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
  - With a stopped instance, starts it. Refused for capacity (a stopped instance's disk keeps it
    in its zone), it tries the same type again with growing pauses for up to
    O(start_capacity_wait) seconds (each try is in RV(attempts)); then, with O(start_change_type),
    changes the stopped instance's type (ModifyInstanceAttribute; disk, Elastic IP and the
    C(gpu_lab:instance_type) tag stay) to each other type of O(instance_types) its zone offers, in
    order, until one starts, and says in RV(notes) what changed and how to go back. When none
    starts, the type it had is put back and nothing changed. A quota refusal
    (C(VcpuLimitExceeded)) is not waited for - it says which quota to raise.
  - With O(labs), brings many labs up at once (a class), side by side, sharing one set of
    clients per region and one look at the zones offering the candidate types. Each lab fails
    over on its own; a lab that cannot be brought up gets C(failed) and C(msg) under RV(labs),
    and the others go on (the module itself does not fail).
  - With O(state=absent), removes what M(csdl.gpu_lab.lab_info) found of each lab, in the order
    that leaves nothing billable behind - the Elastic IPs (disassociated, then released), then
    the instances (terminated, waited for), then the security group (retried while AWS still
    counts the terminated instance's network interface), then the key pair; then the
    O(orphans). A class is one call (the labs side by side, one set of clients per region).
  - With O(modify), changes a lab that exists as M(csdl.gpu_lab.lab_info)'s
    RV(csdl.gpu_lab.lab_info#module:drift) says it may - grows the root volume (any state; a
    smaller size is refused), and changes the instance type only while the instance is stopped,
    before starting it (refused while it runs) - and says in RV(notes) what it changed and how
    to go back.
  - A new instance is tagged C(gpu_lab:instance_type) with the type asked for (the first of
    O(instance_types)) unless O(instance_tags) sets that tag, so the lab's setting can be told
    from a fallback type it runs after a capacity failover.
  - When a lab fails after this call launched or started its instance, or allocated its address,
    the failure's message ends with what is left and that it bills (which instance runs, of
    which type and zone, billed by the hour until stopped, and whether it has its Elastic IP yet)
    and what to run next, and RV(left) has the same as data.
  - Supports check mode - then it makes no call that changes anything (only the read of a root
    volume's size for O(modify)), and returns for each lab what it would do, in RV(planned),
    with C(changed) true when that is anything.
  - Bounded waits - every AWS call has a 10 s connect and a 30 s read timeout, and a call that
    timed out is tried twice at most (RunInstances and the other creating calls, once), so an
    endpoint that accepts connections and never answers fails the lab after at most
    2 x (10 + 30) s of silence (about a minute, plus a second or two of backoff), with one
    sentence naming the endpoint. The environment variables E(GPU_LAB_AWS_CONNECT_TIMEOUT) and
    E(GPU_LAB_AWS_READ_TIMEOUT) (seconds, up to 300) change the two timeouts; O(aws_config) still
    overrides them. How long an instance may take to run, or to be gone, is O(wait_timeout).
author: gpu_lab developers (@csdl)
options:
  state:
    description:
      - C(present) runs each lab's instance at its address; C(absent) removes each lab's
        resources (O(addresses), O(instances), O(security_group_id), O(key_name), O(orphans)).
      - C(stopped) stops each lab's O(instance) (disk and address are kept) and waits until it is
        stopped - one StopInstances per region for every lab of the call, and one wait for all.
      - C(shelved) makes an image of each lab's O(instance) (stopped first; no reboot), tagged
        C(gpu_lab:shelf), waits until it is available, then cancels its spot request, terminates it
        and releases O(addresses) - the key pair and security group stay. A lab with O(shelves) and
        no instance is shelved already. With C(present), a lab with O(shelves) that runs at its
        address (a launch from the shelf) has its shelves deregistered and their snapshots deleted.
    type: str
    choices: [present, absent, stopped, shelved]
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
        O(instances), O(orphans), O(modify), O(start_capacity_wait), O(start_change_type)), and
        C(region) (default O(region)).
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
    description:
      - Candidate instance types, most wanted first (to launch; to start, the types
        O(start_change_type) may change a stopped instance to).
    type: list
    elements: str
    default: []
  shelves:
    description:
      - The lab's shelves (csdl.gpu_lab.lab_info's RV(csdl.gpu_lab.lab_info#module:shelves)) -
        C(image_id), C(snapshot_ids), C(tags). Removed with C(absent) and after a launch from one.
    type: list
    elements: dict
    default: []
    version_added: 1.1.0
  spot_instance_types:
    description:
      - Candidate instance types to launch as Spot Instances first, most wanted first - a persistent
        Spot Instance request with interruption behaviour C(stop) (the disk and Elastic IP stay through an
        interruption; the owner may stop and start it). When none has spot capacity in any zone,
        O(instance_types) are tried on demand (empty for no on-demand last resort).
      - A start never changes a Spot Instance's type (AWS does not), and an interrupted one is waited for
        (only AWS starts it again) for up to O(start_capacity_wait) seconds.
    type: list
    elements: str
    default: []
    version_added: 1.1.0
  spot_max_price:
    description: The most a Spot Instance may cost per hour in USD; empty for up to the on-demand price.
    type: str
    default: ''
    version_added: 1.1.0
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
        ingress rule (SSH from O(security_group.ssh_cidrs)) and nothing else. Changes to an
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
    description:
      - Further tags of a new instance and its volume (settings the lab records there).
      - A new instance also gets C(gpu_lab:instance_type) (the first of O(instance_types)) when this
        does not set it.
    type: dict
    default: {}
  modify:
    description:
      - Changes to the lab's existing instance (O(instance)), as M(csdl.gpu_lab.lab_info)'s
        RV(csdl.gpu_lab.lab_info#module:drift.apply) gives them. Ignored for a new instance
        (O(instance_types) and O(volume_size) apply at launch).
    type: dict
    version_added: 0.3.0
    suboptions:
      instance_type:
        description:
          - The type to run. Changed (ModifyInstanceAttribute) only while the instance is stopped
            (one stopping is waited for), before it is started, and recorded in its
            C(gpu_lab:instance_type) tag; a running instance of another type fails the lab with
            what to do. When it already runs that type, only the tag is set.
        type: str
      volume_size:
        description:
          - The root volume's new size in GiB (ModifyVolume, in any state; gp3 grows online). The
            same size changes nothing; a smaller one fails the lab (a volume cannot shrink).
        type: int
  start_capacity_wait:
    description:
      - Seconds to keep trying to start a stopped instance in the same type while AWS refuses it for
        capacity (C(InsufficientInstanceCapacity)), with growing pauses (from a twentieth of this, 0.5 to
        10 s, doubling up to a minute). 0 tries once.
    type: float
    default: 0
    version_added: 0.4.0
  start_change_type:
    description:
      - When the start is still refused for capacity after O(start_capacity_wait), change the stopped
        instance's type to the other types of O(instance_types) that its zone offers, in order, and start
        it; the type it had is put back when none starts.
    type: bool
    default: false
    version_added: 0.4.0
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
    - With O(labs), each lab's result by lab name, with the other keys of this list and C(changed)
      (or C(failed), C(msg), RV(attempts) and, with O(state=present), RV(left) and RV(notes)).
    - Without it, those keys are returned at the top level.
  returned: with O(labs)
  type: dict
  sample: {csdl-ada: {changed: true, launched: true, started: false, instance: {id: i-0abc, state: running,
           type: g6.xlarge, zone: us-east-1a, image: ami-0abc, launch_time: '2026-09-01T10:00:00+00:00'},
           address: {public_ip: 203.0.113.5, allocation_id: eipalloc-0abc}, security_group_id: sg-0abc,
           attempts: [{type: g6.xlarge, zone: us-east-1a, outcome: launched, code: '', message: ''}], notes: []}}
  contains:
    changed:
      description: Whether this lab was changed.
      type: bool
      sample: true
    failed:
      description: Whether this lab failed (the other labs went on).
      type: bool
      returned: when the lab failed
      sample: true
    msg:
      description: Why this lab failed, and what it left behind that bills.
      type: str
      returned: when the lab failed
      sample: No capacity for g6.xlarge or g5.xlarge in any zone of us-east-1.
instance:
  description: The running instance, or C({}) for a lab without one.
  returned: success
  type: dict
  sample: {id: i-0abc, state: running, type: g6.xlarge, zone: us-east-1a, image: ami-0abc,
           launch_time: '2026-09-01T10:00:00+00:00'}
  contains:
    id:
      description: The instance ID.
      type: str
      sample: i-0abc
    state:
      description: Its state.
      type: str
      sample: running
    type:
      description: Its instance type.
      type: str
      sample: g6.xlarge
    zone:
      description: Its availability zone.
      type: str
      sample: us-east-1a
    image:
      description: The image it was launched from.
      type: str
      sample: ami-0abc
    launch_time:
      description: When it last started (ISO 8601).
      type: str
      sample: '2026-09-01T10:00:00+00:00'
    market:
      description: C(spot) for a Spot Instance, else C(on-demand).
      type: str
      version_added: 1.1.0
      sample: on-demand
security_group_id:
  description: The security group of a launched instance (created or given).
  returned: when launched
  type: str
  sample: sg-0abc
address:
  description: The lab's Elastic IP, or C({}).
  returned: success
  type: dict
  sample: {public_ip: 203.0.113.5, allocation_id: eipalloc-0abc}
  contains:
    public_ip:
      description: The address.
      type: str
      sample: 203.0.113.5
    allocation_id:
      description: Its allocation ID.
      type: str
      sample: eipalloc-0abc
attempts:
  description: Each launch or start attempt, in order.
  returned: always
  type: list
  elements: dict
  sample: [{type: g6.xlarge, zone: us-east-1a, outcome: no capacity, code: InsufficientInstanceCapacity,
            message: We currently do not have sufficient g6.xlarge capacity in the Availability Zone you requested.},
           {type: g6.xlarge, zone: us-east-1b, outcome: launched, code: '', message: ''}]
  contains:
    type:
      description: The instance type tried.
      type: str
      sample: g6.xlarge
    zone:
      description: The availability zone tried (empty when the type is not offered in the region).
      type: str
      sample: us-east-1a
    outcome:
      description:
        - A launch's is C(launched), C(no capacity), C(quota), C(over the price cap) (a spot try below the
          current spot price), C(not offered) (the type is not offered in the region) or C(no subnet) (the zone
          has no default subnet); a start's C(started), C(started by AWS) (an interrupted Spot Instance),
          C(no capacity), C(quota), C(not changed) (the type could not be changed to it) or C(failed).
      type: str
      sample: no capacity
    market:
      description: A launch's - the market tried, C(spot) or C(on-demand).
      type: str
      returned: for a launch
      version_added: 1.1.0
      sample: on-demand
    code:
      description: The AWS error code, empty on success.
      type: str
      sample: InsufficientInstanceCapacity
    message:
      description: AWS's message, empty on success.
      type: str
      sample: ''
    retry:
      description:
        - A start's only - 0 for the first try of a type, then 1, 2... for the tries after a
          capacity refusal.
      type: int
      returned: for a start
      sample: 0
removed:
  description:
    - With O(state=absent), what was removed so far, also when the lab failed; with O(state=shelved), what went
      once the image was made (instance, spot request, addresses).
  returned: with O(state=absent) or O(state=shelved)
  type: dict
  version_added: 0.3.0
  sample: {addresses: [203.0.113.5], instances: [i-0abc], security_group: sg-0abc, key_pair: csdl-server,
           orphans: []}
  contains:
    addresses:
      description: The public IPs released.
      type: list
      elements: str
      sample: [203.0.113.5]
    shelves:
      description: The shelf images deregistered (their snapshots deleted).
      type: list
      elements: str
      version_added: 1.1.0
      sample: []
    spot_requests:
      description: The Spot Instance requests cancelled before their instances were terminated (a persistent
        request not cancelled would launch a new instance).
      type: list
      elements: str
      version_added: 1.1.0
      sample: []
    instances:
      description: The IDs of the instances terminated.
      type: list
      elements: str
      sample: [i-0abc]
    security_group:
      description: The ID of the security group deleted, or empty.
      type: str
      sample: sg-0abc
    key_pair:
      description: The name of the key pair deleted, or empty.
      type: str
      sample: csdl-server
    orphans:
      description: Each orphan removed, its C(summary) or kind and detail.
      type: list
      elements: str
      sample: [security group csdl-ssh of lab csdl]
shelf:
  description: With O(state=shelved), the lab's shelf - C(image_id), C(name), C(creation_date), C(snapshot_ids),
    C(size_gib); empty in check mode.
  returned: with O(state=shelved)
  type: dict
  version_added: 1.1.0
  sample: {image_id: ami-0abc, name: csdl-shelf-20261203-140501, creation_date: '2026-12-03T14:05:01.000Z',
           snapshot_ids: [snap-0abc], size_gib: 100}
  contains:
    image_id:
      description: The image of the lab's disk.
      type: str
      sample: ami-0abc
    name:
      description: Its name, C(<lab>-shelf-<UTC time>).
      type: str
      sample: csdl-shelf-20261203-140501
    creation_date:
      description: When AWS made it.
      type: str
      sample: '2026-12-03T14:05:01.000Z'
    snapshot_ids:
      description: Its snapshots (what bills while the lab is shelved).
      type: list
      elements: str
      sample: [snap-0abc]
    size_gib:
      description: The size of its volumes in GiB (at most what the snapshots bill).
      type: int
      sample: 100
launched:
  description: Whether a new instance was launched (false in check mode - see RV(planned)).
  returned: success
  type: bool
  sample: true
started:
  description: Whether a stopped instance was started (false in check mode - see RV(planned)).
  returned: success
  type: bool
  sample: false
notes:
  description:
    - With O(modify), one sentence per change made to the existing instance, saying how to go
      back (or that it cannot be undone); also the type a start without capacity changed to
      (O(start_change_type)). Empty otherwise.
  returned: with O(state=present)
  type: list
  elements: str
  version_added: 0.3.0
  sample: ["Changed the type of i-0abc from g5.xlarge to g6.xlarge while it was stopped; to go back, run
            stop.yml, set gpu_lab_instance_type back to g5.xlarge, then launch.yml."]
planned:
  description:
    - In check mode, what the lab's run would do, one plain sentence each, in order (C(import key
      pair csdl-server), C(create security group csdl-ssh), C(launch g6.xlarge in the first zone that
      has capacity (candidates - g6.xlarge, g5.xlarge)), C(start i-0abc), C(allocate and associate
      an Elastic IP); with O(state=absent) C(release 203.0.113.5), C(terminate i-0abc), C(delete
      security group sg-0abc), C(delete key pair csdl-server)). Nothing was changed; RV(instance)
      and RV(address) are what exists now (C({}) for a lab without an instance), and RV(removed)
      stays empty.
  returned: in check mode
  type: list
  elements: str
  version_added: 0.3.0
  sample: [import key pair csdl-server, create security group csdl-ssh,
           "launch g6.xlarge in the first zone that has capacity (candidates: g6.xlarge, g5.xlarge)",
           allocate and associate an Elastic IP]
left:
  description:
    - When a lab fails with O(state=present), what this call left behind that bills; empty dicts
      when nothing was left. The message says the same in words.
  returned: when a lab fails with O(state=present)
  type: dict
  version_added: 0.3.0
  sample: {instance: {id: i-0abc, type: g6.xlarge, zone: us-east-1a, state: running}, address: {}}
  contains:
    instance:
      description: The instance it launched or started, or allocated an address for (id, type, zone, state).
      type: dict
      sample: {id: i-0abc, type: g6.xlarge, zone: us-east-1a, state: running}
      contains:
        id:
          description: The instance ID.
          type: str
          sample: i-0abc
        type:
          description: Its instance type.
          type: str
          sample: g6.xlarge
        zone:
          description: Its availability zone.
          type: str
          sample: us-east-1a
        state:
          description: Its state.
          type: str
          sample: running
    address:
      description: The Elastic IP it allocated.
      type: dict
      sample: {}
      contains:
        public_ip:
          description: The address.
          type: str
          sample: 203.0.113.5
        allocation_id:
          description: Its allocation ID.
          type: str
          sample: eipalloc-0abc
        associated:
          description: Whether it was associated with the instance.
          type: bool
          sample: false
"""

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.csdl.gpu_lab.plugins.module_utils.drift import (
    RECORDED_TYPE_TAG,
    TYPE_CHANGES_IN,
    recorded_type,
    shrink_refusal,
    type_refusal,
)
from ansible_collections.csdl.gpu_lab.plugins.module_utils.labs import check_labs
from ansible_collections.csdl.gpu_lab.plugins.module_utils.start_capacity import (
    changed_note,
    fallback_types,
    interrupted_back_note,
    interrupted_message,
    no_capacity_message,
    quota_message,
    retry_delays,
)
from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import (
    bounded,
    client_config,
    is_timeout,
    timeout_message,
    timeouts,
)

# No capacity for this type in this zone: try the next zone.
CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported",
                  "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity"}
# The account may not run more of this family in the region: try the next type.
QUOTA_CODES = {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
# A spot price cap below the current spot price: that type and zone is as good as full.
SPOT_PRICE_CODES = {"SpotMaxPriceTooLow"}
# StartInstances of a Spot Instance that AWS interrupted: only AWS starts it again.
INTERRUPTED_CODE = "IncorrectSpotRequestState"
# Worth another try of the same call.
TRANSIENT_CODES = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
                   "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout"}
# Labs brought up at the same time by one call (each mostly waits on EC2).
MAX_PARALLEL = 32
QUOTAS = {
    "g": "Running On-Demand G and VT instances (L-DB2E81BA)",
    "p": "Running On-Demand P instances (L-417A185B)",
}


def spot_options(max_price: str = "") -> dict[str, Any]:
    """RunInstances' InstanceMarketOptions of a lab's Spot Instance: a persistent request that
    stops the instance on an interruption (disk and Elastic IP stay; the owner may stop and
    start it), capped at O(spot_max_price) when given (else at the on-demand price)."""
    options: dict[str, Any] = {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
    if max_price:
        options["MaxPrice"] = max_price
    return {"MarketType": "spot", "SpotOptions": options}


def _quota_of(instance_type: str) -> str:
    return QUOTAS.get(instance_type[:1], "Running On-Demand Standard instances (L-1216C47A)")


def _code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


class LabFailure(Exception):
    """This lab cannot be brought up; the message says why and what to do."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def _failure_of(e: Exception, what: str) -> LabFailure:
    """A LabFailure for an AWS error that ended a lab's work: a silent endpoint in the one
    sentence that says so, anything else as what was being done and AWS's words."""
    if isinstance(e, LabFailure):
        return e
    if is_timeout(e):
        return LabFailure(timeout_message(e))
    if isinstance(e, botocore.exceptions.WaiterError):
        return LabFailure(f"The instance did not stop: {e}")
    return LabFailure(f"{what}: {e}")


class Region:
    """The clients of one region, shared by every lab launched there (boto3 clients are
    thread-safe), and what the region offers, asked once for all of them."""

    def __init__(self, module: AnsibleAWSModule, region: str | None) -> None:
        where = {"region": region} if region else {}
        self.name = region or module.region or "the configured region"
        # Capacity errors come back as HTTP 500, which botocore would retry with backoff: the
        # launch calls go through a client that never retries, and `_call` retries only what
        # is transient (throttling, internal errors), so a capacity error moves on at once.
        # Both give up on a silent endpoint within the bound of timeouts.py.
        self.ec2 = bounded(module.client("ec2", config=client_config(
            retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=50), **where))
        self.launcher = bounded(module.client("ec2", config=client_config(
            retries={"total_max_attempts": 1}, max_pool_connections=50), **where))
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
    def __init__(self, params: dict[str, Any], region: Region, check_mode: bool = False) -> None:
        self.p = params
        self.region = region
        self.ec2 = region.ec2
        self.launcher = region.launcher
        self.attempts: list[dict[str, Any]] = []
        self.tags = dict(self.p["tags"])
        self.created_group = ""
        # In check mode the changing steps only say what they would do, in `planned`.
        self.check_mode = check_mode
        self.planned: list[str] = []
        self.notes: list[str] = []  # what O(modify) changed, and how to go back
        # What exists now that this call launched, started or allocated: said when it fails.
        self.instance_now: dict[str, str] = {}
        self.address_now: dict[str, Any] = {}
        self.allocated = False

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
    def _token(self, instance_type: str, zone: str, salt: str = "", market: str = "on-demand") -> str:
        # The market is part of a launch: an on-demand retry after a spot try is another launch
        # (one token for both would be refused as IdempotentParameterMismatch).
        spot = ":spot" if market == "spot" else ""
        # The image too: a lab brought back from its shelf is another launch than its first one.
        seed = (f"gpu_lab:{self.p['lab']}:{self.p['security_group_id']}:{self.p['image_id']}:{instance_type}:{zone}:"
                f"{salt}{spot}")
        return hashlib.sha256(seed.encode()).hexdigest()[:64]

    def _run(self, instance_type: str, zone: str, subnet_id: str, market: str = "on-demand") -> dict[str, Any]:
        # The type asked for (the setting) goes on the instance beside what the caller records:
        # after a failover it runs another type, and a changed setting is told from that by
        # this tag (module_utils/drift.py). The caller's own value of the tag wins.
        recorded = {**self.tags, **self.p["instance_tags"], "Name": f"{self.p['lab']}-server"}
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
            **({"InstanceMarketOptions": spot_options(self.p["spot_max_price"])} if market == "spot" else {}),
            **({"UserData": self.p["user_data"]} if self.p["user_data"] else {}),
            "BlockDeviceMappings": [{"DeviceName": self.p["root_device_name"],
                                     "Ebs": {"VolumeSize": self.p["volume_size"], "VolumeType": "gp3",
                                             "Encrypted": True, "DeleteOnTermination": True}}],
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()]}
                for kind, tags in (("instance", {RECORDED_TYPE_TAG: self.first_type, **recorded}),
                                   ("volume", recorded),
                                   *((("spot-instances-request", self.tags),) if market == "spot" else ()))
            ],
        }
        salt = ""
        for _try in range(3):
            instance = self._call("run_instances", ClientToken=self._token(instance_type, zone, salt, market),
                                  **spec)["Instances"][0]
            # A token reused after its instance was terminated answers with that instance.
            if instance["State"]["Name"] not in ("shutting-down", "terminated"):
                return instance
            salt = instance["InstanceId"]
        raise LabFailure("RunInstances kept answering with a terminated instance.")

    def _launch_in(self, market: str, types: list[str], offered: dict[str, list[str]],
                   subnets: dict[str, tuple[str, str]]) -> dict[str, Any]:
        """The candidate types of one market in order, each across the zones that offer it; the
        instance launched, or {} when none had capacity (each try is in the attempts)."""
        p = self.p
        for instance_type in types:
            zones = [z for z in (p["zones"] or sorted(offered[instance_type])) if z in offered[instance_type]]
            if not zones:
                self.attempts.append({"type": instance_type, "zone": "", "outcome": "not offered", "market": market,
                                      "code": "", "message": "not offered in the zones tried"})
                continue
            for zone in zones:
                if zone not in subnets:
                    self.attempts.append({"type": instance_type, "zone": zone, "outcome": "no subnet",
                                          "market": market, "code": "", "message": "no default subnet in this zone"})
                    continue
                try:
                    instance = self._run(instance_type, zone, subnets[zone][0], market)
                except botocore.exceptions.ClientError as e:
                    code = _code(e)
                    if code not in CAPACITY_CODES | QUOTA_CODES | SPOT_PRICE_CODES:
                        spot = " (spot)" if market == "spot" else ""
                        raise LabFailure(f"Could not launch {instance_type}{spot} in {zone}: {e}") from e
                    outcome = ("quota" if code in QUOTA_CODES else "over the price cap" if code in SPOT_PRICE_CODES
                               else "no capacity")
                    self.attempts.append({"type": instance_type, "zone": zone, "code": code, "outcome": outcome,
                                          "market": market, "message": e.response.get("Error", {}).get("Message", "")})
                    if code in QUOTA_CODES:
                        break  # a regional quota: other zones cannot help this type
                    continue
                self.attempts.append({"type": instance_type, "zone": zone, "outcome": "launched", "market": market,
                                      "code": "", "message": ""})
                self.instance_now = {"id": instance["InstanceId"], "type": instance_type, "zone": zone,
                                     "state": instance["State"]["Name"]}
                return instance
        return {}

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

    def check_launch(self) -> None:
        p = self.p
        missing = [k for k in ("image_id", "key_name") if not p[k]]
        if not (p["security_group_id"] or p["security_group"]):
            missing.append("security_group_id or security_group")
        if missing or not (p["instance_types"] or p["spot_instance_types"]):
            raise LabFailure(f"To launch, lab_host needs {', '.join(missing) or 'instance_types'}.")

    @property
    def first_type(self) -> str:
        """The type the lab asks for: the first candidate of its first market."""
        return (self.p["spot_instance_types"] or self.p["instance_types"])[0]

    def passes(self) -> list[tuple[str, list[str]]]:
        """The markets to try, in order, each with its candidate types: spot first (O(spot_instance_types)),
        on demand (O(instance_types)) as the last resort."""
        markets = (("spot", self.p["spot_instance_types"]), ("on-demand", self.p["instance_types"]))
        return [(market, types) for market, types in markets if types]

    def plan_launch(self) -> None:
        """Check mode: what launch() would do, without a call."""
        self.check_launch()
        p = self.p
        if p["key_pair"]:
            self.planned.append(f"import key pair {p['key_pair']['name']}")
        if not p["security_group_id"]:
            self.planned.append(f"create security group {p['security_group']['name']}")
        zones = f"; zones: {', '.join(p['zones'])}" if p["zones"] else ""
        passes = self.passes()
        named = len(passes) > 1 or passes[0][0] == "spot"  # an on-demand lab's plan reads as before
        markets = "; then ".join(", ".join(types) + (f" ({market})" if named else "") for market, types in passes)
        self.planned.append(f"launch {self.first_type} in the first zone that has capacity "
                            f"(candidates: {markets}{zones})")

    def launch(self) -> dict[str, Any]:
        p = self.p
        self.check_launch()
        if p["key_pair"]:
            self.key_pair()
        offered, subnets = self.region.where(list(dict.fromkeys(p["spot_instance_types"] + p["instance_types"])))
        if subnets and not p["security_group_id"]:
            p["security_group_id"] = self.security_group(next(iter(subnets.values()))[1])
        if not subnets:
            raise LabFailure(f"The region {self.region.name} has no default subnet to launch into: "
                             "create a default VPC (aws ec2 create-default-vpc).")
        for market, types in self.passes():
            instance = self._launch_in(market, types, offered, subnets)
            if instance:
                return instance
        if self.created_group:  # nothing of this failed launch stays behind
            try:
                self._call("delete_security_group", GroupId=self.created_group)
            except botocore.exceptions.ClientError:
                pass  # teardown.yml removes it; it costs nothing meanwhile
        spot = any(m == "spot" for m, _types in self.passes())
        tried = "; ".join(f"{a['type']}{' (spot)' if spot and a.get('market') == 'spot' else ''} in "
                          f"{a['zone'] or 'no zone'}: {a['code'] or a['outcome']}" for a in self.attempts)
        quotas = sorted({_quota_of(t) for t in p["spot_instance_types"] + p["instance_types"]})
        raise LabFailure(
            f"No candidate instance could be launched in {self.region.name} ({tried}). Try again later, "
            f"add types to gpu_lab_fallback_instance_types or zones to gpu_lab_zones, or choose "
            f"another gpu_lab_region; where the code is a limit, ask AWS to raise the quota "
            f"{' / '.join(quotas)} (Service Quotas console, EC2). No instance, address or "
            "security group was left.")

    def start(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Starts the stopped instance; the instance as it is now (another type after a change).
        Refused for capacity: tried again in its zone for up to O(start_capacity_wait) s, then
        (O(start_change_type)) changed to the lab's other candidate types its zone offers, one
        after the other. When none starts, its type is put back: it stays stopped, unchanged."""
        began = time.monotonic()
        code, error = self._start_once(instance)
        refusals = 0
        for delay in retry_delays(float(self.p["start_capacity_wait"] or 0)):
            if code not in CAPACITY_CODES:
                break
            refusals += 1
            time.sleep(delay)
            code, error = self._start_once(instance, retry=refusals)
        if not code:
            return instance
        if code == INTERRUPTED_CODE:
            return self._wait_for_aws(instance, began)
        if code not in CAPACITY_CODES:
            self._start_refused(instance, code, error)
        first_code = code
        refusals += 1
        seconds = time.monotonic() - began
        tried: list[str] = []
        restored = ""
        # AWS does not change a Spot Instance's type.
        change_type = bool(self.p["start_change_type"]) and instance.get("market") != "spot"
        if change_type:
            offered, _rest = self.region.where(self.p["instance_types"] or [instance["type"]])
            for kind in fallback_types(instance["type"], self.p["instance_types"], offered, instance["zone"]):
                started = self._start_as(instance, kind, tried)
                if started:
                    self.notes.append(changed_note(self.p["lab"], instance["id"], instance["type"], kind,
                                                   instance["zone"], self.region.name, recorded_type(instance),
                                                   refusals, seconds))
                    return started
            restored = self._type_back(instance, tried)
        said = no_capacity_message(instance["id"], instance["type"], instance["zone"], tried, refusals, seconds,
                                   change_type, restored, first_code, spot=instance.get("market") == "spot")
        raise LabFailure(said)

    def _wait_for_aws(self, instance: dict[str, Any], began: float) -> dict[str, Any]:
        """An interrupted Spot Instance: only AWS starts it again, when it has capacity for its
        type in its zone. Looks again with growing pauses for O(start_capacity_wait) s."""
        looks = 0
        for delay in retry_delays(float(self.p["start_capacity_wait"] or 0)):
            time.sleep(delay)
            looks += 1
            now = self.ec2.describe_instances(InstanceIds=[instance["id"]])["Reservations"][0]["Instances"][0]
            if now["State"]["Name"] in ("pending", "running"):
                self.attempts.append({"type": instance["type"], "zone": instance["zone"], "outcome": "started by AWS",
                                      "code": "", "message": "", "retry": looks, "market": "spot"})
                self.instance_now = {"id": instance["id"], "type": instance["type"], "zone": instance["zone"],
                                     "state": now["State"]["Name"]}
                self.notes.append(interrupted_back_note(instance["id"], time.monotonic() - began))
                return instance
        raise LabFailure(interrupted_message(instance["id"], instance["type"], instance["zone"],
                                             str((instance.get("spot_request") or {}).get("updated") or ""),
                                             looks, time.monotonic() - began))

    def _start_once(self, instance: dict[str, Any], retry: int = 0
                    ) -> tuple[str, botocore.exceptions.ClientError | None]:
        """One StartInstances, recorded in the attempts: ('', None) when it started, else AWS's
        code and error."""
        try:
            self._call("start_instances", InstanceIds=[instance["id"]])
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            outcome = "no capacity" if code in CAPACITY_CODES else "quota" if code in QUOTA_CODES else "failed"
            self.attempts.append({"type": instance["type"], "zone": instance["zone"], "code": code,
                                  "outcome": outcome, "message": e.response.get("Error", {}).get("Message", ""),
                                  "retry": retry})
            return code, e
        self.attempts.append({"type": instance["type"], "zone": instance["zone"], "outcome": "started",
                              "code": "", "message": "", "retry": retry})
        self.instance_now = {"id": instance["id"], "type": instance["type"], "zone": instance["zone"],
                             "state": "pending"}
        return "", None

    def _start_refused(self, instance: dict[str, Any], code: str,
                       error: botocore.exceptions.ClientError | None) -> None:
        """A start refused for another reason than capacity: no wait helps."""
        if code in QUOTA_CODES:
            raise LabFailure(quota_message(instance["id"], instance["type"], code, _quota_of(instance["type"])))
        raise LabFailure(f"Could not start {instance['id']}: {error}")

    def _start_as(self, instance: dict[str, Any], kind: str, tried: list[str]) -> dict[str, Any]:
        """The stopped instance changed to ``kind`` and started ({} when AWS refused either:
        then it is stopped, of type ``kind`` when the change was made)."""
        try:
            self._call("modify_instance_attribute", InstanceId=instance["id"], InstanceType={"Value": kind})
        except botocore.exceptions.ClientError as e:
            self.attempts.append({"type": kind, "zone": instance["zone"], "code": _code(e), "outcome": "not changed",
                                  "message": e.response.get("Error", {}).get("Message", ""), "retry": 0})
            return {}
        tried.append(kind)
        now = {**instance, "type": kind}
        code, error = self._start_once(now)
        if code and code not in CAPACITY_CODES | QUOTA_CODES:
            back = (f"its type is {instance['type']} again; nothing changed" if self._type_back(instance, tried)
                    else f"it stays stopped as {kind}")
            raise LabFailure(f"Could not start {instance['id']} as {kind}: {error} ({back}).")
        if code:
            return {}
        if not (instance.get("tags") or {}).get(RECORDED_TYPE_TAG):  # the type asked for stays the record
            self._record_type(instance, recorded_type(instance))
        return now

    def _type_back(self, instance: dict[str, Any], tried: list[str]) -> str:
        """Puts back the type the instance had before the start changed it ('' if it did not)."""
        if not tried:
            return ""
        try:
            self._call("modify_instance_attribute", InstanceId=instance["id"],
                       InstanceType={"Value": instance["type"]})
        except botocore.exceptions.ClientError as e:
            self.notes.append(f"The instance {instance['id']} is now of type {tried[-1]} (stopped): putting back "
                              f"{instance['type']} failed ({_code(e)}); run aws ec2 modify-instance-attribute "
                              f"--instance-id {instance['id']} --instance-type Value={instance['type']}.")
            return ""
        return instance["type"]

    # --- changed settings (O(modify)), on an instance that exists
    def grow_volume(self, known: dict[str, Any], size: int) -> None:
        """Grows the root volume to size GiB (gp3 grows online, in any state); the same size
        changes nothing, a smaller one is refused (AWS cannot shrink a volume)."""
        volume_id = known.get("root_volume_id") or self._root_volume_id(known["id"])
        if not volume_id:
            raise LabFailure(f"Could not find the root volume of {known['id']} to grow it to {size} GiB.")
        current = int(self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"])
        if size < current:
            raise LabFailure(shrink_refusal(self.p["lab"], current, size))
        if size == current:
            return
        if self.check_mode:
            self.planned.append(f"grow the disk {volume_id} of {known['id']} from {current} to {size} GiB")
            return
        try:
            self._call("modify_volume", VolumeId=volume_id, Size=size)
        except botocore.exceptions.ClientError as e:  # such as one change per volume every 6 hours
            raise LabFailure(f"Could not grow the disk {volume_id} of {known['id']} from {current} to "
                             f"{size} GiB: {e}") from e
        self.notes.append(f"Grew the disk {volume_id} of {known['id']} from {current} to {size} GiB; a volume "
                          "cannot shrink back (a smaller disk means a new lab: teardown.yml, then launch.yml), and "
                          "AWS allows one change of a volume every 6 hours.")

    def _root_volume_id(self, instance_id: str) -> str:
        """For a caller that passes an instance without RV(csdl.gpu_lab.lab_info#module:instance.root_volume_id)."""
        found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        root = found.get("RootDeviceName", "")
        return next((m["Ebs"]["VolumeId"] for m in found.get("BlockDeviceMappings", [])
                     if "Ebs" in m and m.get("DeviceName") == root), "")

    def change_type(self, known: dict[str, Any], wanted: str) -> dict[str, Any]:
        """The instance with the type wanted: changed while it is stopped (refused while it
        runs), and recorded in its tag; the instance as it is now (its new type)."""
        lab, recorded = self.p["lab"], recorded_type(known)
        if known["type"] == wanted:
            if recorded != wanted:  # it already runs it (a fallback): only the record changes
                self._record_type(known, wanted)
                if not self.check_mode:
                    self.notes.append(f"Lab {lab} runs {wanted} already: recorded it as the type asked for (it was "
                                      f"{recorded}).")
            return known
        if known["state"] not in TYPE_CHANGES_IN:
            raise LabFailure(type_refusal(lab, known["type"], recorded, wanted))
        if self.check_mode:
            self.planned.append(f"change the type of {known['id']} from {known['type']} to {wanted}")
        else:
            try:
                self._call("modify_instance_attribute", InstanceId=known["id"], InstanceType={"Value": wanted})
            except botocore.exceptions.ClientError as e:
                raise LabFailure(f"Could not change the type of {known['id']} from {known['type']} to {wanted} "
                                 f"(it stays stopped, unchanged): {e}") from e
            self.notes.append(f"Changed the type of {known['id']} from {known['type']} to {wanted} while it was "
                              f"stopped; to go back, run stop.yml, set gpu_lab_instance_type back to {recorded}, "
                              "then launch.yml.")
        self._record_type(known, wanted)
        return {**known, "type": wanted, "tags": {**(known.get("tags") or {}), RECORDED_TYPE_TAG: wanted}}

    def _record_type(self, known: dict[str, Any], wanted: str) -> None:
        if self.check_mode:
            self.planned.append(f"tag {known['id']} {RECORDED_TYPE_TAG}={wanted}")
            return
        self._call("create_tags", Resources=[known["id"]], Tags=[{"Key": RECORDED_TYPE_TAG, "Value": wanted}])

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
            if self.instance_now and state:
                self.instance_now["state"] = state
            if state == "running":
                return instance
            if state in ("shutting-down", "terminated"):
                self.instance_now = {}  # nothing left running: the failure says only why
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
        # No id: check mode's new instance, which no address can be at yet.
        mine = [a for a in addresses if a.get("instance_id") == instance_id] if instance_id else []
        if mine:
            return {"public_ip": mine[0]["public_ip"], "allocation_id": mine[0]["allocation_id"]}, False
        # One address per lab: an address left by an interrupted launch is reused.
        free = [a for a in addresses if not a.get("association_id")] or addresses
        if free:
            address = {"public_ip": free[0]["public_ip"], "allocation_id": free[0]["allocation_id"]}
            if self.check_mode:
                self.planned.append(f"associate the Elastic IP {address['public_ip']} with {instance_id or 'it'}")
                return {}, True
            self._call("associate_address", AllocationId=address["allocation_id"], InstanceId=instance_id,
                       AllowReassociation=True)
            self.address_now = {**address, "associated": True}
            return address, True
        if self.check_mode:
            self.planned.append("allocate and associate an Elastic IP")
            return {}, True
        tags = [{"Key": k, "Value": str(v)} for k, v in {**self.tags, "Name": f"{self.p['lab']}-eip"}.items()]
        answer = self._call("allocate_address", Domain="vpc",
                            TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}])
        self.allocated = True
        self.address_now = {"public_ip": answer.get("PublicIp", ""), "allocation_id": answer["AllocationId"],
                            "associated": False}
        self._call("associate_address", AllocationId=answer["AllocationId"], InstanceId=instance_id,
                   AllowReassociation=True)
        self.address_now["associated"] = True
        address = self._one_address(instance_id)
        self.address_now = {**address, "associated": True}
        return address, True

    def left(self, launched: bool, started: bool) -> dict[str, dict[str, Any]]:
        """What this call launched, started or allocated that exists now (and bills)."""
        if not (launched or started or self.allocated):
            return {"instance": {}, "address": {}}
        instance = dict(self.instance_now)
        if not instance and self.allocated and self.p["instance"]:  # running before: its address is new
            known = self.p["instance"]
            instance = {k: known.get(k, "") for k in ("id", "type", "zone", "state")}
        return {"instance": instance, "address": dict(self.address_now)}

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
    return {"addresses": [], "spot_requests": [], "instances": [], "shelves": [], "security_group": "", "key_pair": "",
            "orphans": []}


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
        # A persistent Spot Instance request launches a new instance when its instance is
        # terminated: cancelled first (AWS then terminates a stopped instance of it by itself).
        requests = [i["spot_request_id"] for i in p["instances"] if i.get("spot_request_id")
                    and (i.get("spot_request") or {}).get("state") != "cancelled"]
        if requests:
            self.removed["spot_requests"] = self._cancel(requests)
        ids = [i["id"] for i in p["instances"]]
        if ids:
            self.removed["instances"] = self._terminate(ids)
        for shelf in p["shelves"]:
            self.removed["shelves"].append(self.unshelve(shelf))
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
            elif kind == "snapshot":
                gone = self._delete_snapshot(orphan["id"])
            else:
                raise LabFailure(f"Unknown kind of left-over resource: {orphan!r}")
            if gone:
                self.removed["orphans"].append(orphan.get("summary") or f"{kind} {orphan.get('detail', '')}")
        changed = any(self.removed.values())
        return {"changed": changed, "removed": self.removed, "attempts": []}

    def _release(self, allocation_id: str, association_id: str) -> bool:
        """Disassociates (when associated) and releases one address; False when already gone."""
        for _try in range(3):
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

    def unshelve(self, shelf: dict[str, Any]) -> str:
        """Deregisters a shelf image and deletes its snapshots (what bills); its id."""
        try:
            self.ec2.deregister_image(ImageId=shelf["image_id"])
        except botocore.exceptions.ClientError as e:
            if _code(e) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                raise
        for snapshot_id in shelf.get("snapshot_ids") or []:
            self._delete_snapshot(snapshot_id)
        return str(shelf["image_id"])

    def _delete_snapshot(self, snapshot_id: str) -> bool:
        """Deletes a snapshot, retrying while AWS still counts it as used by an image being
        deregistered (InvalidSnapshot.InUse); False when already gone."""
        return self._delete_while(lambda: self.ec2.delete_snapshot(SnapshotId=snapshot_id),
                                  ("InvalidSnapshot.NotFound",), "InvalidSnapshot.InUse", 0.5,
                                  f"the snapshot {snapshot_id}")

    def _delete_while(self, delete: Any, gone: tuple[str, ...], busy: str, delay: float, what: str) -> bool:
        """Calls ``delete`` until it succeeds (True), AWS says the resource is ``gone`` (False),
        or another error than ``busy`` (or ``busy`` after the wait) ends it with a LabFailure;
        pauses growing from ``delay`` to 6 s."""
        deadline = time.monotonic() + self.p["wait_timeout"]
        while True:
            try:
                delete()
                return True
            except botocore.exceptions.ClientError as e:
                code = _code(e)
                if code in gone:
                    return False
                if code != busy or time.monotonic() > deadline:
                    raise LabFailure(f"Could not delete {what}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 6)

    def _cancel(self, request_ids: list[str]) -> list[str]:
        """Cancels the Spot Instance requests; returns those it cancelled (gone ones are skipped)."""
        try:
            answer = self.ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=request_ids)
        except botocore.exceptions.ClientError as e:
            if _code(e) != "InvalidSpotInstanceRequestID.NotFound":
                raise
            if len(request_ids) == 1:
                return []  # gone already
            return [r for one in request_ids for r in self._cancel([one])]  # the others, one by one
        return [r["SpotInstanceRequestId"] for r in answer.get("CancelledSpotInstanceRequests", [])]

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
        return self._delete_while(lambda: self.ec2.delete_security_group(GroupId=group_id),
                                  ("InvalidGroup.NotFound", "InvalidGroupId.NotFound"), "DependencyViolation", 1.0,
                                  f"the security group {group_id}")


def _summary(instance: dict[str, Any]) -> dict[str, Any]:
    launch_time = instance.get("LaunchTime")
    return {
        "id": instance["InstanceId"],
        "state": instance["State"]["Name"],
        "type": instance["InstanceType"],
        "zone": instance["Placement"]["AvailabilityZone"],
        "image": instance.get("ImageId", ""),
        "launch_time": launch_time.isoformat() if hasattr(launch_time, "isoformat") else str(launch_time or ""),
        "market": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
    }


LAB_OPTIONS: dict[str, Any] = {
    "lab": {"type": "str", "required": True},
    "region": {"type": "str"},
    "instance": {"type": "dict", "default": {}},
    "addresses": {"type": "list", "elements": "dict", "default": []},
    "instances": {"type": "list", "elements": "dict", "default": []},
    "orphans": {"type": "list", "elements": "dict", "default": []},
    "shelves": {"type": "list", "elements": "dict", "default": []},
    "instance_types": {"type": "list", "elements": "str", "default": []},
    "spot_instance_types": {"type": "list", "elements": "str", "default": []},
    "spot_max_price": {"type": "str", "default": ""},
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
    "start_capacity_wait": {"type": "float", "default": 0},
    "start_change_type": {"type": "bool", "default": False},
    "modify": {"type": "dict", "options": {
        "instance_type": {"type": "str"},
        "volume_size": {"type": "int"},
    }},
}


def converge(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Brings one lab's instance to running at its address (with the changes O(modify) asks
    for first); raises LabFailure (with the attempts made so far in .attempts, what it left
    that bills in .left and the changes made in .notes) when it cannot."""
    host = LabHost(params, region)
    known = params["instance"] or {}
    modify = params["modify"] or {}
    launched = started = False
    try:
        if not known:
            instance_id = host.launch()["InstanceId"]
            launched = True
        else:
            instance_id = known["id"]
            # An address stays with a stopped instance: if this run fails, it still has it.
            mine = [a for a in params["addresses"] if a.get("instance_id") == instance_id]
            if mine:
                host.address_now = {"public_ip": mine[0]["public_ip"], "allocation_id": mine[0]["allocation_id"],
                                    "associated": True}
            if modify.get("volume_size"):
                host.grow_volume(known, modify["volume_size"])
            if known["state"] in ("stopped", "stopping"):
                if known["state"] == "stopping":
                    host.ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id])
                if modify.get("instance_type"):
                    known = host.change_type({**known, "state": "stopped"}, modify["instance_type"])
                host.start(known)
                started = True
            elif modify.get("instance_type"):
                host.change_type(known, modify["instance_type"])  # refused unless it runs that type
        instance = host.wait_running(instance_id)
        address, associated = host.associate(instance_id)
        if params["shelves"]:  # brought back from its shelf: the image and snapshots bill no longer
            gone = [LabRemoval(params, region).unshelve(shelf) for shelf in params["shelves"]]
            host.notes.append(f"Brought back from its shelf ({', '.join(gone)}): the image and its snapshots are "
                              "deleted now that the instance runs from a copy of the disk.")
    except (LabFailure, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        failure = _failure_of(e, "Could not run the lab's instance")
        failure.attempts = host.attempts  # type: ignore[attr-defined]
        failure.notes = host.notes  # type: ignore[attr-defined]
        failure.left = host.left(launched, started)  # type: ignore[attr-defined]
        # Then what it changed before failing, and last what is left that bills.
        said = " ".join([*host.notes, left_sentence(failure.left, launched, started)]).strip()  # type: ignore[attr-defined]
        if said:
            failure.msg = f"{failure.msg.rstrip()} {said}"
        raise failure from (None if e is failure else e)
    return {"changed": launched or started or associated or bool(host.notes), "instance": _summary(instance),
            "address": address, "attempts": host.attempts, "launched": launched, "started": started,
            "security_group_id": params["security_group_id"] or "", "notes": host.notes}


def left_sentence(left: dict[str, dict[str, Any]], launched: bool, started: bool) -> str:
    """What a failed run left that bills, and what to run next: the end of its message."""
    instance, address = left["instance"], left["address"]
    if not instance and not address:
        return ""
    if instance:
        state = {"pending": "starting"}.get(instance.get("state", ""), instance.get("state") or "running")
        at = f" at Elastic IP {address['public_ip']}" if address.get("associated") else ""
        said = (f"Left {state}: {instance['id']} ({instance['type']}, {instance['zone']}){at}, billed by the hour "
                "until stopped")
        if not address:
            said += "; no Elastic IP yet."
        elif not address.get("associated"):
            said += f"; its Elastic IP {address['public_ip']} (billed by the hour too) is not associated with it yet."
        else:
            said += "."
    else:
        said = f"Left: the Elastic IP {address['public_ip']}, billed by the hour until released."
    if launched:
        return f"{said} Run launch.yml again to finish (it reuses the instance), or teardown.yml to remove it."
    if started:
        return f"{said} Run start.yml again to finish, or stop.yml to stop it."
    return f"{said} Run launch.yml again to finish (it reuses the address), or teardown.yml to remove the lab."


def plan(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Check mode, O(state=present): what converge() would do, in plain sentences, with no
    call that changes anything (a root volume's size is read for O(modify)); raises
    LabFailure where converge() would fail before changing anything."""
    host = LabHost(params, region, check_mode=True)
    known = params["instance"] or {}
    modify = params["modify"] or {}
    address: dict[str, str] = {}
    try:
        if not known:
            host.plan_launch()
            host.associate("")
        else:
            instance_id = known["id"]
            if modify.get("volume_size"):
                host.grow_volume(known, modify["volume_size"])
            if known["state"] in ("stopped", "stopping"):
                if known["state"] == "stopping":
                    host.planned.append(f"wait for {instance_id} to stop")
                if modify.get("instance_type"):
                    host.change_type({**known, "state": "stopped"}, modify["instance_type"])
                host.planned.append(f"start {instance_id}")
            elif modify.get("instance_type"):
                host.change_type(known, modify["instance_type"])
            address, _rest = host.associate(instance_id)
    except (LabFailure, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        failure = _failure_of(e, "Could not plan the lab's run")
        failure.attempts = []  # type: ignore[attr-defined]
        raise failure from (None if e is failure else e)
    summary = {k: known.get(k, "") for k in ("id", "state", "type", "zone", "image", "launch_time")} if known else {}
    return {"changed": bool(host.planned), "instance": summary, "address": address, "attempts": [],
            "launched": False, "started": False, "security_group_id": params["security_group_id"] or "",
            "notes": [], "planned": host.planned}


def plan_removal(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Check mode, O(state=absent): what remove() would remove, in its order; nothing removed."""
    planned = [f"release {a['public_ip']}" for a in params["addresses"]]
    planned += [f"cancel spot request {i['spot_request_id']}" for i in params["instances"]
                if i.get("spot_request_id") and (i.get("spot_request") or {}).get("state") != "cancelled"]
    planned += [f"terminate {i['id']}" for i in params["instances"]]
    planned += [f"deregister the shelf {s['image_id']} and delete its snapshots" for s in params["shelves"]]
    if params["security_group_id"]:
        planned.append(f"delete security group {params['security_group_id']}")
    if params["key_name"]:
        planned.append(f"delete key pair {params['key_name']}")
    for orphan in params["orphans"]:
        kind = orphan.get("kind")
        if kind not in ("elastic_ip", "security_group", "key_pair", "snapshot"):
            failure = LabFailure(f"Unknown kind of left-over resource: {orphan!r}")
            failure.removed = nothing_removed()  # type: ignore[attr-defined]
            raise failure
        what = orphan.get("summary") or f"{kind} {orphan.get('detail', '')}"
        planned.append(f"remove the left-over {what}")
    return {"changed": bool(planned), "removed": nothing_removed(), "attempts": [], "planned": planned}


def remove(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Removes one lab's resources; raises LabFailure (with what was removed so far in
    .removed) when it cannot."""
    removal = LabRemoval(params, region)
    try:
        return removal.run()
    except LabFailure as e:
        e.removed = removal.removed  # type: ignore[attr-defined]
        raise
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        failure = _failure_of(e, f"Could not remove lab {params['lab']}")
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


# --- stop: a class is one StopInstances per region, not one call per lab
STOPPABLE = ("pending", "running", "stopping")


def stop_labs(module: AnsibleAWSModule, given: list[dict[str, Any]], check_mode: bool) -> dict[str, dict[str, Any]]:
    """Stops every lab's O(instance) that runs (or is stopping), one StopInstances per region,
    then waits for all of them at once. Each lab's part: changed (its instance was running),
    instance (the last state seen), planned (check mode). A region that fails fails its labs."""
    todo, invalid = check_labs(given, LAB_OPTIONS)
    result = {name: {"failed": True, "changed": False, "msg": msg} for name, msg in invalid.items()}
    by_region: dict[str, list[dict[str, Any]]] = {}
    for lab in todo:
        instance = lab["instance"] or {}
        if instance.get("state") not in STOPPABLE:
            result[lab["lab"]] = {"failed": False, "changed": False, "instance": instance, "planned": []}
            continue
        by_region.setdefault(lab["region"] or "", []).append(lab)
    for region, labs in by_region.items():
        if check_mode:
            for lab in labs:
                running = lab["instance"]["state"] != "stopping"
                result[lab["lab"]] = {"failed": False, "changed": running, "instance": lab["instance"],
                                      "planned": [f"stop {lab['instance']['id']}"] if running else []}
            continue
        try:
            states = _stop_region(Region(module, region or None), labs)
        except (LabFailure, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            failure = e if isinstance(e, LabFailure) else _failure_of(e, "Could not stop the instances")
            for lab in labs:
                result[lab["lab"]] = {"failed": True, "changed": False, "msg": failure.msg}
            continue
        for lab in labs:
            instance = lab["instance"] | {"state": states.get(lab["instance"]["id"], "unknown")}
            result[lab["lab"]] = {"failed": False, "changed": lab["instance"]["state"] != "stopping",
                                  "instance": instance, "planned": []}
    return result


def _stop_region(region: Region, labs: list[dict[str, Any]]) -> dict[str, str]:
    """Stops the labs' instances of one region and waits until every one is stopped; the
    instances' last states by id."""
    ids = [lab["instance"]["id"] for lab in labs]
    to_stop = [lab["instance"]["id"] for lab in labs if lab["instance"]["state"] != "stopping"]
    if to_stop:
        region.ec2.stop_instances(InstanceIds=to_stop)
    deadline = time.monotonic() + max(lab["wait_timeout"] for lab in labs)
    delay = 0.2
    while True:
        found = region.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        states = {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}
        if all(states.get(i) in ("stopped", "terminated") for i in ids):
            return states
        if time.monotonic() > deadline:
            late = ", ".join(f"{i} ({states.get(i, 'unknown')})" for i in ids if states.get(i) != "stopped")
            raise LabFailure(f"Not stopped after {max(lab['wait_timeout'] for lab in labs)} s: {late}.")
        time.sleep(delay)
        delay = min(delay * 2, 5)


def _failed(e: LabFailure, state: str) -> dict[str, Any]:
    """One lab's part of the answer when it failed: with O(state=absent), what was removed
    before (nothing, for a lab that failed its check); else what it left that bills and the
    changes it made (a lab that launched an instance and then failed did change something)."""
    failed = {"failed": True, "changed": False, "msg": e.msg, "attempts": getattr(e, "attempts", [])}
    if state == "absent":
        removed = getattr(e, "removed", None) or nothing_removed()
        failed.update(removed=removed, changed=any(removed.values()))
    else:
        left = getattr(e, "left", None) or {"instance": {}, "address": {}}
        notes = getattr(e, "notes", None) or []
        failed.update(left=left, notes=notes, changed=bool(left["instance"] or left["address"] or notes))
    return failed


def _act(state: str, check_mode: bool) -> Any:
    if state == "absent":
        return plan_removal if check_mode else remove
    if state == "shelved":
        return plan_shelve if check_mode else shelve
    return plan if check_mode else converge


SHELF_TAG = "gpu_lab:shelf"


def shelf_name(lab: str, when: float) -> str:
    """An image name unique in the region: '<lab>-shelf-20261203-140501'."""
    return f"{lab}-shelf-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}"


def shelf_tags(params: dict[str, Any], known: dict[str, Any]) -> dict[str, str]:
    """The shelf's tags: the lab's, what its instance recorded (the type asked for, auto-stop...),
    and where it came from (its instance, type, zone and market)."""
    kept = {k: str(v) for k, v in (known.get("tags") or {}).items() if k.startswith("gpu_lab:")}
    return {**kept, **{k: str(v) for k, v in params["tags"].items()}, SHELF_TAG: "true",
            "gpu_lab:shelf_of": known["id"], "gpu_lab:shelf_type": known.get("type", ""),
            "gpu_lab:shelf_zone": known.get("zone", ""), "gpu_lab:shelf_market": known.get("market") or "on-demand",
            "Name": f"{params['lab']}-shelf"}


def plan_shelve(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """Check mode, O(state=shelved): what shelve() would do; nothing done."""
    known = params["instance"] or {}
    if not known:
        return {"changed": False, "planned": [], "shelf": (params["shelves"] or [{}])[0], "removed": nothing_removed()}
    planned = [f"stop {known['id']}"] if known.get("state") != "stopped" else []
    planned.append(f"make an image of {known['id']} (no reboot) and wait until it is available")
    planned += [f"release {a['public_ip']}" for a in params["addresses"]]
    if known.get("spot_request_id"):
        planned.append(f"cancel spot request {known['spot_request_id']}")
    planned.append(f"terminate {known['id']}")
    return {"changed": True, "planned": planned, "shelf": {}, "removed": nothing_removed()}


def shelve(params: dict[str, Any], region: Region) -> dict[str, Any]:
    """O(state=shelved): the lab's instance (stopped first if it runs) as an image of its disk
    (CreateImage without reboot, image and snapshots tagged as the lab's shelf), then, once the
    image is available, its spot request cancelled, the instance terminated and its Elastic IP
    released: what is left bills only the snapshots. A lab already shelved: nothing to do. An
    image made by an earlier run that stopped half-way is used, not made again."""
    known = params["instance"] or {}
    if not known:
        return {"changed": False, "shelf": (params["shelves"] or [{}])[0], "removed": nothing_removed()}
    ec2 = region.ec2
    try:
        if known.get("state") != "stopped":
            _stop_region(region, [{"instance": known, "wait_timeout": params["wait_timeout"]}])
        made = next((dict(s) for s in params["shelves"]
                     if (s.get("tags") or {}).get("gpu_lab:shelf_of") == known["id"]), None)
        if made is None:
            tags = [{"Key": k, "Value": v} for k, v in shelf_tags(params, known).items()]
            image_id = ec2.create_image(InstanceId=known["id"], Name=shelf_name(params["lab"], time.time()),
                                        Description=f"gpu_lab shelf of lab {params['lab']} ({known['id']})",
                                        NoReboot=True, TagSpecifications=[{"ResourceType": "image", "Tags": tags},
                                                                          {"ResourceType": "snapshot", "Tags": tags}]
                                        )["ImageId"]
            made = {"image_id": image_id}
        image = _image_available(ec2, made["image_id"], params["wait_timeout"])
        removal = LabRemoval({**params, "instances": [known], "security_group_id": "", "key_name": "",
                              "orphans": [], "shelves": []}, region)
        removed = removal.run()["removed"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        raise _failure_of(e, f"Could not shelve lab {params['lab']}") from e
    shelf = {"image_id": image["ImageId"], "name": image.get("Name", ""),
             "creation_date": image.get("CreationDate", ""),
             "snapshot_ids": [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
                              if m.get("Ebs", {}).get("SnapshotId")],
             "size_gib": sum(int(m["Ebs"].get("VolumeSize") or 0) for m in image.get("BlockDeviceMappings", [])
                             if "Ebs" in m)}
    return {"changed": True, "shelf": shelf, "removed": removed}


def _image_available(ec2: Any, image_id: str, timeout: float) -> dict[str, Any]:
    """Waits until the image is available (AWS takes minutes for a 100 GiB disk); the image."""
    deadline = time.monotonic() + timeout
    delay = 1.0
    while True:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        state = images[0].get("State", "") if images else "missing"
        if state == "available":
            return images[0]
        if state in ("failed", "error", "invalid", "deregistered", "missing"):
            raise LabFailure(f"The image {image_id} of the lab's disk is {state}: nothing was terminated; run "
                             "shelve.yml again.")
        if time.monotonic() > deadline:
            raise LabFailure(f"The image {image_id} of the lab's disk was not available after {int(timeout)} s "
                             "(it is still being made): nothing was terminated; run shelve.yml again later.")
        time.sleep(delay)
        delay = min(delay * 2, 15)


def converge_labs(module: AnsibleAWSModule, given: list[dict[str, Any]],
                  state: str = "present", check_mode: bool = False) -> dict[str, dict[str, Any]]:
    """Every lab of O(labs) side by side (brought up, or removed with O(state=absent); in
    check mode, only planned), sharing one set of clients per region. One lab's failure is
    its own: the others go on."""
    todo, invalid = check_labs(given, LAB_OPTIONS)
    result = {name: _failed(LabFailure(msg), state) for name, msg in invalid.items()}
    if state == "absent":
        _orphans_once(todo)
    regions: dict[str, Region] = {}
    for lab in todo:
        key = lab["region"] or ""
        if key not in regions:
            regions[key] = Region(module, lab["region"])

    act = _act(state, check_mode)

    def one(lab: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
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
            "state": {"type": "str", "choices": ["present", "absent", "stopped", "shelved"], "default": "present"},
        },
        required_one_of=[["lab", "labs"]],
        mutually_exclusive=[["lab", "labs"]],
        supports_check_mode=True,
    )
    try:
        timeouts()  # a bad GPU_LAB_AWS_*_TIMEOUT is said once, before any call
    except ValueError as e:
        module.fail_json(msg=str(e))
    state = module.params["state"]
    if state == "stopped":
        given = module.params["labs"]
        if given is None:
            given = [{k: module.params.get(k) for k in LAB_OPTIONS}]
        labs = stop_labs(module, given, module.check_mode)
        if module.params["labs"] is None:
            one = next(iter(labs.values()))
            if one.get("failed"):
                module.fail_json(msg=one["msg"])
            module.exit_json(**one)
        module.exit_json(changed=any(r.get("changed") for r in labs.values()), labs=labs)
    if module.params["labs"] is not None:
        labs = converge_labs(module, module.params["labs"], state, module.check_mode)
        module.exit_json(changed=any(r.get("changed") for r in labs.values()), labs=labs)
    params = {k: module.params.get(k) for k in LAB_OPTIONS}
    try:
        result = _act(state, module.check_mode)(params, Region(module, None))
    except LabFailure as e:
        failed = _failed(e, state)
        module.fail_json(**{k: v for k, v in failed.items() if k != "failed"})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
