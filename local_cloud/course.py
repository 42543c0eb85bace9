"""A small course repository, served to the stand-in hosts through their shared folder.

Nothing is fetched from the internet: the repo is made here, as a bare repository under the
controller's share directory, which every guest sees read-only at /srv/share. Its owner is
uid 1000 (the guest's ``ubuntu``, who clones it), so git in the guest raises no "dubious
ownership" error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

GUEST_SHARE = "/srv/share"
GUEST_UID = 1000

NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Week 1: tensors\n"]},
        {
            "cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": ["total = sum(i * i for i in range(10))\n", "print(f'sum of squares: {total}')\n"],
        },
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Course staff", "GIT_AUTHOR_EMAIL": "staff@course.invalid",
           "GIT_COMMITTER_NAME": "Course staff", "GIT_COMMITTER_EMAIL": "staff@course.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_course_repo(share_dir: Path, name: str = "course") -> tuple[str, str]:
    """Creates <share_dir>/<name>.git (branch main, one commit) unless it exists.

    Returns the URL a guest clones it from and the commit its main branch points to.
    """
    bare = share_dir / f"{name}.git"
    if not bare.exists():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / name
            work.mkdir()
            (work / "README.md").write_text(f"# {name}\n\nNotebooks for the deep-learning course.\n")
            (work / "week1.ipynb").write_text(json.dumps(NOTEBOOK, indent=1) + "\n")
            _git("init", "-q", "-b", "main", ".", cwd=work)
            _git("add", "README.md", "week1.ipynb", cwd=work)
            _git("commit", "-qm", "Week 1", cwd=work)
            share_dir.mkdir(parents=True, exist_ok=True)
            _git("clone", "-q", "--bare", str(work), str(bare), cwd=share_dir)
        for path in [bare, *bare.rglob("*")]:
            os.chown(path, GUEST_UID, GUEST_UID, follow_symlinks=False)
    head = _git("--git-dir", str(bare), "rev-parse", "refs/heads/main", cwd=share_dir)
    return f"file://{GUEST_SHARE}/{name}.git", head


def remove_course_repo(share_dir: Path, name: str = "course") -> None:
    shutil.rmtree(share_dir / f"{name}.git", ignore_errors=True)
