# Copyright: gpu_lab developers
# MIT License
"""The as_list filter: a list setting, however it was given (YAML, -e key=value, CSV)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: as_list
short_description: A list setting, whether given as a list, as YAML/JSON text or as "a,b,c"
version_added: 0.2.0
description:
  - C(-e gpu_lab_zones=us-east-1a,us-east-1b) and C(-e gpu_lab_zones=[]) reach a play as text;
    in an inventory file the same setting is a list. This filter gives the list in every case.
  - An empty string or C(None) gives C([]); items are stripped; empty items are dropped.
options:
  _input:
    description: The setting.
    type: raw
    required: true
"""

EXAMPLES = r"""
zones: "{{ gpu_lab_zones | csdl.gpu_lab.as_list }}"
"""

RETURN = r"""
_value:
  description: The items, in order (non-list values that are not text are returned in a list).
  type: list
"""

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
