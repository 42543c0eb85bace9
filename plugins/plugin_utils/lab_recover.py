# Copyright: gpu_lab developers
# MIT License
"""step=confirm_recover, recover_key and finish_recover: a lost key file recovered with the
instance and its disk kept (recover_key.yml), the way AWS documents it for a lost key pair.

confirm_recover: reads each lab's key pair (with its public key) and its instance's user data
(one csdl.gpu_lab.lab_key call), decides what the lab needs (plan_of) and the question that
names the stop of a running instance. Nothing is changed.

recover_key: a new key made here (the old file, if any, kept aside), imported as the lab's key
pair (same name: the instance's KeyName stays), the instance stopped (a clean shutdown: its
disk is kept), its user data set to recovery_user_data (a MIME multipart whose cloud-config
runs the user scripts at every boot, and a script that authorizes the new key and removes
the lost one from /home/<user>/.ssh/authorized_keys), then started.

finish_recover: logs in with the new key (ssh), and only then stops the instance, restores
its original user data (AWS changes user data only while an instance is stopped) and starts
it again if it ran before: the lab is left as it was found, with the new key."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import time
from email import message_from_string
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import lab_launch_local
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_lifecycle import call_labs, each_looked_up, looked_up
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import ModuleFailed, Part, Run, failed, ok
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import LabSettings

# The part of the recovery user data that says what it does (cloud-init ignores the type, with
# a line in its log): the new key, the keys it removes and the user data to restore.
RECOVERY_TYPE = "application/x-gpu-lab-key-recovery"
BOUNDARY = "==gpu-lab-key-recovery=="
KEY_LINE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\n\r']*)?$")
RUNNING = ("pending", "running")
LOGIN_TIMEOUT = 10  # seconds per ssh try
# sshd answers already (wait_ssh.yml): cloud-init runs the user scripts within a minute or two.
LOGIN_WAIT = 300


def key_body(public_key: str) -> str:
    """The key itself (an OpenSSH line's second field): a comment does not change it."""
    fields = public_key.split()
    return fields[1] if len(fields) > 1 else public_key.strip()


# --- The recovery user data (pure) ---------------------------------------------------------------

def recovery_script(user: str, new_key: str, remove_keys: list[str]) -> str:
    """The shell script cloud-init runs as root at every boot while the recovery user data is
    set: the same result each time (the lost keys' lines gone, the new key's line once, every
    other authorized key kept), so a boot more or less changes nothing."""
    if not KEY_LINE.match(new_key.strip()):
        raise ValueError(f"not an OpenSSH public key line: {new_key[:40]!r}")
    bodies = [key_body(k) for k in [*remove_keys, new_key] if key_body(k)]
    patterns = " ".join(f"-e {shlex.quote(b)}" for b in dict.fromkeys(bodies))
    home = f"/home/{user}"
    return (
        "#!/bin/sh\n"
        "# gpu_lab (recover_key.yml): authorize the lab's new key for the user and remove the lost one;\n"
        "# every other authorized key stays. The same at every boot until gpu_lab restores the user data.\n"
        "set -eu\n"
        f"user={shlex.quote(user)}\n"
        f"dir={shlex.quote(home + '/.ssh')}\n"
        'file="$dir/authorized_keys"\n'
        f"new={shlex.quote(new_key.strip())}\n"
        'install -d -m 700 -o "$user" -g "$user" "$dir"\n'
        'touch "$file"\n'
        'tmp=$(mktemp "$file.XXXXXX")\n'
        f'grep -v -F {patterns} "$file" > "$tmp" || true\n'
        'printf \'%s\\n\' "$new" >> "$tmp"\n'
        'chown "$user:" "$tmp"\n'
        'chmod 600 "$tmp"\n'
        'mv -f "$tmp" "$file"\n'
    )


def recovery_user_data(user: str, new_key: str, remove_keys: list[str], original: str) -> str:
    """The user data that recovers the key at the next boot (AWS's method for a lost key pair):
    cloud-config ``cloud_final_modules: [[scripts-user, always]]`` (user scripts run at every
    boot, not only the first), the script (recovery_script) and, for gpu_lab itself, what it
    does and the original user data (base64) to restore. The same input gives the same text."""
    document = MIMEMultipart("mixed", boundary=BOUNDARY)
    config = MIMEText("#cloud-config\ncloud_final_modules:\n- [scripts-user, always]\n", "cloud-config", "us-ascii")
    config.add_header("Content-Disposition", "attachment", filename="cloud-config.txt")
    script = MIMEText(recovery_script(user, new_key, remove_keys), "x-shellscript", "us-ascii")
    script.add_header("Content-Disposition", "attachment", filename="gpu-lab-recover-key.sh")
    said = json.dumps({"new_key": new_key.strip(), "remove_keys": [k.strip() for k in remove_keys],
                       "original_user_data": original}, sort_keys=True)
    record = MIMEApplication(said.encode(), "x-gpu-lab-key-recovery")
    record.add_header("Content-Disposition", "attachment", filename="gpu-lab-key-recovery.json")
    for part in (config, script, record):
        document.attach(part)
    return document.as_string()


def recovery_of(user_data: str) -> dict[str, Any] | None:
    """What a recovery user data (base64, as AWS keeps it) says (new_key, remove_keys,
    original_user_data), or None when it is not one."""
    text = decoded(user_data)
    if not text or "multipart" not in text[:200].lower():
        return None
    for part in message_from_string(text).walk():
        if part.get_content_type() == RECOVERY_TYPE:
            try:
                said = json.loads(part.get_payload(decode=True) or b"")
            except ValueError:
                return None
            return said if isinstance(said, dict) else None
    return None


def decoded(user_data: str) -> str:
    """User data (base64) as text ('' when none, or not text)."""
    try:
        return base64.b64decode(user_data or "").decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def first_boot_keys(user_data: str) -> list[str]:
    """The keys a #cloud-config user data authorized at first boot (a class's admin key)."""
    text = decoded(user_data)
    if not text.startswith("#cloud-config"):
        return []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    keys = config.get("ssh_authorized_keys") if isinstance(config, dict) else None
    return [str(k).strip() for k in keys or [] if isinstance(k, str)]


# --- What a lab needs (pure) ---------------------------------------------------------------------

def plan_of(lab: LabSettings, instance: dict[str, Any], key_pair_public: str, local_public: str,
            user_data: str) -> dict[str, Any]:
    """What the recovery does for the lab: ``action`` (none, recover or fail), ``msg``,
    ``new_key`` (a key is made here), ``set_aside`` (the key file to keep aside first),
    ``import_key`` (the key pair is replaced: a lab's own, not a class's student key),
    ``remove_keys`` (the lost keys the host stops accepting), ``original`` (the user data to
    restore, base64) and ``was_running``.

    A lab of its own: its key file must hold the key pair's key. A class lab (the key pair is
    the student's): its key file is the class admin key, which the first boot authorized, and
    it is only recovered when it is missing. A recovery left unfinished (its user data still
    set) is finished with the key file as it is now."""
    name, state = lab.name, instance.get("state", "")
    base = {"action": "none", "msg": "", "new_key": False, "set_aside": "", "import_key": False,
            "remove_keys": [], "original": user_data, "was_running": state in RUNNING,
            "instance_id": instance.get("id", "")}
    if not instance:
        return base | {"action": "fail", "msg": (
            f"Lab {name} has no instance, so there is no disk to keep: launch.yml makes the lab again "
            f"(with -e gpu_lab_rotate_key=true if its key pair {lab.key_name} is left without {lab.key_file}).")}
    if state not in (*RUNNING, "stopping", "stopped"):
        return base | {"action": "fail", "msg": (
            f"Lab {name}'s instance {instance.get('id')} is {state}: run recover_key.yml again once it is "
            "running or stopped.")}
    own = not lab.key_pair_public_key
    missing = not local_public
    mismatch = own and bool(local_public) and key_body(local_public) != key_body(key_pair_public)
    unfinished = recovery_of(user_data)
    if not (missing or mismatch or unfinished):
        return base | {"msg": f"Lab {name}: {lab.key_file} is the key of key pair {lab.key_name}; nothing to "
                              "recover."}
    if unfinished:
        remove = list(unfinished.get("remove_keys") or [])
        original = str(unfinished.get("original_user_data") or "")
    else:
        remove, original = [], user_data
    if own and key_pair_public:
        remove.append(key_pair_public)
    if not own:
        remove += first_boot_keys(original)
    if local_public and not (missing or mismatch):
        remove = [k for k in remove if key_body(k) != key_body(local_public)]
    return base | {"action": "recover", "new_key": missing or mismatch, "set_aside": lab.key_file if mismatch else "",
                   "import_key": own, "remove_keys": list(dict.fromkeys(k.strip() for k in remove if k.strip())),
                   "original": original}


def aside_name(path: str, now: dt.datetime) -> str:
    """Where a key file that does not open the lab is kept: beside it, named by the time."""
    return f"{path}.replaced-{now.strftime('%Y%m%dT%H%M%SZ')}"


def recover_prompt(lab: LabSettings, plans: dict[str, dict[str, Any]], hosts: list[str]) -> str:
    """The question asked before running instances are stopped (one for every lab of the play)."""
    running = [h for h in hosts if plans.get(h, {}).get("action") == "recover" and plans[h]["was_running"]]
    what = (f"{len(running)} running lab(s) of class {lab.lab_class}" if lab.lab_class
            else f"lab {lab.name}'s running instance {plans[lab.host]['instance_id']}")
    return (f"Recovering the key stops and starts {what} twice: a clean shutdown, so every file on the disk is "
            "kept, but running programs and notebook kernels end (save your notebooks first). Type the "
            f"{'class' if lab.lab_class else 'lab'} name to confirm")


# --- step=confirm_recover -------------------------------------------------------------------------

def query_keys(run: Run, specs: dict[str, dict[str, Any]], state: str = "query") -> dict[str, Part]:
    """lab_key's answer for each host of ``specs``, in one call."""
    if not specs:
        return {}
    try:
        answer = run.call("csdl.gpu_lab.lab_key", {"state": state, "labs": list(specs.values())})
    except ModuleFailed as error:
        return {host: failed(str(error)) for host in specs}
    return {host: answer.get("labs", {}).get(spec["lab"]) or failed(f"Lab {spec['lab']} got no answer.")
            for host, spec in specs.items()}


def local_public(path: str) -> str:
    """The public half of the key file ('' when there is none, or it is not a key)."""
    if not os.path.exists(path):
        return ""
    try:
        done = subprocess.run(["ssh-keygen", "-y", "-f", path], capture_output=True, text=True,  # noqa: S603, S607
                              stdin=subprocess.DEVNULL, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def confirm_recover_step(run: Run) -> dict[str, Part]:
    """Each part: ``plan`` (plan_of), ``message`` (said for a lab with nothing to do),
    ``prompt``, ``confirm_word``, ``confirmed`` (no running instance to stop, or the word given
    with -e gpu_lab_confirm_recover) and ``refused``. Nothing is asked or changed here."""
    parts: dict[str, Part] = {}
    specs: dict[str, dict[str, Any]] = {}
    published: dict[str, dict[str, Any]] = {}
    for host, lab, found, seen in each_looked_up(run, "key recovery", parts):
        published[host] = seen
        instance = found.get("instance") or {}
        specs[host] = {"lab": lab.name, "region": published[host]["region"], "key_name": lab.key_name,
                       "instance_id": instance.get("id", "")}
    plans: dict[str, dict[str, Any]] = {}
    for host, read in query_keys(run, specs).items():
        if read.get("failed"):
            parts[host] = failed(str(read.get("msg")))
            continue
        lab = run.labs[host]
        instance = (run.facts[host].get("resources") or {}).get("instance") or {}
        plans[host] = plan_of(lab, instance, str(read.get("key_pair_public_key", "")), local_public(lab.key_file),
                              str(read.get("user_data", "")))
    hosts = list(run.labs)
    for host, plan in plans.items():
        lab = run.labs[host]
        if plan["action"] == "fail":
            parts[host] = failed(plan["msg"], plan=plan)
            continue
        word = lab.lab_class or lab.name
        stops = plan["action"] == "recover" and plan["was_running"]
        parts[host] = ok(plan=plan, message=plan["msg"], confirm_word=word,
                         confirmed=not stops or lab.recover_confirm == word,
                         prompt=recover_prompt(lab, plans, hosts) if stops else "",
                         refused=(f"Key recovery not confirmed: type the {'class' if lab.lab_class else 'lab'} name "
                                  f"at the prompt, or pass -e gpu_lab_confirm_recover={word} in scripts."))
    return parts


# --- step=recover_key -----------------------------------------------------------------------------

def recover_key_step(run: Run, now: Any = lambda: dt.datetime.now(dt.UTC)) -> dict[str, Part]:
    """From confirm_recover's parts (options.planned): for each lab to recover, the key file
    kept aside and a new one made, the key pair replaced, the instance stopped, the recovery
    user data set and the instance started. Each part: ``recovering`` (false: nothing to do),
    ``plan``, ``instance``, ``address``, ``lab`` (ssh_ready once started), ``public_key``,
    ``set_aside`` (where the old file went), ``planned`` (check mode) and ``message``."""
    planned_parts = run.options.get("planned") or {}
    parts: dict[str, Part] = {}
    todo: dict[str, dict[str, Any]] = {}
    for host, lab in run.labs.items():
        seen = looked_up(run, host, "key recovery")
        given = planned_parts.get(host) or {}
        if not isinstance(seen, tuple):
            parts[host] = seen
            continue
        if given.get("failed") or "plan" not in given:
            parts[host] = failed(str(given.get("msg") or f"Lab {lab.name} was not planned (confirm_recover first)."))
            continue
        found, published = seen
        plan = dict(given["plan"])
        parts[host] = ok(recovering=plan["action"] == "recover", plan=plan, instance=found.get("instance") or {},
                         address=str(run.facts[host].get("address", "")), lab=published, public_key="",
                         set_aside="", planned=[], message="")
        if plan["action"] == "recover":
            todo[host] = plan
    if not todo:
        return parts
    if run.check_mode:
        for host, plan in todo.items():
            parts[host] |= {"changed": True, "planned": check_plan(run.labs[host], plan),
                            "lab": parts[host]["lab"] | {"ssh_ready": False}}
            parts[host]["message"] = f"Check mode: lab {run.labs[host].name} would {'; '.join(parts[host]['planned'])}."
        return parts
    # 1. The new key, here (each key file once: a class's labs share the admin key).
    for host, plan in todo.items():
        lab = run.labs[host]
        if plan["set_aside"] and os.path.exists(plan["set_aside"]):
            aside = aside_name(plan["set_aside"], now())
            os.rename(plan["set_aside"], aside)
            parts[host]["set_aside"] = aside
            for other, other_plan in todo.items():  # the same file of another lab: already aside
                if other != host and run.labs[other].key_file == lab.key_file:
                    other_plan["set_aside"] = ""
                    parts[other]["set_aside"] = aside
    keys = lab_launch_local.make_keys([run.labs[h].key_file for h in todo])
    for host in list(todo):
        key = keys[run.labs[host].key_file]
        if key.error:
            parts[host] = failed(key.error)
            del todo[host]
        else:
            parts[host]["public_key"] = key.public
            parts[host]["changed"] = parts[host]["changed"] or key.created
            set_aside_stale_public(run.labs[host].key_file, key.public, now())
    # 2. The key pair (the instance keeps its KeyName), then a stop, the user data, a start.
    acting = _acting(run, todo, parts)
    key_pairs = {h: acting[h] | {"public_key": parts[h]["public_key"] if todo[h]["import_key"] else ""} for h in todo}
    _fail_some(parts, todo, query_keys(run, key_pairs, "present"))
    _stop(run, todo, parts)
    _fail_some(parts, todo, query_keys(run, {h: acting[h] | {"user_data": encoded(recovery_user_data(
        run.labs[h].ssh_user, parts[h]["public_key"], todo[h]["remove_keys"], todo[h]["original"]))}
        for h in todo}, "present"))
    _start(run, todo, parts)
    return parts


def set_aside_stale_public(key_file: str, public: str, when: dt.datetime) -> str:
    """A ``<key file>.pub`` of another key, kept aside ('' when there is none): ssh offers the
    key a .pub beside the file names, so a stale one would make the new key fail to log in."""
    pub = f"{key_file}.pub"
    try:
        with open(pub) as stale:
            if key_body(stale.read()) == key_body(public):
                return ""
    except OSError:
        return ""
    aside = aside_name(pub, when)
    os.rename(pub, aside)
    return aside


def check_plan(lab: LabSettings, plan: dict[str, Any]) -> list[str]:
    """What recover_key would do, in plain words (check mode)."""
    said = []
    if plan["set_aside"]:
        said.append(f"keep {plan['set_aside']} aside")
    if plan["new_key"]:
        said.append(f"make a new private key {lab.key_file} on this machine")
    if plan["import_key"]:
        said.append(f"import it as key pair {lab.key_name}")
    if plan["was_running"]:
        said.append(f"stop {plan['instance_id']}")
    said += [f"set user data that authorizes the new key at the next boot of {plan['instance_id']}",
             f"start {plan['instance_id']}", "log in with the new key",
             f"stop it, restore its user data{' and start it again' if plan['was_running'] else ''}"]
    return said


def _acting(run: Run, todo: dict[str, dict[str, Any]], parts: dict[str, Part]) -> dict[str, dict[str, Any]]:
    return {h: {"lab": run.labs[h].name, "region": parts[h]["lab"]["region"], "key_name": run.labs[h].key_name,
                "instance_id": todo[h]["instance_id"], "tags": run.labs[h].tags} for h in todo}


def _fail_some(parts: dict[str, Part], todo: dict[str, dict[str, Any]], answers: dict[str, Part]) -> None:
    for host, answer in answers.items():
        if answer.get("failed"):
            parts[host] = failed(f"{answer.get('msg')} {left_as(parts[host])}".strip())
            todo.pop(host, None)
        else:
            parts[host]["changed"] = parts[host]["changed"] or bool(answer.get("changed"))


def left_as(part: Part) -> str:
    """What a failed recovery leaves, and what to run."""
    if not part.get("public_key"):
        return "Nothing was changed in AWS: run recover_key.yml again."
    return "The new key is in place on this machine: run recover_key.yml again to finish."


def _stop(run: Run, todo: dict[str, dict[str, Any]], parts: dict[str, Part]) -> None:
    specs = {h: {"lab": run.labs[h].name, "region": parts[h]["lab"]["region"], "instance": parts[h]["instance"],
                 "wait_timeout": run.labs[h].instance_timeout}
             for h in todo if parts[h]["instance"].get("state") in (*RUNNING, "stopping")}
    if not specs:
        return
    for host, answer in call_labs(run, specs, "stopped").items():
        if answer.get("failed"):
            parts[host] = failed(f"{answer.get('msg')} {left_as(parts[host])}")
            todo.pop(host, None)
        else:
            parts[host] |= {"changed": True, "instance": answer.get("instance") or parts[host]["instance"]}


def _start(run: Run, todo: dict[str, dict[str, Any]], parts: dict[str, Part], failing: str = "") -> None:
    specs = {h: {"lab": run.labs[h].name, "region": parts[h]["lab"]["region"],
                 "instance": parts[h]["instance"] | {"state": "stopped"},
                 "addresses": (run.facts[h].get("resources") or {}).get("addresses") or [],
                 "wait_timeout": run.labs[h].instance_timeout} for h in todo}
    for host, answer in call_labs(run, specs, "present").items():
        if answer.get("failed"):
            parts[host] = failed(f"{answer.get('msg')} {failing or left_as(parts[host])}".strip())
            todo.pop(host, None)
            continue
        ip = str((answer.get("address") or {}).get("public_ip", "")) or parts[host]["address"]
        parts[host] |= {"changed": True, "instance": answer.get("instance") or parts[host]["instance"],
                        "address": ip, "lab": parts[host]["lab"] | {"address": ip, "ssh_ready": bool(ip)}}


# --- step=finish_recover --------------------------------------------------------------------------

def login_command(lab: LabSettings, address: str) -> list[str]:
    """ssh with the lab's key file alone, asking nothing; the host key pinned by the workstation
    role when this machine has it (the disk, and so the host's key, is the same)."""
    pinned = os.path.join(lab.home, ".gpu_lab", lab.name, "known_hosts")
    hosts = (["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={pinned}", "-o", f"HostKeyAlias={lab.name}"]
             if os.path.isfile(pinned) else ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
    return ["ssh", "-F", "/dev/null", "-i", lab.key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={LOGIN_TIMEOUT}", "-o", "LogLevel=ERROR", *hosts,
            f"{lab.ssh_user}@{address}", "true"]


def logs_in(lab: LabSettings, address: str, timeout: float) -> tuple[bool, str]:
    """Whether the key file logs in within ``timeout`` seconds (cloud-init may run the script
    a moment after sshd answers), and what ssh said last."""
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        try:
            done = subprocess.run(login_command(lab, address), capture_output=True, text=True,  # noqa: S603
                                  stdin=subprocess.DEVNULL, check=False, timeout=LOGIN_TIMEOUT + 20)
            if done.returncode == 0:
                return True, ""
            said = ((done.stderr or "").strip().splitlines() or [f"ssh exited {done.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            said = "ssh did not finish"
        if time.monotonic() > deadline:
            return False, said
        time.sleep(1)


def finish_recover_step(run: Run) -> dict[str, Part]:
    """From recover_key's parts (options.recovered): each lab logs in with its new key, then is
    stopped, gets its original user data back and is started again if it ran before. A lab
    whose new key does not log in keeps the recovery user data (the next boot tries again) and
    fails with what to do. Each part: ``instance``, ``address``, ``lab``, ``message``."""
    recovered = run.options.get("recovered") or {}
    parts: dict[str, Part] = {}
    todo: dict[str, dict[str, Any]] = {}
    for host, lab in run.labs.items():
        mine = dict(recovered.get(host) or {})
        if mine.get("failed") or not mine:
            parts[host] = failed(str(mine.get("msg") or f"Lab {lab.name} was not recovered."))
            continue
        parts[host] = ok(instance=mine.get("instance") or {}, address=mine.get("address", ""),
                         lab=mine.get("lab") or {}, public_key=mine.get("public_key", ""),
                         message="")  # nothing to recover was said already (confirm_recover's message)
        if mine.get("recovering") and not run.check_mode:
            todo[host] = mine
    for host in list(todo):
        lab = run.labs[host]
        works, said = logs_in(lab, parts[host]["address"], min(lab.ssh_timeout, LOGIN_WAIT))
        if not works:
            at = f"{lab.ssh_user}@{parts[host]['address']}"
            parts[host] = failed(
                f"Lab {lab.name}: the new key {lab.key_file} does not log in as {at} "
                f"yet ({said or 'no answer'}); the instance keeps the user data that authorizes it at every boot: run "
                "recover_key.yml again (the key file stays).")
            del todo[host]
    plans = {h: dict(m["plan"]) for h, m in todo.items()}
    _stop(run, plans, parts)
    acting = _acting(run, plans, parts)
    _fail_some(parts, plans, query_keys(run, {h: acting[h] | {"user_data": plans[h]["original"]} for h in plans},
                                        "present"))
    again = {h: p for h, p in plans.items() if p["was_running"]}
    _start(run, again, parts, failing="The new key works and the user data is restored: run start.yml to start it.")
    for host in again:  # started again: done once it answers with the new key, as start.yml waits for SSH
        if not parts[host].get("failed"):
            logs_in(run.labs[host], parts[host]["address"], min(run.labs[host].ssh_timeout, LOGIN_WAIT))
    for host, plan in plans.items():
        if parts[host].get("failed"):
            continue
        if not plan["was_running"]:
            parts[host]["lab"] = parts[host]["lab"] | {"ssh_ready": False}
        parts[host]["message"] = done_message(run.labs[host], todo[host], plan)
    return parts


def done_message(lab: LabSettings, recovered: dict[str, Any], plan: dict[str, Any]) -> str:
    aside = f", the old file kept as {recovered['set_aside']}" if recovered.get("set_aside") else ""
    pair = f" is now key pair {lab.key_name}'s and" if plan["import_key"] else ""
    lost = " and the lost key no longer does" if plan["remove_keys"] else ""
    state = "running again" if plan["was_running"] else "stopped again, as it was (start.yml starts it)"
    return (f"Lab {lab.name}: the new key {lab.key_file}{aside}{pair} logs in as {lab.ssh_user}{lost}; "
            f"{plan['instance_id']} kept its disk, got its own user data back and is {state}.")
