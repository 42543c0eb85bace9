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
  - With O(wanted), compares the lab's current settings with its instance (RV(drift)) - what
    M(csdl.gpu_lab.lab_host) can apply (its O(csdl.gpu_lab.lab_host#module:modify)) and what it
    must refuse - so a changed setting is never silently ignored.
  - With O(other_regions), also looks for the lab's instances in those regions (RV(elsewhere)),
    one call per extra region for all the labs that ask.
  - Bounded waits - every AWS call has a 10 s connect and a 30 s read timeout, and a call that
    timed out is tried twice at most, so an endpoint that accepts connections and never answers
    fails the lookup in about a minute (at most 2 x (10 + 30) s, plus a second or two of
    backoff) with one sentence naming the endpoint. The environment variables
    E(GPU_LAB_AWS_CONNECT_TIMEOUT) and E(GPU_LAB_AWS_READ_TIMEOUT) (seconds, up to 300) change the
    two timeouts (the bound is then 2 x their sum); O(aws_config) still overrides them.
  - Supports check mode - it never changes anything, and the answer is the same.
author: gpu_lab developers (@csdl)
options:
  lab:
    description:
      - The lab's name (value of the C(gpu_lab:lab) tag).
      - One of O(lab) and O(labs) is required.
    type: str
  labs:
    description:
      - Many labs at once. Each element takes O(lab) (required), O(key_name),
        O(security_group_name), O(instance_types), O(image), O(wanted), O(other_regions) and
        C(region) (default O(region)).
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
      - When the lab has no live instance, also resolve the image a new one would use, for the
        architecture of its candidate types (the first that exists; C(g5g) is C(arm64)) - the
        pinned O(image.image_id); else the newest image of the Deep Learning AMI line
        O(image.dlami), read from AWS's public SSM parameters under
        C(/aws/service/deeplearning/ami/<architecture>/) (one paged GetParametersByPath per
        region and architecture for all the labs); else, when SSM is refused (AccessDenied), the
        newest image owned by O(image.owners) whose name matches O(image.name_pattern) and of
        that architecture (of the newest supported PyTorch line among them). An existing instance
        is never given another image, so a lab with an instance makes none of these calls (but
        see O(volumes)).
    type: dict
    suboptions:
      image_id:
        description: A pinned AMI id.
        type: str
        default: ''
      dlami:
        description:
          - The Deep Learning AMI line, such as C(oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04),
            or C(latest) (also when empty) for the newest supported PyTorch line of the
            architecture - the highest PyTorch version, the newer Ubuntu release on a tie; a line
            whose patch support ended (PyTorch 2.7 and older) is never the latest.
        type: str
        default: ''
        version_added: 1.0.0
      name_pattern:
        description: The fallback name pattern.
        type: str
        default: ''
      owners:
        description: Owners of the fallback images.
        type: list
        elements: str
        default: [amazon]
  wanted:
    description:
      - The lab's current settings, compared with its instance when it has one (RV(drift)).
      - With O(wanted.volume_size), the instance's root volume is described (one call per region
        for all the labs that give it, the same call as O(volumes)).
    type: dict
    version_added: 0.3.0
    suboptions:
      instance_type:
        description:
          - The instance type set now. Compared with the type the lab asked for at launch (the
            instance's C(gpu_lab:instance_type) tag; without that tag, the type it runs), not with
            the type it runs, which may be a fallback.
        type: str
      volume_size:
        description: The root volume size set now, in GiB.
        type: int
  other_regions:
    description:
      - Regions where the lab's live instances (by its C(gpu_lab:lab) tag) are also looked for,
        such as where it was launched before (RV(elsewhere)). Its own region is left out.
    type: list
    elements: str
    default: []
    version_added: 0.3.0
  quota:
    description:
      - The on-demand vCPU quotas (Service Quotas, service code C(ec2)) of the lab's candidate
        types (RV(quota), RV(quota_requests)). A class asks once per region for all its labs.
    type: dict
    version_added: 1.0.0
    suboptions:
      codes:
        description: The quota codes of the lab's candidate types (such as C(L-DB2E81BA) for G and VT).
        type: list
        elements: str
        default: []
      check:
        description:
          - With no live instance, each code's applied value (one GetServiceQuota per code and
            region) and the vCPUs running (pending or running) per instance type in the region
            (one DescribeInstances per region), before a launch creates anything.
        type: bool
        default: false
      requests:
        description:
          - The increase requests still open (PENDING, CASE_OPENED) for each code (one
            ListRequestedServiceQuotaChangeHistoryByQuota per code and region).
        type: bool
        default: false
  volumes:
    description:
      - Also describe the lab instance's EBS volumes (size, type), for the cost view, and its image
        with what is newer (RV(image)) - one DescribeImages and the SSM path read of the
        instances' architectures, per region for all the labs.
    type: bool
    default: false
  orphans:
    description:
      - Also look for resources tagged by the collection (any lab of the region) that belong to
        no live instance of their lab - an Elastic IP, security group or key pair left behind.
    type: bool
    default: false
  prices:
    description:
      - Also ask the AWS Price List API (GetProducts, at its endpoint in us-east-1) for the
        on-demand prices of each region given (RV(prices)) - the Linux hourly price of
        C(instance_types) (one call for all of them), and with C(storage) gp3 storage per
        GB-month and an in-use public IPv4 address per hour (one call each). The regions are
        asked side by side. With O(prices) alone, nothing else is looked up.
      - A region the API does not answer for (no permission, endpoint not reachable, timeout -
        at most 2 x (5 + 10) s) gets C(failed) and C(msg) under RV(prices); the module does not fail.
    type: list
    elements: dict
    version_added: 1.0.0
    suboptions:
      region:
        description: The region whose prices are asked for.
        type: str
        required: true
      instance_types:
        description: The instance types whose hourly prices are asked for.
        type: list
        elements: str
        default: []
      storage:
        description: Also ask for gp3 storage and public IPv4 prices.
        type: bool
        default: true
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

- name: Find every lab of a class in one call (students in two regions)
  csdl.gpu_lab.lab_info:
    region: us-east-1
    labs:
      - {lab: cs1-ana, key_name: cs1-ana-server, security_group_name: cs1-ana-ssh, instance_types: [g6.xlarge]}
      - {lab: cs1-bo, key_name: cs1-bo-server, security_group_name: cs1-bo-ssh, instance_types: [g6.xlarge]}
      - {lab: cs1-cy, region: eu-west-1, key_name: cs1-cy-server, security_group_name: cs1-cy-ssh}
    orphans: true
  register: class_labs
"""

RETURN = r"""
labs:
  description:
    - With O(labs), each lab's findings by lab name, with the other keys of this list (or
      C(failed) and C(msg)).
    - Without it, those keys are returned at the top level.
  returned: with O(labs)
  type: dict
  sample: {csdl-ada: {instance: {}, instance_count: 0, instances: [], addresses: [], security_group: {},
           key_pair: {name: csdl-ada-server, id: key-0abc, fingerprint: 'ab:cd:ef', type: ed25519}}}
  contains:
    failed:
      description: Whether this lab's look failed (the other labs' findings are still there).
      type: bool
      returned: when the lab failed
      sample: true
    msg:
      description: Why this lab's look failed.
      type: str
      returned: when the lab failed
      sample: The AWS identity in use may not call ec2:DescribeInstances in us-east-1.
instance:
  description:
    - The lab's live instance (pending, running, stopping or stopped), or an empty dict.
  returned: always
  type: dict
  sample: {id: i-0abc, state: running, type: g6.xlarge, zone: us-east-1a, image: ami-0abc, architecture: x86_64,
           launch_time: '2026-09-01T10:00:00+00:00', public_ip: 203.0.113.5, key_name: csdl-server,
           subnet_id: subnet-0abc, security_groups: [sg-0abc], root_volume_ids: [vol-0abc],
           root_device_name: /dev/sda1, root_volume_id: vol-0abc, state_reason: '',
           tags: {'gpu_lab:lab': csdl, 'gpu_lab:instance_type': g6.xlarge, Name: csdl-server}}
  contains: &instance
    id:
      description: The instance ID.
      type: str
      sample: i-0abc
    state:
      description: C(pending), C(running), C(stopping) or C(stopped).
      type: str
      sample: running
    type:
      description: The instance type it runs as now.
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
    architecture:
      description: What it runs, C(x86_64) or C(arm64).
      type: str
      sample: x86_64
    launch_time:
      description: When it last started (ISO 8601).
      type: str
      sample: '2026-09-01T10:00:00+00:00'
    public_ip:
      description: Its public IPv4 address, empty when stopped.
      type: str
      sample: 203.0.113.5
    key_name:
      description: The key pair it was launched with.
      type: str
      sample: csdl-server
    subnet_id:
      description: Its subnet.
      type: str
      sample: subnet-0abc
    security_groups:
      description: The IDs of its security groups.
      type: list
      elements: str
      sample: [sg-0abc]
    root_volume_ids:
      description: Every EBS volume attached at launch.
      type: list
      elements: str
      sample: [vol-0abc]
    root_device_name:
      description: Its root device.
      type: str
      sample: /dev/sda1
    root_volume_id:
      description: The EBS volume at the root device, or empty.
      type: str
      sample: vol-0abc
    state_reason:
      description: Why it is in its state (when a stopped instance stopped), or empty.
      type: str
      sample: User initiated (2026-11-26 10:00:00 GMT)
    state_reason_code:
      description: EC2's code of its last state change, e.g. C(Server.SpotInstanceShutdown) when AWS
        interrupted a Spot Instance, C(Client.UserInitiatedShutdown); empty when none.
      type: str
      sample: Client.UserInitiatedShutdown
    market:
      description: C(spot) for a Spot Instance, else C(on-demand) (what the instance is, whatever the settings say).
      type: str
      sample: on-demand
    spot_request_id:
      description: The ID of the Spot Instance request of a Spot Instance, or empty.
      type: str
      sample: ''
    spot_request:
      description:
        - The Spot Instance request of a Spot Instance (empty dict otherwise) - C(id), C(state) (C(active),
          C(open) while AWS holds it stopped after an interruption, C(disabled) after the owner stopped it,
          C(cancelled)), C(status) (e.g. C(instance-stopped-no-capacity)), C(type), C(interruption_behavior),
          C(updated).
      type: dict
      sample: {}
    tags:
      description: Its tags; C(gpu_lab:instance_type) is the type asked for at launch.
      type: dict
      sample: {'gpu_lab:lab': csdl, 'gpu_lab:instance_type': g6.xlarge}
instance_count:
  description: How many live instances carry the lab's tag (more than 1 means a duplicate).
  returned: always
  type: int
  sample: 1
instances:
  description: Every live instance of the lab, oldest first (each with the keys of RV(instance)).
  returned: always
  type: list
  elements: dict
  sample: [{id: i-0abc, state: running, type: g6.xlarge, zone: us-east-1a}]
  contains: *instance
addresses:
  description: The lab's Elastic IPs.
  returned: always
  type: list
  elements: dict
  sample: [{public_ip: 203.0.113.5, allocation_id: eipalloc-0abc, association_id: eipassoc-0abc,
            instance_id: i-0abc}]
  contains:
    public_ip:
      description: The address.
      type: str
      sample: 203.0.113.5
    allocation_id:
      description: Its allocation ID.
      type: str
      sample: eipalloc-0abc
    association_id:
      description: Its association, empty when it is not associated.
      type: str
      sample: eipassoc-0abc
    instance_id:
      description: The instance it is associated with, or empty.
      type: str
      sample: i-0abc
security_group:
  description: The lab's security group, or an empty dict.
  returned: always
  type: dict
  sample: {group_id: sg-0abc, vpc_id: vpc-0abc, ingress: [{protocol: tcp, from_port: 22, to_port: 22,
           cidrs: [203.0.113.7/32], ipv6_cidrs: [], groups: 0}], tags: {'gpu_lab:lab': csdl}}
  contains:
    group_id:
      description: Its ID.
      type: str
      sample: sg-0abc
    vpc_id:
      description: Its VPC.
      type: str
      sample: vpc-0abc
    ingress:
      description: Its ingress rules.
      type: list
      elements: dict
      sample: [{protocol: tcp, from_port: 22, to_port: 22, cidrs: [203.0.113.7/32], ipv6_cidrs: [], groups: 0}]
      contains:
        protocol:
          description: The IP protocol (C(tcp), or C(-1) for all).
          type: str
          sample: tcp
        from_port:
          description: The first port.
          type: int
          sample: 22
        to_port:
          description: The last port.
          type: int
          sample: 22
        cidrs:
          description: The IPv4 ranges it admits.
          type: list
          elements: str
          sample: [203.0.113.7/32]
        ipv6_cidrs:
          description: The IPv6 ranges it admits.
          type: list
          elements: str
          sample: []
        groups:
          description: How many security groups it admits.
          type: int
          sample: 0
    tags:
      description: Its tags.
      type: dict
      sample: {'gpu_lab:lab': csdl}
key_pair:
  description: The lab's key pair, or an empty dict.
  returned: always
  type: dict
  sample: {name: csdl-server, id: key-0abc, fingerprint: 'ab:cd:ef:01', type: ed25519}
  contains:
    name:
      description: Its name.
      type: str
      sample: csdl-server
    id:
      description: Its ID.
      type: str
      sample: key-0abc
    fingerprint:
      description: Its fingerprint as EC2 gives it.
      type: str
      sample: 'ab:cd:ef:01'
    type:
      description: C(ed25519) or C(rsa).
      type: str
      sample: ed25519
instance_types:
  description: Each described instance type, in the order asked.
  returned: always
  type: list
  elements: dict
  sample: [{name: g6.xlarge, exists: true, vcpus: 4, gpus: 1 x NVIDIA L4 (22 GiB), gpu_count: 1,
            architectures: [x86_64]}]
  contains:
    name:
      description: The instance type.
      type: str
      sample: g6.xlarge
    exists:
      description: Whether the region offers it.
      type: bool
      sample: true
    vcpus:
      description: Its vCPUs.
      type: int
      sample: 4
    gpus:
      description: Its GPUs in words.
      type: str
      sample: 1 x NVIDIA L4 (22 GiB)
    gpu_count:
      description: The GPUs it has, 0 for none.
      type: int
      sample: 1
    architectures:
      description: What it runs; empty when it does not exist.
      type: list
      elements: str
      sample: [x86_64]
image:
  description:
    - With O(image) and no live instance, the image a new instance would use, or an empty dict
      when none was found.
    - With O(volumes) and a live instance, the instance's own image (RV(image.source) is
      C(instance); RV(image.name) and RV(image.creation_date) are empty when the image is gone).
  returned: always
  type: dict
  sample: {image_id: ami-0abc, name: Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260822,
           creation_date: '2026-08-22T00:00:00.000Z', root_device_name: /dev/sda1, root_size_gib: 100,
           architecture: x86_64, source: ssm, line: oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04,
           newer: '', note: ''}
  contains:
    image_id:
      description: The AMI ID.
      type: str
      sample: ami-0abc
    name:
      description: The AMI's name.
      type: str
      sample: Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 20260822
    creation_date:
      description: When it was made.
      type: str
      sample: '2026-08-22T00:00:00.000Z'
    root_device_name:
      description: Its root device.
      type: str
      sample: /dev/sda1
    root_size_gib:
      description: The size of its root snapshot in GiB.
      type: int
      sample: 100
    architecture:
      description: C(x86_64) or C(arm64).
      type: str
      sample: x86_64
    source:
      description: How it was found - C(pinned), C(ssm), C(name) or C(instance).
      type: str
      sample: ssm
    line:
      description: The DLAMI line it belongs to, empty when not known.
      type: str
      sample: oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04
    newer:
      description:
        - One sentence when a newer image of its line, a newer supported line, or the end of its
          line's support is known, else empty.
      type: str
      sample: ''
    note:
      description: Why it was found by name, or why what is newer is not known, else empty.
      type: str
      sample: ''
volumes:
  description: With O(volumes), the lab instance's EBS volumes.
  returned: always
  type: list
  elements: dict
  sample: [{id: vol-0abc, size_gib: 100, type: gp3, encrypted: false}]
  contains:
    id:
      description: The volume ID.
      type: str
      sample: vol-0abc
    size_gib:
      description: Its size in GiB.
      type: int
      sample: 100
    type:
      description: Its volume type.
      type: str
      sample: gp3
    encrypted:
      description: Whether it is encrypted.
      type: bool
      sample: false
orphans:
  description: With O(orphans), what no live lab uses.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: security_group, id: sg-0abc, lab: csdl, detail: csdl-ssh, summary: security group csdl-ssh of lab csdl}
  contains:
    kind:
      description: C(elastic_ip), C(security_group), C(key_pair) or C(snapshot) (a shelf's snapshot whose image is
        gone).
      type: str
      sample: security_group
    id:
      description: Its ID (an allocation, group or key pair ID).
      type: str
      sample: sg-0abc
    lab:
      description: The lab its C(gpu_lab:lab) tag names.
      type: str
      sample: csdl
    detail:
      description: Its public IP, group name or key name.
      type: str
      sample: csdl-ssh
    summary:
      description: The same in words.
      type: str
      sample: security group csdl-ssh of lab csdl
drift:
  description:
    - With O(wanted) and a live instance, how the settings differ from the lab that exists;
      empty lists and dict otherwise.
  returned: always
  type: dict
  version_added: 0.3.0
  sample: {apply: {volume_size: 200}, refuse: [], notes: ["Lab csdl's file system takes its disk's new size
           (200 GiB, from 100) at the next boot, or at once with `sudo growpart` and `sudo resize2fs` ..."]}
  contains:
    apply:
      description:
        - What M(csdl.gpu_lab.lab_host) can change (pass it as its
          O(csdl.gpu_lab.lab_host#module:modify)) - C(volume_size) (bigger than the root volume now;
          gp3 grows online) and C(instance_type) (another type than asked for at launch, with the
          instance stopped or stopping; or the type it already runs, when only the record changes).
      type: dict
      sample: {volume_size: 200}
    refuse:
      description:
        - One sentence per change AWS cannot make as things are (a smaller volume, another type
          while the instance runs), saying what to do.
      type: list
      elements: str
      sample: []
    notes:
      description:
        - What applying means beyond what lab_host reports in its
          RV(csdl.gpu_lab.lab_host#module:notes) (the file system takes a grown disk at the next boot).
      type: list
      elements: str
      sample: []
prices:
  description:
    - With O(prices), each region's prices by region name, each with the keys below; or C(failed)
      and C(msg) (why the API gave no answer).
  returned: with O(prices)
  type: dict
  version_added: 1.0.0
  sample: {eu-west-1: {hourly_usd: {g6.xlarge: 0.8976}, gp3_gib_month_usd: 0.088, public_ipv4_hour_usd: 0.005,
           calls: 3}}
  contains:
    hourly_usd:
      description: Instance type to USD per hour, null for a type the Price List has no price for there.
      type: dict
      sample: {g6.xlarge: 0.8976}
    gp3_gib_month_usd:
      description: USD per GiB-month of gp3 storage (with C(storage)).
      type: float
      sample: 0.088
    public_ipv4_hour_usd:
      description: USD per hour of a public IPv4 address (with C(storage)).
      type: float
      sample: 0.005
    calls:
      description: The GetProducts calls made.
      type: int
      sample: 3
elsewhere:
  description:
    - With O(other_regions), each live instance of the lab found in those regions, oldest first in
      each region; empty when none.
  returned: always
  type: list
  elements: dict
  version_added: 0.3.0
  sample: [{region: us-west-2, instance: {id: i-0def, state: running, type: g6.xlarge}}]
  contains:
    region:
      description: The region it is in.
      type: str
      sample: us-west-2
    instance:
      description: The instance, with the keys of RV(instance).
      type: dict
      sample: {id: i-0def, state: running, type: g6.xlarge}
      contains: *instance
quota:
  description:
    - With O(quota.check) and no live instance, what the quotas leave. Empty otherwise.
  returned: always
  type: dict
  version_added: 1.0.0
  sample: {applied: {L-DB2E81BA: 0.0}, running_vcpus: {g4dn.xlarge: 4}, unavailable: ''}
  contains:
    applied:
      description: Each quota code's applied value in vCPUs, null when not known.
      type: dict
      sample: {L-DB2E81BA: 0.0}
    running_vcpus:
      description: The vCPUs running on demand per instance type in the region, any lab's or not.
      type: dict
      sample: {g4dn.xlarge: 4}
    running_spot_vcpus:
      description: The vCPUs running as Spot Instances per instance type in the region.
      type: dict
      sample: {}
    unavailable:
      description: Why Service Quotas could not be read, such as C(AccessDeniedException); empty when it could.
      type: str
      sample: ''
shelf:
  description:
    - The lab's newest shelf - the image shelve.yml (or an archiving teardown) made of its stopped instance, tagged
      C(gpu_lab:shelf) - with C(image_id), C(name), C(creation_date), C(state), C(root_device_name), C(size_gib),
      C(snapshot_ids), C(tags); empty when it has none. A lab with a shelf and no instance launches from it (RV(image)).
  returned: always
  type: dict
  version_added: 1.1.0
  sample: {image_id: ami-0abc, name: csdl-shelf-20261203-140501, creation_date: '2026-12-03T14:05:01.000Z',
           state: available, root_device_name: /dev/sda1, size_gib: 100, snapshot_ids: [snap-0abc],
           tags: {'gpu_lab:lab': csdl, 'gpu_lab:shelf': 'true'}}
  contains: &shelf
    image_id:
      description: The image of the lab's disk.
      type: str
      sample: ami-0abc
    name:
      description: Its name.
      type: str
      sample: csdl-shelf-20261203-140501
    creation_date:
      description: When AWS made it.
      type: str
      sample: '2026-12-03T14:05:01.000Z'
    state:
      description: C(pending) while AWS makes it, then C(available).
      type: str
      sample: available
    root_device_name:
      description: Its root device.
      type: str
      sample: /dev/sda1
    root_size_gib:
      description: The size of its root volume in GiB.
      type: int
      sample: 100
    architecture:
      description: What it runs, C(x86_64) or C(arm64).
      type: str
      sample: x86_64
    source:
      description: C(shelf).
      type: str
      sample: shelf
    size_gib:
      description: The size of all its volumes in GiB (at most what its snapshots bill).
      type: int
      sample: 100
    snapshot_ids:
      description: Its snapshots.
      type: list
      elements: str
      sample: [snap-0abc]
    tags:
      description: Its tags - the lab's, C(gpu_lab:shelf), and where it came from (C(gpu_lab:shelf_of),
        C(gpu_lab:shelf_type), C(gpu_lab:shelf_zone), C(gpu_lab:shelf_market)).
      type: dict
      sample: {'gpu_lab:lab': csdl, 'gpu_lab:shelf': 'true'}
shelves:
  description: Every shelf of the lab, newest first (each as RV(shelf)).
  returned: always
  type: list
  elements: dict
  version_added: 1.1.0
  sample: []
  contains: *shelf
spot_price:
  description:
    - With O(volumes) (the status view), the current spot price of the lab's instance type in its zone
      (DescribeSpotPriceHistory) - C(usd_per_hour), C(type), C(zone), C(at); empty without an instance
      or an answer.
  returned: always
  type: dict
  version_added: 1.1.0
  sample: {usd_per_hour: 0.3058, type: g6.xlarge, zone: us-east-1a, at: '2026-12-03T12:00:00+00:00'}
  contains:
    usd_per_hour:
      description: The spot price now, USD per hour.
      type: float
      sample: 0.3058
    type:
      description: The instance type.
      type: str
      sample: g6.xlarge
    zone:
      description: The zone.
      type: str
      sample: us-east-1a
    at:
      description: Since when AWS charges that price (ISO 8601).
      type: str
      sample: '2026-12-03T12:00:00+00:00'
quota_requests:
  description:
    - With O(quota.requests), the open increase requests of the lab's quota codes in its region;
      empty otherwise or when they cannot be read.
  returned: always
  type: list
  elements: dict
  version_added: 1.0.0
  sample: [{id: 0a1b2c, quota_code: L-DB2E81BA, quota_name: Running On-Demand G and VT instances,
            desired_value: 8.0, status: PENDING, created: '2026-09-01T10:00:00+00:00'}]
  contains:
    id:
      description: The request's ID.
      type: str
      sample: 0a1b2c
    quota_code:
      description: The quota asked about.
      type: str
      sample: L-DB2E81BA
    quota_name:
      description: Its name.
      type: str
      sample: Running On-Demand G and VT instances
    desired_value:
      description: The vCPUs asked for.
      type: float
      sample: 8.0
    status:
      description: C(PENDING) or C(CASE_OPENED).
      type: str
      sample: PENDING
    created:
      description: When it was asked (ISO 8601).
      type: str
      sample: '2026-09-01T10:00:00+00:00'
"""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import botocore.config
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.csdl.gpu_lab.plugins.module_utils import dlami, pricing
from ansible_collections.csdl.gpu_lab.plugins.module_utils.drift import drift
from ansible_collections.csdl.gpu_lab.plugins.module_utils.labs import check_labs
from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import (
    bounded,
    client_config,
    is_timeout,
    timeout_message,
    timeouts,
)

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
    root = i.get("RootDeviceName", "")
    return {
        "id": i["InstanceId"],
        "state": i["State"]["Name"],
        "type": i["InstanceType"],
        "zone": i["Placement"]["AvailabilityZone"],
        "image": i.get("ImageId", ""),
        "architecture": i.get("Architecture", ""),
        "launch_time": i["LaunchTime"].isoformat(),
        "public_ip": i.get("PublicIpAddress", ""),
        "key_name": i.get("KeyName", ""),
        "subnet_id": i.get("SubnetId", ""),
        # moto leaves SecurityGroups empty for an instance launched with a network
        # interface spec (AWS fills it): the primary interface's groups are the same.
        "security_groups": [g["GroupId"] for g in i.get("SecurityGroups") or
                            [g for n in i.get("NetworkInterfaces", [])[:1] for g in n.get("Groups", [])]],
        "root_volume_ids": [m["Ebs"]["VolumeId"] for m in i.get("BlockDeviceMappings", []) if "Ebs" in m],
        # The one volume a changed gpu_lab_volume_size is about (root_volume_ids lists them all).
        "root_device_name": root,
        "root_volume_id": next((m["Ebs"]["VolumeId"] for m in i.get("BlockDeviceMappings", [])
                                if "Ebs" in m and m.get("DeviceName") == root), ""),
        # "User initiated (2026-11-26 10:00:00 GMT)": when a stopped instance stopped.
        "state_reason": i.get("StateTransitionReason", ""),
        "state_reason_code": (i.get("StateReason") or {}).get("Code", ""),
        "market": "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
        "spot_request_id": i.get("SpotInstanceRequestId", ""),
        "spot_request": {},  # filled in by _spot_requests
        "tags": tags,
    }


def _spot_requests(ec2: Any, instances: list[dict[str, Any]]) -> None:
    """The Spot Instance request of each Spot Instance, into its ``spot_request``: one call."""
    ids = [i["spot_request_id"] for i in instances if i.get("spot_request_id")]
    if not ids:
        return
    described = {}
    for chunk in _chunks(ids):
        for r in ec2.describe_spot_instance_requests(SpotInstanceRequestIds=chunk)["SpotInstanceRequests"]:
            updated = (r.get("Status") or {}).get("UpdateTime")
            described[r["SpotInstanceRequestId"]] = {
                "id": r["SpotInstanceRequestId"], "state": r.get("State", ""),
                "status": (r.get("Status") or {}).get("Code", ""), "type": r.get("Type", ""),
                "interruption_behavior": r.get("InstanceInterruptionBehavior", ""),
                "updated": updated.isoformat() if hasattr(updated, "isoformat") else str(updated or "")}
    for i in instances:
        i["spot_request"] = described.get(i.get("spot_request_id", ""), {})


def _spot_prices(ec2: Any, instances: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The current spot price of each (type, zone) the instances run in: one call per type."""
    by_type: dict[str, set[str]] = {}
    for i in instances:
        by_type.setdefault(i["type"], set()).add(i["zone"])
    prices: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, zones in by_type.items():
        try:
            history = ec2.describe_spot_price_history(
                InstanceTypes=[kind], ProductDescriptions=["Linux/UNIX"],
                StartTime=dt.datetime.now(dt.timezone.utc),  # noqa: UP017 - modules run on Python 3.8 too
                Filters=[{"Name": "availability-zone", "Values": sorted(zones)}])["SpotPriceHistory"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            continue  # the status view shows what it can
        for h in history:
            key = (kind, h["AvailabilityZone"])
            when = h.get("Timestamp")
            if key not in prices:  # newest first
                prices[key] = {"usd_per_hour": float(h["SpotPrice"]), "zone": h["AvailabilityZone"], "type": kind,
                               "at": when.isoformat() if hasattr(when, "isoformat") else str(when or "")}
    return prices


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
        return {"name": name, "exists": False, "vcpus": 0, "gpus": "", "gpu_count": 0, "architectures": []}
    gpus = (described.get("GpuInfo") or {}).get("Gpus", [])
    return {
        "name": name,
        "exists": True,
        "vcpus": described.get("VCpuInfo", {}).get("DefaultVCpus", 0),
        # For the preflight checks: a type that cannot run the image's architecture (AWS refuses
        # it at RunInstances), or that has no GPU at all.
        "architectures": list((described.get("ProcessorInfo") or {}).get("SupportedArchitectures", [])),
        "gpu_count": sum(int(g.get("Count", 1)) for g in gpus),
        "gpus": ", ".join(
            f"{g.get('Count', 1)} x {g.get('Manufacturer', '')} {g.get('Name', '')} "
            f"({g.get('MemoryInfo', {}).get('SizeInMiB', 0) // 1024} GiB)"
            for g in gpus
        ),
    }


SSM_REFUSED = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")


def _ssm_lines(ssm: Any, architecture: str) -> tuple[dict[str, str] | None, str]:
    """The DLAMI lines AWS publishes for an architecture (line -> newest image id), read from
    the public SSM parameters (one paged call), or None and the reason when SSM is refused."""
    parameters = {}
    try:
        pages = ssm.get_paginator("get_parameters_by_path").paginate(
            Path=dlami.PATH.format(architecture=architecture), Recursive=True)
        for page in pages:
            parameters.update({p["Name"]: p["Value"] for p in page.get("Parameters", [])})
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in SSM_REFUSED:
            raise
        return None, e.response["Error"]["Code"]
    return dlami.published(parameters, architecture), ""


def _one_line(ssm: Any, line: str, architecture: str) -> dict[str, str] | None:
    """A pinned line's newest image id by its own parameter (an account allowed GetParameter
    but not GetParametersByPath), or None when that is refused too."""
    name = f"{dlami.PATH.format(architecture=architecture)}{line}/latest/ami-id"
    try:
        return {line: ssm.get_parameter(Name=name)["Parameter"]["Value"]}
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] == "ParameterNotFound":
            return {}
        if e.response["Error"]["Code"] not in SSM_REFUSED:
            raise
        return None


def _describe_images(ec2: Any, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each of these images that exists, by id, in one call (by filter when one of them does not
    exist, as naming it would fail the call)."""
    ids = list(dict.fromkeys(i for i in image_ids if i))
    if not ids:
        return {}
    try:
        images = ec2.describe_images(ImageIds=ids)["Images"]
    except botocore.exceptions.ClientError as e:
        if not e.response["Error"]["Code"].startswith("InvalidAMIID"):
            raise
        images = ec2.describe_images(Filters=[{"Name": "image-id", "Values": ids}], IncludeDeprecated=True)["Images"]
    return {i["ImageId"]: i for i in images}


def _by_name(ec2: Any, wanted: dict[str, Any], architecture: str) -> dict[str, Any]:
    """The fallback: of the images owned by O(image.owners) whose name matches, the newest of
    the newest supported PyTorch line (dlami.pick_by_name)."""
    if not wanted.get("name_pattern"):
        return {}
    images = ec2.describe_images(Owners=wanted.get("owners") or ["amazon"], Filters=[
        {"Name": "name", "Values": [wanted["name_pattern"]]}, {"Name": "state", "Values": ["available"]},
        {"Name": "architecture", "Values": [architecture]}])["Images"]
    chosen = dlami.pick_by_name(images, architecture)
    return _image_summary(chosen, "name") if chosen else {}


def _images(ec2: Any, ssm: Any, new: dict[str, tuple[dict[str, Any], str]],
            existing: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """The images of one region, for every lab at once: a new instance's (new: key -> (the
    O(image) request, the architecture of its types)) and an instance's own (existing: key ->
    (image id, architecture)), each with its line and what is newer. One SSM path read per
    architecture and one DescribeImages for all of them; the name fallback only where needed."""
    architectures = list(dict.fromkeys([a for _id, a in new.values()] + [a for _id, a in existing.values()]))
    listings: dict[str, dict[str, str] | None] = {}
    refused: dict[str, str] = {}
    for architecture in architectures:
        listings[architecture], refused[architecture] = _ssm_lines(ssm, architecture)
    for wanted, architecture in new.values():
        line = wanted.get("dlami") or dlami.LATEST
        if refused[architecture] and not wanted.get("image_id") and line != dlami.LATEST:
            pinned = _one_line(ssm, line, architecture)
            if pinned is not None:
                listings[architecture] = (listings[architecture] or {}) | pinned
    choices: dict[str, tuple[str, str] | None] = {}
    for key, (wanted, architecture) in new.items():
        lines = listings[architecture]
        choices[key] = (None if wanted.get("image_id") or lines is None
                        else dlami.pick(lines, wanted.get("dlami") or dlami.LATEST, architecture))
    ids = [w.get("image_id", "") for w, _arch in new.values()] + [c[1] for c in choices.values() if c]
    ids += [i for i, _arch in existing.values()] + [i for lines in listings.values() for i in (lines or {}).values()]
    described = _describe_images(ec2, ids)
    latest = {architecture: {line: _image_summary(described[i], "ssm") for line, i in (lines or {}).items()
                             if i in described}
              for architecture, lines in listings.items()}

    def completed(image: dict[str, Any], architecture: str, line: str, existing: bool) -> dict[str, Any]:
        if not image:
            return {}
        line = line or dlami.line_of(image, latest[architecture])
        note = (f"The public SSM parameters of the Deep Learning AMIs could not be read ({refused[architecture]}): "
                "what is newer is not known." if refused[architecture] and existing else "")
        if refused[architecture] and not existing and image.get("source") == "name":
            note = (f"The public SSM parameters of the Deep Learning AMIs could not be read "
                    f"({refused[architecture]}): the image was found by its name (gpu_lab_ami_name_pattern).")
        return image | {"line": line, "newer": dlami.newer(image, line, latest[architecture], existing),
                        "note": note}

    found: dict[str, dict[str, Any]] = {}
    for key, (wanted, architecture) in new.items():
        choice = choices[key]
        if wanted.get("image_id"):
            raw = described.get(wanted["image_id"])
            found[key] = completed(_image_summary(raw, "pinned") if raw else {}, architecture, "", False)
        elif choice and choice[1] in described:
            found[key] = completed(_image_summary(described[choice[1]], "ssm"), architecture, choice[0], False)
        elif listings[architecture] is None:  # SSM refused: by name
            found[key] = completed(_by_name(ec2, wanted, architecture), architecture, "", False)
        else:  # the line is not published for this architecture here
            found[key] = {}
    for key, (image_id, architecture) in existing.items():
        raw = described.get(image_id)
        image = _image_summary(raw, "instance") if raw else {"image_id": image_id, "name": "", "creation_date": "",
                                                             "architecture": architecture, "source": "instance"}
        found[key] = completed(image, architecture, "", True)
    return found


def _image_summary(image: dict[str, Any], source: str) -> dict[str, Any]:
    root = image.get("RootDeviceName", "/dev/sda1")
    sizes = [m["Ebs"].get("VolumeSize", 8) for m in image.get("BlockDeviceMappings", [])
             if m.get("DeviceName") == root and "Ebs" in m]
    return {"image_id": image["ImageId"], "name": image.get("Name", ""), "creation_date": image.get("CreationDate", ""),
            "root_device_name": root, "root_size_gib": sizes[0] if sizes else 8,
            "architecture": image.get("Architecture", ""), "source": source}


SHELF_TAG = "gpu_lab:shelf"  # on the image (and its snapshots) shelve.yml makes of a lab's stopped instance


def _shelves(ec2: Any, labs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each lab's shelf images (its own, tagged by shelve.yml or an archiving teardown), newest first."""
    found: list[dict[str, Any]] = []
    for chunk in _chunks(labs):
        found += ec2.describe_images(Owners=["self"], Filters=[
            {"Name": "tag:gpu_lab:lab", "Values": chunk}, {"Name": f"tag:{SHELF_TAG}", "Values": ["true"]}])["Images"]
    found.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    by_lab: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labs}
    for image in found:
        tags = boto3_tag_list_to_ansible_dict(image.get("Tags", []))
        if tags.get("gpu_lab:lab") in by_lab:
            summary = _image_summary(image, "shelf")
            mappings = image.get("BlockDeviceMappings", [])
            summary.update(state=image.get("State", ""), tags=tags, snapshot_ids=[
                m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")],
                size_gib=sum(int(m["Ebs"].get("VolumeSize") or 0) for m in image.get("BlockDeviceMappings", [])
                             if "Ebs" in m))
            by_lab[tags["gpu_lab:lab"]].append(summary)
    return by_lab


def _volumes(ec2: Any, volume_ids: list[str]) -> list[dict[str, Any]]:
    """The volumes asked for, one call per 200 of them; by filter, as a volume deleted
    meanwhile would fail a call that names it (InvalidVolume.NotFound)."""
    found = []
    for chunk in _chunks(list(dict.fromkeys(volume_ids))):
        if chunk:
            found += ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": chunk}])["Volumes"]
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
        snapshots = pool.submit(lambda: [s for page in ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=managed) for s in page["Snapshots"]])
        images = pool.submit(lambda: ec2.describe_images(Owners=["self"], Filters=managed)["Images"])
    used_snapshots = {m["Ebs"]["SnapshotId"] for i in images.result() for m in i.get("BlockDeviceMappings", [])
                      if m.get("Ebs", {}).get("SnapshotId")}
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
    # A shelf's snapshot whose image is gone (a restore or teardown that stopped half-way).
    found += [{"kind": "snapshot", "id": s["SnapshotId"], "lab": lab_of(s),
               "detail": f"{s['SnapshotId']} ({s.get('VolumeSize', 0)} GiB)"}
              for s in snapshots.result() if s["SnapshotId"] not in used_snapshots]
    for orphan in found:
        orphan["summary"] = f"{orphan['kind'].replace('_', ' ')} {orphan['detail']} of lab {orphan['lab']}"
    return found


# Service Quotas errors that mean "not for this caller": the launch goes on without the check.
QUOTA_UNAVAILABLE = ("AccessDeniedException", "NoSuchResourceException", "DependencyAccessDeniedException")
OPEN_REQUESTS = ("PENDING", "CASE_OPENED")


def _quotas(module: AnsibleAWSModule, region: str | None, ec2: Any, codes: list[str],
            described: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The applied value of each quota code (one GetServiceQuota each) and the vCPUs running per
    instance type in the region (one paged DescribeInstances; a running type not among the
    described candidates is described in one more call). Service Quotas refused or not
    answering: ``unavailable`` says why, and the launch goes on without the check."""
    quotas = _client(module, "service-quotas", region)

    def value(code: str) -> float | None:
        quota = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]
        return quota.get("Value")

    def running() -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {"on-demand": {}, "spot": {}}
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for i in (i for page in pages for r in page["Reservations"] for i in r["Instances"]):
            market = counts["spot" if i.get("InstanceLifecycle") == "spot" else "on-demand"]
            market[i["InstanceType"]] = market.get(i["InstanceType"], 0) + 1
        return counts

    with ThreadPoolExecutor(max_workers=max(2, len(codes) + 1)) as pool:
        values = {code: pool.submit(value, code) for code in codes}
        counts = pool.submit(running)
        found: dict[str, Any] = {"applied": {}, "running_vcpus": {}, "running_spot_vcpus": {}, "unavailable": ""}
        for code, job in values.items():
            try:
                found["applied"][code] = job.result()
            except botocore.exceptions.ClientError as e:
                error = e.response["Error"]["Code"]
                found["unavailable"] = found["unavailable"] or (
                    error if error in QUOTA_UNAVAILABLE else f"{error}: {e.response['Error'].get('Message', '')}")
                found["applied"][code] = None
            except botocore.exceptions.BotoCoreError as e:
                found["unavailable"] = found["unavailable"] or (timeout_message(e) if is_timeout(e) else str(e))
                found["applied"][code] = None
        running_counts = counts.result()
    unknown = [t for counts in running_counts.values() for t in counts if t not in described]
    more = {t["name"]: t for t in _instance_types(ec2, list(dict.fromkeys(unknown)))} if unknown else {}
    for key, market in (("running_vcpus", "on-demand"), ("running_spot_vcpus", "spot")):
        found[key] = {t: n * int((described.get(t) or more.get(t) or {}).get("vcpus") or 0)
                      for t, n in running_counts[market].items()}
    return found


def _quota_requests(module: AnsibleAWSModule, region: str | None, codes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The open increase requests of each quota code (one call per code); none when they cannot be read."""
    quotas = _client(module, "service-quotas", region)

    def one(code: str) -> list[dict[str, Any]]:
        try:
            pages = quotas.get_paginator("list_requested_service_quota_change_history_by_quota").paginate(
                ServiceCode="ec2", QuotaCode=code)
            changes = [c for page in pages for c in page.get("RequestedQuotas", [])]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return []  # the status view shows what it can; the launch says when quotas are unreadable
        return [{"id": c.get("Id", ""), "quota_code": c.get("QuotaCode", code), "quota_name": c.get("QuotaName", ""),
                 "desired_value": c.get("DesiredValue"), "status": c.get("Status", ""),
                 "created": c["Created"].isoformat() if hasattr(c.get("Created"), "isoformat")
                 else str(c.get("Created", ""))}
                for c in changes if c.get("Status") in OPEN_REQUESTS]

    if not codes:
        return {}
    with ThreadPoolExecutor(max_workers=len(codes)) as pool:
        jobs = {code: pool.submit(one, code) for code in codes}
        return {code: job.result() for code, job in jobs.items()}


def _region_quotas(module: AnsibleAWSModule, region: str | None, ec2: Any, labs: list[dict[str, Any]],
                   instances: dict[str, list[dict[str, Any]]], described: dict[str, dict[str, Any]],
                   ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """O(quota) for the labs of one region: the quotas of the labs that need a new instance
    (nothing is asked when every lab has one) and the open requests, each code asked once."""
    def codes(want: str, new_only: bool) -> list[str]:
        return list(dict.fromkeys(code for lab in labs if (lab.get("quota") or {}).get(want)
                                  and not (new_only and instances[lab["lab"]])
                                  for code in lab["quota"]["codes"]))

    checked = codes("check", new_only=True)
    asked = codes("requests", new_only=False)
    with ThreadPoolExecutor(max_workers=2) as pool:
        quotas = pool.submit(_quotas, module, region, ec2, checked, described) if checked else None
        requests = pool.submit(_quota_requests, module, region, asked)
        return (quotas.result() if quotas else {}), requests.result()


LAB_OPTIONS: dict[str, Any] = {
    "lab": {"type": "str", "required": True},
    "region": {"type": "str"},
    "key_name": {"type": "str", "no_log": False},
    "security_group_name": {"type": "str"},
    "instance_types": {"type": "list", "elements": "str", "default": []},
    "image": {"type": "dict", "options": {
        "image_id": {"type": "str", "default": ""},
        "dlami": {"type": "str", "default": ""},
        "name_pattern": {"type": "str", "default": ""},
        "owners": {"type": "list", "elements": "str", "default": ["amazon"]},
    }},
    "wanted": {"type": "dict", "options": {
        "instance_type": {"type": "str"},
        "volume_size": {"type": "int"},
    }},
    "other_regions": {"type": "list", "elements": "str", "default": []},
    "quota": {"type": "dict", "options": {
        "codes": {"type": "list", "elements": "str", "default": []},
        "check": {"type": "bool", "default": False},
        "requests": {"type": "bool", "default": False},
    }},
}


PRICE_OPTIONS: dict[str, Any] = {
    "region": {"type": "str", "required": True},
    "instance_types": {"type": "list", "elements": "str", "default": []},
    "storage": {"type": "bool", "default": True},
}


def _client(module: AnsibleAWSModule, service: str, region: str | None) -> Any:
    """A client whose calls give up on a silent endpoint within the bound (timeouts.py)."""
    where = {"region": region} if region else {}
    return bounded(module.client(service, config=client_config(), **where))


def discover(module: AnsibleAWSModule, region: str | None, labs: list[dict[str, Any]],
             volumes: bool, orphans: bool) -> dict[str, dict[str, Any]]:
    """What each lab of one region has: every kind of resource asked for once, for all the
    labs together (filters with many values), the kinds side by side."""
    ec2 = _client(module, "ec2", region)
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
            "shelves": pool.submit(_shelves, ec2, names),
        }
        found = {kind: job.result() if job else [] for kind, job in jobs.items()}
    described = {t["name"]: t for t in found["instance_types"]}
    live = [i for lab in names for i in found["instances"][lab]]
    _spot_requests(ec2, live)
    spot_prices = _spot_prices(ec2, [i for lab in names for i in found["instances"][lab][:1]]) if volumes else {}
    # The quotas a new instance must fit in, and the open requests: read while the image is resolved.
    quota_pool = ThreadPoolExecutor(max_workers=1)
    quota_job = quota_pool.submit(_region_quotas, module, region, ec2, labs, found["instances"], described)
    # A new instance's image, resolved once per distinct request (a class asks one), for the
    # architecture of the lab's types; with O(volumes), an instance's own image and what is newer.
    new_images: dict[str, tuple[dict[str, Any], str]] = {}
    instance_images: dict[str, tuple[str, str]] = {}
    for lab in labs:
        instance = (found["instances"][lab["lab"]] or [{}])[0]
        if lab["image"] and not instance:
            architecture = dlami.architecture_of([described[t] for t in lab["instance_types"]])
            new_images.setdefault(repr((lab["image"], architecture)), (lab["image"], architecture))
        elif volumes and instance.get("image"):
            instance_images[instance["image"]] = (instance["image"], instance.get("architecture") or "x86_64")
    images: dict[str, dict[str, Any]] = {}
    if new_images or instance_images:
        images = _images(ec2, _client(module, "ssm", region), new_images, instance_images)

    def image_of(lab: dict[str, Any], instances: list[dict[str, Any]]) -> dict[str, Any]:
        if instances:
            return images.get(instances[0].get("image", ""), {}) if volumes else {}
        shelf = found["shelves"][lab["lab"]]
        if shelf:  # a shelved lab comes back from its own disk, whatever image the settings name
            return shelf[0]
        if not lab["image"]:
            return {}
        architecture = dlami.architecture_of([described[t] for t in lab["instance_types"]])
        return images.get(repr((lab["image"], architecture)), {})
    # One call for the cost view's volumes and the root volumes a wanted size is compared with.
    volume_ids = []
    for lab in labs:
        for i in found["instances"][lab["lab"]][:1]:
            volume_ids += i["root_volume_ids"] if volumes else []
            if (lab.get("wanted") or {}).get("volume_size") is not None and i["root_volume_id"]:
                volume_ids.append(i["root_volume_id"])
    all_volumes = {v["id"]: v for v in _volumes(ec2, volume_ids)}
    try:
        region_quota, quota_requests = quota_job.result()
    finally:
        quota_pool.shutdown()
    result = {}
    for lab in labs:
        instances = found["instances"][lab["lab"]]
        root = all_volumes.get(instances[0]["root_volume_id"], {}) if instances else {}
        result[lab["lab"]] = {
            "instance": instances[0] if instances else {},
            "instance_count": len(instances),
            "instances": instances,
            "addresses": found["addresses"][lab["lab"]],
            "security_group": found["security_group"].get(lab["security_group_name"] or "", {}),
            "key_pair": found["key_pair"].get(lab["key_name"] or "", {}),
            "instance_types": [described[t] for t in lab["instance_types"]],
            "image": image_of(lab, instances),
            "volumes": [all_volumes[v] for i in instances[:1] for v in i["root_volume_ids"] if v in all_volumes]
            if volumes else [],
            "orphans": found["orphans"],
            "drift": drift(lab["lab"], instances[0] if instances else {}, lab.get("wanted"), root.get("size_gib")),
            "elsewhere": [],  # other_regions: filled in by discover_all, which asks every region once
            "quota": region_quota if (lab.get("quota") or {}).get("check") and not instances else {},
            "spot_price": spot_prices.get((instances[0]["type"], instances[0]["zone"]), {}) if instances else {},
            "shelf": found["shelves"][lab["lab"]][0] if found["shelves"][lab["lab"]] else {},
            "shelves": found["shelves"][lab["lab"]],
            "quota_requests": [r for code in (lab.get("quota") or {}).get("codes", [])
                               for r in quota_requests.get(code, [])]
            if (lab.get("quota") or {}).get("requests") else [],
        }
    return result


def _elsewhere(module: AnsibleAWSModule, region: str, labs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The labs' live instances in a region other than their own: one paged call per 200 labs."""
    return {lab: [{"region": region, "instance": i} for i in found]
            for lab, found in _instances(_client(module, "ec2", region), labs).items()}


def _failure(e: Exception, region: str) -> str:
    """One sentence for what stopped the discovery of a region."""
    if is_timeout(e):
        return timeout_message(e)
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


PRICING_CONNECT_TIMEOUT_S = 5.0  # prices are a nicety of the status view: never a long wait
PRICING_READ_TIMEOUT_S = 10.0


def _get_products(pricing_client: Any, service: str, filters: list[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """Every product GetProducts answers for the filters (all its pages), and the calls made."""
    items: list[dict[str, Any]] = []
    calls = 0
    for page in pricing_client.get_paginator("get_products").paginate(
            ServiceCode=service, Filters=filters, FormatVersion=pricing.FORMAT_VERSION,
            PaginationConfig={"PageSize": pricing.MAX_RESULTS}):
        calls += 1
        items += pricing.products(page.get("PriceList") or [])
    return items, calls


def _region_prices(pricing_client: Any, ask: dict[str, Any]) -> dict[str, Any]:
    """One region's prices from the Price List API: its types' hourly prices in one call (ANY_OF;
    a call per type where ANY_OF is refused), gp3 and public IPv4 in one call each (with
    O(prices) C(storage))."""
    region, types = ask["region"], list(dict.fromkeys(ask.get("instance_types") or []))

    def hourly() -> tuple[dict[str, float | None], int]:
        try:
            items, calls = _get_products(pricing_client, "AmazonEC2", pricing.instance_filters(region, types))
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] != "InvalidParameterException" or len(types) == 1:
                raise
            items, calls = [], 1
            for name in types:
                more, n = _get_products(pricing_client, "AmazonEC2", pricing.instance_filters(region, [name]))
                items, calls = items + more, calls + n
        return pricing.hourly_by_type(items, region, types), calls

    storage = bool(ask.get("storage", True))
    with ThreadPoolExecutor(max_workers=3) as pool:
        by_type = pool.submit(hourly) if types else None
        gp3 = pool.submit(_get_products, pricing_client, "AmazonEC2", pricing.storage_filters(region)) \
            if storage else None
        ipv4 = pool.submit(_get_products, pricing_client, pricing.IPV4_SERVICE, pricing.ipv4_filters(region)) \
            if storage else None
        answer: dict[str, Any] = {"hourly_usd": {}, "calls": 0}
        if by_type:
            answer["hourly_usd"], calls = by_type.result()
            answer["calls"] += calls
        if gp3 and ipv4:
            (gp3_items, gp3_calls), (ipv4_items, ipv4_calls) = gp3.result(), ipv4.result()
            answer["gp3_gib_month_usd"] = pricing.gp3_gib_month(gp3_items, region)
            answer["public_ipv4_hour_usd"] = pricing.ipv4_hour(ipv4_items, region)
            answer["calls"] += gp3_calls + ipv4_calls
    return answer


def _pricing_failure(e: Exception) -> str:
    """Why the Price List API gave no prices, in a few words (the status view quotes it)."""
    if is_timeout(e):
        return timeout_message(e)
    if isinstance(e, botocore.exceptions.ClientError):
        code = e.response["Error"]["Code"]
        if code in ("AccessDeniedException", "AccessDenied", *CREDENTIAL_ERRORS):
            return f"no permission for pricing:GetProducts ({code})"
        return f"{code}: {e.response['Error'].get('Message', '')}".rstrip(": ")
    if isinstance(e, botocore.exceptions.EndpointConnectionError):
        return f"endpoint not reachable ({e})"
    return f"{type(e).__name__}: {e}"


def prices_of(module: AnsibleAWSModule, asks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """O(prices): each region's prices (RV(prices)), from the Price List API's endpoint in
    us-east-1, regions side by side; a region the API gave no answer for gets failed and msg."""
    if not asks:
        return {}
    connect, read = timeouts()
    config = botocore.config.Config(connect_timeout=min(connect, PRICING_CONNECT_TIMEOUT_S),
                                    read_timeout=min(read, PRICING_READ_TIMEOUT_S),
                                    retries={"mode": "standard", "max_attempts": 2})

    client = bounded(module.client("pricing", config=config, region=pricing.ENDPOINT_REGION))

    def one(ask: dict[str, Any]) -> dict[str, Any]:
        try:
            return _region_prices(client, ask)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            return {"failed": True, "msg": _pricing_failure(e)}

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(asks)))) as pool:
        jobs = {ask["region"]: pool.submit(one, ask) for ask in asks}
        return {region: job.result() for region, job in jobs.items()}


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            **{k: v for k, v in LAB_OPTIONS.items() if k not in ("lab", "region")},
            "lab": {"type": "str"},
            "labs": {"type": "list", "elements": "dict"},
            "volumes": {"type": "bool", "default": False},
            "orphans": {"type": "bool", "default": False},
            "prices": {"type": "list", "elements": "dict", "options": PRICE_OPTIONS},
        },
        required_one_of=[["lab", "labs", "prices"]],
        mutually_exclusive=[["lab", "labs"]],
        supports_check_mode=True,
    )
    p = module.params
    try:
        timeouts()  # a bad GPU_LAB_AWS_*_TIMEOUT is said once, before any call
    except ValueError as e:
        module.fail_json(msg=str(e))
    prices = {"prices": prices_of(module, p["prices"])} if p["prices"] else {}
    if p["lab"]:
        lab = {k: p[k] for k in LAB_OPTIONS}
        found = discover_all(module, [lab], p["volumes"], p["orphans"])[p["lab"]]
        if found.get("failed"):
            module.fail_json(msg=found["msg"])
        module.exit_json(changed=False, **found, **prices)
    labs = discover_labs(module, p["labs"], p["volumes"], p["orphans"]) if p["labs"] else {}
    module.exit_json(changed=False, labs=labs, **prices)


def discover_labs(module: AnsibleAWSModule, given: list[dict[str, Any]], volumes: bool,
                  orphans: bool) -> dict[str, dict[str, Any]]:
    """Every lab of O(labs). A lab whose entry is invalid, or whose name another entry also
    has, gets failed and msg."""
    valid, invalid = check_labs(given, LAB_OPTIONS)
    result: dict[str, dict[str, Any]] = {name: {"failed": True, "msg": msg} for name, msg in invalid.items()}
    result.update(discover_all(module, valid, volumes, orphans))
    return result


def discover_all(module: AnsibleAWSModule, labs: list[dict[str, Any]], volumes: bool,
                 orphans: bool) -> dict[str, dict[str, Any]]:
    """Every lab (checked entries), the regions side by side: each lab's own region, and each
    other region some lab asks about (O(other_regions)), asked once for all of them. A lab
    whose region, or one of whose other regions, could not be read gets failed and msg."""
    by_region: dict[str, list[dict[str, Any]]] = {}
    others: dict[str, list[str]] = {}
    for lab in labs:
        own = lab["region"] or module.region or ""
        by_region.setdefault(own, []).append(lab)
        for other in lab.get("other_regions") or []:
            if other and other != own and lab["lab"] not in others.get(other, []):
                others.setdefault(other, []).append(lab["lab"])

    def one_region(region: str, labs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            return discover(module, region or None, labs, volumes, orphans)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            msg = _failure(e, region or "the configured region")
            return {lab["lab"]: {"failed": True, "msg": msg} for lab in labs}

    def other_region(region: str, names: list[str]) -> dict[str, Any]:
        try:
            return _elsewhere(module, region, names)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            # Not knowing whether the lab runs there too is not "it does not": the lab fails.
            return {name: _failure(e, region) for name in names}

    jobs = len(by_region) + len(others)
    with ThreadPoolExecutor(max_workers=max(1, min(8, jobs))) as pool:
        own_jobs = [pool.submit(one_region, region, group) for region, group in by_region.items()]
        other_jobs = {region: pool.submit(other_region, region, names) for region, names in others.items()}
        result: dict[str, dict[str, Any]] = {}
        for job in own_jobs:
            result.update(job.result())
        elsewhere = {region: job.result() for region, job in other_jobs.items()}
    for lab in labs:
        found = result[lab["lab"]]
        for region in dict.fromkeys(lab.get("other_regions") or []):
            answer = elsewhere.get(region, {}).get(lab["lab"])
            if found.get("failed") or answer is None:
                continue  # failed already, or the lab's own region
            if isinstance(answer, str):
                result[lab["lab"]] = found = {"failed": True, "msg": answer}
            else:
                found["elsewhere"] += answer
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
