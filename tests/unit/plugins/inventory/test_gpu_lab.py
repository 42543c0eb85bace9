"""Unit tests of the csdl.gpu_lab.gpu_lab inventory plugin, with Ansible's real objects.

EC2 is never asked here: the tests that need instances hand ready-made records to the
plugin's one query seam (``_query``), and the error tests point botocore at a closed loopback
port or build botocore's own exceptions. tests/integration/test_inventory_plugin.py runs the
plugin against the emulated EC2 API and through the real CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    UnauthorizedSSOTokenError,
)

from tests.unit.collection import load

REPO = Path(__file__).resolve().parents[4]
PLUGIN = "csdl.gpu_lab.gpu_lab"


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_lab() -> ModuleType:
    """The plugin's module, loaded the way Ansible loads it: through the collection loader."""
    return load("inventory.gpu_lab")


class Recorder:
    """Stands in for the plugin's Display: keeps the warnings so tests can read them."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.warnings.append(msg)

    def __getattr__(self, name: str) -> Callable[..., None]:  # v(), vvv(), debug(): ignored
        return lambda *args, **kwargs: None


class Run:
    """One parse of one config file by a fresh plugin, with the records EC2 would answer."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], records: list[dict[str, Any]] | None = None) -> None:
        self.path = tmp_path / "test.gpu_lab.yml"
        self.path.write_text(yaml.safe_dump({"plugin": PLUGIN, **config}))
        self.records = records or []
        self.queries: list[tuple[list[str], list[str]]] = []
        self.inventory = InventoryData()
        self.plugin = inventory_loader.get(PLUGIN)
        self.plugin.display = Recorder()
        self.plugin._query = self._query

    def _query(self, regions: list[str], labs: list[str]) -> list[dict[str, Any]]:
        self.queries.append((regions, labs))
        return [dict(r) for r in self.records]

    def parse(self, cache: bool = True) -> Run:
        self.plugin.parse(self.inventory, DataLoader(), str(self.path), cache=cache)
        if self.plugin.get_option("cache"):
            self.plugin.update_cache_if_changed()  # what InventoryManager does after parse()
        return self

    # what a test reads
    def hosts(self) -> set[str]:
        return set(self.inventory.hosts)

    def group(self, name: str) -> set[str]:
        return {h.name for h in self.inventory.groups[name].get_hosts()}

    def vars(self, host: str) -> dict[str, Any]:
        return self.inventory.get_host(host).get_vars()

    @property
    def warnings(self) -> list[str]:
        return self.plugin.display.warnings


def record(lab: str = "csdl", **overrides: Any) -> dict[str, Any]:
    """A record as query_ec2 makes it from DescribeInstances."""
    base = {
        "id": f"i-0{zlib.crc32(lab.encode()):016x}",
        "region": "us-east-1",
        "lab": lab,
        "state": "running",
        "type": "g6.xlarge",
        "zone": "us-east-1a",
        "launch_time": "2025-10-20T08:00:00+00:00",
        "ami": "ami-0123456789abcdef0",
        "public_ip": "203.0.113.10",
        "tags": {"gpu_lab:lab": lab, "Name": f"{lab}-server", "gpu_lab:managed_by": "csdl.gpu_lab"},
    }
    return {**base, **overrides}


@pytest.fixture
def run(gpu_lab: ModuleType, tmp_path: Path) -> Callable[..., Run]:
    def make(config: dict[str, Any] | None = None, records: list[dict[str, Any]] | None = None) -> Run:
        return Run(tmp_path, {"regions": ["us-east-1"], **(config or {})}, records)

    return make


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment where boto3's chain finds nothing, and nothing could leave loopback."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- verify_file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("lab.gpu_lab.yml", True),
        ("lab.gpu_lab.yaml", True),
        ("gpu_lab.yml", True),
        ("lab.aws_ec2.yml", False),
        ("lab.yml", False),
        ("gpu_lab.json", False),
        ("lab.gpu_lab.yml.bak", False),
    ],
)
def test_verify_file_accepts_only_its_own_suffix(
    gpu_lab: ModuleType, tmp_path: Path, name: str, accepted: bool
) -> None:
    path = tmp_path / name
    path.write_text(f"plugin: {PLUGIN}\nregions: [us-east-1]\n")
    assert inventory_loader.get(PLUGIN).verify_file(str(path)) is accepted


def test_verify_file_refuses_a_missing_file(gpu_lab: ModuleType, tmp_path: Path) -> None:
    assert inventory_loader.get(PLUGIN).verify_file(str(tmp_path / "absent.gpu_lab.yml")) is False


def test_the_shipped_lab_source_is_accepted_and_valid(gpu_lab: ModuleType) -> None:
    path = REPO / "inventories" / "csdl" / "lab.gpu_lab.yml"
    assert inventory_loader.get(PLUGIN).verify_file(str(path))
    assert yaml.safe_load(path.read_text()) == {"plugin": PLUGIN, "regions": ["us-east-1"], "labs": ["csdl"]}


# --- options -----------------------------------------------------------------------------


def test_option_defaults(run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    r = run().parse()
    get = r.plugin.get_option
    assert get("regions") == ["us-east-1"]
    assert get("labs") == []
    assert get("profile") is None
    assert get("user") == "ubuntu"
    assert get("key_dir") == str(tmp_path / "home" / ".ssh")
    assert get("state_dir") == str(tmp_path / "home" / ".gpu_lab")
    assert get("retry_mode") == "standard"
    assert get("max_attempts") == 5
    assert get("cache") is False
    assert get("strict") is False


def test_options_are_read_from_the_file(run: Callable[..., Run], tmp_path: Path) -> None:
    config = {
        "regions": ["us-east-1", "eu-west-1", "us-east-1"],
        "labs": ["csdl", "nlp", "csdl"],
        "profile": "course",
        "user": "student",
        "key_dir": str(tmp_path / "keys"),
        "state_dir": str(tmp_path / "state"),
        "retry_mode": "adaptive",
        "max_attempts": 2,
    }
    r = run(config).parse()
    assert r.queries == [(["us-east-1", "eu-west-1"], ["csdl", "nlp"])], "duplicates are asked once"
    assert r.plugin.get_option("profile") == "course"
    assert r.plugin.get_option("retry_mode") == "adaptive"
    assert r.plugin.get_option("max_attempts") == 2


def test_max_attempts_follows_aws_max_attempts(run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    assert run().parse().plugin.get_option("max_attempts") == 7


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"regions": None}, "regions"),
        ({"regions": []}, "lists no regions"),
        ({"retry_mode": "legacy"}, "retry_mode"),
        ({"labs": ["my lab"]}, "lab name 'my lab'"),
        ({"labs": ["../etc"]}, "lab name '../etc'"),
    ],
)
def test_bad_options_are_refused(run: Callable[..., Run], config: dict[str, Any], message: str) -> None:
    r = run(config)
    if config.get("regions", 1) is None:
        r.path.write_text(f"plugin: {PLUGIN}\n")
    with pytest.raises(AnsibleError, match=message):
        r.parse()
    assert r.queries == []


def test_another_plugins_file_is_refused(run: Callable[..., Run]) -> None:
    r = run()
    r.path.write_text("plugin: amazon.aws.aws_ec2\nregions: [us-east-1]\n")
    with pytest.raises(AnsibleParserError, match="Incorrect plugin name"):
        r.parse()


def test_documentation_covers_every_option(gpu_lab: ModuleType) -> None:
    doc = yaml.safe_load(gpu_lab.DOCUMENTATION)
    assert doc["name"] == "gpu_lab"
    assert set(doc["extends_documentation_fragment"]) == {"constructed", "inventory_cache"}
    assert set(doc["options"]) == {
        "plugin",
        "regions",
        "labs",
        "classes",
        "profile",
        "user",
        "key_dir",
        "state_dir",
        "retry_mode",
        "max_attempts",
    }
    for example in yaml.safe_load_all(gpu_lab.EXAMPLES):
        assert example["plugin"] == PLUGIN
        assert set(example) <= set(doc["options"]) | {
            "cache",
            "cache_plugin",
            "cache_connection",
            "cache_timeout",
            "compose",
            "groups",
            "keyed_groups",
        }


# --- hosts, variables, groups --------------------------------------------------------------


def test_host_variables(run: Callable[..., Run], tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = {"key_dir": str(home / ".ssh"), "state_dir": str(home / ".gpu_lab")}
    r = run(config, [record("csdl")]).parse()
    assert r.hosts() == {"csdl-server"}
    hostvars = r.vars("csdl-server")
    assert hostvars["ansible_host"] == "203.0.113.10"
    assert hostvars["ansible_user"] == "ubuntu"
    assert hostvars["ansible_ssh_private_key_file"] == f"{home}/.ssh/csdl-server.pem"
    assert hostvars["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={home}/.gpu_lab/csdl/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    )
    facts = {k: v for k, v in hostvars.items() if k.startswith("gpu_lab_")}
    assert facts == {
        "gpu_lab_host_lab": "csdl",
        "gpu_lab_host_instance_id": record("csdl")["id"],
        "gpu_lab_host_instance_type": "g6.xlarge",
        "gpu_lab_host_state": "running",
        "gpu_lab_host_zone": "us-east-1a",
        "gpu_lab_host_region": "us-east-1",
        "gpu_lab_host_launch_time": "2025-10-20T08:00:00+00:00",
        "gpu_lab_host_ami": "ami-0123456789abcdef0",
        "gpu_lab_host_public_ip": "203.0.113.10",
        "gpu_lab_host_tags": {"gpu_lab:lab": "csdl", "Name": "csdl-server", "gpu_lab:managed_by": "csdl.gpu_lab"},
    }


def test_default_paths_are_under_home(run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    hostvars = run({"user": "admin"}, [record("nlp")]).parse().vars("nlp-server")
    assert hostvars["ansible_user"] == "admin"
    assert hostvars["ansible_ssh_private_key_file"] == f"{tmp_path}/.ssh/nlp-server.pem"
    assert f"UserKnownHostsFile={tmp_path}/.gpu_lab/nlp/known_hosts" in hostvars["ansible_ssh_common_args"]


def test_a_state_dir_with_a_space_stays_one_ssh_argument(run: Callable[..., Run], tmp_path: Path) -> None:
    state_dir = tmp_path / "my labs"
    hostvars = run({"state_dir": str(state_dir)}, [record("csdl")]).parse().vars("csdl-server")
    assert f"-o UserKnownHostsFile='{state_dir}/csdl/known_hosts' " in hostvars["ansible_ssh_common_args"]


def test_a_host_without_public_ip_has_no_ansible_host(run: Callable[..., Run]) -> None:
    hostvars = run(records=[record("csdl", state="stopped", public_ip=None)]).parse().vars("csdl-server")
    assert "ansible_host" not in hostvars
    assert hostvars["gpu_lab_host_public_ip"] is None


def test_groups_by_state(run: Callable[..., Run]) -> None:
    records = [
        record("csdl", state="running"),
        record("nlp", state="pending", type="g5.2xlarge"),
        record("vision", state="stopped", public_ip=None, region="eu-west-1", zone="eu-west-1b"),
        record("rl", state="stopping", region="us-west-2"),
    ]
    r = run({"regions": ["us-east-1", "eu-west-1", "us-west-2"]}, records).parse()
    assert r.hosts() == {"csdl-server", "nlp-server", "vision-server", "rl-server"}
    assert r.group("gpu_lab") == {"csdl-server", "nlp-server"}
    assert r.group("csdl") == {"csdl-server"}
    assert r.group("nlp") == {"nlp-server"}
    assert r.group("stopped") == {"vision-server", "rl-server"}
    assert "vision" not in r.inventory.groups, "a stopped lab gets no lab group"
    assert r.group("state_running") == {"csdl-server"}
    assert r.group("state_pending") == {"nlp-server"}
    assert r.group("state_stopped") == {"vision-server"}
    assert r.group("state_stopping") == {"rl-server"}
    assert r.group("type_g6_xlarge") == {"csdl-server", "vision-server", "rl-server"}
    assert r.group("type_g5_2xlarge") == {"nlp-server"}
    assert r.group("region_us_east_1") == {"csdl-server", "nlp-server"}
    assert r.group("region_eu_west_1") == {"vision-server"}
    assert r.group("region_us_west_2") == {"rl-server"}


def test_configured_labs_have_a_group_even_without_a_running_host(run: Callable[..., Run]) -> None:
    r = run({"labs": ["csdl", "nlp"]}, [record("csdl", state="stopped")]).parse()
    assert r.group("csdl") == set()
    assert r.group("nlp") == set()
    assert r.group("gpu_lab") == set()
    assert r.group("stopped") == {"csdl-server"}


@pytest.mark.parametrize(
    ("lab", "group"),
    [
        ("my-lab", "my_lab"),
        ("deep.learning", "deep_learning"),
        ("2025fall", "_025fall"),
        ("stopped", "lab_stopped"),
        ("all", "lab_all"),
        ("gpu_lab", "lab_gpu_lab"),
    ],
)
def test_lab_names_become_valid_group_names(run: Callable[..., Run], lab: str, group: str) -> None:
    r = run(records=[record(lab)]).parse()
    assert r.hosts() == {f"{lab}-server"}
    assert r.group(group) == {f"{lab}-server"}
    assert r.group("gpu_lab") == {f"{lab}-server"}
    assert r.group("stopped") == set()
    assert r.vars(f"{lab}-server")["gpu_lab_host_lab"] == lab


def test_two_instances_of_one_lab(run: Callable[..., Run]) -> None:
    old = record("csdl", id="i-0aaaaaaaaaaaaaaaa", state="stopped", launch_time="2025-09-01T00:00:00+00:00")
    new = record("csdl", id="i-0bbbbbbbbbbbbbbbb", state="running", launch_time="2025-10-01T00:00:00+00:00")
    other = record("csdl", id="i-0cccccccccccccccc", region="eu-west-1", launch_time="2025-10-02T00:00:00+00:00")
    r = run({"regions": ["us-east-1", "eu-west-1"]}, [old, other, new]).parse()
    # The running one launched first keeps the plain name: that is the one a play can reach.
    assert r.hosts() == {"csdl-server", "csdl-server-i-0aaaaaaaaaaaaaaaa", "csdl-server-i-0cccccccccccccccc"}
    assert r.vars("csdl-server")["gpu_lab_host_instance_id"] == "i-0bbbbbbbbbbbbbbbb"
    assert r.group("csdl") == {"csdl-server", "csdl-server-i-0cccccccccccccccc"}
    assert r.group("stopped") == {"csdl-server-i-0aaaaaaaaaaaaaaaa"}
    # Both names point at the lab's one key and known_hosts.
    assert r.vars("csdl-server-i-0aaaaaaaaaaaaaaaa")["ansible_ssh_private_key_file"].endswith("/csdl-server.pem")
    assert len(r.warnings) == 1
    assert "Lab csdl has 3 instances" in r.warnings[0]
    assert "tear down the ones you do not need" in r.warnings[0]


def test_instances_with_an_unusable_lab_tag_are_skipped_with_a_warning(run: Callable[..., Run]) -> None:
    r = run(records=[record("csdl"), record("", id="i-0empty"), record("../../x", id="i-0climb")]).parse()
    assert r.hosts() == {"csdl-server"}
    assert len(r.warnings) == 2
    assert any("i-0empty" in w and "not a valid lab name" in w for w in r.warnings)
    assert any("i-0climb" in w for w in r.warnings)


def test_no_instances_gives_empty_groups(run: Callable[..., Run]) -> None:
    r = run().parse()
    assert r.hosts() == set()
    assert {"gpu_lab", "stopped"} <= set(r.inventory.groups)
    assert r.warnings == []


# --- constructed: compose, groups, keyed_groups ------------------------------------------


def test_compose_groups_and_keyed_groups(run: Callable[..., Run]) -> None:
    config = {
        "compose": {
            "course": "gpu_lab_host_tags.course | default('none')",
            "ansible_port": "2222",
        },
        "groups": {"big_gpu": "gpu_lab_host_instance_type.startswith('p')"},
        "keyed_groups": [
            {"key": "gpu_lab_host_zone", "prefix": "zone"},
            {"key": "gpu_lab_host_tags.course | default('')", "prefix": "course", "default_value": "none"},
        ],
    }
    records = [
        record("csdl", tags={"gpu_lab:lab": "csdl", "course": "dl101"}),
        record("big", type="p4d.24xlarge", zone="us-east-1c", tags={"gpu_lab:lab": "big"}),
    ]
    r = run(config, records).parse()
    assert r.vars("csdl-server")["course"] == "dl101"
    assert r.vars("big-server")["course"] == "none"
    assert r.vars("csdl-server")["ansible_port"] == 2222
    assert r.group("big_gpu") == {"big-server"}
    assert r.group("zone_us_east_1a") == {"csdl-server"}
    assert r.group("zone_us_east_1c") == {"big-server"}
    assert r.group("course_dl101") == {"csdl-server"}
    assert r.group("course_none") == {"big-server"}


def test_tag_values_are_data_not_templates(run: Callable[..., Run]) -> None:
    tags = {"gpu_lab:lab": "csdl", "Name": "{{ 7 * 7 }}"}
    r = run({"compose": {"name_tag": "gpu_lab_host_tags.Name"}}, [record("csdl", tags=tags)]).parse()
    assert r.vars("csdl-server")["name_tag"] == "{{ 7 * 7 }}"


def test_compose_errors_are_ignored_unless_strict(run: Callable[..., Run]) -> None:
    config = {"compose": {"broken": "gpu_lab_no_such_var.attr"}, "groups": {"g": "gpu_lab_no_such_var.x"}}
    r = run(config, [record("csdl")]).parse()
    assert "broken" not in r.vars("csdl-server")
    with pytest.raises(AnsibleError, match="broken"):
        run({**config, "strict": True}, [record("csdl")]).parse()


# --- cache -------------------------------------------------------------------------------


def cache_config(tmp_path: Path) -> dict[str, Any]:
    return {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache")}


def test_cache_hit_asks_nothing_and_flush_asks_again(run: Callable[..., Run], tmp_path: Path) -> None:
    config = cache_config(tmp_path)
    first = run(config, [record("csdl")]).parse()
    assert len(first.queries) == 1
    assert list((tmp_path / "cache").iterdir()), "the jsonfile cache was written"

    hit = run(config, [record("csdl", state="stopped")]).parse()
    assert hit.queries == []
    assert hit.group("gpu_lab") == {"csdl-server"}, "served from the cache, not from the new answer"

    flushed = run(config, [record("csdl", state="stopped")]).parse(cache=False)  # --flush-cache
    assert len(flushed.queries) == 1
    assert flushed.group("stopped") == {"csdl-server"}

    after = run(config, [record("nlp")]).parse()
    assert after.queries == []
    assert after.hosts() == {"csdl-server"}
    assert after.vars("csdl-server")["gpu_lab_host_state"] == "stopped", "the flush rewrote the cache"


def test_cache_answers_only_the_same_question(run: Callable[..., Run], tmp_path: Path) -> None:
    config = cache_config(tmp_path)
    run({**config, "labs": ["csdl"]}, [record("csdl")]).parse()
    other = run({**config, "labs": ["csdl", "nlp"]}, [record("csdl"), record("nlp")]).parse()
    assert len(other.queries) == 1, "other labs: the cached answer does not count"
    assert other.hosts() == {"csdl-server", "nlp-server"}


def test_cached_host_variables_follow_the_current_options(run: Callable[..., Run], tmp_path: Path) -> None:
    config = cache_config(tmp_path)
    run(config, [record("csdl")]).parse()
    hit = run({**config, "user": "admin"}).parse()
    assert hit.queries == []
    assert hit.vars("csdl-server")["ansible_user"] == "admin"


def test_a_cache_of_another_shape_is_a_miss(gpu_lab: ModuleType, run: Callable[..., Run]) -> None:
    r = run()
    r.plugin._cache = {"key": {"format": 0, "regions": ["us-east-1"], "labs": [], "instances": []}}
    query = {"format": gpu_lab.CACHE_FORMAT, "regions": ["us-east-1"], "labs": []}
    assert r.plugin._cached_records("key", query) is None
    assert r.plugin._cached_records("absent", query) is None
    r.plugin._cache["key"] = {**query, "instances": [record("csdl")]}
    assert r.plugin._cached_records("key", query) == [record("csdl")]


# --- the EC2 side: records, filters, errors ----------------------------------------------


def test_instance_record_keeps_what_the_inventory_needs(gpu_lab: ModuleType) -> None:
    instance = {
        "InstanceId": "i-0123",
        "ImageId": "ami-1",
        "InstanceType": "g6.xlarge",
        "State": {"Code": 16, "Name": "running"},
        "Placement": {"AvailabilityZone": "us-east-1b"},
        "LaunchTime": dt.datetime(2025, 10, 20, 8, 30, tzinfo=dt.UTC),
        "PublicIpAddress": "198.51.100.7",
        "PrivateIpAddress": "10.0.0.5",
        "Tags": [{"Key": "gpu_lab:lab", "Value": "csdl"}, {"Key": "Name", "Value": "csdl-server"}],
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1"}],
    }
    rec = gpu_lab.instance_record(instance, "us-east-1")
    assert rec == {
        "id": "i-0123",
        "region": "us-east-1",
        "lab": "csdl",
        "state": "running",
        "type": "g6.xlarge",
        "zone": "us-east-1b",
        "launch_time": "2025-10-20T08:30:00+00:00",
        "ami": "ami-1",
        "public_ip": "198.51.100.7",
        "tags": {"gpu_lab:lab": "csdl", "Name": "csdl-server"},
    }
    json.dumps(rec)  # the cache stores it as JSON
    bare = gpu_lab.instance_record({"InstanceId": "i-0456", "State": {"Name": "stopped"}}, "eu-west-1")
    assert bare["lab"] == ""
    assert bare["public_ip"] is None
    assert bare["tags"] == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-10-20T08:30:00.000Z", "2025-10-20T08:30:00+00:00"),
        ("2025-10-20T08:30:00Z", "2025-10-20T08:30:00+00:00"),
        (dt.datetime(2025, 10, 20, 8, 30, tzinfo=dt.UTC), "2025-10-20T08:30:00+00:00"),
        ("not a time", "not a time"),
        (None, None),
    ],
)
def test_launch_time_is_iso_8601(gpu_lab: ModuleType, value: Any, expected: str | None) -> None:
    assert gpu_lab.iso_time(value) == expected


def test_filters_are_server_side(gpu_lab: ModuleType) -> None:
    states = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    assert gpu_lab.ec2_filters(["csdl", "nlp"]) == [[{"Name": "tag:gpu_lab:lab", "Values": ["csdl", "nlp"]}, states]]
    assert gpu_lab.ec2_filters([]) == [[{"Name": "tag-key", "Values": ["gpu_lab:lab"]}, states]]


def test_a_long_list_of_labs_is_asked_in_chunks_of_200(gpu_lab: ModuleType) -> None:
    labs = [f"student{n:03d}" for n in range(450)]
    sets = gpu_lab.ec2_filters(labs)
    assert [len(lab_filter["Values"]) for lab_filter, _unused in sets] == [200, 200, 50]
    assert [lab for lab_filter, _unused in sets for lab in lab_filter["Values"]] == labs


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("moon-1", "Unknown AWS region 'moon-1' in the gpu_lab inventory: use a region name such as us-east-1, or "),
        ("us-easst-1", "Unknown AWS region 'us-easst-1' in the gpu_lab inventory: use a region name such as"),
        (
            "us-east-1a",
            "Unknown AWS region 'us-east-1a' in the gpu_lab inventory (that is an availability zone of us-east-1)",
        ),
        ("US East", "Unknown AWS region 'US East'"),
    ],
)
def test_unknown_region(run: Callable[..., Run], no_aws_config: None, region: str, message: str) -> None:
    r = run({"regions": ["us-east-1", region]})
    r.plugin._query = type(r.plugin)._query.__get__(r.plugin)  # the real query, up to the region check
    with pytest.raises(AnsibleParserError) as raised:
        r.parse()
    assert str(raised.value.message).startswith(message)


def real_query_run(run: Callable[..., Run], config: dict[str, Any]) -> Run:
    r = run(config)
    r.plugin._query = type(r.plugin)._query.__get__(r.plugin)
    return r


def test_no_credentials(run: Callable[..., Run], no_aws_config: None) -> None:
    r = real_query_run(run, {"max_attempts": 1})
    with pytest.raises(AnsibleError) as raised:
        r.parse()
    assert str(raised.value.message) == (
        "No AWS credentials found for EC2 in us-east-1: set AWS_PROFILE (or the profile option), or AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY, or run `aws configure`."
    )


def test_unknown_profile(run: Callable[..., Run], no_aws_config: None) -> None:
    r = real_query_run(run, {"profile": "course-admin"})
    with pytest.raises(AnsibleError, match=r"course-admin.*fix the profile option or AWS_PROFILE"):
        r.parse()


def test_unreachable_endpoint(run: Callable[..., Run], no_aws_config: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    r = real_query_run(run, {"regions": ["eu-west-1"], "max_attempts": 1})
    with pytest.raises(AnsibleError) as raised:
        r.parse()
    message = str(raised.value.message)
    assert message.startswith("Could not reach EC2 in eu-west-1 at http://127.0.0.1:")
    assert message.endswith("check the network, the region name, and AWS_ENDPOINT_URL if it is set.")
    assert raised.value.__cause__ is None, "no botocore traceback chained to the message"


def client_error(code: str, message: str = "m", retries: int = 0) -> Exception:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"RetryAttempts": retries}}
    return ClientError(response, "DescribeInstances")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            lambda: client_error("RequestLimitExceeded", "Request limit exceeded.", retries=4),
            "EC2 in us-east-1 kept throttling DescribeInstances (RequestLimitExceeded) after 5 attempts: wait a minute "
            "and try again, or raise the inventory's max_attempts or set retry_mode: adaptive.",
        ),
        (
            lambda: client_error("AuthFailure", "AWS was not able to validate the provided access credentials"),
            "EC2 in us-east-1 rejected the AWS credentials (AuthFailure: AWS was not able to validate the provided "
            "access credentials): refresh them (`aws sso login` or new keys) and check that region us-east-1 is "
            "enabled for the account.",
        ),
        (
            lambda: client_error("UnauthorizedOperation"),
            "The AWS identity in use may not call ec2:DescribeInstances in us-east-1: grant it that permission or use "
            "another profile.",
        ),
        (
            lambda: client_error("InternalError", "We are sorry."),
            "EC2 in us-east-1 refused DescribeInstances (InternalError: We are sorry): fix the cause and try again.",
        ),
    ],
)
def test_client_errors_are_explained(gpu_lab: ModuleType, error: Callable[[], Exception], expected: str) -> None:
    assert gpu_lab.explain_failure(error(), "us-east-1", "https://ec2.us-east-1.amazonaws.com") == expected


def test_sso_expiry_is_explained(gpu_lab: ModuleType) -> None:
    message = gpu_lab.explain_failure(UnauthorizedSSOTokenError(), "us-east-1", None)
    assert message.endswith("run `aws sso login` and try again.")


def test_every_explanation_is_one_sentence(gpu_lab: ModuleType) -> None:
    errors = [
        NoCredentialsError(),
        ProfileNotFound(profile="x"),
        EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
        client_error("Throttling"),
        ValueError("odd"),
    ]
    for error in errors:
        message = gpu_lab.explain_failure(error, "us-east-1", "https://ec2.us-east-1.amazonaws.com/")
        assert "\n" not in message
        assert "Traceback" not in message
        assert message.endswith("."), message
