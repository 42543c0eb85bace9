"""The stand-in's base root file system: Debian bookworm dressed like the AWS Deep
Learning AMI (Ubuntu) where our roles care, built once with mmdebstrap and cached.

Cache layout (``$GPU_LAB_CACHE`` or ``~/.cache/gpu_lab/``), keyed by a hash of the recipe:

    standin-<hash>.tar.zst   the built image (about 40 s to make, once)
    standin-<hash>/          the same, unpacked once; every instance's overlayfs lower layer
    standin.lock             serialises builds between processes

Nothing machine-specific is baked in: no SSH host keys (each instance makes its own at
first boot), no machine-id, hostname or resolv.conf, and not this machine's CA bundle
(see ``BUILD_CA``): those come per instance, at start, from ``host.py``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from local_cloud.standin.system import CommandError, run

SUITE = "bookworm"
# The testbed note's package set (python3-packaging among them: ansible.builtin.pip
# needs `packaging` on the target), plus python3-pip (roles may pip-install without a
# venv) and libnss-myhostname (the instance's own hostname resolves without an
# /etc/hosts entry, as on EC2, so sudo does not warn "unable to resolve host").
PACKAGES = (
    "openssh-server", "python3", "python3-venv", "python3-apt", "python3-packaging",
    "python3-pip", "git", "sudo", "systemd", "systemd-sysv", "dbus", "libpam-systemd",
    "libnss-myhostname", "iproute2", "ca-certificates", "curl", "procps",
)
# What the DLAMI has in its /opt/pytorch venv that our Jupyter role relies on.
PIP_PACKAGES = ("jupyterlab==4.6.6", "notebook==7.6.5", "ipykernel==7.4.0")
USER, UID = "ubuntu", 1000
VENV = "/opt/pytorch"

# Testbed workaround (outbound TLS is re-signed by a CA made at each boot of this
# machine): pip inside the build chroot needs this machine's CA bundle, so the hook
# copies it in for the pip step only and deletes it afterwards. Never cached.
BUILD_CA = "/tmp/gpu-lab-build-ca.pem"

# Runs on the host after mmdebstrap installed the packages; $1 is the new root.
CUSTOMIZE = r"""#!/bin/sh
set -eu
root="$1"
in_root() { chroot "$root" "$@"; }

# The DLAMI's login user: uid 1000, passwordless sudo (cloud-init's file name).
# '*' rather than a locked '!' password: no password login, but key login works
# even where sshd checks for locked accounts.
in_root useradd --create-home --uid @UID@ --user-group --shell /bin/bash --groups sudo @USER@
in_root usermod --password '*' @USER@
echo '@USER@ ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/90-cloud-init-users"
chmod 0440 "$root/etc/sudoers.d/90-cloud-init-users"

# sshd: keys only, like the AMI. Host keys are made by each instance at first boot
# (cloud-init does that on EC2); Debian's ssh.service would fail without them.
cat > "$root/etc/ssh/sshd_config.d/60-gpu-lab.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/systemd/system/gpu-lab-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate this instance's SSH host keys (cloud-init does it on EC2)
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=ssh.service
EOF
in_root systemctl enable --quiet ssh.service gpu-lab-ssh-hostkeys.service

# Testbed workaround: mmdebstrap leaves no /etc/hosts (sshd's -L to "localhost" then
# fails with "Connection reset by peer") and copies this machine's hostname.
cat > "$root/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
EOF

# The DLAMI's PyTorch venv, with Jupyter (no torch: nothing here has a GPU). A clean
# environment: this machine's PIP_* variables (find-links to host folders) must not leak in.
in_root python3 -m venv @VENV@
cp /etc/ssl/certs/ca-certificates.crt "$root@BUILD_CA@"
in_root env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=@BUILD_CA@ PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    @VENV@/bin/pip install --quiet @PIP_PACKAGES@
rm -f "$root@BUILD_CA@"

# Per-instance files, written by host.py at creation (last: pip above needs DNS).
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
: > "$root/etc/machine-id"
"""


def customize_script() -> str:
    values = {"@UID@": str(UID), "@USER@": USER, "@VENV@": VENV, "@BUILD_CA@": BUILD_CA,
              "@PIP_PACKAGES@": " ".join(PIP_PACKAGES)}
    script = CUSTOMIZE
    for key, value in values.items():
        script = script.replace(key, value)
    return script


def recipe_hash() -> str:
    """Changes whenever anything that shapes the image changes."""
    recipe = {"suite": SUITE, "variant": "minbase", "packages": PACKAGES,
              "pip": PIP_PACKAGES, "customize": customize_script()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("GPU_LAB_CACHE") or Path.home() / ".cache" / "gpu_lab")


def tarball_path() -> Path:
    return cache_dir() / f"standin-{recipe_hash()}.tar.zst"


# What a first build takes on 2 cores left to it (mmdebstrap 22-25 s, pip, zstd; 103 s was
# seen with other test runs beside it): said up front, so a first run that sits on it for
# that long is not mistaken for a hang.
BUILD_ESTIMATE_S = 40
BUILD_TIMEOUT_S = 900

# mmdebstrap's own progress lines ("I: ...") that mark a phase worth a line on the terminal,
# in plain words; its other lines are kept only for the error message of a failed build.
MMDEBSTRAP_PHASES = (
    ("running apt-get update", "fetching Debian's package lists"),
    ("downloading packages with apt", "downloading the Debian packages"),
    ("installing remaining packages", "installing the Debian packages"),
    ("running --customize-hook", f"dressing it like the DLAMI: the {USER} user, sshd, JupyterLab in {VENV} (pip)"),
)


def _say(message: str) -> None:
    print(f"[gpu_lab stand-in] {message}", file=sys.stderr, flush=True)


def build(rootfs: Path, started: float | None = None) -> None:
    """mmdebstrap into rootfs (which must not exist yet), then dress it, saying each phase
    as mmdebstrap reaches it (with the seconds since started)."""
    started = time.monotonic() if started is None else started
    script = rootfs.with_name(rootfs.name + ".customize.sh")
    script.write_text(customize_script())
    script.chmod(0o700)
    # SUITE given and no mirror: mmdebstrap adds bookworm-updates and -security itself and
    # never reads stdin. Not --quiet: its "I:" lines are the progress relayed below.
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
           f"--customize-hook={script}", SUITE, str(rootfs)]
    try:
        _run_relaying_phases(cmd, started)
    finally:
        script.unlink(missing_ok=True)


def _run_relaying_phases(cmd: list[str], started: float) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=40)
    said: set[str] = set()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace")
    timed_out = threading.Event()

    def kill() -> None:  # a hung mirror must not hang the tests
        timed_out.set()
        proc.kill()

    killer = threading.Timer(BUILD_TIMEOUT_S, kill)
    killer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            for marker, words in MMDEBSTRAP_PHASES:
                if line.startswith("I: ") and marker in line and words not in said:
                    said.add(words)
                    _say(f"  {time.monotonic() - started:3.0f} s: {words}")
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        how = f"did not finish in {BUILD_TIMEOUT_S} s" if timed_out.is_set() else f"exited {code}"
        output = "\n".join(tail)
        raise CommandError(f"`{' '.join(cmd)}` {how}: {output}")


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """The cache's lock; when another process holds it (building the same image), says so
    before waiting for it, rather than sitting silent for the length of a build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process that is making the stand-in image (up to about "
                 f"{BUILD_ESTIMATE_S} s; lock {path})...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tar_flags() -> list[str]:
    # numeric owners and xattrs (file capabilities) must survive the round trip.
    return ["--numeric-owner", "--xattrs", "--xattrs-include=*"]


def ensure_base() -> Path:
    """The unpacked base root file system, building or unpacking it first if needed."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = recipe_hash()
    rootfs = cache / f"standin-{key}"
    ready = cache / f"standin-{key}.ready"
    tarball = tarball_path()
    if ready.exists() and rootfs.is_dir():
        return rootfs
    with _build_lock(cache / "standin.lock"):
        if ready.exists() and rootfs.is_dir():  # another process finished it meanwhile
            return rootfs
        ready.unlink(missing_ok=True)
        staging = cache / f"standin-{key}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        started = time.monotonic()
        if tarball.exists():  # a few seconds: one line, when done
            staging.mkdir()
            run(["tar", "--zstd", "-xpf", str(tarball), "-C", str(staging), *_tar_flags()])
            staging.rename(rootfs)
            ready.touch()
            _say(f"unpacked the cached stand-in image in {time.monotonic() - started:.0f} s ({tarball.name})")
        else:
            _say(f"building the stand-in hosts' image (Debian {SUITE} dressed like the DLAMI, with "
                 f"mmdebstrap): about {BUILD_ESTIMATE_S} s (more on a busy machine), once; later runs reuse "
                 f"it from {cache}")
            build(staging, started)
            _say(f"  {time.monotonic() - started:3.0f} s: compressing it into the cache (zstd)")
            partial = tarball.with_suffix(".partial")
            run(["tar", "-I", "zstd -T0 -3 -q", "-cf", str(partial), "-C", str(staging),
                 *_tar_flags(), "."], timeout=600)
            partial.rename(tarball)
            staging.rename(rootfs)
            ready.touch()
            _say(f"stand-in image built in {time.monotonic() - started:.0f} s: {tarball}")
        _prune(cache, key)
    return rootfs


def _prune(cache: Path, keep: str) -> None:
    """Deletes images of older recipes, unless a running overlay still uses one."""
    in_use = Path("/proc/self/mountinfo").read_text()
    for old in cache.glob("standin-*"):
        if keep in old.name or old.name == "standin.lock":
            continue
        if old.is_dir():
            if str(old) not in in_use:
                shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


if __name__ == "__main__":  # python -m local_cloud.standin.image: build or check
    print(ensure_base())
