"""The stand-in image says what it is doing while it is made, and little once cached.

mmdebstrap and tar are replaced by fakes: what is tested is what the terminal shows around
them (a real build is test_standin.py's, as root, once per machine)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from local_cloud.standin import image
from local_cloud.standin.system import CommandError, file_lock


class FakeTools:
    """mmdebstrap (image.build) and tar (image.run), recording what stderr said before each."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.said_before_build: str | None = None
        self.builds = 0

    def build(self, rootfs: Path, started: float | None = None) -> None:
        self.said_before_build = self.capsys.readouterr().err
        self.builds += 1
        (rootfs / "etc").mkdir(parents=True)
        image._say(f"  {time.monotonic() - (started or 0):3.0f} s: a phase")

    def run(self, cmd: Sequence[str], **_: Any) -> None:
        if "-cf" in cmd:  # packing: the tarball's partial file
            Path(cmd[cmd.index("-cf") + 1]).write_bytes(b"image")
        else:  # unpacking into the staging dir
            (Path(cmd[cmd.index("-C") + 1]) / "etc").mkdir()


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> FakeTools:
    monkeypatch.setenv("GPU_LAB_CACHE", str(tmp_path / "cache"))
    fake = FakeTools(capsys)
    monkeypatch.setattr(image, "build", fake.build)
    monkeypatch.setattr(image, "run", fake.run)
    monkeypatch.setattr(image, "_prune", lambda cache, keep: None)  # reads this machine's mounts
    return fake


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_first_build_says_what_and_how_long_before_and_when_done(tools: FakeTools,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rootfs = image.ensure_base()
    assert (rootfs / "etc").is_dir() and image.tarball_path().exists()
    assert tools.said_before_build is not None
    announced = lines(tools.said_before_build)
    # Said before the 40 s start, not after: the one line a silent terminal needed.
    assert len(announced) == 1
    assert re.search(r"building .*image.*about 40 s .*once", announced[0])
    after = lines(capsys.readouterr().err)
    assert re.search(r"built in \d+ s", after[-1])
    assert any("compressing" in line for line in after[:-1])
    assert all(line.startswith("[gpu_lab stand-in] ") for line in announced + after)


def test_a_cached_image_says_nothing_and_an_unpacked_one_line(tools: FakeTools,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rootfs = image.ensure_base()
    capsys.readouterr()
    assert image.ensure_base() == rootfs
    assert capsys.readouterr().err == ""  # ready and unpacked: silent
    # Only the tarball left (a new cache dir's first run, a pruned unpack): one short line.
    (rootfs.parent / f"{rootfs.name}.ready").unlink()
    os.rename(rootfs, rootfs.with_name("gone"))
    assert image.ensure_base() == rootfs
    said = lines(capsys.readouterr().err)
    assert len(said) == 1 and re.search(r"unpacked the cached stand-in image in \d+ s", said[0])
    assert tools.builds == 1


def test_waiting_for_another_builder_is_said(tools: FakeTools, capsys: pytest.CaptureFixture[str]) -> None:
    done = threading.Event()
    result: list[Path] = []

    def ensure() -> None:
        result.append(image.ensure_base())
        done.set()

    lock = image.cache_dir() / "standin.lock"
    with file_lock(lock):  # another builder (flock: per open file, so a thread counts)
        worker = threading.Thread(target=ensure)
        worker.start()
        deadline = time.monotonic() + 5
        said = ""
        while "waiting for another process" not in said:
            assert time.monotonic() < deadline, f"no waiting line: {said!r}"
            assert not done.is_set(), "went on while the lock was held"
            time.sleep(0.05)
            said += capsys.readouterr().err
    worker.join(10)
    assert done.is_set() and result and (result[0] / "etc").is_dir()


def test_phases_are_relayed_once_and_a_failure_keeps_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    script = ("echo 'I: running apt-get update...'; echo 'Get:1 http://deb.debian.org bookworm InRelease';"
              "echo 'I: downloading packages with apt...'; echo 'I: downloading packages with apt...';"
              "echo 'E: the mirror went away'; exit 3")
    with pytest.raises(CommandError) as failed:
        image._run_relaying_phases(["sh", "-c", script], time.monotonic())
    said = lines(capsys.readouterr().err)
    assert [line.split(": ", 1)[1] for line in said] == ["fetching Debian's package lists",
                                                        "downloading the Debian packages"]
    assert "exited 3" in str(failed.value) and "E: the mirror went away" in str(failed.value)


def test_the_build_timeout_stops_a_hung_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image, "BUILD_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(CommandError, match="did not finish in 0.5 s"):
        image._run_relaying_phases(["sleep", "30"], started)
    assert time.monotonic() - started < 5
