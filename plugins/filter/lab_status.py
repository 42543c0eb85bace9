# Copyright: gpu_lab developers
# MIT License
"""The lab_status_with_host and lab_status_lines filters: the status view of one's own lab."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
from collections.abc import Mapping
from typing import Any

# Right after a boot the checker has not run yet: that is not a fault.
FIRST_CHECK_PENDING = "no check has run since the host started"


def lab_status_with_host(status: Mapping[str, Any], idle: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status with the host's idle auto-stop answer ({} when the host was not asked)."""
    idle = dict(idle or {})
    warnings = list(status.get("warnings") or [])
    reason = str(idle.get("reason", ""))
    if idle and idle.get("enabled") and not idle.get("healthy") and not reason.startswith(FIRST_CHECK_PENDING):
        warnings.append(f"Idle auto-stop is not healthy: {reason}")
    notice = idle.get("spot_notice") if isinstance(idle.get("spot_notice"), Mapping) else {}
    if notice and not notice.get("this_boot") and status.get("state") == "running":
        warnings.append(f"AWS interrupted this spot lab (its notice was for {notice.get('time')}) and started it "
                        "again by itself since: nobody asked for this run; idle auto-stop stops it when nobody "
                        "uses it (or stop.yml now).")
    return {**status, "autostop": idle, "warnings": warnings}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _line(label: str, text: str) -> str:
    return f"{label:<10} {text}"


def image_text(image: Mapping[str, Any]) -> str:
    """'NAME (2026-08-22)', then what is newer, if anything."""
    date = f" ({image['creation_date']})" if image.get("creation_date") else ""
    return f"{image.get('name')}{date}" + (f"; {image['newer']}" if image.get("newer") else "")


def market_text(s: Mapping[str, Any]) -> str:
    """'spot: $0.3058/h now in us-east-1a (62 % below on demand)', or what spot would cost an
    on-demand lab."""
    spot = s.get("spot") or {}
    price = _float(spot.get("usd_per_hour"))
    saving = f" ({spot['saving_percent']} % below on demand)" if spot.get("saving_percent") else ""
    now = f"${price:g}/h now in {spot.get('zone') or s.get('zone')}{saving}" if price else ""
    if s.get("market") == "spot":
        return f"spot: {now}" if now else "spot"
    return f"on-demand (spot would be {now})" if now else "on-demand"


def shelf_text(shelf: Mapping[str, Any], instance: bool) -> str:
    """'ami-0abc of 2026-12-03: 100 GiB of snapshots, at most $5.00/month; launch.yml brings it back'."""
    more = f" (and {shelf['count'] - 1} older)" if int(shelf.get("count") or 0) > 1 else ""
    then = "launch.yml deletes it" if instance else "launch.yml brings the lab back from it"
    return (f"{shelf.get('image_id')} of {shelf.get('created') or 'an unknown date'}{more}: "
            f"{shelf.get('size_gib')} GiB of snapshots, at most ${_float(shelf.get('monthly_usd')):.2f}/month; {then}")


def lab_status_lines(s: Mapping[str, Any]) -> list[str]:
    """The status view's lines."""
    instance = bool(s.get("instance_id"))
    since = f" since {s['since_utc']} UTC ({s['hours_in_state']} h)" if s.get("since_utc") else ""
    stopped = s.get("stopped_monthly_usd") or {}
    disk, addresses = _float(stopped.get("disk")), _float(stopped.get("addresses"))
    autostop = str(s.get("autostop_minutes") or "")
    host = s.get("autostop") or {}
    lines = [
        _line("lab", f"{s['lab']} ({s['region']})"),
        _line("state", f"{s['state']}{since}"),
        _line("instance", f"{s['instance_id']} {s['type']} {s['zone']}") if instance else "",
        _line("image", image_text(s.get("image") or {})) if (s.get("image") or {}).get("name") else "",
        _line("address", s.get("address") or "-"),
        _line("market", market_text(s)) if instance and s.get("market") else "",
        _line("price", f"${s['hourly_usd']}/h on demand" if s.get("hourly_usd") else "unknown for this type")
        if instance else "",
        # Where the figures come from: the Price List API and its date, or the shipped table and why.
        _line("prices", str(s["prices"])) if instance and s.get("prices") else "",
        _line("this run", f"${_float(s['running_period_usd']):.2f} so far")
        if s["state"] == "running" and s.get("hourly_usd") else "",
        _line("stopped", f"${round(disk + addresses, 2):.2f}/month while stopped: {s['disk_gib']} GiB disk "
                         f"${disk:.2f} + Elastic IP ${addresses:.2f}") if instance else "",
        _line("auto-stop", "off" if autostop == "0" else f"after {autostop} idle minutes") if autostop else "",
        _line("last check", f"{host['last_decision']}: {host.get('reason', '')}") if host.get("last_decision") else "",
        _line("quota", "; ".join(f"request {r.get('id')} to raise {r.get('quota_name') or r.get('quota_code')} to "
                                 f"{_float(r.get('desired_value')):g} vCPUs: {r.get('status')}"
                                 for r in s["quota_requests"])) if s.get("quota_requests") else "",
        _line("shelf", shelf_text(s.get("shelf") or {}, instance)) if (s.get("shelf") or {}).get("count") else "",
        _line("warnings", " | ".join(s["warnings"])) if s.get("warnings") else "",
    ]
    return [line for line in lines if line]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_status_with_host": lab_status_with_host, "lab_status_lines": lab_status_lines}
