# Copyright: gpu_lab developers
# MIT License
"""The file_mode filter: the permission bits of a file on the controller, as chmod writes them."""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
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
