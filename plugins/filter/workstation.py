# Copyright: gpu_lab developers
# MIT License
"""Filters for csdl.gpu_lab.workstation: the checks, names and commands the role's YAML uses.

The role's files are written by its module (csdl.gpu_lab.workstation_files); what its tasks
decide before and around that call is here, as plain functions of the role's settings, so the
YAML only passes them on and unit tests reach every sentence.
"""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible_collections.csdl.gpu_lab.plugins.module_utils import workstation as ws
from jinja2.filters import do_int

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*$")
USER_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
KIT_VERSION = 1
KIT_LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
KIT_HOST_KEY = re.compile(r"(?:ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/]+={0,3}\Z")
KIT_TOKEN = re.compile(r"[A-Za-z0-9_.~-]*\Z")
# The collection's playbooks when it is installed: <path>/ansible_collections/<namespace>/<name>.
INSTALLED = re.compile(r"^(.+)/ansible_collections/([^/]+)/([^/]+)/?$")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _port(value: Any) -> bool:
    """A TCP port, as the role's "| int in range(1, 65536)" took it ("8888" and 8888.0 are)."""
    return 0 < do_int(value) < 65536


def _on_this_machine(s: Mapping[str, Any]) -> bool:
    return s.get("host") in LOCAL_HOSTS or s.get("connection") == "local"


def _address_ok(address: Any) -> bool:
    address = _text(address)
    return len(address) > 0 and not re.search(r"\s", address)


def _lab_name_problem(lab: str) -> str:
    return (f"workstation_lab_name '{lab}' names an ssh Host, files and shell aliases: use letters,"
            " digits, '-', '_' and '.' only (e.g. csdl).")


# --- The main entry point's checks -----------------------------------------------------------

def workstation_problems(s: Mapping[str, Any]) -> list[str]:
    """The preflight's sentences. A kit that cannot be used is the one problem reported about
    it: the rest would only follow from it."""
    kit_problem = _kit_problem(s)
    if kit_problem:
        return [kit_problem]
    problems = [_lab_problem(s), _machine_problem(s), _home_problem(s), _server_problem(s), _key_problem(s)]
    return [p for p in problems if p]


def _kit_mode(s: Mapping[str, Any]) -> bool:
    return len(_text(s.get("kit"))) > 0


def _kit_problem(s: Mapping[str, Any]) -> str:
    if not _kit_mode(s):
        return ""
    kit = _text(s.get("kit"))
    if not os.path.isabs(kit):
        return f"workstation_kit must be the absolute path of the kit's kit.yml (got '{kit}')."
    data = s.get("kit_data") or {}
    return _text(data.get("error")) if "error" in data else ""


def _lab_problem(s: Mapping[str, Any]) -> str:
    lab = _text(s.get("lab"))
    if _kit_mode(s) and s.get("pin_only"):
        return "workstation_pin_only pins a lab for its staff, a kit sets it up for its student: set one of them."
    kit_lab = (s.get("kit_data") or {}).get("lab")
    if _kit_mode(s) and lab != kit_lab:
        return (f"The kit {_text(s.get('kit'))} is for the lab '{_text(kit_lab)}', not '{lab}':"
                " leave workstation_lab_name out.")
    if not lab:
        return "Set workstation_lab_name to the lab (e.g. csdl), or workstation_kit to a connection kit."
    if not LAB_NAME.match(lab):
        return _lab_name_problem(lab)
    return ""


def _machine_problem(s: Mapping[str, Any]) -> str:
    if _on_this_machine(s):
        return ""
    return ("csdl.gpu_lab.workstation configures the machine Ansible runs on: run it on localhost with connection"
            f" local (it ran on {_text(s.get('host'))}).")


def _home_problem(s: Mapping[str, Any]) -> str:
    home = _text(s.get("home"))
    return "" if home.startswith("/") else f"workstation_home must be an absolute path (got '{home}'): is HOME set?"


def _server_problem(s: Mapping[str, Any]) -> str:
    if s.get("state") != "present":
        return ""
    if _address_ok(s.get("host_address")) and _port(s.get("local_port")) and _port(s.get("jupyter_port")):
        return ""
    return ("Set workstation_host_address to the lab server's Elastic IP (launch.yml passes it),"
            " and workstation_jupyter_port / workstation_local_port to ports between 1 and 65535.")


def _key_problem(s: Mapping[str, Any]) -> str:
    """No private key where the settings say. A key whose folder is a file (~/.ssh a file) is
    not reported here: the module's look at this machine names that file."""
    key = _text(s.get("key_file"))
    folder = os.path.dirname(key)
    if (s.get("state") != "present" or s.get("pin_only") or os.path.isfile(key)
            or (os.path.exists(folder) and not os.path.isdir(folder))):
        return ""
    if _kit_mode(s):
        return (f"No private key at {key}: the server takes your own SSH key, the one whose public half (.pub)"
                " you gave your instructor. Pass its private half: -e key=~/.ssh/yours (or workstation_key_file).")
    return (f"No private key at {key}: run launch.yml first (it creates the key pair and saves the key"
            " there), or point workstation_key_file at the lab's key.")


# --- tasks_from: kit's checks ---------------------------------------------------------------

def workstation_kit_problems(s: Mapping[str, Any]) -> list[str]:
    """Before the kit's first file: the lab, the machine, the paths, the server, the pin."""
    lab, home, kit_dir = _text(s.get("lab")), _text(s.get("home")), _text(s.get("kit_dir"))
    problems = [
        "" if LAB_NAME.match(lab) else _lab_name_problem(lab),
        "" if _on_this_machine(s) else (
            "A kit is written on the machine Ansible runs on: run tasks_from kit on localhost with connection local"
            f" (it ran on {_text(s.get('host'))})."),
        "" if home.startswith("/") and kit_dir.startswith("/") else (
            f"workstation_home and workstation_kit_dir must be absolute paths (got '{home}' and '{kit_dir}')."),
        "" if (_address_ok(s.get("host_address")) and USER_NAME.match(_text(s.get("host_user")))
               and _port(s.get("jupyter_port"))) else (
            "Set workstation_host_address to the lab server's Elastic IP, workstation_host_user to its login and"
            " workstation_jupyter_port to a port between 1 and 65535."),
        "" if s.get("pins") else (
            f"No host key of {lab} pinned in {_text(s.get('known_hosts'))}:"
            " pin it first (this role with workstation_pin_only: true)."),
    ]
    return [p for p in problems if p]


# --- A connection kit -----------------------------------------------------------------------

def workstation_kit(path: Any) -> dict[str, Any]:
    """A connection kit's kit.yml, read and checked: {} when no kit is given. It never fails: a
    kit that cannot be used gives {"path", "error": "<one sentence>"}, for the preflight to
    report. A good one gives "path", "lab", "class", "student", "address", "user",
    "jupyter_port", "host_keys" and "jupyter_token" (only no_log tasks may show it)."""
    path = _text(path)
    return {"path": path, **read_kit(Path(path))} if path else {}


def read_kit(path: Path) -> dict[str, Any]:
    ask = "ask your instructor for your kit folder and pass its kit.yml: -e kit=/path/to/kit.yml."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"error": f"No connection kit at {path}: {ask}"}
    except IsADirectoryError:
        return {"error": f"{path} is a folder: pass the kit.yml in it (-e kit={path}/kit.yml)."}
    except (OSError, UnicodeDecodeError) as err:
        return {"error": f"Cannot read the connection kit {path} ({err.__class__.__name__}): {ask}"}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or data.get("gpu_lab_kit") is None:
        return {"error": f"{path} is not a gpu_lab connection kit (no 'gpu_lab_kit:' line): {ask}"}
    if data["gpu_lab_kit"] != KIT_VERSION:
        return {"error": f"{path} is a gpu_lab connection kit of format {data['gpu_lab_kit']!r}, and this"
                f" gpu_lab reads format {KIT_VERSION}: update gpu_lab, or ask for a new kit."}
    return _check_kit(path, data)


def _check_kit(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    keys = data.get("host_keys")
    port = data.get("jupyter_port")
    token = data.get("jupyter_token") or ""
    problems = [
        name for name, good in (
            ("lab", isinstance(data.get("lab"), str) and KIT_LAB_NAME.match(data["lab"])),
            ("address", isinstance(data.get("address"), str) and re.fullmatch(r"\S+", data["address"])),
            ("user", isinstance(data.get("user"), str) and re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", data["user"])),
            ("jupyter_port", isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536),
            ("host_keys", isinstance(keys, list) and keys
             and all(isinstance(k, str) and KIT_HOST_KEY.match(k.strip()) for k in keys)),
            ("jupyter_token", isinstance(token, str) and KIT_TOKEN.match(token)),
        ) if not good
    ]
    if problems:
        return {"error": f"The connection kit {path} has no valid {', '.join(problems)}: it was changed or"
                " cut short; ask your instructor for a new one."}
    return {
        "lab": data["lab"],
        "class": str(data.get("class") or ""),
        "student": str(data.get("student") or ""),
        "address": data["address"],
        "user": data["user"],
        "jupyter_port": port,
        "host_keys": [key.strip() for key in keys],
        "jupyter_token": token,
    }


# --- Names, pins and commands ---------------------------------------------------------------

def workstation_pins(known_hosts: Any) -> list[str]:
    """The sorted "type key" pins of a known_hosts file (host field optional, comments
    dropped); [] when there is no such file."""
    return ws.pins_of_lines(ws.file_lines(_text(known_hosts)))


def workstation_known_hosts(pins: list[str], hosts: Any) -> str:
    """known_hosts text: one "<hosts> <pin>" line per pin."""
    return ws.render_known_hosts(list(pins), _text(hosts))


def workstation_ip_variable(lab: Any) -> str:
    """csdl -> CSDL_IP; nlp-2 -> NLP_2_IP; a leading digit gets a "_" so the name stays valid."""
    return ws.ip_variable(_text(lab))


def workstation_aliases(lab: Any, kit: bool = False) -> dict[str, str]:
    """The shell shortcuts' names: ssh-<lab>, <lab>-start/-stop/-status/-jupyter (a kit's
    student has no -start/-status)."""
    return ws.aliases(_text(lab), kit=bool(kit))


def workstation_shortcut_commands(project_dir: Any, run_dir: Any, inventory: Any, ansible_playbook: Any,
                                  collections_paths: list[str] | None = None) -> dict[str, str]:
    """The ansible-playbook commands of <lab>-start, -stop and -status, run in run_dir (the
    aliases cd there). An installed collection's playbooks (<path>/ansible_collections/<ns>/<name>)
    by their FQCN, with <path> first in ANSIBLE_COLLECTIONS_PATH (then this run's collection
    paths), so the name resolves from any directory; a checkout's by absolute path. The
    inventory sources by absolute path (a relative one is taken from run_dir; a host list such
    as "localhost," stays as it is)."""
    project_dir, run_dir = _text(project_dir), _text(run_dir)
    sources = [inventory] if isinstance(inventory, str) else list(inventory or [])
    sources = [s if re.match(r"[/~]|.*,", s) else f"{run_dir}/{s}" for s in map(_text, sources)]
    prefix = shlex.quote(_text(ansible_playbook)) + "".join(f" -i {shlex.quote(s)}" for s in sources)
    installed = INSTALLED.match(project_dir)
    if installed:
        paths = ws.unique([installed.group(1), *map(_text, collections_paths or [])])
        prefix = f"ANSIBLE_COLLECTIONS_PATH={shlex.quote(':'.join(paths))} {prefix}"
        ref = f"{installed.group(2)}.{installed.group(3)}.{{action}}"
    else:
        ref = re.sub(r"/$", "", project_dir) + "/{action}.yml"
    return {action: f"{prefix} {shlex.quote(ref.replace('{action}', action))}"
            for action in ("start", "stop", "status")}


# --- install_kit.yml --------------------------------------------------------------------------

def workstation_user_path(path: Any, cwd: Any) -> str:
    """A path as the user typed it: "~" expanded, a relative one taken from cwd (the shell's
    directory, not the playbook's); "" stays "" (not given)."""
    path = os.path.expanduser(_text(path))
    return path if not path or os.path.isabs(path) else f"{_text(cwd)}/{path}"


def workstation_kit_report(summary: Mapping[str, Any]) -> list[str]:
    """What install_kit.yml says at the end, from workstation_summary: set up (how to connect,
    the local port if it moved, Jupyter, stopping) or removed, then the summary's notes."""
    lab, present = _text(summary.get("lab")), summary.get("state") == "present"
    if not present:
        lines = [f"Lab {lab} is removed from this machine."]
    else:
        lines = [f"Lab {lab} is set up on this machine.",
                 f"Connect: {summary['ssh_command']} (or {summary['aliases']['ssh']} in a new terminal);"
                 f" Jupyter is forwarded to {summary['jupyter_url']}"]
    if summary.get("local_port_changed"):
        lines.append(f"Local port {summary['local_port']}: {summary['local_port_reason']}")
    if present:
        if os.path.isfile(_text(summary.get("jupyter_url_file"))):
            lines.append(f"Jupyter (once connected): {summary['jupyter_alias']}, or open the URL in"
                         f" {summary['jupyter_url_file']}")
        else:
            lines.append("The kit has no Jupyter token: ask your instructor for a new kit once the server is"
                         " configured.")
        lines.append(f"Stop the server when you are done (it is billed while it runs): {summary['aliases']['stop']}")
    lines.append(" ".join(_text(note) for note in summary.get("notes") or []))
    return [line for line in lines if line]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "workstation_problems": workstation_problems,
            "workstation_kit_problems": workstation_kit_problems,
            "workstation_kit": workstation_kit,
            "workstation_pins": workstation_pins,
            "workstation_known_hosts": workstation_known_hosts,
            "workstation_ip_variable": workstation_ip_variable,
            "workstation_aliases": workstation_aliases,
            "workstation_shortcut_commands": workstation_shortcut_commands,
            "workstation_user_path": workstation_user_path,
            "workstation_kit_report": workstation_kit_report,
        }
