"""workstation_probe: what stands in the way of the workstation role's files (Access.wanted),
each cause as one sentence that says what to do."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.collection import load

ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load("module_utils.workstation_probe")


@pytest.fixture
def access(probe: ModuleType) -> object:
    return probe.Access()


def test_nothing_in_the_way(access: object, tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".bashrc").write_text("# mine\n")
    assert access.wanted(tmp_path / ".ssh", "directory") == {"problem": None, "write": None}
    assert access.wanted(tmp_path / ".bashrc", "file") == {"problem": None, "write": None}
    # Missing, under folders that are missing too: the role makes them.
    assert access.wanted(tmp_path / ".gpu_lab" / "csdl" / "known_hosts", "file") == {"problem": None, "write": None}


def test_a_file_where_a_folder_must_be_is_one_cause_said_once(access: object, tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.write_text("oops\n")
    sentence = f"{ssh} is a file, not a directory: move it out of the way (mv {ssh} {ssh}.old) and run again."
    # ~/.ssh itself, and what the role wants under it: the same sentence, so the role says it once.
    assert access.wanted(ssh, "directory") == {"problem": sentence, "write": None}
    assert access.wanted(ssh / "config", "file") == {"problem": sentence, "write": None}
    assert access.wanted(ssh / "deeper" / "key.pem", "file") == {"problem": sentence, "write": None}


def test_a_folder_where_a_file_must_be(access: object, tmp_path: Path) -> None:
    rc = tmp_path / "my files" / ".bashrc"
    rc.mkdir(parents=True)
    problem = access.wanted(rc, "file")["problem"]
    assert problem == (f"{rc} is a directory, not a file: move it out of the way"
                       f" (mv '{rc}' '{rc}.old') and run again.")


def test_neither_file_nor_folder(access: object, tmp_path: Path) -> None:
    fifo = tmp_path / ".zshrc"
    os.mkfifo(fifo)
    assert "is neither a file nor a directory" in access.wanted(fifo, "file")["problem"]


def test_links_are_followed(access: object, tmp_path: Path) -> None:
    (tmp_path / "dotfiles").mkdir()
    (tmp_path / "dotfiles" / "bashrc").write_text("# mine\n")
    (tmp_path / ".bashrc").symlink_to(tmp_path / "dotfiles" / "bashrc")
    (tmp_path / ".zshrc").symlink_to(tmp_path / "dotfiles")
    assert access.wanted(tmp_path / ".bashrc", "file") == {"problem": None, "write": None}
    assert "is a directory, not a file" in access.wanted(tmp_path / ".zshrc", "file")["problem"]


def test_what_another_user_owns(access: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of the role's that this user does not own (made by a run with sudo): the role
    could not set its mode. Seen as another user than the owner of tmp_path."""
    folder = tmp_path / ".gpu_lab"
    folder.mkdir()
    owner = pwd.getpwuid(folder.stat().st_uid).pw_name
    monkeypatch.setattr(access, "uid", folder.stat().st_uid + 4242)
    monkeypatch.setattr(access, "user", "someone")
    assert access.wanted(folder, "directory") == {
        "problem": None,
        "write": f"{folder} belongs to {owner}, not someone: give it back"
                 f" (sudo chown -R someone {folder}) and run again."}


def lock(path: Path, locked: bool) -> None:
    """This user can no longer change path (or can again). Root may write whatever the mode: as
    root the path is made immutable (chattr +i)."""
    if os.geteuid() != 0:
        path.chmod(path.stat().st_mode & ~0o222 if locked else path.stat().st_mode | 0o200)
        return
    done = subprocess.run(["chattr", "+i" if locked else "-i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"as root, a read-only file needs chattr +i, which does not work here: {done.stderr.strip()}")


def test_read_only(access: object, tmp_path: Path) -> None:
    rc = tmp_path / ".bashrc"
    rc.write_text("# mine\n")
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "known_hosts").write_text("")
    lock(rc, True)
    try:
        assert access.wanted(rc, "file")["write"] == (
            f"{rc} is read-only for {ME}: make it writable (chmod u+w {rc}) and run again.")
    finally:
        lock(rc, False)
    lock(folder, True)
    try:
        # A file to be made there, and one to be replaced there (written beside it, renamed over it).
        sentence = f"{folder} is read-only for {ME}: make it writable (chmod u+w {folder}) and run again."
        assert access.wanted(folder / "jupyter_url", "file")["write"] == sentence
        assert access.wanted(folder / "known_hosts", "file")["write"] == sentence
    finally:
        lock(folder, False)
