"""A lost key's recovery: what each lab needs (plan_of), the question before a running lab is
stopped, the recovery user data (and what the stand-in's cloud-init makes of it), and the
script it runs, run for real on a file of authorized keys."""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import subprocess
from pathlib import Path
from typing import Any

import pytest

try:
    from local_cloud.standin import cloudinit
except ImportError:  # ansible-test units from the installed collection
    cloudinit = None
needs_local_cloud = pytest.mark.skipif(cloudinit is None, reason="no local_cloud/: the emulator is not built in")

OLD = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLDoldOLDold csdl-server"
NEW = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWnewNEWnew csdl-server"
STAFF = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISTAFFstaff bio101-admin"


def lab_of(plugin, tmp_path: Path, **more: Any):
    values = {"ec2_gpu_host_lab_name": "csdl", "ec2_gpu_host_region": "us-east-1", "ec2_gpu_host_home": str(tmp_path),
              "ec2_gpu_host_key_file": str(tmp_path / "csdl-server.pem")}
    values |= {f"ec2_gpu_host_{k}": v for k, v in more.items()}
    return plugin("plugin_utils.lab_settings").settings_of("csdl", values)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


RUNNING = {"id": "i-0abc", "state": "running"}


def test_a_key_that_matches_its_key_pair_needs_nothing(plugin, tmp_path: Path) -> None:
    plan = plugin("plugin_utils.lab_recover").plan_of(lab_of(plugin, tmp_path), RUNNING, OLD,
                                                      OLD.replace("csdl-server", "other comment"), "")
    assert plan["action"] == "none"
    assert "nothing to recover" in plan["msg"]


def test_a_lost_key_file_is_recovered_and_the_key_pairs_key_removed(plugin, tmp_path: Path) -> None:
    plan = plugin("plugin_utils.lab_recover").plan_of(lab_of(plugin, tmp_path), RUNNING, OLD, "", "")
    assert plan["action"] == "recover" and plan["new_key"] and plan["import_key"]
    assert plan["remove_keys"] == [OLD] and plan["set_aside"] == "" and plan["original"] == ""
    assert plan["was_running"] and plan["instance_id"] == "i-0abc"


def test_a_key_file_of_another_key_is_kept_aside(plugin, tmp_path: Path) -> None:
    lab = lab_of(plugin, tmp_path)
    plan = plugin("plugin_utils.lab_recover").plan_of(lab, {"id": "i-0abc", "state": "stopped"}, OLD, NEW, "")
    assert plan["action"] == "recover" and plan["set_aside"] == lab.key_file and not plan["was_running"]
    aside = plugin("plugin_utils.lab_recover").aside_name(lab.key_file, dt.datetime(2026, 12, 2, 18, 5, 1))
    assert aside == f"{lab.key_file}.replaced-20261202T180501Z"


def test_an_unfinished_recovery_is_finished_with_the_original_user_data(plugin, tmp_path: Path) -> None:
    recover = plugin("plugin_utils.lab_recover")
    original = b64("#cloud-config\nruncmd: [true]\n")
    left = recover.encoded(recover.recovery_user_data("ubuntu", NEW, [OLD], original))
    # The new key file is there and is the key pair's now: only the restore is left to do.
    plan = recover.plan_of(lab_of(plugin, tmp_path), RUNNING, NEW, NEW, left)
    assert plan["action"] == "recover" and not plan["new_key"]
    assert plan["original"] == original  # never the recovery user data itself
    assert plan["remove_keys"] == [OLD]  # the new key is never removed


def test_a_class_lab_recovers_the_admin_key_its_first_boot_authorized(plugin, tmp_path: Path) -> None:
    recover = plugin("plugin_utils.lab_recover")
    lab = lab_of(plugin, tmp_path, key_pair_public_key="ssh-ed25519 AAAAstudent ada", **{"class": "bio101"})
    first_boot = b64("#cloud-config\nssh_authorized_keys:\n- " + STAFF + "\n")
    plan = recover.plan_of(lab, RUNNING, "ssh-ed25519 AAAAstudent ada", "", first_boot)
    assert plan["action"] == "recover" and not plan["import_key"]  # the key pair stays the student's
    assert plan["remove_keys"] == [STAFF] and plan["original"] == first_boot
    # A class lab whose admin key file is there: its key pair is not this machine's to compare.
    assert recover.plan_of(lab, RUNNING, "ssh-ed25519 AAAAstudent ada", NEW, first_boot)["action"] == "none"


@pytest.mark.parametrize(("instance", "words"), [({}, "has no instance"),
                                                 ({"id": "i-0abc", "state": "shutting-down"}, "is shutting-down")])
def test_no_disk_to_keep_fails_with_what_to_do(plugin, tmp_path: Path, instance: dict[str, Any], words: str) -> None:
    plan = plugin("plugin_utils.lab_recover").plan_of(lab_of(plugin, tmp_path), instance, OLD, "", "")
    assert plan["action"] == "fail" and words in plan["msg"]


def make_run(plugin, tmp_path: Path, instance: dict[str, Any], answers: dict[str, Any], **more: Any):
    lab_run = plugin("plugin_utils.lab_run")
    calls: list[tuple[str, dict[str, Any]]] = []

    def execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return answers.get(name, {})

    lab = lab_of(plugin, tmp_path, **more)
    facts = {"resources": {"instance": instance, "addresses": []}, "address": "127.0.0.9",
             "lab": {"name": "csdl", "region": "us-east-1", "ssh_ready": True}}
    return lab_run.Run(labs={"csdl": lab}, facts={"csdl": facts}, execute=execute), calls


def test_a_running_lab_asks_before_it_is_stopped(plugin, tmp_path: Path) -> None:
    recover = plugin("plugin_utils.lab_recover")
    answers = {"csdl.gpu_lab.lab_key": {"labs": {"csdl": {"key_pair_public_key": OLD, "user_data": ""}}}}
    run, calls = make_run(plugin, tmp_path, RUNNING, answers)
    part = recover.confirm_recover_step(run)["csdl"]
    assert calls[0][1]["state"] == "query" and calls[0][1]["labs"][0]["instance_id"] == "i-0abc"
    assert not part["confirmed"] and part["confirm_word"] == "csdl"
    assert "stops and starts lab csdl's running instance i-0abc twice" in part["prompt"]
    assert "every file on the disk is kept" in part["prompt"]
    run, _unused = make_run(plugin, tmp_path, RUNNING, answers, recover_confirm="csdl")
    assert recover.confirm_recover_step(run)["csdl"]["confirmed"]
    run, _unused = make_run(plugin, tmp_path, {"id": "i-0abc", "state": "stopped"}, answers)
    assert recover.confirm_recover_step(run)["csdl"]["confirmed"]  # nothing runs: nothing to ask


def test_check_mode_plans_and_changes_nothing(plugin, tmp_path: Path) -> None:
    recover = plugin("plugin_utils.lab_recover")
    lab = lab_of(plugin, tmp_path)
    run, calls = make_run(plugin, tmp_path, RUNNING, {})
    run.check_mode = True
    run.options = {"planned": {"csdl": {"failed": False, "plan": recover.plan_of(lab, RUNNING, OLD, "", "")}}}
    part = recover.recover_key_step(run)["csdl"]
    assert calls == [] and not Path(lab.key_file).exists()
    assert part["changed"] and part["message"].startswith("Check mode: lab csdl would make a new private key")
    assert "stop i-0abc" in part["planned"]


@needs_local_cloud
def test_recovery_user_data_is_what_the_stand_in_runs_at_every_boot(plugin) -> None:
    recover = plugin("plugin_utils.lab_recover")
    text = recover.recovery_user_data("ubuntu", NEW, [OLD], "")
    assert text == recover.recovery_user_data("ubuntu", NEW, [OLD], "")  # the same input, the same text
    scripts = cloudinit.boot_scripts(text, first_boot=False)
    assert scripts == [recover.recovery_script("ubuntu", NEW, [OLD])]
    assert recover.recovery_of(recover.encoded(text)) == {"new_key": NEW, "remove_keys": [OLD],
                                                          "original_user_data": ""}
    assert recover.recovery_of(b64("#cloud-config\n")) is None
    assert recover.recovery_of("") is None
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        recover.recovery_script("ubuntu", "ssh-ed25519 AAAA'; rm -rf / #", [])


@needs_local_cloud
def test_stand_in_runs_scripts_at_first_boot_or_when_always() -> None:
    script = "#!/bin/sh\necho hi\n"
    assert cloudinit.boot_scripts(script, first_boot=True) == [script]
    assert cloudinit.boot_scripts(script, first_boot=False) == []
    assert cloudinit.boot_scripts("#cloud-config\nssh_authorized_keys: [a]\n", first_boot=True) == []
    assert cloudinit.boot_scripts(None, first_boot=True) == []
    multipart = ('Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n\n--b\n'
                 'Content-Type: text/cloud-config\n\n#cloud-config\ncloud_final_modules:\n- [scripts-user, once]\n'
                 '--b\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--b--\n')
    assert cloudinit.boot_scripts(multipart, first_boot=False) == []
    # The boundary takes the part's last newline.
    assert cloudinit.boot_scripts(multipart.replace("once", "always"), first_boot=False) == ["#!/bin/sh\necho hi"]


def run_script(plugin, tmp_path: Path, keys: str) -> str:
    """The recovery script, run for real with its folder moved to tmp_path."""
    recover = plugin("plugin_utils.lab_recover")
    user = getpass.getuser()
    script = recover.recovery_script(user, NEW, [OLD])
    folder = tmp_path / ".ssh"
    script = script.replace(f"dir=/home/{user}/.ssh\n", f"dir={folder}\n")
    assert f"dir={folder}" in script
    folder.mkdir(exist_ok=True)
    (folder / "authorized_keys").write_text(keys)
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    script = script.replace('-g "$user"', f"-g {group}").replace('chown "$user:"', f'chown "$user:{group}"')
    subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True)
    return (folder / "authorized_keys").read_text()


def test_the_script_replaces_the_lost_key_and_keeps_the_others_at_every_boot(plugin, tmp_path: Path) -> None:
    first = run_script(plugin, tmp_path, f"{OLD}\n{STAFF}\n")
    assert first == f"{STAFF}\n{NEW}\n"
    assert run_script(plugin, tmp_path, first) == first  # a boot more changes nothing
    assert (tmp_path / ".ssh" / "authorized_keys").stat().st_mode & 0o777 == 0o600
    assert run_script(plugin, tmp_path, "") == f"{NEW}\n"  # no file yet: only the new key


def test_a_stale_public_key_file_is_kept_aside(plugin, tmp_path: Path) -> None:
    """ssh offers the key of the .pub beside the file: a stale one would break the new key."""
    recover = plugin("plugin_utils.lab_recover")
    key = tmp_path / "csdl-server.pem"
    when = dt.datetime(2026, 12, 2, 18, 5, 1)
    assert recover.set_aside_stale_public(str(key), NEW, when) == ""  # none there
    (tmp_path / "csdl-server.pem.pub").write_text(NEW + "\n")
    assert recover.set_aside_stale_public(str(key), NEW, when) == ""  # the same key: kept
    (tmp_path / "csdl-server.pem.pub").write_text(OLD + "\n")
    aside = recover.set_aside_stale_public(str(key), NEW, when)
    assert aside == f"{key}.pub.replaced-20261202T180501Z"
    assert Path(aside).read_text() == OLD + "\n" and not (tmp_path / "csdl-server.pem.pub").exists()
