# Copyright: gpu_lab developers
# MIT License
"""Which Deep Learning AMI a lab gets, as pure decisions (no AWS call: lab_info reads AWS).

AWS publishes each DLAMI line's newest image id in a public SSM parameter,
``/aws/service/deeplearning/ami/<architecture>/<line>/latest/ami-id``. The PyTorch lines are
named ``oss-nvidia-driver-gpu-pytorch-<version>-ubuntu-<release>`` and their images
``Deep Learning [ARM64 ]OSS Nvidia Driver AMI GPU PyTorch <version> (Ubuntu <release>) <date>``.
"The latest" is the newest supported PyTorch line of the architecture: the highest framework
version (compared as numbers: 2.12 > 2.9), the newer Ubuntu release on a tie. A line whose
patch support ended is never "the latest", even while AWS still publishes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LATEST = "latest"
ARCHITECTURES = ("x86_64", "arm64")
PATH = "/aws/service/deeplearning/ami/{architecture}/"
PARAMETER = re.compile(r"^/aws/service/deeplearning/ami/(?P<architecture>[^/]+)/(?P<line>[^/]+)/latest/ami-id$")
PYTORCH_LINE = re.compile(r"^oss-nvidia-driver-gpu-pytorch-(?P<framework>\d+(?:\.\d+)+)-ubuntu-(?P<ubuntu>\d+\.\d+)$")
PYTORCH_IMAGE = re.compile(r"^Deep Learning (?:ARM64 )?OSS Nvidia Driver AMI GPU PyTorch (?P<framework>\d+(?:\.\d+)+) "
                           r"\(Ubuntu (?P<ubuntu>\d+\.\d+)\)(?: \d{8})?$")
RELEASE_SUFFIX = re.compile(r"\s+\d{8}$")

# Lines whose patch support ended, by PyTorch version. Source: AWS's DLAMI support policy
# table (https://docs.aws.amazon.com/dlami/latest/devguide/support-policy.html), read
# 2026-12: PyTorch 2.7's patch support ended 2026-04-23. Every older version ended before it.
SUPPORT_ENDED = {"2.7": "2026-04-23"}
LAST_UNSUPPORTED = (2, 7)


def version(text: str) -> tuple[int, ...]:
    """'2.12' -> (2, 12), so that 2.12 sorts after 2.9."""
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class Line:
    """A PyTorch DLAMI line of one architecture."""

    name: str
    architecture: str
    framework: str
    ubuntu: str

    @property
    def order(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return version(self.framework), version(self.ubuntu)

    @property
    def support_ended(self) -> str:
        """When its patch support ended ('' while supported)."""
        if self.framework in SUPPORT_ENDED:
            return SUPPORT_ENDED[self.framework]
        if version(self.framework) <= LAST_UNSUPPORTED:
            return f"before {min(SUPPORT_ENDED.values())}"
        return ""

    @property
    def supported(self) -> bool:
        return not self.support_ended


def parse_line(name: str, architecture: str = "x86_64") -> Line | None:
    """A PyTorch line by its SSM name (None for another line, such as the base one)."""
    match = PYTORCH_LINE.match(name)
    return Line(name, architecture, match["framework"], match["ubuntu"]) if match else None


def parse_parameter(parameter: str) -> tuple[str, str] | None:
    """'/aws/service/deeplearning/ami/x86_64/<line>/latest/ami-id' -> ('x86_64', '<line>')."""
    match = PARAMETER.match(parameter)
    return (match["architecture"], match["line"]) if match else None


def line_of_image_name(name: str, architecture: str) -> Line | None:
    """The PyTorch line an image belongs to, by the image's name (None for another image)."""
    match = PYTORCH_IMAGE.match(name)
    if not match:
        return None
    return Line(f"oss-nvidia-driver-gpu-pytorch-{match['framework']}-ubuntu-{match['ubuntu']}", architecture,
                match["framework"], match["ubuntu"])


def series(image_name: str) -> str:
    """An image's name without its release date: the images of one line share it."""
    return RELEASE_SUFFIX.sub("", image_name)


def published(parameters: Mapping[str, str], architecture: str) -> dict[str, str]:
    """Line -> newest image id, of the lines published for one architecture (from the SSM
    parameters read under PATH: name -> value)."""
    lines = {}
    for name, value in parameters.items():
        parsed = parse_parameter(name)
        if parsed and parsed[0] == architecture:
            lines[parsed[1]] = value
    return lines


def newest(lines: Iterable[str], architecture: str) -> Line | None:
    """The newest supported PyTorch line among these line names (None when there is none)."""
    candidates = [line for line in (parse_line(name, architecture) for name in lines) if line and line.supported]
    return max(candidates, key=lambda line: line.order, default=None)


def pick(lines: Mapping[str, str], wanted: str, architecture: str) -> tuple[str, str] | None:
    """(line, image id) for the wanted line ('latest' or a line name), from the published
    lines (line -> newest image id); None when it is not published."""
    name = wanted
    if wanted == LATEST:
        line = newest(lines, architecture)
        if line is None:
            return None
        name = line.name
    return (name, lines[name]) if name in lines else None


def pick_by_name(images: list[dict[str, Any]], architecture: str) -> dict[str, Any] | None:
    """The fallback by name: of the images a name pattern matched (DescribeImages' Images),
    the newest image of the newest supported PyTorch line among them; when none of them is
    such a line (a pattern for another line), the newest image by creation date."""
    if not images:
        return None
    lines = {}
    for image in images:
        line = line_of_image_name(str(image.get("Name", "")), architecture)
        if line and line.supported:
            lines.setdefault(line.name, line)
    best = max(lines.values(), key=lambda line: line.order, default=None)
    chosen = [i for i in images if best is None or line_of_image_name(str(i.get("Name", "")), architecture) == best]
    return max(chosen, key=lambda i: str(i.get("CreationDate", "")))


def architecture_of(types: list[dict[str, Any]]) -> str:
    """The architecture a new instance's image must have: the preferred candidate's (the first
    type that exists; x86_64 when it runs both). The checks refuse candidates that differ."""
    for t in types:
        if t.get("exists") and t.get("architectures"):
            theirs = list(t["architectures"])
            return next((a for a in ARCHITECTURES if a in theirs), str(theirs[0]))
    return "x86_64"


def line_of(image: Mapping[str, Any], latest: Mapping[str, Mapping[str, Any]]) -> str:
    """The line an image belongs to: the published line whose newest image has the same name
    but for the date (latest: line -> that newest image's summary), else by its PyTorch name."""
    own = series(str(image.get("name", "")))
    for name, newest_image in latest.items():
        if own and series(str(newest_image.get("name", ""))) == own:
            return name
    line = line_of_image_name(str(image.get("name", "")), str(image.get("architecture", "")))
    return line.name if line else ""


def newer(image: Mapping[str, Any], line: str, latest: Mapping[str, Mapping[str, Any]], existing: bool) -> str:
    """One sentence when something newer than the image exists ('' otherwise): a newer image
    of its line (latest: line -> its newest image's summary, as lab_info makes them), a newer
    supported line of its architecture, or the end of its line's patch support. existing: the
    image is an instance's (which keeps it) rather than the one a new instance would use."""
    architecture = str(image.get("architecture", "")) or "x86_64"
    found = []
    newest_of_line = latest.get(line) or {}
    if (newest_of_line.get("image_id") and newest_of_line["image_id"] != image.get("image_id")
            and str(newest_of_line.get("creation_date", "")) > str(image.get("creation_date", ""))):
        found.append(f"a newer image of its line exists, {newest_of_line.get('name')} "
                     f"({str(newest_of_line.get('creation_date', ''))[:10]})")
    own = parse_line(line, architecture)
    best = newest(latest, architecture)
    if own and best and best.name != line and (best.order > own.order or not own.supported):
        found.append(f"a newer supported line exists, {best.name}")
    ended = own.support_ended if own else ""
    if ended:
        found.append(f"its line {line} is no longer patched (support ended {ended})")
    if not found:
        return ""
    said = f"Image {image.get('name') or image.get('image_id')}: {'; '.join(found)}"
    if existing:
        return (f"{said}: the instance keeps its image; teardown.yml, then launch.yml, gives a new instance "
                "the newest (push your work first: the disk goes with the instance).")
    return f"{said}: set gpu_lab_dlami=latest (and gpu_lab_ami_id to '') to launch the newest."
