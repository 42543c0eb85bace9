# Copyright: gpu_lab developers
# MIT License
"""The steps csdl.gpu_lab.labs runs, by name: each ``step(run) -> {host: part}`` (lab_run.py)."""

from __future__ import annotations

from collections.abc import Callable

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import (
    lab_launch,
    lab_lifecycle,
    lab_recover,
    lab_shelve,
    lab_stop,
)
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import Part, Run, find_step

STEPS: dict[str, Callable[[Run], dict[str, Part]]] = {
    "find": find_step,
    "check": lab_launch.check_step,
    "launch": lab_launch.launch_step,
    "start": lab_lifecycle.start_step,
    "stop": lab_stop.stop_step,
    "status": lab_shelve.status_step,  # shelves the labs gpu_lab_shelve_after_days says, then the status
    "shelve": lab_shelve.shelve_step,
    "confirm_teardown": lab_lifecycle.confirm_teardown_step,
    "teardown": lab_lifecycle.teardown_step,
    "confirm_recover": lab_recover.confirm_recover_step,
    "recover_key": lab_recover.recover_key_step,
    "finish_recover": lab_recover.finish_recover_step,
}
