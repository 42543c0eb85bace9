# Copyright: gpu_lab developers
# MIT License
"""What every step of csdl.gpu_lab.labs shares: the run (the labs' settings, how to call a
module once for all of them) and finding what each lab has in AWS (csdl.gpu_lab.lab_info).

A step is a function ``step(run) -> {host: part}``. A part is one lab's answer, what the
role's YAML reads after the task (``labs[inventory_hostname]``): always ``failed`` (and
``msg`` when true) and ``changed``; the rest is the step's own (see each step)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import lab_quota
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import LabSettings

Part = dict[str, Any]


@dataclass
class Run:
    """One task's run: every lab of the play (by inventory host), what earlier steps found of
    each, the task's options, and a way to run a module (on the controller, with the task's
    connection and check mode)."""

    labs: dict[str, LabSettings]
    # What earlier steps of this run published for each lab (instance, lab, address; see
    # lab_settings.FACTS), by host: absent for a lab not found yet.
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    check_mode: bool = False
    execute: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda name, args: {}
    warn: Callable[[str], None] = lambda message: None

    def call(self, module: str, args: dict[str, Any]) -> dict[str, Any]:
        """The module's answer; a module that fails as a whole raises ModuleFailed."""
        answer = self.execute(module, args)
        if answer.get("failed"):
            raise ModuleFailed(str(answer.get("msg", f"{module} failed")))
        return answer


class ModuleFailed(Exception):
    """A batch module failed as a whole (every lab of the call fails with its message)."""


def failed(msg: str, **more: Any) -> Part:
    return {"failed": True, "changed": False, "msg": msg} | more


def ok(changed: bool = False, **more: Any) -> Part:
    return {"failed": False, "changed": changed} | more


def acting_region(lab: LabSettings, launch: bool) -> str:
    """Where to act: a lab is one lab wherever it runs. Stop, start, status and teardown act
    where this machine recorded it (a run without the launch's -e gpu_lab_region still finds
    it); a launch acts where it is set, and looks at the recorded region too."""
    if not launch and lab.recorded_region:
        return lab.recorded_region
    return lab.region


def region_note(lab: LabSettings, launch: bool) -> str:
    """The sentence that says the lab is acted on where it was launched ('' when it is here)."""
    if launch or not lab.recorded_region:
        return ""
    return (f"Lab {lab.name} was launched in {lab.recorded_region} (recorded in {lab.record_file}), "
            f"not in {lab.region}: acting there.")


def query(lab: LabSettings, launch: bool = False, quota_requests: bool = False) -> dict[str, Any]:
    """What csdl.gpu_lab.lab_info looks for, for one lab. A launch also asks for the
    candidate types, the image of a new instance (resolved only when there is no instance:
    an existing one is kept, however many newer AMIs appear), the settings a lab that exists
    is compared with (drift), and the region this machine recorded, if another; and the
    on-demand vCPU quotas of its candidates (lab_quota.py), read only for a lab with no
    instance. ``quota_requests``: also the open increase requests of those quotas (status)."""
    entry: dict[str, Any] = {
        "lab": lab.name,
        "region": acting_region(lab, launch),
        "key_name": lab.key_name,
        "security_group_name": lab.sg_name,
        "quota": {"codes": lab_quota.quota_codes(lab.candidates, lab.markets), "check": launch,
                  "requests": quota_requests},
    }
    if launch:
        entry |= {
            "other_regions": [lab.recorded_region] if lab.recorded_region else [],
            "wanted": {"instance_type": lab.instance_type, "volume_size": _int_or_none(lab.volume_size)},
            "instance_types": lab.candidates,
            # The line is resolved for the architecture of the candidate types (lab_info).
            "image": {"image_id": lab.ami_id,
                      "dlami": "" if lab.ami_id else lab.dlami_line,
                      "name_pattern": "" if lab.ami_id else lab.ami_name_pattern},
        }
    return entry


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def find(run: Run, hosts: list[str] | None = None, launch: bool = False, volumes: bool = False,
         orphans: bool = False) -> dict[str, Part]:
    """What each lab (of ``hosts``, default all) has in AWS, in one lab_info call: each
    host's part is lab_info's answer for its lab, with ``failed``/``msg`` when it could not
    be read, and ``region`` and ``region_note`` (where it was looked for, and why)."""
    hosts = list(run.labs) if hosts is None else hosts
    if not hosts:
        return {}
    entries = [query(run.labs[h], launch, quota_requests=volumes) for h in hosts]
    try:
        answer = run.call("csdl.gpu_lab.lab_info", {"labs": entries, "volumes": volumes, "orphans": orphans})
    except ModuleFailed as error:
        return {h: failed(str(error)) for h in hosts}
    found: dict[str, Part] = {}
    for host, entry in zip(hosts, entries, strict=True):
        lab = run.labs[host]
        missing = {"failed": True, "msg": f"Lab {lab.name} was not looked up."}
        part = dict(answer.get("labs", {}).get(lab.name) or missing)
        part.setdefault("failed", False)
        part["changed"] = False
        part["region"] = entry["region"]
        part["region_note"] = region_note(lab, launch)
        found[host] = part
    return found


def address_of(found: Part) -> str:
    """The lab's Elastic IP ('' for none): a lab has one, tagged with its name."""
    addresses = found.get("addresses") or []
    return str(addresses[0].get("public_ip", "")) if addresses else ""


def published_lab(lab: LabSettings, region: str, address: str, ssh_ready: bool) -> dict[str, Any]:
    """The lab as the role publishes it (ec2_gpu_host_lab): what the other roles and the
    reports read."""
    return {"name": lab.name, "region": region, "address": address, "user": lab.ssh_user,
            "key_file": lab.key_file, "ssh_ready": ssh_ready}


def find_step(run: Run) -> dict[str, Part]:
    """step=find: each lab's instance and address. Options: ``details``, also its volumes and
    what any lab left over in the region (the status view); ``orphans``, the left-overs alone
    (a teardown that removes them). A part has ``found`` (what lab_info said), ``instance``
    ({} for none), ``address`` ('' for none) and ``lab``."""
    details = bool(run.options.get("details", False))
    orphans = details or bool(run.options.get("orphans", False))
    parts: dict[str, Part] = {}
    for host, found in find(run, volumes=details, orphans=orphans).items():
        if found["failed"]:
            parts[host] = found
            continue
        lab = run.labs[host]
        instance = found.get("instance") or {}
        address = address_of(found)
        parts[host] = ok(found=found, instance=instance, address=address, region_note=found["region_note"],
                         lab=published_lab(lab, found["region"], address,
                                           instance.get("state") == "running" and address != ""))
    return parts
