"""A workstation the role cannot finish writing (issue 14, A): it fails before its first write,
with one sentence that names the cause and says what to do, and leaves the home as it was.

Each case is a throwaway home prepared with something in the way (``~/.ssh`` a file, a shell
start-up file a directory, a file or folder that cannot be changed...), then the real
ansible-playbook runs a small playbook that includes csdl.gpu_lab.workstation as launch.yml's
workstation play does. The home is compared file by file (modes and bytes) before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.playbook import changed_tasks, recap, run_playbook

LAB = "csdl"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"

PLAYBOOK = f"""\
- name: Set up this workstation for the lab, as launch.yml's workstation play does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Write the ssh entry, pin the host key, add the shell shortcuts
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      vars:
        workstation_lab_name: {LAB}
        workstation_host_address: 127.0.0.77
        workstation_host_keys: ["{KEY}"]
        workstation_jupyter_port: 28895
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Ansible's own files outside the home, so the home holds only what the role writes; an
    inventory of localhost only (not the lab's AWS inventory of the checkout's ansible.cfg)."""
    inventory = tmp_path / "localhost.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    return {"ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible_tmp"),
            "ANSIBLE_INVENTORY": str(inventory), "SHELL": "/bin/bash"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A student's home: a bashrc of their own, ~/.ssh with the lab's key."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".bashrc").write_text("# my bashrc\nalias ll='ls -alF'\n")
    key = home / ".ssh" / f"{LAB}-server.pem"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o400)
    return home


@pytest.fixture
def playbook(tmp_path: Path) -> str:
    (tmp_path / "workstation.yml").write_text(PLAYBOOK)
    return str(tmp_path / "workstation")


@pytest.fixture
def locked() -> Iterator[Callable[[Path], None]]:
    """locked(path): this user can no longer change path. Root may write anything whatever the
    mode, so as root the path is made immutable (chattr +i), and made mutable again after."""
    done: list[Path] = []

    def lock(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(path.stat().st_mode & ~0o222)
        else:
            if not shutil.which("chattr"):
                pytest.skip("as root, a file root cannot write needs chattr (e2fsprogs)")
            made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
            if made.returncode != 0:
                pytest.skip(f"chattr +i does not work here: {made.stderr.strip()}")
        done.append(path)

    yield lock
    for path in done:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(path.stat().st_mode | 0o200)


def tree(home: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path under home: its type and mode and, for files, its bytes."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for path in sorted(home.rglob("*")):
        mode = f"{'d' if path.is_dir() else 'f'}{path.lstat().st_mode & 0o7777:04o}"
        found[str(path.relative_to(home))] = (mode, None if path.is_dir() else path.read_bytes())
    return found


def fails_before_writing(playbook: str, env: dict[str, str], home: Path) -> str:
    """Runs the role; asserts it failed in one of its checks and left every file under home as
    it was. Returns the failure's message, whitespace folded."""
    before = tree(home)
    result = run_playbook(playbook, {**env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}, home)
    assert result.returncode != 0, result.stdout
    assert tree(home) == before, result.stdout
    failed = [(task["task"]["name"], outcome) for play in json.loads(result.stdout)["plays"] for task in play["tasks"]
              for outcome in task["hosts"].values() if outcome.get("failed")]
    assert len(failed) == 1, failed
    name, outcome = failed[0]
    assert name.split(" : ")[-1].startswith("Check "), failed  # an assert of the role, not a write that failed
    return " ".join(outcome["msg"].split())


def test_ssh_folder_a_file(playbook: str, env: dict[str, str], tmp_path: Path) -> None:
    """The issue's example: ~/.ssh a regular file. Before, the role wrote ~/.gpu_lab (and its
    undo list) and then failed on ~/.ssh with "One or more items failed"."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# my bashrc\n")
    (home / ".ssh").write_text("not a folder\n")
    out = fails_before_writing(playbook, env, home)
    ssh = home / ".ssh"
    assert f"{ssh} is a file, not a directory: move it out of the way (mv {ssh} {ssh}.old) and run again." in out
    # One cause, said once (the ssh config and the key under it follow from it).
    assert out.count(f"{ssh} is a file") == 1, out
    assert not (home / ".gpu_lab").exists()


def test_shell_file_a_directory(playbook: str, env: dict[str, str], home: Path) -> None:
    (home / ".zshrc").mkdir()
    out = fails_before_writing(playbook, env, home)
    assert f"{home / '.zshrc'} is a directory, not a file: move it out of the way" in out


@pytest.mark.parametrize(("what", "prepare", "sentence"), [
    ("ssh config a directory", lambda h: (h / ".ssh" / "config").mkdir(), "{h}/.ssh/config is a directory, not a file"),
    ("gpu_lab folder a file", lambda h: (h / ".gpu_lab").write_text(""), "{h}/.gpu_lab is a file, not a directory"),
    ("lab folder a file", lambda h: ((h / ".gpu_lab").mkdir(mode=0o700), (h / ".gpu_lab" / LAB).write_text("")),
     "{h}/.gpu_lab/" + LAB + " is a file, not a directory"),
], ids=["ssh config a directory", "gpu_lab folder a file", "lab folder a file"])
def test_folder_or_file_in_the_way(playbook: str, env: dict[str, str], home: Path, what: str,
                                   prepare: Callable[[Path], object], sentence: str) -> None:
    prepare(home)
    out = fails_before_writing(playbook, env, home)
    assert sentence.format(h=home) in out, out


@pytest.mark.parametrize("locked_path", [".ssh/config", ".bashrc", ".ssh", ".gpu_lab/" + LAB])
def test_what_this_user_cannot_change(playbook: str, env: dict[str, str], home: Path,
                                      locked: Callable[[Path], None], locked_path: str) -> None:
    """A file the role would change, or a folder it would write into, that this user may not
    change: the ssh config, a shell start-up file, ~/.ssh, the lab's own folder."""
    (home / ".ssh" / "config").write_text("Host github.com\n    User git\n")
    (home / ".gpu_lab" / LAB).mkdir(parents=True, mode=0o700)
    (home / ".gpu_lab").chmod(0o700)
    target = home / locked_path
    locked(target)
    out = fails_before_writing(playbook, env, home)
    assert f"{target} is read-only for " in out, out
    assert f"chmod u+w {target}) and run again." in out


def test_an_unchangeable_file_that_needs_no_change_is_fine(playbook: str, env: dict[str, str], home: Path,
                                                          locked: Callable[[Path], None]) -> None:
    """The check is about what would change: once the lab is set up, a re-run with the ssh
    config and the bashrc locked (say, managed by a dotfiles tool) writes nothing and passes."""
    first = run_playbook(playbook, env, home)
    assert first.returncode == 0, first.stdout
    locked(home / ".ssh" / "config")
    locked(home / ".bashrc")
    again = run_playbook(playbook, env, home)
    assert again.returncode == 0, again.stdout
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)


PIN_PLAYBOOK = f"""\
- name: Pin a student's lab on the staff machine, as a class launch does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Pin the lab's host keys
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      vars:
        workstation_lab_name: {LAB}-ana
        workstation_host_address: 127.0.0.77
        workstation_host_keys: ["{KEY}"]
        workstation_pin_only: true
"""


def test_pin_only_with_gpu_lab_a_file(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    """A class's staff machine writes only the pin, and checks its way the same."""
    (tmp_path / "pin.yml").write_text(PIN_PLAYBOOK)
    (home / ".gpu_lab").write_text("")
    out = fails_before_writing(str(tmp_path / "pin"), env, home)
    assert out == f"{home / '.gpu_lab'} is a file, not a directory: move it out of the way" \
                  f" (mv {home / '.gpu_lab'} {home / '.gpu_lab'}.old) and run again."
