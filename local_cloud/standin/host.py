"""One stand-in host: a booted Debian container standing in for one EC2 instance.

Its disk is an overlayfs: the shared, read-only base image (image.py) below, and an
upper dir of its own that survives power off (the instance's EBS volume) and goes with
destroy (terminate). Layout under the controller's state dir:

    <instance-id>/upper, work   the overlay's own layers (upper = the "disk")
    <instance-id>/root          the merged root, mounted while the host is on
    <instance-id>/console.log   the guest's console, one section per boot
    <instance-id>/meta.json     names and addresses, for cleanup after a crash

An instance launched from an image made of another stand-in's disk (CreateImage; see
disks.py) starts with a copy of that disk as its upper dir: what the old instance had on its
disk is there, and the first boot is still a new instance's (cloud-init's per-instance steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from local_cloud.standin import cgroups, disks, net
from local_cloud.standin.image import UID, USER, VENV
from local_cloud.standin.system import is_mounted, mounts_under, run, unmount

EXIT_REBOOT = 133  # systemd-nspawn's exit code when the guest reboots
SHARE_IN_GUEST = "/srv/share"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# cloud-init's scripts-user, as the stand-in has it: this boot's user scripts, run as root by
# a oneshot unit before sshd (each script removed once run: the controller puts them in
# before each boot it makes, see cloudinit.boot_scripts).
SCRIPTS_DIR = "/var/lib/cloud/instance/scripts"
SCRIPTS_UNIT = "gpu-lab-scripts-user.service"
_SCRIPTS_UNIT_TEXT = f"""[Unit]
Description=User data scripts (cloud-init scripts-user, as the gpu_lab stand-in runs them)
After=local-fs.target
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for f in {SCRIPTS_DIR}/part-*; do [ -f "$$f" ] || continue; \\
    "$$f" || echo "$$f failed: $$?"; rm -f "$$f"; done'
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

# Runs as the launcher: joins the stand-in's cgroups (see cgroups.py), then becomes nspawn.
_LAUNCHER = ('IFS=:; for f in $GPU_LAB_CGROUP_PROCS; do echo $$ > "$f" || exit 1; done; '
             'unset GPU_LAB_CGROUP_PROCS; exec "$@"')


def state_tag(state_dir: Path) -> str:
    """A short name for a state dir, in the machine-wide names of its stand-ins."""
    return hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:6]


def hostname_for(ip: str) -> str:
    return "ip-" + ip.replace(".", "-")  # as EC2 names hosts after their address


def ssh_answers(ip: str, port: int = 22, timeout: float = 0.5) -> bool:
    """True when an SSH server sends its banner at ip:port."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _write_into(root: Path, rel: str, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Writes a file inside a guest's root without following a symlink out of it (a
    guest's root user could plant one pointing at this machine's files)."""
    rel = rel.lstrip("/")
    root = Path(os.path.realpath(root))
    path = root / rel
    if Path(os.path.realpath(path.parent)) != (root / rel).parent:
        raise RuntimeError(f"{rel} in the guest leads outside it; not writing there")
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _inside(root: Path, rel: str) -> Path:
    """A path in a guest's root that does not lead out of it (no symlink on the way)."""
    root = Path(os.path.realpath(root))
    path = root / rel.lstrip("/")
    if Path(os.path.realpath(path)) != path:
        raise RuntimeError(f"{rel} in the guest leads elsewhere; not touching it")
    return path


def _read_in(root: Path, rel: str) -> bytes:
    """A file inside a guest's root (b"" when missing), without following a symlink out of it."""
    rel = rel.lstrip("/")
    root = Path(os.path.realpath(root))
    path = root / rel
    if Path(os.path.realpath(path.parent)) != path.parent:
        raise RuntimeError(f"{rel} in the guest leads outside it; not reading there")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return b""
    except OSError as exc:  # a symlink (ELOOP): not the guest's own file
        raise RuntimeError(f"{rel} in the guest is not a plain file: {exc}") from exc
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _key_body(line: str) -> str:
    """An authorized_keys line's key (type and base64), its options and comment aside."""
    fields = line.split()
    for i, f in enumerate(fields[:-1]):
        if f.startswith(("ssh-", "ecdsa-", "sk-")):
            return f"{f} {fields[i + 1]}"
    return line.strip()


def merged_authorized_keys(present: str, keys: Sequence[str]) -> str:
    """authorized_keys as cloud-init leaves it on a new instance: the lines already there (an
    image's disk) stay, in their order, and each key not among them is added at the end."""
    lines = [line for line in present.splitlines() if line.strip()]
    have = {_key_body(line) for line in lines if not line.lstrip().startswith("#")}
    for key in keys:
        if key.strip() and _key_body(key) not in have:
            lines.append(key.strip())
            have.add(_key_body(key))
    return "".join(f"{line}\n" for line in lines)


class StandIn:
    """The container for one instance id; every method is called from one thread."""

    def __init__(self, instance_id: str, state_dir: Path, base: Path, share: Path, *,
                 public_key: str | None = None, extra_keys: Sequence[str] = (),
                 plain: bool = False) -> None:
        self.instance_id = instance_id
        self.base = base
        self.share = share
        self.public_key = public_key
        self.extra_keys = list(extra_keys)  # user data's cloud-config ssh_authorized_keys
        self.plain = plain  # not a Deep Learning AMI: no /opt/pytorch
        self.dir = state_dir / instance_id
        self.tag = state_tag(state_dir)
        self.netns = f"{net.NETNS_PREFIX}{self.tag}-{instance_id}"
        self.veth = net.VETH_PREFIX + hashlib.sha256(f"{self.tag}/{instance_id}".encode()).hexdigest()[:8]
        self.cgroups = cgroups.group_dirs(self.tag, instance_id)
        self.link: net.Link | None = None
        self.ip: str | None = None
        self.hostname = ""
        self.boots = 0
        self.failure: str | None = None  # set when nspawn exits with an error
        self._proc: subprocess.Popen[bytes] | None = None
        self._off_requested = False
        self._kill_at: float | None = None

    # --- paths and queries ----------------------------------------------------------
    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def machine_path(self) -> Path:
        """The guest's root file system as seen from this machine (while it is on)."""
        return self.dir / "root"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """systemd-nspawn's pid."""
        return self._proc.pid if self._proc else None

    @property
    def leader_pid(self) -> int | None:
        """The guest's PID 1 as seen from here (for nsenter), once it exists."""
        if self._proc is None:
            return None
        for task in Path(f"/proc/{self._proc.pid}/task").glob("*/children"):
            try:
                children = task.read_text().split()
            except OSError:
                continue
            if children:
                return int(children[0])
        return None

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- life cycle -------------------------------------------------------------------
    def create(self, ip: str | None, disk: Path | None = None) -> None:
        """Makes the disk and the network; dresses the disk as cloud-init would on the
        instance's first boot (hostname, machine id, new SSH host keys, the key pair's public
        key and the user data's ssh_authorized_keys added to those already authorized).

        ``disk``: the disk of the image the instance was launched from (disks.py), copied as
        this instance's own; None: a new disk over the base image."""
        if self.dir.exists():  # a leftover of the same id: start from scratch
            unmount(self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        if disk is not None:
            disks.copy_tree(disk, self.upper)  # before the first mount, as a volume from a snapshot
        else:
            self.upper.mkdir()
        for d in (self.dir / "work", self.machine_path):
            d.mkdir()
        self.link = net.create_link(self.netns, self.veth)
        self.hostname = hostname_for(ip or self.link.guest_addr)
        self._save_meta()
        if self.plain and disk is None:  # an image's disk hides (or has) the venv as its instance did
            self._hide(VENV)
        self._mount()
        root = self.machine_path
        _write_into(root, "/etc/hostname", f"{self.hostname}\n".encode(), 0o644)
        _write_into(root, "/etc/machine-id", f"{uuid.uuid4().hex}\n".encode(), 0o444)
        # cloud-init's ssh module on a new instance id: the image's host keys go, the first boot
        # makes new ones (gpu-lab-ssh-hostkeys.service, as for a new disk).
        etc_ssh = _inside(root, "/etc/ssh")
        for old in etc_ssh.glob("ssh_host_*") if etc_ssh.is_dir() else []:
            if old.is_file() or old.is_symlink():
                old.unlink()
        keys = [k.strip() for k in [self.public_key or "", *self.extra_keys] if k.strip()]
        if keys:
            ssh_dir = _inside(root, f"/home/{USER}/.ssh")
            if not ssh_dir.exists():
                ssh_dir.mkdir(mode=0o700)
                os.chown(ssh_dir, UID, UID)
            present = _read_in(root, f"/home/{USER}/.ssh/authorized_keys").decode(errors="replace")
            _write_into(root, f"/home/{USER}/.ssh/authorized_keys",
                        merged_authorized_keys(present, keys).encode(), 0o600, UID, UID)
        self.set_ip(ip)

    def boot(self, scripts: Sequence[str] = ()) -> None:
        """Boots the guest; ``scripts`` are the user data scripts cloud-init runs at this boot."""
        if self.running:
            return
        self.failure = None
        self._mount()
        self._copy_host_ca()
        self._install_scripts(scripts)
        self._launch()

    def request_power_off(self, grace: float = 15) -> None:
        """Asks the guest to shut down (nspawn turns SIGTERM into an orderly poweroff);
        poll() kills what is left after grace seconds."""
        if self._proc is None:
            return
        if not self._off_requested:
            self._off_requested = True
            self._kill_at = time.monotonic() + grace
            self._proc.send_signal(signal.SIGTERM)

    def reboot(self) -> None:
        """Asks the guest's systemd for an orderly reboot (SIGRTMIN+5: reboot.target), as
        EC2's RebootInstances does through ACPI; nspawn then exits 133 (see poll)."""
        pid = self.leader_pid
        if pid is not None:
            os.kill(pid, signal.SIGRTMIN + 5)

    def poll(self) -> int | None:
        """Called often. Relaunches the guest after an in-guest reboot; returns the exit
        code when the guest went off by itself (poweroff: 0, or a crash), else None."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is None:
            if self._kill_at is not None and time.monotonic() > self._kill_at:
                cgroups.kill(self.cgroups)  # nspawn exits once its payload is gone
                self._kill_at = None
            return None
        self._proc = None
        requested = self._off_requested
        # Testbed workaround: an in-guest reboot makes nspawn exit 133; relaunching it
        # is what lets Ansible's reboot module work.
        if code == EXIT_REBOOT and not requested:
            self._launch()
            return None
        self._after_off()
        if not requested and code != 0:
            self.failure = f"systemd-nspawn exited {code}; console:\n{self.console_tail()}"
        return None if requested else code

    def wait_off(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self._proc is not None:
            self.poll()
            if time.monotonic() > deadline:
                cgroups.kill(self.cgroups)
                deadline = time.monotonic() + 5
            time.sleep(0.05)

    def power_off(self, grace: float = 15) -> None:
        """Shuts the guest down and waits; the disk (upper dir) stays."""
        self.request_power_off(grace)
        self.wait_off(grace + 5)

    def set_ip(self, ip: str | None) -> None:
        """Routes the instance's Elastic IP to this guest, or stops routing it."""
        if ip == self.ip:
            return
        if self.ip is not None:
            net.unroute_eip(self.ip)
            self.ip = None
        if ip is not None and self.link is not None:
            net.route_eip(ip, self.link)
            self.ip = ip
        self._save_meta()

    def kill(self) -> None:
        """Pulls the plug: no shutdown inside the guest (the disk stays)."""
        if self._proc is None:
            return
        self._off_requested = True
        cgroups.kill(self.cgroups)  # nspawn runs in the same groups: it goes too
        self.wait_off(timeout=10)

    def destroy(self, grace: float = 5) -> None:
        """Terminate: shut down (or, with grace 0, kill), then delete the disk, network
        and cgroups."""
        try:
            if self.running and grace > 0:
                self.power_off(grace=grace)
            elif self.running:
                self.kill()
        finally:
            cgroups.kill(self.cgroups)
            cgroups.remove(self.cgroups)
            if self.ip is not None:
                net.unroute_eip(self.ip)
                self.ip = None
            unmount(self.dir)
            net.delete_link(self.netns, self.veth)
            if self.dir.exists() and not mounts_under(self.dir):
                shutil.rmtree(self.dir)

    # --- internals ----------------------------------------------------------------------
    def _save_meta(self) -> None:
        if not self.dir.exists():
            return
        meta = {"instance_id": self.instance_id, "netns": self.netns, "veth": self.veth,
                "ip": self.ip, "hostname": self.hostname,
                "link": self.link.to_json() if self.link else None}
        (self.dir / "meta.json").write_text(json.dumps(meta, indent=2))

    def _hide(self, path: str) -> None:
        """Hides a path of the base image in this instance only: an overlayfs whiteout
        (a 0/0 character device) in the upper dir, made before the first mount."""
        rel = Path(path.lstrip("/"))
        for parent in reversed(rel.parents[:-1]):  # upper dirs mirror the base's modes
            src, dst = self.base / parent, self.upper / parent
            if not dst.exists():
                st = src.stat()
                dst.mkdir()
                os.chmod(dst, stat.S_IMODE(st.st_mode))
                os.chown(dst, st.st_uid, st.st_gid)
        os.mknod(self.upper / rel, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def _mount(self) -> None:
        if is_mounted(self.machine_path):
            return
        options = f"lowerdir={self.base},upperdir={self.upper},workdir={self.dir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.machine_path)])

    def _copy_host_ca(self) -> None:
        """Testbed workaround: outbound TLS here is re-signed by a CA made at each boot of
        this machine, so every boot of a guest gets the current one (never the image)."""
        root = self.machine_path
        for crt in sorted(HOST_CA_DIR.glob("*.crt")):
            _write_into(root, f"{HOST_CA_DIR}/{crt.name}", crt.read_bytes(), 0o644)
        if HOST_CA_BUNDLE.exists():
            _write_into(root, str(HOST_CA_BUNDLE), HOST_CA_BUNDLE.read_bytes(), 0o644)

    def _install_scripts(self, scripts: Sequence[str]) -> None:
        root = self.machine_path
        folder = root / SCRIPTS_DIR.lstrip("/")
        for old in folder.glob("part-*") if folder.is_dir() else []:
            old.unlink()
        if not scripts:
            return
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for n, script in enumerate(scripts, 1):
            _write_into(root, f"{SCRIPTS_DIR}/part-{n:03d}", script.encode(), 0o700)
        _write_into(root, f"/etc/systemd/system/{SCRIPTS_UNIT}", _SCRIPTS_UNIT_TEXT.encode(), 0o644)
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(mode=0o755, parents=True, exist_ok=True)
        link = wants / SCRIPTS_UNIT
        if not link.is_symlink():
            os.symlink(f"/etc/systemd/system/{SCRIPTS_UNIT}", link)

    def _launch(self) -> None:
        assert self.link is not None
        procs = cgroups.create(self.cgroups)
        self.boots += 1
        cmd = [
            "systemd-nspawn", "--quiet", "--boot",
            # Testbed workaround: this VM's PID 1 is not systemd: without these two
            # nspawn fails with "Failed to open system bus" (see cgroups.py).
            "--register=no", "--keep-unit",
            f"--directory={self.machine_path}", f"--machine={self.instance_id}",
            f"--hostname={self.hostname}",
            f"--network-namespace-path=/run/netns/{self.netns}",
            f"--bind-ro={self.share}:{SHARE_IN_GUEST}",
            "--link-journal=no", "--resolv-conf=copy-host", "--console=read-only",
        ]
        with self.console_log.open("ab") as log:
            log.write(f"\n--- boot {self.boots} of {self.instance_id} at {time.ctime()} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _LAUNCHER, "gpu-lab-launcher", *cmd],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                     "GPU_LAB_CGROUP_PROCS": ":".join(str(p) for p in procs)},
                start_new_session=True,  # a Ctrl-C at the test runner must not reach the guest
            )
        self._off_requested = False
        self._kill_at = None

    def _after_off(self) -> None:
        cgroups.kill(self.cgroups, timeout=2)
        unmount(self.machine_path)
        self._off_requested = False
        self._kill_at = None
