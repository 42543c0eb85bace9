# Copyright: gpu_lab developers
# MIT License
"""The file_mode filter: the permission bits of a file on the controller, as chmod writes them."""

from __future__ import annotations

DOCUMENTATION = r"""
name: file_mode
short_description: The permission bits of a file on the controller ("400"), or "" when there is none
version_added: 0.3.0
description:
  - A private key others can read is refused by ssh, so a launch checks the key's mode before
    anything is created. This filter reads it on the controller (where the workstation's keys
    are) without a process per lab, as C(lookup('pipe', 'stat ...')) would start.
  - Symbolic links are followed. A missing path, or one that is not a regular file, gives C("").
options:
  _input:
    description: The file's path.
    type: path
    required: true
"""

EXAMPLES = r"""
key_mode: "{{ '~/.ssh/csdl-server.pem' | expanduser | csdl.gpu_lab.file_mode }}"
"""

RETURN = r"""
_value:
  description: The permission bits in octal, without a leading zero (C("400"), C("644")), or C("").
  type: str
"""

import os
import stat
from typing import Any


def file_mode(path: Any) -> str:
    try:
        info = os.stat(str(path))
    except (OSError, ValueError):
        return ""
    if not stat.S_ISREG(info.st_mode):
        return ""
    return format(stat.S_IMODE(info.st_mode), "o")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"file_mode": file_mode}
