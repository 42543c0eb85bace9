# Copyright: gpu_lab developers
# MIT License
"""Starting a stopped lab when AWS has no capacity for its type in its zone.

A stopped lab's disk lives in one Availability Zone, so a start cannot move zone: on AWS a
GPU type can lack capacity there for hours. lab_host tries the same type again for a bounded
time (retry_delays), then, when the lab allows it, changes the stopped instance's type to the
lab's other candidate types that its zone offers (fallback_types), one after the other. The
sentences it says are here too. No AWS call: lab_host makes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The first pause is a twentieth of the bound (capacity comes back in minutes, not seconds),
# at least FIRST_MIN_S and at most FIRST_MAX_S; each next one doubles, up to LONGEST_S.
FIRST_MIN_S = 0.5
FIRST_MAX_S = 10.0
LONGEST_S = 60.0


def retry_delays(bound_s: float) -> list[float]:
    """The pauses before each new StartInstances of the same type, adding up to ``bound_s``
    seconds: growing from a twentieth of the bound (0.5 to 10 s), doubling up to a minute, the
    last one cut to end at the bound (a remainder shorter than the first pause joins the pause
    before it). 0 (or less): no retry."""
    if not bound_s or bound_s <= 0:
        return []
    first = min(max(bound_s / 20, FIRST_MIN_S), FIRST_MAX_S)
    delays: list[float] = []
    total, delay = 0.0, first
    while bound_s - total > 1e-9:
        step = min(delay, bound_s - total)
        if delays and step < first and step < delay:
            delays[-1] += step
        else:
            delays.append(step)
        total += step
        delay = min(delay * 2, LONGEST_S)
    return [round(d, 3) for d in delays]


def fallback_types(current: str, candidates: Iterable[str], offered: Mapping[str, Iterable[str]],
                   zone: str) -> list[str]:
    """The types to change a stopped instance to, in order, when its own type has no capacity
    in its zone: the lab's other candidate types (gpu_lab_instance_type first, then
    gpu_lab_fallback_instance_types), those the zone offers (``offered``: zones by type)."""
    chosen: list[str] = []
    for kind in candidates:
        if kind and kind != current and kind not in chosen and zone in set(offered.get(kind) or ()):
            chosen.append(kind)
    return chosen


def waited(refusals: int, seconds: float) -> str:
    """'3 tries over 45 s' (said of the same type's tries)."""
    tries = f"{refusals} {'try' if refusals == 1 else 'tries'}"
    return f"{tries} over {seconds:.0f} s" if seconds >= 1 else tries


def changed_note(lab: str, instance_id: str, old: str, new: str, zone: str, region: str, asked: str,
                 refusals: int, seconds: float) -> str:
    """What a start changed when it changed the type, and how to go back."""
    return (f"AWS had no {old} capacity in {zone} ({waited(refusals, seconds)}), so lab {lab}'s instance "
            f"{instance_id} was changed from {old} to {new} while stopped and started; its disk and Elastic IP are "
            f"the same and the lab still asks for {asked} (gpu_lab_instance_type). To go back to {old} later, run "
            f"stop.yml, then aws ec2 modify-instance-attribute --region {region} --instance-id {instance_id} "
            f"--instance-type Value={old}, then start.yml.")


def no_capacity_message(instance_id: str, kind: str, zone: str, tried: list[str], refusals: int,
                        seconds: float, change_type: bool, restored: str = "",
                        code: str = "InsufficientInstanceCapacity", spot: bool = False) -> str:
    """One sentence when nothing could start: what was tried, that nothing changed, what to do."""
    others = (f", then as {', '.join(tried)}" if tried else
              (", and no other candidate type is offered in that zone" if change_type else ""))
    back = f" (its type is {restored} again)" if restored else ""
    move = (" a Spot Instance's type cannot be changed;" if spot else "" if change_type else
            " set gpu_lab_start_change_type to true to let start.yml change the type to a fallback type;")
    return (f"AWS has no capacity in {zone} for the lab's instance {instance_id}: tried {kind} "
            f"({code}, {waited(refusals, seconds)}){others}; it stays stopped{back} and nothing changed. Try start.yml "
            f"again later (or with a longer gpu_lab_start_capacity_wait_minutes);{move} or keep your work and "
            "move: teardown.yml removes the instance and its disk, so first push your work, then teardown.yml and "
            "launch.yml with gpu_lab_zones or gpu_lab_fallback_instance_types set.")


def quota_message(instance_id: str, kind: str, code: str, quota: str) -> str:
    """A start refused by the account's vCPU limit: no wait helps; the quota must grow."""
    return (f"AWS refused to start the lab's instance {instance_id} ({kind}) because the account's vCPU quota "
            f"for it is used up ({code}): this is the quota, not capacity, so start.yml does not wait. It stays "
            f"stopped and nothing changed: stop another instance of that family, or ask AWS to raise {quota} "
            "(Service Quotas console, EC2), then start.yml again.")


def interrupted_message(instance_id: str, kind: str, zone: str, since: str, looks: int, seconds: float) -> str:
    """A start of a Spot Instance that AWS interrupted and has not started again: only AWS can."""
    when = f" at {since[:16].replace('T', ' ')} UTC" if since else ""
    return (f"AWS interrupted the lab's spot instance {instance_id}{when} (it took the capacity back) and only AWS "
            f"can start it again, when it has {kind} spot capacity in {zone}; it did not within the wait "
            f"({waited(looks, seconds)}). The lab stays stopped with its disk and Elastic IP; nothing changed. "
            "Run start.yml again later (or with a longer gpu_lab_start_capacity_wait_minutes); AWS may also start "
            "it by itself meanwhile, and idle auto-stop stops it again if nobody uses it. Or move it now with its "
            "disk: shelve.yml, then launch.yml (from the image of its disk, in the first zone and type with "
            "capacity, on demand as the last resort; a new address).")


def interrupted_back_note(instance_id: str, seconds: float) -> str:
    return (f"AWS had interrupted the spot instance {instance_id}; it started it again after {seconds:.0f} s of "
            "waiting (only AWS can start an interrupted Spot Instance).")
