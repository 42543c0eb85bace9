# Copyright: gpu_lab developers
# MIT License
"""The workstation role's files, as text: what each should hold, and the plan that gets there.

csdl.gpu_lab.workstation_files runs this on the machine it configures. Everything here is
plain Python (no Ansible), so unit tests call it on a throwaway home:

- render_*: the lab's ssh entry, the Include line, the shell block, the pinned known_hosts,
  the undo record and the Jupyter URL, byte for byte as the role has always written them;
- blockinfile(): ansible.builtin.blockinfile's edit of a file's text (its markers, its
  placement, its final-newline rule), so a block already in place is left alone;
- plan_present / plan_absent / plan_pin / plan_unpin / plan_jupyter_url: one look at this
  machine, then either the sentences of what stands in the way (nothing is written) or the
  list of writes (Op) that differ from what is there. apply() carries them out; check mode
  does not call it.

The undo record (~/.gpu_lab/workstation_undo, sorted lines): "block F" (F holds blocks),
"created F" (the role created F), "noeol F" (the role added a newline after F's last line, so
its block starts on a line of its own), "timer F" (a file of a lab's daily shelve timer outside
its folder: a systemd user unit, the link that enables it, a LaunchAgent). Removal puts back
exactly what it says.

The daily shelve timer (shelve_timer): ~/.gpu_lab/<lab>/shelve-check.sh runs the lab's status
command (what <lab>-status runs), which shelves a lab stopped for its gpu_lab_shelve_after_days
days; a systemd user timer (Linux) or a LaunchAgent (macOS) runs it daily. finish_timer() asks
the user's service manager to start it (or stop it before removal), in the login home only.
"""

from __future__ import annotations

import errno
import os
import platform
import plistlib
import pwd
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.module_utils import workstation_probe as probe

MANAGED = "(managed by ansible: csdl.gpu_lab.workstation)"
# Every block the role writes starts with it: removal looks for it.
MARKER_PREFIX = "# BEGIN gpu_lab "
INCLUDE_MARKER = "# {mark} gpu_lab include " + MANAGED
PRIVATE_DIR = {"type": "directory", "mode": "0700"}
KEPT = "kept (the server did not answer ssh-keyscan)"
UNDO_KINDS = re.compile(r"(block|created|noeol|timer) /")


# --- Small helpers that behave as the Jinja filters the role used did ---------------------

def unique(items: list[str]) -> list[str]:
    """Jinja's unique as Ansible calls it: the first of those equal but for case."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return out


def jinja_sort(items: list[str]) -> list[str]:
    """Jinja's sort: case-insensitive, stable."""
    return sorted(items, key=str.lower)


def shell_marker(lab: str) -> str:
    return f"# {{mark}} gpu_lab {lab} {MANAGED}"


def mark(marker: str, which: str) -> str:
    return marker.replace("{mark}", which)


def ip_variable(lab: str) -> str:
    """csdl -> CSDL_IP; nlp-2 -> NLP_2_IP; a leading digit gets a "_" so the name stays valid."""
    name = re.sub(r"^([0-9])", r"_\1", re.sub(r"[^A-Z0-9]", "_", lab.upper()))
    return name + "_IP"


def aliases(lab: str, *, kit: bool) -> dict[str, str]:
    """The shell shortcuts. A kit's student has no AWS credentials: no -start/-status."""
    names = {"ssh": f"ssh-{lab}", "start": f"{lab}-start", "stop": f"{lab}-stop",
             "status": f"{lab}-status", "jupyter": f"{lab}-jupyter"}
    return {k: v for k, v in names.items() if not (kit and k in ("start", "status"))}


def pins_of_lines(lines: list[str]) -> list[str]:
    """known_hosts lines (host field optional, comments dropped) -> sorted "type key" pins."""
    pins = []
    for line in lines:
        line = line.strip()
        if re.match(r"#|@|$", line):
            continue
        line = re.sub(r"^(?!ssh-|ecdsa-|sk-)\S+\s+", "", line)
        line = re.sub(r"^(\S+)\s+(\S+).*$", r"\1 \2", line)
        if re.match(r"(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/]+={0,3}$", line):
            pins.append(line)
    return jinja_sort(unique(pins))


def ssh_arg(value: str) -> str:
    return f'"{value}"' if re.search(r"\s", value) else value


# --- What the files hold --------------------------------------------------------------------

@dataclass
class Wanted:
    """The lab as the role's variables describe it (the module's options)."""

    lab: str
    home: str
    state: str = "present"
    pin_only: bool = False
    jupyter_url_only: bool = False
    host_address: str = ""
    host_user: str = "ubuntu"
    key_file: str = ""
    jupyter_port: int = 8888
    local_port: int = 8888
    local_port_tries: int = 20
    host_keys: list[str] = field(default_factory=list)
    host_keys_from_kit: bool = False
    keyscan_timeout: int = 5
    keyscan_retries: int = 5
    keyscan_delay: int = 3
    shell_files: list[str] = field(default_factory=list)
    login_shell: str = ""
    kit: str = ""
    kit_token: str = ""
    commands: dict[str, str] = field(default_factory=dict)
    run_dir: str = ""
    shelve_timer: bool = False
    timer_environment: dict[str, Any] | None = None

    @property
    def environment(self) -> dict[str, Any]:
        """This run's environment: the one given, else this process's."""
        return dict(os.environ) if self.timer_environment is None else dict(self.timer_environment)

    @property
    def ssh_dir(self) -> str:
        return f"{self.home}/.ssh"

    @property
    def ssh_config(self) -> str:
        return f"{self.home}/.ssh/config"

    @property
    def gpu_lab_dir(self) -> str:
        return f"{self.home}/.gpu_lab"

    @property
    def lab_dir(self) -> str:
        return f"{self.gpu_lab_dir}/{self.lab}"

    @property
    def lab_ssh_config(self) -> str:
        return f"{self.lab_dir}/ssh_config"

    @property
    def known_hosts(self) -> str:
        return f"{self.lab_dir}/known_hosts"

    @property
    def token_file(self) -> str:
        return f"{self.lab_dir}/jupyter_token"

    @property
    def url_file(self) -> str:
        return f"{self.lab_dir}/jupyter_url"

    @property
    def undo_file(self) -> str:
        return f"{self.gpu_lab_dir}/workstation_undo"

    @property
    def shell_candidates_all(self) -> list[str]:
        """Every start-up file the role may have written to (all are cleaned on removal)."""
        return [f"{self.home}/.bashrc", f"{self.home}/.bash_profile", f"{self.home}/.zshrc"]


@dataclass
class Refs:
    """How the files name this home: "~" when it is the account's home (ssh expands "~" from
    the passwd entry, not $HOME), else absolute paths, and ssh-<lab> passes -F."""

    home_ref: str
    ssh_program: str

    @classmethod
    def of(cls, w: Wanted, account_home: str) -> Refs:
        own = os.path.realpath(w.home) == os.path.realpath(account_home)
        return cls("~" if own else w.home, "ssh" if own else "ssh -F " + shlex.quote(w.ssh_config))

    def key_ref(self, w: Wanted) -> str:
        prefix = w.home + "/"
        return self.home_ref + "/" + w.key_file[len(prefix):] if w.key_file.startswith(prefix) else w.key_file


def render_ssh_entry(w: Wanted, refs: Refs, port: int) -> str:
    return (
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        f"# The {w.lab} lab's GPU server. `ssh {w.lab}` logs in and forwards\n"
        f"# its Jupyter to http://localhost:{port} on this machine.\n"
        f"Host {w.lab}\n"
        f"    HostName {w.host_address}\n"
        f"    User {w.host_user}\n"
        f"    IdentityFile {ssh_arg(refs.key_ref(w))}\n"
        "    IdentitiesOnly yes\n"
        f"    LocalForward localhost:{port} localhost:{w.jupyter_port}\n"
        "    ServerAliveInterval 30\n"
        f"    UserKnownHostsFile {ssh_arg(refs.home_ref + '/.gpu_lab/' + w.lab + '/known_hosts')}\n"
        "    StrictHostKeyChecking yes\n"
        f"    HostKeyAlias {w.lab}\n"
    )


def render_include_line(refs: Refs) -> str:
    path = refs.home_ref + "/.gpu_lab/*/ssh_config"
    return "Include " + ssh_arg(path)


def render_shell_block(w: Wanted, refs: Refs, port: int, system: str) -> str:
    """The lab's variable and aliases. The Jupyter URL is made when the alias runs, from the
    token file jupyter_server (or the kit) keeps: the token may come after this block (a
    first launch) or change (a rotated token), and it never sits in a start-up file."""
    names = aliases(w.lab, kit=bool(w.kit))
    lines = [f"export {ip_variable(w.lab)}={shlex.quote(w.host_address)}",
             f"alias {names['ssh']}={shlex.quote(refs.ssh_program + ' ' + w.lab)}"]
    if w.kit:
        poweroff = f"{refs.ssh_program} -o ClearAllForwardings=yes {w.lab} sudo systemctl poweroff"
        lines.append(f"alias {names['stop']}={shlex.quote(poweroff)}")
    else:
        for action in ("start", "stop", "status"):
            command = f"(cd {shlex.quote(w.run_dir)} && {w.commands.get(action, '')})"
            lines.append(f"alias {names[action]}={shlex.quote(command)}")
    if system == "Darwin":
        opener = 'if command -v open >/dev/null 2>&1; then open "$u"; fi'
    else:
        opener = ('if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && command -v xdg-open >/dev/null 2>&1;'
                  ' then xdg-open "$u" >/dev/null 2>&1 & fi')
    missing = "the connection kit had none: install a newer kit" if w.kit else "launch the lab (launch.yml)"
    jupyter = (f'(f={shlex.quote(w.token_file)}; t=$(cat "$f" 2>/dev/null); if [ -z "$t" ]; then echo "no Jupyter'
               f' token in $f yet: {missing}" >&2; exit 1; fi; u="http://localhost:{port}/lab?token=$t"; echo "$u";'
               f" {opener})")
    lines.append(f"alias {names['jupyter']}={shlex.quote(jupyter)}")
    return "\n".join(lines) + "\n"


def render_known_hosts(pins: list[str], hosts: str) -> str:
    return "\n".join(f"{hosts} {pin}" for pin in pins) + "\n"


def render_url(port: int | str, token: str) -> str:
    return f"http://localhost:{port}/lab?token={token}\n"


def render_undo(old: list[str], new: list[str]) -> str:
    return "\n".join(jinja_sort(unique(old + new))) + "\n"


# --- The daily shelve timer (shelve_timer) ---------------------------------------------------

# The environment the timer's script keeps of this run: where AWS is and which profile, never a
# secret (a credential in a file a timer reads every day would outlive the session it came from).
TIMER_ENV = re.compile(r"(AWS_(PROFILE|DEFAULT_PROFILE|REGION|DEFAULT_REGION|CONFIG_FILE|SHARED_CREDENTIALS_FILE"
                       r"|ENDPOINT_URL(_[A-Z0-9_]+)?)|ANSIBLE_CONFIG)\Z")
TIMER_LAUNCHD_HOUR = 12  # a laptop is more often awake at noon; launchd runs a missed one on wake


def timer_environment(env: dict[str, Any]) -> dict[str, str]:
    """The names of TIMER_ENV that are set (not empty) in env, sorted; nothing else."""
    return {name: str(env[name]) for name in sorted(env) if TIMER_ENV.match(name) and env[name] not in (None, "")}


def credentials_only_in_environment(env: dict[str, Any], home: str) -> bool:
    """This run's AWS credentials are environment variables alone: no profile and no credentials
    file the timer could read instead."""
    if not env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE"):
        return False
    shared = str(env.get("AWS_SHARED_CREDENTIALS_FILE") or f"{home}/.aws/credentials")
    return not os.path.isfile(os.path.expanduser(shared))


def systemd_quote(value: str) -> str:
    """One word of a unit file's ExecStart: "%" and "$" escaped, quoted when it holds a space."""
    value = value.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@dataclass
class TimerFiles:
    """Where the timer of a lab lives: its script in the lab's folder (removed with it), and on
    Linux the systemd user units and the link `systemctl --user enable` makes; on macOS a
    LaunchAgent."""

    lab: str
    home: str
    system: str

    @property
    def darwin(self) -> bool:
        return self.system == "Darwin"

    @property
    def script(self) -> str:
        return f"{self.home}/.gpu_lab/{self.lab}/shelve-check.sh"

    @property
    def log(self) -> str:
        return f"{self.home}/.gpu_lab/{self.lab}/shelve-check.log"

    @property
    def unit_dir(self) -> str:
        return f"{self.home}/.config/systemd/user"

    @property
    def timer_name(self) -> str:
        return f"gpu-lab-{self.lab}-shelve.timer"

    @property
    def service(self) -> str:
        return f"{self.unit_dir}/gpu-lab-{self.lab}-shelve.service"

    @property
    def timer(self) -> str:
        return f"{self.unit_dir}/{self.timer_name}"

    @property
    def link(self) -> str:
        return f"{self.unit_dir}/timers.target.wants/{self.timer_name}"

    @property
    def label(self) -> str:
        return f"io.github.csdl.gpu-lab.{self.lab}.shelve"

    @property
    def plist(self) -> str:
        return f"{self.home}/Library/LaunchAgents/{self.label}.plist"

    @property
    def name(self) -> str:
        return self.label if self.darwin else self.timer_name

    @property
    def manager(self) -> str:
        return "launchd" if self.darwin else "systemd"

    @property
    def folders(self) -> list[str]:
        """The folders the timer's files need, parents first (the lab's folder is the role's own)."""
        if self.darwin:
            return [f"{self.home}/Library", f"{self.home}/Library/LaunchAgents"]
        return [f"{self.home}/.config", f"{self.home}/.config/systemd", self.unit_dir,
                f"{self.unit_dir}/timers.target.wants"]

    @property
    def installed(self) -> list[str]:
        """The files outside the lab's folder, as the undo record names them ("timer F")."""
        return [self.plist] if self.darwin else [self.service, self.timer, self.link]

    @property
    def files(self) -> list[str]:
        return [self.script, *self.installed]

    def every_installed(self) -> list[str]:
        """This lab's timer files of either system (a home shared by both, or a record from the other)."""
        return unique(TimerFiles(self.lab, self.home, "Linux").installed
                      + TimerFiles(self.lab, self.home, "Darwin").installed)

    def output(self) -> str:
        return self.log if self.darwin else f"journalctl --user -u gpu-lab-{self.lab}-shelve.service"


def render_shelve_script(w: Wanted, files: TimerFiles, env: dict[str, str]) -> str:
    """The lab's status command, where its alias runs it, with HOME and the AWS settings (never a
    secret) of the launch. `exec env` runs the command as the alias's subshell does, a leading
    NAME=value (an installed collection's ANSIBLE_COLLECTIONS_PATH) included."""
    alias = aliases(w.lab, kit=False)["status"]
    exports = [f"export {name}={shlex.quote(value)}" for name, value in {**env, "HOME": w.home}.items()]
    return "\n".join([
        "#!/bin/sh",
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.",
        f"# The {w.lab} lab's daily shelve check ({files.manager}: {files.name}): what {alias} runs. The lab's",
        "# status shelves it once it has been stopped for its gpu_lab_shelve_after_days days. No AWS",
        "# secret here: the credentials come from the profile or the shared credentials file.",
        *exports,
        f"cd {shlex.quote(w.run_dir)} && exec env {w.commands.get('status', '')}",
    ]) + "\n"


def render_shelve_service(w: Wanted, files: TimerFiles) -> str:
    return (
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        "[Unit]\n"
        f"Description=gpu_lab: shelve the {w.lab} lab if it has been stopped too long (its status)\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart=/bin/sh {systemd_quote(files.script)}\n"
    )


def render_shelve_timer(w: Wanted) -> str:
    return (
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        "[Unit]\n"
        f"Description=gpu_lab: the {w.lab} lab's daily shelve check\n"
        "\n"
        "[Timer]\n"
        "OnCalendar=daily\n"
        "Persistent=true\n"
        "RandomizedDelaySec=1h\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def render_shelve_plist(files: TimerFiles) -> str:
    agent = {
        "Label": files.label,
        "ProgramArguments": ["/bin/sh", files.script],
        "StartCalendarInterval": {"Hour": TIMER_LAUNCHD_HOUR, "Minute": 0},
        "StandardOutPath": files.log,
        "StandardErrorPath": files.log,
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=True).decode("utf-8")


def timer_commands(files: TimerFiles, *, on: bool, changed: bool) -> tuple[list[list[str]], list[list[str]]]:
    """What to ask this user's service manager before the writes and after them: start a timer
    just written (a LaunchAgent that was there is unloaded first, to load the new one), stop
    one about to go. Nothing when nothing of it changes."""
    if not changed:
        return [], []
    if files.darwin:
        before = [["launchctl", "unload", files.plist]] if os.path.lexists(files.plist) else []
        return before, [["launchctl", "load", "-w", files.plist]] if on else []
    if on:
        return [], [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "start", files.timer_name]]
    return [["systemctl", "--user", "stop", files.timer_name]], [["systemctl", "--user", "daemon-reload"]]


def timer_query(files: TimerFiles) -> list[str]:
    """The read-only question whether the timer runs now (exit 0 and "active", or launchd knows it)."""
    if files.darwin:
        return ["launchctl", "list", files.label]
    return ["systemctl", "--user", "is-active", files.timer_name]


def timer_answer(files: TimerFiles, rc: int, out: str) -> bool:
    return rc == 0 and (files.darwin or out.strip() == "active")


def timer_note(w: Wanted, files: TimerFiles, timer: dict[str, Any], outcome: str, detail: str = "") -> str:
    """What the summary says of the timer (timer: its summary). outcome: sandbox (not the login
    home), started, active, inactive, failed (detail: the manager's answer), check (check mode),
    "" (nothing to say of its state)."""
    if not timer["enabled"]:
        if not timer["removed"]:
            return ""
        gone = f"The daily shelve timer ({timer['system']} {timer['name']}) is removed"
        return gone + (f" from {w.home}." if outcome == "sandbox" else ".")
    alias = aliases(w.lab, kit=False)["status"]
    what = (f"A daily timer ({timer['system']} {timer['name']}) runs {alias} (status.yml, in {w.run_dir}), which"
            " shelves the lab once it has been stopped for its gpu_lab_shelve_after_days days (without that"
            f" setting it only looks). Script: {files.script}; output: {files.output()}.")
    state = {
        "sandbox": f"It is written in {w.home}, not your login home: not started.",
        "started": "It is started.",
        "active": "It is active.",
        "inactive": ("It is not active now: it starts at your next login"
                     + ("." if files.darwin else f" (or now: systemctl --user start {files.timer_name}).")),
        "failed": f"No user service manager answered ({detail}): it starts at your next login.",
        "check": "Check mode: not started.",
    }.get(outcome, "")
    remove = "Remove it: launch.yml without gpu_lab_shelve_timer, or teardown.yml."
    return " ".join(part for part in (what, state, remove) if part)


# --- blockinfile, as text ----------------------------------------------------------------

def blockinfile(original: str | None, marker: str, block: str | None, *, at_top: bool = False) -> str:
    """ansible.builtin.blockinfile's result: block None removes the block; a missing block
    goes at the top (insertbefore: BOF) or the end (the default, insertafter: EOF)."""
    lines = original.splitlines(True) if original else []
    begin, end = mark(marker, "BEGIN") + "\n", mark(marker, "END") + "\n"
    if block:
        block = block if block.endswith("\n") else block + "\n"
        new = [begin, *block.splitlines(True), end]
    else:
        new = []
    n0 = n1 = None
    for i, line in enumerate(lines):
        if line == begin:
            n0 = i
        if line == end:
            n1 = i
    if n0 is None or n1 is None:
        n0 = 0 if at_top else len(lines)
    elif n0 < n1:
        del lines[n0:n1 + 1]
    else:
        del lines[n1:n0 + 1]
        n0 = n1
    if n0 > 0 and not lines[n0 - 1].endswith("\n"):
        lines[n0 - 1] += "\n"
    lines[n0:n0] = new
    return "".join(lines)


def block_in_place(text: str, marker: str, block: str) -> bool:
    """One BEGIN line, one END line, exactly the block between them: blockinfile would change
    nothing."""
    text = "\n" + text
    begin = "\n" + mark(marker, "BEGIN") + "\n"
    end = mark(marker, "END") + "\n"
    block = block if block.endswith("\n") else block + "\n"
    return text.count(begin) == 1 and text.count("\n" + end) == 1 and (begin + block + end) in text


def stale_lines_note(path: str, text: str, lab: str) -> str:
    """The old tutorial's lines outside the managed blocks (the blocks come later, so they win)."""
    variable, ssh_alias = ip_variable(lab), aliases(lab, kit=False)["ssh"]
    outside = re.sub(r"(?ms)^# BEGIN gpu_lab .*?^# END gpu_lab [^\n]*\n?", "", text)
    stale = r"(?m)^\s*((export\s+)?" + variable + r"=|alias\s+" + re.escape(ssh_alias) + "=)"
    if not re.search(stale, outside):
        return ""
    return (f"{path} also sets {variable} or {ssh_alias} outside the managed block (the old tutorial?):"
            " remove those lines.")


# --- Reading this machine -------------------------------------------------------------------

def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return handle.read()


def file_lines(path: str) -> list[str]:
    """A file's lines as lookup('file') gave them (trailing whitespace stripped), [] if none."""
    return read_text(path).rstrip().splitlines() if os.path.isfile(path) else []


def lstat_mode(path: str) -> tuple[str, str] | None:
    """("file"|"directory"|"other", "0644") of path itself (a link is "other"), None if missing."""
    seen = probe.describe(Path(path))
    return (seen["type"], seen["mode"]) if seen else None


def is_private_dir(path: str) -> bool:
    return lstat_mode(path) == ("directory", "0700")


def same_file(path: str, text: str, mode: str) -> bool:
    """path is a regular file (not a link) with this mode and these bytes."""
    if lstat_mode(path) != ("file", mode):
        return False
    try:
        return read_text(path) == text
    except OSError:
        return False


class Look:
    """One read-only look at this machine: the account, the tunnel's port, the host keys
    (ssh-keyscan, started at once: it waits on the network while the rest is looked at), and
    what stands in the way of each path (probe.Access)."""

    def __init__(self, w: Wanted, *, scan: bool) -> None:
        self.w = w
        self.keyscan = (probe.Keyscan(w.host_address, w.keyscan_timeout, w.keyscan_retries, w.keyscan_delay)
                        if scan else None)
        account = pwd.getpwuid(os.getuid())
        self.user_dir, self.user_shell, self.system = account.pw_dir, account.pw_shell, platform.system()
        self.access = probe.Access()
        self._port: dict[str, Any] | None = None
        self._scan: dict[str, Any] | None = None

    def port(self) -> dict[str, Any]:
        if self._port is None:
            self._port = probe.choose_port(self.w.lab, Path(self.w.gpu_lab_dir), self.w.local_port,
                                           self.w.local_port_tries)
        return self._port

    def scan(self) -> dict[str, Any]:
        if self._scan is None:
            self._scan = self.keyscan.result() if self.keyscan else {"lines": [], "tries": 0, "found": False}
        return self._scan

    def want(self, path: str, kind: str) -> dict[str, str | None]:
        return self.access.wanted(Path(path), kind)


# --- The plan -------------------------------------------------------------------------------

@dataclass
class Op:
    """One write: "dir" (make it, or set its mode, parents made alike), "chmod", "write"
    (mode None keeps the file's own; follow writes through a link), "link" (a symbolic link
    to text), "remove" (a file or link), "rmtree", "rmdir" (only if empty). before/after feed
    --diff."""

    kind: str
    path: str
    text: str = ""
    mode: str | None = None
    follow: bool = False
    before: str = ""

    def diff(self, hide: list[str]) -> dict[str, str]:
        after = "" if self.kind in ("remove", "rmtree", "rmdir") else self.text
        if self.kind in ("dir", "chmod"):
            before, after = f"{self.before}\n", f"mode {self.mode}\n"
            header = f"{self.path} ({'directory' if self.kind == 'dir' else 'file attributes'})"
        elif self.kind == "link":
            before, after, header = self.before, f"symbolic link to {self.text}\n", self.path
        else:
            before, header = self.before, self.path
            if self.kind in ("rmtree", "rmdir"):
                before, header = f"{self.path}/ (directory)\n", f"{self.path} (directory)"
        for secret in hide:
            before, after = before.replace(secret, "********"), after.replace(secret, "********")
        return {"before_header": header, "after_header": header, "before": before, "after": after}


@dataclass
class TimerRun:
    """The service manager's part of a plan that writes or removes a lab's timer: the commands
    before the writes and after them, in the login home only (own)."""

    files: TimerFiles
    on: bool
    own: bool
    before: list[list[str]] = field(default_factory=list)
    after: list[list[str]] = field(default_factory=list)


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    secrets: list[str] = field(default_factory=list)
    timer_run: TimerRun | None = None

    def write(self, path: str, text: str, mode: str) -> None:
        """A file of the role's (copy: content and mode, the path itself, never a link's target)."""
        if not same_file(path, text, mode):
            before = read_text(path) if os.path.isfile(path) and not os.path.islink(path) else ""
            self.ops.append(Op("write", path, text, mode, before=before))

    def link(self, path: str, target: str) -> None:
        """A symbolic link to target (what is there instead is replaced)."""
        if os.path.islink(path):
            if os.readlink(path) == target:
                return
            before = f"symbolic link to {os.readlink(path)}\n"
        else:
            before = read_text(path) if os.path.isfile(path) else ""
        self.ops.append(Op("link", path, target, before=before))

    def remove(self, path: str) -> None:
        if os.path.lexists(path):
            before = read_text(path) if os.path.isfile(path) and not os.path.islink(path) else ""
            self.ops.append(Op("remove", path, before=before))

    def directory(self, path: str) -> None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            self.ops.append(Op("dir", path, mode="0700", before="absent"))
            return
        if mode != 0o700:
            self.ops.append(Op("dir", path, mode="0700", before=f"mode {mode:04o}"))


def _problems_with_writes(look: Look, changing: list[tuple[str, str]]) -> list[str]:
    return unique([why for path, kind in changing if (why := look.want(path, kind)["write"])])


def keys_problem(w: Wanted, look: Look) -> str:
    if w.host_keys:
        return (f"No usable host key for {w.lab}: workstation_host_keys takes known_hosts lines"
                ' such as "ssh-ed25519 AAAAC3Nza...".')
    return (f"ssh-keyscan got no host key from {w.host_address} ({look.scan()['tries']} tries): check that the server"
            " is running and that its security group lets this machine reach port 22, or pass the keys in"
            " workstation_host_keys.")


def key_lines(w: Wanted, look: Look) -> list[str]:
    """The host key lines to pin: those given; else the scan's; else, when the server did not
    answer, those pinned before."""
    if w.host_keys:
        return w.host_keys
    if look.scan()["found"]:
        return look.scan()["lines"]
    return file_lines(w.known_hosts)


def pins_source(w: Wanted, look: Look) -> str:
    if w.host_keys_from_kit:
        return "from the kit"
    if w.host_keys:
        return "given"
    return "scanned" if look.scan()["found"] else KEPT


def shell_targets(w: Wanted, look: Look) -> list[str]:
    """The start-up files that get the block: those given, else the existing ones among
    ~/.bashrc, ~/.zshrc (and ~/.bash_profile on macOS) plus the login shell's."""
    if w.shell_files:
        return list(w.shell_files)
    shell = os.path.basename(w.login_shell or look.user_shell or "bash")
    darwin = look.system == "Darwin"
    login = w.home + ("/.zshrc" if shell == "zsh" else "/.bash_profile" if darwin else "/.bashrc")
    candidates = [f"{w.home}/.bashrc", f"{w.home}/.zshrc"] + ([f"{w.home}/.bash_profile"] if darwin else [])
    return unique([path for path in candidates if os.path.exists(path)] + [login])


def undo_new(w: Wanted, targets: list[str]) -> list[str]:
    """What removal will undo of this run, frozen before the first write."""
    lines = [f"created {path}" for path in (w.ssh_dir, w.ssh_config) if not os.path.exists(path)]
    for path in targets:
        lines.append(f"block {path}")
        if not os.path.exists(path):
            lines.append(f"created {path}")
            continue
        text = read_text(path)
        if text and not text.endswith("\n") and MARKER_PREFIX not in text:
            lines.append(f"noeol {path}")
    return lines


def current_token(w: Wanted) -> str:
    """The Jupyter token the URL file takes: a kit's (written before the URL), else the one
    jupyter_server keeps here, if any."""
    if w.kit and w.kit_token:
        return w.kit_token
    return read_text(w.token_file).rstrip() if os.path.isfile(w.token_file) else ""


def plan_present(w: Wanted, look: Look) -> Plan:
    """A lab set up in full: ssh entry, pin, Include, shell blocks, undo record, Jupyter URL."""
    plan = Plan(secrets=[s for s in (w.kit_token,) if s])
    port = look.port()
    dirs = [w.ssh_dir, w.gpu_lab_dir, w.lab_dir]
    files = [w.ssh_config, w.key_file, w.undo_file, w.known_hosts, w.lab_ssh_config, w.url_file, w.token_file]
    targets = shell_targets(w, look)
    timer = TimerFiles(w.lab, w.home, look.system)
    timer_on = w.shelve_timer and not w.kit
    timer_dirs, timer_paths = (timer.folders, timer.files) if timer_on else ([], [])
    kinds = {**{p: "file" for p in files + targets + timer_paths}, **{p: "directory" for p in dirs + timer_dirs}}
    # A file in the way comes first: the host keys pinned before are read from a file, and
    # what follows from it would only repeat it.
    in_the_way = unique([why for path in dirs + files + targets + timer_dirs + timer_paths
                         if (why := look.want(path, kinds[path])["problem"])])
    pins = [] if in_the_way else pins_of_lines(key_lines(w, look))
    plan.problems = ([port["error"]] if "error" in port else []) + (
        in_the_way or ([] if pins else [keys_problem(w, look)]))
    if timer_on and not w.commands.get("status"):
        plan.problems.append("The shelve timer runs the lab's status command: pass commands.status (the role does).")
    if plan.problems:
        return plan

    refs = Refs.of(w, look.user_dir)
    local = port["port"]
    block = render_shell_block(w, refs, local, look.system)
    include = render_include_line(refs)
    texts = {path: read_text(path) if os.path.isfile(path) else None for path in [w.ssh_config, *targets]}
    wanted_block = {w.ssh_config: (INCLUDE_MARKER, include), **{p: (shell_marker(w.lab), block) for p in targets}}
    in_place = [p for p, (marker, body) in wanted_block.items()
                if texts[p] is not None and block_in_place(texts[p], marker, body)]
    old_undo, timer_gone = timer_undo(w, timer, on=timer_on)
    undo = render_undo(old_undo, undo_new(w, targets) + (timer_undo_new(timer) if timer_on else []))
    env = w.environment
    timer_texts = render_timer(w, timer, timer_environment(env)) if timer_on else {}
    known_hosts = render_known_hosts(pins, f"{w.lab},{w.host_address}")
    entry = render_ssh_entry(w, refs, local)
    token = current_token(w)
    plan.secrets += [token] if token else []
    url = render_url(local, token)

    # A file or directory this user may not change fails the run only when it would change.
    changing = [(p, "directory") for p in dirs if not is_private_dir(p)]
    changing += [(p, "file") for p, text in ((w.undo_file, undo), (w.known_hosts, known_hosts),
                                             (w.lab_ssh_config, entry)) if not same_file(p, text, "0600")]
    if w.kit and w.kit_token and not same_file(w.token_file, w.kit_token + "\n", "0600"):
        changing.append((w.token_file, "file"))
    if token and not same_file(w.url_file, url, "0600"):
        changing.append((w.url_file, "file"))
    changing += [(p, "file") for p in wanted_block if p not in in_place]
    changing += [(p, "directory") for p in timer_dirs if not os.path.lexists(p)]
    changing += [(p, "file") for p, (text, mode) in timer_texts.items() if not same_file(p, text, mode)]
    if timer_on and not timer.darwin and not timer_link_in_place(timer):
        changing.append((timer.link, "file"))
    changing += [(p, "file") for p in timer_gone if os.path.lexists(p)]
    plan.problems = _problems_with_writes(look, changing)
    if plan.problems:
        return plan

    _lab_folders(plan, w)
    plan.write(w.undo_file, undo, "0600")
    if w.kit and w.kit_token:
        # A kit's token goes where jupyter_server keeps a launched lab's.
        plan.write(w.token_file, w.kit_token + "\n", "0600")
    plan.directory(w.ssh_dir)
    _fix_key_mode(plan, w)
    plan.write(w.known_hosts, known_hosts, "0600")
    plan.write(w.lab_ssh_config, entry, "0600")
    for path, (marker, body) in wanted_block.items():
        if path in in_place:
            continue
        # ssh takes the first value it reads, and an Include after a Host line would belong to it.
        new = blockinfile(texts[path], marker, body, at_top=path == w.ssh_config)
        if new != texts[path]:
            created = "0600" if path == w.ssh_config else "0644"
            plan.ops.append(Op("write", path, new, None if texts[path] is not None else created,
                               follow=True, before=texts[path] or ""))
    if token:
        plan.write(w.url_file, url, "0600")
    plan.summary = _present_summary(w, refs, port, pins_source(w, look), targets,
                                    [n for p in targets if texts[p] is not None
                                     if (n := stale_lines_note(p, texts[p], w.lab))])
    _plan_timer(plan, w, timer, timer_texts, timer_gone, own=refs.home_ref == "~")
    if w.shelve_timer and w.kit:
        plan.summary["notes"].append("gpu_lab_shelve_timer is ignored with a connection kit: a kit has no playbooks"
                                     " to run (the class's staff shelve its labs).")
    if timer_on and credentials_only_in_environment(env, w.home):
        plan.summary["timer"]["warnings"].append(ENV_CREDENTIALS_WARNING)
        plan.summary["notes"].append(ENV_CREDENTIALS_WARNING)
    return plan


ENV_CREDENTIALS_WARNING = (
    "This run's AWS credentials are only environment variables (AWS_ACCESS_KEY_ID), and the shelve timer keeps no"
    " secret: it cannot use them. Run `aws configure` (it saves them in ~/.aws/credentials, which the timer reads),"
    " or use a profile (AWS_PROFILE) and run launch.yml again.")


def render_timer(w: Wanted, timer: TimerFiles, env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The timer's files with their text and mode (the enabling link aside)."""
    texts = {timer.script: (render_shelve_script(w, timer, env), "0700")}
    if timer.darwin:
        texts[timer.plist] = (render_shelve_plist(timer), "0644")
    else:
        texts[timer.service] = (render_shelve_service(w, timer), "0644")
        texts[timer.timer] = (render_shelve_timer(w), "0644")
    return texts


def timer_link_in_place(timer: TimerFiles) -> bool:
    return os.path.islink(timer.link) and os.readlink(timer.link) == timer.timer


def timer_undo(w: Wanted, timer: TimerFiles, *, on: bool) -> tuple[list[str], list[str]]:
    """The undo record's lines to keep, and the timer files to remove: with the timer off, every
    file of this lab's timer there is (the record's, and those of either system), and its lines."""
    old = file_lines(w.undo_file)
    if on:
        return old, []
    mine = timer.every_installed()
    recorded = [line[len("timer "):] for line in old if line.startswith("timer ")]
    gone = unique([timer.script, timer.log, *mine, *[p for p in recorded if p in mine]])
    return [line for line in old if not (line.startswith("timer ") and line[len("timer "):] in mine)], gone


def timer_undo_new(timer: TimerFiles) -> list[str]:
    """The folders the timer creates, and its files outside the lab's folder."""
    return [f"created {d}" for d in timer.folders if not os.path.lexists(d)] + [f"timer {p}" for p in timer.installed]


def _plan_timer(plan: Plan, w: Wanted, timer: TimerFiles, texts: dict[str, tuple[str, str]], gone: list[str], *,
                own: bool) -> None:
    """The timer's writes (on) or removals (off), the service manager's part, and its summary."""
    on = bool(texts)
    start = len(plan.ops)
    if on:
        for folder in timer.folders:
            if not os.path.lexists(folder):
                plan.ops.append(Op("dir", folder, mode="0700", before="absent"))
        for path, (text, mode) in texts.items():
            plan.write(path, text, mode)
        if not timer.darwin:
            plan.link(timer.link, timer.timer)
    removed = [p for p in gone if os.path.lexists(p)]
    for path in removed:
        plan.remove(path)
    touched = {op.path for op in plan.ops[start:]}
    changed = bool(touched & set(timer.installed if on else timer.every_installed()))
    before, after = timer_commands(timer, on=on, changed=changed)
    plan.timer_run = TimerRun(timer, on, own, before, after)
    summary = plan.summary if plan.summary is not None else {}
    plan.summary = summary
    summary["timer"] = {
        "enabled": on, "system": timer.manager, "name": timer.name, "script": timer.script,
        "files": timer.files if on else [], "removed": removed, "started": False, "note": "", "warnings": [],
    }
    plan.summary["timer"]["note"] = timer_note(w, timer, plan.summary["timer"], "" if own else "sandbox")


def _fix_key_mode(plan: Plan, w: Wanted) -> None:
    """The lab's key readable by its owner only (0400). The student's own key (a kit) keeps
    its mode unless ssh would refuse it (group or others may read it): then 0600."""
    seen = lstat_mode(w.key_file)
    if seen and seen[0] == "file" and (seen[1] == "0400" or (w.kit and seen[1][-2:] == "00")):
        return
    mode = "0600" if w.kit else "0400"
    try:
        current = f"{stat.S_IMODE(os.stat(w.key_file).st_mode):04o}"
    except OSError:
        current = "absent"
    if current != mode:
        plan.ops.append(Op("chmod", w.key_file, mode=mode, before=f"mode {current}"))


def _present_summary(w: Wanted, refs: Refs, port: dict[str, Any], source: str, targets: list[str],
                     notes: list[str]) -> dict[str, Any]:
    local = port["port"]
    commands = {} if w.kit else {"run_dir": w.run_dir, **w.commands}
    return {
        "lab": w.lab,
        "state": "present",
        "host_address": w.host_address,
        "ssh_command": f"{refs.ssh_program} {w.lab}",
        "ssh_command_explicit": (f"ssh -L localhost:{local}:localhost:{w.jupyter_port} -i {shlex.quote(w.key_file)}"
                                 f" -o UserKnownHostsFile={shlex.quote(w.known_hosts)} -o HostKeyAlias={w.lab}"
                                 f" {w.host_user}@{w.host_address}"),
        "jupyter_url": f"http://localhost:{local}",
        "jupyter_url_file": w.url_file,
        "jupyter_alias": aliases(w.lab, kit=False)["jupyter"],
        "local_port": int(local),
        "jupyter_port": int(w.jupyter_port),
        "local_port_changed": port["changed"],
        "local_port_reason": port["reason"],
        "ip_variable": ip_variable(w.lab),
        "aliases": aliases(w.lab, kit=bool(w.kit)),
        "commands": commands,
        "kit": w.kit,
        "shell_files": targets,
        "ssh_config": w.lab_ssh_config,
        "known_hosts": w.known_hosts,
        "host_keys": source,
        "notes": notes,
    }


def plan_jupyter_url(w: Wanted) -> Plan:
    """The URL file, once jupyter_server's token is here and the lab's ssh entry forwards a port."""
    plan = Plan()
    token = read_text(w.token_file).rstrip() if os.path.isfile(w.token_file) else ""
    port = probe.forwarded_port(Path(w.lab_ssh_config))
    if token and port is not None:
        plan.secrets.append(token)
        plan.write(w.url_file, render_url(port, token), "0600")
    return plan


def _lab_folders(plan: Plan, w: Wanted) -> None:
    """~/.gpu_lab and the lab's folder in it, at 0700. Missing directories get 0700 too (as
    ansible.builtin.file gives it to every directory it creates), so ~/.gpu_lab is looked at
    only when it exists."""
    if os.path.lexists(w.gpu_lab_dir):
        plan.directory(w.gpu_lab_dir)
    plan.directory(w.lab_dir)


def plan_pin(w: Wanted, look: Look) -> Plan:
    """A staff machine's pin: only ~/.gpu_lab/<lab>/known_hosts."""
    plan = Plan()
    dirs, files = [w.gpu_lab_dir, w.lab_dir], [w.known_hosts]
    in_the_way = unique([why for p, kind in [(d, "directory") for d in dirs] + [(f, "file") for f in files]
                         if (why := look.want(p, kind)["problem"])])
    if in_the_way:
        plan.problems = in_the_way
        return plan
    pins = pins_of_lines(key_lines(w, look))
    if not pins:
        plan.problems = [keys_problem(w, look)]
        return plan
    content = render_known_hosts(pins, f"{w.lab},{w.host_address}")
    changing = [(d, "directory") for d in dirs if not is_private_dir(d)]
    changing += [(w.known_hosts, "file")] if not same_file(w.known_hosts, content, "0600") else []
    plan.problems = _problems_with_writes(look, changing)
    if plan.problems:
        return plan
    _lab_folders(plan, w)
    plan.write(w.known_hosts, content, "0600")
    plan.summary = {
        "lab": w.lab, "state": "present", "pin_only": True, "host_address": w.host_address,
        "known_hosts": w.known_hosts, "host_keys": pins_source(w, look),
        "ssh_options": f"-o UserKnownHostsFile={shlex.quote(w.known_hosts)} -o StrictHostKeyChecking=yes",
    }
    return plan


def what_is_set_up(w: Wanted) -> list[str]:
    """What this machine has of the lab, as the removal's summary says it went."""
    timer = TimerFiles(w.lab, w.home, platform.system())
    return ([f"the ssh entry (Host {w.lab}) and the shell shortcuts"] if os.path.isfile(w.lab_ssh_config) else []) + (
        ["the pinned host key"] if os.path.isfile(w.known_hosts) else []) + (
        ["the daily shelve timer"] if any(os.path.lexists(p) for p in [timer.script, *timer.every_installed()])
        else [])


def plan_unpin(w: Wanted) -> Plan:
    """Removal of a lab this machine only pinned: its folder, and ~/.gpu_lab once empty."""
    plan = Plan(summary={"lab": w.lab, "state": "absent", "pin_only": True, "removed": what_is_set_up(w)})
    if os.path.exists(w.lab_ssh_config):
        plan.problems = [f"The {w.lab} lab is set up on this machine with an ssh entry and shell shortcuts, not only"
                         " pinned: remove it without workstation_pin_only."]
        return plan
    if os.path.lexists(w.lab_dir):
        plan.ops.append(Op("rmtree", w.lab_dir))
    if os.path.isdir(w.gpu_lab_dir) and not [n for n in os.listdir(w.gpu_lab_dir) if n != w.lab]:
        plan.ops.append(Op("rmdir", w.gpu_lab_dir))
    return plan


class Overlay:
    """This machine as the plan so far leaves it: texts written, paths removed."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.gone: set[str] = set()

    def removed(self, path: str) -> bool:
        return any(path == g or path.startswith(g.rstrip("/") + "/") for g in self.gone)

    def exists(self, path: str) -> bool:
        return path in self.texts or (not self.removed(path) and os.path.exists(path))

    def text(self, path: str) -> str:
        return self.texts[path] if path in self.texts else read_text(path)

    def entries(self, folder: str) -> list[str]:
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return [name for name in names if not self.removed(os.path.join(folder, name))]


def labs_with_entry(gpu_lab_dir: str, but: str) -> list[str]:
    """The ssh_config files under ~/.gpu_lab (as ansible.builtin.find, depth 2), but the one
    under the folder being removed."""
    if not os.path.isdir(gpu_lab_dir):
        return []
    found = []
    for name in sorted(os.listdir(gpu_lab_dir)):
        if name.startswith("."):
            continue
        path = os.path.join(gpu_lab_dir, name)
        if name == "ssh_config" and stat.S_ISREG(os.lstat(path).st_mode):
            found.append(path)
        elif os.path.isdir(path) and not os.path.islink(path) and path != but:
            entry = os.path.join(path, "ssh_config")
            if os.path.lexists(entry) and stat.S_ISREG(os.lstat(entry).st_mode):
                found.append(entry)
    return found


def plan_absent(w: Wanted) -> Plan:
    """Removal: every file as it was before the first lab, as the undo record says."""
    plan, now = Plan(), Overlay()
    removed = what_is_set_up(w)
    undo = [line.split(" ", 1) for line in file_lines(w.undo_file) if UNDO_KINDS.match(line)]
    # The lab's timer files go (the record's and those of either system); other labs' stay recorded.
    timer = TimerFiles(w.lab, w.home, platform.system())
    mine = timer.every_installed()
    timer_files = [p for p in unique(mine + [p for kind, p in undo if kind == "timer" and p in mine])
                   if os.path.lexists(p)]
    for path in timer_files:
        plan.remove(path)
        now.gone.add(path)
    others = [[kind, p] for kind, p in undo if kind == "timer" and p not in mine]
    undo = [[kind, p] for kind, p in undo if kind != "timer"]
    if timer_files:
        before, after = timer_commands(timer, on=False, changed=True)
        own = os.path.realpath(w.home) == os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
        plan.timer_run = TimerRun(timer, False, own, before, after)
    shells = unique((w.shell_files or w.shell_candidates_all) + [p for kind, p in undo if kind == "block"])
    for path in [p for p in shells if os.path.exists(p)]:
        _remove_block(plan, now, path, shell_marker(w.lab))
    if os.path.lexists(w.lab_dir):
        plan.ops.append(Op("rmtree", w.lab_dir))
        now.gone.add(w.lab_dir)
    labs_left = labs_with_entry(w.gpu_lab_dir, w.lab_dir)
    last_lab = not labs_left
    if last_lab and os.path.exists(w.ssh_config):
        _remove_block(plan, now, w.ssh_config, INCLUDE_MARKER)
    keep = _undo(plan, now, undo, last_lab=last_lab) + others
    if keep:
        plan.write(w.undo_file, "\n".join(jinja_sort([" ".join(entry) for entry in keep])) + "\n", "0600")
    elif os.path.lexists(w.undo_file):
        plan.ops.append(Op("remove", w.undo_file, before=read_text(w.undo_file)))
        now.gone.add(w.undo_file)
    if last_lab and os.path.isdir(w.gpu_lab_dir) and not now.entries(w.gpu_lab_dir):
        plan.ops.append(Op("rmdir", w.gpu_lab_dir))
    plan.summary = {"lab": w.lab, "state": "absent", "removed": removed,
                    "labs_left": jinja_sort([os.path.basename(os.path.dirname(p)) for p in labs_left])}
    return plan


def _remove_block(plan: Plan, now: Overlay, path: str, marker: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"Path {path} is a directory !")
    before = now.text(path)
    after = blockinfile(before, marker, None, at_top=True)
    if after != before:
        plan.ops.append(Op("write", path, after, None, follow=True, before=before))
        now.texts[path] = after


def _undo(plan: Plan, now: Overlay, undo: list[list[str]], *, last_lab: bool) -> list[list[str]]:
    """Per entry whose file has no gpu_lab block left: take back the final newline the role
    added, remove a file it created that is empty again, and (with the last lab) a directory
    it created, once empty. Returns the entries still to undo later."""
    keep, dirs = [], []
    for kind, path in undo:
        if not now.exists(path):
            continue
        if os.path.isdir(path):
            (dirs if last_lab else keep).append([kind, path])
            continue
        text = now.text(path)
        if MARKER_PREFIX in text:
            keep.append([kind, path])
        elif kind == "noeol" and text.endswith("\n"):
            stripped = re.sub(r"\n$", "", text)
            plan.ops.append(Op("write", path, stripped, None, follow=True, before=text))
            now.texts[path] = stripped
        elif kind == "created" and text == "":
            plan.ops.append(Op("remove", path))
            now.texts.pop(path, None)
            now.gone.add(path)
    # The deepest first: a folder the role created in one it created (~/.config/systemd/user).
    for _kind, path in sorted(dirs, key=lambda entry: -entry[1].count("/")):
        if not now.entries(path):
            plan.ops.append(Op("rmdir", path))
            now.gone.add(path)
    return keep


# --- Carrying the plan out ----------------------------------------------------------------

def apply(ops: list[Op]) -> None:
    for op in ops:
        if op.kind == "dir":
            _make_dir(op.path, int(op.mode or "0700", 8))
        elif op.kind == "chmod":
            os.chmod(op.path, int(op.mode or "0600", 8))
        elif op.kind == "write":
            _write(op)
        elif op.kind == "link":
            _link(op)
        elif op.kind == "remove":
            with _missing_ok():
                os.unlink(op.path)
        elif op.kind == "rmtree":
            if os.path.islink(op.path) or not os.path.isdir(op.path):
                with _missing_ok():
                    os.unlink(op.path)
            else:
                shutil.rmtree(op.path)
        elif op.kind == "rmdir":
            try:
                os.rmdir(op.path)
            except OSError as err:  # another lab's run took it, or put something in it
                if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    raise


class _missing_ok:  # noqa: N801 - reads as a context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, tb: object) -> bool:
        return isinstance(err, FileNotFoundError)


def _make_dir(path: str, mode: int) -> None:
    """As ansible.builtin.file state=directory: missing parents too, each with the mode."""
    missing = []
    here = path
    while not os.path.exists(here):
        missing.append(here)
        here = os.path.dirname(here)
    for folder in reversed(missing):
        with _exists_ok():
            os.mkdir(folder)
        os.chmod(folder, mode)
    if not missing:
        os.chmod(path, mode)


class _exists_ok:  # noqa: N801
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, tb: object) -> bool:
        return isinstance(err, FileExistsError)


def _link(op: Op) -> None:
    """A symbolic link made beside the path, then renamed over what is there."""
    os.makedirs(os.path.dirname(op.path), exist_ok=True)
    temp = f"{op.path}.ansible_tmp_link"
    with _missing_ok():
        os.unlink(temp)
    os.symlink(op.text, temp)
    try:
        os.replace(temp, op.path)
    except BaseException:
        with _missing_ok():
            os.unlink(temp)
        raise


def _write(op: Op) -> None:
    """Written beside the file, then renamed over it (as Ansible's atomic_move). A file that
    exists keeps its mode unless one is given; follow writes a link's target."""
    path = os.path.realpath(op.path) if op.follow else op.path
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        seen: os.stat_result | None = os.stat(path)
    except OSError:
        seen = None
    mode = int(op.mode, 8) if op.mode else stat.S_IMODE(seen.st_mode) if seen else 0o644
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".ansible_tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(op.text.encode("utf-8", errors="surrogateescape"))
        if seen and os.geteuid() == 0:
            os.chown(temp, seen.st_uid, seen.st_gid)  # a user's file stays theirs
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with _missing_ok():
            os.unlink(temp)
        raise


# --- The timer's service manager ------------------------------------------------------------

def timer_before(plan: Plan, run: Callable[[list[str]], tuple[int, str, str]], *, check_mode: bool) -> None:
    """Before the writes: stop (unload) a timer about to go or change. Best effort."""
    timer = plan.timer_run
    if timer and timer.own and not check_mode:
        for argv in timer.before:
            run(argv)


def finish_timer(w: Wanted, plan: Plan, run: Callable[[list[str]], tuple[int, str, str]], *, check_mode: bool) -> None:
    """After the writes: start a timer just written (systemctl --user daemon-reload and start,
    or launchctl load -w), reload after one removed; or, unchanged, ask whether it runs. Only in
    the login home (a sandbox's timer is not this user's), never in check mode (but the
    read-only question). The summary's timer then says what it is."""
    timer = plan.timer_run
    summary = (plan.summary or {}).get("timer")
    if timer is None:
        return
    outcome, detail = "", ""
    if not timer.own:
        outcome = "sandbox"
    elif check_mode and timer.after:
        outcome = "check"
    elif timer.after:
        for argv in timer.after:
            rc, out, err = run(argv)
            if rc != 0 and timer.on:
                first = (err.strip() or out.strip() or f"exit {rc}").splitlines()[0]
                outcome, detail = "failed", f"{' '.join(argv)}: {first}"
                break
        else:
            outcome = "started" if timer.on else ""
    elif timer.on:
        rc, out, _err = run(timer_query(timer.files))
        outcome = "active" if timer_answer(timer.files, rc, out) else "inactive"
    if summary is not None:
        summary["started"] = outcome in ("started", "active")
        summary["note"] = timer_note(w, timer.files, summary, outcome, detail)
