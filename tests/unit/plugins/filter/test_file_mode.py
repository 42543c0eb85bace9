"""csdl.gpu_lab.file_mode: a file's permission bits as chmod writes them, or "" for no file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugins.filter.file_mode import file_mode


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o644, 0o755, 0o4755])
def test_a_files_mode(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x")
    os.chmod(key, mode)
    assert file_mode(key) == format(mode, "o")


def test_a_link_gives_its_targets_mode(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x")
    os.chmod(key, 0o640)
    (tmp_path / "link").symlink_to(key)
    assert file_mode(tmp_path / "link") == "640"


@pytest.mark.parametrize("where", ["missing", "dir", "dangling", ""])
def test_no_file_gives_empty(tmp_path: Path, where: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert file_mode(str(tmp_path / where) if where else "") == ""
