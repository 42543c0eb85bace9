"""dlami: which Deep Learning AMI line and image a lab gets, and what is newer than its image."""

from __future__ import annotations

from typing import Any

import pytest

from plugins.module_utils import dlami

X86 = "/aws/service/deeplearning/ami/x86_64/"
ARM = "/aws/service/deeplearning/ami/arm64/"
P27 = "oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04"
P29 = "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04"
P212 = "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04"
BASE = "base-oss-nvidia-driver-gpu-ubuntu-24.04"


def parameters(prefix: str, **lines: str) -> dict[str, str]:
    return {f"{prefix}{line}/latest/ami-id": ami for line, ami in lines.items()}


def summary(image_id: str, name: str, date: str, architecture: str = "x86_64") -> dict[str, Any]:
    return {"image_id": image_id, "name": name, "creation_date": date, "architecture": architecture}


def test_versions_compare_as_numbers() -> None:
    assert dlami.version("2.12") > dlami.version("2.9") > dlami.version("2.7")
    assert dlami.version("24.04") > dlami.version("22.04")


def test_a_parameter_name_gives_its_architecture_and_line() -> None:
    assert dlami.parse_parameter(f"{X86}{P212}/latest/ami-id") == ("x86_64", P212)
    assert dlami.parse_parameter(f"{ARM}{P29}/latest/ami-id") == ("arm64", P29)
    assert dlami.parse_parameter("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64") is None
    assert dlami.parse_parameter(f"{X86}{P212}/latest/image-name") is None


def test_a_pytorch_line_name_gives_its_versions() -> None:
    line = dlami.parse_line(P212, "arm64")
    assert line is not None
    assert (line.framework, line.ubuntu, line.architecture, line.supported) == ("2.12", "24.04", "arm64", True)
    assert dlami.parse_line(BASE) is None
    assert dlami.parse_line("oss-nvidia-driver-gpu-pytorch-2.9-amazon-linux-2023") is None


def test_lines_whose_support_ended_are_known() -> None:
    assert dlami.parse_line(P27).support_ended == "2026-04-23"  # type: ignore[union-attr]
    older = dlami.parse_line("oss-nvidia-driver-gpu-pytorch-2.3-ubuntu-22.04")
    assert older is not None and not older.supported and older.support_ended == "before 2026-04-23"
    assert dlami.parse_line(P29).supported  # type: ignore[union-attr]


def test_latest_is_the_highest_supported_pytorch_version() -> None:
    lines = dlami.published(parameters(X86, **{P27: "ami-27", P29: "ami-29", P212: "ami-212", BASE: "ami-b"}),
                            "x86_64")
    assert dlami.pick(lines, "latest", "x86_64") == (P212, "ami-212")


def test_the_newer_ubuntu_release_wins_a_tie() -> None:
    p212_22 = "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-22.04"
    lines = {p212_22: "ami-22", P212: "ami-24", P29: "ami-29"}
    assert dlami.pick(lines, "latest", "x86_64") == (P212, "ami-24")


def test_an_unsupported_line_is_never_latest_even_when_it_is_all_there_is() -> None:
    assert dlami.pick({P27: "ami-27", BASE: "ami-b"}, "latest", "x86_64") is None
    # ... but a pinned one is honoured.
    assert dlami.pick({P27: "ami-27"}, P27, "x86_64") == (P27, "ami-27")


def test_a_pinned_line_is_honoured_or_not_found() -> None:
    lines = {P29: "ami-29", P212: "ami-212"}
    assert dlami.pick(lines, P29, "x86_64") == (P29, "ami-29")
    assert dlami.pick(lines, "no-such-line", "x86_64") is None


def test_each_architecture_has_its_own_lines() -> None:
    both = parameters(X86, **{P212: "ami-x"}) | parameters(ARM, **{P29: "ami-a"})
    assert dlami.published(both, "arm64") == {P29: "ami-a"}
    assert dlami.pick(dlami.published(both, "arm64"), "latest", "arm64") == (P29, "ami-a")


def test_the_architecture_of_the_preferred_type() -> None:
    arm = {"name": "g5g.xlarge", "exists": True, "architectures": ["arm64"]}
    x86 = {"name": "g6.xlarge", "exists": True, "architectures": ["x86_64"]}
    gone = {"name": "g9.huge", "exists": False, "architectures": []}
    assert dlami.architecture_of([gone, arm, x86]) == "arm64"
    assert dlami.architecture_of([x86, arm]) == "x86_64"
    assert dlami.architecture_of([{"name": "m", "exists": True, "architectures": ["i386", "x86_64"]}]) == "x86_64"
    assert dlami.architecture_of([]) == "x86_64"


def test_an_image_name_gives_its_line() -> None:
    line = dlami.line_of_image_name("Deep Learning ARM64 OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) "
                                    "20260822", "arm64")
    assert line is not None and (line.name, line.architecture) == (P212, "arm64")
    assert dlami.line_of_image_name("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20251020",
                                    "x86_64") is None
    assert dlami.series("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20251020") == \
        "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)"


def test_by_name_the_newest_image_of_the_newest_supported_line() -> None:
    pytorch = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch"
    images = [
        {"ImageId": "ami-29-new", "Name": f"{pytorch} 2.9 (Ubuntu 24.04) 20261101",
         "CreationDate": "2026-11-01T00:00:00.000Z"},
        {"ImageId": "ami-212-old", "Name": f"{pytorch} 2.12 (Ubuntu 24.04) 20260715",
         "CreationDate": "2026-07-15T00:00:00.000Z"},
        {"ImageId": "ami-212", "Name": f"{pytorch} 2.12 (Ubuntu 24.04) 20260822",
         "CreationDate": "2026-08-22T00:00:00.000Z"},
        {"ImageId": "ami-27", "Name": f"{pytorch} 2.7 (Ubuntu 22.04) 20261120",
         "CreationDate": "2026-11-20T00:00:00.000Z"},
    ]
    assert dlami.pick_by_name(images, "x86_64")["ImageId"] == "ami-212"  # type: ignore[index]
    # A pattern for another kind of image: the newest by date, as before.
    other = [{"ImageId": "ami-a", "Name": "My AMI 1", "CreationDate": "2026-01-01"},
             {"ImageId": "ami-b", "Name": "My AMI 2", "CreationDate": "2026-02-01"}]
    assert dlami.pick_by_name(other, "x86_64")["ImageId"] == "ami-b"  # type: ignore[index]
    assert dlami.pick_by_name([], "x86_64") is None


NAME = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch {} (Ubuntu {}) {}"
LATEST = {
    P29: summary("ami-29", NAME.format("2.9", "24.04", "20260310"), "2026-03-10T00:00:00.000Z"),
    P212: summary("ami-212", NAME.format("2.12", "24.04", "20260822"), "2026-08-22T00:00:00.000Z"),
    P27: summary("ami-27", NAME.format("2.7", "22.04", "20251020"), "2025-10-20T00:00:00.000Z"),
}


def test_the_line_of_an_image_by_its_lines_newest_name() -> None:
    old = summary("ami-212-old", NAME.format("2.12", "24.04", "20260715"), "2026-07-15T00:00:00.000Z")
    assert dlami.line_of(old, LATEST) == P212
    base = summary("ami-b0", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20250915", "2025-09-15")
    assert dlami.line_of(base, {BASE: summary("ami-b1", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu "
                                                        "24.04) 20251020", "2025-10-20")}) == BASE
    assert dlami.line_of(summary("ami-x", "my own", ""), LATEST) == ""


def test_nothing_newer_than_the_newest_image_of_the_newest_line() -> None:
    assert dlami.newer(LATEST[P212], P212, LATEST, existing=True) == ""
    assert dlami.newer(LATEST[P212], P212, LATEST, existing=False) == ""


def test_a_newer_image_of_the_instances_line() -> None:
    old = summary("ami-212-old", NAME.format("2.12", "24.04", "20260715"), "2026-07-15T00:00:00.000Z")
    said = dlami.newer(old, P212, LATEST, existing=True)
    assert said.startswith(f"Image {old['name']}: a newer image of its line exists, {LATEST[P212]['name']} "
                           "(2026-08-22): the instance keeps its image;"), said
    assert "teardown.yml, then launch.yml" in said
    assert said.count(".") >= 1 and "\n" not in said


def test_a_newer_line_and_an_unpatched_line() -> None:
    said = dlami.newer(LATEST[P29], P29, LATEST, existing=False)
    assert said == (f"Image {LATEST[P29]['name']}: a newer supported line exists, {P212}: set gpu_lab_dlami=latest "
                    "(and gpu_lab_ami_id to '') to launch the newest.")
    said = dlami.newer(LATEST[P27], P27, LATEST, existing=True)
    assert f"a newer supported line exists, {P212}" in said
    assert f"its line {P27} is no longer patched (support ended 2026-04-23)" in said


@pytest.mark.parametrize("line", [BASE, ""])
def test_no_newer_line_is_claimed_for_an_image_outside_the_pytorch_lines(line: str) -> None:
    image = summary("ami-b", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20251020", "2025-10-20")
    assert dlami.newer(image, line, LATEST, existing=True) == ""
