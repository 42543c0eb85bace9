#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""The workstation role's files for one lab, looked at once and written only where they differ."""

from __future__ import annotations

DOCUMENTATION = r"""
module: workstation_files
short_description: Set a gpu_lab lab up on this machine (ssh, pinned host keys, shell shortcuts), or remove it
version_added: 0.4.0
description:
  - The files of the M(csdl.gpu_lab.workstation) role for one lab, in one step, on the machine
    Ansible runs on (the role runs it on localhost, connection local).
  - O(state=present) writes C(~/.gpu_lab/<lab>/ssh_config) (a C(Host <lab>) entry with the
    Jupyter port forward), C(~/.gpu_lab/<lab>/known_hosts) (the pinned host keys), one
    C(Include ~/.gpu_lab/*/ssh_config) block at the top of C(~/.ssh/config), a marked block
    per lab in the shell start-up files (C(<LAB>_IP) and the C(ssh-<lab>), C(<lab>-start),
    C(<lab>-stop), C(<lab>-status) and C(<lab>-jupyter) aliases), the undo record
    C(~/.gpu_lab/workstation_undo), and C(~/.gpu_lab/<lab>/jupyter_url) once the Jupyter token
    is there. It fixes the modes of C(~/.ssh) and of the private key.
  - It first looks at everything - the tunnel's local port (the wanted one, or the next free one,
    kept across re-runs), the host keys (given, or C(ssh-keyscan)), and what stands in the way
    (C(~/.ssh) a file, a start-up file a directory, a file this user may not change). If
    anything stands in the way it fails with one sentence per cause, saying what to do, and
    writes nothing. Then it writes only what differs, so a re-run on an unchanged lab reports
    no change.
  - O(state=absent) removes exactly what the undo record says the role added (the lab's blocks,
    the files it created once empty again, a final newline it added), the lab's folder, and
    with the last lab the Include block and C(~/.gpu_lab). The user's own lines stay.
  - O(pin_only=true) only pins the host keys in C(~/.gpu_lab/<lab>/known_hosts) (a class's staff
    machine); absent, it removes C(~/.gpu_lab/<lab>/).
  - O(jupyter_url_only=true) only writes the Jupyter URL file, from the token jupyter_server keeps
    in C(~/.gpu_lab/<lab>/jupyter_token) and the port the lab's ssh entry forwards.
  - O(shelve_timer=true) also sets up a daily timer that runs the lab's status command (what
    C(<lab>-status) runs), which shelves a lab stopped for its C(gpu_lab_shelve_after_days) days -
    the script C(~/.gpu_lab/<lab>/shelve-check.sh) (0700, with C(HOME) and the AWS settings of
    O(timer_environment) exported, never a secret), and on Linux the systemd user units
    C(~/.config/systemd/user/gpu-lab-<lab>-shelve.service) and C(.timer) (daily, persistent) enabled
    as C(systemctl --user enable) does (a link in C(timers.target.wants/)); on macOS the LaunchAgent
    C(~/Library/LaunchAgents/io.github.csdl.gpu-lab.<lab>.shelve.plist) (daily at noon). The undo
    record names them. In the login home (the passwd entry's) a timer just written is started
    (C(systemctl --user daemon-reload) and C(start), or C(launchctl load -w)), best effort (with no
    user service manager, at the next login). O(shelve_timer=false) removes a lab's timer,
    and so does O(state=absent). Ignored with O(kit) (the summary's notes say so) and O(pin_only).
  - Runs of several labs in one home wait for each other (a lock on the home directory).
  - Supports check mode and diff mode (the Jupyter token is masked in the diff).
author: gpu_lab developers (@csdl)
options:
  lab:
    description: The lab's name; it names the ssh Host, the files under C(~/.gpu_lab/) and the aliases.
    type: str
    required: true
  home:
    description: The home directory every file goes under.
    type: path
    required: true
  state:
    description: Whether the lab is set up on this machine.
    type: str
    choices: [present, absent]
    default: present
  pin_only:
    description: Only the pinned host keys (present), or only the lab's folder (absent).
    type: bool
    default: false
  jupyter_url_only:
    description: Only write C(~/.gpu_lab/<lab>/jupyter_url) when the token and the lab's ssh entry are there.
    type: bool
    default: false
  host_address:
    description: The lab server's address (its Elastic IP). Required when present.
    type: str
    default: ""
  host_user:
    description: The login user on the server.
    type: str
    default: ubuntu
  key_file:
    description: The private key for the server. Its mode becomes C(0400) (a kit's, C(0600) when others may read it).
    type: path
  jupyter_port:
    description: Jupyter's port on the server.
    type: int
    default: 8888
  local_port:
    description: The wanted local port of the tunnel (the next free one is used when it is taken).
    type: int
    default: 8888
  local_port_tries:
    description: How many ports from O(local_port) up to try.
    type: int
    default: 20
  host_keys:
    description:
      - The server's host keys as known_hosts lines (host field optional).
      - Empty, C(ssh-keyscan) asks the server; if it does not answer, the keys pinned before stay.
    type: list
    elements: str
    default: []
  host_keys_from_kit:
    description: The O(host_keys) are a connection kit's (the summary says so).
    type: bool
    default: false
  keyscan_timeout:
    description: Seconds C(ssh-keyscan) waits on each try.
    type: int
    default: 5
  keyscan_retries:
    description: How many times to try C(ssh-keyscan) again.
    type: int
    default: 5
  keyscan_delay:
    description: Seconds between C(ssh-keyscan) tries.
    type: int
    default: 3
  shell_files:
    description: The start-up files for the block. Empty, the existing ones of C(~/.bashrc), C(~/.zshrc) (and
      C(~/.bash_profile) on macOS), plus the login shell's.
    type: list
    elements: path
    default: []
  login_shell:
    description: The login shell (C($SHELL)); empty, the passwd entry's.
    type: str
    default: ""
  kit:
    description: The connection kit being installed (its C(kit.yml)), if any. A kit's student gets no
      C(<lab>-start)/C(<lab>-status), and C(<lab>-stop) shuts the server down over ssh.
    type: str
    default: ""
  kit_token:
    description: The kit's Jupyter token, kept in C(~/.gpu_lab/<lab>/jupyter_token).
    type: str
    default: ""
  commands:
    description: The ansible-playbook commands of the C(start), C(stop) and C(status) aliases.
    type: dict
    default: {}
  run_dir:
    description: The directory the aliases run those commands in.
    type: str
    default: ""
  shelve_timer:
    description:
      - Set up the lab's daily shelve timer (true), or remove it if it is there (false).
      - It runs C(commands.status) in O(run_dir).
    type: bool
    default: false
  timer_environment:
    description:
      - The environment of this run, for the timer's script. Only C(AWS_PROFILE), C(AWS_DEFAULT_PROFILE),
        C(AWS_REGION), C(AWS_DEFAULT_REGION), C(AWS_ENDPOINT_URL), C(AWS_ENDPOINT_URL_*), C(AWS_CONFIG_FILE),
        C(AWS_SHARED_CREDENTIALS_FILE) and C(ANSIBLE_CONFIG) are kept (those set); never a credential.
      - When C(AWS_ACCESS_KEY_ID) is set with no profile and no shared credentials file, the summary
        warns that the timer cannot use them.
      - Not given, the module's own environment (that of ansible-playbook on this machine).
    type: dict
notes:
  - The logic is in C(plugins/module_utils/workstation.py); the look at this machine in
    C(plugins/module_utils/workstation_probe.py).
"""

EXAMPLES = r"""
- name: Check this machine, then write the lab's ssh entry, host keys and shell shortcuts
  csdl.gpu_lab.workstation_files:
    lab: csdl
    home: "{{ lookup('ansible.builtin.env', 'HOME') }}"
    host_address: 54.210.1.2
    key_file: "{{ lookup('ansible.builtin.env', 'HOME') }}/.ssh/csdl-server.pem"
    jupyter_port: 8888
    local_port: 8888
    commands:
      start: ansible-playbook -i inventories/csdl start.yml
      stop: ansible-playbook -i inventories/csdl stop.yml
      status: ansible-playbook -i inventories/csdl status.yml
    run_dir: /home/me/gpu_lab
  register: __workstation_files

- name: Remove the lab from this machine, as the undo record says
  csdl.gpu_lab.workstation_files:
    lab: csdl
    home: "{{ lookup('ansible.builtin.env', 'HOME') }}"
    state: absent
"""

RETURN = r"""
summary:
  description:
    - What the role reports as C(workstation_summary) (never the token). Which keys depend on
      O(state) and O(pin_only) - present, the keys below but RV(summary.labs_left),
      RV(summary.removed), RV(summary.pin_only), RV(summary.ssh_options); absent, RV(summary.lab),
      RV(summary.state), RV(summary.labs_left), RV(summary.removed); pin only, RV(summary.lab),
      RV(summary.state), RV(summary.pin_only), RV(summary.removed) when absent, and when present
      RV(summary.host_address), RV(summary.known_hosts), RV(summary.host_keys), RV(summary.ssh_options).
  returned: unless O(jupyter_url_only)
  type: dict
  sample:
    lab: csdl
    state: present
    local_port: 8889
    local_port_changed: true
    host_keys: given
  contains:
    lab:
      description: The lab's name.
      type: str
      sample: csdl
    state:
      description: C(present) or C(absent).
      type: str
      sample: present
    host_address:
      description: The lab host's address.
      type: str
      sample: 203.0.113.5
    ssh_command:
      description: How to log in through the lab's ssh entry.
      type: str
      sample: ssh csdl
    ssh_command_explicit:
      description: The same without the ssh entry (every option spelled out).
      type: str
      sample: ssh -L localhost:8889:localhost:8888 -i /home/me/.ssh/csdl-server.pem ... ubuntu@203.0.113.5
    jupyter_url:
      description: Where Jupyter answers on this machine (without the token).
      type: str
      sample: http://localhost:8889
    jupyter_url_file:
      description: The file that holds the Jupyter URL with its token.
      type: str
      sample: /home/me/.gpu_lab/csdl/jupyter_url
    jupyter_alias:
      description: The shell shortcut that opens Jupyter.
      type: str
      sample: csdl-jupyter
    local_port:
      description: The local port of the SSH tunnel to Jupyter.
      type: int
      sample: 8889
    jupyter_port:
      description: Jupyter's port on the host.
      type: int
      sample: 8888
    local_port_changed:
      description: Whether the local port is another one than asked for.
      type: bool
      sample: true
    local_port_reason:
      description: Why, empty when it is not.
      type: str
      sample: port 8888 is taken by another lab (csdl-2)
    ip_variable:
      description: The shell variable that holds the lab's address.
      type: str
      sample: CSDL_IP
    aliases:
      description:
        - The shell shortcuts by purpose (C(ssh), C(start), C(stop), C(status), C(jupyter); a kit has no start
          or status).
      type: dict
      sample: {ssh: ssh-csdl, start: csdl-start, stop: csdl-stop, status: csdl-status, jupyter: csdl-jupyter}
    commands:
      description:
        - The ansible-playbook commands the start, stop and status shortcuts run, and C(run_dir); C({}) for
          a kit.
      type: dict
      sample: {run_dir: /home/me/gpu_lab, start: ansible-playbook start.yml}
    kit:
      description: The connection kit's folder, empty when none.
      type: str
      sample: ''
    shell_files:
      description: The shell start-up files given the lab's block.
      type: list
      elements: str
      sample: [/home/me/.bashrc]
    ssh_config:
      description: The lab's ssh entry file.
      type: str
      sample: /home/me/.gpu_lab/csdl/ssh_config
    known_hosts:
      description: The lab's pinned known_hosts file.
      type: str
      sample: /home/me/.gpu_lab/csdl/known_hosts
    host_keys:
      description: Where the pinned host keys came from.
      type: str
      sample: given
    notes:
      description:
        - Sentences about what was found in the way or left as it was; with the timer, the warning that this
          run's AWS credentials are environment variables only (the timer cannot use them).
      type: list
      elements: str
      sample: []
    timer:
      description: With O(state=present) (not O(pin_only)), the lab's daily shelve timer.
      type: dict
      sample:
        enabled: true
        system: systemd
        name: gpu-lab-csdl-shelve.timer
        started: true
      contains:
        enabled:
          description: Whether the timer is set up (O(shelve_timer)).
          type: bool
          sample: true
        system:
          description: C(systemd) (Linux) or C(launchd) (macOS).
          type: str
          sample: systemd
        name:
          description: The systemd timer unit, or the LaunchAgent's label.
          type: str
          sample: gpu-lab-csdl-shelve.timer
        script:
          description: The script the timer runs.
          type: str
          sample: /home/me/.gpu_lab/csdl/shelve-check.sh
        files:
          description: The timer's files (the script, the units and the enabling link, or the LaunchAgent).
          type: list
          elements: str
          sample: [/home/me/.gpu_lab/csdl/shelve-check.sh, /home/me/.config/systemd/user/gpu-lab-csdl-shelve.timer]
        removed:
          description: With the timer off, the files of a timer this run removes.
          type: list
          elements: str
          sample: []
        started:
          description: Whether the timer runs now (started by this run, or found active).
          type: bool
          sample: true
        note:
          description:
            - What the timer does, whether it is started (not in a home other than the login one, nor in check
              mode; with no user service manager, at the next login) and how to remove it; empty when there is
              no timer and none was removed.
          type: str
          sample: "A daily timer (systemd gpu-lab-csdl-shelve.timer) runs csdl-status ..."
        warnings:
          description: The credentials warning of RV(summary.notes), if any.
          type: list
          elements: str
          sample: []
    labs_left:
      description: With O(state=absent), the other labs this machine is still set up for.
      type: list
      elements: str
      sample: [csdl-2]
    removed:
      description: With O(state=absent), what this machine had of the lab, in words.
      type: list
      elements: str
      sample: [the ssh entry (Host csdl) and the shell shortcuts, the pinned host key]
    pin_only:
      description: With O(pin_only), true.
      type: bool
      sample: true
    ssh_options:
      description: With O(pin_only), the ssh options that use the pinned key.
      type: str
      sample: -o UserKnownHostsFile=/home/me/.gpu_lab/csdl/known_hosts -o StrictHostKeyChecking=yes
changes:
  description: What was (or in check mode would be) changed, one line per file or directory.
  returned: always
  type: list
  elements: str
  sample: ["write /home/me/.gpu_lab/csdl/known_hosts", "write /home/me/.bashrc"]
diff:
  description: Before and after of each file changed (diff mode).
  returned: diff mode, when something changes
  type: list
  elements: dict
  sample: [{before_header: /home/me/.bashrc, after_header: /home/me/.bashrc, before: '', after: "# gpu_lab csdl\n"}]
  contains:
    before_header:
      description: The file (and for a directory or mode change, what kind of change).
      type: str
      sample: /home/me/.bashrc
    after_header:
      description: The same.
      type: str
      sample: /home/me/.bashrc
    before:
      description: Its text before (the Jupyter token masked).
      type: str
      sample: ''
    after:
      description: Its text after (the Jupyter token masked).
      type: str
      sample: "# gpu_lab csdl\n"
"""

import fcntl  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.csdl.gpu_lab.plugins.module_utils import workstation as ws  # noqa: E402

ARGUMENT_SPEC = {
    "lab": {"type": "str", "required": True},
    "home": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "pin_only": {"type": "bool", "default": False},
    "jupyter_url_only": {"type": "bool", "default": False},
    "host_address": {"type": "str", "default": ""},
    "host_user": {"type": "str", "default": "ubuntu"},
    "key_file": {"type": "path"},
    "jupyter_port": {"type": "int", "default": 8888},
    "local_port": {"type": "int", "default": 8888},
    "local_port_tries": {"type": "int", "default": 20},
    "host_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},  # public host keys
    "host_keys_from_kit": {"type": "bool", "default": False},
    "keyscan_timeout": {"type": "int", "default": 5},
    "keyscan_retries": {"type": "int", "default": 5, "no_log": False},
    "keyscan_delay": {"type": "int", "default": 3, "no_log": False},
    "shell_files": {"type": "list", "elements": "path", "default": []},
    "login_shell": {"type": "str", "default": ""},
    "kit": {"type": "str", "default": ""},
    "kit_token": {"type": "str", "default": "", "no_log": True},
    "commands": {"type": "dict", "default": {}},
    "run_dir": {"type": "str", "default": ""},
    "shelve_timer": {"type": "bool", "default": False},
    "timer_environment": {"type": "dict"},
}


def wanted(params: dict) -> ws.Wanted:
    names = [name for name in ARGUMENT_SPEC if name not in ("key_file",)]
    return ws.Wanted(**{name: params[name] for name in names}, key_file=params["key_file"] or "")


def plan(w: ws.Wanted) -> ws.Plan:
    if w.jupyter_url_only:
        return ws.plan_jupyter_url(w)
    if w.state == "absent":
        return ws.plan_unpin(w) if w.pin_only else ws.plan_absent(w)
    look = ws.Look(w, scan=not w.host_keys)
    return ws.plan_pin(w, look) if w.pin_only else ws.plan_present(w, look)


@contextmanager
def home_lock(home: str) -> Iterator[None]:
    """Labs set up side by side (one fork each) share the home's ~/.ssh/config, start-up files
    and undo record: one at a time. A lock on the home directory itself adds no file."""
    try:
        handle = os.open(home, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    w = wanted(module.params)
    with home_lock(w.home):
        try:
            result = plan(w)
        except (OSError, ValueError) as err:
            module.fail_json(msg=f"Could not look at this machine's files for the {w.lab} lab: {err}")
        module.no_log_values.update(result.secrets)
        if result.problems:
            module.fail_json(msg=" ".join(result.problems))

        def run(argv: list[str]) -> tuple[int, str, str]:
            program = module.get_bin_path(argv[0])
            if program is None:
                return 127, "", f"{argv[0]} not found"
            return module.run_command([program, *argv[1:]])

        ws.timer_before(result, run, check_mode=module.check_mode)
        if not module.check_mode:
            try:
                ws.apply(result.ops)
            except OSError as err:
                module.fail_json(msg=f"Could not write the {w.lab} lab's files: {err}",
                                 changes=[f"{op.kind} {op.path}" for op in result.ops])
        ws.finish_timer(w, result, run, check_mode=module.check_mode)
    output: dict = {"changed": bool(result.ops), "changes": [f"{op.kind} {op.path}" for op in result.ops]}
    if result.summary is not None:
        output["summary"] = result.summary
    if module._diff and result.ops:
        output["diff"] = [op.diff(result.secrets) for op in result.ops]
    module.exit_json(**output)


if __name__ == "__main__":
    main()
