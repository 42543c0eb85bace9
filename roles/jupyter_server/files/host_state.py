#!/usr/bin/env python3
# Copyright: gpu_lab developers
# MIT License
"""What the lab host holds for csdl.gpu_lab.jupyter_server, as one JSON object on stdout.

Usage: host_state.py MODE SETTINGS_JSON  (the role sends this file on stdin: python3 - MODE ...)

  inspect  everything the role's main entry point decides on, in one go: systemd, the Python
           env and its Jupyter, the course repo (and its remote's head), Jupyter's config,
           unit and service (and whether it answers with the config's token), the GPU, and
           what an earlier run set up (the stamp, else Jupyter's unit)
  guard    the student's work in the home, after a best-effort `git fetch` of each repo
  wait     asks Jupyter's /api/status (with the token from its config) until it answers 200

Read-only apart from the guard's `git fetch`, which moves only remote-tracking refs. Runs as
root with the host's python3 (3.9 or later); git, the env's Python and nvidia-smi run as the
lab user (SETTINGS "user"): the work tree is theirs. Nothing here raises: a failure is
reported in the JSON ("error"), so the role can say what is wrong.

The output names no token, with one exception: with "want_token" (the workstation has no
token, or a new one is asked for), inspect adds "token": the config's token, or (with
"rotate", or when there is none) a new one, 48 lowercase letters and digits. Only then does
the task that runs it need no_log. The config's other settings are in config.other; of its
token, only a SHA-256 digest (config.token_sha256) and whether deprecated ServerApp or
NotebookApp tokens are there (config.legacy_tokens).

The course repo's keys: path_exists; exists (DEST is the top of a work tree); branch (None
when HEAD is detached); head; files (what `git status` shows: tracked changes, then untracked
files and directories, leaving out the scratch directories such as .ipynb_checkpoints);
ahead (commits of HEAD not on origin/BRANCH, None when that ref is missing); unpushed
(commits of HEAD or any local branch on no remote-tracking ref); and, with a course URL,
origin_url, remote_head (BRANCH's commit at the course URL, None when
unknown), remote_error. Without a course URL, inspect reports the repo an earlier run set up
(known.repo), with no remote keys.

The stamp (SETTINGS "stamp_path", written by the role's service part) records the first
configuration: configured_at (the host's clock, seconds; null when the role found the host
configured by a version that kept no stamp), user, home, root_dir, repo (dest, url, branch,
or null) and service. The guard takes its baseline from it: see guard() below.
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

# Jupyter is on the loopback: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOKEN_APPS = ("IdentityProvider", "ServerApp", "NotebookApp")


class User:
    """Runs commands as the lab user (from root), with that user's home and groups."""

    def __init__(self, name):
        try:
            self.pw = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"there is no user {name}") from None
        if os.geteuid() not in (0, self.pw.pw_uid):
            raise RuntimeError(f"cannot run commands as {name} without root")
        self.env = dict(os.environ, HOME=self.pw.pw_dir, USER=name, LOGNAME=name)

    def run(self, argv, timeout=60, env=None):
        """(exit code, stdout, stderr); 127 when the program is missing, 124 on a timeout."""
        ids = {}
        if os.geteuid() != self.pw.pw_uid:
            ids = {"user": self.pw.pw_uid, "group": self.pw.pw_gid,
                   "extra_groups": os.getgrouplist(self.pw.pw_name, self.pw.pw_gid)}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env={**self.env, **(env or {})},  # noqa: S603
                                  timeout=timeout, check=False, cwd="/", **ids)
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]} timed out after {timeout} s"
        return done.returncode, done.stdout, done.stderr


GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=15"}


def git(user, dest, *args, timeout=60):
    return user.run(["git", "-C", dest, *args], timeout=timeout, env=GIT_ENV)


def git_state(user, dest, branch, scratch):
    state = {"path_exists": os.path.lexists(dest), "exists": False, "branch": None, "head": None,
             "files": [], "ahead": None, "unpushed": 0}
    if not os.path.isdir(dest):
        return state
    rc, top, _err = git(user, dest, "rev-parse", "--show-toplevel")
    if rc != 0 or os.path.realpath(top.strip()) != os.path.realpath(dest):
        return state
    state["exists"] = True
    state["head"] = git(user, dest, "rev-parse", "--verify", "-q", "HEAD")[1].strip() or None
    state["branch"] = git(user, dest, "symbolic-ref", "--short", "-q", "HEAD")[1].strip() or None
    state["files"] = uncommitted(user, dest, scratch)
    if state["head"]:
        rc, out, _err = git(user, dest, "rev-list", "--count", f"refs/remotes/origin/{branch}..HEAD")
        state["ahead"] = int(out) if rc == 0 else None
        rc, out, _err = git(user, dest, "rev-list", "--count", "HEAD", "--branches", "--not", "--remotes")
        state["unpushed"] = int(out) if rc == 0 else 0
    return state


def uncommitted(user, dest, scratch):
    """What `git status` shows in the work tree DEST: tracked changes (staged or not), then
    untracked files and directories, leaving out the scratch directories."""
    # Untracked files from ls-files, which can leave out the scratch directories before
    # collapsing untracked directories, so a folder holding only .ipynb_checkpoints is not
    # reported as work.
    status = git(user, dest, "status", "--porcelain", "-z", "--untracked-files=no")
    untracked = git(user, dest, "ls-files", "-z", "--others", "--exclude-standard", "--directory",
                    "--no-empty-directory", *[f"--exclude={name}/" for name in scratch])
    for rc, _out, err in (status, untracked):
        if rc != 0:
            raise RuntimeError(f"git failed in {dest}: {err.strip()[-300:]}")
    files = []
    entries = iter(status[1].split("\0"))
    for entry in entries:
        if entry:
            files.append(entry[3:])
            if set(entry[:2]) & set("RC"):
                next(entries, None)  # the rename's or copy's source path
    files.extend(path for path in untracked[1].split("\0") if path)
    return files


def remote_state(user, dest, url, branch):
    """Where origin points, and the branch's commit at the course URL (what a clone would get)."""
    found = {"origin_url": git(user, dest, "config", "--get", "remote.origin.url")[1].strip() or None,
             "remote_head": None, "remote_error": None}
    rc, out, err = git(user, dest, "ls-remote", "--", url, f"refs/heads/{branch}")
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
    """Jupyter's JSON config without its tokens (other), and a digest of its token."""
    found = {**path_info(path), "other": None, "token_sha256": None, "legacy_tokens": False, "error": None}
    content = load_config(path, found)
    if content is not None:
        token = token_from(content)
        found["token_sha256"] = hashlib.sha256(token.encode()).hexdigest() if token else None
        found["legacy_tokens"] = any(isinstance(content.get(app), dict) and "token" in content[app]
                                     for app in TOKEN_APPS[1:])
        found["other"] = {key: ({k: v for k, v in value.items() if k != "token"}
                                if key in TOKEN_APPS and isinstance(value, dict) else value)
                          for key, value in content.items()}
    return found


def load_config(path, found=None):
    """The config as a dict; None when missing or unusable (why, in found["error"])."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
        return content
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # the message names no content
        if found is not None:
            found["error"] = e.strerror if isinstance(e, OSError) else str(e)
        return None


def token_from(config):
    """IdentityProvider.token, else the deprecated ServerApp.token (what Jupyter uses)."""
    for app in TOKEN_APPS[:2]:
        section = (config or {}).get(app)
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


ENV_PROBE = """import importlib.util as u, json
try:
    from importlib.metadata import version
except ImportError:
    version = lambda name: "unknown"
def v(name):
    if not u.find_spec(name):
        return None
    try:
        return version(name)
    except Exception:
        return "unknown"
print(json.dumps({n: v(n) for n in ("jupyterlab", "notebook")}))
"""


def env_state(user, dlami, fallback):
    """The env Jupyter runs from (the DLAMI's when it has a Python) and its Jupyter versions."""
    is_dlami = os.path.exists(os.path.join(dlami, "bin", "python"))
    env = dlami if is_dlami else fallback
    found = {"dlami": is_dlami, "path": env, "jupyterlab": None, "notebook": None}
    python = os.path.join(env, "bin", "python")
    if os.path.exists(python):
        rc, out, _err = user.run([python, "-B", "-c", ENV_PROBE], timeout=120)
        if rc == 0:
            found.update(json.loads(out))
    return found


def systemctl(*args):
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603, S607
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def gpu_state(user):
    if shutil.which("nvidia-smi", path=user.env.get("PATH")) is None:
        return {"rc": 127, "stdout": "", "stderr": ""}
    rc, out, err = user.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], timeout=60)
    return {"rc": rc, "stdout": out, "stderr": err}


def repo_state(user, s, dest):
    """The course repo: with a course URL, DEST and its remote's head; without one, the repo
    an earlier run set up (DEST), as it is."""
    state = git_state(user, dest, s["branch"], s["scratch"])
    if state["exists"] and s["repo_url"]:
        state.update(remote_state(user, dest, s["repo_url"], s["branch"]))
    return state


def read_stamp(path):
    """The stamp's file (mode, owner) and its JSON object (content; None when missing or unusable)."""
    found = {**path_info(path), "content": None, "error": None}
    found["content"] = load_config(path, found)
    return found


def unit_root(path):
    """The WorkingDirectory of Jupyter's unit: where a version of the role that kept no stamp rooted it."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("WorkingDirectory="):
                    return line.split("=", 1)[1].strip() or None
    except (OSError, UnicodeError):
        pass
    return None


def is_work_tree_top(path):
    return isinstance(path, str) and os.path.isdir(path) and os.path.lexists(os.path.join(path, ".git"))


def known_setup(user, stamp, unit_path):
    """The root dir and course repo ({dest, url, branch}) an earlier run set up: the stamp's,
    else the unit's WorkingDirectory and the work tree there. Only what is still on the host."""
    content = stamp["content"]
    if content is not None:
        source, root, repo = "stamp", content.get("root_dir"), content.get("repo")
        repo = repo if isinstance(repo, dict) else None
    else:
        source, root, repo = "unit", unit_root(unit_path), None
        if is_work_tree_top(root):
            repo = {"dest": root,
                    "url": git(user, root, "config", "--get", "remote.origin.url")[1].strip(),
                    "branch": git(user, root, "symbolic-ref", "--short", "-q", "HEAD")[1].strip() or None}
    if not (isinstance(root, str) and os.path.isabs(root) and os.path.isdir(root)):
        return {"source": None, "root_dir": None, "repo": None}
    if repo is not None and not is_work_tree_top(repo.get("dest")):
        repo = None
    return {"source": source, "root_dir": root, "repo": repo}


def inspect(s):
    user = User(s["user"])
    unit = f"{s['service']}.service"
    stamp = read_stamp(s["stamp_path"])
    known = known_setup(user, stamp, s["unit_path"])
    repo_dest = s["dest"] if s["repo_url"] else (known["repo"] or {}).get("dest")
    # The slow parts (the env's Python, the remote, nvidia-smi) run side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        env = pool.submit(env_state, user, s["dlami_env"], s["fallback_env"])
        repo = pool.submit(repo_state, user, s, repo_dest) if repo_dest else None
        gpu = pool.submit(gpu_state, user)
        state = {
            "now": int(time.time()),
            "systemd": os.path.isdir("/run/systemd/system"),
            "config_dir": path_info(s["config_dir"]),
            "config": read_config(s["config_path"]),
            "unit": path_info(s["unit_path"], digest=True),
            "service": {"enabled": systemctl("is-enabled", unit), "active": systemctl("is-active", unit)},
            "api_status": None,
            "stamp": stamp,
            "known": known,
        }
        token = token_from(load_config(s["config_path"]))
        if token and state["service"]["active"] == "active":
            state["api_status"] = api_status(s["port"], token)
        if s["want_token"]:
            state["token"] = token if token and not s["rotate"] else \
                "".join(secrets.choice(string.ascii_lowercase + string.digits) for _char in range(48))
        state.update(env=env.result(), git=repo.result() if repo else None, gpu=gpu.result())
    return state


# --- The guard: what a stop puts at risk and a teardown destroys -------------------------

def find_work(home, since, s):
    """One walk of the home: the git work trees (their tops), the files outside them that the
    student made, and where the walk could not look.

    Left out: hidden entries, the scratch and skip_dirs names, Python envs (a folder holding
    pyvenv.cfg or conda-meta) and symlinks (not followed). Inside a work tree git speaks for
    the files; the walk looks there only for nested work trees, down to "depth" levels below
    the home. Outside work trees it goes all the way down, and a file counts when it changed
    after `since` (its mtime or ctime: a copy that keeps an old mtime still counts); with no
    `since`, every file counts but the home's entries named in "shipped" (what the AMI puts
    there). It stops after "budget" entries, saying where.
    """
    trees, loose, loose_count, incomplete, seen = [], [], 0, [], 0
    skip = set(s["scratch"]) | set(s["skip_dirs"])
    shipped = set(s["shipped"]) if since is None else set()
    stack = [(home, 0, False)]
    while stack:
        path, level, in_tree = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue  # gone meanwhile, or no home at all: nothing there to lose
        except OSError as e:
            incomplete.append(f"{path} (cannot be read: {e.strerror})")
            continue
        seen += len(entries)
        if seen > s["budget"]:
            incomplete.append(f"{path} and what comes after it (more than {s['budget']} entries in the home)")
            break
        names = {e.name for e in entries}
        if ".git" in names:
            trees.append(path)
            in_tree = True
        elif level > 0 and names & {"pyvenv.cfg", "conda-meta"}:
            continue
        below = []
        for entry in entries:
            if entry.name.startswith(".") or entry.name in skip or (level == 0 and entry.name in shipped):
                continue
            try:
                # Root walks a tree the student can change: no symlink is followed, even here.
                if entry.is_dir(follow_symlinks=False):
                    if not in_tree or level < s["depth"]:
                        below.append((entry.path, level + 1, in_tree))
                elif not in_tree and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if since is None or max(st.st_mtime, st.st_ctime) > since:
                        loose_count += 1
                        if len(loose) < s["limit"]:
                            loose.append(entry.path)
            except OSError:
                continue  # gone meanwhile
        stack.extend(reversed(below))
    return trees, loose, loose_count, incomplete


def tree_work(user, path, s):
    """What the work tree at PATH holds that none of its remotes does, after a best-effort fetch."""
    found = {"path": path, "files": [], "files_count": 0, "unpushed_commits": 0, "stashes": 0,
             "fetch_error": None, "error": None}
    if git(user, path, "remote")[1].split():
        rc, _out, err = git(user, path, "fetch", "--all", "--quiet", timeout=s["fetch_timeout"])
        if rc != 0:
            found["fetch_error"] = "git fetch timed out" if rc == 124 else (err.strip()[-300:] or "git fetch failed")
    try:
        files = uncommitted(user, path, s["scratch"])
    except RuntimeError as e:
        found["error"] = str(e)
        return found
    found["files"], found["files_count"] = files[:s["limit"]], len(files)
    head = ["HEAD"] if git(user, path, "rev-parse", "--verify", "-q", "HEAD")[0] == 0 else []
    rc, out, _err = git(user, path, "rev-list", "--count", *head, "--branches", "--not", "--remotes")
    found["unpushed_commits"] = int(out) if rc == 0 and out.strip() else 0
    rc, out, _err = git(user, path, "stash", "list")
    found["stashes"] = len(out.splitlines()) if rc == 0 else 0
    return found


def _named(items, count):
    return ", ".join(items) + (f" and {count - len(items)} more" if count > len(items) else "")


def tree_report(tree):
    """One line on a work tree with work in it (None when it has none)."""
    if tree["error"]:
        return f"{tree['path']}: git cannot read it ({tree['error']}), so it may hold work"
    parts = []
    if tree["files_count"]:
        parts.append(f"{tree['files_count']} uncommitted file(s): {_named(tree['files'], tree['files_count'])}")
    if tree["unpushed_commits"]:
        parts.append(f"{tree['unpushed_commits']} commit(s) on no remote branch")
    if tree["stashes"]:
        parts.append(f"{tree['stashes']} stash(es)")
    if not parts:
        return None
    return f"{tree['path']}: " + " and ".join(parts) + (
        "" if tree["fetch_error"] is None
        else " (git fetch failed, so this is measured against the last fetched state of its remotes)")


def _text(content, key):
    value = content.get(key)
    return value if isinstance(value, str) and value else None


def guard(s):
    """The student's work in the home, learned from the host: every git work tree (the course
    repo is one of them) with what none of its remotes holds, and the files outside them that
    the student made since the lab's first configuration (the stamp's configured_at; without
    one, every file but what the AMI ships). The stamp's user and home win over the settings'.
    """
    stamp = read_stamp(s["stamp_path"])
    content = stamp["content"] or {}
    user = User(_text(content, "user") or s["user"])
    home = _text(content, "home") or s["home"]
    since = content.get("configured_at")
    if isinstance(since, bool) or not isinstance(since, (int, float)):
        since = None
    baseline = {"stamp": s["stamp_path"], "since": since,
                "source": "stamp" if since is not None else "none",
                "why": None if since is not None
                else f"{s['stamp_path']}: {stamp['error']}" if stamp["error"]
                else f"no {s['stamp_path']} (configured before gpu_lab kept one, or never)" if stamp["content"] is None
                else "its stamp has no first-configuration time (configured before gpu_lab kept one)"}
    trees, loose, loose_count, incomplete = find_work(home, since, s)
    course = ((content.get("repo") or {}) if isinstance(content.get("repo"), dict) else {}).get("dest")
    for extra in [course, *s["repos"]]:
        if is_work_tree_top(extra) and os.path.realpath(extra) not in map(os.path.realpath, trees):
            trees.append(extra)
    with ThreadPoolExecutor(max_workers=4) as pool:
        repos = list(pool.map(lambda path: tree_work(user, path, s), trees))
    for tree in repos:
        tree["any"] = tree_report(tree) is not None
    report = [line for line in map(tree_report, repos) if line]
    if loose_count:
        report.append(f"{loose_count} file(s) outside any git repo: {_named(loose, loose_count)}")
    if incomplete:
        report.append("not looked at in full, so it may hold work: " + "; ".join(incomplete[:s["limit"]]))
    return {"user": user.pw.pw_name, "home": home, "baseline": baseline, "repos": repos,
            "course_repo": course if is_work_tree_top(course) else (s["repos"] or [None])[0],
            "loose_files": loose, "loose_files_count": loose_count, "incomplete": incomplete[:s["limit"]],
            "report": report, "any": bool(report)}


def wait(s):
    """Until /api/status answers 200 or the timeout; reads the token at each try (fresh config)."""
    deadline = time.monotonic() + float(s["timeout"])
    status, tries = None, 0
    while True:
        tries += 1
        status = api_status(s["port"], token_from(load_config(s["config_path"])))
        if status == 200 or time.monotonic() >= deadline:
            return {"status": status, "tries": tries}
        time.sleep(0.25)


def main(argv):
    mode, settings = argv[1], json.loads(argv[2])
    try:
        if mode == "inspect":
            result = inspect(settings)
        elif mode == "guard":
            result = guard(settings)
        elif mode == "wait":
            result = wait(settings)
        else:
            raise ValueError(f"unknown mode {mode}")
    except Exception as e:  # noqa: BLE001 - reported as such
        result = {"error": f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
