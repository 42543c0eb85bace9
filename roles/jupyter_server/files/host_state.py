#!/usr/bin/env python3
"""What the lab host holds for csdl.gpu_lab.jupyter_server, as one JSON object on stdout.

Usage: host_state.py MODE SETTINGS_JSON  (the role sends this file on stdin: python3 - MODE ...)

  inspect  everything the role's main entry point decides on, in one go: systemd, the Python
           env and its Jupyter, the course repo (and its remote's head), Jupyter's config,
           unit and service (and whether it answers), the GPU, and a fresh token candidate
  guard    the course repo only, after a best-effort `git fetch`
  wait     asks Jupyter's /api/status (with the token from its config) until it answers 200

Read-only apart from the guard's `git fetch`, which moves only remote-tracking refs. Runs as
the lab user with the host's python3 (3.8 or later). `inspect` prints Jupyter's config, token
included: the task that runs it has no_log. Nothing here raises: a failure is reported in
the JSON, so the role can say what is wrong without showing the output.

The course repo's keys: path_exists; exists (DEST is the top of a work tree); branch (None
when HEAD is detached); head; files (what `git status` shows: tracked changes, then untracked
files and directories, leaving out the scratch directories such as .ipynb_checkpoints);
ahead (commits of HEAD not on origin/BRANCH, None when that ref is missing); unpushed
(commits of HEAD or any local branch on no remote-tracking ref); fetched; fetch_error; and
for inspect: origin_url, remote_head (BRANCH's commit at the course URL, None when
unknown), remote_error.
"""

import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

GIT_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C",
               GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=15")
# Jupyter is on the loopback: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def run(argv, timeout=60, env=None):
    """(exit code, stdout, stderr); 127 when the program is missing, 124 on a timeout."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,  # noqa: S603
                              check=False)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout} s"
    return done.returncode, done.stdout, done.stderr


def git(dest, *args, timeout=60):
    return run(["git", "-C", dest, *args], timeout=timeout, env=GIT_ENV)


def git_state(dest, branch, fetch, scratch):
    state = {"path_exists": os.path.lexists(dest), "exists": False, "branch": None, "head": None,
             "files": [], "ahead": None, "unpushed": 0, "fetched": False, "fetch_error": None}
    if not os.path.isdir(dest):
        return state
    rc, top, _ = git(dest, "rev-parse", "--show-toplevel")
    if rc != 0 or os.path.realpath(top.strip()) != os.path.realpath(dest):
        return state
    state["exists"] = True
    if fetch:
        rc, _, err = git(dest, "fetch", "--quiet", "origin")
        state["fetched"] = rc == 0
        if rc != 0:
            state["fetch_error"] = "git fetch timed out" if rc == 124 else (err.strip()[-300:] or "git fetch failed")
    state["head"] = git(dest, "rev-parse", "--verify", "-q", "HEAD")[1].strip() or None
    state["branch"] = git(dest, "symbolic-ref", "--short", "-q", "HEAD")[1].strip() or None
    # Tracked changes (staged or not) from git status; untracked files from ls-files, which
    # can leave out the scratch directories before collapsing untracked directories, so a
    # folder holding only .ipynb_checkpoints is not reported as work.
    status = git(dest, "status", "--porcelain", "-z", "--untracked-files=no")
    untracked = git(dest, "ls-files", "-z", "--others", "--exclude-standard", "--directory",
                    "--no-empty-directory", *[f"--exclude={name}/" for name in scratch])
    for rc, _, err in (status, untracked):
        if rc != 0:
            raise RuntimeError(f"git failed in {dest}: {err.strip()}")
    entries = iter(status[1].split("\0"))
    for entry in entries:
        if entry:
            state["files"].append(entry[3:])
            if set(entry[:2]) & set("RC"):
                next(entries, None)  # the rename's or copy's source path
    state["files"].extend(path for path in untracked[1].split("\0") if path)
    if state["head"]:
        rc, out, _ = git(dest, "rev-list", "--count", f"refs/remotes/origin/{branch}..HEAD")
        state["ahead"] = int(out) if rc == 0 else None
        rc, out, _ = git(dest, "rev-list", "--count", "HEAD", "--branches", "--not", "--remotes")
        state["unpushed"] = int(out) if rc == 0 else 0
    return state


def remote_state(dest, url, branch):
    """Where origin points, and the branch's commit at the course URL (what a clone would get)."""
    found = {"origin_url": git(dest, "config", "--get", "remote.origin.url")[1].strip() or None,
             "remote_head": None, "remote_error": None}
    rc, out, err = git(dest, "ls-remote", "--", url, f"refs/heads/{branch}")
    if rc == 0 and out.split():
        found["remote_head"] = out.split()[0]
    else:
        found["remote_error"] = err.strip()[-300:] or f"no branch {branch} at the course URL"
    return found


def path_info(path, digest=False):
    try:
        st = os.stat(path)
    except OSError:
        return {"exists": False}
    info = {"exists": True, "mode": f"{st.st_mode & 0o7777:04o}", "owner": _name(pwd.getpwuid, st.st_uid),
            "group": _name(grp.getgrgid, st.st_gid)}
    if digest:
        try:
            with open(path, "rb") as f:
                info["sha1"] = hashlib.sha1(f.read()).hexdigest()  # noqa: S324 - what Ansible compares
        except OSError as e:
            info["error"] = e.strerror
    return info


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def read_config(path):
    """Jupyter's JSON config: its content (None when missing), or why it cannot be used."""
    found = {**path_info(path), "content": None, "error": None}
    if found["exists"]:
        try:
            with open(path, encoding="utf-8") as f:
                found["content"] = json.load(f)
            if not isinstance(found["content"], dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:  # the message names no content
            found["content"], found["error"] = None, str(e) if not isinstance(e, OSError) else e.strerror
    return found


def token_from(config):
    config = config if isinstance(config, dict) else {}
    for app in ("IdentityProvider", "ServerApp"):
        section = config.get(app)
        if isinstance(section, dict) and section.get("token"):
            return str(section["token"])
    return ""


def api_status(port, token, timeout=2.0):
    """The HTTP status of /api/status with the token; None when nothing answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{int(port)}/api/status",  # noqa: S310
                                     headers={"Authorization": f"token {token}"})
    try:
        with OPENER.open(request, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def env_state(dlami, fallback):
    """The env Jupyter runs from (the DLAMI's when it has a Python) and its Jupyter versions."""
    is_dlami = os.path.exists(os.path.join(dlami, "bin", "python"))
    env = dlami if is_dlami else fallback
    found = {"dlami": is_dlami, "path": env, "jupyterlab": None, "notebook": None}
    probe = ("import importlib.util as u, json\n"
             "try:\n    from importlib.metadata import version\n"
             "except ImportError:\n    version = lambda name: 'unknown'\n"
             "def v(name):\n"
             "    if not u.find_spec(name):\n        return None\n"
             "    try:\n        return version(name)\n"
             "    except Exception:\n        return 'unknown'\n"
             "print(json.dumps({n: v(n) for n in ('jupyterlab', 'notebook')}))\n")
    python = os.path.join(env, "bin", "python")
    if os.path.exists(python):
        rc, out, _ = run([python, "-c", probe], timeout=120)
        if rc == 0:
            found.update(json.loads(out))
    return found


def systemctl(*args):
    return run(["systemctl", *args], timeout=30)[1].strip() or None


def gpu_state():
    if shutil.which("nvidia-smi") is None:
        return {"rc": 127, "stdout": "", "stderr": ""}
    rc, out, err = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], timeout=60)
    return {"rc": rc, "stdout": out, "stderr": err}


def repo_state(s):
    state = git_state(s["dest"], s["branch"], False, s["scratch"])
    if state["exists"]:
        state.update(remote_state(s["dest"], s["repo_url"], s["branch"]))
    return state


def inspect(s):
    unit = f"{s['service']}.service"
    # The slow parts (the env's Python, the remote, nvidia-smi) run side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        env = pool.submit(env_state, s["dlami_env"], s["fallback_env"])
        repo = pool.submit(repo_state, s) if s["repo_url"] else None
        gpu = pool.submit(gpu_state)
        state = {
            "systemd": os.path.isdir("/run/systemd/system"),
            "config_dir": path_info(s["config_dir"]),
            "config": read_config(s["config_path"]),
            "unit": path_info(s["unit_path"], digest=True),
            "service": {"enabled": systemctl("is-enabled", unit), "active": systemctl("is-active", unit)},
            "api_status": None,
            "new_token": "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(48)),
        }
        token = token_from(state["config"]["content"])
        if token and state["service"]["active"] == "active":
            state["api_status"] = api_status(s["port"], token)
        state.update(env=env.result(), git=repo.result() if repo else None, gpu=gpu.result())
    return state


def wait(s):
    """Until /api/status answers 200 or the timeout; reads the token at each try (fresh config)."""
    deadline = time.monotonic() + float(s["timeout"])
    status, tries = None, 0
    while True:
        tries += 1
        status = api_status(s["port"], token_from(read_config(s["config_path"])["content"]))
        if status == 200 or time.monotonic() >= deadline:
            return {"status": status, "tries": tries}
        time.sleep(0.25)


def main(argv):
    mode, settings = argv[1], json.loads(argv[2])
    try:
        if mode == "inspect":
            result = inspect(settings)
        elif mode == "guard":
            result = {"git": git_state(settings["dest"], settings["branch"], True, settings["scratch"])}
        elif mode == "wait":
            result = wait(settings)
        else:
            raise ValueError(f"unknown mode {mode}")
    except Exception as e:  # noqa: BLE001 - reported, never a traceback with the config in it
        result = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
