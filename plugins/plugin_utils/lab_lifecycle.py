# Copyright: gpu_lab developers
# MIT License
"""step=start, status, confirm_teardown and teardown: what comes after a launch, for every
lab of the play, acting on what find.yml found earlier in the run (the facts
ec2_gpu_host_resources, _instance, _lab and _address): AWS is asked once per run, not once
per step. Each acting step is one csdl.gpu_lab.lab_host call for all the labs."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import lab_price_cache, lab_prices
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import (
    ModuleFailed,
    Part,
    Run,
    address_of,
    failed,
    ok,
)
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import LabSettings

Found = dict[str, Any]


def looked_up(run: Run, host: str, step: str) -> tuple[Found, dict[str, Any]] | Part:
    """(what find.yml found of the lab, the lab as it published it), or the failed part of a
    lab find did not look up (find.yml runs first)."""
    facts = run.facts.get(host, {})
    if "resources" not in facts or "lab" not in facts:
        return failed(f"Lab {run.labs[host].name} was not looked up before the {step} (find.yml runs first).")
    return dict(facts["resources"] or {}), dict(facts["lab"])


LookedUp = tuple[str, LabSettings, Found, dict[str, Any]]


def each_looked_up(run: Run, step: str, parts: dict[str, Part]) -> Iterator[LookedUp]:
    """(host, lab, what find.yml found of it, the lab as it published it) for each lab of the run
    that find looked up; a lab it did not gets its failed part in parts (find.yml runs first)."""
    for host, lab in run.labs.items():
        seen = looked_up(run, host, step)
        if isinstance(seen, tuple):
            yield host, lab, seen[0], seen[1]
        else:
            parts[host] = seen


def call_labs(run: Run, specs: dict[str, dict[str, Any]], state: str) -> dict[str, Part]:
    """lab_host's answer for each host of ``specs``, in one call for all of them."""
    if not specs:
        return {}
    try:
        answer = run.call("csdl.gpu_lab.lab_host", {"state": state, "labs": list(specs.values())})
    except ModuleFailed as error:
        return {host: failed(str(error)) for host in specs}
    return {host: answer.get("labs", {}).get(spec["lab"]) or failed(f"Lab {spec['lab']} got no answer.")
            for host, spec in specs.items()}


# --- step=start ----------------------------------------------------------------------------

def start_step(run: Run) -> dict[str, Part]:
    """Each part: ``instance``, ``address``, ``lab`` (ssh_ready once it runs at its address),
    ``check_note`` ('' but in check mode), ``start_note`` (what a start without capacity did:
    its tries, a changed type and how to go back; '' otherwise) and ``changed``. A lab with no
    instance fails, and so does one lab_host could not start (its capacity error is its own:
    the others start). A lab that already runs at its address makes no call."""
    parts: dict[str, Part] = {}
    specs: dict[str, dict[str, Any]] = {}
    for host, lab, found, published in each_looked_up(run, "start", parts):
        instance = found.get("instance") or {}
        region = published["region"]
        if not instance:
            shelf = found.get("shelf") or {}
            parts[host] = failed(f"Lab {lab.name} is shelved in {region} (its disk is the image {shelf['image_id']}): "
                                 "`ansible-playbook launch.yml` brings it back from it." if shelf else
                                 f"Lab {lab.name} has no instance in {region}; "
                                 "create it with `ansible-playbook launch.yml`.")
            continue
        addresses = found.get("addresses") or []
        parts[host] = ok(instance=instance, address=address_of(found), lab=published, check_note="", start_note="")
        at_address = any(a.get("instance_id") == instance.get("id") for a in addresses)
        if instance.get("state") != "running" or not at_address:
            specs[host] = {"lab": lab.name, "region": region, "instance": instance, "addresses": addresses,
                           "wait_timeout": lab.instance_timeout, **start_options(lab)}
    for host, ran in call_labs(run, specs, "present").items():
        parts[host] = started_part(run.labs[host], parts[host], ran, run.check_mode)
    return parts


def start_options(lab: LabSettings) -> dict[str, Any]:
    """What lab_host does when AWS has no capacity for a stopped lab's type in its zone: the
    seconds it tries that type again, whether it then changes the type, and to which."""
    return {"instance_types": [t for t in lab.candidates if t],
            "start_capacity_wait": round(lab.start_capacity_wait_minutes * 60, 3),
            "start_change_type": lab.start_change_type}


def start_note(lab: LabSettings, ran: Part) -> str:
    """What a start that met no capacity did, in words: 'Lab a1 started i-a (g6.xlarge in
    us-east-1a) after 2 refusals for capacity (InsufficientInstanceCapacity).', or the type it
    changed to and how to go back (lab_host's note); '' for a start AWS took at once."""
    attempts = ran.get("attempts") or []
    refused = [a for a in attempts if a.get("outcome") == "no capacity"]
    if ran.get("failed"):
        return ""
    if ran.get("notes"):  # a changed type, or an interrupted Spot Instance AWS started again
        return " ".join(str(n) for n in ran["notes"])
    if not refused:
        return ""
    started = next((a for a in reversed(attempts) if a.get("outcome") == "started"), {})
    codes = ", ".join(dict.fromkeys(str(a.get("code")) for a in refused))
    instance = ran.get("instance") or {}
    return (f"Lab {lab.name} started {instance.get('id', '')} ({started.get('type', '')} in {started.get('zone', '')}) "
            f"after {len(refused)} refusal{'s' if len(refused) != 1 else ''} for capacity ({codes}).")


def started_part(lab: LabSettings, part: Part, ran: Part, check_mode: bool) -> Part:
    planned = ran.get("planned") or []
    note = f"Check mode: lab {lab.name} would {'; '.join(planned)}." if check_mode and planned else ""
    if ran.get("failed"):
        return failed(str(ran.get("msg", f"Lab {lab.name} could not be started.")), check_note=note,
                      instance=part["instance"], address=part["address"], lab=part["lab"], start_note="")
    # In check mode nothing started: the lab answers SSH only if it already did.
    ip = "" if check_mode else str((ran.get("address") or {}).get("public_ip", ""))
    published = part["lab"] | {"address": ip, "ssh_ready": True} if ip else part["lab"]
    return ok(bool(ran.get("changed")), instance=ran.get("instance") or part["instance"],
              address=ip or part["address"], lab=published, check_note=note, start_note=start_note(lab, ran))


# --- step=status ---------------------------------------------------------------------------

STOPPED_AT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def status_step(run: Run, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> dict[str, Part]:
    """Each part: ``status``, the lab at a glance (status_of), from what find.yml found with
    details (volumes and left-overs). Read-only: the one call is for the region's prices, when
    this machine has none of the week (status_prices)."""
    parts: dict[str, Part] = {}
    prices = status_prices(run, now())
    for host, lab, found, published in each_looked_up(run, "status", parts):
        parts[host] = ok(status=status_of(lab, published["region"], found, now().replace(tzinfo=None),
                                          prices=prices.get(host)))
    return parts


def status_prices(run: Run, now: dt.datetime) -> dict[str, lab_prices.Prices]:
    """Each lab's prices (the labs with an instance): its region's, cached on this machine
    (lab_price_cache.py) or asked of the Price List API in one lab_info call for every region
    whose cache is missing or stale (a class asks once per region); the shipped table when
    the API cannot answer. In check mode the answer is used, not cached."""
    wants: lab_price_cache.Wants = {}
    keys: dict[str, tuple[str, str]] = {}
    for host, lab in run.labs.items():
        seen = looked_up(run, host, "status")
        if not isinstance(seen, tuple) or not (seen[0].get("instance") or {}):
            continue
        key = (lab.home, str(seen[1]["region"]))
        types, max_age = wants.get(key, (set(), lab.price_max_age_days))
        wants[key] = (types | {str(seen[0]["instance"].get("type") or "")} | set(lab.candidates),
                      min(max_age, lab.price_max_age_days))
        keys[host] = key

    def ask_api(asks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            answer = run.call("csdl.gpu_lab.lab_info", {"prices": asks})
        except ModuleFailed as error:
            return {ask["region"]: {"failed": True, "msg": str(error)} for ask in asks}
        return dict(answer.get("prices") or {})

    by_key = lab_price_cache.regional_prices(wants, ask_api, now, keep=not run.check_mode) if wants else {}
    return {host: by_key[key] for host, key in keys.items()}


def since_of(instance: dict[str, Any]) -> str:
    """Since when the instance is in its state ('%Y-%m-%d %H:%M:%S' UTC, '' unknown): a running
    instance's LaunchTime is its last start; a stopped one's state reason says when it stopped."""
    if instance.get("state") in ("running", "pending"):
        return str(instance.get("launch_time", ""))[:19].replace("T", " ")
    match = STOPPED_AT.search(str(instance.get("state_reason") or ""))
    return match.group(0) if match else ""


def hours_since(instance: dict[str, Any], now: dt.datetime) -> float | None:
    """Hours the instance is in its state (None: not known)."""
    since = since_of(instance)
    return (now - dt.datetime.strptime(since, "%Y-%m-%d %H:%M:%S")).total_seconds() / 3600 if since else None


def shelf_status(found: Found) -> dict[str, Any]:
    """What status.yml shows of a lab's shelves: the newest, their size and what they cost a month."""
    shelves = found.get("shelves") or []
    gib = sum(int(s.get("size_gib") or 0) for s in shelves)
    newest = shelves[0] if shelves else {}
    return {"image_id": newest.get("image_id", ""), "created": str(newest.get("creation_date") or "")[:10],
            "count": len(shelves), "size_gib": gib, "monthly_usd": lab_prices.shelf_monthly(gib)}


def image_status(found: Found) -> dict[str, str]:
    """The instance's image (name, or id when it is gone; creation date) and what is newer, one
    sentence or '' (lab_info with details: dlami.newer, or why it is not known)."""
    instance, image = found.get("instance") or {}, found.get("image") or {}
    if not instance:
        return {"name": "", "creation_date": "", "newer": ""}
    return {"name": str(image.get("name") or instance.get("image", "")),
            "creation_date": str(image.get("creation_date") or "")[:10],
            "newer": str(image.get("newer") or image.get("note") or "")}


def status_of(lab: LabSettings, region: str, found: Found, now: dt.datetime, *,
              prices: lab_prices.Prices | None = None) -> dict[str, Any]:
    """The lab's state, since when, what it costs now and while stopped (at ``prices``, default
    the shipped table) and its warnings (status.yml shows it; tests/integration/
    test_status_cost.py checks it by hand)."""
    prices = prices or lab_prices.table(region)
    instance = found.get("instance") or {}
    shelf = shelf_status(found)
    state = instance.get("state", "shelved" if shelf["count"] else "absent")
    since = since_of(instance)
    hours = round(hours_since(instance, now) or 0.0, 2)
    hourly = prices.hourly(instance.get("type", ""))
    disk_gib = int(sum(v.get("size_gib", 0) for v in found.get("volumes") or []))
    addresses = found.get("addresses") or []
    autostop = str((instance.get("tags") or {}).get("gpu_lab:autostop_minutes", ""))
    stopped = {"disk": prices.disk_monthly(disk_gib), "addresses": prices.addresses_monthly(len(addresses))}
    orphans = found.get("orphans") or []
    warnings = []
    if state == "running" and autostop == "0":
        warnings.append("Running with idle auto-stop disabled: it bills until you stop it (ansible-playbook stop.yml).")
    if state == "stopped" and hours > 24 * lab.stopped_warn_days:
        monthly = round(stopped["disk"] + stopped["addresses"], 2)
        warnings.append(f"Stopped for {round(hours / 24, 1)} days: disk and address still cost about ${monthly}/month; "
                        "teardown.yml removes them.")
    warnings += [f"Left over: {o.get('summary')}, used by no instance (teardown.yml -e gpu_lab_remove_orphans=true "
                 "removes it)." for o in orphans]
    spot = spot_status(instance, found.get("spot_price") or {}, hourly)
    if spot["interrupted"]:
        warnings.insert(0, spot["interrupted"])
    if shelf["count"] and instance:
        warnings.append(f"A shelf image of this lab is left ({shelf['image_id']}, up to "
                        f"${shelf['monthly_usd']:.2f}/month): launch.yml deletes it once the lab runs.")
    return {
        "lab": lab.name, "region": region, "state": state, "since_utc": since, "hours_in_state": hours,
        "instance_id": instance.get("id", ""), "type": instance.get("type", ""), "zone": instance.get("zone", ""),
        "address": address_of(found), "hourly_usd": hourly,
        "running_period_usd": round(hours * hourly, 2) if state == "running" and hourly else 0,
        "disk_gib": disk_gib, "stopped_monthly_usd": stopped, "autostop_minutes": autostop,
        "prices": prices.source, "orphans": orphans, "warnings": warnings,
        # Open requests to raise the quotas of the lab's candidate types (gpu_lab_request_quota).
        "quota_requests": list(found.get("quota_requests") or []),
        # The instance's image and what is newer (find with details describes it; never replaced).
        "image": image_status(found),
        # Spot or on demand (the instance's own market), the spot price now, an interruption.
        "market": instance.get("market", "on-demand") if instance else "",
        "spot": spot,
        # A shelved lab's image of its disk (shelve.yml), what it costs a month at most.
        "shelf": shelf,
    }


def spot_status(instance: dict[str, Any], price: dict[str, Any], on_demand_hourly: float) -> dict[str, Any]:
    """The spot price of the instance's type in its zone beside the on-demand one (what a spot lab
    pays, or what an on-demand lab would), and, for a Spot Instance AWS interrupted, one sentence
    that says when and what happens next."""
    hourly = float(price.get("usd_per_hour") or 0)
    saving = round(100 * (1 - hourly / on_demand_hourly)) if hourly and on_demand_hourly else 0
    request = instance.get("spot_request") or {}
    interrupted = ""
    if instance.get("market") == "spot" and request.get("status") == "instance-stopped-no-capacity":
        when = str(request.get("updated") or "")[:16].replace("T", " ")
        at = f" at {when} UTC" if when else ""
        code = instance.get("state_reason_code") or "Server.SpotInstanceShutdown"
        interrupted = (f"Interrupted by AWS{at} ({code}): AWS took the spot capacity back and stopped the lab; its "
                       "disk and address stay. Only AWS can start it again, and it does so by itself when it has "
                       "capacity (idle auto-stop then stops it when nobody uses it); start.yml waits for that.")
    return {"usd_per_hour": hourly, "zone": str(price.get("zone") or ""), "saving_percent": saving,
            "request_state": str(request.get("state") or ""), "request_status": str(request.get("status") or ""),
            "interrupted": interrupted}


# --- step=confirm_teardown and step=teardown -----------------------------------------------

def confirm_teardown_step(run: Run) -> dict[str, Part]:
    """Each part: ``existing`` (what the teardown deletes), ``prompt`` (the question that names
    it; a class's names the class), ``confirm_word`` (what answers it), ``confirmed`` (given
    already, or nothing to confirm: a lab with nothing left) and ``refused`` (the sentence when
    the answer is wrong). Nothing is asked here: ansible.builtin.pause asks, once."""
    parts: dict[str, Part] = {}
    hosts = list(run.labs)
    for host, lab, found, published in each_looked_up(run, "teardown", parts):
        existing = existing_of(lab, found)
        word = lab.confirm_word
        parts[host] = ok(existing=existing, confirm_word=word,
                         prompt=teardown_prompt(lab, published["region"], existing, hosts),
                         confirmed=lab.teardown_confirm == word or (not lab.lab_class and not existing),
                         refused=(f"Teardown not confirmed: type the {'class' if lab.lab_class else 'lab'} name at the "
                                  f"prompt, or pass -e gpu_lab_confirm_teardown={word} in scripts."))
    return parts


def existing_of(lab: LabSettings, found: Found) -> list[str]:
    """What a teardown of the lab deletes, as find found it, in the words the prompt uses."""
    instance = found.get("instance") or {}
    disk = ("(its disk kept as an image: gpu_lab_keep_archive)" if lab.keep_archive
            else "with its disk and everything on it")
    existing = ([f"instance {instance['id']} ({instance.get('state')}, {instance.get('type')}) {disk}"]
                if instance else [])
    existing += [f"Elastic IP {a.get('public_ip')}" for a in found.get("addresses") or []]
    if not lab.keep_archive:
        existing += [f"shelf {s.get('image_id')} (an image of the lab's disk)" for s in found.get("shelves") or []]
    if found.get("security_group"):
        existing.append(f"security group {lab.sg_name}")
    if found.get("key_pair") and not lab.keep_archive:
        existing.append(f"key pair {lab.key_name}")
    if not lab.key_pair_public_key and not lab.keep_archive and os.path.isfile(lab.key_file):
        existing.append(lab.key_file)
    return existing


def truncate(text: str, length: int = 200, end: str = "...", leeway: int = 5) -> str:
    """As Jinja's truncate filter: whole words, with a little leeway."""
    if len(text) <= length + leeway:
        return text
    return text[: length - len(end)].rsplit(" ", 1)[0] + end


def teardown_prompt(lab: LabSettings, region: str, existing: list[str], hosts: list[str]) -> str:
    if lab.lab_class:
        return (f"This deletes {len(hosts)} lab(s) of class {lab.lab_class} in {region} "
                f"({truncate(', '.join(hosts))}): their instances and disks, Elastic IPs, security groups and key "
                "pairs. Type the class name to confirm")
    return (f"This deletes lab {lab.name} in {region}: {', '.join(existing)}, and this machine's ssh entry and "
            "shell shortcuts for it. Type the lab name to confirm")


def teardown_step(run: Run) -> dict[str, Part]:
    """Removes what find found of each lab (confirmed before: a lab refused is out of the
    play), in one lab_host call: its addresses first (released, never left billable at
    nothing), then its instances (waited for), its group, its key pair, the left-overs
    (gpu_lab_remove_orphans), then the lab's key file here (not a class's admin key: it
    reaches every lab). Each part: ``removed``, ``planned`` (check mode), ``message`` (what
    went, or would) and ``changed``; failed and msg when something could not be removed."""
    parts: dict[str, Part] = {}
    specs: dict[str, dict[str, Any]] = {}
    archives: dict[str, dict[str, Any]] = {}
    for host, lab, found, published in each_looked_up(run, "teardown", parts):
        keep = lab.keep_archive and bool(found.get("instance"))
        if keep:  # the disk is kept as the lab's shelf: the instance and address go with it
            archives[host] = {"lab": lab.name, "region": published["region"], "instance": found["instance"],
                              "addresses": found.get("addresses") or [], "shelves": found.get("shelves") or [],
                              "tags": lab.tags, "wait_timeout": lab.instance_timeout}
        specs[host] = {
            "lab": lab.name, "region": published["region"],
            "addresses": [] if keep else found.get("addresses") or [],
            "instances": [] if keep else found.get("instances") or [],
            # A shelf goes with the lab, unless it is the archive this teardown keeps.
            "shelves": [] if lab.keep_archive else found.get("shelves") or [],
            "security_group_id": (found.get("security_group") or {}).get("group_id", ""),
            # The archive comes back with the same key (launch.yml): its key pair stays.
            "key_name": lab.key_name if found.get("key_pair") and not lab.keep_archive else "",
            "orphans": (found.get("orphans") or []) if lab.remove_orphans else [],
            "wait_timeout": lab.instance_timeout,
        }
    archived = call_labs(run, archives, "shelved")
    for host, ran in archived.items():
        if ran.get("failed"):  # the disk could not be kept: nothing else is removed
            parts[host] = failed(f"{ran.get('msg')} Nothing else was removed; run teardown.yml again.")
            specs.pop(host)
    for host, removal in call_labs(run, specs, "absent").items():
        parts[host] = removed_part(run.labs[host], removal, run.check_mode, archived.get(host))
    return parts


def removed_part(lab: LabSettings, removal: Part, check_mode: bool, archived: Part | None = None) -> Part:
    key_file = ""
    if (not removal.get("failed") and not lab.key_pair_public_key and not lab.keep_archive
            and os.path.isfile(lab.key_file)):
        key_file = lab.key_file
        if not check_mode:
            os.remove(key_file)
    gone = dict(removal.get("removed") or {})
    archive = dict((archived or {}).get("shelf") or {})
    for kind, went in ((archived or {}).get("removed") or {}).items():  # what went with the archive made
        if isinstance(went, list) and went:
            gone[kind] = [*went, *(gone.get(kind) or [])]
    planned = [*((archived or {}).get("planned") or []), *(removal.get("planned") or []),
               *([f"delete {key_file}"] if key_file and check_mode else [])]
    message = removal_message(lab, gone, key_file, planned, check_mode)
    if archive and not check_mode:
        message += (f" Its disk is kept as the image {archive.get('image_id')} (at most "
                    f"${lab_prices.shelf_monthly(int(archive.get('size_gib') or 0)):.2f}/month), with the key pair "
                    f"{lab.key_name} and {lab.key_file}: launch.yml brings the lab back; teardown.yml without "
                    "gpu_lab_keep_archive deletes it.")
    if removal.get("failed"):
        why = removal.get("msg") or f"Lab {lab.name} could not be removed."
        return failed(f"{why} (What was removed before that is listed above; run teardown.yml again.)",
                      changed=bool(removal.get("changed")), removed=gone, planned=planned, message=message)
    return ok(bool(removal.get("changed")) or bool(key_file) or bool((archived or {}).get("changed")), removed=gone,
              planned=planned, message=message, **({"archive": archive} if archive else {}))


def removal_message(lab: LabSettings, gone: dict[str, Any], key_file: str, planned: list[str], check_mode: bool) -> str:
    if check_mode:
        return f"Check mode: lab {lab.name} would {'; '.join(planned) or 'remove nothing: nothing is left'}."
    removed = [f"Elastic IP {ip}" for ip in gone.get("addresses") or []]
    if gone.get("spot_requests"):
        removed.append("spot request " + ", ".join(gone["spot_requests"]))
    if gone.get("instances"):
        removed.append("instance " + ", ".join(gone["instances"]))
    if gone.get("shelves"):
        removed.append("shelf " + ", ".join(gone["shelves"]) + " and its snapshots")
    if gone.get("security_group"):
        removed.append(f"security group {lab.sg_name}")
    if gone.get("key_pair"):
        removed.append(f"key pair {gone['key_pair']}")
    if key_file:
        removed.append(key_file)
    removed += [f"left-over {summary}" for summary in gone.get("orphans") or []]
    return f"Lab {lab.name}: {'removed ' + ', '.join(removed) if removed else 'nothing was left to remove'}."
