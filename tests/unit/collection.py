"""How the unit tests import the collection's code: as ``ansible_collections.csdl.gpu_lab...``,
through Ansible's collection loader, from wherever the collection is.

Under ansible-test the checkout is at ``<path>/ansible_collections/csdl/gpu_lab`` and ``<path>``
is the collection path; in a plain checkout it is the link scripts/bootstrap.sh makes
(``.ansible/collections/ansible_collections/csdl/gpu_lab``). Neither: the test skips, saying so.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def collections_path() -> Path | None:
    """The folder holding ansible_collections/csdl/gpu_lab, or None."""
    if REPO.parent.name == "csdl" and REPO.parents[1].name == "ansible_collections":
        return REPO.parents[2]
    linked = REPO / ".ansible" / "collections"
    return linked if (linked / "ansible_collections" / "csdl" / "gpu_lab").exists() else None


def load(name: str) -> ModuleType:
    """``ansible_collections.csdl.gpu_lab.plugins.<name>`` (name like "module_utils.workstation")."""
    try:
        from ansible.plugins.loader import init_plugin_loader
    except ImportError:
        # ansible-test units, tests/unit/plugins/modules: only module_utils of ansible is there (as
        # for a module on a host), and ansible-test has set up the collection loader already.
        return importlib.import_module(f"ansible_collections.csdl.gpu_lab.plugins.{name}")
    path = collections_path()
    if path is None:
        pytest.skip("the csdl.gpu_lab collection link is missing: run scripts/bootstrap.sh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another test module may have set up the loader first
        init_plugin_loader([str(path)])
    return importlib.import_module(f"ansible_collections.csdl.gpu_lab.plugins.{name}")
