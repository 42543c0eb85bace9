"""The demo shell's ssh stays in the sandbox (issue 14, C).

`make demo-shell` runs with HOME=.demo/home, but ssh finds ~/.ssh from the passwd entry, not
from $HOME: a plain `ssh csdl` there cannot resolve the lab, and the tutorial's own
`ssh -i ~/.ssh/csdl-server.pem ubuntu@$CSDL_IP` writes the real ~/.ssh/known_hosts. Here the
sandbox is made by scripts/demo.sh itself (in a folder of the test's, GPU_LAB_DEMO_DIR), the
workstation role writes into it as the demo's launch does (HOME the sandbox), and `ssh -G`
(the configuration ssh would use, without connecting) runs in the demo shell: through
scripts/demo.sh's own start-up file, and through `scripts/demo.sh shell` itself.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.playbook import REPO, run_playbook

LAB = "csdl"
ADDRESS = "127.0.0.88"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
DEMO = REPO / "scripts" / "demo.sh"

PLAYBOOK = f"""\
- name: Set up this workstation for the lab, as the demo's launch does (HOME is the sandbox)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Write the ssh entry, pin the host key, add the shell shortcuts
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      vars:
        workstation_lab_name: {LAB}
        workstation_host_address: {ADDRESS}
        workstation_host_keys: ["{KEY}"]
        workstation_jupyter_port: 28897
"""


def demo(command: str, demo_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env["GPU_LAB_DEMO_DIR"] = str(demo_dir)
    return subprocess.run([str(DEMO), command], env=env, input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def resolved(lines: str) -> dict[str, list[str]]:
    """ssh -G's answer: each option's values (identityfile may come more than once)."""
    found: dict[str, list[str]] = {}
    for line in lines.splitlines():
        key, _, value = line.partition(" ")
        if key.islower() and value:
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Path]:
    """The demo's sandbox as `make demo` leaves it: made by scripts/demo.sh, then the lab's ssh
    entry, pin and shell block written by the workstation role with HOME the sandbox."""
    demo_dir = tmp_path / "demo"
    made = demo("sandbox", demo_dir)
    assert made.returncode == 0, made.stderr
    home = demo_dir / "home"
    key = home / ".ssh" / f"{LAB}-server.pem"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o400)
    inventory = tmp_path / "localhost.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    (tmp_path / "workstation.yml").write_text(PLAYBOOK)
    env = {"ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible_tmp"),
           "ANSIBLE_INVENTORY": str(inventory), "SHELL": "/bin/bash"}
    done = run_playbook(str(tmp_path / "workstation"), env, home)
    assert done.returncode == 0, done.stdout[-4000:]
    return {"dir": demo_dir, "home": home, "rcfile": demo_dir / "shell.bashrc"}


def in_demo_shell(sandbox: dict[str, Path], command: str) -> dict[str, list[str]]:
    """`command` in an interactive bash started as the demo shell starts it, with HOME the sandbox."""
    env = {"HOME": str(sandbox["home"]), "PATH": os.environ["PATH"], "TERM": "dumb"}
    done = subprocess.run(["bash", "--rcfile", str(sandbox["rcfile"]), "-ic", command], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    return resolved(done.stdout)


def test_ssh_in_the_demo_shell_uses_the_sandbox(sandbox: dict[str, Path]) -> None:
    home = sandbox["home"]
    lab = in_demo_shell(sandbox, f"ssh -G {LAB}")
    assert lab["hostname"] == [ADDRESS]
    assert lab["user"] == ["ubuntu"]
    assert str(home / ".ssh" / f"{LAB}-server.pem") in lab["identityfile"]
    assert lab["userknownhostsfile"] == [str(home / ".gpu_lab" / LAB / "known_hosts")]
    assert lab["stricthostkeychecking"] == ["true"]

    # A host with no entry of its own, and the tutorial's command on the lab's own address:
    # their host keys go to the sandbox's known_hosts, not to the real home's.
    sandbox_known_hosts = [str(home / ".ssh" / "known_hosts")]
    assert in_demo_shell(sandbox, "ssh -G ubuntu@127.0.0.5")["userknownhostsfile"] == sandbox_known_hosts
    tutorial = in_demo_shell(sandbox, "ssh -G -L 8888:localhost:8888 -i ~/.ssh/csdl-server.pem ubuntu@$CSDL_IP")
    assert tutorial["hostname"] == [ADDRESS]
    assert tutorial["userknownhostsfile"] == sandbox_known_hosts
    assert str(home / ".ssh" / f"{LAB}-server.pem") in tutorial["identityfile"]
    # ssh-csdl (an alias of `ssh -F <sandbox config> csdl`) goes through the same function.
    assert in_demo_shell(sandbox, "ssh-csdl -G")["userknownhostsfile"] == lab["userknownhostsfile"]


def test_without_the_demo_shell_ssh_would_use_the_real_home(sandbox: dict[str, Path]) -> None:
    """Why the demo shell needs its own ssh: HOME alone does not move ssh's files."""
    env = {"HOME": str(sandbox["home"]), "PATH": os.environ["PATH"]}
    plain = subprocess.run(["ssh", "-G", "ubuntu@127.0.0.5"], env=env, capture_output=True, text=True,
                           timeout=30, check=True).stdout
    known_hosts = resolved(plain)["userknownhostsfile"][0].split()
    account_home = pwd.getpwuid(os.getuid()).pw_dir
    assert not any(path.startswith(str(sandbox["home"])) for path in known_hosts), known_hosts
    assert any(path.startswith(account_home) for path in known_hosts), known_hosts


def test_the_demo_shell_itself(sandbox: dict[str, Path]) -> None:
    """scripts/demo.sh shell (what make demo-shell runs), commands on its input: it says it is a
    sandbox, and its ssh resolves the lab and keeps host keys in the sandbox."""
    done = demo("shell", sandbox["dir"], stdin=f"ssh -G {LAB}\nssh -G ubuntu@127.0.0.5\ntype scp\nexit\n")
    assert done.returncode == 0, done.stderr
    assert "sandbox shell" in done.stdout and "never your own ~/.ssh" in done.stdout
    out = resolved(done.stdout)
    home = sandbox["home"]
    assert out["hostname"][0] == ADDRESS
    assert out["userknownhostsfile"] == [str(home / ".gpu_lab" / LAB / "known_hosts"),
                                         str(home / ".ssh" / "known_hosts")]
    assert f"command scp -F {home / '.ssh' / 'config'}" in done.stdout


def test_demo_clean_removes_the_sandbox_and_only_a_demo(sandbox: dict[str, Path], tmp_path: Path) -> None:
    removed = demo("down", sandbox["dir"])
    assert removed.returncode == 0, removed.stderr
    assert not sandbox["dir"].exists()
    # GPU_LAB_DEMO_DIR naming a folder that is not a demo's: not deleted.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep").write_text("mine\n")
    refused = demo("down", other)
    assert refused.returncode != 0 and "not a gpu_lab demo folder" in refused.stderr
    assert (other / "keep").read_text() == "mine\n"
