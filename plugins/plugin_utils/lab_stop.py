# Copyright: gpu_lab developers
# MIT License
"""step=stop: stop every lab's instance, as find.yml found it earlier in the run (no second
look), in one csdl.gpu_lab.lab_host call (one StopInstances per region, one wait for all).
Disk and address are kept."""

from __future__ import annotations

from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import ModuleFailed, Part, Run, failed, ok

RUNNING = ("pending", "running")


def stop_message(name: str, region: str, instance: dict[str, Any], address: str) -> str:
    """What the stop does for the lab, said before it waits ('' when it does nothing)."""
    if not instance:
        return f"Lab {name} has no instance in {region}; nothing to stop."
    if instance.get("state") in RUNNING:
        return f"Stopping {instance['id']}; the disk and the address {address} are kept."
    return ""


def stop_spec(name: str, region: str, instance: dict[str, Any], wait_timeout: int) -> dict[str, Any]:
    return {"lab": name, "region": region, "instance": instance, "wait_timeout": wait_timeout}


def stop_step(run: Run) -> dict[str, Part]:
    """Each part: ``message`` (stop_message), ``changed`` (its instance was running),
    ``instance`` (as it is now) and ``lab`` (ssh_ready false once stopped). A lab find did not
    find (its fact is missing) fails: find.yml runs first."""
    parts: dict[str, Part] = {}
    specs: dict[str, dict[str, Any]] = {}
    for host, lab in run.labs.items():
        facts = run.facts.get(host, {})
        if "instance" not in facts or "lab" not in facts:
            parts[host] = failed(f"Lab {lab.name} was not looked up before the stop (find.yml runs first).")
            continue
        published = dict(facts["lab"])
        instance = dict(facts["instance"] or {})
        parts[host] = ok(instance=instance, lab=published,
                         message=stop_message(lab.name, published["region"], instance, str(facts.get("address", ""))))
        if instance.get("state") in (*RUNNING, "stopping"):
            specs[host] = stop_spec(lab.name, published["region"], instance, lab.instance_timeout)
    if not specs:
        return parts
    try:
        answer = run.call("csdl.gpu_lab.lab_host", {"state": "stopped", "labs": list(specs.values())})
    except ModuleFailed as error:
        return parts | {host: failed(str(error)) for host in specs}
    for host, spec in specs.items():
        mine = answer.get("labs", {}).get(spec["lab"], {"failed": True, "msg": f"Lab {spec['lab']} was not stopped."})
        if mine.get("failed"):
            parts[host] = failed(str(mine.get("msg")))
            continue
        parts[host] |= {"changed": bool(mine.get("changed")), "instance": mine.get("instance", spec["instance"]),
                        "planned": mine.get("planned", []),
                        "lab": parts[host]["lab"] | {"ssh_ready": False}}
    return parts
