"""The plugin_utils modules import each other as ansible_collections.csdl.gpu_lab...: load the
collection through the checkout's link, as Ansible does."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType

import pytest
from ansible.plugins.loader import init_plugin_loader

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".ansible" / "collections"


def load(name: str) -> ModuleType:
    """ansible_collections.csdl.gpu_lab.plugins.<name>."""
    if not (COLLECTIONS / "ansible_collections" / "csdl" / "gpu_lab").exists():
        pytest.skip("the csdl.gpu_lab collection link is missing: run scripts/bootstrap.sh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another test module may have set up the loader first
        init_plugin_loader([str(COLLECTIONS)])
    return importlib.import_module(f"ansible_collections.csdl.gpu_lab.plugins.{name}")


@pytest.fixture
def plugin():
    """plugin("plugin_utils.lab_run") -> the module, loaded from the collection."""
    return load
