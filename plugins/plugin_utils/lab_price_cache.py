# Copyright: gpu_lab developers
# MIT License
"""A region's prices, kept on this machine: ``~/.gpu_lab/prices/<region>.json`` holds what the
AWS Price List API answered and when. A run asks the API (one csdl.gpu_lab.lab_info call for
every region that needs it, a class's labs together) only for a region whose prices are
missing, older than the lab's gpu_lab_price_max_age_days (7), or lack one of the types asked
about; then only for what is missing. An API that did not answer is asked again an hour later
at the earliest: meanwhile the last prices it gave (said to be stale), else the shipped table.

A cache file::

    {"region": "eu-west-1", "fetched": "2026-12-02T18:50:00Z",
     "hourly_usd": {"g6.xlarge": 0.8976, "g5.xlarge": 1.123},
     "gp3_gib_month_usd": 0.088, "public_ipv4_hour_usd": 0.005,
     "failed": "", "failed_at": ""}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import lab_prices

MAX_AGE_DAYS = 7.0
RETRY_AFTER_FAILURE = dt.timedelta(hours=1)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

Entry = dict[str, Any]
Ask = dict[str, Any]


def cache_file(home: str, region: str) -> Path:
    return Path(home) / ".gpu_lab" / "prices" / f"{region}.json"


def read(path: Path) -> Entry:
    """The cached entry ({} when there is none, or it cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(path: Path, entry: Mapping[str, Any]) -> None:
    """Replaces the file at once (a reader never sees half of it); a cache that cannot be
    written only means the next run asks again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w") as out:
            json.dump(dict(entry), out, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass


def _time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(text), TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime(TIME_FORMAT)


def is_fresh(entry: Mapping[str, Any], now: dt.datetime, max_age_days: float = MAX_AGE_DAYS) -> bool:
    """Whether the entry holds the API's prices, fetched less than ``max_age_days`` ago."""
    fetched = _time(entry.get("fetched"))
    return fetched is not None and now - fetched < dt.timedelta(days=max_age_days)


def to_ask(region: str, entry: Mapping[str, Any], types: Iterable[str], now: dt.datetime,
           max_age_days: float = MAX_AGE_DAYS) -> Ask | None:
    """What to ask the API for the region (lab_info's O(prices) entry), or None: the cache
    answers, or the API failed less than an hour ago. Fresh prices that lack a type: that
    type alone. Missing or stale: everything."""
    wanted = sorted(dict.fromkeys(t for t in types if t))
    failed_at = _time(entry.get("failed_at"))
    if failed_at is not None and now - failed_at < RETRY_AFTER_FAILURE:
        return None
    if is_fresh(entry, now, max_age_days):
        missing = [t for t in wanted if t not in (entry.get("hourly_usd") or {})]
        return {"region": region, "instance_types": missing, "storage": False} if missing else None
    return {"region": region, "instance_types": wanted, "storage": True}


def merged(region: str, entry: Mapping[str, Any], ask: Mapping[str, Any], answer: Mapping[str, Any] | None,
           now: dt.datetime) -> Entry:
    """The entry after the API's answer to ``ask`` (None or failed: the failure, and when)."""
    if not answer or answer.get("failed"):
        why = str((answer or {}).get("msg") or "no answer")
        return {**entry, "region": region, "failed": why, "failed_at": _stamp(now)}
    hourly = dict(answer.get("hourly_usd") or {})
    if not ask.get("storage"):  # types added to fresh prices: their date stays the older one
        return {**entry, "hourly_usd": {**(entry.get("hourly_usd") or {}), **hourly}, "failed": "", "failed_at": ""}
    return {"region": region, "fetched": _stamp(now), "hourly_usd": hourly,
            "gp3_gib_month_usd": answer.get("gp3_gib_month_usd"),
            "public_ipv4_hour_usd": answer.get("public_ipv4_hour_usd"), "failed": "", "failed_at": ""}


def prices_from(region: str, entry: Mapping[str, Any], now: dt.datetime,
                max_age_days: float = MAX_AGE_DAYS) -> lab_prices.Prices:
    """The prices the entry gives: the API's (said to be stale when they are and the last
    refresh failed), else the table's, saying why."""
    if _time(entry.get("fetched")) is not None:
        stale = "" if is_fresh(entry, now, max_age_days) else str(entry.get("failed") or "")
        return lab_prices.from_api(region, entry, stale)
    return lab_prices.table(region, str(entry.get("failed") or "not asked yet"))


Wants = dict[tuple[str, str], tuple[set[str], float]]


def regional_prices(wants: Wants, ask_api: Callable[[list[Ask]], dict[str, dict[str, Any]]],
                    now: dt.datetime, keep: bool = True) -> dict[tuple[str, str], lab_prices.Prices]:
    """Each (home, region)'s prices: from the cache where it answers; else one call of
    ``ask_api`` (lab_info's O(prices): region -> answer) for all the regions that need it,
    whose answers are cached unless not ``keep`` (--check writes no file). ``wants`` maps
    (home, region) to (the instance types asked about, the maximum age in days)."""
    entries = {key: read(cache_file(*key)) for key in wants}
    asks: dict[str, Ask] = {}
    per_key: dict[tuple[str, str], Ask] = {}
    for (home, region), (types, max_age) in wants.items():
        ask = to_ask(region, entries[(home, region)], types, now, max_age)
        if ask is None:
            continue
        per_key[(home, region)] = ask
        if region in asks:  # two homes, one region: one question for both
            both = asks[region]
            both["instance_types"] = sorted(set(both["instance_types"]) | set(ask["instance_types"]))
            both["storage"] = both["storage"] or ask["storage"]
        else:
            asks[region] = dict(ask)
    answers = ask_api(list(asks.values())) if asks else {}
    for key, ask in per_key.items():
        entries[key] = merged(key[1], entries[key], ask, answers.get(key[1]), now)
        if keep:
            write(cache_file(*key), entries[key])
    return {key: prices_from(key[1], entries[key], now, wants[key][1]) for key in wants}
