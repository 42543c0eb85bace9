"""The collection as another course gets it: built (``ansible-galaxy collection build``),
installed into a folder of its own, and used from outside this checkout by FQCN.

Inside the repo, ``.ansible/collections`` links ``csdl.gpu_lab`` to the checkout; a file that
the build leaves out (``build_ignore``, a folder missed) would only show once installed. Here
the modules run from the installed copy, with its ``module_utils``, against the emulated EC2
API, and the roles' argument specs and the plugins' docs are read from it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_cloud.cloud import Cloud
from tests.playbook import BIN, REPO


def run(*cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The collection built from this checkout and installed into a fresh folder; a work
    folder outside the repo (no ansible.cfg, so no link to the checkout)."""
    root = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({"HOME": str(root / "home"), "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
                "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{env.get('PATH', '')}"})
    (root / "home").mkdir()
    built = run("ansible-galaxy", "collection", "build", "--output-path", str(root), str(REPO), cwd=root, env=env)
    assert built.returncode == 0, built.stderr
    (tarball,) = root.glob("csdl-gpu_lab-*.tar.gz")
    # Offline, as on this machine: the dependencies (amazon.aws, ansible.posix) come with the
    # `ansible` package, so they are not fetched.
    done = run("ansible-galaxy", "collection", "install", "--no-deps", "-p", str(root / "collections"),
               str(tarball), cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    return {"root": root, "env": env, "names": names,
            "path": root / "collections" / "ansible_collections" / "csdl" / "gpu_lab"}


# What a user installing the collection gets (galaxy.yml build_ignore; docs/publishing.md,
# "What the built collection holds"): everything else at the top is the checkout's own.
SHIPPED_TOP = {"MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md", "changelogs", "docs",
               "meta", "plugins", "roles", "playbooks", "inventories", "launch.yml", "stop.yml", "start.yml",
               "status.yml", "shelve.yml", "teardown.yml", "recover_key.yml", "install_kit.yml", "tests"}


def test_the_build_holds_what_the_collection_needs_and_no_test_bed(installed: dict[str, Any]) -> None:
    names = set(installed["names"])
    for needed in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/module_utils/labs.py",
                   "plugins/modules/lab_host.py", "plugins/modules/lab_info.py",
                   "plugins/inventory/gpu_lab.py", "plugins/inventory/roster.py",
                   "roles/ec2_gpu_host/meta/argument_specs.yml", "roles/ec2_gpu_host/README.md",
                   "playbooks/launch.yml", "launch.yml", "LICENSE", "CHANGELOG.md", "changelogs/changelog.yaml",
                   "changelogs/config.yaml", "inventories/csdl/group_vars/all/lab.yml",
                   "inventories/csdl-class/roster.csv", "docs/architecture.md"):
        assert needed in names, needed
    assert {n.split("/")[0] for n in names} <= SHIPPED_TOP, {n.split("/")[0] for n in names} - SHIPPED_TOP
    # Of tests/, what ansible-test runs from the installed collection (sanity ignore files, unit
    # tests and the package they import from), not the emulator's test bed.
    assert "tests/unit/requirements.txt" in names and "tests/unit/collection.py" in names
    assert {n for n in names if n.startswith("tests/") and n.count("/") == 1} <= {"tests/__init__.py", "tests/unit",
                                                                                 "tests/sanity"}
    for left_out in (".venv", ".ansible", ".demo", ".git", ".pytest_cache", ".ruff_cache", "local_cloud",
                     "molecule", "bench", "scripts", "requirements", "collections", "Makefile", "ansible.cfg",
                     "changelogs/fragments", "changelogs/.plugin-cache.yaml", "tests/integration", "tests/conftest.py"):
        assert not any(n == left_out or n.startswith(left_out + "/") for n in names), left_out
    assert not any(n.endswith((".pyc", "__pycache__")) for n in names)
    manifest = json.loads((installed["path"] / "MANIFEST.json").read_text())["collection_info"]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert manifest["version"] == galaxy["version"] == "1.1.0"
    assert manifest["license"] == ["MIT"] and "MIT License" in (installed["path"] / "LICENSE").read_text()
    for url in ("repository", "documentation", "homepage", "issues"):
        assert manifest[url].startswith("https://github.com/csdl/gpu_lab"), (url, manifest[url])
    assert installed["path"].is_dir()


def readme_example() -> str:
    """The example playbook of the README's "Install as a collection": the test runs what the
    README shows."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Install as a collection\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    (example,) = [b for b in blocks if "csdl.gpu_lab.ec2_gpu_host" in b]
    return example


def test_the_readme_example_runs_from_a_course_folder(installed: dict[str, Any], cloud: Cloud) -> None:
    """The README's playbook for another course, in a folder of its own outside the checkout
    with the installed collection: its syntax checks, and it launches the lab on the emulated
    EC2 API (the AWS half: no host to wait for) and says how to log in."""
    folder = installed["root"] / "course"
    folder.mkdir(exist_ok=True)
    (folder / "course_lab.yml").write_text(readme_example())
    env = {**installed["env"], **cloud.env()}
    checked = run("ansible-playbook", "course_lab.yml", "--syntax-check", cwd=folder, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    done = run("ansible-playbook", "course_lab.yml", "-e", "gpu_lab_ssh_cidr=198.51.100.7/32",
               "-e", "gpu_lab_wait_for_ssh=false", cwd=folder, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    key = installed["root"] / "home" / ".ssh" / "mlcourse-server.pem"
    said = re.search(rf"ssh -i {re.escape(str(key))} ubuntu@(\d+\.\d+\.\d+\.\d+)", done.stdout)
    assert said, done.stdout[-3000:]
    assert stat.S_IMODE(key.stat().st_mode) == 0o400


def test_the_installed_modules_run_from_the_installed_copy(installed: dict[str, Any], cloud: Cloud) -> None:
    """lab_info and lab_host from the installed collection, with a lab named twice: the
    shared check in module_utils fails those two entries alone, and the third lab is looked
    up in EC2 (lab_info), or found to have nothing to remove (lab_host)."""
    env = {**installed["env"], **cloud.env(),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    labs = [{"lab": "dup"}, {"lab": "solo", "instance_types": ["g6.xlarge"]}, {"lab": "dup"}]

    def module(name: str, **args: Any) -> dict[str, Any]:
        done = run("ansible", "localhost", "-c", "local", "-m", f"csdl.gpu_lab.{name}",
                   "-a", json.dumps({"labs": labs, **args}), cwd=installed["root"], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]

    out = module("lab_info")
    assert out["labs"]["dup"] == {"failed": True, "msg": "Lab dup is named by 2 hosts of the play: "
                                                         "each lab needs its own name (gpu_lab_name)."}
    solo = out["labs"]["solo"]
    assert "failed" not in solo, solo
    assert solo["instance"] == {} and solo["addresses"] == []

    # lab_host's teardown of the same three: the two named alike fail with nothing removed
    # (the shape teardown.yml reports from), the third had nothing to remove.
    out = module("lab_host", state="absent")
    assert not out["changed"], out
    nothing = {"addresses": [], "instances": [], "security_group": "", "key_pair": "", "orphans": [],
               "spot_requests": [], "shelves": []}
    assert out["labs"]["dup"]["failed"] and out["labs"]["dup"]["removed"] == nothing
    assert "named by 2 hosts" in out["labs"]["dup"]["msg"]
    assert out["labs"]["solo"] == {"changed": False, "removed": nothing, "attempts": []}


def test_the_installed_roles_and_plugins_document_themselves(installed: dict[str, Any]) -> None:
    env, root = installed["env"], installed["root"]
    listing = run("ansible-doc", "-t", "module", "-l", "csdl.gpu_lab", "-j", cwd=root, env=env)
    assert listing.returncode == 0, listing.stderr
    assert {"csdl.gpu_lab.lab_host", "csdl.gpu_lab.lab_info"} <= set(json.loads(listing.stdout))
    role = run("ansible-doc", "-t", "role", "csdl.gpu_lab.ec2_gpu_host", "-j", cwd=root, env=env)
    assert role.returncode == 0, role.stderr
    spec = json.loads(role.stdout)["csdl.gpu_lab.ec2_gpu_host"]
    assert str(installed["path"]) in spec["path"]
    assert "ec2_gpu_host_lab_name" in spec["entry_points"]["main"]["options"]
