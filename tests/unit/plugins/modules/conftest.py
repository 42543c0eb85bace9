"""Fixtures the module tests share."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def port() -> int:
    """A local port free a moment ago (workstation_files checks the lab's tunnel port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
