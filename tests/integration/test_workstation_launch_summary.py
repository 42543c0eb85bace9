"""The launch summary (playbooks/tasks/lab_report.yml, issue 14, B and D): no literal None line
on a re-run, and the stop command it names is the one that works from where the user is.

The real launch.yml from the checkout, twice, against the emulated EC2 API (the AWS half: no
stand-in host boots, so this workstation gets no shortcuts and the summary names the command
itself); then the summary of a lab whose workstation was set up, from the real workstation
role and a re-run's AWS facts.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from local_cloud.cloud import Cloud
from tests.playbook import BIN, REPO, run_playbook

LAB = "csdl"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
STOP = "Stop it when you are done (you pay while it runs): "

REPORT = f"""\
- name: Say how to reach the lab after a re-run, as launch.yml's last play does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Set up this workstation for the lab
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      vars:
        workstation_lab_name: {LAB}
        workstation_host_address: 127.0.0.77
        workstation_host_keys: ["{KEY}"]
        workstation_jupyter_port: 28898
        workstation_project_dir: {REPO}

    - name: The lab host, as add_lab_host.yml adds it, with what jupyter_server said about it
      ansible.builtin.add_host:
        name: {LAB}-server
        jupyter_server_summary: {{gpu: "NVIDIA L4 (driver 550.54.15)"}}

    - name: What ec2_gpu_host publishes on a re-run (an instance found, nothing launched)
      ansible.builtin.set_fact:
        ec2_gpu_host_lab: {{name: {LAB}, address: 127.0.0.77, user: ubuntu, key_file: /k/key.pem, warnings: []}}
        ec2_gpu_host_instance: {{type: g6.xlarge, id: i-0123456789abcdef0, zone: us-east-1a}}
        # provision.yml's note: empty when nothing was launched, which Ansible renders as None.
        ec2_gpu_host_launch_note: >-
          {{% if false %}}Launched{{% endif %}}

    - name: Say how to reach the lab
      ansible.builtin.include_tasks: {REPO}/playbooks/tasks/lab_report.yml
"""


def summary(output: str) -> list[str]:
    found = [outcome["msg"] for play in json.loads(output)["plays"] for task in play["tasks"]
             if task["task"]["name"] == "Summary" for outcome in task["hosts"].values() if "msg" in outcome]
    assert len(found) == 1, output[-3000:]
    return found[0]


def test_a_relaunch_summary_has_no_none_line_and_names_the_stop_command(cloud: Cloud, tmp_path: Path) -> None:
    if cloud.controller is not None:
        cloud.controller.only(lambda observed: False)  # the AWS half only: no stand-in boots
    env = {**cloud.env(), "PWD": str(REPO), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    lab = {"gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_wait_for_ssh": "false"}
    home = tmp_path / "home"
    first = run_playbook("launch", env, home, lab)
    assert first.returncode == 0, first.stdout[-4000:]
    again = run_playbook("launch", env, home, lab)
    assert again.returncode == 0, again.stdout[-4000:]

    launched, relaunched = summary(first.stdout), summary(again.stdout)
    assert any(line.startswith("Launched ") for line in launched), launched
    assert not any(line.startswith("Launched ") for line in relaunched), relaunched
    for lines in (launched, relaunched):
        assert all(line and line.strip() == line and "None" not in line for line in lines), lines
        # From the checkout: its stop.yml by absolute path, this run's inventory, in the folder
        # the lab was launched from.
        command = f"{shlex.quote(str(BIN / 'ansible-playbook'))} -i {REPO}/inventories/{LAB} {REPO}/stop.yml"
        assert lines[-1] == f"{STOP}in {REPO}: {command}", lines


def test_the_summary_of_a_set_up_workstation_names_the_shortcut_too(tmp_path: Path) -> None:
    inventory = tmp_path / "localhost.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    (tmp_path / "report.yml").write_text(REPORT)
    run_dir = tmp_path / "where I launched"
    env = {"ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible_tmp"),
           "ANSIBLE_INVENTORY": str(inventory), "SHELL": "/bin/bash", "PWD": str(run_dir),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    key = home / ".ssh" / f"{LAB}-server.pem"
    key.write_text("not a real key\n")
    key.chmod(0o400)
    done = run_playbook(str(tmp_path / "report"), env, home)
    assert done.returncode == 0, done.stdout[-4000:]
    lines = summary(done.stdout)
    assert all(line and "None" not in line for line in lines), lines
    assert "GPU: NVIDIA L4 (driver 550.54.15)" in lines
    assert f"Shortcuts (in a new terminal): ssh-{LAB}, {LAB}-start, {LAB}-stop, {LAB}-status, {LAB}-jupyter" in lines
    command = (f"{shlex.quote(str(BIN / 'ansible-playbook'))} -i {shlex.quote(str(inventory))}"
               f" {REPO}/stop.yml")
    assert lines[-1] == f"{STOP}{LAB}-stop in a new terminal, or in {run_dir}: {command}", lines
