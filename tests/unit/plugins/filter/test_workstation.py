"""csdl.gpu_lab.workstation_*: the workstation role's checks, names and commands.

The sentences are the role's own, word for word (tests/integration/test_kit.py and molecule
look for them), in the order the role reports them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.unit.collection import load

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMEqOuptp0gRI9iOdNgj1XtMkP5UcIqaN4"
         "tiHDS5jy2SDSqkLw4aHY8AZsSqqkTbRmFgIErj82z/08zrKbPKhhM=")

LAB_NAME = ("workstation_lab_name 'my lab' names an ssh Host, files and shell aliases: use letters, digits, '-', '_'"
            " and '.' only (e.g. csdl).")
SERVER = ("Set workstation_host_address to the lab server's Elastic IP (launch.yml passes it), and"
          " workstation_jupyter_port / workstation_local_port to ports between 1 and 65535.")


@pytest.fixture(scope="module")
def f() -> ModuleType:
    return load("filter.workstation")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "csdl-server.pem").write_text("not a real key\n")
    return tmp_path


def settings(home: Path, **more: object) -> dict[str, object]:
    """The main entry point's settings of a launched lab where all is well."""
    return {"state": "present", "lab": "csdl", "kit": "", "kit_data": {}, "pin_only": False, "host": "localhost",
            "connection": "local", "home": str(home), "host_address": "54.210.1.2", "local_port": 8888,
            "jupyter_port": "8888", "key_file": f"{home}/.ssh/csdl-server.pem"} | more


def write_kit(path: Path, **more: object) -> Path:
    kit = {"gpu_lab_kit": 1, "lab": "csdl-ana", "class": "csdl", "student": "Ana Silva", "address": "127.0.0.77",
           "user": "ubuntu", "jupyter_port": 28890, "host_keys": [ED25519, ECDSA], "jupyter_token": "tok123"} | more
    path.write_text(yaml.safe_dump(kit))
    return path


# --- workstation_problems (preflight.yml) ------------------------------------------------

def test_a_launched_lab_with_its_key_has_no_problem(f: ModuleType, home: Path) -> None:
    assert f.workstation_problems(settings(home)) == []
    # Removal and pin only need neither the server's settings nor the key.
    assert f.workstation_problems(settings(home, state="absent", host_address="", key_file="/none")) == []
    assert f.workstation_problems(settings(home, pin_only=True, key_file="/none")) == []


def test_every_problem_in_its_order(f: ModuleType) -> None:
    problems = f.workstation_problems({"state": "present", "lab": "my lab", "kit": "", "kit_data": {},
                                       "pin_only": False, "host": "lab-server", "connection": "ssh", "home": "home",
                                       "host_address": "", "local_port": 8888, "jupyter_port": 8888,
                                       "key_file": "/nowhere/csdl-server.pem"})
    assert problems == [
        LAB_NAME,
        "csdl.gpu_lab.workstation configures the machine Ansible runs on: run it on localhost with connection local"
        " (it ran on lab-server).",
        "workstation_home must be an absolute path (got 'home'): is HOME set?",
        SERVER,
        "No private key at /nowhere/csdl-server.pem: run launch.yml first (it creates the key pair and saves the key"
        " there), or point workstation_key_file at the lab's key.",
    ]


def test_an_empty_lab_name(f: ModuleType, home: Path) -> None:
    assert f.workstation_problems(settings(home, lab="", key_file=str(home / ".ssh" / "csdl-server.pem"))) == [
        "Set workstation_lab_name to the lab (e.g. csdl), or workstation_kit to a connection kit."]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_localhost_by_any_name_needs_no_local_connection(f: ModuleType, home: Path, host: str) -> None:
    assert f.workstation_problems(settings(home, host=host, connection="ssh")) == []
    assert f.workstation_problems(settings(home, host="workstation", connection="local")) == []


@pytest.mark.parametrize(("address", "local", "jupyter", "good"), [
    ("54.210.1.2", "8888", 8888.0, True),
    ("54.210.1.2", 1, 65535, True),
    ("54.210.1.2", 0, 8888, False),
    ("54.210.1.2", 8888, 65536, False),
    ("54.210.1.2", "a port", 8888, False),
    ("54.210 .1.2", 8888, 8888, False),
    ("", 8888, 8888, False),
])
def test_the_server_settings(f: ModuleType, home: Path, address: str, local: object, jupyter: object,
                             good: bool) -> None:
    problems = f.workstation_problems(settings(home, host_address=address, local_port=local, jupyter_port=jupyter))
    assert problems == ([] if good else [SERVER])


def test_a_key_whose_folder_is_a_file_is_left_to_the_module(f: ModuleType, tmp_path: Path) -> None:
    (tmp_path / ".ssh").write_text("oops\n")
    assert f.workstation_problems(settings(tmp_path, key_file=f"{tmp_path}/.ssh/csdl-server.pem")) == []
    # A folder where the key must be is no key.
    (tmp_path / "key.pem").mkdir()
    assert f.workstation_problems(settings(tmp_path, key_file=f"{tmp_path}/key.pem"))[0].startswith(
        f"No private key at {tmp_path}/key.pem: run launch.yml first")


def test_a_kit_that_cannot_be_used_is_the_one_problem(f: ModuleType, tmp_path: Path) -> None:
    kit = str(tmp_path / "kit.yml")
    bad = settings(tmp_path, lab="", host="elsewhere", kit=kit, kit_data=f.workstation_kit(kit)) | {"home": "rel"}
    assert f.workstation_problems(bad) == [
        f"No connection kit at {kit}: ask your instructor for your kit folder and pass its kit.yml:"
        " -e kit=/path/to/kit.yml."]
    assert f.workstation_problems(bad | {"kit": "kit.yml"}) == [
        "workstation_kit must be the absolute path of the kit's kit.yml (got 'kit.yml')."]


def test_a_kits_lab_and_key(f: ModuleType, tmp_path: Path) -> None:
    kit = str(write_kit(tmp_path / "kit.yml"))
    data = f.workstation_kit(kit)
    ok = settings(tmp_path, lab="csdl-ana", kit=kit, kit_data=data, key_file=str(tmp_path / "kit.yml"))
    assert f.workstation_problems(ok) == []
    assert f.workstation_problems(ok | {"pin_only": True}) == [
        "workstation_pin_only pins a lab for its staff, a kit sets it up for its student: set one of them."]
    assert f.workstation_problems(ok | {"lab": "csdl"}) == [
        f"The kit {kit} is for the lab 'csdl-ana', not 'csdl': leave workstation_lab_name out."]
    assert f.workstation_problems(ok | {"key_file": "/none/id_ed25519"}) == [
        "No private key at /none/id_ed25519: the server takes your own SSH key, the one whose public half (.pub)"
        " you gave your instructor. Pass its private half: -e key=~/.ssh/yours (or workstation_key_file)."]


# --- workstation_kit_problems (kit_check.yml) -------------------------------------------------

def kit_settings(**more: object) -> dict[str, object]:
    return {"lab": "csdl-ana", "host": "localhost", "connection": "local", "home": "/home/staff",
            "kit_dir": "/home/staff/kits/ana", "host_address": "127.0.0.77", "host_user": "ubuntu",
            "jupyter_port": 28890, "pins": [ED25519], "known_hosts": "/home/staff/.gpu_lab/csdl-ana/known_hosts"} | more


def test_a_pinned_lab_can_have_its_kit(f: ModuleType) -> None:
    assert f.workstation_kit_problems(kit_settings()) == []


def test_every_kit_problem_in_its_order(f: ModuleType) -> None:
    bad = kit_settings(lab="my lab", host="server", connection="ssh", kit_dir="kits/ana", host_user="ubuntu user",
                       pins=[], known_hosts="/home/staff/.gpu_lab/my lab/known_hosts")
    assert f.workstation_kit_problems(bad) == [
        LAB_NAME,
        "A kit is written on the machine Ansible runs on: run tasks_from kit on localhost with connection local"
        " (it ran on server).",
        "workstation_home and workstation_kit_dir must be absolute paths (got '/home/staff' and 'kits/ana').",
        "Set workstation_host_address to the lab server's Elastic IP, workstation_host_user to its login and"
        " workstation_jupyter_port to a port between 1 and 65535.",
        "No host key of my lab pinned in /home/staff/.gpu_lab/my lab/known_hosts: pin it first (this role with"
        " workstation_pin_only: true).",
    ]


@pytest.mark.parametrize("bad", [{"host_address": "127.0.0.77 x"}, {"host_address": ""}, {"jupyter_port": 0},
                                 {"jupyter_port": "port"}, {"host_user": "-ubuntu"}])
def test_the_kits_server_settings(f: ModuleType, bad: dict[str, object]) -> None:
    assert f.workstation_kit_problems(kit_settings(**bad))[0].startswith("Set workstation_host_address")


# --- workstation_kit ---------------------------------------------------------------------

def test_no_kit(f: ModuleType) -> None:
    assert f.workstation_kit("") == {}


def test_a_good_kit(f: ModuleType, tmp_path: Path) -> None:
    kit = write_kit(tmp_path / "kit.yml", host_keys=[f" {ED25519} "], **{"class": None})
    assert f.workstation_kit(str(kit)) == {
        "path": str(kit), "lab": "csdl-ana", "class": "", "student": "Ana Silva", "address": "127.0.0.77",
        "user": "ubuntu", "jupyter_port": 28890, "host_keys": [ED25519], "jupyter_token": "tok123"}


def test_bad_kits(f: ModuleType, tmp_path: Path) -> None:
    ask = "ask your instructor for your kit folder and pass its kit.yml: -e kit=/path/to/kit.yml."
    kit = tmp_path / "kit.yml"
    assert f.workstation_kit(str(kit))["error"] == f"No connection kit at {kit}: {ask}"
    assert f.workstation_kit(str(tmp_path)) == {
        "path": str(tmp_path), "error": f"{tmp_path} is a folder: pass the kit.yml in it (-e kit={tmp_path}/kit.yml)."}
    kit.write_text("Host csdl-ana\n    HostName: 127.0.0.77\n  : [\n")
    assert f.workstation_kit(str(kit))["error"] == (
        f"{kit} is not a gpu_lab connection kit (no 'gpu_lab_kit:' line): {ask}")
    write_kit(kit, gpu_lab_kit=2)
    assert f.workstation_kit(str(kit))["error"] == (
        f"{kit} is a gpu_lab connection kit of format 2, and this gpu_lab reads format 1: update gpu_lab, or ask"
        " for a new kit.")
    write_kit(kit, host_keys=[], jupyter_port=True, jupyter_token="a token")  # noqa: S106 - a bad one
    assert f.workstation_kit(str(kit))["error"] == (
        f"The connection kit {kit} has no valid jupyter_port, host_keys, jupyter_token: it was changed or cut short;"
        " ask your instructor for a new one.")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_kit(f: ModuleType, tmp_path: Path) -> None:
    kit = write_kit(tmp_path / "kit.yml")
    kit.chmod(0)
    assert f.workstation_kit(str(kit))["error"] == (
        f"Cannot read the connection kit {kit} (PermissionError): ask your instructor for your kit folder and pass"
        " its kit.yml: -e kit=/path/to/kit.yml.")


# --- Pins, names, commands ---------------------------------------------------------------

def test_pins_of_a_known_hosts_file(f: ModuleType, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    assert f.workstation_pins(str(known_hosts)) == []
    known_hosts.write_text(f"# pinned\ncsdl,127.0.0.77 {ED25519} root@host\n{ECDSA}\n@revoked * {ED25519}\n"
                           f"127.0.0.77 {ED25519}\nnot a key\n\n")
    assert f.workstation_pins(str(known_hosts)) == [ECDSA, ED25519]
    assert f.workstation_known_hosts([ECDSA, ED25519], "127.0.0.77") == f"127.0.0.77 {ECDSA}\n127.0.0.77 {ED25519}\n"


def test_names(f: ModuleType) -> None:
    assert f.workstation_ip_variable("csdl") == "CSDL_IP"
    assert f.workstation_ip_variable("nlp-2.b") == "NLP_2_B_IP"
    assert f.workstation_ip_variable("2lab") == "_2LAB_IP"
    assert f.workstation_aliases("csdl") == {"ssh": "ssh-csdl", "start": "csdl-start", "stop": "csdl-stop",
                                             "status": "csdl-status", "jupyter": "csdl-jupyter"}
    assert f.workstation_aliases("csdl", kit=True) == {"ssh": "ssh-csdl", "stop": "csdl-stop",
                                                       "jupyter": "csdl-jupyter"}


def test_a_checkouts_commands(f: ModuleType) -> None:
    commands = f.workstation_shortcut_commands("/src/gpu lab/", "/work/run", "inventories/csdl",
                                               "/venv/bin/ansible-playbook", ["/ignored"])
    assert commands == {
        action: f"/venv/bin/ansible-playbook -i /work/run/inventories/csdl '/src/gpu lab/{action}.yml'"
        for action in ("start", "stop", "status")}


def test_an_installed_collections_commands(f: ModuleType) -> None:
    commands = f.workstation_shortcut_commands(
        "/opt/my cols/ansible_collections/csdl/gpu_lab", "/home/me/course",
        ["inventories/csdl", "/abs/hosts.yml", "~/hosts.yml", "localhost,", "a b"], "/venv/bin/ansible-playbook",
        ["/home/me/.ansible/collections", "/opt/my cols", "/usr/share/ansible/collections"])
    prefix = ("ANSIBLE_COLLECTIONS_PATH='/opt/my cols:/home/me/.ansible/collections:/usr/share/ansible/collections'"
              " /venv/bin/ansible-playbook -i /home/me/course/inventories/csdl -i /abs/hosts.yml -i '~/hosts.yml'"
              " -i localhost, -i '/home/me/course/a b'")
    assert commands == {action: f"{prefix} csdl.gpu_lab.{action}" for action in ("start", "stop", "status")}


# --- install_kit.yml ---------------------------------------------------------------------

def test_user_paths(f: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ana")
    assert f.workstation_user_path("", "/cwd") == ""
    assert f.workstation_user_path("kits/kit.yml", "/cwd") == "/cwd/kits/kit.yml"
    assert f.workstation_user_path("/abs/kit.yml", "/cwd") == "/abs/kit.yml"
    assert f.workstation_user_path("~/.ssh/id_ed25519", "/cwd") == "/home/ana/.ssh/id_ed25519"


def present_summary(tmp_path: Path, **more: object) -> dict[str, object]:
    return {"lab": "csdl-ana", "state": "present", "ssh_command": "ssh csdl-ana", "jupyter_url": "http://localhost:8888",
            "jupyter_url_file": str(tmp_path / "jupyter_url"), "jupyter_alias": "csdl-ana-jupyter",
            "local_port": 8888, "local_port_changed": False, "local_port_reason": "",
            "aliases": {"ssh": "ssh-csdl-ana", "stop": "csdl-ana-stop", "jupyter": "csdl-ana-jupyter"},
            "notes": []} | more


def test_the_install_report(f: ModuleType, tmp_path: Path) -> None:
    connect = ("Connect: ssh csdl-ana (or ssh-csdl-ana in a new terminal); Jupyter is forwarded to"
               " http://localhost:8888")
    stop = "Stop the server when you are done (it is billed while it runs): csdl-ana-stop"
    assert f.workstation_kit_report(present_summary(tmp_path)) == [
        "Lab csdl-ana is set up on this machine.", connect,
        "The kit has no Jupyter token: ask your instructor for a new kit once the server is configured.", stop]
    (tmp_path / "jupyter_url").write_text("http://localhost:8889/lab?token=t\n")
    moved = present_summary(tmp_path, local_port=8889, local_port_changed=True, local_port_reason="8888 is taken",
                            notes=["One.", "Two."])
    assert f.workstation_kit_report(moved) == [
        "Lab csdl-ana is set up on this machine.", connect, "Local port 8889: 8888 is taken",
        f"Jupyter (once connected): csdl-ana-jupyter, or open the URL in {tmp_path}/jupyter_url", stop, "One. Two."]


def test_the_removal_report(f: ModuleType) -> None:
    summary = {"lab": "csdl-ana", "state": "absent", "labs_left": [], "removed": ["the pinned host key"]}
    assert f.workstation_kit_report(summary) == ["Lab csdl-ana is removed from this machine."]
