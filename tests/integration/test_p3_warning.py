"""The tutorial's p3.2xlarge launches, with a warning that current DLAMIs dropped its GPU."""

from __future__ import annotations

from pathlib import Path

from local_cloud.cloud import Cloud
from tests.playbook import recap, run_playbook


def test_p3_launches_with_a_warning(cloud: Cloud, tmp_path: Path) -> None:
    emulator = cloud.emulator
    lab = {"gpu_lab_ssh_cidr": "198.51.100.7/32", "gpu_lab_wait_for_ssh": "false",
           "gpu_lab_instance_type": "p3.2xlarge", "gpu_lab_name": "p3lab"}
    result = run_playbook("launch", emulator.env(), tmp_path, lab)
    out = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stdout[-3000:]
    assert "p3.2xlarge is not among the instance families" in out
    assert "P3 is Volta" in out
    assert recap(result.stdout)["changed"] > 0
    again = run_playbook("launch", emulator.env(), tmp_path, lab)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]
