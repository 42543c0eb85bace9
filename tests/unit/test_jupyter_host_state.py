"""roles/jupyter_server/files/host_state.py, locally: the guard's look at a home (git work
trees, files outside them, the baseline from the stamp) and what inspect learns of an earlier
run (the stamp, else Jupyter's unit). Real git on throwaway homes under tmp_path; the lab
user is whoever runs the tests (host_state runs git as that user without switching)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pwd
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "jupyter_server" / "files" / "host_state.py"
ME = pwd.getpwuid(os.geteuid()).pw_name
GIT_ID = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
          "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid",
          "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_lab_host_state", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host_state = _load()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                          capture_output=True, text=True, env={**os.environ, **GIT_ID}).stdout.strip()


def commit(repo: Path, name: str, text: str = "x\n") -> None:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", f"add {name}")


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    commit(path, "README.md")
    return path


def clone(origin: Path, path: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(path))
    return path


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare course repo with one commit."""
    work = new_repo(tmp_path / "src")
    bare = tmp_path / "course.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare


def settings(home: Path, stamp: Path, **overrides: Any) -> dict[str, Any]:
    s = {"user": ME, "home": str(home), "stamp_path": str(stamp), "repos": [],
         "scratch": [".ipynb_checkpoints", "__pycache__"], "skip_dirs": ["node_modules", "site-packages", "snap"],
         "shipped": ["PYTHON_PACKAGES_LICENSES", "nvidia-acknowledgements"], "depth": 4, "budget": 200000,
         "limit": 20, "fetch_timeout": 30}
    s.update(overrides)
    return s


def write_stamp(stamp: Path, home: Path, configured_at: float | None, **extra: Any) -> None:
    stamp.write_text(json.dumps({"configured_by": "csdl.gpu_lab.jupyter_server", "configured_at": configured_at,
                                 "user": ME, "home": str(home), **extra}))


def repo_entry(found: dict[str, Any], path: Path) -> dict[str, Any]:
    return next(r for r in found["repos"] if r["path"] == str(path))


def test_everything_the_student_made_is_found_and_nothing_else(tmp_path: Path, origin: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    home.mkdir()
    # Before the lab's first configuration: what the AMI and the role put there.
    (home / "PYTHON_PACKAGES_LICENSES").write_text("licences\n")
    course = clone(origin, home / "course")
    clean = clone(origin, home / "projects" / "clean")
    (home / ".bashrc").write_text("# skel\n")
    time.sleep(0.05)
    write_stamp(stamp, home, time.time(), repo={"dest": str(course), "url": str(origin), "branch": "main"})
    time.sleep(0.05)
    # The student's work since.
    (course / "README.md").write_text("my notes\n")
    (course / "mine.ipynb").write_text("{}\n")
    (course / ".ipynb_checkpoints").mkdir()
    (course / ".ipynb_checkpoints" / "mine-checkpoint.ipynb").write_text("{}\n")
    x = new_repo(home / "projects" / "x")  # never pushed anywhere
    (home / "my_notes.ipynb").write_text("{}\n")
    (home / "data" / "run1").mkdir(parents=True)
    (home / "data" / "run1" / "loss.csv").write_text("1,2\n")
    # Not work: hidden, scratch, envs, packages, symlinks.
    (home / ".cache").mkdir()
    (home / ".cache" / "pip.log").write_text("x\n")
    (home / "__pycache__").mkdir()
    (home / "__pycache__" / "m.pyc").write_text("x\n")
    (home / "venv" / "lib").mkdir(parents=True)
    (home / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (home / "venv" / "lib" / "site.py").write_text("x\n")
    (home / "node_modules" / "left-pad").mkdir(parents=True)
    (home / "node_modules" / "left-pad" / "index.js").write_text("x\n")
    (home / "link.ipynb").symlink_to(home / "my_notes.ipynb")

    found = host_state.guard(settings(home, stamp))

    assert found["baseline"]["source"] == "stamp"
    assert {r["path"] for r in found["repos"]} == {str(course), str(clean), str(x)}
    assert sorted(repo_entry(found, course)["files"]) == ["README.md", "mine.ipynb"]
    assert repo_entry(found, course)["unpushed_commits"] == 0 and repo_entry(found, course)["fetch_error"] is None
    assert repo_entry(found, x)["unpushed_commits"] == 1 and repo_entry(found, x)["files"] == []
    assert repo_entry(found, clean)["any"] is False
    # A folder's own files before those of its subfolders.
    assert found["loose_files"] == [str(home / "my_notes.ipynb"), str(home / "data" / "run1" / "loss.csv")]
    assert found["course_repo"] == str(course)
    assert found["any"] is True
    assert found["report"] == [
        f"{course}: 2 uncommitted file(s): README.md, mine.ipynb",
        f"{x}: 1 commit(s) on no remote branch",
        f"2 file(s) outside any git repo: {home}/my_notes.ipynb, {home}/data/run1/loss.csv",
    ]


def test_a_clean_home_reports_nothing(tmp_path: Path, origin: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    home.mkdir()
    (home / "nvidia-acknowledgements").mkdir()
    (home / "nvidia-acknowledgements" / "notice.txt").write_text("x\n")
    clone(origin, home / "course")
    write_stamp(stamp, home, time.time() + 1)
    (home / "course" / ".ipynb_checkpoints").mkdir()  # Jupyter's, not the student's
    (home / "course" / ".ipynb_checkpoints" / "week1-checkpoint.ipynb").write_text("{}\n")
    found = host_state.guard(settings(home, stamp))
    assert (found["any"], found["report"], found["loose_files_count"]) == (False, [], 0)
    assert [r["path"] for r in found["repos"]] == [str(home / "course")]


def test_without_a_stamp_every_file_counts_but_what_the_ami_ships(tmp_path: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "missing.json"
    home.mkdir()
    (home / "PYTHON_PACKAGES_LICENSES").write_text("x\n")
    (home / "nvidia-acknowledgements").mkdir()
    (home / "nvidia-acknowledgements" / "notice.txt").write_text("x\n")
    (home / "old_notes.txt").write_text("x\n")
    os.utime(home / "old_notes.txt", (0, 0))  # an old mtime: without a stamp it counts all the same
    (home / "sub").mkdir()
    (home / "sub" / "PYTHON_PACKAGES_LICENSES").write_text("mine\n")  # only the home's own entries are the AMI's

    found = host_state.guard(settings(home, stamp))
    assert found["baseline"]["source"] == "none" and "no " + str(stamp) in found["baseline"]["why"]
    assert found["loose_files"] == [str(home / "old_notes.txt"), str(home / "sub" / "PYTHON_PACKAGES_LICENSES")]

    write_stamp(stamp, home, None)  # written by a run that found an older version's set-up
    found = host_state.guard(settings(home, stamp))
    assert found["baseline"]["source"] == "none" and "no first-configuration time" in found["baseline"]["why"]
    assert found["loose_files_count"] == 2

    stamp.write_text("{not json")
    found = host_state.guard(settings(home, stamp))
    assert found["baseline"]["source"] == "none" and found["loose_files_count"] == 2


def test_a_copy_that_keeps_an_old_mtime_still_counts(tmp_path: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    home.mkdir()
    write_stamp(stamp, home, time.time() - 1)
    (home / "unpacked.ipynb").write_text("{}\n")
    os.utime(home / "unpacked.ipynb", (1_000_000, 1_000_000))  # as tar -x or cp -p leave it
    assert host_state.guard(settings(home, stamp))["loose_files"] == [str(home / "unpacked.ipynb")]


def test_output_is_bounded_and_names_the_first_paths(tmp_path: Path, origin: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    course = clone(origin, tmp_path / "home" / "course")
    write_stamp(stamp, home, time.time() - 1)
    for n in range(25):
        (home / f"n{n:02}.txt").write_text("x\n")
        (course / f"c{n:02}.py").write_text("x\n")
    found = host_state.guard(settings(home, stamp))
    assert len(found["loose_files"]) == 20 and found["loose_files_count"] == 25
    entry = repo_entry(found, course)
    assert len(entry["files"]) == 20 and entry["files_count"] == 25
    assert found["report"][0].endswith("c19.py and 5 more")
    assert found["report"][1].startswith("25 file(s) outside any git repo: ") and found["report"][1].endswith(
        "n19.txt and 5 more")


def test_nested_repos_stashes_and_the_walks_limits(tmp_path: Path, origin: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    course = clone(origin, tmp_path / "home" / "course")
    write_stamp(stamp, home, time.time() + 1)
    (course / ".gitignore").write_text("hw/\n")
    git(course, "add", ".gitignore")
    git(course, "commit", "-qm", "ignore hw")
    git(course, "push", "-q", "origin", "main")
    inner = new_repo(course / "hw" / "a" / "inner")  # ignored by the course repo: found by the walk
    too_deep = new_repo(course / "hw" / "a" / "b" / "c")  # 5 levels below the home
    hidden = new_repo(home / ".dotfiles")
    (course / "README.md").write_text("work in progress\n")
    git(course, "stash", "-q")

    found = host_state.guard(settings(home, stamp, repos=[str(hidden)]))
    paths = [r["path"] for r in found["repos"]]
    assert str(inner) in paths and str(too_deep) not in paths
    assert str(hidden) in paths  # named by the settings
    assert repo_entry(found, course)["stashes"] == 1 and repo_entry(found, course)["files"] == []
    assert f"{course}: 1 stash(es)" in found["report"]

    small = host_state.guard(settings(home, stamp, budget=5))
    assert small["any"] is True and small["incomplete"]
    assert small["report"][-1].startswith("not looked at in full, so it may hold work: ")


def test_a_repo_git_cannot_read_counts_as_work_and_fetch_errors_are_said(tmp_path: Path, origin: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "stamp.json"
    course = clone(origin, tmp_path / "home" / "course")
    broken = home / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nowhere\n")
    write_stamp(stamp, home, time.time() + 1)
    git(course, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    commit(course, "answer.py")

    found = host_state.guard(settings(home, stamp))
    assert repo_entry(found, broken)["error"] and repo_entry(found, broken)["any"] is True
    entry = repo_entry(found, course)
    assert entry["fetch_error"] and entry["unpushed_commits"] == 1
    line = next(line for line in found["report"] if line.startswith(str(course)))
    assert line.endswith("(git fetch failed, so this is measured against the last fetched state of its remotes)")


def test_the_guard_reports_what_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["host_state.py"])
    with redirect_stdout(out):
        host_state.main(["host_state.py", "guard", json.dumps(settings(tmp_path, tmp_path / "s.json",
                                                                       user="no-such-user-here"))])
    assert json.loads(out.getvalue()) == {"error": "there is no user no-such-user-here"}
    # No home at all: nothing there to lose.
    found = host_state.guard(settings(tmp_path / "nohome", tmp_path / "s.json"))
    assert (found["any"], found["repos"]) == (False, [])


# --- What inspect learns of an earlier run ---------------------------------------------

UNIT = "[Service]\nUser=ubuntu\nWorkingDirectory={root}\nExecStart=/opt/pytorch/bin/jupyter-lab\n"


def test_known_setup_from_the_stamp_else_the_unit(tmp_path: Path, origin: Path) -> None:
    user = host_state.User(ME)
    course = clone(origin, tmp_path / "home" / "course")
    stamp, unit = tmp_path / "stamp.json", tmp_path / "jupyter.service"
    unit.write_text(UNIT.format(root=course))

    learned = host_state.known_setup(user, host_state.read_stamp(str(stamp)), str(unit))
    assert learned == {"source": "unit", "root_dir": str(course),
                       "repo": {"dest": str(course), "url": str(origin), "branch": "main"}}

    repo = {"dest": str(course), "url": "file:///srv/share/course.git", "branch": "main"}
    write_stamp(stamp, tmp_path / "home", 1, root_dir=str(course), repo=repo)
    learned = host_state.known_setup(user, host_state.read_stamp(str(stamp)), str(unit))
    assert learned == {"source": "stamp", "root_dir": str(course), "repo": repo}

    # What is gone from the host is not kept: the repo, then the root itself.
    (course / ".git").rename(course / "git-moved")
    learned = host_state.known_setup(user, host_state.read_stamp(str(stamp)), str(unit))
    assert learned == {"source": "stamp", "root_dir": str(course), "repo": None}
    write_stamp(stamp, tmp_path / "home", 1, root_dir=str(tmp_path / "gone"), repo=None)
    assert host_state.known_setup(user, host_state.read_stamp(str(stamp)), str(unit))["root_dir"] is None
    stamp.unlink()
    unit.unlink()
    assert host_state.known_setup(user, host_state.read_stamp(str(stamp)), str(unit)) == \
        {"source": None, "root_dir": None, "repo": None}
