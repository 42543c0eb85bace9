"""Connection kits (issue 7): the staff machine pins a student's lab and writes the kit; the
student's machine installs it (install_kit.yml) and removes it again.

Every test runs the real ansible-playbook in throwaway homes: no cloud, no host. The staff's
side is a small playbook in tmp that includes csdl.gpu_lab.workstation as a class playbook
would (pin_only, then tasks_from: kit); the student's side is the repo's install_kit.yml.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.playbook import changed_tasks, recap, run_playbook

LAB = "csdl-ana"
ADDRESS = "127.0.0.77"
JUPYTER_PORT = 28890
KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMEqOuptp0gRI9iOdNgj1XtMkP5UcIqaN4tiHDS5j"
    "y2SDSqkLw4aHY8AZsSqqkTbRmFgIErj82z/08zrKbPKhhM=",
]

STAFF_PLAYBOOK = """\
- name: Pin a student's lab and write the student's kit, as a class playbook does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Pin the lab's host keys
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
      when: pin | default(true) | bool
      vars:
        workstation_lab_name: {lab}
        workstation_host_address: {address}
        workstation_pin_only: true
        workstation_state: "{{{{ pin_state | default('present') }}}}"
        workstation_host_keys: {keys}

    - name: Write the kit
      ansible.builtin.include_role:
        name: csdl.gpu_lab.workstation
        tasks_from: kit
      vars:
        workstation_lab_name: {lab}
        workstation_host_address: {address}
        workstation_host_user: ubuntu
        workstation_jupyter_port: {port}
        workstation_kit_dir: "{{{{ kit_dir }}}}"
        workstation_kit_class: csdl
        workstation_kit_student: Ana Silva
      when: kit_dir is defined
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Ansible's own files outside the homes, so the homes hold only what the role writes; the
    inventory a student outside the checkout has (localhost only: not the lab's AWS inventory)."""
    inventory = tmp_path / "localhost.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    return {"ANSIBLE_HOME": str(tmp_path / "ansible_home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible_tmp"),
            "ANSIBLE_INVENTORY": str(inventory), "SHELL": "/bin/bash"}


@pytest.fixture
def staff(tmp_path: Path) -> Path:
    """The staff playbook (run_playbook takes its path without .yml)."""
    # Host keys given as known_hosts lines with a host field and a comment, as a keyscan gives them.
    keys = [f"{ADDRESS} {KEYS[0]} root@host", KEYS[1]]
    flow = yaml.safe_dump(keys, default_flow_style=True).strip()
    (tmp_path / "staff.yml").write_text(STAFF_PLAYBOOK.format(lab=LAB, address=ADDRESS, port=JUPYTER_PORT, keys=flow))
    return tmp_path / "staff"


@pytest.fixture
def token() -> str:
    return "tok" + secrets.token_hex(20)


def tree(home: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path under home: its mode and, for files, its bytes."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for path in sorted(home.rglob("*")):
        mode = f"{path.stat().st_mode & 0o7777:04o}"
        found[str(path.relative_to(home))] = (mode, path.read_bytes() if path.is_file() else None)
    return found


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout[-3000:]
    return " ".join((result.stdout + result.stderr).split())


def unchanged(result: subprocess.CompletedProcess[str]) -> None:
    output = ok(result)
    assert recap(output)["changed"] == 0, changed_tasks(output)


def write_kit(staff: Path, home: Path, env: dict[str, str], kit_dir: Path, token: str | None) -> str:
    """The staff side: pin, jupyter_server's token (when the host was configured), the kit."""
    (home / ".gpu_lab" / LAB).mkdir(parents=True, exist_ok=True)
    if token is not None:
        token_file = home / ".gpu_lab" / LAB / "jupyter_token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    return ok(run_playbook(str(staff), env, home, {"kit_dir": kit_dir}, "-v"))


def student_home(tmp_path: Path, key: str = "id_ed25519") -> Path:
    home = tmp_path / "student"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh").chmod(0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / key)], check=True)
    (home / ".bashrc").write_text("# my bashrc\nalias ll='ls -alF'\n")
    (home / ".ssh" / "config").write_text("Host *\n    ServerAliveInterval 60\n")
    (home / ".ssh" / "config").chmod(0o600)
    return home


def ssh_config_of(config: Path, home: Path) -> dict[str, list[str]]:
    """What ssh resolves for the lab with this config file. ssh takes ~ from the passwd entry,
    not from HOME, so a throwaway home's ~/.ssh/config is passed with -F, as the role's alias does."""
    out = subprocess.run(["ssh", "-F", str(config), "-G", LAB], capture_output=True, text=True, check=True,
                         env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout
    resolved: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return resolved


def bash_aliases(home: Path, source: str) -> str:
    return subprocess.run(["bash", "--norc", "-c", f". {source}; alias; echo IP=${LAB.upper().replace('-', '_')}_IP"],
                          capture_output=True, text=True, check=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}
                          ).stdout


def test_pin_only_writes_only_the_known_hosts(tmp_path: Path, staff: Path, env: dict[str, str]) -> None:
    home = tmp_path / "staff_home"
    home.mkdir()
    (home / ".bashrc").write_text("# staff's bashrc\n")
    before = tree(home)

    ok(run_playbook(str(staff), env, home))
    after = tree(home)
    assert sorted(set(after) - set(before)) == [".gpu_lab", f".gpu_lab/{LAB}", f".gpu_lab/{LAB}/known_hosts"]
    assert after[".gpu_lab"][0] == after[f".gpu_lab/{LAB}"][0] == "0700"
    mode, content = after[f".gpu_lab/{LAB}/known_hosts"]
    assert mode == "0600"
    assert content is not None
    assert content.decode().splitlines() == sorted(f"{LAB},{ADDRESS} {key}" for key in KEYS)
    assert after[".bashrc"] == before[".bashrc"]
    # ssh -o UserKnownHostsFile=... -o StrictHostKeyChecking=yes finds the pin by the address.
    found = subprocess.run(["ssh-keygen", "-F", ADDRESS, "-f", str(home / ".gpu_lab" / LAB / "known_hosts")],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0 and KEYS[0] in found.stdout

    unchanged(run_playbook(str(staff), env, home))

    # A token jupyter_server left there goes with the lab; the home is as before.
    (home / ".gpu_lab" / LAB / "jupyter_token").write_text("secret\n")
    ok(run_playbook(str(staff), env, home, {"pin_state": "absent"}))
    assert tree(home) == before
    unchanged(run_playbook(str(staff), env, home, {"pin_state": "absent"}))


def test_kit_files_idempotence_and_no_token_in_output(tmp_path: Path, staff: Path, env: dict[str, str],
                                                     token: str) -> None:
    home, kit_dir = tmp_path / "staff_home", tmp_path / "staff_home" / "kits" / "csdl" / "ana"
    output = write_kit(staff, home, env, kit_dir, token)
    assert token not in output

    files = tree(kit_dir)
    assert {name: mode for name, (mode, _) in files.items()} == dict.fromkeys(
        ["README.txt", "jupyter_url", "kit.yml", "known_hosts", "shell.sh", "ssh_config"], "0600")
    assert f"{kit_dir.stat().st_mode & 0o777:04o}" == "0700"
    # Nothing but the pin and the token on the staff's own side: no ssh entry, no shell block.
    assert sorted(p.name for p in (home / ".gpu_lab" / LAB).iterdir()) == ["jupyter_token", "known_hosts"]
    assert not (home / ".ssh").exists() and not (home / ".bashrc").exists()

    kit = yaml.safe_load((kit_dir / "kit.yml").read_text())
    assert kit == {"gpu_lab_kit": 1, "lab": LAB, "class": "csdl", "student": "Ana Silva", "address": ADDRESS,
                   "user": "ubuntu", "jupyter_port": JUPYTER_PORT, "host_keys": sorted(KEYS), "jupyter_token": token}
    assert (kit_dir / "known_hosts").read_text().splitlines() == sorted(f"{ADDRESS} {key}" for key in KEYS)
    assert (kit_dir / "jupyter_url").read_text() == f"http://localhost:{JUPYTER_PORT}/lab?token={token}\n"

    ssh_config = (kit_dir / "ssh_config").read_text()
    lines = [line.strip() for line in ssh_config.splitlines()]
    for line in (f"Host {LAB}", f"HostName {ADDRESS}", "User ubuntu", "IdentityFile ~/.ssh/id_ed25519",
                 "IdentitiesOnly yes", f"UserKnownHostsFile ~/.gpu_lab/{LAB}/known_hosts", "StrictHostKeyChecking yes",
                 f"LocalForward localhost:{JUPYTER_PORT} localhost:{JUPYTER_PORT}"):
        assert line in lines, line
    assert "# Your own private key" in ssh_config
    # The kit's known_hosts names the address, so the entry must not look the key up by another name.
    assert "HostKeyAlias" not in ssh_config
    resolved = ssh_config_of(kit_dir / "ssh_config", home)
    assert resolved["hostname"] == [ADDRESS] and resolved["user"] == ["ubuntu"]
    assert resolved["localforward"] == [f"[localhost]:{JUPYTER_PORT} [localhost]:{JUPYTER_PORT}"]

    aliases = bash_aliases(home, str(kit_dir / "shell.sh"))
    assert f"alias ssh-{LAB}='ssh {LAB}'" in aliases
    assert f"alias {LAB}-stop='ssh -o ClearAllForwardings=yes {LAB} sudo systemctl poweroff'" in aliases
    assert f"{LAB}-jupyter=" in aliases and f"{LAB}-start" not in aliases and f"{LAB}-status" not in aliases
    assert f"IP={ADDRESS}" in aliases
    assert token not in (kit_dir / "shell.sh").read_text() + (kit_dir / "README.txt").read_text()
    readme = (kit_dir / "README.txt").read_text()
    assert "ansible-playbook csdl.gpu_lab.install_kit -e kit=" in readme and "-e key=" in readme
    assert "no Jupyter token" not in readme

    # By hand: the kit's jupyter_url copied to ~/.gpu_lab/<lab>/ is what <lab>-jupyter prints.
    student = tmp_path / "by_hand"
    (student / ".gpu_lab" / LAB).mkdir(parents=True)
    (student / ".gpu_lab" / LAB / "jupyter_url").write_bytes((kit_dir / "jupyter_url").read_bytes())
    printed = subprocess.run(["bash", "--norc", "-O", "expand_aliases", "-c",
                              f". {kit_dir / 'shell.sh'}\n{LAB}-jupyter"], capture_output=True, text=True, check=True,
                             env={"HOME": str(student), "PATH": "/usr/bin:/bin"}).stdout
    assert printed == f"http://localhost:{JUPYTER_PORT}/lab?token={token}\n"

    second = run_playbook(str(staff), env, home, {"kit_dir": kit_dir}, "-v")
    unchanged(second)
    assert token not in second.stdout + second.stderr
    assert tree(kit_dir) == files


def test_kit_without_token(tmp_path: Path, staff: Path, env: dict[str, str], token: str) -> None:
    home, kit_dir = tmp_path / "staff_home", tmp_path / "kit"
    write_kit(staff, home, env, kit_dir, None)
    assert sorted(p.name for p in kit_dir.iterdir()) == [
        "README.txt", "kit.yml", "known_hosts", "shell.sh", "ssh_config"]
    assert yaml.safe_load((kit_dir / "kit.yml").read_text())["jupyter_token"] == ""
    assert "no Jupyter token" in (kit_dir / "README.txt").read_text()
    unchanged(run_playbook(str(staff), env, home, {"kit_dir": kit_dir}))

    # The host gets configured: the kit follows, and loses its URL again with the token.
    output = write_kit(staff, home, env, kit_dir, token)
    assert token not in output
    assert (kit_dir / "jupyter_url").read_text() == f"http://localhost:{JUPYTER_PORT}/lab?token={token}\n"
    (home / ".gpu_lab" / LAB / "jupyter_token").unlink()
    ok(run_playbook(str(staff), env, home, {"kit_dir": kit_dir}))
    assert not (kit_dir / "jupyter_url").exists()
    assert yaml.safe_load((kit_dir / "kit.yml").read_text())["jupyter_token"] == ""


def test_kit_needs_the_pin(tmp_path: Path, staff: Path, env: dict[str, str]) -> None:
    home = tmp_path / "staff_home"
    message = failed(run_playbook(str(staff), env, home, {"kit_dir": tmp_path / "kit", "pin": "false"}))
    assert f"No host key of {LAB} pinned in {home}/.gpu_lab/{LAB}/known_hosts: pin it first" in message
    assert not (tmp_path / "kit").exists()


def test_install_and_remove_a_kit(tmp_path: Path, staff: Path, env: dict[str, str], token: str) -> None:
    kit_dir = tmp_path / "kit"
    write_kit(staff, tmp_path / "staff_home", env, kit_dir, token)
    home = student_home(tmp_path)
    before = tree(home)

    installed = run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml"}, "-v")
    output = ok(installed)
    assert token not in output + installed.stderr

    resolved = ssh_config_of(home / ".ssh" / "config", home)
    assert resolved["hostname"] == [ADDRESS]
    assert resolved["user"] == ["ubuntu"]
    assert resolved["identityfile"] == [f"{home}/.ssh/id_ed25519"]
    assert resolved["userknownhostsfile"] == [f"{home}/.gpu_lab/{LAB}/known_hosts"]
    assert resolved["stricthostkeychecking"] == ["true"]
    assert resolved["localforward"] == [f"[localhost]:{JUPYTER_PORT} [localhost]:{JUPYTER_PORT}"]

    lab_dir = home / ".gpu_lab" / LAB
    assert (lab_dir / "known_hosts").read_text().splitlines() == sorted(f"{LAB},{ADDRESS} {key}" for key in KEYS)
    assert (lab_dir / "jupyter_url").read_text() == f"http://localhost:{JUPYTER_PORT}/lab?token={token}\n"
    assert (lab_dir / "jupyter_token").read_text() == token + "\n"
    assert {p.name: f"{p.stat().st_mode & 0o777:04o}" for p in lab_dir.iterdir()} == dict.fromkeys(
        ["jupyter_token", "jupyter_url", "known_hosts", "ssh_config"], "0600")
    # The student's own key keeps its mode (0600 from ssh-keygen).
    assert tree(home)[".ssh/id_ed25519"] == before[".ssh/id_ed25519"]

    bashrc = (home / ".bashrc").read_text()
    assert f"alias {LAB}-start" not in bashrc and f"alias {LAB}-status" not in bashrc
    assert "ansible-playbook" not in bashrc
    assert f"-o ClearAllForwardings=yes {LAB} sudo systemctl poweroff'" in bashrc
    aliases = bash_aliases(home, str(home / ".bashrc"))
    assert f"IP={ADDRESS}" in aliases
    jupyter = subprocess.run(["bash", "--norc", "-O", "expand_aliases", "-c", f". {home / '.bashrc'}\n{LAB}-jupyter"],
                             capture_output=True, text=True, check=True,
                             env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout
    assert jupyter == f"http://localhost:{JUPYTER_PORT}/lab?token={token}\n"

    again = run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml"}, "-v")
    unchanged(again)
    assert token not in again.stdout + again.stderr

    removed = run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml", "state": "absent"}, "-v")
    ok(removed)
    assert token not in removed.stdout + removed.stderr
    assert tree(home) == before
    unchanged(run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml", "state": "absent"}))


def test_install_needs_the_students_key(tmp_path: Path, staff: Path, env: dict[str, str]) -> None:
    kit_dir = tmp_path / "kit"
    write_kit(staff, tmp_path / "staff_home", env, kit_dir, None)
    home = student_home(tmp_path, key="course_key")
    before = tree(home)

    message = failed(run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml"}))
    assert f"No private key at {home}/.ssh/id_ed25519" in message
    assert "-e key=" in message
    assert tree(home) == before

    ok(run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml", "key": "~/.ssh/course_key"}))
    assert ssh_config_of(home / ".ssh" / "config", home)["identityfile"] == [f"{home}/.ssh/course_key"]
    # No token in the kit: no URL, and the jupyter shortcut says why.
    assert not (home / ".gpu_lab" / LAB / "jupyter_url").exists()
    ok(run_playbook("install_kit", env, home, {"kit": kit_dir / "kit.yml", "key": "~/.ssh/course_key",
                                               "state": "absent"}))
    assert tree(home) == before


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", "No connection kit at {kit}: ask your instructor"),
    ("folder", "{kit} is a folder: pass the kit.yml in it"),
    ("not a kit", "{kit} is not a gpu_lab connection kit"),
    ("other format", "is a gpu_lab connection kit of format 2"),
    ("cut short", "has no valid host_keys"),
    ("not given", "Pass the connection kit your instructor gave you"),
])
def test_bad_kit(tmp_path: Path, env: dict[str, str], case: str, expected: str) -> None:
    home = student_home(tmp_path)
    before = tree(home)
    kit = tmp_path / "kit.yml"
    good = {"gpu_lab_kit": 1, "lab": LAB, "address": ADDRESS, "user": "ubuntu", "jupyter_port": 8888,
            "host_keys": KEYS, "jupyter_token": ""}
    if case == "folder":
        kit = tmp_path
    elif case == "not a kit":
        kit.write_text("Host csdl-ana\n    HostName: 127.0.0.77\n  : [\n")
    elif case == "other format":
        kit.write_text(yaml.safe_dump({**good, "gpu_lab_kit": 2}))
    elif case == "cut short":
        kit.write_text(yaml.safe_dump({**good, "host_keys": []}))
    extra = {} if case == "not given" else {"kit": kit}
    message = failed(run_playbook("install_kit", env, home, extra))
    assert expected.format(kit=kit) in message
    assert tree(home) == before
