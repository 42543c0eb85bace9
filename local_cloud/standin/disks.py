"""Stand-in disks carried through images, as EC2 carries an instance's EBS volume through
CreateImage (a snapshot) and RunInstances from that image (a new volume from the snapshot).

A stand-in's disk is the upper dir of its overlay (host.py). CreateImage of an instance that
has a stand-in copies that upper dir here; a stand-in made later for an instance launched from
that image starts with a copy of it as its own upper dir, before its first mount. Layout under
the controller's state dir:

    images/<ami-id>/upper       the image's disk, as the instance's upper dir was
    images/<ami-id>/upper.tmp   a copy being made (never read; removed if one is left)

Copies keep what the overlay needs: owners, modes, times, hard links, device nodes (its
whiteouts are 0/0 character devices) and extended attributes (``trusted.overlay.opaque`` and
the like): ``cp -a`` as root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from local_cloud.standin.system import run

IMAGES = "images"


def store(state_dir: Path) -> Path:
    return Path(state_dir) / IMAGES


def stored(state_dir: Path, ami_id: str) -> Path | None:
    """The image's disk, or None when it has none (made from an instance with no stand-in)."""
    disk = store(state_dir) / ami_id / "upper"
    return disk if ami_id and disk.is_dir() else None


def stored_ids(state_dir: Path) -> list[str]:
    folder = store(state_dir)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def copy_tree(src: Path, dst: Path) -> None:
    """dst (which must not exist) becomes a copy of src, as the overlay needs it (see above)."""
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(dst)
    # --no-dereference: a guest's symlink is copied as a link, never followed out of the disk.
    run(["cp", "-a", "--no-dereference", "--no-target-directory", str(src), str(dst)])


def capture(state_dir: Path, ami_id: str, upper: Path) -> Path:
    """Copies an instance's disk (its upper dir) as the image's; the stored disk."""
    folder = store(state_dir) / ami_id
    folder.mkdir(parents=True, exist_ok=True)
    tmp, disk = folder / "upper.tmp", folder / "upper"
    shutil.rmtree(tmp, ignore_errors=True)
    copy_tree(upper, tmp)
    shutil.rmtree(disk, ignore_errors=True)
    tmp.rename(disk)
    return disk


def forget(state_dir: Path, ami_id: str) -> None:
    """Deletes the image's disk (the image is deregistered)."""
    shutil.rmtree(store(state_dir) / ami_id, ignore_errors=True)


def forget_all(state_dir: Path) -> None:
    shutil.rmtree(store(state_dir), ignore_errors=True)
