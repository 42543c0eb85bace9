# Copyright: gpu_lab developers
# MIT License
"""One botocore data loader per process, shared by every boto3 session gpu_lab makes.

A session reads EC2's service model (a few MB of JSON) the first time it makes a client:
about 0.15 s. Ansible runs each task in a process forked from ansible-playbook's own, so a
loader that the inventory plugin (csdl.gpu_lab.gpu_lab, run in that process) has warmed is
inherited by every task after it: the labs action's clients are then made in a few ms. Only
the loader is shared (parsed, read-only model data), never a session or a client: their
connections stay in the process that made them."""

from __future__ import annotations

import os
from typing import Any

_LOADER: Any = None


def shared_loader() -> Any:
    """This process's loader (made on first use, as botocore makes a session's own)."""
    global _LOADER
    if _LOADER is None:
        from botocore.loaders import create_loader

        _LOADER = create_loader(os.environ.get("AWS_DATA_PATH"))
    return _LOADER


def with_shared_loader(botocore_session: Any) -> Any:
    """The botocore session, reading service models through the shared loader."""
    botocore_session.register_component("data_loader", shared_loader())
    return botocore_session
