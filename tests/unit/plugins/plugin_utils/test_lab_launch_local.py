"""lab_launch_local: the labs' keys are made aside and linked into place (an existing one is
kept), read once per file; the record is a 0600 file in a 0700 folder, replaced at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


@pytest.fixture
def local(plugin):
    return plugin("plugin_utils.lab_launch_local")


@needs_ssh_keygen
def test_a_key_is_made_once_then_reused(local, tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "csdl-server.pem")
    made = local.make_key(path)
    assert made.created and made.public.startswith("ssh-ed25519 ") and made.public.endswith(" csdl-server")
    assert oct(Path(path).stat().st_mode & 0o777) == "0o400"
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["csdl-server.pem"]  # nothing left aside
    again = local.make_keys([path, path])
    assert list(again) == [path] and not again[path].created and again[path].public == made.public


def test_a_key_that_cannot_be_made_says_why(local, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    broken = local.make_key(str(tmp_path / "file" / "k.pem"))
    assert broken.error.startswith(f"Could not make the private key {tmp_path / 'file' / 'k.pem'} on this machine: ")
    assert not broken.public and not broken.created


def test_the_record(local, tmp_path: Path) -> None:
    path = tmp_path / ".gpu_lab" / "csdl" / "lab.json"
    local.write_record(str(path), local.record_of("csdl", "us-east-1", "i-1"))
    assert path.read_text() == '{\n    "instance_id": "i-1",\n    "lab": "csdl",\n    "region": "us-east-1"\n}\n'
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    local.write_record(str(path), local.record_of("csdl", "us-west-2", "i-2"))
    assert '"region": "us-west-2"' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["lab.json"]


def test_the_course_read(local, tmp_path: Path) -> None:
    rc, stderr = local.read_course(str(tmp_path / "none"), "main", 20)
    assert rc != 0 and stderr
