#!/usr/bin/env python3
# Copyright: gpu_lab developers
# MIT License
"""What the lab host holds for csdl.gpu_lab.idle_autostop, as one JSON object on stdout.

Usage: install_state.py SETTINGS_JSON  (the role sends this file on stdin: python3 - ...)

SETTINGS: {"paths": [...], "timer": "gpu_lab_idle.timer", "watcher": "gpu_lab_spot.service"}.
For each path: exists, and for what exists its mode ("0644"), owner, group, and for a regular
file its sha1 (what Ansible compares); for the timer and the watcher (if named), `systemctl
is-enabled` and `is-active`. Read-only; runs as root
with the host's python3 (3.8 or later).
"""

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def path_info(path):
    try:
        st = os.stat(path)
    except OSError:
        return {"exists": False}
    info = {"exists": True, "dir": stat.S_ISDIR(st.st_mode), "mode": f"{st.st_mode & 0o7777:04o}",
            "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}
    if stat.S_ISREG(st.st_mode):
        try:
            with open(path, "rb") as f:
                info["sha1"] = hashlib.sha1(f.read()).hexdigest()  # noqa: S324 - what Ansible compares
        except OSError as e:
            info["sha1"] = None
            info["error"] = e.strerror
    return info


def systemctl(*args):
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603, S607
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def main(argv):
    settings = json.loads(argv[1])
    found = {"paths": {path: path_info(path) for path in settings["paths"]}}
    for key in ("timer", "watcher"):
        unit = settings.get(key)
        if unit:
            found[key] = {"enabled": systemctl("is-enabled", unit), "active": systemctl("is-active", unit)}
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv)
