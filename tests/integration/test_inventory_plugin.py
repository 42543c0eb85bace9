"""The csdl.gpu_lab.gpu_lab inventory against the emulated EC2 API, through the real CLI.

One emulator serves the module. ``world`` launches, over three regions, running and stopped
labs with and without an Elastic IP, a terminated lab and an instance of another project;
tests that add instances remove them again. Every run is ``ansible-inventory`` (or
``ansible-doc``) from the venv, in the repo (so ansible.cfg applies), with the emulator's
environment and a throwaway HOME.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from ansible.plugins.loader import init_plugin_loader

from local_cloud.cloud import Cloud
from local_cloud.emulator import Emulator
from tests.inventory_listing import hosts_of, plain

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
LAB_TAG = "gpu_lab:lab"
THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>throttled</RequestID></Response>"
)


# --- the emulated cloud ------------------------------------------------------------------


@dataclass
class World:
    """What the module's fixture launched: lab -> instance id, lab -> Elastic IP."""

    emulator: Emulator
    ids: dict[str, str] = field(default_factory=dict)
    eips: dict[str, str] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)

    def ec2(self, region: str) -> Any:
        return boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=self.emulator.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - the emulator takes any key
        )

    def launch(self, region: str, lab: str | None, *, instance_type: str = "g6.xlarge", name: str | None = None) -> str:
        ec2 = self.ec2(region)
        if region not in self.subnets:
            # A subnet that maps no public IP on launch: the only public IP is the EIP, as on AWS.
            vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]
            assert not subnet.get("MapPublicIpOnLaunch")
            self.subnets[region] = subnet["SubnetId"]
        tags = [{"Key": "Name", "Value": name or f"{lab}-server"}]
        if lab is not None:
            tags += [{"Key": LAB_TAG, "Value": lab}, {"Key": "gpu_lab:managed_by", "Value": "csdl.gpu_lab"}]
        answer = ec2.run_instances(
            ImageId=next(iter(self.emulator.dlami[region].values())),
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=self.subnets[region],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        return answer["Instances"][0]["InstanceId"]

    def attach_eip(self, region: str, instance_id: str) -> str:
        ec2 = self.ec2(region)
        address = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(InstanceId=instance_id, AllocationId=address["AllocationId"])
        return address["PublicIp"]


@pytest.fixture(scope="module")
def emulator(cloud_session: Cloud) -> Emulator:
    # moto's state is per process: the session's one emulator (tests/conftest.py), reset below.
    assert set(REGIONS) <= set(cloud_session.emulator.regions)
    return cloud_session.emulator


@pytest.fixture(scope="module")
def world(emulator: Emulator) -> World:
    emulator.reset()
    w = World(emulator)
    # us-east-1: csdl runs with its EIP, nlp is stopped and keeps its EIP, legacy is gone,
    # and an instance of another project has no lab tag.
    w.ids["csdl"] = w.launch("us-east-1", "csdl", instance_type="g5.xlarge")
    w.eips["csdl"] = w.attach_eip("us-east-1", w.ids["csdl"])
    w.ids["nlp"] = w.launch("us-east-1", "nlp")
    w.eips["nlp"] = w.attach_eip("us-east-1", w.ids["nlp"])
    w.ec2("us-east-1").stop_instances(InstanceIds=[w.ids["nlp"]])
    w.ids["legacy"] = w.launch("us-east-1", "legacy")
    w.ec2("us-east-1").terminate_instances(InstanceIds=[w.ids["legacy"]])
    w.ids["other"] = w.launch("us-east-1", None, name="web-frontend")
    # us-west-2: vision runs, with a dotted lab name and a bigger type.
    w.ids["vision.2"] = w.launch("us-west-2", "vision.2", instance_type="g6.2xlarge")
    w.eips["vision.2"] = w.attach_eip("us-west-2", w.ids["vision.2"])
    # eu-west-1: rl is stopped and has no EIP, so no public IP at all.
    w.ids["rl"] = w.launch("eu-west-1", "rl")
    w.ec2("eu-west-1").stop_instances(InstanceIds=[w.ids["rl"]])
    emulator.calls.reset()
    return w


@pytest.fixture
def extra_instances(world: World) -> Iterator[list[tuple[str, str]]]:
    """Instances a test launches (region, id); terminated afterwards, so the world is as before."""
    launched: list[tuple[str, str]] = []
    yield launched
    for region, instance_id in launched:
        world.ec2(region).terminate_instances(InstanceIds=[instance_id])


# --- running the CLI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


def cli_env(emulator: Emulator, home: Path, **overrides: str | None) -> dict[str, str]:
    # Nothing from the developer's own AWS setup may leak in: only the emulator's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(emulator.env())
    env.update(
        {
            "HOME": str(home),
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",  # a source that fails fails the command
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(command: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def source(tmp_path: Path, name: str = "test", **config: Any) -> Path:
    path = tmp_path / f"{name}.gpu_lab.yml"
    path.write_text(yaml.safe_dump({"plugin": "csdl.gpu_lab.gpu_lab", "regions": list(REGIONS), **config}))
    return path


def inventory_list(path: Path | str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    done = run("ansible-inventory", "-i", str(path), "--list", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return plain(json.loads(done.stdout))


def graph(text: str) -> dict[str, set[str]]:
    """`ansible-inventory --graph` as group -> hosts directly in it."""
    groups: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        if match := re.search(r"--@(.+):$", line):
            current = match.group(1)
            groups[current] = set()
        elif match := re.search(r"\|--([^@].*)$", line):
            groups[current].add(match.group(1))
    return groups


def describe_calls(emulator: Emulator) -> int:
    return emulator.calls.snapshot()["by_action"].get("ec2:DescribeInstances", 0)


# --- the inventory -----------------------------------------------------------------------


def test_every_lab_across_regions(world: World, home: Path, tmp_path: Path) -> None:
    world.emulator.calls.reset()
    listing = inventory_list(source(tmp_path), cli_env(world.emulator, home))
    hostvars = listing["_meta"]["hostvars"]

    assert set(hostvars) == {"csdl-server", "nlp-server", "vision.2-server", "rl-server"}
    assert hosts_of(listing, "gpu_lab") == {"csdl-server", "vision.2-server"}
    assert hosts_of(listing, "stopped") == {"nlp-server", "rl-server"}
    assert hosts_of(listing, "csdl") == {"csdl-server"}
    assert hosts_of(listing, "vision_2") == {"vision.2-server"}
    assert "nlp" not in listing and "rl" not in listing, "stopped labs are in no lab group"
    assert hosts_of(listing, "state_running") == {"csdl-server", "vision.2-server"}
    assert hosts_of(listing, "state_stopped") == {"nlp-server", "rl-server"}
    assert hosts_of(listing, "type_g5_xlarge") == {"csdl-server"}
    assert hosts_of(listing, "type_g6_2xlarge") == {"vision.2-server"}
    assert hosts_of(listing, "type_g6_xlarge") == {"nlp-server", "rl-server"}
    assert hosts_of(listing, "region_us_east_1") == {"csdl-server", "nlp-server"}
    assert hosts_of(listing, "region_us_west_2") == {"vision.2-server"}
    assert hosts_of(listing, "region_eu_west_1") == {"rl-server"}
    # One DescribeInstances per region: server-side filters, one page of up to 1000.
    assert world.emulator.calls.snapshot()["by_action"] == {"ec2:DescribeInstances": 3}

    csdl = hostvars["csdl-server"]
    assert csdl["ansible_host"] == world.eips["csdl"]
    assert csdl["ansible_user"] == "ubuntu"
    assert csdl["ansible_ssh_private_key_file"] == f"{home}/.ssh/csdl-server.pem"
    assert csdl["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={home}/.gpu_lab/csdl/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    )
    assert csdl["gpu_lab_host_lab"] == "csdl"
    assert csdl["gpu_lab_host_instance_id"] == world.ids["csdl"]
    assert csdl["gpu_lab_host_instance_type"] == "g5.xlarge"
    assert csdl["gpu_lab_host_state"] == "running"
    assert csdl["gpu_lab_host_region"] == "us-east-1"
    assert csdl["gpu_lab_host_zone"].startswith("us-east-1")
    assert csdl["gpu_lab_host_ami"] in world.emulator.dlami["us-east-1"].values()
    assert csdl["gpu_lab_host_public_ip"] == world.eips["csdl"]
    assert csdl["gpu_lab_host_tags"] == {"Name": "csdl-server", LAB_TAG: "csdl", "gpu_lab:managed_by": "csdl.gpu_lab"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", csdl["gpu_lab_host_launch_time"])

    # A stopped instance keeps its Elastic IP; one without an EIP has nothing to connect to.
    assert hostvars["nlp-server"]["ansible_host"] == world.eips["nlp"]
    assert hostvars["nlp-server"]["gpu_lab_host_state"] == "stopped"
    assert "ansible_host" not in hostvars["rl-server"]
    assert hostvars["rl-server"]["gpu_lab_host_public_ip"] is None
    assert hostvars["vision.2-server"]["gpu_lab_host_region"] == "us-west-2"


def test_graph(world: World, home: Path, tmp_path: Path) -> None:
    done = run("ansible-inventory", "-i", str(source(tmp_path)), "--graph", env=cli_env(world.emulator, home))
    assert done.returncode == 0, done.stderr
    groups = graph(done.stdout)
    assert groups["gpu_lab"] == {"csdl-server", "vision.2-server"}
    assert groups["stopped"] == {"nlp-server", "rl-server"}
    assert groups["csdl"] == {"csdl-server"}
    assert groups["region_eu_west_1"] == {"rl-server"}
    assert "WARNING" not in done.stderr, done.stderr


def test_only_the_listed_labs(world: World, home: Path, tmp_path: Path) -> None:
    listing = inventory_list(source(tmp_path, labs=["csdl", "rl", "nosuchlab"]), cli_env(world.emulator, home))
    assert set(listing["_meta"]["hostvars"]) == {"csdl-server", "rl-server"}
    assert hosts_of(listing, "gpu_lab") == {"csdl-server"}
    assert hosts_of(listing, "stopped") == {"rl-server"}


def test_the_shipped_lab_inventory(world: World, home: Path) -> None:
    """`-i inventories/csdl`, what ansible.cfg uses: the csdl lab in us-east-1, plus this machine
    as the lab's one host of group `labs`, which the playbooks act on."""
    env = cli_env(world.emulator, home)
    listing = inventory_list("inventories/csdl", env)
    assert set(listing["_meta"]["hostvars"]) == {"csdl-server", "localhost"}
    assert hosts_of(listing, "gpu_lab") == {"csdl-server"}
    assert hosts_of(listing, "labs") == {"localhost"}

    done = run("ansible-inventory", "--host", "csdl-server", env=env)  # the default inventory of ansible.cfg
    assert done.returncode == 0, done.stderr
    hostvars = plain(json.loads(done.stdout))
    assert hostvars["ansible_host"] == world.eips["csdl"]
    # The fact about the instance wins over the lab setting of the same name on that host.
    assert hostvars["gpu_lab_host_instance_type"] == "g5.xlarge"
    assert hostvars["gpu_lab_name"] == "csdl", "group_vars/all still apply"


def test_empty_regions(world: World, home: Path, tmp_path: Path) -> None:
    listing = inventory_list(source(tmp_path, regions=["ap-southeast-2", "sa-east-1"]), cli_env(world.emulator, home))
    assert listing["_meta"]["hostvars"] == {}
    assert set(listing["all"]["children"]) >= {"gpu_lab", "stopped"}


def test_two_instances_of_one_lab(
    world: World, home: Path, tmp_path: Path, extra_instances: list[tuple[str, str]]
) -> None:
    second = world.launch("eu-west-1", "csdl")
    extra_instances.append(("eu-west-1", second))
    done = run("ansible-inventory", "-i", str(source(tmp_path)), "--list", env=cli_env(world.emulator, home))
    assert done.returncode == 0, done.stderr
    listing = plain(json.loads(done.stdout))
    hostvars = listing["_meta"]["hostvars"]
    # The one launched first keeps the name; the other is told apart by its id, in the lab's groups.
    assert hostvars["csdl-server"]["gpu_lab_host_instance_id"] == world.ids["csdl"]
    assert hostvars[f"csdl-server-{second}"]["gpu_lab_host_region"] == "eu-west-1"
    assert hosts_of(listing, "csdl") == {"csdl-server", f"csdl-server-{second}"}
    assert "Lab csdl has 2 instances" in " ".join(done.stderr.split())


def test_compose_and_keyed_groups(world: World, home: Path, tmp_path: Path) -> None:
    config = {
        "compose": {"ansible_port": "2222", "managed_by": "gpu_lab_host_tags['gpu_lab:managed_by']"},
        "groups": {"needs_attention": "gpu_lab_host_public_ip is none"},
        "keyed_groups": [{"key": "gpu_lab_host_region", "prefix": "aws"}],
        "user": "student",
        "key_dir": str(tmp_path / "keys"),
    }
    listing = inventory_list(source(tmp_path, **config), cli_env(world.emulator, home))
    csdl = listing["_meta"]["hostvars"]["csdl-server"]
    assert csdl["ansible_port"] == 2222
    assert csdl["managed_by"] == "csdl.gpu_lab"
    assert csdl["ansible_user"] == "student"
    assert csdl["ansible_ssh_private_key_file"] == str(tmp_path / "keys" / "csdl-server.pem")
    assert hosts_of(listing, "needs_attention") == {"rl-server"}
    assert hosts_of(listing, "aws_us_east_1") == {"csdl-server", "nlp-server"}


def test_tag_values_are_never_templated(
    world: World, home: Path, tmp_path: Path, extra_instances: list[tuple[str, str]]
) -> None:
    """Whoever can tag an instance must not be able to run Jinja on the workstation."""
    ec2 = world.ec2("us-east-1")
    evil = world.launch("us-east-1", "evil")
    extra_instances.append(("us-east-1", evil))
    ec2.create_tags(Resources=[evil], Tags=[{"Key": "course", "Value": "{{ 6 * 7 }}"}])
    path = source(tmp_path, labs=["evil"], compose={"course": "gpu_lab_host_tags.course"})
    done = run(
        "ansible", "evil-server", "-i", str(path), "-m", "ansible.builtin.debug", "-a", "msg={{ course }}",
        env=cli_env(world.emulator, home),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "{{ 6 * 7 }}" in done.stdout
    assert "42" not in done.stdout


def test_pages_are_followed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Called in-process with a page of one reservation, so every region needs several pages."""
    if not (REPO / ".ansible" / "collections" / "ansible_collections" / "csdl" / "gpu_lab").exists():
        pytest.skip("the csdl.gpu_lab collection link is missing: run scripts/bootstrap.sh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # configured already by another test module: fine
        init_plugin_loader([str(REPO / ".ansible" / "collections")])
    gpu_lab = importlib.import_module("ansible_collections.csdl.gpu_lab.plugins.inventory.gpu_lab")
    for key, value in world.emulator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(gpu_lab, "PAGE_SIZE", 1)

    world.emulator.calls.reset()
    records = gpu_lab.query_ec2(list(REGIONS), [])
    assert {r["lab"] for r in records} == {"csdl", "nlp", "vision.2", "rl"}
    # moto answers a page of one with a NextToken while more remain: one request per instance.
    assert describe_calls(world.emulator) == len(records)


# --- classes: the labs of a roster, by their gpu_lab:class tag -----------------------------

CLASS_TAG = "gpu_lab:class"
STUDENT_TAG = "gpu_lab:student"


def launch_class_lab(
    world: World,
    extra: list[tuple[str, str]],
    region: str,
    class_name: str,
    student: str | None,
    lab: str | None = None,
) -> str:
    """A lab of a class as the roster playbooks tag it: lab <class>-<student>, plus class and student."""
    lab = lab or f"{class_name}-{student or 'nobody'}"
    instance_id = world.launch(region, lab)
    extra.append((region, instance_id))
    tags = [{"Key": CLASS_TAG, "Value": class_name}]
    if student is not None:
        tags.append({"Key": STUDENT_TAG, "Value": student})
    world.ec2(region).create_tags(Resources=[instance_id], Tags=tags)
    return instance_id


@pytest.fixture
def classes(world: World, extra_instances: list[tuple[str, str]]) -> dict[str, str]:
    """dl2026: alice and bob run (two regions), carol is stopped; nlp-fall: dave runs. Lab -> instance id."""
    ids = {
        "dl2026-alice": launch_class_lab(world, extra_instances, "us-east-1", "dl2026", "alice"),
        "dl2026-bob": launch_class_lab(world, extra_instances, "us-west-2", "dl2026", "bob"),
        "dl2026-carol": launch_class_lab(world, extra_instances, "us-east-1", "dl2026", "carol"),
        "nlp-fall-dave": launch_class_lab(world, extra_instances, "eu-west-1", "nlp-fall", "dave"),
    }
    world.ec2("us-east-1").stop_instances(InstanceIds=[ids["dl2026-carol"]])
    return ids


def test_classes_find_the_labs_of_a_class(world: World, home: Path, tmp_path: Path, classes: dict[str, str]) -> None:
    world.emulator.calls.reset()
    listing = inventory_list(source(tmp_path, classes=["dl2026", "ml-spring"]), cli_env(world.emulator, home))
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == {"dl2026-alice-server", "dl2026-bob-server", "dl2026-carol-server"}
    # One request per region: the class tag filtered on the server.
    assert world.emulator.calls.snapshot()["by_action"] == {"ec2:DescribeInstances": 3}
    # Like a lab's group, the class group holds the hosts a play can reach: the stopped one is in `stopped`.
    assert hosts_of(listing, "class_dl2026") == {"dl2026-alice-server", "dl2026-bob-server"}
    assert hosts_of(listing, "stopped") == {"dl2026-carol-server"}
    assert hosts_of(listing, "gpu_lab") == {"dl2026-alice-server", "dl2026-bob-server"}
    assert hosts_of(listing, "dl2026_alice") == {"dl2026-alice-server"}, "the lab's own group as before"
    assert "class_ml_spring" in listing["all"]["children"], "a configured class's group exists while empty"

    alice = hostvars["dl2026-alice-server"]
    assert alice["ansible_ssh_private_key_file"] == f"{home}/.ssh/dl2026-admin.pem", "the class admin key"
    assert alice["gpu_lab_host_class"] == "dl2026"
    assert alice["gpu_lab_host_student"] == "alice"
    assert alice["gpu_lab_host_lab"] == "dl2026-alice"
    assert alice["gpu_lab_host_instance_id"] == classes["dl2026-alice"]
    assert f"UserKnownHostsFile={home}/.gpu_lab/dl2026-alice/known_hosts" in alice["ansible_ssh_common_args"]
    assert hostvars["dl2026-bob-server"]["gpu_lab_host_region"] == "us-west-2"
    assert hostvars["dl2026-carol-server"]["gpu_lab_host_student"] == "carol"


def test_labs_or_classes(world: World, home: Path, tmp_path: Path, classes: dict[str, str]) -> None:
    """Listed when it matches labs or classes; a lab named in both is one host, asked for twice."""
    world.emulator.calls.reset()
    path = source(tmp_path, labs=["csdl", "nlp-fall-dave"], classes=["nlp-fall"])
    done = run("ansible-inventory", "-i", str(path), "--list", env=cli_env(world.emulator, home))
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    listing = plain(json.loads(done.stdout))
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == {"csdl-server", "nlp-fall-dave-server"}
    assert world.emulator.calls.snapshot()["by_action"] == {"ec2:DescribeInstances": 6}, "labs, then classes"
    assert hostvars["csdl-server"]["ansible_ssh_private_key_file"] == f"{home}/.ssh/csdl-server.pem"
    assert "gpu_lab_host_class" not in hostvars["csdl-server"]
    assert hostvars["nlp-fall-dave-server"]["ansible_ssh_private_key_file"] == f"{home}/.ssh/nlp-fall-admin.pem"
    assert hosts_of(listing, "class_nlp_fall") == {"nlp-fall-dave-server"}


def test_every_lab_includes_the_class_labs(world: World, home: Path, tmp_path: Path, classes: dict[str, str]) -> None:
    listing = inventory_list(source(tmp_path), cli_env(world.emulator, home))
    hostvars = listing["_meta"]["hostvars"]
    assert {f"{lab}-server" for lab in classes} | {"csdl-server", "nlp-server"} <= set(hostvars)
    assert hosts_of(listing, "class_nlp_fall") == {"nlp-fall-dave-server"}
    assert hosts_of(listing, "class_dl2026") == {"dl2026-alice-server", "dl2026-bob-server"}
    assert hostvars["nlp-fall-dave-server"]["gpu_lab_host_class"] == "nlp-fall"


def test_class_without_student_tag_and_bad_class_tag(
    world: World, home: Path, tmp_path: Path, extra_instances: list[tuple[str, str]]
) -> None:
    launch_class_lab(world, extra_instances, "us-east-1", "dl2026", None)
    launch_class_lab(world, extra_instances, "us-east-1", "Bad/Class", "eve", lab="eve-lab")
    done = run("ansible-inventory", "-i", str(source(tmp_path, regions=["us-east-1"])), "--list",
               env=cli_env(world.emulator, home))  # fmt: skip
    assert done.returncode == 0, done.stderr
    hostvars = plain(json.loads(done.stdout))["_meta"]["hostvars"]
    assert hostvars["dl2026-nobody-server"]["gpu_lab_host_student"] is None
    assert hostvars["dl2026-nobody-server"]["gpu_lab_host_class"] == "dl2026"
    assert "eve-lab-server" not in hostvars, "a class tag that could climb out of key_dir is skipped"
    assert "its gpu_lab:class tag 'Bad/Class' is not a valid class name" in " ".join(done.stderr.split())


def test_many_classes_take_one_request_per_200(world: World, home: Path, tmp_path: Path) -> None:
    many = [f"class-{n:03d}" for n in range(250)]
    world.emulator.calls.reset()
    listing = inventory_list(source(tmp_path, regions=["us-east-1"], classes=many), cli_env(world.emulator, home))
    assert listing["_meta"]["hostvars"] == {}
    assert describe_calls(world.emulator) == 2, "EC2 takes at most 200 values per filter"
    assert "class_class_249" in listing["all"]["children"]


def test_cache_of_other_classes_is_not_used(world: World, home: Path, tmp_path: Path, classes: dict[str, str]) -> None:
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache")}
    env = cli_env(world.emulator, home)
    first = inventory_list(source(tmp_path, classes=["dl2026"], **cache), env)
    assert "nlp-fall-dave-server" not in first["_meta"]["hostvars"]
    world.emulator.calls.reset()
    listing = inventory_list(source(tmp_path, classes=["dl2026", "nlp-fall"], **cache), env)  # same file
    assert describe_calls(world.emulator) == 3
    assert "nlp-fall-dave-server" in listing["_meta"]["hostvars"]
    world.emulator.calls.reset()
    inventory_list(source(tmp_path, classes=["dl2026", "nlp-fall"], **cache), env)
    assert world.emulator.calls.snapshot()["total"] == 0, "the same classes hit the cache"


@pytest.mark.parametrize("name", ["DL2026", "dl2026-", "x", "a/b"])
def test_invalid_class_option(world: World, home: Path, tmp_path: Path, name: str) -> None:
    world.emulator.calls.reset()
    done = run("ansible-inventory", "-i", str(source(tmp_path, classes=[name])), "--list",
               env=cli_env(world.emulator, home))  # fmt: skip
    message = failure(done)
    assert f"The class name {name!r} in the gpu_lab inventory is not valid" in message, message
    assert world.emulator.calls.snapshot()["total"] == 0


# --- the cache ---------------------------------------------------------------------------


def test_cache_hit_asks_nothing_and_flush_asks_again(
    world: World, home: Path, tmp_path: Path, extra_instances: list[tuple[str, str]]
) -> None:
    cache_dir = tmp_path / "cache"
    path = source(tmp_path, cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(cache_dir))
    env = cli_env(world.emulator, home)

    world.emulator.calls.reset()
    cold = inventory_list(path, env)
    assert describe_calls(world.emulator) == 3
    assert list(cache_dir.iterdir()), "the cache was written"

    world.emulator.calls.reset()
    hit = inventory_list(path, env)
    assert world.emulator.calls.snapshot()["total"] == 0, "a cache hit makes no API call at all"
    assert hit == cold

    late = world.launch("us-west-2", "late")
    extra_instances.append(("us-west-2", late))
    world.emulator.calls.reset()
    stale = inventory_list(path, env)
    assert world.emulator.calls.snapshot()["total"] == 0
    assert "late-server" not in stale["_meta"]["hostvars"]

    flushed = inventory_list(path, env, "--flush-cache")
    assert describe_calls(world.emulator) == 3
    assert flushed["_meta"]["hostvars"]["late-server"]["gpu_lab_host_instance_id"] == late

    world.emulator.calls.reset()
    again = inventory_list(path, env)
    assert world.emulator.calls.snapshot()["total"] == 0
    assert "late-server" in again["_meta"]["hostvars"], "--flush-cache rewrote the cache"


def test_cache_of_other_labs_is_not_used(world: World, home: Path, tmp_path: Path) -> None:
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache")}
    env = cli_env(world.emulator, home)
    inventory_list(source(tmp_path, labs=["csdl"], **cache), env)
    world.emulator.calls.reset()
    listing = inventory_list(source(tmp_path, labs=["csdl", "nlp"], **cache), env)  # same file, other labs
    assert describe_calls(world.emulator) == 3
    assert set(listing["_meta"]["hostvars"]) == {"csdl-server", "nlp-server"}


# --- failures: one sentence, no traceback --------------------------------------------------


def failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    return " ".join(done.stderr.split())


@pytest.mark.parametrize("retry_mode", ["standard", "adaptive"])
def test_throttling_after_retries(world: World, home: Path, tmp_path: Path, retry_mode: str) -> None:
    def throttle(environ: dict[str, Any], body: bytes, action: str | None) -> tuple[int, dict[str, str], bytes] | None:
        if action == "ec2:DescribeInstances":
            return 503, {"Content-Type": "text/xml"}, THROTTLED
        return None

    world.emulator.interceptors.append(throttle)
    try:
        world.emulator.calls.reset()
        path = source(tmp_path, regions=["us-east-1"], max_attempts=2, retry_mode=retry_mode)
        done = run("ansible-inventory", "-i", str(path), "--list", env=cli_env(world.emulator, home))
    finally:
        world.emulator.interceptors.remove(throttle)
    message = failure(done)
    assert (
        "EC2 in us-east-1 kept throttling DescribeInstances (RequestLimitExceeded) after 2 attempts: "
        "wait a minute and try again" in message
    ), message
    assert describe_calls(world.emulator) == 2, "botocore retried once, then gave up"


def test_unreachable_endpoint(world: World, home: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(world.emulator, home, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    done = run("ansible-inventory", "-i", str(source(tmp_path, max_attempts=1)), "--list", env=env)
    message = failure(done)
    assert (
        f"Could not reach EC2 in us-east-1 at http://127.0.0.1:{port} (EndpointConnectionError): check the network"
        in (message)
    ), message


def test_no_credentials(world: World, home: Path, tmp_path: Path) -> None:
    env = cli_env(
        world.emulator,
        home,
        AWS_ACCESS_KEY_ID=None,
        AWS_SECRET_ACCESS_KEY=None,
        AWS_SESSION_TOKEN=None,
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    world.emulator.calls.reset()
    message = failure(run("ansible-inventory", "-i", str(source(tmp_path)), "--graph", env=env))
    assert "No AWS credentials found for EC2 in us-east-1: set AWS_PROFILE (or the profile option)" in message, message
    assert world.emulator.calls.snapshot()["total"] == 0


def test_unknown_region(world: World, home: Path, tmp_path: Path) -> None:
    path = source(tmp_path, regions=["us-east-1", "us-west-2a"])
    world.emulator.calls.reset()
    message = failure(run("ansible-inventory", "-i", str(path), "--list", env=cli_env(world.emulator, home)))
    assert (
        "Unknown AWS region 'us-west-2a' in the gpu_lab inventory (that is an availability zone of us-west-2): "
        "use a region name such as us-east-1, or upgrade boto3 if the region is newer than botocore" in message
    ), message
    assert world.emulator.calls.snapshot()["total"] == 0, "refused before any request"


# --- documentation -----------------------------------------------------------------------


def test_ansible_doc_renders(home: Path, emulator: Emulator) -> None:
    done = run("ansible-doc", "-t", "inventory", "csdl.gpu_lab.gpu_lab", env=cli_env(emulator, home))
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for expected in (
        "regions",
        "labs",
        "classes",
        "key_dir",
        "state_dir",
        "retry_mode",
        "keyed_groups",
        "cache_plugin",
    ):
        assert expected in text
    assert "EXAMPLES" in text
    assert "plugin: csdl.gpu_lab.gpu_lab" in text
