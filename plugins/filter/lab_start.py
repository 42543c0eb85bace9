# Copyright: gpu_lab developers
# MIT License
"""The lab_start_plan filter: what start.yml says before it starts a stopped lab."""

from __future__ import annotations

# The filter's docs (ansible-doc -t filter csdl.gpu_lab.lab_start_plan) are in plugins/filter/lab_start_plan.yml.
from collections.abc import Mapping
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import as_bool


def lab_start_plan(instance: Mapping[str, Any], wait_minutes: Any, change_type: Any) -> str:
    """'Starting i-0abc (g6.xlarge). If AWS has no capacity ...': what a start without capacity
    does for this instance (a Spot Instance's type is never changed; one AWS interrupted only AWS
    starts again, so start.yml waits for that)."""
    head = f"Starting {instance.get('id', '')} ({instance.get('type', '')})."
    request = instance.get("spot_request") if isinstance(instance.get("spot_request"), Mapping) else {}
    if instance.get("market") == "spot" and (request or {}).get("status") == "instance-stopped-no-capacity":
        return (f"{head} AWS interrupted this spot instance, and only AWS can start it again when it has capacity in "
                f"{instance.get('zone', '')}: start.yml waits up to {wait_minutes} minute(s) for that.")
    spot = instance.get("market") == "spot"
    change = as_bool(change_type) and not spot
    then = ", then changes the stopped instance to a fallback type its zone offers" if change else ""
    return (f"{head} If AWS has no capacity for it in {instance.get('zone', '')}, start.yml tries again for up to "
            f"{wait_minutes} minute(s){then}.")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_start_plan": lab_start_plan}
