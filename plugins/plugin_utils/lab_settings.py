# Copyright: gpu_lab developers
# MIT License
"""A lab's settings, as the ec2_gpu_host role's variables give them, read for every lab of the
play in one task (the csdl.gpu_lab.labs action plugin runs once for all of them).

``play_vars()`` templates each play host's ``ec2_gpu_host_*`` variables in that host's own
context (its inventory, its facts, the role's defaults), as Ansible itself does for a
delegated task; ``LabSettings.from_vars()`` turns them into the one object the steps read.
Everything the role's vars/main.yml used to derive in Jinja (names, tags, the candidate
types, the record of where the lab lives) is derived here, once, with unit tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.filter.as_list import as_list

PREFIX = "ec2_gpu_host_"
# Lab-wide settings the role reads as they are (a class lab's are set by the roster inventory).
SHARED = ("gpu_lab_class", "gpu_lab_student", "gpu_lab_force_teardown",
          # The host's and workstation's lab-wide settings, checked with the launch's
          # (lab_checks.lab_wide_problems reads them from LabSettings.given).
          "gpu_lab_jupyter_port", "gpu_lab_course_repo", "gpu_lab_course_branch", "gpu_lab_idle_minutes",
          "gpu_lab_daily_stop", "gpu_lab_check_course_repo")
MANAGED_BY = "csdl.gpu_lab"
# Where launch records gpu_lab_shelve_after_days: status.yml (and the workstation's timer) follow
# the lab's own setting, not this run's.
SHELVE_AFTER_DAYS_TAG = "gpu_lab:shelve_after_days"
DEFAULT_ROOT_DEVICE = "/dev/sda1"


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y", "t")


def minutes(value: Any, name: str, unit: str = "minutes") -> float:
    """A number of minutes (or ``unit``), 0 or more; ValueError with the sentence that says what to set."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number < float("inf"):  # also refuses nan
        raise ValueError(f"gpu_lab_{name} is {value!r}: set it to a number of {unit}, 0 or more.")
    return number


def days(value: Any, name: str) -> float:
    return minutes(value, name, "days")


def unique(items: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


@dataclass(frozen=True)
class LabSettings:
    """One lab's settings and what follows from them (its names, tags and files)."""

    host: str                      # the inventory host that stands for the lab
    name: str
    region: str
    instance_type: str
    fallback_instance_types: list[str]
    zones: list[str]
    volume_size: Any               # as given: the checks say what is wrong with it
    allow_no_gpu: bool
    dlami: str
    ami_name_pattern: str
    ami_id: str
    ssh_cidrs: list[str]           # as given; [] = detect this machine's address
    allow_world_ssh: bool
    ip_check_url: str
    ssh_user: str
    home: str
    key_file: str
    key_pair_public_key: str
    rotate_key: bool
    extra_tags: dict[str, str]
    wait_for_ssh: bool
    ssh_timeout: int
    instance_timeout: int
    teardown_confirm: str
    stopped_warn_days: float
    remove_orphans: bool
    autostop_minutes: str
    idle_alarm: bool
    lab_class: str = ""
    student: str = ""
    force_teardown: bool = False
    recover_confirm: str = ""      # the lab's (class's) name: recover_key.yml may stop a running lab
    # Days the Price List API's prices of a region stay cached on this machine (lab_price_cache.py).
    price_max_age_days: float = 7.0
    # A launch that does not fit the vCPU quota asks AWS to raise it (never unasked).
    request_quota: bool = False
    # A start refused for capacity: minutes of tries in the same type, then another type or not.
    start_capacity_wait_minutes: float = 5.0
    start_change_type: bool = True
    # The market a new instance is bought in ("on-demand" or "spot": a persistent request that
    # stops on interruption), on-demand as the last resort of a spot launch, the spot price cap
    # ("" = up to the on-demand price). A lab that exists keeps the market it has.
    market: str = "on-demand"
    spot_fallback_on_demand: bool = True
    spot_max_price: str = ""
    # Shelve a lab stopped this many days when status.yml runs (0 = never; recorded on the
    # instance by launch, which status follows); an archiving teardown.
    shelve_after_days: float = 0.0
    keep_archive: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    # The role variables as given (without the prefix): a check's sentence quotes a list
    # setting the way it was written (-e a,b or a YAML list).
    given: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_vars(cls, host: str, values: Mapping[str, Any]) -> LabSettings:
        """From the templated role variables (``ec2_gpu_host_*`` without the prefix, and the
        shared ``gpu_lab_*`` ones): ``values["lab_name"]`` is ``ec2_gpu_host_lab_name``."""
        def get(key: str, default: Any = "") -> Any:
            value = values.get(key, default)
            return default if value is None else value

        name = str(get("lab_name"))
        home = str(get("home")) or os.path.expanduser("~")
        return cls(
            host=host,
            name=name,
            region=str(get("region")),
            instance_type=str(get("instance_type")),
            fallback_instance_types=[str(t) for t in as_list(get("fallback_instance_types", []))],
            zones=[str(z) for z in as_list(get("zones", []))],
            volume_size=get("volume_size", 100),
            allow_no_gpu=as_bool(get("allow_no_gpu", False)),
            dlami=str(get("dlami")),
            ami_name_pattern=str(get("ami_name_pattern")),
            ami_id=str(get("ami_id")),
            ssh_cidrs=unique(str(c) for c in as_list(get("ssh_cidr", ""))),
            allow_world_ssh=as_bool(get("allow_world_ssh", False)),
            ip_check_url=str(get("ip_check_url", "https://checkip.amazonaws.com")),
            ssh_user=str(get("ssh_user", "ubuntu")),
            home=home,
            key_file=str(get("key_file")),
            key_pair_public_key=str(get("key_pair_public_key")),
            rotate_key=as_bool(get("rotate_key", False)),
            extra_tags={str(k): str(v) for k, v in dict(get("tags", {}) or {}).items()},
            wait_for_ssh=as_bool(get("wait_for_ssh", True)),
            ssh_timeout=int(get("ssh_timeout", 600)),
            instance_timeout=int(get("instance_timeout", 600)),
            teardown_confirm=str(get("teardown_confirm")),
            stopped_warn_days=float(get("stopped_warn_days", 7)),
            remove_orphans=as_bool(get("remove_orphans", False)),
            autostop_minutes=str(get("autostop_minutes", 60)),
            idle_alarm=as_bool(get("idle_alarm", False)),
            lab_class=str(get("class")),
            student=str(get("student")),
            force_teardown=as_bool(get("force_teardown", False)),
            recover_confirm=str(get("recover_confirm")),
            price_max_age_days=float(get("price_max_age_days", 7)),
            request_quota=as_bool(get("request_quota", False)),
            start_capacity_wait_minutes=minutes(get("start_capacity_wait_minutes", 5), "start_capacity_wait_minutes"),
            start_change_type=as_bool(get("start_change_type", True)),
            market=str(get("market", "on-demand")).strip().lower(),
            spot_fallback_on_demand=as_bool(get("spot_fallback_on_demand", True)),
            spot_max_price=str(get("spot_max_price", "")).strip(),
            shelve_after_days=days(get("shelve_after_days", 0), "shelve_after_days"),
            keep_archive=as_bool(get("keep_archive", False)),
            record=read_record(record_file(home, name)),
            given=dict(values),
        )

    # --- Names: a lab's resources are found by their tags, never by these names alone.
    @property
    def key_name(self) -> str:
        return f"{self.name}-server"

    @property
    def instance_name(self) -> str:
        return f"{self.name}-server"

    @property
    def sg_name(self) -> str:
        return f"{self.name}-ssh"

    @property
    def sg_description(self) -> str:
        return f"SSH to the {self.name} GPU lab host (managed by {MANAGED_BY})"

    @property
    def tags(self) -> dict[str, str]:
        """Every resource of the lab carries these."""
        return self.extra_tags | {"gpu_lab:lab": self.name, "gpu_lab:managed_by": MANAGED_BY}

    @property
    def recorded_tags(self) -> dict[str, str]:
        """What the instance records about the lab's settings (status.yml and launch read it)."""
        return {"gpu_lab:autostop_minutes": self.autostop_minutes,
                "gpu_lab:idle_alarm": str(self.idle_alarm).lower(),
                SHELVE_AFTER_DAYS_TAG: f"{self.shelve_after_days:g}"}

    @property
    def candidates(self) -> list[str]:
        """The instance types a launch tries, in order."""
        return unique([self.instance_type, *self.fallback_instance_types])

    @property
    def markets(self) -> list[str]:
        """The markets a new instance is tried in, in order."""
        if self.market != "spot":
            return ["on-demand"]
        return ["spot", "on-demand"] if self.spot_fallback_on_demand else ["spot"]

    @property
    def dlami_line(self) -> str:
        """The Deep Learning AMI line asked for: a line's name, or 'latest' (also for '')."""
        return self.dlami.strip() or "latest"

    def ssm_parameter(self, architecture: str = "x86_64") -> str:
        """Where AWS publishes the line's newest image for an architecture (for 'latest', the
        path under which every line is published)."""
        path = f"/aws/service/deeplearning/ami/{architecture}/"
        return path if self.dlami_line == "latest" else f"{path}{self.dlami_line}/latest/ami-id"

    @property
    def confirm_word(self) -> str:
        """What confirms a teardown: the class's name for a class lab, else the lab's."""
        return self.lab_class or self.name

    # --- Where the lab lives, as this machine recorded it when it launched it.
    @property
    def record_file(self) -> str:
        return record_file(self.home, self.name)

    @property
    def recorded_region(self) -> str:
        """The region the record names when it is not the one set ('' otherwise)."""
        region = str(self.record.get("region", ""))
        return region if region != self.region else ""


def record_file(home: str, name: str) -> str:
    return str(Path(home) / ".gpu_lab" / name / "lab.json")


def read_record(path: str) -> dict[str, Any]:
    """The lab's record ({} when there is none or it cannot be read)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def settings_of(host: str, values: Mapping[str, Any]) -> LabSettings:
    """LabSettings from a host's templated variables (full names, as play_vars gives them)."""
    own = {key[len(PREFIX):]: value for key, value in values.items()
           if key.startswith(PREFIX) and key not in FACTS}
    own |= {key[len("gpu_lab_"):]: value for key, value in values.items() if key in SHARED}
    return LabSettings.from_vars(host, own)


# The role's settings (meta/argument_specs.yml), without the prefix: only these are templated
# (the role's published facts, ec2_gpu_host_lab and the like, are results, not settings).
SETTINGS = (
    "lab_name", "region", "instance_type", "fallback_instance_types", "zones", "volume_size",
    "allow_no_gpu", "dlami", "ami_name_pattern", "ami_id", "ssh_cidr", "allow_world_ssh",
    "ip_check_url", "ssh_user", "home", "key_file", "key_pair_public_key", "rotate_key", "tags",
    "wait_for_ssh", "ssh_timeout", "instance_timeout", "teardown_confirm", "recover_confirm", "stopped_warn_days",
    "remove_orphans", "autostop_minutes", "idle_alarm", "request_quota", "start_capacity_wait_minutes",
    "start_change_type", "price_max_age_days", "market", "spot_fallback_on_demand", "spot_max_price",
    "shelve_after_days", "keep_archive",
)
# What an earlier step of this run published for the lab (find.yml's set_fact): a later step
# acts on it instead of asking AWS again (stop stops the instance find found).
FACTS = ("ec2_gpu_host_resources", "ec2_gpu_host_instance", "ec2_gpu_host_lab", "ec2_gpu_host_address")
WANTED = frozenset([PREFIX + name for name in SETTINGS] + list(SHARED) + list(FACTS))


def facts_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """The lab's published facts among a host's templated variables, without the prefix."""
    return {key[len(PREFIX):]: values[key] for key in FACTS if key in values}


def wanted_names(variables: Mapping[str, Any]) -> list[str]:
    """The variables a lab's settings are made of, as the host has them."""
    return [name for name in WANTED if name in variables]


def play_vars(action: Any, task_vars: Mapping[str, Any],
              hosts: Iterable[str] | None = None) -> dict[str, dict[str, Any] | Exception]:
    """Each play host's lab variables, templated in that host's own context: its inventory
    and facts and this task's role defaults and parameters, as Ansible builds a delegated
    task's variables (VariableManager.get_vars with the play, the host and the task). A
    host whose variables cannot be templated gets the error instead (its lab fails alone)."""
    # The batch, not ansible_play_hosts: a host a task was delegated to (the guard's, on the lab
    # host) shows up in ansible_play_hosts for the rest of the play; run_once answers the batch.
    names = list(task_vars["ansible_play_batch"] if hosts is None else hosts)
    hostvars = task_vars["hostvars"]
    manager, inventory = hostvars._variable_manager, hostvars._inventory
    play = action._task.get_play()
    own = task_vars.get("inventory_hostname")
    found: dict[str, dict[str, Any] | Exception] = {}
    for name in names:
        if name == own:
            variables: Mapping[str, Any] = task_vars
        else:
            variables = manager.get_vars(play=play, host=inventory.get_host(name), task=action._task,
                                         include_hostvars=True)
        templar = action._templar.copy_with_new_env(available_variables=variables)
        try:
            found[name] = {key: templar.template(variables[key]) for key in wanted_names(variables)}
        except Exception as error:  # noqa: BLE001 - any templating error is this lab's own
            found[name] = error
    return found
