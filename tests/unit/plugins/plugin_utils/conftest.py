"""The plugin_utils modules import each other as ansible_collections.csdl.gpu_lab...: load them
through the collection loader (tests/unit/collection.py)."""

from __future__ import annotations

import pytest

from tests.unit.collection import load


@pytest.fixture
def plugin():
    """plugin("plugin_utils.lab_run") -> the module, loaded from the collection."""
    return load
