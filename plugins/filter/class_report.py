# Copyright: gpu_lab developers
# MIT License
"""Filters for a class's launch summary and status table, built from every lab's facts."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import re
from collections.abc import Iterable, Mapping
from typing import Any


def _status_row(*cells: Any) -> str:
    student, state, kind, hours, this_run, stopped, warnings = map(str, cells)
    return f"{student:<12} {state:<9} {kind:<12} {hours:>8} {this_run:>9} {stopped:>11}  {warnings}"


def _float(value: Any) -> float:
    """Jinja's `float`: 0.0 for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _facts(hostvars: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    facts = hostvars[name]
    return facts if isinstance(facts, Mapping) else {}


def class_report_row(name: str, facts: Mapping[str, Any], configured: Iterable[str]) -> dict[str, Any]:
    """What one lab of a class launch got."""
    instance = facts.get("ec2_gpu_host_instance") or {}
    lab = facts.get("ec2_gpu_host_lab") or {}
    lab_name = facts.get("gpu_lab_name", name)
    tried = [a for a in facts.get("ec2_gpu_host_launch_attempts") or [] if a.get("outcome") != "launched"]
    return {
        "student": facts.get("gpu_lab_student", name),
        "lab": lab_name,
        "launched": "gpu_lab_launch_error" not in facts,
        "type": instance.get("type", ""),
        "zone": instance.get("zone", ""),
        "instance_id": instance.get("id", ""),
        "address": lab.get("address", ""),
        "configured": f"{lab_name}-server" in list(configured),
        "failed_over_from": [f"{a.get('type')} in {a.get('zone')}" for a in tried],
        "error": facts.get("gpu_lab_launch_error", ""),
        "warnings": list(lab.get("warnings", [])),
    }


def class_report_rows(hosts: Iterable[str], hostvars: Mapping[str, Any],
                      configured: Iterable[str] | None = None) -> list[dict[str, Any]]:
    configured = list(configured or [])
    return [class_report_row(name, _facts(hostvars, name), configured) for name in sorted(hosts)]


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def class_report_lines(rows: list[Mapping[str, Any]], class_name: str, kit_root: str) -> list[str]:
    """The launch summary: a headline, one line per lab, then each warning once."""
    failed = [r for r in rows if not r["launched"]]
    lines = [f"Class {class_name}: {len(rows) - len(failed)} of {len(rows)} labs up"
             + (f", {len(failed)} not launched" if failed else "") + f". Kits: {kit_root}"]
    for r in rows:
        if not r["launched"]:
            lines.append(f"{r['student']!s:<12} NOT LAUNCHED: {r['error']}")
            continue
        state = "ready" if r["configured"] else "provisioned only (host not reached)"
        after = (", after no capacity for " + ", ".join(r["failed_over_from"])) if r["failed_over_from"] else ""
        lines.append(f"{r['student']!s:<12} {r['type']!s:<11} {r['zone']!s:<12} {r['address']!s:<15} {state}{after}")
    lines.extend(_unique(w for r in rows for w in r["warnings"]))
    return lines


def class_status_row(name: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """One lab's status fact, with the student, the cost while stopped, and no left-overs."""
    status = dict(facts["ec2_gpu_host_status"])
    stopped = status.get("stopped_monthly_usd") or {}
    status.update({
        "student": facts.get("gpu_lab_student", name),
        "stopped_monthly_usd_total": round(_float(stopped.get("disk")) + _float(stopped.get("addresses")), 2),
        "warnings": [w for w in status.get("warnings", []) if not re.match("^Left over: ", w)],
    })
    status.pop("orphans", None)
    return status


def _total(values: Iterable[Any]) -> float:
    return round(sum(_float(v) for v in values), 2)


def class_status(hosts: list[str], hostvars: Mapping[str, Any], class_name: str) -> dict[str, Any]:
    """The class's status: its labs' rows, the totals, and what is left over in the account."""
    rows = [class_status_row(name, _facts(hostvars, name)) for name in sorted(hosts)]
    running = [r for r in rows if r.get("state") == "running"]
    totals = {
        "labs": len(rows),
        "running": len(running),
        "stopped": len([r for r in rows if r.get("state") == "stopped"]),
        "absent": len([r for r in rows if r.get("state") == "absent"]),
        "hourly_usd_now": _total(r.get("hourly_usd") for r in running if r.get("hourly_usd")),
        "running_periods_usd": _total(r.get("running_period_usd") for r in rows),
        "stopped_monthly_usd": _total(r["stopped_monthly_usd_total"] for r in rows),
    }
    # The account's left-overs are the same for every lab: the first one says them.
    first = _facts(hostvars, hosts[0]).get("ec2_gpu_host_status") or {} if hosts else {}
    left_over = [o.get("summary") for o in first.get("orphans", [])]
    # Where the prices come from (the Price List API of each region, or the shipped table), once each.
    prices = _unique(str(r["prices"]) for r in rows if r.get("prices"))
    return {"class": class_name, "labs": rows, "totals": totals, "left_over": left_over, "prices": prices}


def class_status_lines(status: Mapping[str, Any]) -> list[str]:
    """The status table, its totals line, where the prices come from, and a line per left-over."""
    t = status["totals"]
    lines = [_status_row("student", "state", "type", "hours", "this run", "stopped/mo", "warnings")]
    for r in status["labs"]:
        lines.append(_status_row(r["student"], r["state"], r["type"] or "-", r["hours_in_state"],
                                 f"${_float(r['running_period_usd']):.2f}",
                                 f"${_float(r['stopped_monthly_usd_total']):.2f}", " | ".join(r["warnings"])))
    lines.append(f"Class {status['class']}: {t['labs']} labs, {t['running']} running"
                 f" (${_float(t['hourly_usd_now']):.2f}/h now), {t['stopped']} stopped, {t['absent']} without an"
                 f" instance; running periods so far ${_float(t['running_periods_usd']):.2f}; while stopped"
                 f" ${_float(t['stopped_monthly_usd']):.2f}/month (disks and addresses).")
    lines.extend(f"Prices: {p}" for p in status.get("prices") or [])
    lines.extend(f"Left over: {o}" for o in status["left_over"])
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "class_report_rows": class_report_rows,
            "class_report_lines": class_report_lines,
            "class_status": class_status,
            "class_status_lines": class_status_lines,
        }
