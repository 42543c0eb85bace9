"""The daily shelve timer (-e gpu_lab_shelve_timer=true on launch.yml), through the real playbooks
against the emulated cloud, with a booted stand-in host (the workstation is set up once SSH
answers): the launch writes the script, the systemd user units and the link that enables the
timer, in the test's home (not the login home: written, not started), and warns while the AWS
credentials are environment variables only; a second launch changes nothing. The script, run
as systemd runs it (an empty environment, credentials only from ~/.aws/credentials), shelves
the lab once it has been stopped for its gpu_lab_shelve_after_days, which only the launch was
given. A launch without the timer removes it; a teardown removes everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_cloud.cloud import Cloud
from tests.aws_state import lab_state
from tests.playbook import REPO, run_playbook, succeeded

# The lab of the checkout's inventory (inventories/csdl): the timer runs the lab's status command
# as <lab>-status does, which passes no -e, so the lab is the inventory's own.
LAB = "csdl"
SETTINGS = {"gpu_lab_ssh_cidr": "127.0.0.1/32"}
TIMER = {**SETTINGS, "gpu_lab_shelve_timer": "true", "gpu_lab_shelve_after_days": "0.00002"}  # 1.7 s
TEARDOWN = {**SETTINGS, "gpu_lab_confirm_teardown": LAB, "gpu_lab_force_teardown": "true"}


def shelves(aws: Callable[..., Any]) -> list[dict[str, Any]]:
    return aws("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:gpu_lab:lab", "Values": [LAB]}, {"Name": "tag:gpu_lab:shelf", "Values": ["true"]}])["Images"]


def test_the_timer_shelves_a_lab_stopped_too_long_and_goes_with_the_lab(hosts_cloud: Cloud, aws: Callable[..., Any],
                                                                        tmp_path: Path) -> None:
    home = tmp_path
    # As from the user's shell in the checkout: the aliases (and the timer) run there.
    env = {**hosts_cloud.env(), "PWD": str(REPO)}
    units = home / ".config" / "systemd" / "user"
    script = home / ".gpu_lab" / LAB / "shelve-check.sh"
    service, timer = units / f"gpu-lab-{LAB}-shelve.service", units / f"gpu-lab-{LAB}-shelve.timer"
    link = units / "timers.target.wants" / timer.name

    launched = succeeded(run_playbook("launch", env, home, TIMER))
    assert f"A daily timer (systemd {timer.name}) runs {LAB}-status" in launched, launched[-3000:]
    assert f"It is written in {home}, not your login home: not started." in launched
    # (Not "This run's": the YAML callback doubles the quote.)
    assert "AWS credentials are only environment variables (AWS_ACCESS_KEY_ID)" in launched
    assert "Remove it: launch.yml without gpu_lab_shelve_timer, or teardown.yml." in launched
    assert (script.stat().st_mode & 0o777, service.stat().st_mode & 0o777, timer.stat().st_mode & 0o777) == (
        0o700, 0o644, 0o644)
    assert link.is_symlink() and os.readlink(link) == str(timer)
    text = script.read_text()
    assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text and "AWS_SESSION_TOKEN" not in text
    assert f"export AWS_ENDPOINT_URL={env['AWS_ENDPOINT_URL']}\n" in text and f"export HOME={home}\n" in text
    verify = shutil.which("systemd-analyze")
    if verify:  # else: not a systemd machine; the units' text is asserted by the unit tests
        checked = subprocess.run([verify, "verify", str(service), str(timer)], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # The timer reads the shared credentials file (it keeps no secret): with one, no warning.
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    again = succeeded(run_playbook("launch", env, home, TIMER), changed=0)
    assert "only environment variables" not in again

    succeeded(run_playbook("stop", env, home, SETTINGS))
    time.sleep(3)
    # As systemd runs it: nothing of this run's environment, no AWS variable but those it exports.
    ran = subprocess.run(["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "/bin/sh", str(script)],
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    out = " ".join((ran.stdout + ran.stderr).split())
    assert ran.returncode == 0, out[-3000:]
    assert f"Lab {LAB} is shelved: its disk is the image" in out, out[-3000:]
    assert len(shelves(aws)) == 1 and lab_state(aws("ec2"), LAB)["instances"] == []

    # Without the timer, a launch (from the shelf) removes it.
    back = succeeded(run_playbook("launch", env, home, SETTINGS))
    assert f"The daily shelve timer (systemd {timer.name}) is removed from {home}." in back, back[-3000:]
    assert not script.exists() and not service.exists() and not timer.exists() and not link.is_symlink()

    succeeded(run_playbook("launch", env, home, TIMER))
    assert link.is_symlink()
    gone = succeeded(run_playbook("teardown", env, home, TEARDOWN))
    assert "the daily shelve timer" in gone, gone[-3000:]
    assert not link.is_symlink() and not timer.exists() and not service.exists() and not script.exists()
    assert not (home / ".config").exists() and not (home / ".gpu_lab").exists()
