# Copyright: gpu_lab developers
# MIT License
"""The lab_report_lines filter: the launch summary of one's own lab."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
from collections.abc import Mapping
from typing import Any


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def idle_line(jupyter: Mapping[str, Any], minutes: Any) -> str:
    if not jupyter:
        return ""
    return "Idle auto-stop: " + (f"after {minutes} idle minutes" if _float(minutes) > 0
                                 else "off (you pay until you stop it)")


def connect_lines(lab: Mapping[str, Any], ws: Mapping[str, Any], jupyter: Mapping[str, Any]) -> list[str]:
    aliases = _map(ws.get("aliases")) if "aliases" in ws else None
    connect = ws["ssh_command"] if "ssh_command" in ws else f"ssh -i {lab['key_file']} {lab['user']}@{lab['address']}"
    return [
        f"Connect: {connect}",
        f"Local port {ws.get('local_port')}: {ws.get('local_port_reason')}" if ws.get("local_port_changed") else "",
        "Shortcuts (in a new terminal): " + ", ".join(map(str, aliases.values())) if aliases is not None else "",
        f"Jupyter (once connected): {ws.get('jupyter_alias')}, or open the URL in {ws['jupyter_url_file']}"
        if "jupyter_url_file" in ws and jupyter else "",
    ]


def stop_line(ws: Mapping[str, Any], fallback: Mapping[str, Any]) -> str:
    commands = _map(ws.get("commands"))
    commands = commands if "stop" in commands else _map(fallback)
    aliases = _map(ws.get("aliases"))
    shortcut = f"{aliases['stop']} in a new terminal, or " if "stop" in aliases else ""
    return (f"Stop it when you are done (you pay while it runs): {shortcut}"
            f"in {commands.get('run_dir')}: {commands.get('stop')}")


def lab_report_lines(lab: Mapping[str, Any], instance: Mapping[str, Any], facts: Mapping[str, Any]) -> list[str]:
    jupyter, ws = _map(facts.get("jupyter")), _map(facts.get("workstation"))
    lines = [
        f"Lab {lab['name']} is up: {instance['type']} {instance['id']} in {instance['zone']}",
        # A re-run launches nothing: its note is empty (None), never the word None.
        str(facts.get("note") or "").strip(),
        " ".join(lab.get("warnings") or []),
        f"Address (Elastic IP, kept across stop/start): {lab['address']}",
        f"GPU: {jupyter['gpu']}" if "gpu" in jupyter else "",
        idle_line(jupyter, facts.get("idle_minutes", 60)),
        *connect_lines(lab, ws, jupyter),
        stop_line(ws, _map(facts.get("commands"))),
    ]
    return [line for line in lines if line]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_report_lines": lab_report_lines}
