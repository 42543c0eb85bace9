"""Callback for the benchmarks: which task made which AWS API calls.

Reads the emulator's call counter (``GET $AWS_ENDPOINT_URL/_gpu_lab/calls``) when each task
starts and when the run ends, and prints, after the recap, the calls each task made. Only
meaningful against the project's emulator, with one playbook run at a time.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: api_calls
type: aggregate
short_description: AWS API calls per task, counted by the gpu_lab emulator
description: Prints the emulator's API calls attributed to the task that made them.
requirements: [the gpu_lab EC2 emulator at AWS_ENDPOINT_URL]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "api_calls"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._url = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/") + "/_gpu_lab/calls"
        self._task = "(start-up: inventory)"
        self._seen: Counter[str] = Counter()
        self._per_task: list[tuple[str, Counter[str]]] = []

    def _calls(self) -> Counter[str]:
        with urllib.request.urlopen(self._url, timeout=5) as answer:  # noqa: S310 - loopback emulator
            return Counter(json.load(answer)["by_action"])

    def _close_task(self) -> None:
        now = self._calls()
        delta = now - self._seen
        self._seen = now
        if delta:
            self._per_task.append((self._task, delta))

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:  # noqa: ANN001
        self._close_task()
        self._task = task.get_name()

    def v2_playbook_on_stats(self, stats) -> None:  # noqa: ANN001
        self._close_task()
        total = sum(sum(c.values()) for _, c in self._per_task)
        self._display.display(f"AWS API calls by task ({total} in all):")
        for task, calls in self._per_task:
            detail = ", ".join(f"{a.split(':')[-1]} {n}" for a, n in sorted(calls.items()))
            self._display.display(f"  {sum(calls.values()):3d}  {task}: {detail}")
