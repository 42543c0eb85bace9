"""csdl.gpu_lab.labs, the one call for every lab of the play, run by Ansible against the
emulated EC2 API: each lab's settings are read in its own host's context (its inventory
variables through the role's defaults), each lab gets its own part, a lab recorded in another
region is looked for there, and a task delegated to a lab host earlier in the play does not
make that host a lab (a host added by add_host and unreachable from a delegated task shows up in
ansible_play_hosts from then on)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from local_cloud.cloud import Cloud
from tests.playbook import run_playbook

PLAY = """
- name: Find every lab, twice (the second after a task delegated to a lab host)
  hosts: labs
  gather_facts: false
  tasks:
    - name: Find
      ansible.builtin.include_role: {name: csdl.gpu_lab.ec2_gpu_host, tasks_from: find, public: true}
    - name: Keep the first answer
      ansible.builtin.set_fact: {first: "{{ __ec2_gpu_host_labs.labs[inventory_hostname] }}"}
    # As stop and teardown do for the guard (tasks/add_lab_host.yml), when a lab host does not answer.
    - name: Add a host for a later play
      ansible.builtin.add_host: {name: elsewhere, groups: [others], ansible_host: 127.0.0.1, ansible_port: 9,
                                 ansible_ssh_retries: 0}
    - name: A task delegated to that host, which cannot be reached
      ansible.builtin.ping:
      delegate_to: elsewhere
      ignore_unreachable: true
    - name: Find again
      ansible.builtin.include_role: {name: csdl.gpu_lab.ec2_gpu_host, tasks_from: find, public: true}
    - name: Write what each lab got
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        content: "{{ {'first': first, 'second': __ec2_gpu_host_labs.labs[inventory_hostname],
                      'hosts': __ec2_gpu_host_labs.labs | list, 'region': ec2_gpu_host_region} | to_json }}"
        mode: "0600"
      delegate_to: localhost
"""


def test_each_lab_gets_its_own_part(cloud: Cloud, aws: Any, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    out.mkdir()
    # Lab b2 was launched in us-west-2, as this machine recorded; it runs there.
    record = home / ".gpu_lab" / "b2" / "lab.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"lab": "b2", "region": "us-west-2", "instance_id": "i-x"}))
    ec2 = aws("ec2", "us-west-2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "gpu_lab:lab", "Value": "b2"}]}])
    labs = {"hosts": {
        name: {"ansible_connection": "local", "gpu_lab_name": lab, "gpu_lab_region": "us-east-1"}
        for name, lab in (("h1", "a1"), ("h2", "b2"), ("h3", "c3"))}}
    inventory = {"all": {"vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                         "children": {"labs": labs}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAY)
    result = run_playbook(str(tmp_path / "play"), cloud.env(), home, {"out": str(out)},
                          "-i", str(tmp_path / "inventory.yml"))
    assert result.returncode == 0, result.stdout[-3000:]
    got = {h: json.loads((out / f"{h}.json").read_text()) for h in ("h1", "h2", "h3")}
    for host, lab in (("h1", "a1"), ("h2", "b2"), ("h3", "c3")):
        for answer in ("first", "second"):
            part = got[host][answer]
            assert not part["failed"], part
            assert part["lab"]["name"] == lab
        assert got[host]["hosts"] == ["h1", "h2", "h3"]  # never the delegated-to host
    assert got["h1"]["first"]["instance"] == {} and got["h1"]["region"] == "us-east-1"
    b2 = got["h2"]["first"]
    assert b2["instance"]["state"] == "running" and b2["lab"]["region"] == "us-west-2"
    assert got["h2"]["region"] == "us-west-2"
    assert b2["region_note"] == (f"Lab b2 was launched in us-west-2 (recorded in {record}), not in us-east-1: "
                                 "acting there.")
    assert "acting there." in result.stdout
