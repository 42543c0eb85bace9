#!/usr/bin/env python3
"""Reports, as one JSON object, what a git work tree holds that its remote does not.

Usage: git_work_state.py DEST BRANCH FETCH(0|1) [IGNORED_DIR_NAME ...]

Read-only apart from the optional `git fetch` (which moves only remote-tracking refs).
Runs on the lab host with its own python3 (3.8 or later).

Keys: path_exists; exists (DEST is the top of a work tree); branch (None when HEAD is
detached); head; files (what `git status` shows: tracked changes, then untracked files
and directories, leaving out IGNORED_DIR_NAMEs such as .ipynb_checkpoints); ahead
(commits of HEAD not on origin/BRANCH, None when that ref is missing); unpushed (commits
of HEAD or any local branch on no remote-tracking ref); fetched; fetch_error.
"""

import json
import os
import subprocess
import sys

GIT_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C",
               GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=15")


def git(dest, *args, timeout=60):
    return subprocess.run(["git", "-C", dest, *args], capture_output=True, text=True,  # noqa: S603, S607
                          env=GIT_ENV, timeout=timeout, check=False)


def main(argv):
    dest, branch, fetch, names = argv[1], argv[2], argv[3] == "1", set(argv[4:])
    state = {"path_exists": os.path.lexists(dest), "exists": False, "branch": None,
             "head": None, "files": [], "ahead": None, "unpushed": 0, "fetched": False,
             "fetch_error": None}
    top = git(dest, "rev-parse", "--show-toplevel") if os.path.isdir(dest) else None
    if top is None or top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(dest):
        return state
    state["exists"] = True
    if fetch:
        try:
            done = git(dest, "fetch", "--quiet", "origin")
            state["fetched"] = done.returncode == 0
            if done.returncode != 0:
                state["fetch_error"] = done.stderr.strip()[-300:] or "git fetch failed"
        except subprocess.TimeoutExpired:
            state["fetch_error"] = "git fetch timed out"
    head = git(dest, "rev-parse", "--verify", "-q", "HEAD")
    state["head"] = head.stdout.strip() or None
    name = git(dest, "symbolic-ref", "--short", "-q", "HEAD")
    state["branch"] = name.stdout.strip() or None
    # Tracked changes (staged or not) from git status; untracked files from ls-files, which
    # can leave out the scratch directories before collapsing untracked directories, so a
    # folder holding only .ipynb_checkpoints is not reported as work.
    status = git(dest, "status", "--porcelain", "-z", "--untracked-files=no")
    untracked = git(dest, "ls-files", "-z", "--others", "--exclude-standard", "--directory",
                    "--no-empty-directory", *[f"--exclude={n}/" for n in names])
    for done in (status, untracked):
        if done.returncode != 0:
            raise SystemExit(f"git failed in {dest}: {done.stderr.strip()}")
    entries = iter(status.stdout.split("\0"))
    for entry in entries:
        if entry:
            state["files"].append(entry[3:])
            if set(entry[:2]) & set("RC"):
                next(entries, None)  # the rename's or copy's source path
    state["files"].extend(path for path in untracked.stdout.split("\0") if path)
    if state["head"]:
        ahead = git(dest, "rev-list", "--count", f"refs/remotes/origin/{branch}..HEAD")
        state["ahead"] = int(ahead.stdout) if ahead.returncode == 0 else None
        unpushed = git(dest, "rev-list", "--count", "HEAD", "--branches", "--not", "--remotes")
        state["unpushed"] = int(unpushed.stdout) if unpushed.returncode == 0 else 0
    return state


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
