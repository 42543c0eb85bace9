# Copyright: gpu_lab developers
# MIT License
"""step=shelve: a lab that is not used for a while keeps only an image of its disk.

shelve.yml (and gpu_lab_shelve_after_days, from status.yml; and an archiving teardown) makes
an image of each lab's instance (stopped first; no reboot), and once it is available cancels
its spot request, terminates it and releases its Elastic IP, in one csdl.gpu_lab.lab_host call
(state=shelved): what is left bills only the image's snapshots (about $0.05 per GiB-month
against $0.08 for the gp3 disk plus $3.65 for the address). The key pair and security group
stay, so launch.yml brings the lab back from the image (lab_info gives a shelved lab's shelf as
the image of its new instance) with the same key; then lab_host deletes the shelf."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import lab_lifecycle
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_lifecycle import call_labs, each_looked_up, hours_since
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_prices import SNAPSHOT_GIB_MONTH_USD, shelf_monthly
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import Part, Run, failed, ok
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import SHELVE_AFTER_DAYS_TAG, LabSettings


def shelve_spec(lab: LabSettings, region: str, found: dict[str, Any]) -> dict[str, Any]:
    return {"lab": lab.name, "region": region, "instance": found.get("instance") or {},
            "addresses": found.get("addresses") or [], "shelves": found.get("shelves") or [], "tags": lab.tags,
            "wait_timeout": lab.instance_timeout}


def shelve_step(run: Run, due_only: bool = False,
                now: dt.datetime | None = None) -> dict[str, Part]:
    """Each part: ``shelf`` (the image), ``message`` (what was done, what it costs, how to bring
    it back), ``planned`` (check mode) and ``changed``. With ``due_only`` (status.yml), only the
    labs stopped for longer than their gpu_lab_shelve_after_days (0 = never) are shelved; the
    others answer ``message: ''``, unchanged."""
    when = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    parts: dict[str, Part] = {}
    specs: dict[str, dict[str, Any]] = {}
    for host, lab, found, published in each_looked_up(run, "shelve", parts):
        instance = found.get("instance") or {}
        if due_only and not due(lab, instance, when):
            parts[host] = ok(message="", shelf=found.get("shelf") or {}, planned=[])
            continue
        if not instance and not found.get("shelf"):
            parts[host] = failed(f"Lab {lab.name} has no instance in {published['region']} to shelve; create it with "
                                 "`ansible-playbook launch.yml`.")
            continue
        specs[host] = shelve_spec(lab, str(published["region"]), found)
    for host, ran in call_labs(run, specs, "shelved").items():
        parts[host] = shelved_part(run.labs[host], specs[host], ran, run.check_mode)
    return parts


def due(lab: LabSettings, instance: dict[str, Any], now: dt.datetime) -> bool:
    """Whether the lab's gpu_lab_shelve_after_days has come: stopped that long."""
    after = shelve_after_days(lab, instance)
    if after <= 0 or instance.get("state") != "stopped":
        return False
    hours = hours_since(instance, now)
    return hours is not None and hours >= 24 * after


def shelve_after_days(lab: LabSettings, instance: dict[str, Any]) -> float:
    """The lab's own gpu_lab_shelve_after_days, as its launch recorded it on the instance (a status
    run in another shell, or the workstation's timer, gives none); this run's for an instance
    that records none (launched before the tag)."""
    recorded = str((instance.get("tags") or {}).get(SHELVE_AFTER_DAYS_TAG, "")).strip()
    try:
        return float(recorded) if recorded else lab.shelve_after_days
    except ValueError:
        return lab.shelve_after_days


def differs_note(lab: LabSettings, instance: dict[str, Any]) -> str:
    """Said when this run sets gpu_lab_shelve_after_days to other than the lab records ('' else)."""
    if not instance or not lab.shelve_after_days:
        return ""
    recorded = shelve_after_days(lab, instance)
    if recorded == lab.shelve_after_days:
        return ""
    kept = f"shelves it after {recorded:g} days stopped" if recorded > 0 else "never shelves it"
    return (f"Lab {lab.name} records gpu_lab_shelve_after_days={recorded:g} (from its launch), so status.yml "
            f"{kept}, not after {lab.shelve_after_days:g}: `ansible-playbook launch.yml -e "
            f"gpu_lab_shelve_after_days={lab.shelve_after_days:g}` changes it; shelve.yml shelves it now.")


def shelved_part(lab: LabSettings, spec: dict[str, Any], ran: Part, check_mode: bool) -> Part:
    if ran.get("failed"):
        return failed(str(ran.get("msg") or f"Lab {lab.name} could not be shelved."))
    shelf = dict(ran.get("shelf") or {})
    if check_mode:
        planned = list(ran.get("planned") or [])
        said = (f"Check mode: lab {lab.name} would {'; '.join(planned)}." if planned
                else f"Lab {lab.name} is shelved already.")
        return ok(False, shelf=shelf, planned=planned, message=said)
    return ok(bool(ran.get("changed")), shelf=shelf, planned=[],
              message=shelved_message(lab, spec["instance"], shelf, bool(ran.get("changed"))))


def shelved_message(lab: LabSettings, instance: dict[str, Any], shelf: dict[str, Any], changed: bool) -> str:
    gib = int(shelf.get("size_gib") or 0)
    cost = f"at most ${shelf_monthly(gib):.2f}/month ({gib} GiB of snapshots at ${SNAPSHOT_GIB_MONTH_USD}/GiB-month)"
    back = "ansible-playbook launch.yml brings it back from the image (a new address; the ssh entry follows)"
    if not changed:
        return f"Lab {lab.name} is shelved already: {shelf.get('image_id', '')}, {cost}; {back}."
    return (f"Lab {lab.name} is shelved: its disk is the image {shelf.get('image_id', '')} ({shelf.get('name', '')}); "
            f"the instance {instance.get('id', '')} is terminated and its Elastic IP released. It costs {cost} "
            f"instead of the disk and address; {back}.")


def status_step(run: Run, now: dt.datetime | None = None) -> dict[str, Part]:
    """status.yml: first the labs whose gpu_lab_shelve_after_days has come are shelved (none
    unless it is set), then each lab's status (lab_lifecycle.status_step) from what find found,
    as it is after that shelving; a shelving's sentence leads its lab's warnings (or, when this
    run's gpu_lab_shelve_after_days is not the lab's, a sentence that says which applies)."""
    when = now or dt.datetime.now(dt.UTC)
    shelved = shelve_step(run, due_only=True, now=when.replace(tzinfo=None))
    for host, part in shelved.items():
        if part.get("changed") and not part.get("failed"):
            facts = run.facts[host]
            facts["resources"] = {**facts["resources"], "instance": {}, "instances": [], "addresses": [],
                                  "volumes": [], "shelves": [part["shelf"], *(facts["resources"].get("shelves") or [])],
                                  "shelf": part["shelf"]}
    parts = lab_lifecycle.status_step(run, now=lambda: when)
    for host, part in shelved.items():
        instance = (run.facts.get(host, {}).get("resources") or {}).get("instance") or {}
        said = str(part.get("message") or part.get("msg") or differs_note(run.labs[host], instance))
        if said and not parts[host].get("failed"):
            status = parts[host]["status"]
            parts[host] = ok(bool(part.get("changed")), status={**status, "warnings": [said, *status["warnings"]]})
    return parts
