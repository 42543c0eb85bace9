"""step=check and step=launch: every lab in one lab_info call and one lab_host call; a lab with
a problem fails alone with its sentences; the keys are made once per file, the record written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

GPU = {"name": "g6.xlarge", "exists": True, "gpu_count": 1, "architectures": ["x86_64"]}
IMAGE = {"image_id": "ami-0123456789abcdef0", "architecture": "x86_64", "root_size_gib": 75}
RUNNING = {"id": "i-1", "state": "running", "type": "g6.xlarge", "zone": "us-east-1a",
           "tags": {"gpu_lab:autostop_minutes": "60", "gpu_lab:idle_alarm": "false",
                    "gpu_lab:shelve_after_days": "0"}}


def found_of(**more: Any) -> dict[str, Any]:
    return {"instance": {}, "instances": [], "addresses": [], "security_group": {}, "key_pair": {},
            "instance_types": [GPU], "image": IMAGE, "drift": {"apply": {}, "refuse": [], "notes": []},
            "elsewhere": []} | more


@pytest.fixture
def make_run(plugin, tmp_path: Path):
    settings, lab_run = plugin("plugin_utils.lab_settings"), plugin("plugin_utils.lab_run")

    def make(labs: dict[str, dict[str, Any]], answers: dict[str, dict[str, Any]], check_mode: bool = False,
             options: dict[str, Any] | None = None):
        calls: list[tuple[str, dict[str, Any]]] = []

        def execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
            calls.append((name, args))
            return answers.get(name, {})

        settings_by_host = {
            host: settings.settings_of(host, {
                "ec2_gpu_host_lab_name": host, "ec2_gpu_host_region": "us-east-1",
                "ec2_gpu_host_instance_type": "g6.xlarge", "ec2_gpu_host_fallback_instance_types": [],
                "ec2_gpu_host_home": str(tmp_path), "ec2_gpu_host_ssh_cidr": "198.51.100.7/32",
                "ec2_gpu_host_key_file": str(tmp_path / ".ssh" / f"{host}-server.pem")}
                | {f"ec2_gpu_host_{k}" if not k.startswith("gpu_lab_") else k: v for k, v in given.items()})
            for host, given in labs.items()}
        run = lab_run.Run(labs=settings_by_host, options=options or {}, check_mode=check_mode, execute=execute)
        return run, calls
    return make


@pytest.fixture
def launch(plugin):
    return plugin("plugin_utils.lab_launch")


# --- step=check --------------------------------------------------------------------------------

def test_check_finds_every_good_lab_in_one_call_and_fails_each_bad_one_alone(launch, make_run) -> None:
    answer = {"labs": {"a1": found_of(), "c3": found_of(instance_types=[GPU | {"name": "m5.xlarge", "gpu_count": 0}])}}
    run, calls = make_run({"a1": {}, "b2": {"volume_size": "lots"}, "c3": {"instance_type": "m5.xlarge"}},
                          {"csdl.gpu_lab.lab_info": answer})
    parts = launch.check_step(run)
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_info"]
    assert [entry["lab"] for entry in calls[0][1]["labs"]] == ["a1", "c3"]  # b2 failed offline: not asked
    assert calls[0][1]["labs"][0]["instance_types"] == ["g6.xlarge"]  # a launch's query
    assert parts["b2"]["failed"] and parts["b2"]["msg"].startswith("Volume size 'lots' is not valid")
    assert parts["c3"]["failed"] and parts["c3"]["msg"].startswith("Instance type m5.xlarge has no GPU")
    good = parts["a1"]
    assert not good["failed"] and good["found"]["image"] == IMAGE and good["cidrs"] == ["198.51.100.7/32"]
    assert good["reconcile"] == {"security_group": False, "key_pair": False, "instance_tags": False, "needed": False}
    assert good["security_group"]["name"] == "a1-ssh" and good["key_name"] == "a1-server"


def test_check_says_every_problem_of_a_lab_in_one_message(launch, make_run) -> None:
    run, calls = make_run({"a1": {"lab_name": "A_1", "volume_size": "lots"}}, {})
    msg = launch.check_step(run)["a1"]["msg"]
    assert msg.startswith("Lab name 'A_1' is not valid") and " Volume size 'lots' is not valid" in msg
    assert calls == []


def test_the_lab_wide_settings_come_first_and_alone(launch, make_run) -> None:
    run, calls = make_run({"a1": {"gpu_lab_jupyter_port": "80", "volume_size": "lots"}}, {})
    assert launch.check_step(run)["a1"]["msg"] == (
        "Jupyter port '80' is not valid: set gpu_lab_jupyter_port to a whole number from 1024 to 65535 "
        "(8888 is usual).")
    assert calls == []


def test_the_course_is_read_once_for_the_class(launch, make_run, monkeypatch) -> None:
    local = launch.lab_launch_local
    reads: list[tuple[str, str]] = []
    monkeypatch.setattr(local, "read_course", lambda repo, branch, timeout: reads.append((repo, branch)) or (2, ""))
    course = {"gpu_lab_course_repo": "https://example.org/c.git", "gpu_lab_course_branch": "spring"}
    run, _unused = make_run({"a1": course, "b2": course}, {})
    parts = launch.check_step(run)
    assert reads == [("https://example.org/c.git", "spring")]
    assert parts["b2"]["msg"].startswith("Course repository https://example.org/c.git has no branch 'spring'")


def test_this_machine_address_is_asked_once_and_only_when_needed(launch, make_run, monkeypatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(launch, "ask_address", lambda url: asked.append(url) or launch.IpCheck(content="203.0.113.9\n"))
    answer = {"labs": {"a1": found_of(), "b2": found_of()}}
    run, _unused = make_run({"a1": {"ssh_cidr": ""}, "b2": {"ssh_cidr": ""}}, {"csdl.gpu_lab.lab_info": answer})
    parts = launch.check_step(run)
    assert asked == ["https://checkip.amazonaws.com"]
    assert parts["a1"]["cidrs"] == parts["b2"]["cidrs"] == ["203.0.113.9/32"]
    asked.clear()
    run, _unused = make_run({"a1": {}}, {"csdl.gpu_lab.lab_info": {"labs": {"a1": found_of()}}})
    launch.check_step(run)
    assert asked == []


def test_the_address_check_answer(launch, tmp_path: Path) -> None:
    page = tmp_path / "ip"
    page.write_text("203.0.113.9\n")
    answer = launch.ask_address(page.as_uri())
    assert (answer.content, answer.msg) == ("203.0.113.9\n", "OK (12 bytes)")
    missing = launch.ask_address((tmp_path / "none").as_uri())
    assert missing.content == "" and missing.status == 0 and "No such file or directory" in missing.msg


def test_aws_not_read_fails_every_lab_with_its_message(launch, make_run) -> None:
    run, _unused = make_run({"a1": {}, "b2": {}}, {"csdl.gpu_lab.lab_info": {"failed": True, "msg": "No working AWS."}})
    parts = launch.check_step(run)
    assert parts["a1"] == parts["b2"] == {"failed": True, "changed": False, "msg": "No working AWS."}


# --- step=launch -------------------------------------------------------------------------------

def checked(**found: Any) -> dict[str, Any]:
    return {"failed": False, "changed": False, "found": found_of(**found), "cidrs": ["198.51.100.7/32"],
            "reconcile": {"security_group": False, "key_pair": False, "instance_tags": False, "needed": False}}


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_launch_makes_keys_once_calls_lab_host_once_and_records(launch, make_run, tmp_path: Path) -> None:
    admin = str(tmp_path / ".ssh" / "bio-admin.pem")
    answer = {"labs": {"a1": {"changed": True, "launched": True, "instance": RUNNING | {"id": "i-a"},
                              "address": {"public_ip": "127.0.0.5"}, "attempts": []},
                       "b2": {"failed": True, "msg": "No capacity.", "attempts": [{"type": "g6.xlarge"}]}}}
    running = checked(instance=RUNNING, addresses=[{"public_ip": "127.0.0.7", "instance_id": "i-1"}],
                      key_pair={"name": "c3-server"})
    run, calls = make_run({"a1": {"key_file": admin}, "b2": {"key_file": admin}, "c3": {}},
                          {"csdl.gpu_lab.lab_host": answer},
                          options={"checked": {"a1": checked(), "b2": checked(), "c3": running}})
    parts = launch.launch_step(run)
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_host"]
    specs = calls[0][1]["labs"]
    assert [s["lab"] for s in specs] == ["a1", "b2"]  # c3 runs at its address already
    public = Path(admin).with_suffix(".pem")
    assert oct(public.stat().st_mode & 0o777) == "0o400"
    assert specs[0]["key_pair"]["public_key"].startswith("ssh-ed25519 ")
    assert specs[0]["key_pair"]["public_key"] == specs[1]["key_pair"]["public_key"]  # one file, one key
    assert parts["a1"]["changed"] and parts["a1"]["address"] == "127.0.0.5"
    assert parts["a1"]["launch_note"] == "Launched g6.xlarge in us-east-1a."
    record = tmp_path / ".gpu_lab" / "a1" / "lab.json"
    assert record.read_text() == '{\n    "instance_id": "i-a",\n    "lab": "a1",\n    "region": "us-east-1"\n}\n'
    assert oct(record.stat().st_mode & 0o777) == "0o600" and oct(record.parent.stat().st_mode & 0o777) == "0o700"
    # A lab lab_host could not bring up fails alone, and still says what it tried.
    assert parts["b2"]["failed"] and parts["b2"]["msg"] == "No capacity."
    assert parts["b2"]["launch_attempts"] == [{"type": "g6.xlarge"}]
    assert not (tmp_path / ".gpu_lab" / "b2").exists()
    # Nothing to do but record where it lives; a second run changes nothing.
    assert parts["c3"]["changed"] and parts["c3"]["address"] == "127.0.0.7"
    assert json.loads((tmp_path / ".gpu_lab" / "c3" / "lab.json").read_text())["instance_id"] == "i-1"
    run, calls = make_run({"c3": {}}, {}, options={"checked": {"c3": running}})
    again = launch.launch_step(run)
    assert calls == [] and not again["c3"]["changed"] and not again["c3"]["failed"]


def test_check_mode_makes_nothing_and_says_what_it_would_do(launch, make_run, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"changed": True, "instance": {}, "address": {}, "attempts": [],
                              "planned": ["import key pair a1-server", "launch g6.xlarge"]}}}
    run, calls = make_run({"a1": {}}, {"csdl.gpu_lab.lab_host": answer}, check_mode=True,
                          options={"checked": {"a1": checked()}})
    part = launch.launch_step(run)["a1"]
    assert calls[0][1]["labs"][0]["key_pair"]["public_key"] == ""  # no key made, nor read
    assert not (tmp_path / ".ssh").exists()
    key = tmp_path / ".ssh" / "a1-server.pem"
    assert part["check_note"] == (f"Check mode: lab a1 would make the private key {key} on this machine; "
                                  "import key pair a1-server; launch g6.xlarge.")
    assert part["changed"] and not part["lab"]["ssh_ready"]


def test_a_lab_not_checked_or_lab_host_failing_as_a_whole(launch, make_run) -> None:
    run, calls = make_run({"a1": {}, "b2": {}}, {"csdl.gpu_lab.lab_host": {"failed": True, "msg": "Boom."}},
                          check_mode=True, options={"checked": {"b2": checked()}})
    parts = launch.launch_step(run)
    assert parts["a1"]["failed"] and "was not checked" in parts["a1"]["msg"]
    assert parts["b2"]["failed"] and parts["b2"]["msg"] == "Boom."
    assert [s["lab"] for s in calls[0][1]["labs"]] == ["b2"]


def test_a_rotated_key_pair_is_imported_again(launch, make_run) -> None:
    part = checked(key_pair={"name": "a1-server"})
    part["reconcile"]["key_pair"] = True
    run, calls = make_run({"a1": {}}, {"csdl.gpu_lab.lab_host": {"labs": {"a1": {"instance": {}}}}},
                          check_mode=True, options={"checked": {"a1": part}})
    launch.launch_step(run)
    assert calls[0][1]["labs"][0]["key_pair"] == {"name": "a1-server", "public_key": ""}
