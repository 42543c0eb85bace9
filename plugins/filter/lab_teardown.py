# Copyright: gpu_lab developers
# MIT License
"""The lab_teardown_risk and lab_keep_offer filters: what a teardown would lose, the refusal, and
the offer to keep the disk as an image instead (teardown.yml)."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.lab_teardown_risk, ...) are in
# plugins/filter/lab_teardown_risk.yml and lab_keep_offer.yml.
from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.filter.jupyter_server import (
    jupyter_server_guard_refusal,
    jupyter_server_unsaved_text,
)
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_prices import SNAPSHOT_GIB_MONTH_USD
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import as_bool

KEEP_WORD = "keep"
KEEP_HINT = "-e gpu_lab_keep_archive=true to keep the disk as an image (a few dollars a month)"
FORCE_HINT = "-e gpu_lab_force_teardown=true"


def lab_teardown_risk(lab: Mapping[str, Any], instance: Mapping[str, Any] | None, work: Mapping[str, Any] | None,
                      force: Any = False, keep: Any = False) -> dict[str, Any]:
    """What deleting this lab's disk would lose: ``at_risk``, ``lab``, ``what`` (the clause the
    offer names) and ``refusal`` (the sentence teardown fails with). Nothing is at risk without
    an instance, when forced, or when the disk is kept (gpu_lab_keep_archive)."""
    name = str(lab.get("name", ""))
    safe = {"at_risk": False, "lab": name, "what": "", "refusal": ""}
    if not instance or as_bool(force) or as_bool(keep):
        return safe
    if not as_bool(lab.get("ssh_ready", False)):
        state = str(instance.get("state", ""))
        why = f"is {state}" if state != "running" else "does not answer SSH"
        first = "run start.yml" if state != "running" else "make it answer (status.yml says why it does not)"
        return {"at_risk": True, "lab": name,
                "what": f"lab {name} {why}, so its disk cannot be checked for unsaved work",
                "refusal": (f"Lab {name} {why}, so its disk cannot be checked for unsaved work, and teardown "
                            f"deletes the disk: {first} and push or copy your work first, add "
                            f"{KEEP_HINT}, or add {FORCE_HINT} to delete it anyway.")}
    if not (work or {}).get("any"):
        return safe
    label = f"{name}-server"
    return {"at_risk": True, "lab": name, "what": jupyter_server_unsaved_text(work, label),
            "refusal": jupyter_server_guard_refusal(work, label, f"run again with {KEEP_HINT}, or with {FORCE_HINT}")}


def lab_keep_offer(risks: Iterable[Mapping[str, Any] | None]) -> str:
    """The prompt that offers, at a terminal, to keep the disks at risk as images instead ('' when
    none is): one for every lab of the play (the pause runs once). Enter refuses, as without a
    terminal."""
    at_risk = [r for r in risks if r and r.get("at_risk")]
    if not at_risk:
        return ""
    whose = "its disk" if len(at_risk) == 1 else f"the disks of {', '.join(str(r['lab']) for r in at_risk)}"
    return (f"Teardown deletes the disk, and {'; '.join(str(r['what']) for r in at_risk)}. Type {KEEP_WORD} to keep "
            f"{whose} as an image instead (everything else goes; the snapshots cost about ${SNAPSHOT_GIB_MONTH_USD} "
            "per GiB-month, status.yml lists them and launch.yml brings the lab back), or press Enter to stop here")


def lab_keep_chosen(answer: Any) -> bool:
    """Whether the answer to lab_keep_offer's prompt keeps the disk."""
    return str(answer or "").strip().lower() == KEEP_WORD


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_teardown_risk": lab_teardown_risk, "lab_keep_offer": lab_keep_offer,
                "lab_keep_chosen": lab_keep_chosen}
