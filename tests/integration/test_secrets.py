"""No secret in what a launch prints or logs, and the files that hold them are private.

One full launch at ``-vvv`` on a booted stand-in host, with a distinctive AWS secret key in
the environment and Ansible's log turned on (``ANSIBLE_LOG_PATH``, as a user might), then
a scan of stdout, stderr and every file the run wrote under the sandbox HOME (but the key
and the token files themselves) and under the repo's tests/output, for:

* the lab's private key: any 40-character slice of the base64 body of ~/.ssh/<lab>-server.pem
  that carries private key bytes (also across printed line breaks, real or escaped); slices
  of the public key and of the header all keys share are no secret and are not looked for;
* the Jupyter token (~/.gpu_lab/<lab>/jupyter_token);
* the AWS secret access key.

The launch summary's own lines are checked apart (``test_summary_shows_no_token``): it names
the ``<lab>-jupyter`` shortcut and the 0600 file with the URL instead of printing the token.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_cloud.cloud import Cloud
from local_cloud.course import make_course_repo
from tests.playbook import REPO, run_playbook

LAB = "hush"
SECRET = f"gpu-lab-secret-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"  # 47 characters, like no real key
WINDOW = 40
SECRET_BYTES = 3  # a slice counts when it spells out at least this many bytes of a private number


@dataclass
class Launch:
    home: Path
    stdout: str
    stderr: str
    log: str  # ANSIBLE_LOG_PATH
    files: dict[str, bytes]  # every regular file the run may have written, but the three secret files
    key_body: str
    key_windows: set[str]  # the slices of key_body that carry private bytes
    public_key: str  # ssh-keygen -y
    token: str


def strip_summary(text: str) -> tuple[str, str]:
    """(the text without the launch summary task's lines, those lines)."""
    rest, summary, inside = [], [], False
    for line in text.splitlines():
        if "TASK [" in line or "PLAY RECAP" in line:
            inside = "TASK [Summary]" in line
        (summary if inside else rest).append(line)
    return "\n".join(rest), "\n".join(summary)


def secret_windows(pem: bytes) -> set[str]:
    """The 40-character slices of the key file's base64 body that carry private key bytes
    (at least ``SECRET_BYTES`` of them whole).

    An OpenSSH private key file also holds its public key (twice) and a header every key of
    its type shares; a slice of those only is no secret (``ssh-keygen -y`` prints the public
    key, legitimately), so only slices that overlap the private numbers count."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    text = pem.decode()
    body = "".join(line.strip() for line in text.splitlines() if not line.startswith("-----"))
    decoded = base64.b64decode(body)
    key = (serialization.load_ssh_private_key(pem, None) if "OPENSSH" in text
           else serialization.load_pem_private_key(pem, None))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        numbers = [key.private_bytes_raw()]
    elif isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        numbers = [v.to_bytes((v.bit_length() + 7) // 8, "big") for v in (n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)]
    else:
        raise AssertionError(f"a key type this test does not know: {type(key).__name__}")
    secret: set[int] = set()
    for number in numbers:
        at = decoded.find(number)
        assert at >= 0, "a private number is not in the key file's body"
        secret.update(range(at, at + len(number)))
    windows = set()
    for start in range(len(body) - WINDOW + 1):
        # The bytes the slice spells out whole; a slice with a few bits of a private number
        # at its edge could match the public key by chance (it did), 3 whole bytes cannot.
        first_byte, end_byte = -(-start * 6 // 8), (start + WINDOW) * 6 // 8
        if len(secret.intersection(range(first_byte, end_byte))) >= SECRET_BYTES:
            windows.add(body[start:start + WINDOW])
    return windows


def key_slices_in(windows: set[str], text: str) -> list[str]:
    """The secret slices found in text, searched with whitespace and escaped line breaks
    (a printed ``\\n``) taken out."""
    flat = re.sub(r"\\[nr]|\s", "", text)
    found = []
    for run in re.finditer(rf"[A-Za-z0-9+/=]{{{WINDOW},}}", flat):
        chunk = run.group()
        found += [chunk[i:i + WINDOW] for i in range(len(chunk) - WINDOW + 1) if chunk[i:i + WINDOW] in windows]
    return found


def written_files(root: Path, skip: set[Path]) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        if path in skip or path.is_symlink() or not path.is_file():
            continue
        try:
            files[str(path)] = path.read_bytes()
        except OSError:
            continue
    return files


@pytest.fixture(scope="module")
def launch(cloud_session: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """One launch for every test of this module (a full launch takes a minute or more)."""
    if not cloud_session.hosts:
        pytest.skip(f"no stand-in hosts: {cloud_session.hosts_reason}")
    cloud_session.emulator.reset()
    cloud_session.controller.wait_settled()
    home = tmp_path_factory.mktemp("secrets") / "home"
    url, _ = make_course_repo(cloud_session.controller.share_dir, name="hushcourse")
    env = {**cloud_session.env(), "AWS_SECRET_ACCESS_KEY": SECRET, "ANSIBLE_LOG_PATH": str(home / "ansible.log")}
    lab = {"gpu_lab_name": LAB, "gpu_lab_ssh_cidr": "127.0.0.1/32", "gpu_lab_course_repo": url}
    try:
        done = run_playbook("launch", env, home, lab, "-vvv")
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        key_file = home / ".ssh" / f"{LAB}-server.pem"
        token_file = home / ".gpu_lab" / LAB / "jupyter_token"
        key_body = "".join(line.strip() for line in key_file.read_text().splitlines() if not line.startswith("-----"))
        token = token_file.read_text().strip()
        public = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True,
                                check=True).stdout.strip()
        url_file = home / ".gpu_lab" / LAB / "jupyter_url"  # the token's other home, 0600 too
        files = written_files(home, {key_file, token_file, url_file}) | written_files(REPO / "tests" / "output", set())
        yield Launch(home, done.stdout, done.stderr, (home / "ansible.log").read_text(), files, key_body,
                     secret_windows(key_file.read_bytes()), public, token)
    finally:
        cloud_session.emulator.reset()
        cloud_session.controller.wait_settled()


@pytest.mark.hosts
def test_the_emulator_accepts_any_secret(launch: Launch, cloud_session: Cloud) -> None:
    env = cloud_session.env()
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=SECRET)
    assert sts.get_caller_identity()["Account"]


@pytest.mark.hosts
def test_the_scan_has_something_to_find(launch: Launch) -> None:
    """The secrets are real and the scan sees what the run wrote (or it proves nothing)."""
    assert len(launch.key_body) >= 200 and re.fullmatch(r"[A-Za-z0-9+/=]+", launch.key_body)
    assert len(launch.token) >= 32
    assert "ESTABLISH" in launch.stdout or "<127." in launch.stdout  # -vvv really was verbose
    assert f"{LAB}-server" in launch.log and str(launch.home / "ansible.log") in launch.files
    assert any(path.endswith("ssh_config") for path in launch.files)
    windows, body = launch.key_windows, launch.key_body
    assert 32 <= len(windows) < len(body) - WINDOW + 1  # some slices carry private bytes, not all
    secret_at = next(i for i in range(len(body)) if body[i:i + WINDOW] in windows)
    assert len(key_slices_in(windows, f"x {body[secret_at:secret_at + 45]} y")) == 6  # 45 characters
    assert key_slices_in(windows, f"x {body[secret_at:secret_at + 39]} y") == []  # 39
    split = body[secret_at:secret_at + 30] + "\\n" + body[secret_at + 30:secret_at + 70]
    assert key_slices_in(windows, split)
    assert key_slices_in(windows, launch.public_key) == []  # the public half is no secret
    assert key_slices_in(windows, launch.public_key.split()[1][:10] + body) != []  # the whole file is


def outputs(launch: Launch) -> dict[str, str]:
    """What the run printed and logged, the summary task's lines taken out."""
    return {"stdout": strip_summary(launch.stdout)[0], "stderr": launch.stderr,
            "ansible.log": strip_summary(launch.log)[0]}


@pytest.mark.hosts
def test_private_key_never_printed_nor_logged(launch: Launch) -> None:
    places = {**outputs(launch),
              "summary": strip_summary(launch.stdout)[1] + strip_summary(launch.log)[1],
              **{p: b.decode("utf-8", "replace") for p, b in launch.files.items()
                 if not p.endswith("ansible.log")}}
    leaks = {place: slices[0] for place, text in places.items() if (slices := key_slices_in(launch.key_windows, text))}
    assert leaks == {}


@pytest.mark.hosts
def test_aws_secret_never_printed_nor_logged(launch: Launch) -> None:
    places = {**outputs(launch), "summary": strip_summary(launch.stdout)[1],
              **{p: b.decode("utf-8", "replace") for p, b in launch.files.items()}}
    assert [place for place, text in places.items() if SECRET in text] == []


@pytest.mark.hosts
def test_token_not_printed_nor_logged_outside_the_summary(launch: Launch) -> None:
    places = {**outputs(launch), **{p: b.decode("utf-8", "replace") for p, b in launch.files.items()
                                    if not p.endswith("ansible.log")}}
    assert [place for place, text in places.items() if launch.token in text] == []


@pytest.mark.hosts
def test_summary_shows_no_token(launch: Launch) -> None:
    summary = strip_summary(launch.stdout)[1]
    # The summary is there to be checked: it says where the URL is instead of printing it.
    assert "Jupyter (once connected)" in summary and f".gpu_lab/{LAB}/jupyter_url" in summary
    assert launch.token not in summary
    assert launch.token not in strip_summary(launch.log)[1]


@pytest.mark.hosts
def test_modes(launch: Launch) -> None:
    home = launch.home
    modes = {str(p.relative_to(home)): p.stat().st_mode & 0o777 for p in [
        home / ".ssh" / f"{LAB}-server.pem",
        home / ".gpu_lab" / LAB / "jupyter_token",
        home / ".gpu_lab" / LAB / "jupyter_url",
        home / ".gpu_lab" / LAB / "known_hosts",
        home / ".gpu_lab" / LAB / "ssh_config",
        home / ".ssh",
        home / ".gpu_lab",
        home / ".gpu_lab" / LAB,
    ]}
    assert {p: oct(m) for p, m in modes.items()} == {
        f".ssh/{LAB}-server.pem": "0o400",
        f".gpu_lab/{LAB}/jupyter_token": "0o600",
        f".gpu_lab/{LAB}/jupyter_url": "0o600",
        f".gpu_lab/{LAB}/known_hosts": "0o600",
        f".gpu_lab/{LAB}/ssh_config": "0o600",
        ".ssh": "0o700",
        ".gpu_lab": "0o700",
        f".gpu_lab/{LAB}": "0o700",
    }


@pytest.mark.parametrize("kind", ["ed25519-openssh", "rsa-pkcs1"])
def test_secret_windows_cover_only_private_bytes(kind: str) -> None:
    """The scan's own ground truth, without a launch: the public key of a key file is never
    a finding, its private numbers always are."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind.startswith("ed25519"):
        key: Any = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        secret = key.private_bytes_raw()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        d = key.private_numbers().d
        secret = d.to_bytes((d.bit_length() + 7) // 8, "big")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    windows = secret_windows(pem)
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    assert key_slices_in(windows, public.decode()) == []
    assert key_slices_in(windows, pem.decode())
    assert key_slices_in(windows, pem.decode().replace("\n", "\\n"))  # printed as a JSON string
    at = base64.b64decode(body).find(secret) * 8 // 6
    assert body[at + 4:at + 4 + WINDOW] in windows
