"""The unsaved-work guard and a re-run without the course URL, on stand-in hosts (issue 14).

What is on a host is learned from the host (or from what the role recorded there), never
from the settings of the current run. Three stand-ins, configured once by the role with a
course repo (as `make demo`'s first launch does), then driven without it:

    work    the student's work: an edit in the course repo, a new notebook in the home, a
            commit in ~/projects/x that was never pushed
    clean   nothing of the student's, but what Jupyter and the role leave there
    legacy  configured by a version that kept no stamp (the stamp is removed), with a
            file the DLAMI ships in the home and an old file of the student's

plus an inventory host whose address answers nothing, for a guard that cannot look.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from local_cloud.emulator import DLAMI_LINES, dlami_parameter_name
from tests.playbook import changed_tasks, recaps, run_playbook
from tests.standins import key_pair_file, standin_clients

pytestmark = pytest.mark.hosts

COURSE = "guardcourse"
REPO_DIR = f"/home/ubuntu/{COURSE}"
STAMP = "/var/lib/gpu_lab/jupyter_server.json"
HOSTS = ("work", "clean", "legacy")

SITE = """\
- name: Configure the lab hosts
  hosts: all
  gather_facts: false
  tasks:
    - name: Run Jupyter
      ansible.builtin.include_role:
        name: csdl.gpu_lab.jupyter_server

    - name: Keep the summary for the test
      ansible.builtin.copy:
        content: "{{ jupyter_server_summary | dict2items | rejectattr('key', 'eq', 'url') | items2dict | to_json }}"
        dest: "{{ guard_test_out }}/summary-{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      changed_when: false  # the test's own file: not a change on the host
"""

# jupyter_server_repo_url is not set: the role's default, ''.
GUARD = """\
- name: Look for unsaved work
  hosts: all
  gather_facts: false
  tasks:
    - name: Run the guard
      ansible.builtin.include_role:
        name: csdl.gpu_lab.jupyter_server
        tasks_from: guard

    - name: Keep what it found for the test
      ansible.builtin.copy:
        content: "{{ jupyter_server_unsaved_work | to_json }}"
        dest: "{{ guard_test_out }}/guard-{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      changed_when: false
"""

# The student's side of the work host: as ubuntu, over ssh.
STUDENT_WORK = f"""set -eu
echo "my answer" >> {REPO_DIR}/README.md
echo '{{"cells": []}}' > ~/my_notes.ipynb
mkdir -p ~/projects/x && cd ~/projects/x && git init -q
echo 'print(1)' > x.py && git add x.py
git -c user.name=Student -c user.email=s@example.invalid commit -qm "my project"
"""

# What Jupyter leaves in the course repo while the student only reads: a checkpoint (through
# its API, as a save does) and its runtime files, under hidden folders.
JUPYTER_CHECKPOINT = """import json, urllib.request
token = json.load(open("/home/ubuntu/.jupyter/jupyter_server_config.json"))["IdentityProvider"]["token"]
request = urllib.request.Request("http://127.0.0.1:8888/api/contents/week1.ipynb/checkpoints", data=b"",
                                 method="POST", headers={"Authorization": "token " + token})
print(urllib.request.urlopen(request).status)
"""


@dataclass
class Lab:
    cloud: Cloud
    workdir: Path
    home: Path
    key: Path
    ips: dict[str, str]
    course_url: str

    def ssh_options(self) -> list[str]:
        return ["-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}"]

    def ssh(self, name: str, command: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["ssh", "-F", "/dev/null", *self.ssh_options(), f"ubuntu@{self.ips[name]}", command],
                              input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"ssh {name} {command!r} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def playbook(self, text: str, limit: str, **extra_vars: Any) -> subprocess.CompletedProcess[str]:
        path = self.workdir / f"play-{uuid.uuid4().hex[:6]}.yml"
        path.write_text(text)
        env = {**self.cloud.env(), "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=10s"}
        args = ["-i", str(self.workdir / "inventory.json"), "--limit", limit,
                "-e", json.dumps({"guard_test_out": str(self.workdir), **extra_vars})]
        proc = run_playbook(str(path.with_suffix("")), env, self.home, None, *args, timeout=300)
        path.with_suffix(".out").write_text(proc.stdout + proc.stderr)  # to read after a failure
        return proc

    def found(self, name: str) -> dict[str, Any]:
        return json.loads((self.workdir / f"guard-{name}.json").read_text())

    def summary(self, name: str) -> dict[str, Any]:
        return json.loads((self.workdir / f"summary-{name}.json").read_text())

    def jupyter(self, name: str) -> dict[str, str]:
        """Jupyter's unit as systemd runs it: root, command line, when it last started."""
        out = self.ssh(name, "systemctl show jupyter.service -p WorkingDirectory -p ExecStart "
                             "-p ActiveEnterTimestampMonotonic -p ActiveState")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def lab(cloud_session: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ec2, ssm = standin_clients(cloud_session)
    workdir = tmp_path_factory.mktemp("guard_lab")
    key = key_pair_file(ec2, workdir, "guard-lab")
    url, _ = make_course_repo(cloud_session.controller.share_dir, name=COURSE)
    image = ssm.get_parameter(Name=dlami_parameter_name(DLAMI_LINES[0]))["Parameter"]["Value"]
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    instances = ec2.run_instances(ImageId=image, MinCount=len(HOSTS), MaxCount=len(HOSTS), InstanceType="g6.xlarge",
                                  KeyName="guard-lab", SubnetId=subnet)["Instances"]
    allocations: list[str] = []
    try:
        ips = {}
        for name, instance in zip(HOSTS, instances, strict=True):
            address = ec2.allocate_address(Domain="vpc")
            allocations.append(address["AllocationId"])
            ec2.associate_address(InstanceId=instance["InstanceId"], AllocationId=address["AllocationId"])
            ips[name] = address["PublicIp"]
        for instance in instances:
            cloud_session.controller.wait_until(instance["InstanceId"], "booted", timeout=60)
        lab = Lab(cloud_session, workdir, workdir / "home", key, ips, url)
        ssh_args = " ".join(lab.ssh_options())
        hosts: dict[str, Any] = {
            name: {"ansible_host": ip, "ansible_user": "ubuntu", "ansible_ssh_common_args": ssh_args,
                   "jupyter_server_lab_name": name}
            for name, ip in ips.items()}
        # Nothing listens on this machine's port 1: a host the guard cannot reach.
        hosts["gone"] = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "ubuntu",
                         "ansible_ssh_common_args": ssh_args}
        (workdir / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))

        # The first launch names the course; the role records what it set up.
        _ok(lab.playbook(SITE, ",".join(HOSTS), jupyter_server_repo_url=url))

        lab.ssh("work", STUDENT_WORK)
        assert lab.ssh("clean", "/opt/pytorch/bin/python -", stdin=JUPYTER_CHECKPOINT).strip() == "201"
        # A host configured before the role kept a stamp: the DLAMI's licence file (as root,
        # as the AMI has it) and a file of the student's from back then.
        lab.ssh("legacy", f"sudo rm {STAMP} && sudo touch -d 2024-01-01 ~/PYTHON_PACKAGES_LICENSES "
                          "&& echo draft > ~/old_work.txt && touch -d 2024-06-01 ~/old_work.txt")
        yield lab
    finally:
        for allocation in allocations:  # release (disassociating first) before terminating, as on AWS
            with contextlib.suppress(Exception):
                for address in ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]:
                    if address.get("AssociationId"):
                        ec2.disassociate_address(AssociationId=address["AssociationId"])
                ec2.release_address(AllocationId=allocation)
        ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in instances])
        ec2.delete_key_pair(KeyName="guard-lab")
        cloud_session.controller.wait_settled()


def test_first_launch_recorded_what_it_set_up(lab: Lab) -> None:
    stamp = json.loads(lab.ssh("work", f"cat {STAMP}"))
    assert stamp["root_dir"] == REPO_DIR
    assert stamp["repo"] == {"dest": REPO_DIR, "url": lab.course_url, "branch": "main"}
    assert (stamp["user"], stamp["home"]) == ("ubuntu", "/home/ubuntu")
    # The host's clock, before the role cloned the course.
    now, cloned = map(int, lab.ssh("work", f"date +%s; stat -c %Z {REPO_DIR}/.git/description").split())
    assert isinstance(stamp["configured_at"], int) and now - 600 < stamp["configured_at"] <= cloned
    assert lab.ssh("work", f"stat -c '%a %U %G' {STAMP}").split() == ["644", "root", "root"]


def test_rerun_without_the_course_url_changes_nothing(lab: Lab) -> None:
    before = {name: lab.jupyter(name) for name in ("work", "clean")}
    assert before["work"]["WorkingDirectory"] == REPO_DIR
    rerun = _ok(lab.playbook(SITE, "work,clean", jupyter_server_repo_url=""))
    assert {h: r["changed"] for h, r in recaps(rerun.stdout).items() if h != "localhost"} == \
        {"work": 0, "clean": 0}, changed_tasks(rerun.stdout)
    for name in ("work", "clean"):
        after = lab.jupyter(name)
        assert after == before[name], "Jupyter was re-rooted or restarted"
        assert after["WorkingDirectory"] == REPO_DIR and f"--ServerApp.root_dir={REPO_DIR} " in after["ExecStart"]
        assert lab.summary(name)["root_dir"] == REPO_DIR
        assert lab.summary(name)["repo"].startswith(f"{REPO_DIR} at ")
        assert "as an earlier run set it up" in lab.summary(name)["repo"]
    assert "my answer" in lab.ssh("work", f"cat {REPO_DIR}/README.md")  # left as the student has it


def test_rerun_on_a_host_without_a_stamp_learns_the_root_from_jupyters_unit(lab: Lab) -> None:
    before = lab.jupyter("legacy")
    first = _ok(lab.playbook(SITE, "legacy", jupyter_server_repo_url=""))
    # Only the stamp is new; its time of first configuration is unknown.
    changed = changed_tasks(first.stdout)
    assert len(changed) == 1 and "Record what the role set up on the host" in changed[0], changed
    stamp = json.loads(lab.ssh("legacy", f"cat {STAMP}"))
    assert stamp["configured_at"] is None and stamp["root_dir"] == REPO_DIR
    assert stamp["repo"] == {"dest": REPO_DIR, "url": lab.course_url, "branch": "main"}
    assert lab.jupyter("legacy") == before
    again = _ok(lab.playbook(SITE, "legacy", jupyter_server_repo_url=""))
    assert recaps(again.stdout)["legacy"]["changed"] == 0, changed_tasks(again.stdout)


def test_guard_without_the_course_url_finds_the_students_work(lab: Lab) -> None:
    stop = _ok(lab.playbook(GUARD, "work"))
    found = lab.found("work")
    assert (found["checked"], found["any"], found["error"]) == (True, True, None)
    repos = {r["path"]: r for r in found["repos"]}
    assert set(repos) == {REPO_DIR, "/home/ubuntu/projects/x"}
    assert repos[REPO_DIR]["files"] == ["README.md"] and repos[REPO_DIR]["unpushed_commits"] == 0
    assert repos[REPO_DIR]["fetch_error"] is None
    assert repos["/home/ubuntu/projects/x"]["unpushed_commits"] == 1
    assert found["loose_files"] == ["/home/ubuntu/my_notes.ipynb"] and found["loose_files_count"] == 1
    assert found["baseline"]["source"] == "stamp"
    # The course repo, as before (for older callers).
    assert (found["repo"], found["files"], found["unpushed_commits"]) == (REPO_DIR, ["README.md"], 0)
    said = " ".join(stop.stdout.split())
    assert (f"WARNING: on work, {REPO_DIR}: 1 uncommitted file(s): README.md; "
            "/home/ubuntu/projects/x: 1 commit(s) on no remote branch; "
            "1 file(s) outside any git repo: /home/ubuntu/my_notes.ipynb. "
            "It stays on the disk of the stopped host") in said


def test_a_clean_host_reports_nothing(lab: Lab) -> None:
    assert lab.ssh("clean", f"ls -A {REPO_DIR}/.ipynb_checkpoints").split() == ["week1-checkpoint.ipynb"]
    proc = _ok(lab.playbook(GUARD, "clean", jupyter_server_guard_mode="refuse"))
    found = lab.found("clean")
    assert (found["checked"], found["any"], found["report"], found["loose_files"]) == (True, False, [], [])
    assert [(r["path"], r["any"]) for r in found["repos"]] == [(REPO_DIR, False)]
    assert "WARNING" not in proc.stdout


def test_refuse_names_the_paths_and_force_goes_on_with_a_warning(lab: Lab) -> None:
    refused = lab.playbook(GUARD, "work", jupyter_server_guard_mode="refuse")
    assert refused.returncode != 0
    said = " ".join(refused.stdout.split())
    assert "Refusing to go on: on work, " in said
    for where in (f"{REPO_DIR}: 1 uncommitted file(s): README.md", "/home/ubuntu/projects/x: 1 commit(s)",
                  "/home/ubuntu/my_notes.ipynb", f"git -C {REPO_DIR} status",
                  "copy the files outside the repos off the host",
                  "run again with -e gpu_lab_force_teardown=true to destroy it anyway"):
        assert where in said, where

    forced = _ok(lab.playbook(GUARD, "work", jupyter_server_guard_mode="refuse", jupyter_server_guard_force=True))
    said = " ".join(forced.stdout.split())
    assert "WARNING: going on as forced, although on work, " in said and "/home/ubuntu/my_notes.ipynb" in said


def test_without_a_stamps_time_every_file_counts_but_the_dlamis(lab: Lab) -> None:
    _ok(lab.playbook(GUARD, "legacy"))
    found = lab.found("legacy")
    assert found["baseline"]["source"] == "none"
    assert found["loose_files"] == ["/home/ubuntu/old_work.txt"]
    assert [(r["path"], r["any"]) for r in found["repos"]] == [(REPO_DIR, False)]


def test_a_guard_that_cannot_look_refuses_or_says_so(lab: Lab) -> None:
    warned = _ok(lab.playbook(GUARD, "gone"))
    assert "WARNING: gone could not be looked at for unsaved work (unreachable: " in " ".join(warned.stdout.split())
    found = lab.found("gone")
    assert (found["checked"], found["any"], found["repos"]) == (False, True, [])

    refused = lab.playbook(GUARD, "gone", jupyter_server_guard_mode="refuse")
    assert refused.returncode != 0
    said = " ".join(refused.stdout.split())
    assert "Refusing to go on: gone could not be looked at for unsaved work (unreachable: " in said
    assert "Make the host reachable and run this again" in said


def test_a_new_course_url_still_moves_jupyter(lab: Lab) -> None:
    """Last: it changes the clean host. A different URL than the host's repo decides anew."""
    other, _ = make_course_repo(lab.cloud.controller.share_dir, name="othercourse")
    moved = _ok(lab.playbook(SITE, "clean", jupyter_server_repo_url=other))
    assert recaps(moved.stdout)["clean"]["changed"] > 0
    assert lab.jupyter("clean")["WorkingDirectory"] == "/home/ubuntu/othercourse"
    stamp = json.loads(lab.ssh("clean", f"cat {STAMP}"))
    assert stamp["repo"]["dest"] == "/home/ubuntu/othercourse"
    # The first course repo is still the student's, and the guard still looks at it.
    _ok(lab.playbook(GUARD, "clean"))
    assert sorted(r["path"] for r in lab.found("clean")["repos"]) == [REPO_DIR, "/home/ubuntu/othercourse"]
