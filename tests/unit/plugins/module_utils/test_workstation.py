"""workstation: the role's files as text and the plan that writes them, on a throwaway home.

One test per case molecule/workstation covers (its prepare.yml's home: a bashrc of the user's,
a zshrc with the old tutorial's lines and no final newline, an ssh config with "Host *"), plus
check mode, re-runs and removal. Each asserts the bytes written, so a change in what the role
writes fails here first.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.collection import load

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCExOI2FZE4+hFhLc3zFu5UDpR8u/YqIgSdNV90ethU"
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMEqOuptp0gRI9iOdNgj1XtMkP5UcIqaN4"
         "tiHDS5jy2SDSqkLw4aHY8AZsSqqkTbRmFgIErj82z/08zrKbPKhhM=")
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEcl6IeNPbEvWwc7CCWAqnToXgLi6BLvVjckqZ7yhz21"
MANAGED = "(managed by ansible: csdl.gpu_lab.workstation)"
BASHRC = "# ~/.bashrc\nHISTCONTROL=ignoreboth\nalias ll='ls -alF'\n"
ZSHRC = ('# my zsh setup\nexport CSDL_IP=54.210.1.2\n'
         'alias ssh-csdl="ssh -L localhost:8888:localhost:8888 -i ~/.ssh/csdl-server.pem ubuntu@$CSDL_IP"\nbindkey -e')
SSH_CONFIG = "# my ssh config\nHost github.com\n    User git\n\nHost *\n    StrictHostKeyChecking no\n"
COMMANDS = {"start": "/venv/bin/ansible-playbook -i /p/inventories/csdl /p/start.yml",
            "stop": "/venv/bin/ansible-playbook -i /p/inventories/csdl /p/stop.yml",
            "status": "/venv/bin/ansible-playbook -i /p/inventories/csdl /p/status.yml"}


@pytest.fixture(scope="module")
def ws() -> ModuleType:
    return load("module_utils.workstation")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def jupyter_port() -> int:
    """A port with nothing on it, and the next three free too (a lab's tunnel moves up)."""
    for _unused in range(50):
        port = free_port()
        if port < 65000 and all(_free(port + n) for n in range(4)):
            return port
    pytest.skip("no four free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def listener() -> Iterator[callable]:
    """listener(port): something listens on 127.0.0.1:port (a local Jupyter) until the test ends."""
    sockets: list[socket.socket] = []

    def listen(port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        sockets.append(sock)

    yield listen
    for sock in sockets:
        sock.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A student's home as molecule's prepare.yml makes it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    write(home / ".bashrc", BASHRC, 0o644)
    write(home / ".zshrc", ZSHRC, 0o600)
    write(home / ".ssh" / "config", SSH_CONFIG, 0o600)
    write(home / ".ssh" / "csdl-server.pem", "not a real key\n", 0o400)
    write(home / ".ssh" / "nlp-2-server.pem", "not a real key either\n", 0o644)
    return home


def write(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def tree(home: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path under home: its type and mode and, for files, its bytes."""
    found = {}
    for path in sorted(home.rglob("*")):
        mode = f"{'d' if path.is_dir() else 'f'}{path.lstat().st_mode & 0o7777:04o}"
        found[str(path.relative_to(home))] = (mode, None if path.is_dir() else path.read_bytes())
    return found


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def lab(ws: ModuleType, home: Path, name: str = "csdl", port: int = 28888, **kwargs: object) -> object:
    settings = {"host_address": "127.0.0.77", "key_file": f"{home}/.ssh/{name}-server.pem", "jupyter_port": port,
                "local_port": port, "host_keys": [f"127.0.0.77 {ED25519} root@csdl-server", ECDSA, "# a comment"],
                "login_shell": "/bin/bash", "commands": COMMANDS, "run_dir": "/p"} | kwargs
    return ws.Wanted(lab=name, home=str(home), **settings)


def run(ws: ModuleType, w: object, *, check: bool = False) -> object:
    """The module's steps: one look, then the plan (applied unless in check mode)."""
    if w.jupyter_url_only:
        plan = ws.plan_jupyter_url(w)
    elif w.state == "absent":
        plan = ws.plan_unpin(w) if w.pin_only else ws.plan_absent(w)
    else:
        look = ws.Look(w, scan=not w.host_keys)
        plan = ws.plan_pin(w, look) if w.pin_only else ws.plan_present(w, look)
    if not plan.problems and not check:
        ws.apply(plan.ops)
    return plan


# --- converge.yml: two labs next to the user's own files ------------------------------------

def test_first_lab_writes_include_pin_entry_and_blocks(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    plan = run(ws, lab(ws, home, port=jupyter_port))
    assert not plan.problems
    gpu_lab = home / ".gpu_lab"
    # One Include at the very top, the rest of ~/.ssh/config exactly as it was.
    assert (home / ".ssh" / "config").read_text() == (
        f"# BEGIN gpu_lab include {MANAGED}\nInclude {home}/.gpu_lab/*/ssh_config\n# END gpu_lab include {MANAGED}\n"
        + SSH_CONFIG)
    assert (gpu_lab / "csdl" / "known_hosts").read_text() == (
        f"csdl,127.0.0.77 {ECDSA}\ncsdl,127.0.0.77 {ED25519}\n")
    assert (gpu_lab / "csdl" / "ssh_config").read_text() == (
        "# Managed by ansible (csdl.gpu_lab.workstation): a later run rewrites this file.\n"
        "# The csdl lab's GPU server. `ssh csdl` logs in and forwards\n"
        f"# its Jupyter to http://localhost:{jupyter_port} on this machine.\n"
        "Host csdl\n    HostName 127.0.0.77\n    User ubuntu\n"
        f"    IdentityFile {home}/.ssh/csdl-server.pem\n    IdentitiesOnly yes\n"
        f"    LocalForward localhost:{jupyter_port} localhost:{jupyter_port}\n    ServerAliveInterval 30\n"
        f"    UserKnownHostsFile {home}/.gpu_lab/csdl/known_hosts\n    StrictHostKeyChecking yes\n"
        "    HostKeyAlias csdl\n")
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith(BASHRC)
    block = bashrc[len(BASHRC):]
    assert block.startswith(f"# BEGIN gpu_lab csdl {MANAGED}\nexport CSDL_IP=127.0.0.77\n"
                            f"alias ssh-csdl='ssh -F {home}/.ssh/config csdl'\n"
                            "alias csdl-start='(cd /p && /venv/bin/ansible-playbook -i /p/inventories/csdl"
                            " /p/start.yml)'\n")
    assert block.endswith(f"# END gpu_lab csdl {MANAGED}\n")
    # ~/.zshrc had no final newline: it gets one, then the same block.
    assert (home / ".zshrc").read_text() == ZSHRC + "\n" + block
    assert (gpu_lab / "workstation_undo").read_text() == (
        f"block {home}/.bashrc\nblock {home}/.zshrc\nnoeol {home}/.zshrc\n")
    # Modes: the user's files keep theirs, the role's are private, the key is tightened.
    lab_dir = gpu_lab / "csdl"
    assert [mode(p) for p in (gpu_lab, lab_dir, lab_dir / "known_hosts", lab_dir / "ssh_config",
                              gpu_lab / "workstation_undo", home / ".ssh" / "config", home / ".bashrc", home / ".zshrc",
                              home / ".ssh" / "csdl-server.pem")] == (
        ["0700", "0700", "0600", "0600", "0600", "0600", "0644", "0600", "0400"])
    summary = plan.summary
    assert summary["shell_files"] == [f"{home}/.bashrc", f"{home}/.zshrc"]
    assert summary["host_keys"] == "given"
    assert summary["ssh_command"] == f"ssh -F {home}/.ssh/config csdl"
    assert summary["aliases"] == {"ssh": "ssh-csdl", "start": "csdl-start", "stop": "csdl-stop",
                                  "status": "csdl-status", "jupyter": "csdl-jupyter"}
    assert summary["commands"] == {"run_dir": "/p", **COMMANDS}


def test_old_tutorial_lines_are_pointed_out(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    notes = run(ws, lab(ws, home, port=jupyter_port)).summary["notes"]
    assert notes == [f"{home}/.zshrc also sets CSDL_IP or ssh-csdl outside the managed block (the old tutorial?):"
                     " remove those lines."]
    assert run(ws, lab(ws, home, "nlp-2", port=jupyter_port)).summary["notes"] == []


def test_a_taken_port_moves_the_tunnel_and_the_next_lab_past_it(ws: ModuleType, home: Path, jupyter_port: int,
                                                                listener: callable) -> None:
    listener(jupyter_port)
    first = run(ws, lab(ws, home, port=jupyter_port)).summary
    assert (first["local_port"], first["local_port_changed"]) == (jupyter_port + 1, True)
    assert "another program" in first["local_port_reason"]
    assert f"LocalForward localhost:{jupyter_port + 1} localhost:{jupyter_port}\n" in (
        home / ".gpu_lab" / "csdl" / "ssh_config").read_text()
    second = run(ws, lab(ws, home, "nlp-2", port=jupyter_port, host_keys=[OTHER])).summary
    assert second["local_port"] == jupyter_port + 2
    assert second["ip_variable"] == "NLP_2_IP"
    # Later, csdl's own port is taken by something else: it moves past it and past nlp-2's,
    # and its Jupyter URL follows; once free again, the port it got stays.
    (home / ".gpu_lab" / "csdl" / "jupyter_token").write_text("tok\n")
    listener(jupyter_port + 1)
    assert run(ws, lab(ws, home, port=jupyter_port)).summary["local_port"] == jupyter_port + 3
    url = (home / ".gpu_lab" / "csdl" / "jupyter_url").read_text()
    assert url == f"http://localhost:{jupyter_port + 3}/lab?token=tok\n"


def test_installed_collection_commands_run_where_the_lab_was_launched(ws: ModuleType, home: Path) -> None:
    inventory = "'/course project/inventories/nlp-2'"
    commands = {action: f"ANSIBLE_COLLECTIONS_PATH=/c /bin/fake -i {inventory} csdl.gpu_lab.{action}"
                for action in ("start", "stop", "status")}
    w = lab(ws, home, "nlp-2", run_dir="/course project", commands=commands)
    block = ws.render_shell_block(w, ws.Refs.of(w, str(home)), 28890, "Linux")
    assert ("alias nlp-2-stop='(cd '\"'\"'/course project'\"'\"' && ANSIBLE_COLLECTIONS_PATH=/c /bin/fake -i "
            "'\"'\"'/course project/inventories/nlp-2'\"'\"' csdl.gpu_lab.stop)'\n") in block
    # The account's own home: "~" in the files, plain ssh in the alias.
    assert "alias ssh-nlp-2='ssh nlp-2'\n" in block
    assert ws.render_include_line(ws.Refs.of(w, str(home))) == "Include ~/.gpu_lab/*/ssh_config"


def test_a_kit_has_no_start_or_status_and_stops_over_ssh(ws: ModuleType, home: Path) -> None:
    w = lab(ws, home, kit="/kits/ana/kit.yml")
    block = ws.render_shell_block(w, ws.Refs.of(w, "/elsewhere"), 28890, "Darwin")
    assert "-start=" not in block and "-status=" not in block
    poweroff = f"ssh -F {home}/.ssh/config -o ClearAllForwardings=yes csdl sudo systemctl poweroff"
    assert f"alias csdl-stop='{poweroff}'\n" in block
    assert "the connection kit had none: install a newer kit" in block
    assert 'then open "$u"; fi' in block


# --- The Jupyter URL: a token there before the role, or after it ---------------------------

def test_jupyter_url_only_where_a_token_is(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    (home / ".gpu_lab" / "nlp-2").mkdir(parents=True, mode=0o700)
    (home / ".gpu_lab" / "nlp-2" / "jupyter_token").write_text("nlp2token\n")
    run(ws, lab(ws, home, port=jupyter_port))
    run(ws, lab(ws, home, "nlp-2", port=jupyter_port, host_keys=[OTHER]))
    url = home / ".gpu_lab" / "nlp-2" / "jupyter_url"
    assert url.read_text() == f"http://localhost:{jupyter_port + 1}/lab?token=nlp2token\n"
    assert mode(url) == "0600"
    csdl_url = home / ".gpu_lab" / "csdl" / "jupyter_url"
    assert not csdl_url.exists()
    # jupyter_server writes csdl's token after the workstation play; the launch's last play
    # writes the URL (tasks_from: jupyter_url), once.
    (home / ".gpu_lab" / "csdl" / "jupyter_token").write_text("csdltoken\n")
    only = ws.Wanted(lab="csdl", home=str(home), jupyter_url_only=True)
    plan = run(ws, only)
    assert [op.kind for op in plan.ops] == ["write"]
    assert plan.ops[0].diff(plan.secrets)["after"] == f"http://localhost:{jupyter_port}/lab?token=********\n"
    assert csdl_url.read_text() == f"http://localhost:{jupyter_port}/lab?token=csdltoken\n"
    assert run(ws, only).ops == []


# --- Re-runs: a new host key, a server that does not answer -------------------------------

def test_relaunch_rewrites_the_pin(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    run(ws, lab(ws, home, port=jupyter_port))
    plan = run(ws, lab(ws, home, port=jupyter_port, host_keys=[f"{OTHER} root@nlp-server"]))
    assert [(op.kind, op.path) for op in plan.ops] == [("write", f"{home}/.gpu_lab/csdl/known_hosts")]
    assert (home / ".gpu_lab" / "csdl" / "known_hosts").read_text() == f"csdl,127.0.0.77 {OTHER}\n"


def test_a_silent_server_keeps_the_pinned_keys(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    run(ws, lab(ws, home, port=jupyter_port, host_keys=[OTHER]))
    silent = lab(ws, home, port=jupyter_port, host_keys=[], keyscan_timeout=1, keyscan_retries=0, keyscan_delay=0)
    plan = run(ws, silent)
    assert plan.summary["host_keys"] == "kept (the server did not answer ssh-keyscan)"
    assert plan.ops == []
    assert (home / ".gpu_lab" / "csdl" / "known_hosts").read_text() == f"csdl,127.0.0.77 {OTHER}\n"


def test_a_new_lab_whose_server_gives_no_key_fails_and_writes_nothing(ws: ModuleType, home: Path) -> None:
    before = tree(home)
    silent = lab(ws, home, "silent", host_address="127.0.0.79", key_file=f"{home}/.ssh/csdl-server.pem", host_keys=[],
                 keyscan_timeout=1, keyscan_retries=1, keyscan_delay=0)
    plan = run(ws, silent)
    assert plan.problems == ["ssh-keyscan got no host key from 127.0.0.79 (2 tries): check that the server is running"
                             " and that its security group lets this machine reach port 22, or pass the keys in"
                             " workstation_host_keys."]
    assert tree(home) == before


def test_given_keys_that_are_no_keys(ws: ModuleType, home: Path) -> None:
    plan = run(ws, lab(ws, home, host_keys=["# only a comment", "not a key"]))
    assert plan.problems == ['No usable host key for csdl: workstation_host_keys takes known_hosts lines such as'
                             ' "ssh-ed25519 AAAAC3Nza...".']


# --- A home with no shell file and no ~/.ssh/config; a file of the user's choice ----------

def test_a_bare_home_gets_the_login_shells_file_and_an_ssh_config(ws: ModuleType, tmp_path: Path) -> None:
    home = tmp_path / "home2"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    write(home / ".ssh" / "csdl-server.pem", "k\n", 0o400)
    pristine = tree(home)
    run(ws, lab(ws, home))
    assert (mode(home / ".bashrc"), mode(home / ".ssh" / "config")) == ("0644", "0600")
    assert not (home / ".zshrc").exists()
    assert "export CSDL_IP=127.0.0.77\n" in (home / ".bashrc").read_text()
    run(ws, lab(ws, home, "ksh", host_address="127.0.0.80", key_file=f"{home}/.ssh/csdl-server.pem",
                host_keys=[OTHER], shell_files=[f"{home}/.kshrc"]))
    assert "export KSH_IP=127.0.0.80\n" in (home / ".kshrc").read_text()
    assert "KSH_IP" not in (home / ".bashrc").read_text()
    assert (home / ".gpu_lab" / "workstation_undo").read_text() == (
        f"block {home}/.bashrc\nblock {home}/.kshrc\ncreated {home}/.bashrc\ncreated {home}/.kshrc\n"
        f"created {home}/.ssh/config\n")
    # Removal, the custom file's lab last: every file the role created goes again.
    run(ws, lab(ws, home, state="absent"))
    assert (home / ".kshrc").exists()
    last = run(ws, lab(ws, home, "ksh", state="absent"))
    assert last.summary == {"lab": "ksh", "state": "absent", "labs_left": [],
                            "removed": ["the ssh entry (Host ksh) and the shell shortcuts", "the pinned host key"]}
    assert tree(home) == pristine


# --- Check mode, idempotence, removal -----------------------------------------------------

def test_check_mode_writes_nothing_and_its_diff_shows_the_change(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    (home / ".ssh" / "csdl-server.pem").chmod(0o640)
    before = tree(home)
    plan = run(ws, lab(ws, home, port=jupyter_port), check=True)
    assert tree(home) == before
    diffs = {op.path: op.diff(plan.secrets) for op in plan.ops}
    assert diffs[f"{home}/.ssh/config"]["before"] == SSH_CONFIG
    assert diffs[f"{home}/.ssh/config"]["after"].endswith(f"# END gpu_lab include {MANAGED}\n" + SSH_CONFIG)
    assert diffs[f"{home}/.gpu_lab/csdl/known_hosts"] == {
        "before_header": f"{home}/.gpu_lab/csdl/known_hosts", "after_header": f"{home}/.gpu_lab/csdl/known_hosts",
        "before": "", "after": f"csdl,127.0.0.77 {ECDSA}\ncsdl,127.0.0.77 {ED25519}\n"}
    assert (diffs[f"{home}/.ssh/csdl-server.pem"]["before"], diffs[f"{home}/.ssh/csdl-server.pem"]["after"]) == (
        "mode 0640\n", "mode 0400\n")
    # What check mode says is what a real run then does.
    assert [(op.kind, op.path) for op in run(ws, lab(ws, home, port=jupyter_port)).ops] == (
        [(op.kind, op.path) for op in plan.ops])


def test_a_second_run_changes_nothing(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    run(ws, lab(ws, home, port=jupyter_port))
    run(ws, lab(ws, home, "nlp-2", port=jupyter_port, host_keys=[OTHER]))
    after = tree(home)
    assert run(ws, lab(ws, home, port=jupyter_port)).ops == []
    assert run(ws, lab(ws, home, "nlp-2", port=jupyter_port, host_keys=[OTHER])).ops == []
    assert tree(home) == after


def test_removal_puts_every_file_back_and_keeps_the_users_lines(ws: ModuleType, home: Path, jupyter_port: int) -> None:
    pristine = tree(home)
    run(ws, lab(ws, home, port=jupyter_port))
    run(ws, lab(ws, home, "nlp-2", port=jupyter_port, host_keys=[OTHER]))
    # The user adds a line of their own after the blocks: it stays.
    with (home / ".bashrc").open("a") as rc:
        rc.write("export EDITOR=vi\n")
    first = run(ws, lab(ws, home, state="absent"))
    assert first.summary == {"lab": "csdl", "state": "absent", "labs_left": ["nlp-2"],
                             "removed": ["the ssh entry (Host csdl) and the shell shortcuts", "the pinned host key"]}
    assert "gpu_lab csdl" not in (home / ".bashrc").read_text()
    assert "gpu_lab include" in (home / ".ssh" / "config").read_text()  # nlp-2 still needs it
    # Check mode of the last removal writes nothing.
    before_last = tree(home)
    assert run(ws, lab(ws, home, "nlp-2", state="absent"), check=True).ops
    assert tree(home) == before_last
    run(ws, lab(ws, home, "nlp-2", state="absent"))
    assert (home / ".bashrc").read_text() == BASHRC + "export EDITOR=vi\n"
    now = tree(home)
    assert now.pop(".bashrc") != pristine.pop(".bashrc")
    # The key tightened to 0400 stays so: ssh would refuse it as it was.
    assert now.pop(".ssh/nlp-2-server.pem")[0] == "f0400" != pristine.pop(".ssh/nlp-2-server.pem")[0]
    assert now == pristine  # the zshrc without its final newline again, ~/.gpu_lab gone
    assert run(ws, lab(ws, home, "nlp-2", state="absent")).ops == []


# --- Things in the way: nothing written, one sentence each -------------------------------

def test_ssh_a_file_is_one_sentence_and_nothing_is_written(ws: ModuleType, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    (home / ".ssh").write_text("not a folder\n")
    before = tree(home)
    plan = run(ws, lab(ws, home))
    ssh = home / ".ssh"
    assert plan.problems == [f"{ssh} is a file, not a directory: move it out of the way (mv {ssh} {ssh}.old)"
                             " and run again."]
    assert tree(home) == before


def test_a_shell_file_that_is_a_directory(ws: ModuleType, home: Path) -> None:
    (home / ".zshrc").unlink()
    (home / ".zshrc").mkdir()
    plan = run(ws, lab(ws, home))
    assert plan.problems == [f"{home}/.zshrc is a directory, not a file: move it out of the way"
                             f" (mv {home}/.zshrc {home}/.zshrc.old) and run again."]
    assert not (home / ".gpu_lab").exists()


# --- Pin only (a staff machine) --------------------------------------------------------------

def test_pin_only_writes_the_pin_and_nothing_else(ws: ModuleType, tmp_path: Path) -> None:
    home = tmp_path / "staff"
    home.mkdir()
    w = ws.Wanted(lab="csdl-ana", home=str(home), pin_only=True, host_address="127.0.0.81", host_keys=[OTHER])
    plan = run(ws, w)
    assert plan.summary == {"lab": "csdl-ana", "state": "present", "pin_only": True, "host_address": "127.0.0.81",
                            "known_hosts": f"{home}/.gpu_lab/csdl-ana/known_hosts", "host_keys": "given",
                            "ssh_options": f"-o UserKnownHostsFile={home}/.gpu_lab/csdl-ana/known_hosts"
                                           " -o StrictHostKeyChecking=yes"}
    assert tree(home) == {".gpu_lab": ("d0700", None), ".gpu_lab/csdl-ana": ("d0700", None),
                          ".gpu_lab/csdl-ana/known_hosts": ("f0600", f"csdl-ana,127.0.0.81 {OTHER}\n".encode())}
    assert run(ws, w).ops == []
    (home / ".gpu_lab" / "csdl-ana" / "jupyter_token").write_text("t\n")
    gone = run(ws, ws.Wanted(lab="csdl-ana", home=str(home), pin_only=True, state="absent"))
    assert gone.summary == {"lab": "csdl-ana", "state": "absent", "pin_only": True, "removed": ["the pinned host key"]}
    assert tree(home) == {}


def test_unpin_refuses_a_lab_set_up_in_full(ws: ModuleType, home: Path) -> None:
    run(ws, lab(ws, home))
    plan = run(ws, ws.Wanted(lab="csdl", home=str(home), pin_only=True, state="absent"))
    assert plan.problems == ["The csdl lab is set up on this machine with an ssh entry and shell shortcuts, not only"
                             " pinned: remove it without workstation_pin_only."]
    assert (home / ".gpu_lab" / "csdl" / "ssh_config").exists()


# --- The pieces ---------------------------------------------------------------------------

def test_blockinfile_places_replaces_and_removes_as_ansible_does(ws: ModuleType) -> None:
    marker = "# {mark} X"
    assert ws.blockinfile(None, marker, "a") == "# BEGIN X\na\n# END X\n"
    assert ws.blockinfile("mine", marker, "a\n") == "mine\n# BEGIN X\na\n# END X\n"
    assert ws.blockinfile("mine\n", marker, "a", at_top=True) == "# BEGIN X\na\n# END X\nmine\n"
    placed = "one\n# BEGIN X\nold\n# END X\ntwo\n"
    assert ws.blockinfile(placed, marker, "new") == "one\n# BEGIN X\nnew\n# END X\ntwo\n"
    assert ws.blockinfile(placed, marker, None, at_top=True) == "one\ntwo\n"
    assert ws.blockinfile("no eol", marker, None, at_top=True) == "no eol"
    assert ws.block_in_place(placed, marker, "old")
    assert not ws.block_in_place(placed + "# BEGIN X\n", marker, "old")
    assert not ws.block_in_place(placed, marker, "new")


def test_pins_of_lines_and_names(ws: ModuleType) -> None:
    assert ws.pins_of_lines([f" 1.2.3.4 {ED25519} root@h ", "@cert-authority * ssh-rsa AAAA", "", ECDSA, ED25519]) == (
        [ECDSA, ED25519])
    assert [ws.ip_variable(name) for name in ("csdl", "nlp-2", "2a.b")] == ["CSDL_IP", "NLP_2_IP", "_2A_B_IP"]
    assert ws.render_undo(["block /b", "created /a"], ["block /b", "Block /B"]) == "block /b\ncreated /a\n"


def test_a_private_key_readable_by_others_is_tightened(ws: ModuleType, home: Path) -> None:
    run(ws, lab(ws, home, "nlp-2", host_keys=[OTHER]))
    assert mode(home / ".ssh" / "nlp-2-server.pem") == "0400"
    kit_key = home / ".ssh" / "id_ed25519"
    write(kit_key, "k\n", 0o640)
    kit = {"key_file": str(kit_key), "kit": "/k/kit.yml", "kit_token": "tok", "host_keys": [OTHER]}
    run(ws, lab(ws, home, "ana", **kit))
    assert mode(kit_key) == "0600"
    assert (home / ".gpu_lab" / "ana" / "jupyter_token").read_text() == "tok\n"
    assert (home / ".gpu_lab" / "ana" / "jupyter_url").read_text().endswith("/lab?token=tok\n")
    os.chmod(kit_key, 0o400)  # a student's own stricter mode stays
    assert run(ws, lab(ws, home, "ana", **kit)).ops == []
