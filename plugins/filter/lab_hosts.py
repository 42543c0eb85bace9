# Copyright: gpu_lab developers
# MIT License
"""The lab_hosts filter: the GPU hosts of the play's labs that answer SSH, as add_host takes them."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lab_hosts
short_description: The hosts of the play's labs that answer SSH, one add_host entry each
version_added: 0.4.0
description:
  - For each lab of the list (inventory host names) whose C(ec2_gpu_host_lab) says C(ssh_ready)
    and that has no C(gpu_lab_launch_error), the lab's GPU host as M(ansible.builtin.add_host)
    takes it - C(name) (C(<lab>-server)), C(lab) (the lab's C(ec2_gpu_host_lab), which the host
    then carries too), C(address), C(user), C(key_file) and C(ssh_args), which trust only
    the host key pinned on this machine (C(~/.gpu_lab/<lab>/known_hosts)).
options:
  _input:
    description: The labs' inventory host names (for example C(ansible_play_batch)).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Make the labs' hosts available to the next plays
  ansible.builtin.add_host:
    name: "{{ item.name }}"
    groups: [gpu_lab_launched]
    ansible_host: "{{ item.address }}"
  loop: "{{ ansible_play_batch | csdl.gpu_lab.lab_hosts(hostvars) }}"
"""

RETURN = r"""
_value:
  description: One entry per lab host that answers SSH, in the order of the input.
  type: list
  elements: dict
"""

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
