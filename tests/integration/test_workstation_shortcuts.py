"""The lab's shortcuts when gpu_lab is an installed collection (issue 14, B).

A course project folder outside this checkout, as its README has it: the collection built
from this checkout and installed into the project (``ansible-galaxy collection install
<tarball> -p ./collections``, an ``ansible.cfg`` there that points at it), a lab inventory
copied into it, and ``ansible-playbook csdl.gpu_lab.launch -i inventories/csdl`` run from
that folder against the emulated EC2 API (the AWS half: no stand-in host boots). Then the
workstation is set up as launch.yml's workstation play does it, from the installed
collection, and the ``csdl-status`` and ``csdl-stop`` aliases run in a real interactive bash,
from another folder, with nothing of this checkout on PATH: they must reach the installed
playbooks, run them where the lab was launched, and stop the instance.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from tests.playbook import BIN, REPO

LAB = "csdl"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"

# Put into the installed collection's playbooks/ and run by FQCN, so that its playbook_dir is
# that of an installed playbook, as launch.yml's is; its workstation play, minus the AWS facts.
PROBE = """\
- name: Set up this workstation for the lab, as launch.yml's workstation play does
  hosts: labs
  gather_facts: false
  tasks:
    - name: Write the ssh entry, pin the host key, add the shell shortcuts
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      vars:
        workstation_lab_name: "{{ gpu_lab_name }}"
        workstation_host_address: "{{ address }}"
        workstation_host_keys: ["{{ key }}"]
        workstation_jupyter_port: 28896
        workstation_project_dir: "{{ playbook_dir | regex_replace('/playbooks$', '') }}"
"""


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The course project folder (a space in its path, as a user's may have), with the
    collection installed in it; the environment of its user (nothing of Ansible's or AWS's)."""
    root = tmp_path_factory.mktemp("shortcuts")
    folder = root / "course project"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({"ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{env.get('PATH', '')}"})
    built = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(root), str(REPO)], root, env)
    ok(built)
    (tarball,) = root.glob("csdl-gpu_lab-*.tar.gz")
    # Offline: the dependencies (amazon.aws, ansible.posix) come with the `ansible` package.
    ok(run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", "./collections", str(tarball)],
           folder, env))
    installed = folder / "collections" / "ansible_collections" / "csdl" / "gpu_lab"
    assert (installed / "playbooks" / "status.yml").is_file()
    (folder / "ansible.cfg").write_text("[defaults]\ncollections_path = ./collections\n")
    shutil.copytree(installed / "inventories" / LAB, folder / "inventories" / LAB)
    (installed / "playbooks" / "test_workstation_probe.yml").write_text(PROBE)
    return {"folder": folder, "installed": installed, "env": env}


def test_the_installed_collections_shortcuts_run_its_playbooks(project: dict[str, Any], cloud: Cloud,
                                                               aws: Callable[..., Any], tmp_path: Path) -> None:
    if cloud.controller is not None:
        cloud.controller.only(lambda observed: False)  # the AWS half only: no stand-in boots
    folder: Path = project["folder"]
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the student's own bashrc\n")
    # As from the user's shell in the project folder: $PWD is where they are.
    env = {**project["env"], **cloud.env(), "HOME": str(home), "PWD": str(folder), "SHELL": "/bin/bash",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    playbook = str(BIN / "ansible-playbook")
    launched = ok(run([playbook, "csdl.gpu_lab.launch", "-i", "inventories/csdl", "-e", "gpu_lab_ssh_cidr=127.0.0.1/32",
                       "-e", "gpu_lab_wait_for_ssh=false"], folder, env))

    # What the summary and the aliases must run: the installed playbook by name, found through
    # the project's collections folder, with the inventory by absolute path, in the project.
    collections = shlex.quote(str(folder / "collections"))
    inventory = shlex.quote(str(folder / "inventories" / LAB))
    expected = {action: f"ANSIBLE_COLLECTIONS_PATH={collections} {shlex.quote(playbook)} -i {inventory}"
                        f" csdl.gpu_lab.{action}" for action in ("start", "stop", "status")}
    summary = task_msg(launched, "Summary")
    # No shortcuts yet (the launch did not wait for SSH): the summary says what to run, and where.
    assert summary[-1] == f"Stop it when you are done (you pay while it runs): in {folder}: {expected['stop']}", summary

    (address,) = [a["PublicIp"] for a in aws("ec2").describe_addresses()["Addresses"]]
    ok(run([playbook, "csdl.gpu_lab.test_workstation_probe", "-i", "inventories/csdl",
            "-e", json.dumps({"address": address, "key": KEY})], folder, env))

    # The user, later, in a new terminal elsewhere: nothing of Ansible's or of this checkout on
    # PATH or in the environment, only the AWS credentials.
    user_env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb",
                **{k: v for k, v in cloud.env().items() if k.startswith("AWS_")}}

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return run(["bash", "-ic", command], Path("/"), user_env, timeout=300)

    aliases = ok(shell('for a in start stop status; do printf "%s\\n" "${BASH_ALIASES[csdl-$a]}"; done'))
    cd = f"(cd {shlex.quote(str(folder))} && "
    assert aliases.splitlines() == [cd + expected[action] + ")" for action in ("start", "stop", "status")], aliases

    status = shell("cd /tmp && csdl-status")
    out = status.stdout + status.stderr
    assert status.returncode == 0, out[-4000:]
    assert re.search(r"state\s+running", out), out[-4000:]
    assert address in out

    stopped = shell("cd /tmp && csdl-stop")
    assert stopped.returncode == 0, (stopped.stdout + stopped.stderr)[-4000:]
    states = [i["State"]["Name"] for r in aws("ec2").describe_instances()["Reservations"] for i in r["Instances"]]
    assert states == ["stopped"], states

    # The installed collection's shelve.yml, by its name, from another folder.
    shelved = shell(f"cd /tmp && ANSIBLE_COLLECTIONS_PATH={collections} {shlex.quote(playbook)} -i {inventory}"
                    " csdl.gpu_lab.shelve")
    assert shelved.returncode == 0, (shelved.stdout + shelved.stderr)[-4000:]
    images = aws("ec2").describe_images(Owners=["self"], Filters=[{"Name": "tag:gpu_lab:shelf", "Values": ["true"]}])
    assert [i["Tags"] for i in images["Images"]] and not aws("ec2").describe_addresses()["Addresses"]
    states = [i["State"]["Name"] for r in aws("ec2").describe_instances()["Reservations"] for i in r["Instances"]]
    assert states == ["terminated"], states


def task_msg(output: str, name: str) -> list[str]:
    """The msg of the last task called name, from the json callback's output."""
    found = [outcome["msg"] for play in json.loads(output)["plays"] for task in play["tasks"]
             if task["task"]["name"] == name for outcome in task["hosts"].values() if "msg" in outcome]
    assert found, f"no task {name!r}"
    return found[-1]
