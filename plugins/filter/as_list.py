# Copyright: gpu_lab developers
# MIT License
"""The as_list filter: a list setting, however it was given (YAML, -e key=value, CSV)."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import json
from typing import Any

from ansible.errors import AnsibleFilterError


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = [item.strip(" '\"") for item in text.strip("[]").split(",")]
            if not isinstance(parsed, list):
                raise AnsibleFilterError(f"as_list: {value!r} is not a list")
            return [item for item in parsed if item not in ("", None)]
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, dict):
        raise AnsibleFilterError(f"as_list: a mapping is not a list: {value!r}")
    return [value]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"as_list": as_list}
