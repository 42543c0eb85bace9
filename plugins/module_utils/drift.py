# Copyright: gpu_lab developers
# MIT License
"""A lab's settings against the lab that exists: what lab_host can apply, what it must refuse.

A setting changed after the launch (gpu_lab_instance_type, gpu_lab_volume_size) used to be
ignored without a word, the lab running as it was launched. Here each change is either
applied where AWS allows it safely (a volume grows online; the type changes while the
instance is stopped) or refused with the sentence that says what to do. No AWS call: lab_info
gives the facts, lab_host applies RV(apply) as its O(modify).
"""

from __future__ import annotations

from typing import Any

# The type the lab asked for at launch. The instance may run a fallback type (capacity
# failover), so a changed setting is the setting against this tag, not against the type it runs.
RECORDED_TYPE_TAG = "gpu_lab:instance_type"
# AWS changes an instance's type only while it is stopped; lab_host waits for one stopping.
TYPE_CHANGES_IN = ("stopped", "stopping")


def no_drift() -> dict[str, Any]:
    return {"apply": {}, "refuse": [], "notes": []}


def recorded_type(instance: dict[str, Any]) -> str:
    """The type asked for at launch; an instance from before the tag: the type it runs."""
    return (instance.get("tags") or {}).get(RECORDED_TYPE_TAG) or instance.get("type", "")


def type_refusal(lab: str, running: str, recorded: str, wanted: str) -> str:
    return (f"Lab {lab} runs {running} (asked for {recorded} at launch); gpu_lab_instance_type is now {wanted}. "
            "The type changes only while the instance is stopped: run stop.yml, then launch.yml again (it changes "
            f"the type and starts it), or set gpu_lab_instance_type back to {recorded}.")


def shrink_refusal(lab: str, size_gib: int, wanted_gib: int) -> str:
    return (f"Lab {lab}'s disk is {size_gib} GiB and gpu_lab_volume_size is now {wanted_gib}, but a volume cannot "
            f"shrink: set gpu_lab_volume_size back to {size_gib} or more.")


def growth_note(lab: str, size_gib: int, wanted_gib: int) -> str:
    """What growing means on the host (lab_host's own note says what it changed: not repeated)."""
    return (f"Lab {lab}'s file system takes its disk's new size ({wanted_gib} GiB, from {size_gib}) at the next "
            "boot, or at once with `sudo growpart` and `sudo resize2fs` on the host (gp3 grows online).")


def drift(lab: str, instance: dict[str, Any], wanted: dict[str, Any] | None,
          root_size_gib: int | None) -> dict[str, Any]:
    """What differs between the lab's settings (wanted: instance_type, volume_size; either may
    be missing or None) and its instance (as lab_info sums it up), given the size of its root
    volume (None: unknown, so the size is not compared)."""
    found = no_drift()
    if not instance or not wanted:
        return found
    size = wanted.get("volume_size")
    if size is not None and root_size_gib is not None:
        if size > root_size_gib:
            found["apply"]["volume_size"] = size
            found["notes"].append(growth_note(lab, root_size_gib, size))
        elif size < root_size_gib:
            found["refuse"].append(shrink_refusal(lab, root_size_gib, size))
    kind = wanted.get("instance_type")
    recorded = recorded_type(instance)
    if kind and kind != recorded:
        if kind == instance.get("type") or instance.get("state") in TYPE_CHANGES_IN:
            # Either it already runs that type (only the record changes) or AWS can change it now.
            found["apply"]["instance_type"] = kind
        else:
            found["refuse"].append(type_refusal(lab, instance.get("type", ""), recorded, kind))
    return found
