# Copyright: gpu_lab developers
# MIT License
"""Filters for csdl.gpu_lab.jupyter_server: its decisions, from what files/host_state.py found.

The role inspects the host once (files/host_state.py inspect, or guard); everything it then
decides is here, as plain functions of that answer and the role's settings.
"""

from __future__ import annotations

# The filters' docs (ansible-doc -t filter csdl.gpu_lab.NAME) are in plugins/filter/NAME.yml,
# one file per filter: a DOCUMENTATION here would be shown for every filter of this file.
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

NAMED = 20  # files named in a message; the rest are counted


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _jinja_int(value: Any) -> int:
    """Jinja's int filter: the number, else the float's whole part, else 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def _abs(path: Any) -> bool:
    return isinstance(path, str) and os.path.isabs(path)


def _last_line(text: Any) -> str | None:
    lines = [line for line in str(text or "").splitlines() if line]
    return lines[-1] if lines else None


# --- What the inspection found, and what is wrong --------------------------------------------

def jupyter_server_host(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The inspection's answer (the registered command's result), parsed; {} when it failed."""
    stdout = probe.get("stdout") if probe.get("rc", 1) == 0 else ""
    return json.loads(stdout or "{}")


def settings_right(s: Mapping[str, Any]) -> bool:
    """A port 1-65535, a plain service name, absolute paths, and with a repo URL a destination and a branch."""
    port = _jinja_int(s["port"])
    return (1 <= port <= 65535 and re.match(r"^[A-Za-z0-9_.@-]+$", str(s["service"])) is not None
            and _abs(s["home"]) and _abs(s["dlami_env"]) and _abs(s["fallback_env"])
            and (not s["repo_url"] or (_abs(s["repo_dest"]) and len(str(s["repo_branch"] or "")) > 0))
            and _abs(s["token_file"]))


def not_inspected(probe: Mapping[str, Any], host: Mapping[str, Any]) -> str:
    """Why the inspection gave no answer: its own error, else the last line it wrote to stderr."""
    if "error" in host:
        return "" if host["error"] is None else str(host["error"])
    stderr = probe["module_stderr"] if "module_stderr" in probe else probe.get("stderr", "")
    return _last_line(stderr) or "no answer"


def jupyter_server_problem(s: Mapping[str, Any], probe: Mapping[str, Any]) -> str:
    """The first problem that applies, in this order, as the one sentence the role fails with; ""
    for none. s: host (the inventory name), port, service, user, home, dlami_env, fallback_env,
    repo_url, repo_dest, repo_branch, token_file, config_path; probe: the inspection's result."""
    if not settings_right(s):
        return ("Check the jupyter_server_* settings: port 1-65535, a plain service name, absolute paths for"
                " the home, the envs, the token file and (with a repo URL) the repo destination, and a branch.")
    host = jupyter_server_host(probe)
    if probe.get("rc", 1) != 0 or "error" in host:
        return (f"{s['host']} could not be inspected for jupyter_server (it needs sudo, python3 3.9 or"
                f" later, git and the user {s['user']} there): {not_inspected(probe, host)}")
    if not host.get("systemd"):
        return f"{s['host']} does not run systemd; jupyter_server runs Jupyter as a systemd service."
    git = _map(host.get("git"))
    if s["repo_url"] and git.get("path_exists") and not git.get("exists"):
        return (f"{s['repo_dest']} exists on {s['host']} but is not a git work tree:"
                " move it aside or set jupyter_server_repo_dest to another path.")
    error = _map(host.get("config")).get("error")
    if error:
        return f"{s['config_path']} on {s['host']} cannot be used ({error}): fix it or move it aside."
    return ""


# --- What this run keeps ---------------------------------------------------------------------

def jupyter_server_course(known: Mapping[str, Any] | None, s: Mapping[str, Any]) -> dict[str, Any]:
    """Jupyter's root (root_dir) and the course repo this run keeps (repo, {} for none): with a
    course URL, the settings'; without, what an earlier run set up (known: the stamp's, else what
    Jupyter's unit says), so that such a run changes nothing. s: repo_url, repo_dest, repo_branch, home."""
    known = _map(known)
    if s["repo_url"]:
        return {"root_dir": s["repo_dest"],
                "repo": {"dest": s["repo_dest"], "url": s["repo_url"], "branch": s["repo_branch"]}}
    return {"root_dir": known.get("root_dir") or s["home"], "repo": known.get("repo") or {}}


def jupyter_server_guard_repos(url: str, dest: str) -> list[str]:
    """The repos the guard looks at even where its walk would not go: the one the settings name."""
    return [dest] if url else []


# --- What the role records on the host -------------------------------------------------------

def jupyter_server_stamp(host: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The stamp's content. configured_at, the host's clock at the first configuration, never
    changes afterwards; it is None where a version that kept no stamp configured the host (its
    unit is there), as that time is unknown."""
    old = _map(host.get("stamp")).get("content")
    if isinstance(old, Mapping):
        configured_at = old.get("configured_at")
    else:
        configured_at = None if _map(host.get("unit")).get("exists") else host.get("now")
    return {"configured_by": "csdl.gpu_lab.jupyter_server", "configured_at": configured_at,
            "user": settings["user"], "home": settings["home"], "root_dir": settings["root_dir"],
            "repo": settings.get("repo") or None, "service": settings["service"]}


# --- What has to change --------------------------------------------------------------------

def files_text(files: list[str]) -> str:
    more = f" and {len(files) - NAMED} more" if len(files) > NAMED else ""
    return f"{len(files)} uncommitted file(s): {', '.join(files[:NAMED])}{more}"


def repo_blockers(git: Mapping[str, Any], branch: str) -> list[str]:
    """Why an update of the work tree could lose something (none: it is a fast-forward)."""
    blockers = [files_text(git["files"])] if git.get("files") else []
    if git.get("branch") != branch:
        blockers.append(f"HEAD is {git.get('branch') or 'detached'}, not {branch}")
    if (git.get("ahead") or 0) > 0:
        blockers.append(f"{git['ahead']} commit(s) not on origin/{branch}")
    if "ahead" in git and git["ahead"] is None:
        blockers.append(f"no origin/{branch} to compare with")
    return blockers


def repo_current(git: Mapping[str, Any], url: str) -> bool:
    """HEAD is already the branch's commit at the course URL, which origin points to. When the
    remote could not be asked, it is not (the git module runs, and says why)."""
    return (bool(git.get("exists")) and git.get("origin_url") == url
            and git.get("remote_head") is not None and git.get("remote_head") == git.get("head"))


def _owned(info: Mapping[str, Any], mode: str, owner: str, group: str | None = None) -> bool:
    return (bool(info.get("exists")) and info.get("mode") == mode and info.get("owner") == owner
            and (group is None or info.get("group") == group))


def config_right(config: Mapping[str, Any], user: str, token: str) -> bool:
    """Jupyter's config is the user's, private, holds our token, and no deprecated token overrides it."""
    return (_owned(config, "0600", user) and config.get("token_sha256") == hashlib.sha256(token.encode()).hexdigest()
            and not config.get("legacy_tokens"))


def install_needed(env: Mapping[str, Any], jupyterlab: str, notebook: str) -> bool:
    """The env lacks JupyterLab or notebook, or (ours, not the DLAMI's) holds other versions than the pins."""
    if not (env.get("jupyterlab") and env.get("notebook")):
        return True
    return not env.get("dlami") and [env["jupyterlab"], env["notebook"]] != [str(jupyterlab), str(notebook)]


def service_todo(host: Mapping[str, Any], s: Mapping[str, Any], ws_modes: tuple[str, str]) -> dict[str, bool]:
    """Each part of the service step: whether it has anything to do."""
    stamp, unit, service = _map(host.get("stamp")), _map(host.get("unit")), _map(host.get("service"))
    return {
        "config_dir": not _owned(_map(host.get("config_dir")), "0700", s["user"]),
        "config": not config_right(_map(host.get("config")), s["user"], s["token"]),
        "unit": not (_owned(unit, "0644", "root", "root") and unit.get("sha1", "") == s["unit_sha1"]),
        "ws_dir": ws_modes[1] != "700",
        "ws_token": s["ws_token"] != s["token"] or ws_modes[0] != "600",
        "start": not (service.get("enabled") == "enabled" and service.get("active") == "active"),
        "wait": host.get("api_status") != 200,
        "stamp": not (_owned(stamp, "0644", "root", "root") and stamp.get("content") == s["stamp"]),
    }


def plan(host: Mapping[str, Any], s: Mapping[str, Any], ws_modes: tuple[str, str]) -> dict[str, Any]:
    """What the role has to change on the host; ws_modes: the workstation token file's and its
    directory's permission bits ("600", "700"; "-" when missing)."""
    git = _map(host.get("git"))
    url, with_repo = s["repo_url"], bool(s["repo_url"]) and bool(git.get("exists"))
    blockers = repo_blockers(git, s["repo_branch"]) if with_repo else []
    current = bool(url) and repo_current(git, url)
    todo: dict[str, Any] = service_todo(host, s, ws_modes)
    todo["service"] = any(todo.values())
    todo.update(install=install_needed(_map(host.get("env")), s["jupyterlab_version"], s["notebook_version"]),
                blockers=blockers,
                repo=bool(url) and (bool(blockers) or not current),
                clone=bool(url) and not blockers and not current)
    return todo


def local_mode(path: str) -> str:
    """The permission bits of a path on the controller ("600"), "-" when there is none."""
    try:
        return format(stat.S_IMODE(os.stat(path).st_mode), "o")
    except (OSError, ValueError):
        return "-"


def jupyter_server_plan(host: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    token_file = str(settings["token_file"])
    return plan(host, settings, (local_mode(token_file), local_mode(os.path.dirname(token_file))))


def jupyter_server_must_wait(todo: Mapping[str, Any] | None, check_mode: bool,
                             unit_result: Mapping[str, Any] | None = None,
                             config_result: Mapping[str, Any] | None = None) -> bool:
    """Whether to wait for Jupyter: never in check mode; without the plan (the wait entry point on
    its own) always; else when it was (re)started (by the start task, or by the handler after a
    changed unit or config) or did not answer with the token."""
    if check_mode:
        return False
    if todo is None:
        return True
    changed = bool(_map(unit_result).get("changed")) or bool(_map(config_result).get("changed"))
    return bool(todo.get("service")) and (bool(todo.get("start")) or bool(todo.get("wait")) or changed)


# --- The summary ------------------------------------------------------------------------------

def jupyter_server_repo_status(todo: Mapping[str, Any] | None, s: Mapping[str, Any]) -> str:
    """The course repo's line in the summary. s: repo (this run's, {} for none), repo_url,
    repo_branch, git (what the inspection found), result (the git module's, {} when it did not run)."""
    repo, git, result = _map(s.get("repo")), _map(s.get("git")), _map(s.get("result"))
    head = git.get("head") or ""
    if not repo:
        return "no course repository (jupyter_server_repo_url is empty)"
    if not s["repo_url"]:
        return (f"{repo.get('dest')} at {(head or 'no commit')[:8]}, as an earlier run set it up"
                " (a run with jupyter_server_repo_url updates it)")
    todo = _map(todo)
    if todo.get("blockers"):
        return f"left alone at {head[:8]} ({'; '.join(todo['blockers'])})"
    if not todo.get("clone"):
        return f"up to date at {head[:8]}"
    before, after = result.get("before"), result.get("after") or ""
    if before is None:
        return f"cloned {s['repo_branch']} at {after[:8]}"
    if before != after:
        return f"updated {before[:8]} -> {after[:8]}"
    return f"up to date at {after[:8]}"


def jupyter_server_gpu(smi: Mapping[str, Any]) -> str:
    """The GPU, from nvidia-smi's answer (name,driver_version per line). A host without it is
    reported, never a failure."""
    rc, out, err = smi.get("rc"), smi.get("stdout") or "", smi.get("stderr") or ""
    if rc == 0 and out.strip():
        gpus = [line.split(",") for line in out.splitlines() if line.strip()]
        return "; ".join(f"{cells[0].strip()} (driver {','.join(cells[1:]).strip()})" for cells in gpus)
    if rc == 127:
        return "no GPU: nvidia-smi is not installed on this host"
    first = next((line for line in out.splitlines() + err.splitlines() if line), "no output")
    return f"nvidia-smi failed (exit {rc}): {first}"


# --- The guard ------------------------------------------------------------------------------

def guard_answer(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The guard's JSON answer ({} when there is none)."""
    stdout = probe.get("stdout") or ""
    if probe.get("rc", 1) != 0 or not stdout.startswith("{"):
        return {}
    answer = json.loads(stdout)
    return answer if isinstance(answer, dict) else {}


def guard_error(probe: Mapping[str, Any], answer: Mapping[str, Any]) -> str:
    """Why the host could not be looked at ("" when it was)."""
    if "report" in answer:
        return ""
    if "error" in answer:
        return str(answer["error"])
    if probe.get("unreachable"):
        return f"unreachable: {str(probe.get('msg', 'no answer')).strip()}"
    stderr = probe["module_stderr"] if "module_stderr" in probe else probe.get("stderr", "")
    return _last_line(stderr) or str(probe.get("msg", "no answer"))


def jupyter_server_unsaved_work(probe: Mapping[str, Any], home: str) -> dict[str, Any]:
    """jupyter_server_unsaved_work: the guard's answer (the registered command's result), with
    the course repo's findings on top; `checked` false (and `error`) when the host could not be
    looked at, which counts as work (`any`)."""
    answer = guard_answer(probe)
    error = guard_error(probe, answer)
    repos = answer.get("repos", [])
    course = next((r for r in repos if r.get("path") == answer.get("course_repo")), {})
    return {"checked": not error, "error": error or None, "home": answer.get("home", home),
            "baseline": answer.get("baseline"), "repos": repos,
            "loose_files": answer.get("loose_files", []), "loose_files_count": answer.get("loose_files_count", 0),
            "incomplete": answer.get("incomplete", []), "report": answer.get("report", []),
            "any": bool(error) or bool(answer.get("any", False)),
            "repo": course.get("path", ""), "files": course.get("files", []),
            "unpushed_commits": course.get("unpushed_commits", 0), "fetch_error": course.get("fetch_error")}


def jupyter_server_unsaved_text(work: Mapping[str, Any], label: str) -> str:
    """Where the work is (or why the host could not be looked at), for the guard's messages."""
    if work["checked"]:
        return f"on {label}, {'; '.join(work['report'])}"
    return f"{label} could not be looked at for unsaved work ({work['error']})"


def jupyter_server_unsaved_hint(work: Mapping[str, Any]) -> str:
    """What to do about the work, for the guard's messages."""
    repo = next((r["path"] for r in work["repos"] if r.get("any")), "")
    hints = [] if work["checked"] else ["make the host reachable and run this again"]
    if repo:
        hints.append(f"commit and push what is in the repos (git -C {repo} status shows it)")
    if work["loose_files_count"] > 0:
        hints.append("copy the files outside the repos off the host (scp)")
    if work["incomplete"]:
        hints.append("look through what the guard could not read")
    return ", and ".join(hints)


def jupyter_server_guard_warning(work: Mapping[str, Any], label: str, mode: str) -> str:
    """The warning about the work: forced past a refusal, or (stop) that it stays on the disk."""
    text = jupyter_server_unsaved_text(work, label)
    if mode == "refuse":
        return f"WARNING: going on as forced, although {text}."
    if work["checked"]:
        return (f"WARNING: {text}. It stays on the disk of the stopped host;"
                f" {jupyter_server_unsaved_hint(work)} to keep a copy elsewhere.")
    return f"WARNING: {text}. Whatever is there stays on the disk of the stopped host, but a teardown would delete it."


def jupyter_server_guard_refusal(work: Mapping[str, Any], label: str, force_hint: str) -> str:
    """The refusal: where the work is, what to do about it, and how to go on anyway."""
    hint = jupyter_server_unsaved_hint(work)
    what = "it" if work["checked"] else "whatever is there"
    return (f"Refusing to go on: {jupyter_server_unsaved_text(work, label)}. Going on would destroy {what}"
            f" for good. {hint[:1].upper()}{hint[1:]}, or {force_hint} to destroy it anyway.")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "jupyter_server_host": jupyter_server_host,
            "jupyter_server_problem": jupyter_server_problem,
            "jupyter_server_course": jupyter_server_course,
            "jupyter_server_guard_repos": jupyter_server_guard_repos,
            "jupyter_server_stamp": jupyter_server_stamp,
            "jupyter_server_plan": jupyter_server_plan,
            "jupyter_server_must_wait": jupyter_server_must_wait,
            "jupyter_server_repo_status": jupyter_server_repo_status,
            "jupyter_server_gpu": jupyter_server_gpu,
            "jupyter_server_unsaved_work": jupyter_server_unsaved_work,
            "jupyter_server_unsaved_text": jupyter_server_unsaved_text,
            "jupyter_server_unsaved_hint": jupyter_server_unsaved_hint,
            "jupyter_server_guard_warning": jupyter_server_guard_warning,
            "jupyter_server_guard_refusal": jupyter_server_guard_refusal,
        }
