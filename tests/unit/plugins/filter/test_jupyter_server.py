"""csdl.gpu_lab.jupyter_server_*: the jupyter_server role's decisions from one inspection."""

from __future__ import annotations

import hashlib
import json
import os

from plugins.filter import jupyter_server as js

TOKEN = "t" * 48
STAMP = {"configured_by": "csdl.gpu_lab.jupyter_server", "configured_at": 100, "user": "ubuntu",
         "home": "/home/ubuntu", "root_dir": "/home/ubuntu", "repo": None, "service": "jupyter"}
ROOT = {"exists": True, "owner": "root", "group": "root"}


def right_host(**more):
    """A host where nothing is left to do."""
    host = {
        "now": 200, "systemd": True,
        "config_dir": {"exists": True, "mode": "0700", "owner": "ubuntu", "group": "ubuntu"},
        "config": {"exists": True, "mode": "0600", "owner": "ubuntu", "group": "ubuntu", "legacy_tokens": False,
                   "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "error": None, "other": {}},
        "unit": {**ROOT, "mode": "0644", "sha1": "u1"},
        "service": {"enabled": "enabled", "active": "active"},
        "api_status": 200,
        "stamp": {**ROOT, "mode": "0644", "content": STAMP, "error": None},
        "env": {"dlami": False, "path": "/opt/jupyter", "jupyterlab": "4.2.5", "notebook": "7.2.2"},
        "git": None,
    }
    host.update(more)
    return host


def settings(**more):
    s = {"user": "ubuntu", "repo_url": "", "repo_branch": "main", "token": TOKEN, "ws_token": TOKEN,
         "unit_sha1": "u1", "stamp": STAMP, "jupyterlab_version": "4.2.5", "notebook_version": "7.2.2"}
    s.update(more)
    return s


OK_MODES = ("600", "700")


def test_a_right_host_needs_nothing():
    todo = js.plan(right_host(), settings(), OK_MODES)
    assert not any(v for k, v in todo.items() if k != "blockers") and todo["blockers"] == []


def test_each_difference_names_its_part():
    cases = [
        (right_host(config_dir={"exists": False}), settings(), OK_MODES, "config_dir"),
        (right_host(unit={**ROOT, "mode": "0644", "sha1": "old"}), settings(), OK_MODES, "unit"),
        (right_host(), settings(token="n" * 48, ws_token="n" * 48), OK_MODES, "config"),
        (right_host(), settings(), ("644", "700"), "ws_token"),
        (right_host(), settings(ws_token=""), OK_MODES, "ws_token"),
        (right_host(), settings(), ("600", "-"), "ws_dir"),
        (right_host(service={"enabled": "disabled", "active": "active"}), settings(), OK_MODES, "start"),
        (right_host(api_status=403), settings(), OK_MODES, "wait"),
        (right_host(), settings(stamp={**STAMP, "root_dir": "/srv"}), OK_MODES, "stamp"),
    ]
    for host, s, modes, part in cases:
        todo = js.plan(host, s, modes)
        assert [k for k, v in todo.items() if v is True] == [part, "service"], part


def test_a_deprecated_token_makes_the_config_wrong():
    host = right_host()
    host["config"]["legacy_tokens"] = True
    assert js.plan(host, settings(), OK_MODES)["config"] is True


def test_install_when_jupyter_is_missing_or_our_env_is_not_at_the_pins():
    assert js.install_needed({"jupyterlab": None, "notebook": "7.2.2"}, "4.2.5", "7.2.2")
    assert js.install_needed({"dlami": False, "jupyterlab": "4.0.0", "notebook": "7.2.2"}, "4.2.5", "7.2.2")
    # The DLAMI's env is the AMI's: its versions are not ours to change.
    assert not js.install_needed({"dlami": True, "jupyterlab": "4.0.0", "notebook": "7.0"}, "4.2.5", "7.2.2")


GIT = {"path_exists": True, "exists": True, "branch": "main", "head": "a" * 40, "files": [], "ahead": 0,
       "unpushed": 0, "origin_url": "https://example.invalid/c.git", "remote_head": "a" * 40, "remote_error": None}
URL = "https://example.invalid/c.git"


def test_a_current_repo_is_left_as_it_is():
    todo = js.plan(right_host(git=GIT), settings(repo_url=URL), OK_MODES)
    assert (todo["repo"], todo["clone"], todo["blockers"]) == (False, False, [])


def test_a_clean_repo_behind_the_course_is_updated():
    todo = js.plan(right_host(git={**GIT, "remote_head": "b" * 40}), settings(repo_url=URL), OK_MODES)
    assert (todo["repo"], todo["clone"]) == (True, True)


def test_a_missing_repo_is_cloned():
    todo = js.plan(right_host(git={"path_exists": False, "exists": False}), settings(repo_url=URL), OK_MODES)
    assert (todo["repo"], todo["clone"], todo["blockers"]) == (True, True, [])


def test_work_in_the_repo_blocks_the_update():
    files = [f"f{i}.py" for i in range(22)]
    git = {**GIT, "files": files, "branch": None, "ahead": None, "remote_head": "b" * 40}
    todo = js.plan(right_host(git=git), settings(repo_url=URL), OK_MODES)
    assert (todo["repo"], todo["clone"]) == (True, False)
    assert todo["blockers"] == [
        "22 uncommitted file(s): " + ", ".join(files[:20]) + " and 2 more",
        "HEAD is detached, not main",
        "no origin/main to compare with",
    ]
    assert js.repo_blockers({**GIT, "ahead": 3}, "main") == ["3 commit(s) not on origin/main"]


def test_plan_reads_the_token_files_modes_on_the_controller(tmp_path):
    folder = tmp_path / "gpu_lab"
    folder.mkdir(mode=0o700)
    token = folder / "token"
    token.write_text(TOKEN)
    os.chmod(token, 0o600)
    os.chmod(folder, 0o700)
    assert js.jupyter_server_plan(right_host(), {**settings(), "token_file": str(token)})["service"] is False
    assert js.local_mode(str(tmp_path / "none")) == "-"


def test_stamp_keeps_the_first_configuration_time():
    s = {"user": "ubuntu", "home": "/home/ubuntu", "root_dir": "/home/ubuntu", "repo": {}, "service": "jupyter"}
    assert js.jupyter_server_stamp(right_host(), s) == STAMP
    fresh = right_host(stamp={"exists": False, "content": None}, unit={"exists": False})
    assert js.jupyter_server_stamp(fresh, s)["configured_at"] == 200
    # Configured by a version that kept no stamp: when is unknown.
    old = right_host(stamp={"exists": False, "content": None})
    assert js.jupyter_server_stamp(old, s)["configured_at"] is None
    repo = {"dest": "/home/ubuntu/c", "url": URL, "branch": "main"}
    assert js.jupyter_server_stamp(old, {**s, "repo": repo})["repo"] == repo


def test_repo_status():
    base = {"repo": {"dest": "/home/ubuntu/c"}, "repo_url": URL, "repo_branch": "main", "git": GIT, "result": {}}
    status = js.jupyter_server_repo_status
    assert status({}, {**base, "repo": {}}) == "no course repository (jupyter_server_repo_url is empty)"
    assert status({}, {**base, "repo_url": ""}) == (
        "/home/ubuntu/c at aaaaaaaa, as an earlier run set it up (a run with jupyter_server_repo_url updates it)")
    assert status({}, {**base, "repo_url": "", "git": {}}).startswith("/home/ubuntu/c at no commi,")
    assert status({"blockers": ["x", "y"]}, base) == "left alone at aaaaaaaa (x; y)"
    assert status({"blockers": [], "clone": False}, base) == "up to date at aaaaaaaa"
    clone = {"blockers": [], "clone": True}
    assert status(clone, {**base, "result": {"before": None, "after": "c" * 40}}) == "cloned main at cccccccc"
    assert status(clone, {**base, "result": {"before": "b" * 40, "after": "c" * 40}}) == "updated bbbbbbbb -> cccccccc"
    assert status(clone, {**base, "result": {"before": "c" * 40, "after": "c" * 40}}) == "up to date at cccccccc"


def test_gpu():
    gpu = js.jupyter_server_gpu
    out = "NVIDIA L4, 550.54.15\n\nNVIDIA A10G , 535.1\n"
    assert gpu({"rc": 0, "stdout": out, "stderr": ""}) == "NVIDIA L4 (driver 550.54.15); NVIDIA A10G (driver 535.1)"
    assert gpu({"rc": 127, "stdout": "", "stderr": ""}) == "no GPU: nvidia-smi is not installed on this host"
    assert gpu({"rc": 9, "stdout": "", "stderr": "\nNo devices were found\n"}) == (
        "nvidia-smi failed (exit 9): No devices were found")
    assert gpu({"rc": 0, "stdout": " \n", "stderr": ""}) == "nvidia-smi failed (exit 0):  "


ANSWER = {"user": "ubuntu", "home": "/home/ubuntu", "baseline": {"source": "stamp"}, "course_repo": "/home/ubuntu/c",
          "repos": [{"path": "/home/ubuntu/x", "files": [], "any": False},
                    {"path": "/home/ubuntu/c", "files": ["a.ipynb"], "unpushed_commits": 2, "fetch_error": None,
                     "any": True}],
          "loose_files": ["/home/ubuntu/n.txt"], "loose_files_count": 1, "incomplete": [],
          "report": ["/home/ubuntu/c: 1 uncommitted file(s): a.ipynb", "1 file(s) outside any git repo: n.txt"],
          "any": True}


def test_unsaved_work_from_the_guards_answer():
    work = js.jupyter_server_unsaved_work({"rc": 0, "stdout": json.dumps(ANSWER)}, "/home/other")
    assert work["checked"] is True and work["error"] is None and work["any"] is True
    assert (work["home"], work["repo"], work["files"], work["unpushed_commits"]) == (
        "/home/ubuntu", "/home/ubuntu/c", ["a.ipynb"], 2)
    assert js.jupyter_server_unsaved_text(work, "lab1") == (
        "on lab1, /home/ubuntu/c: 1 uncommitted file(s): a.ipynb; 1 file(s) outside any git repo: n.txt")
    assert js.jupyter_server_unsaved_hint(work) == (
        "commit and push what is in the repos (git -C /home/ubuntu/c status shows it), and "
        "copy the files outside the repos off the host (scp)")


def test_a_host_that_cannot_be_looked_at_counts_as_work():
    cases = [
        ({"rc": 0, "stdout": '{"error": "there is no user ubuntu"}'}, "there is no user ubuntu"),
        ({"unreachable": True, "msg": "ssh: timed out \n"}, "unreachable: ssh: timed out"),
        ({"rc": 1, "stdout": "", "stderr": "sudo: a password is required\n\n"}, "sudo: a password is required"),
        ({"rc": 1, "module_stderr": "", "stderr": "x", "msg": "MODULE FAILURE"}, "MODULE FAILURE"),
        ({}, "no answer"),
    ]
    for probe, error in cases:
        work = js.jupyter_server_unsaved_work(probe, "/home/ubuntu")
        assert (work["checked"], work["error"], work["any"], work["home"]) == (False, error, True, "/home/ubuntu")
        assert work["repo"] == "" and work["report"] == []
    assert js.jupyter_server_unsaved_text(work, "lab1") == "lab1 could not be looked at for unsaved work (no answer)"
    assert js.jupyter_server_unsaved_hint(work) == "make the host reachable and run this again"


def test_nothing_to_lose():
    answer = {**ANSWER, "repos": [], "loose_files": [], "loose_files_count": 0, "report": [], "any": False}
    work = js.jupyter_server_unsaved_work({"rc": 0, "stdout": json.dumps(answer)}, "/home/ubuntu")
    assert (work["any"], work["repo"], js.jupyter_server_unsaved_hint(work)) == (False, "", "")


# --- The checks before anything changes --------------------------------------------------------

CHECK = {"host": "lab1", "port": 8888, "service": "jupyter", "user": "ubuntu", "home": "/home/ubuntu",
         "dlami_env": "/opt/conda/envs/pytorch", "fallback_env": "/opt/jupyter", "repo_url": "",
         "repo_dest": "/home/ubuntu/course", "repo_branch": "main", "token_file": "/root/.gpu_lab/csdl/token",
         "config_path": "/home/ubuntu/.jupyter/jupyter_server_config.json"}
BAD_SETTINGS = ("Check the jupyter_server_* settings: port 1-65535, a plain service name, absolute paths for the"
                " home, the envs, the token file and (with a repo URL) the repo destination, and a branch.")
NOT_INSPECTED = ("lab1 could not be inspected for jupyter_server (it needs sudo, python3 3.9 or later, git and the"
                 " user ubuntu there): ")
NO_SYSTEMD = "lab1 does not run systemd; jupyter_server runs Jupyter as a systemd service."
DEST_TAKEN = ("/home/ubuntu/course exists on lab1 but is not a git work tree: move it aside or set"
              " jupyter_server_repo_dest to another path.")
BAD_CONFIG = ("/home/ubuntu/.jupyter/jupyter_server_config.json on lab1 cannot be used (Permission denied):"
              " fix it or move it aside.")


def answered(**host):
    return {"rc": 0, "stdout": json.dumps(right_host(**host))}


def problem(probe=None, **check):
    return js.jupyter_server_problem({**CHECK, **check}, probe if probe is not None else answered())


def test_nothing_wrong():
    assert problem() == ""
    assert problem(port="8888", service="jupyter@lab.x-1") == ""
    # A repo destination and branch matter only with a course URL.
    assert problem(repo_dest="course", repo_branch="") == ""


def test_each_bad_setting():
    for bad in ({"port": 0}, {"port": 65536}, {"port": "none"}, {"service": "jupyter lab"}, {"service": ""},
                {"home": "home/ubuntu"}, {"dlami_env": "envs/pytorch"}, {"fallback_env": "jupyter"},
                {"token_file": "token"}, {"repo_url": URL, "repo_dest": "course"},
                {"repo_url": URL, "repo_branch": ""}):
        assert problem(**bad) == BAD_SETTINGS, bad
    # Jinja's int: a port given as "8888.9" is 8888.
    assert problem(port="8888.9") == ""


def test_a_host_that_could_not_be_inspected():
    no_user = {"rc": 0, "stdout": '{"error": "there is no user ubuntu"}'}
    assert problem(no_user) == NOT_INSPECTED + "there is no user ubuntu"
    assert problem({"rc": 1, "stdout": "", "stderr": "sudo: a password is required\n\n"}) == (
        NOT_INSPECTED + "sudo: a password is required")
    # module_stderr wins over stderr, even when it is empty.
    assert problem({"rc": 1, "module_stderr": "", "stderr": "x"}) == NOT_INSPECTED + "no answer"
    assert problem({"rc": 1, "module_stderr": "a\nb\n", "stderr": "x"}) == NOT_INSPECTED + "b"
    assert problem({"msg": "no rc at all"}) == NOT_INSPECTED + "no answer"


def test_each_problem_of_the_host():
    assert problem(answered(systemd=False)) == NO_SYSTEMD
    taken = answered(git={"path_exists": True, "exists": False})
    assert problem(taken, repo_url=URL) == DEST_TAKEN
    # Without a course URL the path is none of the role's business.
    assert problem(taken) == ""
    assert problem(answered(git=GIT), repo_url=URL) == ""
    config = {**right_host()["config"], "error": "Permission denied"}
    assert problem(answered(config=config)) == BAD_CONFIG


def test_the_first_problem_that_applies_wins():
    config = {**right_host()["config"], "error": "Permission denied"}
    everything = answered(systemd=False, git={"path_exists": True, "exists": False}, config=config)
    failed = {"rc": 1, "stderr": "python3: not found"}
    assert problem(failed, port=0) == BAD_SETTINGS
    assert problem(failed, repo_url=URL) == NOT_INSPECTED + "python3: not found"
    assert problem(everything, repo_url=URL) == NO_SYSTEMD
    assert problem(answered(git={"path_exists": True, "exists": False}, config=config), repo_url=URL) == DEST_TAKEN


def test_host_is_the_answer_or_nothing():
    assert js.jupyter_server_host({"rc": 0, "stdout": '{"systemd": true}'}) == {"systemd": True}
    assert js.jupyter_server_host({"rc": 1, "stdout": '{"systemd": true}'}) == {}
    assert js.jupyter_server_host({"rc": 0, "stdout": ""}) == {}
    assert js.jupyter_server_host({}) == {}


# --- What this run keeps, and when to wait ----------------------------------------------------

COURSE = {"repo_url": URL, "repo_dest": "/home/ubuntu/course", "repo_branch": "main", "home": "/home/ubuntu"}


def test_the_course_url_decides_anew():
    known = {"root_dir": "/srv/old", "repo": {"dest": "/srv/old", "url": "u", "branch": "b"}}
    assert js.jupyter_server_course(known, COURSE) == {
        "root_dir": "/home/ubuntu/course", "repo": {"dest": "/home/ubuntu/course", "url": URL, "branch": "main"}}


def test_without_a_course_url_what_an_earlier_run_set_up_is_kept():
    known = {"root_dir": "/srv/old", "repo": {"dest": "/srv/old", "url": "u", "branch": "b"}}
    assert js.jupyter_server_course(known, {**COURSE, "repo_url": ""}) == known
    nothing = {"root_dir": "/home/ubuntu", "repo": {}}
    assert js.jupyter_server_course({}, {**COURSE, "repo_url": ""}) == nothing
    assert js.jupyter_server_course({"root_dir": None, "repo": None}, {**COURSE, "repo_url": ""}) == nothing
    assert js.jupyter_server_course(None, {**COURSE, "repo_url": ""}) == nothing


def test_the_guard_looks_at_the_repo_the_settings_name():
    assert js.jupyter_server_guard_repos(URL, "/home/ubuntu/course") == ["/home/ubuntu/course"]
    assert js.jupyter_server_guard_repos("", "/home/ubuntu/course") == []


def test_must_wait():
    wait = js.jupyter_server_must_wait
    quiet = {"service": True, "start": False, "wait": False}
    assert wait(None, False) is True  # the wait entry point on its own
    assert wait(None, True) is False  # never in check mode
    assert wait({**quiet, "start": True, "wait": True}, True) is False
    assert wait(quiet, False, {}, {}) is False
    assert wait({**quiet, "start": True}, False) is True
    assert wait({**quiet, "wait": True}, False) is True
    assert wait(quiet, False, {"changed": True}, {}) is True
    assert wait(quiet, False, {"changed": False, "skipped": True}, {"changed": True}) is True
    # Nothing of the service's to do: nothing was started.
    assert wait({"service": False, "start": True, "wait": True}, False, {"changed": True}) is False


# --- The guard's messages ---------------------------------------------------------------------

FORCE = "run again with -e gpu_lab_force_teardown=true"


def test_the_guard_warns():
    work = js.jupyter_server_unsaved_work({"rc": 0, "stdout": json.dumps(ANSWER)}, "/home/ubuntu")
    text = "on lab1, /home/ubuntu/c: 1 uncommitted file(s): a.ipynb; 1 file(s) outside any git repo: n.txt"
    assert js.jupyter_server_guard_warning(work, "lab1", "warn") == (
        f"WARNING: {text}. It stays on the disk of the stopped host; commit and push what is in the repos"
        " (git -C /home/ubuntu/c status shows it), and copy the files outside the repos off the host (scp)"
        " to keep a copy elsewhere.")
    assert js.jupyter_server_guard_warning(work, "lab1", "refuse") == f"WARNING: going on as forced, although {text}."
    gone = js.jupyter_server_unsaved_work({"unreachable": True, "msg": "ssh: timed out"}, "/home/ubuntu")
    assert js.jupyter_server_guard_warning(gone, "lab1", "warn") == (
        "WARNING: lab1 could not be looked at for unsaved work (unreachable: ssh: timed out). Whatever is there"
        " stays on the disk of the stopped host, but a teardown would delete it.")


def test_the_guard_refuses():
    work = js.jupyter_server_unsaved_work({"rc": 0, "stdout": json.dumps(ANSWER)}, "/home/ubuntu")
    assert js.jupyter_server_guard_refusal(work, "lab1", FORCE) == (
        "Refusing to go on: on lab1, /home/ubuntu/c: 1 uncommitted file(s): a.ipynb; 1 file(s) outside any git"
        " repo: n.txt. Going on would destroy it for good. Commit and push what is in the repos (git -C"
        " /home/ubuntu/c status shows it), and copy the files outside the repos off the host (scp), or run"
        " again with -e gpu_lab_force_teardown=true to destroy it anyway.")
    gone = js.jupyter_server_unsaved_work({"unreachable": True, "msg": "ssh: timed out"}, "/home/ubuntu")
    assert js.jupyter_server_guard_refusal(gone, "gone", FORCE) == (
        "Refusing to go on: gone could not be looked at for unsaved work (unreachable: ssh: timed out). Going on"
        " would destroy whatever is there for good. Make the host reachable and run this again, or run again"
        " with -e gpu_lab_force_teardown=true to destroy it anyway.")
