# Copyright: gpu_lab developers
# MIT License
"""The lab_hosts filter: the GPU hosts of the play's labs that answer SSH, as add_host takes them."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import os
from collections.abc import Iterable, Mapping
from typing import Any


def ssh_args(home: str, lab: str) -> str:
    """Only the host key pinned on this machine is trusted, and only the lab's key offered."""
    return (f"-o UserKnownHostsFile={home}/.gpu_lab/{lab}/known_hosts "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")


def lab_hosts(labs: Iterable[str], hostvars: Mapping[str, Any], home: str | None = None) -> list[dict[str, Any]]:
    home = os.environ.get("HOME", "") if home is None else home
    hosts = []
    for name in labs:
        own = hostvars[name]
        lab = own.get("ec2_gpu_host_lab") or {}
        if not _true(lab.get("ssh_ready")) or own.get("gpu_lab_launch_error") is not None:
            continue
        hosts.append({"name": f"{lab['name']}-server", "lab": dict(lab), "address": lab["address"],
                      "user": lab["user"], "key_file": lab["key_file"], "ssh_args": ssh_args(home, lab["name"])})
    return hosts


def _true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_hosts": lab_hosts}
