# Copyright: gpu_lab developers
# MIT License
"""Pure parts of a launch: what to ask csdl.gpu_lab.lab_host for each lab (its spec), and what
the role publishes once lab_host answered (the lab, its address, the launch note, warnings)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import published_lab
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import DEFAULT_ROOT_DEVICE, LabSettings

# Instance families the current Deep Learning AMIs list as supported (release notes,
# 2025-2026). P3 (Volta) is gone: CUDA 12.8+ dropped it. Other types launch with a warning.
DLAMI_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200")
# cloud-init reads user data as cloud-config when its first line is exactly this.
CLOUD_CONFIG_HEADER = "#cloud-config\n"


def drift_apply(found: dict[str, Any]) -> dict[str, Any]:
    return dict((found.get("drift") or {}).get("apply") or {})


def needs_key(lab: LabSettings, found: dict[str, Any], rotated: bool) -> bool:
    """Whether the lab needs its key file: no key pair yet (or it was just removed to rotate
    it), or a new instance whose first boot authorizes the file beside a given key pair."""
    return not found.get("key_pair") or rotated or (bool(lab.key_pair_public_key) and not found.get("instance"))


def address_of_instance(found: dict[str, Any]) -> str:
    """The Elastic IP associated with the instance found ('' for none)."""
    instance_id = (found.get("instance") or {}).get("id", "")
    return next((str(a.get("public_ip", "")) for a in found.get("addresses") or []
                 if a.get("instance_id") == instance_id), "")


def needs_run(found: dict[str, Any]) -> bool:
    """Whether lab_host has anything to do: a change to apply, an instance to launch or
    start, or an address to associate."""
    instance = found.get("instance") or {}
    if drift_apply(found) or instance.get("state", "absent") != "running" or found.get("shelves"):
        return True  # (a shelf left by a launch from it that stopped half-way: lab_host deletes it)
    return not any(a.get("instance_id") == instance.get("id") for a in found.get("addresses") or [])


def user_data(public_key: str) -> str:
    """A cloud-config that authorizes this machine's key at first boot (beside a given key pair)."""
    return CLOUD_CONFIG_HEADER + yaml.safe_dump({"ssh_authorized_keys": [public_key]}, indent=2,
                                                allow_unicode=True, default_flow_style=False, width=100000)


def run_spec(lab: LabSettings, checked: dict[str, Any], local_public: str, rotated: bool) -> dict[str, Any]:
    """What lab_host brings up for the lab (checked = the check step's part: found, cidrs)."""
    found = checked["found"]
    instance = found.get("instance") or {}
    image = found.get("image") or {}
    group = found.get("security_group") or {}
    new = not instance
    drift = drift_apply(found)
    key_pair = None
    if new and (not found.get("key_pair") or rotated):
        key_pair = {"name": lab.key_name, "public_key": lab.key_pair_public_key or local_public}
    return {
        "lab": lab.name,
        "region": lab.region,
        "instance": instance,
        "addresses": found.get("addresses") or [],
        # The candidates the vCPU quotas leave in each market the lab launches in (the check
        # step's; all of them when the quotas were not read): spot first, on demand last.
        "instance_types": market_candidates(lab, checked, "on-demand"),
        "spot_instance_types": market_candidates(lab, checked, "spot"),
        "spot_max_price": lab.spot_max_price,
        "zones": lab.zones,
        "image_id": image.get("image_id"),
        "root_device_name": image.get("root_device_name", DEFAULT_ROOT_DEVICE),
        "volume_size": int(str(lab.volume_size)),
        "key_name": lab.key_name,
        "key_pair": key_pair,
        "user_data": user_data(local_public) if new and lab.key_pair_public_key else "",
        "security_group_id": group.get("group_id"),
        "security_group": {"name": lab.sg_name, "description": lab.sg_description, "ssh_cidrs": checked["cidrs"]},
        "tags": lab.tags,
        "instance_tags": lab.recorded_tags,
        # A changed setting AWS can apply to the lab that exists (a bigger volume; another type
        # while stopped): lab_info's drift, applied by lab_host.
        "modify": drift or None,
        # A shelved lab launches from its shelf (lab_info gives it as the image); once it runs, they go.
        "shelves": found.get("shelves") or [],
        "wait_timeout": lab.instance_timeout,
    }


def market_candidates(lab: LabSettings, checked: dict[str, Any], market: str) -> list[str]:
    """The candidate types a new instance is tried as in the market ([] when the lab does not
    launch in it)."""
    if market not in lab.markets:
        return []
    key = "spot_candidates" if market == "spot" else "candidates"
    return list(checked[key]) if key in checked else lab.candidates


def with_quota(checked: dict[str, Any], ran: dict[str, Any]) -> dict[str, Any]:
    """lab_host's answer with what the quota check did first: the candidates it skipped, as the
    launch attempts they are ("quota"), and what a quota request said, as notes."""
    skipped, notes = checked.get("quota_skipped") or [], checked.get("quota_notes") or []
    if not (skipped or notes) or not ran.get("launched"):
        return ran
    return {**ran, "attempts": [*skipped, *(ran.get("attempts") or [])], "notes": [*notes, *(ran.get("notes") or [])]}


# --- What the role publishes ------------------------------------------------------------------

def launch_note(lab: LabSettings, found: dict[str, Any], ran: dict[str, Any]) -> str:
    """"Launched g5.xlarge in us-east-1a, after g6.xlarge in us-east-1a: InsufficientInstanceCapacity."
    Then what a changed setting changed on the lab that exists, and what it does not change."""
    sentences = []
    if ran.get("launched"):
        instance, attempts = ran["instance"], ran.get("attempts") or []
        spot = "spot" in lab.markets
        before = "".join(f"{', after ' if n == 0 else '; '}{a['type']}{market_of(a, spot)} in "
                         f"{a.get('zone') or 'no zone'}: {a.get('code') or a.get('outcome')}"
                         for n, a in enumerate(attempts[:-1]))
        got = (" as a spot instance" if instance.get("market") == "spot" else " on demand") if spot else ""
        sentences.append(f"Launched {instance['type']}{got} in {instance['zone']}{before}.")
        if spot and instance.get("market") != "spot":
            sentences.append("No candidate type had spot capacity (or spot quota) in any zone: it runs on demand "
                             "(gpu_lab_spot_fallback_on_demand) and bills the on-demand price.")
        sentences += image_notes(found.get("image") or {})
    sentences += [*(ran.get("notes") or []), *((found.get("drift") or {}).get("notes") or []), *kept(lab, found)]
    return " ".join(sentences)


def market_of(attempt: dict[str, Any], spot: bool) -> str:
    """' (spot)' or ' (on-demand)' after a spot lab's attempt ('' for an on-demand lab's)."""
    return f" ({attempt.get('market') or 'on-demand'})" if spot else ""


def image_notes(image: dict[str, Any]) -> list[str]:
    """The image a new instance got, by name and date (and why it was found by name)."""
    if not image.get("name"):
        return []
    line = f", line {image['line']}" if image.get("line") else ""
    said = [f"Image: {image['name']} ({image.get('image_id')}, created "
            f"{str(image.get('creation_date', ''))[:10] or 'on an unknown date'}{line})."]
    return said + ([str(image["note"])] if image.get("note") else [])


def kept(lab: LabSettings, found: dict[str, Any]) -> list[str]:
    """Settings that only shape a new instance: a lab that exists keeps its image and zone."""
    instance = found.get("instance") or {}
    if not instance:
        return []
    notes = []
    if lab.ami_id not in ("", instance.get("image")):
        notes.append(f"Lab {lab.name} keeps its image {instance.get('image')} (gpu_lab_ami_id {lab.ami_id} applies "
                     "to a new instance only: teardown.yml, then launch.yml, to change it).")
    market = instance.get("market") or "on-demand"
    if lab.market in ("on-demand", "spot") and lab.market != market:
        notes.append(f"Lab {lab.name} stays {market} (gpu_lab_market {lab.market} applies to a new instance only: "
                     "teardown.yml, then launch.yml, to change it).")
    if lab.zones and instance.get("zone") not in lab.zones:
        notes.append(f"Lab {lab.name} stays in {instance.get('zone')}, where its disk is (gpu_lab_zones applies to "
                     "a new instance only).")
    return notes


def warnings(instance_type: str, found: dict[str, Any]) -> list[str]:
    """For the launch summary: an instance type current Deep Learning AMIs do not support (the
    type it runs, which may be a fallback) launches, but its GPU may not work."""
    if not instance_type or instance_type.split(".")[0] in DLAMI_FAMILIES:
        return []
    gpus = next((t.get("gpu_count") for t in found.get("instance_types") or [] if t.get("name") == instance_type), 1)
    if gpus == 0:
        return [f"Note: {instance_type} has no GPU (gpu_lab_allow_no_gpu): notebooks run on the CPU."]
    volta = " (P3 is Volta, which CUDA 12.8+ dropped)" if re.match("p3", instance_type) else ""
    return [f"Warning: {instance_type} is not among the instance families current Deep Learning AMIs support "
            f"({', '.join(DLAMI_FAMILIES)}); it launches, but the GPU driver may not work{volta}."]


def alarm_check(lab: LabSettings, found: dict[str, Any]) -> bool:
    """CloudWatch is asked about the backstop alarm only when the lab wants it or had it (the
    instance's tag; an instance without the tag, from before 0.2, may have it)."""
    instance = found.get("instance") or {}
    had = (instance.get("tags") or {}).get("gpu_lab:idle_alarm", "true") == "true"
    return lab.idle_alarm or (bool(instance) and had)


def outcome(lab: LabSettings, found: dict[str, Any], ran: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """What the role publishes of the lab once lab_host answered (ran = its part for the lab,
    {} when it had nothing to do)."""
    instance = ran["instance"] if "instance" in ran else (found.get("instance") or {})
    address = str((ran.get("address") or {}).get("public_ip") or "") or address_of_instance(found)
    # In check mode nothing was started: only a lab already running at its address answers.
    running = (found.get("instance") or {}).get("state") == "running" and address != ""
    ssh_ready = lab.wait_for_ssh and (not check_mode or running)
    # What is newer than a new instance's image (a pinned line or id; an unpatched line).
    newer = [str((found.get("image") or {}).get("newer") or "")] if ran.get("launched") else []
    published = published_lab(lab, lab.region, address, ssh_ready) | {
        "alarm_check": alarm_check(lab, found),
        "warnings": warnings(str(instance.get("type", "")), found) + [n for n in newer if n]}
    return {"instance": instance, "address": address, "lab": published, "region": lab.region,
            "launch_note": launch_note(lab, found, ran), "launch_attempts": ran.get("attempts") or []}


def check_note(lab: LabSettings, ran: dict[str, Any], key_file_exists: bool) -> str:
    """What a run without --check would do ('' for nothing)."""
    planned = ran.get("planned") or []
    if not planned:
        return ""
    make_key = [] if key_file_exists else [f"make the private key {lab.key_file} on this machine"]
    return f"Check mode: lab {lab.name} would {'; '.join(make_key + planned)}."
