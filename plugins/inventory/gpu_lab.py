# Copyright: gpu_lab developers
# MIT License
"""The dynamic inventory of gpu_lab: every lab's GPU server, found in EC2 by its tags."""

from __future__ import annotations

DOCUMENTATION = r"""
name: gpu_lab
short_description: The GPU servers of gpu_lab labs, found in EC2 by their tags
description:
  - Finds the EC2 instances tagged C(gpu_lab:lab) in the listed regions and makes one host per
    instance, named C(<lab>-server), with everything Ansible needs to reach it over SSH the
    way gpu_lab sets it up (the Elastic IP, the lab's key file, the lab's pinned host key).
  - The labs of a class (launched from a roster, see C(csdl.gpu_lab.roster)) also carry the tags
    C(gpu_lab:class) and C(gpu_lab:student); O(classes) finds them by class. Staff reach them with
    the class admin key, C(<key_dir>/<class>-admin.pem), since the student's own key is not on
    the staff machine.
  - The inventory source is a YAML file whose name ends in C(gpu_lab.yml) or C(gpu_lab.yaml),
    for example C(inventories/csdl/lab.gpu_lab.yml).
  - Instances in state C(pending), C(running), C(stopping) or C(stopped) are listed;
    C(shutting-down) and C(terminated) ones never are.
  - "Groups: C(gpu_lab) holds every running or pending lab host (the group plays target);
    C(<lab>) holds the running or pending hosts of one lab (the name made a valid group name);
    C(class_<class>) holds the running or pending hosts of the labs of one class (C(-) made
    C(_), for example C(class_dl2026));
    C(stopped) holds the stopped and stopping hosts, which are in neither of those;
    every host is also in C(state_<state>), C(type_<instance type, . made _>) and
    C(region_<region, - made _>)."
  - "Host variables: C(ansible_host) (the public IP, that is the Elastic IP; absent when the
    instance has none), C(ansible_user), C(ansible_ssh_private_key_file),
    C(ansible_ssh_common_args), and the facts C(gpu_lab_host_lab), C(gpu_lab_host_instance_id),
    C(gpu_lab_host_instance_type), C(gpu_lab_host_state), C(gpu_lab_host_zone), C(gpu_lab_host_region),
    C(gpu_lab_host_launch_time) (ISO 8601), C(gpu_lab_host_ami), C(gpu_lab_host_public_ip) and
    C(gpu_lab_host_tags) (a dict), all usable in O(compose), O(groups) and O(keyed_groups).
    The hosts of a class lab also have C(gpu_lab_host_class) and C(gpu_lab_host_student) (the
    values of its C(gpu_lab:class) and C(gpu_lab:student) tags; the student is V(None) without
    that tag)."
  - Regions are queried in parallel, one DescribeInstances client per region, filtered on the
    server by the lab tag (or the class tag) and the instance state.
author:
  - gpu_lab developers (@csdl)
version_added: 0.1.0
requirements:
  - boto3 >= 1.28
  - botocore >= 1.31
notes:
  - Credentials come only from boto3's standard chain (environment, C(~/.aws/config) and
    C(~/.aws/credentials), SSO, instance profile); O(profile) or E(AWS_PROFILE) picks a profile.
    Never put credentials in the inventory file.
  - E(AWS_ENDPOINT_URL) is honoured as boto3 honours it, which is how the tests point this
    plugin at the EC2 emulator.
  - An instance whose C(gpu_lab:class) tag is not a valid class name is skipped with a warning,
    because the class names its key file.
  - If a lab has more than one instance, the running one launched first keeps the name
    C(<lab>-server) and the others are named C(<lab>-server-<instance id>), with a warning.
  - The host facts are named C(gpu_lab_host_*) so they never shadow the lab settings
    (C(gpu_lab_region), C(gpu_lab_instance_type)...) of C(group_vars/all).
  - The cache stores the EC2 answer, not the host variables, so changing O(user), O(key_dir)
    or O(state_dir) needs no cache flush; changing O(regions), O(labs) or O(classes) invalidates it.
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it makes the file an inventory source of this plugin.
    required: true
    type: str
    choices: [csdl.gpu_lab.gpu_lab]
  regions:
    description:
      - The AWS regions to look in, for example V([us-east-1]).
      - Regions are queried in parallel; a region botocore does not know is refused.
    required: true
    type: list
    elements: str
  labs:
    description:
      - The labs to find, by the value of their C(gpu_lab:lab) tag.
      - Empty finds every lab, that is every instance that has a C(gpu_lab:lab) tag.
    type: list
    elements: str
    default: []
  classes:
    description:
      - The classes whose labs to find, by the value of their C(gpu_lab:class) tag, for example
        V([dl2026]).
      - An instance is listed when it matches O(labs) (if given) or O(classes) (if given); with
        both empty, every lab is.
      - Each configured class's group C(class_<class>) exists even when none of its labs runs.
    type: list
    elements: str
    default: []
    version_added: 0.3.0
  profile:
    description:
      - The AWS profile of C(~/.aws/config) to use.
      - Unset, boto3's standard chain decides (E(AWS_PROFILE), then the default profile, then
        the other providers).
    type: str
  user:
    description: The SSH user of the lab hosts (C(ansible_user)).
    type: str
    default: ubuntu
  key_dir:
    description:
      - The directory that holds each lab's private key, C(<lab>-server.pem), and each class's
        admin key, C(<class>-admin.pem), used for the labs of that class.
      - C(~) is expanded on the control node.
    type: path
    default: ~/.ssh
  state_dir:
    description:
      - gpu_lab's directory on the workstation; each lab's pinned host key is
        C(<state_dir>/<lab>/known_hosts).
      - C(~) is expanded on the control node.
    type: path
    default: ~/.gpu_lab
  retry_mode:
    description:
      - botocore's retry mode for the EC2 calls; C(adaptive) also paces requests on the client
        side when EC2 throttles.
    type: str
    choices: [standard, adaptive]
    default: standard
  max_attempts:
    description:
      - How many times one EC2 request is tried in all (the first try included) before
        throttling or an unreachable endpoint is reported.
    type: int
    default: 5
    env:
      - name: AWS_MAX_ATTEMPTS
"""

EXAMPLES = r"""
# inventories/csdl/lab.gpu_lab.yml: the csdl lab's server in us-east-1
plugin: csdl.gpu_lab.gpu_lab
regions: [us-east-1]
labs: [csdl]

---
# every lab in three regions, cached for ten minutes in a JSON file
# (ansible-inventory --flush-cache or meta: refresh_inventory asks EC2 again)
plugin: csdl.gpu_lab.gpu_lab
regions: [us-east-1, us-west-2, eu-west-1]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.gpu_lab/inventory_cache
cache_timeout: 600

---
# another profile and SSH user, a variable and groups of your own
plugin: csdl.gpu_lab.gpu_lab
regions: [eu-west-1]
labs: [csdl, nlp]
profile: course-admin
user: ubuntu
compose:
  # a variable from a tag
  course: gpu_lab_host_tags.course | default('none')
groups:
  # the expensive ones
  big_gpu: gpu_lab_host_instance_type.startswith('p')
keyed_groups:
  # zone_us_east_1a, ...
  - key: gpu_lab_host_zone
    prefix: zone

---
# inventories/dl2026/servers.gpu_lab.yml: the GPU servers of every student of the class dl2026
# (group class_dl2026 while they run; ssh with ~/.ssh/dl2026-admin.pem), and the staff's own lab
plugin: csdl.gpu_lab.gpu_lab
regions: [us-east-1]
classes: [dl2026]
labs: [dl2026-staff]
keyed_groups:
  # every class lab whatever its state, by student: student_alice, ...
  - key: gpu_lab_host_student
    prefix: student
"""

import datetime as dt
import functools
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display

if TYPE_CHECKING:  # boto3 is imported only when EC2 is asked: a cache hit never pays for it
    from botocore.client import BaseClient

LAB_TAG = "gpu_lab:lab"
CLASS_TAG = "gpu_lab:class"
STUDENT_TAG = "gpu_lab:student"
ACTIVE_STATES = ("pending", "running")
STOPPED_STATES = ("stopping", "stopped")
LISTED_STATES = ACTIVE_STATES + STOPPED_STATES
# Which instance of a lab keeps the plain name: the one a play can reach first.
STATE_RANK = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3}
# A lab name becomes a file name (~/.ssh/<lab>-server.pem) and a directory: nothing that
# could climb out of key_dir or state_dir.
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# As csdl.gpu_lab.roster accepts them; a class names its admin key file (<class>-admin.pem).
CLASS_NAME = re.compile(r"[a-z][a-z0-9-]{0,18}[a-z0-9]")
RESERVED_GROUPS = frozenset({"all", "ungrouped", "gpu_lab", "stopped"})
# Bumped whenever the cached records change shape, so an old cache is a miss, not a crash.
CACHE_FORMAT = 1
# EC2's largest page: one request per region for any course-sized fleet.
PAGE_SIZE = 1000
MAX_FILTER_VALUES = 200  # EC2's limit per filter
# Fail fast on a black-holed endpoint (botocore waits 60 s per try by default).
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"})
REJECTED_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
    }
)

Record = dict[str, Any]

display = Display()


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "csdl.gpu_lab.gpu_lab"

    def verify_file(self, path: str) -> bool:
        """Only gpu_lab's own sources: any other YAML belongs to another plugin."""
        return super().verify_file(path) and path.endswith(("gpu_lab.yml", "gpu_lab.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        regions = self._regions()
        labs = self._labs()
        classes = self._classes()
        self._wanted_classes = tuple(classes)

        query = {"format": CACHE_FORMAT, "regions": regions, "labs": labs, "classes": classes}
        cache_key = self.get_cache_key(path)
        use_cache = bool(self.get_option("cache"))
        records = self._cached_records(cache_key, query) if use_cache and cache else None
        if records is None:
            records = self._query(regions, labs)
            if use_cache:
                self._cache[cache_key] = {**query, "instances": records}

        self._populate(records, labs, classes)

    # The classes travel beside the arguments: _query(regions, labs) is the seam the unit tests replace.
    _wanted_classes: tuple[str, ...] = ()

    def _query(self, regions: list[str], labs: list[str]) -> list[Record]:
        return query_ec2(
            regions,
            labs,
            classes=self._wanted_classes,
            profile=self.get_option("profile"),
            retry_mode=self.get_option("retry_mode"),
            max_attempts=self.get_option("max_attempts"),
        )

    # --- options ------------------------------------------------------------------------

    def _regions(self) -> list[str]:
        regions = _unique(str(r).strip() for r in self.get_option("regions") or [])
        if not regions:
            raise AnsibleParserError(
                "The gpu_lab inventory lists no regions: add one, for example `regions: [us-east-1]`."
            )
        return regions

    def _labs(self) -> list[str]:
        labs = _unique(str(lab).strip() for lab in self.get_option("labs") or [])
        for lab in labs:
            if not LAB_NAME.fullmatch(lab):
                raise AnsibleParserError(
                    f"The lab name {lab!r} in the gpu_lab inventory is not valid: "
                    "use letters, digits, '.', '_' and '-', starting with a letter or digit."
                )
        return labs

    def _classes(self) -> list[str]:
        classes = _unique(str(name).strip() for name in self.get_option("classes") or [])
        for name in classes:
            if not CLASS_NAME.fullmatch(name):
                raise AnsibleParserError(
                    f"The class name {name!r} in the gpu_lab inventory is not valid: use 2 to 20 lowercase letters, "
                    "digits and '-', starting with a letter and ending with a letter or digit (for example dl2026)."
                )
        return classes

    # --- cache --------------------------------------------------------------------------

    def _cached_records(self, cache_key: str, query: Mapping[str, Any]) -> list[Record] | None:
        try:
            cached = self._cache[cache_key]
        except KeyError:
            return None
        # The key depends on the file's path only: a cache made for other regions or labs,
        # or by another version of this plugin, must not answer for this one.
        if not isinstance(cached, Mapping) or any(cached.get(k) != v for k, v in query.items()):
            return None
        instances = cached.get("instances")
        return instances if isinstance(instances, list) else None

    # --- inventory ----------------------------------------------------------------------

    def _populate(self, records: list[Record], labs: list[str], classes: Iterable[str] = ()) -> None:
        inventory = self.inventory
        for group in ("gpu_lab", "stopped"):
            inventory.add_group(group)
        # A configured lab's group exists even while its server is stopped or gone, so a
        # play aimed at it matches nothing instead of failing on an unknown pattern.
        for lab in labs:
            inventory.add_group(lab_group_name(lab))
        for name in classes:
            inventory.add_group(class_group_name(name))

        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        user = self.get_option("user")
        key_dir = os.path.expanduser(self.get_option("key_dir"))
        state_dir = os.path.expanduser(self.get_option("state_dir"))

        added: set[str] = set()  # hundreds of hosts share a handful of groups
        for name, record in self._named(records):
            host_vars = make_host_vars(record, user=user, key_dir=key_dir, state_dir=state_dir)
            host_groups = groups_of(record)
            for group in host_groups:
                if group not in added:
                    inventory.add_group(group)
                    added.add(group)
            inventory.add_host(name, group=host_groups[0])
            for group in host_groups[1:]:
                inventory.add_child(group, name)
            for var, value in host_vars.items():
                inventory.set_variable(name, var, value)

            self._set_composite_vars(compose, host_vars, name, strict=strict)
            self._add_host_to_composed_groups(groups, host_vars, name, strict=strict)
            self._add_host_to_keyed_groups(keyed_groups, host_vars, name, strict=strict)

    def _named(self, records: Iterable[Record]) -> list[tuple[str, Record]]:
        """Each record with its host name, in a stable order; warns about odd instances."""
        by_lab: dict[str, list[Record]] = {}
        for record in records:
            lab = record.get("lab") or ""
            if not LAB_NAME.fullmatch(lab):
                self.display.warning(
                    f"Skipping EC2 instance {record.get('id')} in {record.get('region')}: "
                    f"its {LAB_TAG} tag {lab!r} is not a valid lab name (letters, digits, '.', '_', '-'); "
                    "retag or terminate it."
                )
                continue
            class_name = (record.get("tags") or {}).get(CLASS_TAG)
            if class_name is not None and not CLASS_NAME.fullmatch(class_name):
                self.display.warning(
                    f"Skipping EC2 instance {record.get('id')} in {record.get('region')} (lab {lab}): "
                    f"its {CLASS_TAG} tag {class_name!r} is not a valid class name (lowercase letters, digits, '-'); "
                    "retag or terminate it."
                )
                continue
            by_lab.setdefault(lab, []).append(record)

        named: list[tuple[str, Record]] = []
        for lab in sorted(by_lab):
            instances = sorted(by_lab[lab], key=_precedence)
            if len(instances) > 1:
                extra = ", ".join(f"{r['id']} ({r['region']}, {r['state']})" for r in instances[1:])
                self.display.warning(
                    f"Lab {lab} has {len(instances)} instances: {lab}-server is {instances[0]['id']}, and {extra} "
                    f"are listed as {lab}-server-<instance id>; tear down the ones you do not need."
                )
            named.append((f"{lab}-server", instances[0]))
            named.extend((f"{lab}-server-{r['id']}", r) for r in instances[1:])
        return named


# --- host variables and groups (pure functions: the unit tests call them directly) -------


def make_host_vars(record: Record, *, user: str, key_dir: str, state_dir: str) -> dict[str, Any]:
    lab = record["lab"]
    tags = record.get("tags") or {}
    class_name = tags.get(CLASS_TAG)
    known_hosts = os.path.join(state_dir, lab, "known_hosts")
    # Staff reach a class's labs with the class admin key: the student's own key stays with them.
    key_file = f"{class_name}-admin.pem" if class_name else f"{lab}-server.pem"
    host_vars: dict[str, Any] = {
        "ansible_user": user,
        "ansible_ssh_private_key_file": os.path.join(key_dir, key_file),
        # Only the lab's own key and pinned host key: no agent keys tried first, and no
        # trust-on-first-use prompt for an address that AWS may hand to someone else later.
        "ansible_ssh_common_args": " ".join(
            (
                f"-o UserKnownHostsFile={shlex.quote(known_hosts)}",
                "-o StrictHostKeyChecking=yes",
                "-o IdentitiesOnly=yes",
            )
        ),
        "gpu_lab_host_lab": lab,
        "gpu_lab_host_instance_id": record["id"],
        "gpu_lab_host_instance_type": record.get("type"),
        "gpu_lab_host_state": record.get("state"),
        "gpu_lab_host_zone": record.get("zone"),
        "gpu_lab_host_region": record.get("region"),
        "gpu_lab_host_launch_time": record.get("launch_time"),
        "gpu_lab_host_ami": record.get("ami"),
        "gpu_lab_host_public_ip": record.get("public_ip"),
        "gpu_lab_host_tags": dict(tags),
    }
    if class_name:
        host_vars["gpu_lab_host_class"] = class_name
        host_vars["gpu_lab_host_student"] = tags.get(STUDENT_TAG)
    # Without a public IP (stopped, no Elastic IP) there is nothing to connect to; leaving
    # ansible_host unset beats pointing it at a private address the workstation cannot reach.
    if record.get("public_ip"):
        host_vars["ansible_host"] = record["public_ip"]
    return host_vars


def groups_of(record: Record) -> tuple[str, ...]:
    """The plugin's own groups for one host, the most specific first."""
    class_name = (record.get("tags") or {}).get(CLASS_TAG)
    return _groups(
        record["lab"], record.get("state") or "unknown", record.get("type"), record.get("region"), class_name
    )


@functools.cache
def _groups(
    lab: str, state: str, instance_type: str | None, region: str | None, class_name: str | None = None
) -> tuple[str, ...]:
    groups = [lab_group_name(lab), "gpu_lab"] if state in ACTIVE_STATES else ["stopped"]
    if class_name and state in ACTIVE_STATES:
        groups.append(class_group_name(class_name))
    groups.append(to_safe_group_name(f"state_{state}", force=True, silent=True))
    if instance_type:
        groups.append(to_safe_group_name(f"type_{instance_type}", force=True, silent=True))
    if region:
        groups.append(to_safe_group_name(f"region_{region}", force=True, silent=True))
    return tuple(groups)


def lab_group_name(lab: str) -> str:
    group = to_safe_group_name(lab, force=True, silent=True)
    # A lab called "stopped" must not put its running server among the stopped ones.
    return f"lab_{group}" if group in RESERVED_GROUPS else group


def class_group_name(class_name: str) -> str:
    # Prefixed: a class and a lab may share a name, and a class must not be mistaken for a lab.
    return to_safe_group_name(f"class_{class_name}", force=True, silent=True)


def _precedence(record: Record) -> tuple[int, str, str]:
    return STATE_RANK.get(record.get("state") or "", 9), record.get("launch_time") or "", record["id"]


def _unique(items: Iterable[str]) -> list[str]:
    return [item for item in dict.fromkeys(items) if item]


# --- EC2 ---------------------------------------------------------------------------------


def instance_record(instance: Mapping[str, Any], region: str) -> Record:
    """What the inventory keeps of one DescribeInstances entry: small, and JSON for the cache."""
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags") or ()}
    return {
        "id": instance["InstanceId"],
        "region": region,
        "lab": tags.get(LAB_TAG, ""),
        "state": (instance.get("State") or {}).get("Name"),
        "type": instance.get("InstanceType"),
        "zone": (instance.get("Placement") or {}).get("AvailabilityZone"),
        "launch_time": iso_time(instance.get("LaunchTime")),
        "ami": instance.get("ImageId"),
        "public_ip": instance.get("PublicIpAddress"),
        "tags": tags,
    }


def iso_time(value: Any) -> str | None:
    """EC2's ``2025-10-20T08:30:00.000Z`` (or a datetime) as ``2025-10-20T08:30:00+00:00``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.isoformat()


def ec2_filters(labs: list[str], classes: list[str] | tuple[str, ...] = ()) -> list[list[dict[str, Any]]]:
    """Server-side filters, one set per request: only lab instances that are not (being) terminated.

    The filters of one request are ANDed, so the labs and the classes (either matches) take
    requests of their own; an instance that matches both is answered twice and kept once.
    EC2 takes at most 200 values per filter, so a longer list takes several requests.
    """
    states = {"Name": "instance-state-name", "Values": list(LISTED_STATES)}
    lab_key = {"Name": "tag-key", "Values": [LAB_TAG]}
    if not labs and not classes:
        return [[lab_key, states]]
    sets = [[{"Name": f"tag:{LAB_TAG}", "Values": chunk}, states] for chunk in _chunks(labs)]
    # A class instance without a lab tag has no name here: not worth a record.
    sets += [[{"Name": f"tag:{CLASS_TAG}", "Values": chunk}, lab_key, states] for chunk in _chunks(classes)]
    return sets


def _chunks(values: list[str] | tuple[str, ...]) -> list[list[str]]:
    return [list(values[i : i + MAX_FILTER_VALUES]) for i in range(0, len(values), MAX_FILTER_VALUES)]


def describe_region(client: BaseClient, region: str, filter_sets: list[list[dict[str, Any]]]) -> list[Record]:
    records: dict[str, Record] = {}  # by instance id: a lab and a class may both match one
    paginator = client.get_paginator("describe_instances")
    for filters in filter_sets:
        for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": PAGE_SIZE}):
            for reservation in page.get("Reservations", ()):
                for instance in reservation.get("Instances", ()):
                    records.setdefault(instance["InstanceId"], instance_record(instance, region))
    return list(records.values())


def query_ec2(
    regions: list[str],
    labs: list[str],
    *,
    classes: list[str] | tuple[str, ...] = (),
    profile: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 5,
) -> list[Record]:
    """The lab instances of all regions, asked in parallel; AnsibleError with advice on failure."""
    try:
        import boto3
        import botocore.exceptions
        import botocore.session
        from botocore.config import Config
    except ImportError as e:
        raise AnsibleError(
            "The csdl.gpu_lab.gpu_lab inventory needs boto3 in the Python that runs Ansible: "
            "run scripts/bootstrap.sh or `pip install boto3`."
        ) from e

    # Only LaunchTime is kept, yet botocore would run dateutil on every timestamp of every
    # instance (a third of the client's CPU for 500 instances): keep EC2's ISO 8601 text.
    from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.aws_loader import with_shared_loader

    botocore_session = with_shared_loader(botocore.session.get_session())
    botocore_session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    try:
        session = boto3.Session(botocore_session=botocore_session, profile_name=profile or None)
    except botocore.exceptions.BotoCoreError as e:
        raise AnsibleError(explain_failure(e, regions[0], None)) from None
    check_regions(session, regions)

    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max(1, int(max_attempts))},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=2,
    )
    # Clients are made here, one per region, not in the threads: a boto3 Session is not
    # thread-safe, and the first client loads EC2's service model that the others reuse.
    try:
        clients = {region: session.client("ec2", region_name=region, config=config) for region in regions}
    except botocore.exceptions.BotoCoreError as e:
        raise AnsibleError(explain_failure(e, regions[0], None)) from None
    filter_sets = ec2_filters(labs, classes)

    def one_region(region: str) -> list[Record] | Exception:
        try:
            return describe_region(clients[region], region, filter_sets)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            return e

    with ThreadPoolExecutor(max_workers=len(regions), thread_name_prefix="gpu_lab_inventory") as pool:
        answers = list(pool.map(one_region, regions))

    records: list[Record] = []
    for region, answer in zip(regions, answers, strict=True):
        if isinstance(answer, Exception):
            display.vvv(f"csdl.gpu_lab.gpu_lab: DescribeInstances in {region} failed: {answer!r}")
            # A partial inventory would hide a lab as if it did not exist: fail instead.
            raise AnsibleError(explain_failure(answer, region, clients[region].meta.endpoint_url)) from None
        records.extend(answer)
    return records


def check_regions(session: Any, regions: list[str]) -> None:
    """Refuses, before any request, a region that botocore does not list for EC2.

    Without this a typo such as ``us-easst-1`` would only fail after every retry of a DNS
    lookup, and the emulator would answer it with a server error.
    """
    import botocore

    known = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    for region in regions:
        if region not in known:
            hint = f" (that is an availability zone of {region[:-1]})" if region[:-1] in known else ""
            raise AnsibleParserError(
                f"Unknown AWS region {region!r} in the gpu_lab inventory{hint}: use a region name such as "
                f"us-east-1, or upgrade boto3 if the region is newer than botocore {botocore.__version__}."
            )


def explain_failure(error: Exception, region: str, endpoint: str | None) -> str:
    """One sentence that says what went wrong and what to do, for the errors users meet."""
    import botocore.exceptions as bce

    where = f"EC2 in {region}"
    if isinstance(error, bce.NoCredentialsError):
        return (
            f"No AWS credentials found for {where}: set AWS_PROFILE (or the profile option), or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run `aws configure`."
        )
    if isinstance(error, bce.PartialCredentialsError):
        return f"The AWS credentials are incomplete ({error}): set both the access key id and the secret access key."
    if isinstance(error, bce.ProfileNotFound):
        return (
            f"{error}: fix the profile option or AWS_PROFILE, "
            "or create the profile with `aws configure --profile NAME`."
        )
    if isinstance(error, (bce.SSOError, bce.TokenRetrievalError)):
        return f"The AWS SSO session has expired or is missing ({error}): run `aws sso login` and try again."
    if isinstance(error, bce.CredentialRetrievalError):
        return f"boto3 could not get AWS credentials ({error}): check the credential source of your AWS profile."
    if isinstance(
        error, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError, bce.ConnectionClosedError)
    ):
        return (
            f"Could not reach {where} at {endpoint or 'its endpoint'} ({type(error).__name__}): check the network, "
            "the region name, and AWS_ENDPOINT_URL if it is set."
        )
    if isinstance(error, bce.ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "Unknown")
        message = (details.get("Message") or "").rstrip(".")
        tries = int(error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        if code in THROTTLING_CODES:
            return (
                f"{where} kept throttling DescribeInstances ({code}) after {tries} attempts: "
                "wait a minute and try again, or raise the inventory's max_attempts or set retry_mode: adaptive."
            )
        if code in REJECTED_CREDENTIAL_CODES:
            return (
                f"{where} rejected the AWS credentials ({code}: {message}): refresh them (`aws sso login` or new keys) "
                f"and check that region {region} is enabled for the account."
            )
        if code == "UnauthorizedOperation":
            return (
                f"The AWS identity in use may not call ec2:DescribeInstances in {region}: grant it that permission "
                "or use another profile."
            )
        return f"{where} refused DescribeInstances ({code}: {message}): fix the cause and try again."
    return (
        f"Asking {where} for the lab instances failed ({type(error).__name__}: {error}): fix the cause and try again."
    )
