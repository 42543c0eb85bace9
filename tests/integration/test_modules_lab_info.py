"""csdl.gpu_lab.lab_info against the emulated EC2 API, run as Ansible runs it
(`ansible localhost -m csdl.gpu_lab.lab_info -a JSON`): the facts the preflight checks read
(architectures, GPU count, image architecture), the lab found in another region, the same
answer in check mode, and a silent endpoint given up within the bound, in one sentence.

The helpers here (``Modules``, ``launch_spec``) also serve test_modules_lab_host.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.silent import silent_endpoint
from tests.playbook import BIN, REPO

LIVE = ("pending", "running", "stopping", "stopped")


class Modules:
    """Runs one of the collection's modules on localhost, as an ad-hoc `ansible` command from a
    folder of its own (no ansible.cfg, no inventory: the implicit localhost and this Python),
    and gives its result."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.env = env
        self.work = work
        work.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, args: dict[str, Any], check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 300) -> tuple[dict[str, Any], float]:
        """(the module's result, seconds the command took)."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_", "GPU_LAB_"))}
        full_env.update(self.env)
        full_env.update(env or {})
        full_env.update({"HOME": str(self.work), "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".ansible" / "collections"),
                         "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                         "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{full_env.get('PATH', '')}"})
        cmd = [str(BIN / "ansible"), "localhost", "-c", "local", "-m", f"csdl.gpu_lab.{name}",
               "-a", json.dumps(args), *(["--check"] if check else [])]
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=self.work, env=full_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        elapsed = time.monotonic() - start
        try:
            result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError) as exc:
            raise AssertionError(f"no module result (rc {done.returncode}):\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}") from exc
        return result, elapsed

    def __call__(self, name: str, args: dict[str, Any], check: bool = False) -> dict[str, Any]:
        return self.run(name, args, check)[0]

    def info(self, *queries: dict[str, Any], check: bool = False, **options: Any) -> dict[str, dict[str, Any]]:
        """lab_info for these labs: each lab's part."""
        result = self("lab_info", {"labs": list(queries), **options}, check)
        assert not result.get("failed"), result
        return result["labs"]

    def host(self, *specs: dict[str, Any], check: bool = False, state: str = "present") -> dict[str, dict[str, Any]]:
        """lab_host for these labs: each lab's part."""
        result = self("lab_host", {"labs": list(specs), "state": state}, check)
        assert "labs" in result, result
        return result["labs"]


def modules_for(cloud: Cloud, tmp_path: Path) -> Modules:
    """The modules against the emptied emulated cloud; no stand-in host boots (none is needed)."""
    if cloud.controller is not None:
        cloud.controller.only(lambda observed: False)
    return Modules(cloud.env(), tmp_path / "work")


@pytest.fixture
def modules(cloud: Cloud, tmp_path: Path) -> Modules:
    return modules_for(cloud, tmp_path)


def image_of(cloud: Cloud, region: str = "us-east-1", architecture: str = "x86_64") -> str:
    """A DLAMI of the region, by its SSM parameter's architecture path."""
    return next(ami for name, ami in cloud.emulator.dlami[region].items() if f"/ami/{architecture}/" in name)


def query(lab: str, region: str = "us-east-1", **extra: Any) -> dict[str, Any]:
    """What the labs action asks lab_info about one lab (plugin_utils/lab_run.query)."""
    return {"lab": lab, "region": region, "key_name": f"{lab}-server", "security_group_name": f"{lab}-ssh", **extra}


def launch_spec(cloud: Cloud, aws: Callable[..., Any], lab: str, region: str = "us-east-1",
                **extra: Any) -> dict[str, Any]:
    """What provision.yml gives lab_host to launch a new lab (its key pair made here first)."""
    aws("ec2", region).create_key_pair(KeyName=f"{lab}-server")
    return {"lab": lab, "region": region, "instance_types": ["g6.xlarge", "g5.xlarge"],
            "image_id": image_of(cloud, region), "key_name": f"{lab}-server", "volume_size": 100,
            "security_group": {"name": f"{lab}-ssh", "description": f"SSH to {lab}",
                               "ssh_cidrs": ["198.51.100.7/32"]},
            "tags": {"gpu_lab:lab": lab, "gpu_lab:managed_by": "csdl.gpu_lab"}, **extra}


def rerun_spec(spec: dict[str, Any], found: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The same lab again, with what lab_info found of it."""
    return {**spec, "instance": found["instance"], "addresses": found["addresses"],
            "security_group_id": found["security_group"].get("group_id"), **extra}


def live_instances(aws: Callable[..., Any], lab: str, region: str = "us-east-1") -> list[dict[str, Any]]:
    pages = aws("ec2", region).describe_instances(Filters=[{"Name": "tag:gpu_lab:lab", "Values": [lab]},
                                                           {"Name": "instance-state-name", "Values": list(LIVE)}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


# --- facts for the preflight checks --------------------------------------------------------

def test_candidate_types_and_images_say_architecture_and_gpus(cloud: Cloud, modules: Modules) -> None:
    x86 = query("facts", instance_types=["g6.xlarge", "g5g.xlarge", "t3.micro", "g9.nothing"],
                image={"image_id": image_of(cloud)})
    arm = query("armlab", instance_types=["g5g.xlarge"], image={"image_id": image_of(cloud, architecture="arm64")})
    found = modules.info(x86, arm)
    types = {t["name"]: t for t in found["facts"]["instance_types"]}
    assert (types["g6.xlarge"]["architectures"], types["g6.xlarge"]["gpu_count"]) == (["x86_64"], 1)
    assert types["g6.xlarge"]["gpus"].startswith("1 x NVIDIA L4")
    assert (types["g5g.xlarge"]["architectures"], types["g5g.xlarge"]["gpu_count"]) == (["arm64"], 1)
    assert (types["t3.micro"]["gpu_count"], types["t3.micro"]["gpus"]) == (0, "")
    assert types["g9.nothing"] == {"name": "g9.nothing", "exists": False, "vcpus": 0, "gpus": "", "gpu_count": 0,
                                   "architectures": []}
    assert found["facts"]["image"]["architecture"] == "x86_64"
    assert found["armlab"]["image"]["architecture"] == "arm64"


# --- the lab in another region ------------------------------------------------------------

def test_a_lab_running_in_another_region_is_found_there(cloud: Cloud, aws: Callable[..., Any],
                                                        modules: Modules) -> None:
    launched = modules.host(launch_spec(cloud, aws, "roam", "us-east-1"))["roam"]
    assert launched.get("launched"), launched
    cloud.emulator.calls.reset()
    # The same lab set to us-west-2 now, asking where it was launched; another lab asks too
    # (one call there for both), a third names its own region only.
    found = modules.info(query("roam", "us-west-2", other_regions=["us-east-1"]),
                         query("other", "us-west-2", other_regions=["us-east-1", "us-west-2"]),
                         query("homebody", "us-east-1", other_regions=["us-east-1"]))
    assert found["roam"]["instance"] == {}  # nothing in its own region...
    (elsewhere,) = found["roam"]["elsewhere"]  # ...but it runs in the other
    assert elsewhere["region"] == "us-east-1"
    assert (elsewhere["instance"]["id"], elsewhere["instance"]["state"], elsewhere["instance"]["type"]) == (
        launched["instance"]["id"], "running", "g6.xlarge")
    assert found["other"]["elsewhere"] == [] and found["homebody"]["elsewhere"] == []
    # One DescribeInstances per region: us-west-2's own (roam, other), us-east-1's own
    # (homebody), and one for the two that ask about us-east-1.
    assert cloud.emulator.calls.snapshot()["by_action"]["ec2:DescribeInstances"] == 3


# --- check mode -----------------------------------------------------------------------------

def test_the_answer_is_the_same_in_check_mode(cloud: Cloud, aws: Callable[..., Any], modules: Modules) -> None:
    modules.host(launch_spec(cloud, aws, "same"))
    ask = {"labs": [query("same", instance_types=["g6.xlarge"], wanted={"instance_type": "g6.xlarge",
                                                                        "volume_size": 150}),
                    query("empty", instance_types=["g5.xlarge"], image={"image_id": image_of(cloud)})],
           "volumes": True, "orphans": True}
    real = modules("lab_info", ask)
    checked = modules("lab_info", ask, check=True)
    assert real["changed"] is False and checked["changed"] is False
    assert checked["labs"] == real["labs"]
    assert real["labs"]["same"]["drift"]["apply"] == {"volume_size": 150}  # an answer worth comparing


# --- bounded waits --------------------------------------------------------------------------

SHORT = {"GPU_LAB_AWS_CONNECT_TIMEOUT": "2", "GPU_LAB_AWS_READ_TIMEOUT": "2"}


def test_a_silent_endpoint_fails_the_lookup_within_the_bound(cloud: Cloud, modules: Modules) -> None:
    with silent_endpoint() as url:
        result, elapsed = modules.run("lab_info", query("hush", instance_types=["g6.xlarge"]),
                                      env={"AWS_ENDPOINT_URL": url, **SHORT})
    assert result.get("failed"), result
    assert result["msg"] == (f"AWS ({url}) accepted the connection but did not answer within 2 s (tried 2 times): "
                             "check your network or AWS_ENDPOINT_URL, then run again.")
    # Two tries of 2 s and Ansible's own start: far below what botocore's defaults give (minutes).
    assert elapsed < 20, elapsed


def test_a_silent_endpoint_fails_a_teardown_within_the_bound(cloud: Cloud, modules: Modules) -> None:
    spec = {"lab": "hush", "addresses": [{"public_ip": "203.0.113.5", "allocation_id": "eipalloc-1"}],
            "instances": [{"id": "i-0abc"}]}
    with silent_endpoint() as url:
        result, elapsed = modules.run("lab_host", {"labs": [spec], "state": "absent"},
                                      env={"AWS_ENDPOINT_URL": url, **SHORT})
    lab = result["labs"]["hush"]
    assert lab["failed"] and lab["msg"] == (
        f"AWS ({url}) accepted the connection but did not answer within 2 s (tried 2 times): check your network or "
        "AWS_ENDPOINT_URL, then run again.")
    assert lab["removed"]["addresses"] == []
    assert elapsed < 20, elapsed


def test_a_timeout_setting_that_is_not_seconds_is_refused(cloud: Cloud, modules: Modules) -> None:
    result, _ = modules.run("lab_info", query("hush"), env={"GPU_LAB_AWS_READ_TIMEOUT": "soon"})
    assert result.get("failed")
    assert result["msg"] == ("GPU_LAB_AWS_READ_TIMEOUT is 'soon': set it to a number of seconds between 0 and 300 "
                             "(default 30), or unset it.")
