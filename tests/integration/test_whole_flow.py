"""The whole flow, as a student lives it, on the emulated EC2 API and a booted stand-in host.

launch.yml -> the course repo is cloned and Jupyter runs as a service -> `ssh-flow` from a
real interactive bash reaches the host with the pinned host key -> Jupyter answers through
a real SSH tunnel (token required), runs a notebook of the course through its kernel API,
and a real headless Chromium shows the JupyterLab file browser listing the course ->
stop.yml (host gone, address kept) -> start.yml (Jupyter back at the same URL) -> the
unpushed-work guard refuses teardown, which goes ahead when forced -> nothing left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from tests.jupyter_access import Tunnel, free_port, http, http_json, wait_for_jupyter
from tests.playbook import REPO, changed_tasks, recaps, run_playbook

LAB = "flow"
ARTIFACTS = REPO / "tests" / "output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_notebook_through_kernel(base: str, token: str, path: str) -> str:
    """Runs every code cell of a notebook of the course in a new kernel; returns stdout."""
    import websocket  # websocket-client

    notebook = http_json("GET", f"{base}/api/contents/{path}?token={token}")["content"]
    kernel = http_json("POST", f"{base}/api/kernels?token={token}", {"name": "python3"})
    ws = websocket.create_connection(
        f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel['id']}/channels?token={token}", timeout=30)
    output = []
    try:
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": "".join(cell["source"]), "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            }))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    output.append(msg["content"]["text"])
                if msg["msg_type"] == "error":
                    raise AssertionError(f"cell failed: {msg['content']}")
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
    finally:
        ws.close()
        http_json("DELETE", f"{base}/api/kernels/{kernel['id']}?token={token}")
    return "".join(output)


def browser(url: str, screenshot: Path) -> str:
    """Headless Chromium: screenshot of the page, and its DOM once JupyterLab has drawn."""
    assert CHROMIUM, "chromium is not installed (scripts/bootstrap.sh installs it as root)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--window-size=1280,800", "--virtual-time-budget=20000"]
    profile = screenshot.parent / f"chromium-{uuid.uuid4().hex}"
    try:
        subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url],
                       check=True, capture_output=True, timeout=120)
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
                             check=True, capture_output=True, text=True, timeout=120).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return dom


def ssh_lab(home: Path, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`ssh-flow` from a real interactive bash, running one command."""
    return subprocess.run(["bash", "-ic", f"ssh-{LAB} -o BatchMode=yes {command!r}"],
                          env={"HOME": str(home), "PATH": os.environ["PATH"], "TERM": "dumb"},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def world(hosts_cloud: Cloud, tmp_path: Path) -> Iterator[dict[str, Any]]:
    url, head = make_course_repo(hosts_cloud.controller.share_dir, name="flowcourse")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the student's own bashrc\nexport EDITOR=nano\n")
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url,
           "gpu_lab_confirm_teardown": LAB}
    yield {"cloud": hosts_cloud, "home": home, "lab": lab, "head": head}


def test_whole_flow(world: dict[str, Any]) -> None:
    cloud: Cloud = world["cloud"]
    home: Path = world["home"]
    lab: dict[str, str] = world["lab"]
    env = cloud.env()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    launched = run_playbook("launch", env, home, lab)
    assert launched.returncode == 0, launched.stdout[-4000:] + launched.stderr[-2000:]
    out = launched.stdout
    assert f"Jupyter (once connected): {LAB}-jupyter, or open the URL in {home}/.gpu_lab/{LAB}/jupyter_url" in out
    assert "Shortcuts (in a new terminal): ssh-flow, flow-start, flow-stop, flow-status" in out

    again = run_playbook("launch", env, home, lab)
    assert again.returncode == 0, again.stdout[-4000:]
    assert {host: r["changed"] for host, r in recaps(again.stdout).items()} == {"localhost": 0, f"{LAB}-server": 0}, \
        changed_tasks(again.stdout)

    # ssh-flow from a real interactive bash, host key pinned (StrictHostKeyChecking yes).
    whoami = ssh_lab(home, "whoami; git -C ~/flowcourse rev-parse HEAD")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.split() == ["ubuntu", world["head"]]

    token = (home / ".gpu_lab" / LAB / "jupyter_token").read_text().strip()
    assert (home / ".gpu_lab" / LAB / "jupyter_token").stat().st_mode & 0o777 == 0o600
    assert token not in launched.stdout + launched.stderr + again.stdout + again.stderr
    url_file = home / ".gpu_lab" / LAB / "jupyter_url"
    assert url_file.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(rf"http://localhost:\d+/lab\?token={token}\n", url_file.read_text())
    tunnel = Tunnel(home, free_port(), LAB)
    try:
        base = f"http://127.0.0.1:{tunnel.local_port}"
        wait_for_jupyter(base, token)
        assert http(f"{base}/api/status")[0] in (401, 403)
        assert http(f"{base}/api/contents/README.md?token=wrong")[0] in (401, 403)
        assert "sum of squares: 285" in run_notebook_through_kernel(base, token, "week1.ipynb")
        dom = browser(f"{base}/lab?token={token}", ARTIFACTS / "jupyterlab_file_browser.png")
        assert "jp-DirListing" in dom and "week1.ipynb" in dom and "README.md" in dom
        assert (ARTIFACTS / "jupyterlab_file_browser.png").stat().st_size > 10_000
    finally:
        tunnel.close()
    resolved = subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-G", LAB],
                              env={**os.environ, "HOME": str(home)},
                              capture_output=True, text=True, check=True).stdout.splitlines()
    # The ssh entry's own LocalForward (what ssh-flow opens) reaches Jupyter too.
    forward = next(line.split()[1] for line in resolved if line.startswith("localforward "))
    entry = Tunnel(home, int(forward.rsplit(":", 1)[-1]), LAB, entry_forward=True)
    try:
        wait_for_jupyter(f"http://127.0.0.1:{entry.local_port}", token)
    finally:
        entry.close()

    # Jupyter is not on the Elastic IP itself: only the tunnel reaches it.
    address = next(line.split()[1] for line in resolved if line.startswith("hostname "))
    with pytest.raises(OSError):
        socket.create_connection((address, 8888), timeout=2).close()

    # stop: unsaved work is named but kept; the host goes away, the address stays.
    assert ssh_lab(home, "echo draft >> ~/flowcourse/README.md").returncode == 0
    stopped = run_playbook("stop", env, home, lab)
    assert stopped.returncode == 0, stopped.stdout[-4000:]
    assert "README.md" in stopped.stdout
    with pytest.raises(OSError):
        socket.create_connection((address, 22), timeout=2).close()
    assert f"{LAB.upper()}_IP={address}" in " ".join((home / ".bashrc").read_text().split()).replace("export ", "")

    started = run_playbook("start", env, home, lab)
    assert started.returncode == 0, started.stdout[-4000:]
    tunnel = Tunnel(home, free_port(), LAB)
    try:
        wait_for_jupyter(f"http://127.0.0.1:{tunnel.local_port}", token)
    finally:
        tunnel.close()
    assert "draft" in ssh_lab(home, "cat ~/flowcourse/README.md").stdout  # stopping lost nothing

    # teardown refuses while README.md has uncommitted work, and goes ahead when forced.
    refused = run_playbook("teardown", env, home, lab)
    assert refused.returncode != 0
    assert "README.md" in refused.stdout and "gpu_lab_force_teardown=true" in " ".join(refused.stdout.split())
    assert (home / ".ssh" / f"{LAB}-server.pem").exists()
    forced = run_playbook("teardown", env, home, {**lab, "gpu_lab_force_teardown": "true"})
    assert forced.returncode == 0, forced.stdout[-4000:]

    ec2 = cloud.emulator
    import boto3

    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=ec2.url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    live = [i for r in client.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]
    assert live == []
    assert client.describe_addresses()["Addresses"] == []
    assert not (home / ".ssh" / f"{LAB}-server.pem").exists()
    assert not (home / ".gpu_lab" / LAB).exists()
    assert (home / ".bashrc").read_text() == "# the student's own bashrc\nexport EDITOR=nano\n"
