"""Ties a stand-in host to each emulated EC2 instance, so the instance looks from
outside as it would on EC2:

* running, with an Elastic IP associated: booted, answering SSH at the EIP with the
  key pair's public key authorized for ``ubuntu``, and the keys of the user data's
  cloud-config ``ssh_authorized_keys`` too (at the first boot), and the user data's
  scripts run as cloud-init would (first boot; every boot with scripts-user ``always``;
  see cloudinit.py);
* stopped: powered off, its disk kept; started again: boots from the same disk;
* terminated (or gone after a reset of the emulator): destroyed;
* powered off from inside the guest (``sudo poweroff``, an idle auto-stop): the
  instance becomes ``stopped`` (or ``terminated`` if its shutdown behaviour says so),
  as EC2 does for an instance-initiated shutdown;
* RebootInstances: the guest reboots (moto only answers the call);
* CreateImage: the image holds a copy of the instance's disk (stopped, or as it is when it
  runs: NoReboot), and an instance launched from the image starts with a copy of that disk;
  DeregisterImage deletes it (disks.py);
* the instance metadata (IMDSv2) at 169.254.169.254 inside the guest, for its own instance,
  spot interruption notices included (local_cloud/imds.py);
* an EIP that moves or is disassociated: its route follows or goes (an allocated EIP
  that reaches no instance answers "No route to host").

A stand-in is made the first time an instance runs with an EIP (nothing could reach it
before; and inventory tests run hundreds of instances that need no host); from then on
it follows the instance's state. A test can narrow that down to chosen instances
(``only(predicate)``: a class of 30 labs cannot all boot on a small machine); the
others get none, and their EIPs answer "No route to host" like any unrouted EIP.

A background thread reads moto's backends in-process every ``interval`` seconds: the
emulator must run in this process (``Emulator.start``).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from local_cloud.emulator import ACCOUNT_ID
from local_cloud.imds import ImdsService, emulator_metadata
from local_cloud.standin import cloudinit, disks, image, net
from local_cloud.standin.cleanup import claim, cleanup_stale, reap_orphans, record_blocked
from local_cloud.standin.host import StandIn, ssh_answers

if TYPE_CHECKING:
    from local_cloud.emulator import Emulator

DLAMI_NAME_PREFIX = "Deep Learning"


@dataclass
class Observed:
    """One emulated instance, as read from moto."""

    instance_id: str
    region: str
    state: str
    eip: str | None
    public_key: str | None
    plain: bool
    shutdown_behavior: str
    tags: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None  # decoded (see cloudinit.user_data_text)
    image_id: str = ""


Want = Callable[[Observed], bool]


@dataclass(frozen=True)
class HostInfo:
    """A stand-in, as tests see it."""

    instance_id: str
    ip: str | None
    booted: bool  # its systemd-nspawn runs (SSH may need a moment more: wait_until)
    hostname: str
    machine_path: Path  # the guest's root, from this machine (mounted while booted)
    pid: int | None  # systemd-nspawn's
    leader_pid: int | None  # the guest's PID 1, for nsenter
    boots: int
    failure: str | None


class HostController:
    def __init__(self, emulator: Emulator, state_dir: Path, interval: float = 0.2,
                 want: Want | None = None) -> None:
        self.emulator = emulator
        self.state_dir = Path(state_dir)
        self.interval = interval
        # Which running instances get a stand-in (None: all). Asked at every pass for
        # each one that has none yet; one that has a stand-in keeps it.
        self.want: Want | None = want
        self._first_user_data: dict[str, str | None] = {}  # as at the instance's first run
        self.errors: list[str] = []
        self._hosts: dict[str, StandIn] = {}
        self._blocked: set[str] = set()
        self._create_failed: dict[str, str] = {}
        self._said: set[str] = set()
        self._reboots: set[str] = set()  # RebootInstances seen, not yet acted on
        self._reboots_lock = threading.Lock()
        self._images_seen: set[str] = set()  # every image looked at (all regions)
        self._captures: dict[str, str] = {}  # image id -> instance whose disk it waits for (off first)
        self._base: Path | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.imds = ImdsService()  # each stand-in's metadata listener, from creation to destruction

    @property
    def share_dir(self) -> Path:
        """Seen read-only at /srv/share in every guest (tests put a course repo there)."""
        return self.state_dir / "share"

    # --- start and stop --------------------------------------------------------------
    def start(self) -> HostController:
        reap_orphans()  # hosts of killed runs (other state dirs): nobody else would
        cleanup_stale(self.state_dir)
        claim(self.state_dir)
        self.share_dir.mkdir(parents=True, exist_ok=True)
        self._base = image.ensure_base()
        self._stop.clear()
        self.emulator.interceptors.append(self._intercept)
        self._thread = threading.Thread(target=self._loop, name="standin-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Powers every stand-in off and removes all they left on this machine."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self._intercept in self.emulator.interceptors:
            self.emulator.interceptors.remove(self._intercept)
        with self._lock:
            try:
                for host in self._hosts.values():  # shut down in parallel, then wait
                    host.request_power_off(grace=5)
                for host in self._hosts.values():
                    host.wait_off(timeout=10)
                for iid in list(self._hosts):
                    self._destroy(iid)
                for ip in self._blocked:
                    net.unroute_eip(ip)
                self._blocked.clear()
            finally:
                self._hosts.clear()
                self._captures.clear()
                self._images_seen.clear()
                disks.forget_all(self.state_dir)
                self.imds.close()
                cleanup_stale(self.state_dir)  # whatever the above missed or failed at

    def only(self, want: Want | None) -> None:
        """From now on, only running instances for which ``want(observed)`` is true get a
        stand-in (``None``: every instance, the default). Stand-ins made before stay.
        The ``cloud`` fixture sets it back to None for each test."""
        with self._lock:
            self.want = want

    # --- queries for tests -------------------------------------------------------------
    def hosts(self) -> dict[str, HostInfo]:
        with self._lock:
            return {iid: _info(h) for iid, h in self._hosts.items()}

    def host(self, instance_id: str) -> HostInfo | None:
        with self._lock:
            h = self._hosts.get(instance_id)
            return _info(h) if h else None

    def booted(self) -> dict[str, str | None]:
        """instance id -> EIP of every stand-in that is on."""
        return {iid: h.ip for iid, h in self.hosts().items() if h.booted}

    def wait_until(self, instance_id: str, state: Literal["booted", "off", "gone"],
                   timeout: float = 30) -> HostInfo | None:
        """Waits until the instance's stand-in is booted (SSH answers at its EIP, or at
        its link address without one), off (or has none), or gone (destroyed)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.host(instance_id)
            if info is not None and info.failure and state == "booted":
                raise RuntimeError(f"stand-in {instance_id} failed: {info.failure}")
            if state == "gone" and info is None:
                return None
            if state == "off" and (info is None or not info.booted):
                return info
            if state == "booted" and info is not None and info.booted:
                with self._lock:
                    h = self._hosts.get(instance_id)
                    address = (h.ip or (h.link.guest_addr if h.link else None)) if h else None
                if address and ssh_answers(address):
                    return info
            if time.monotonic() > deadline:
                with self._lock:
                    h = self._hosts.get(instance_id)
                    tail = h.console_tail() if h else "(no stand-in)"
                raise TimeoutError(f"stand-in {instance_id} not {state} after {timeout:.0f} s; "
                                   f"now {info}; console:\n{tail}")
            time.sleep(0.1)

    def wait_settled(self, timeout: float = 30) -> None:
        """Waits until no stand-in is left whose instance is gone or terminated (after
        a reset of the emulator, say), so the next test starts clean."""
        deadline = time.monotonic() + timeout
        while True:
            self.sync()
            with self._lock:
                observed = self._observe()[0]
                stale = [iid for iid in self._hosts
                         if iid not in observed or observed[iid].state == "terminated"]
            if not stale:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-ins still there: {stale}")
            time.sleep(0.1)

    # --- the reconciliation ----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # keep tying hosts to instances; say what broke (once)
                self._error(f"stand-in controller: {traceback.format_exc()}")

    def sync(self) -> None:
        """One pass: makes every stand-in match its instance (the thread calls this)."""
        with self._lock:
            observed, allocated = self._observe()
            # Images after instances: an image of an instance that was terminated when it was
            # observed was made before that (CreateImage refuses a terminated one), so its disk
            # is still here; it is copied before the stand-in is destroyed below.
            images = self._images()
            self._note_first_runs(observed)
            self._react_to_guests(observed)
            self._reboot_requested()
            self._capture_images(images, observed)
            for iid in list(self._hosts):
                obs = observed.get(iid)
                if obs is None:  # the emulator was reset: nothing to shut down nicely for
                    self._drop_captures(iid)
                    self._destroy(iid, grace=0)
                elif obs.state in ("terminated", "shutting-down"):
                    self._capture_before_destroy(iid)
                    self._destroy(iid)
            self._route(observed)
            for obs in observed.values():
                self._power(obs)
            self._block_unused(allocated)
            self._forget_images(images, observed)

    def _observe(self) -> tuple[dict[str, Observed], set[str]]:
        from moto.ec2.models import ec2_backends  # slow import; moto is loaded by now

        observed: dict[str, Observed] = {}
        allocated: set[str] = set()
        for region in self.emulator.regions:
            backend = ec2_backends[ACCOUNT_ID][region]
            eips: dict[str, str] = {}
            for address in list(backend.addresses):
                allocated.add(address.public_ip)
                instance = address.instance or getattr(address.eni, "instance", None)
                if instance is not None:
                    eips[instance.id] = address.public_ip
            for reservation in list(backend.reservations.values()):
                for inst in list(reservation.instances):
                    key = backend.key_pairs.get(inst.key_name) if inst.key_name else None
                    ami = backend.amis.get(inst.image_id)
                    observed[inst.id] = Observed(
                        instance_id=inst.id, region=region, state=inst.state,
                        eip=eips.get(inst.id),
                        public_key=key.material_public.decode() if key else None,
                        plain=not (ami is not None and str(ami.name).startswith(DLAMI_NAME_PREFIX)),
                        shutdown_behavior=inst.instance_initiated_shutdown_behavior or "stop",
                        # backend.tags is a defaultdict: .get, or every instance gets an entry
                        tags=dict(backend.tags.get(inst.id) or {}),
                        user_data=cloudinit.user_data_text(getattr(inst, "user_data", None)),
                        image_id=inst.image_id or "",
                    )
        return observed, allocated

    def _images(self) -> dict[str, str | None]:
        """Every registered image (all regions): id -> the instance it was made of (CreateImage), or None."""
        from moto.ec2.models import ec2_backends

        found: dict[str, str | None] = {}
        for region in self.emulator.regions:
            for ami_id, ami in list(ec2_backends[ACCOUNT_ID][region].amis.items()):
                found[ami_id] = getattr(ami, "instance_id", None)
        return found

    # --- disks through images (disks.py) ---------------------------------------------
    def _capture_images(self, images: dict[str, str | None], observed: dict[str, Observed]) -> None:
        """Copies the disk of each new image's instance, once the guest is off (a stop
        completes when the guest is off: moto says stopped at once), or at once when the
        instance runs (NoReboot: what is there)."""
        for ami_id, source in images.items():
            if ami_id not in self._images_seen:
                self._images_seen.add(ami_id)
                if source is not None and source in self._hosts:
                    self._captures[ami_id] = source
        self._images_seen &= set(images)
        for ami_id, source in list(self._captures.items()):
            host = self._hosts.get(source)
            obs = observed.get(source)
            if host is None:
                del self._captures[ami_id]
            elif not host.running or (obs is not None and obs.state == "running"):
                self._capture(ami_id, host)

    def _capture_before_destroy(self, iid: str) -> None:
        """A terminated instance whose image still waits for its disk: off first, then copied."""
        waiting = [ami_id for ami_id, source in self._captures.items() if source == iid]
        if not waiting:
            return
        host = self._hosts[iid]
        host.power_off(grace=5)
        for ami_id in waiting:
            self._capture(ami_id, host)

    def _capture(self, ami_id: str, host: StandIn) -> None:
        del self._captures[ami_id]
        try:
            disks.capture(self.state_dir, ami_id, host.upper)
        except Exception as exc:  # the image then has no disk: its instances start from a new one
            self._error(f"stand-in {host.instance_id}: could not copy its disk for {ami_id}: {exc}")
            disks.forget(self.state_dir, ami_id)

    def _drop_captures(self, iid: str) -> None:
        for ami_id in [a for a, source in self._captures.items() if source == iid]:
            del self._captures[ami_id]

    def _forget_images(self, images: dict[str, str | None], observed: dict[str, Observed]) -> None:
        """Deletes the disks of deregistered images, unless an instance launched from one has
        yet to get its stand-in (launch.yml deregisters the shelf once the instance runs at its
        address, which can be before the controller made its stand-in)."""
        waiting = {o.image_id for o in observed.values()
                   if o.state not in ("terminated", "shutting-down") and o.instance_id not in self._hosts}
        for ami_id in disks.stored_ids(self.state_dir):
            if ami_id not in images and ami_id not in waiting and ami_id not in self._captures:
                disks.forget(self.state_dir, ami_id)

    def _note_first_runs(self, observed: dict[str, Observed]) -> None:
        """Keeps each instance's user data as it was when it first ran: cloud-init reads
        it at the first boot, a stand-in may be made later (an EIP, a filter that says yes)."""
        for iid in [iid for iid in self._first_user_data if iid not in observed]:
            del self._first_user_data[iid]
        for obs in observed.values():
            if obs.state == "running" and obs.instance_id not in self._first_user_data:
                self._first_user_data[obs.instance_id] = obs.user_data

    def _wanted(self, obs: Observed) -> bool:
        if self.want is None:
            return True
        try:
            return bool(self.want(obs))
        except Exception:  # a broken filter in a test: say so, make nothing
            self._error(f"stand-in filter failed for {obs.instance_id}: {traceback.format_exc()}")
            return False

    def _react_to_guests(self, observed: dict[str, Observed]) -> None:
        """Guests that went off by themselves: poweroff inside is a shutdown of the instance."""
        for iid, host in self._hosts.items():
            code = host.poll()
            if code is None:
                continue
            obs = observed.get(iid)
            if code == 0 and obs is not None and obs.state == "running":
                self._instance_initiated_shutdown(obs)
            elif code != 0:
                self._error(f"stand-in {iid}: {host.failure}")

    def _intercept(self, environ: dict[str, Any], body: bytes, action: str | None) -> None:
        """A hook in the emulator's request path (it answers nothing itself): moto only
        says yes to RebootInstances; EC2 also reboots the guest, so note which."""
        if action != "ec2:RebootInstances":
            return None
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if form.get("DryRun", ["false"])[0].lower() != "true":
            with self._reboots_lock:
                self._reboots.update(v for k, vs in form.items() if k.startswith("InstanceId.") for v in vs)
        return None

    def _reboot_requested(self) -> None:
        with self._reboots_lock:
            wanted, self._reboots = self._reboots, set()
        for iid in wanted:
            host = self._hosts.get(iid)
            if host is not None and host.running:
                host.reboot()

    def _instance_initiated_shutdown(self, obs: Observed) -> None:
        from moto.core.utils import utcnow
        from moto.ec2.models import ec2_backends
        from moto.ec2.models.instances import InstanceState, StateReason

        instance = ec2_backends[ACCOUNT_ID][obs.region].get_instance_by_id(obs.instance_id)
        if instance is None:
            return
        reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                             "Client.InstanceInitiatedShutdown")
        # Not stop_instances/terminate_instances: EC2's API stop and termination
        # protection do not apply to a shutdown from inside.
        if obs.shutdown_behavior == "terminate":
            instance.state_reason = reason
            instance.terminate()
            instance.state_reason = reason
            obs.state = "terminated"
        else:
            # What Instance.stop() does, reordered: it sets the state before the reason,
            # so a DescribeInstances in between (moto serves from other threads) saw
            # "stopped" with an empty reason. Reason first, then the state in one go.
            instance.state_reason = reason
            instance._reason = f"User initiated ({utcnow().strftime('%Y-%m-%d %H:%M:%S UTC')})"
            for nic in instance.nics.values():
                nic.stop()
            instance._state = InstanceState("stopped", 80)
            obs.state = "stopped"
            self.emulator.spot.stopped_by_owner(obs.instance_id)  # a persistent request goes disabled

    def _route(self, observed: dict[str, Observed]) -> None:
        """EIP routes follow associations; all removals first, so an EIP can move."""
        wanted = {iid: (observed[iid].eip if iid in observed else None) for iid in self._hosts}
        for iid, host in self._hosts.items():
            if host.ip is not None and host.ip != wanted[iid]:
                host.set_ip(None)
        for iid, host in self._hosts.items():
            ip = wanted[iid]
            if ip is not None and host.ip != ip and net.is_routable(ip):
                try:
                    host.set_ip(ip)
                except Exception as exc:  # someone else's route: say so, keep going
                    self._error(f"stand-in {iid}: cannot route {ip}: {exc}")

    def _power(self, obs: Observed) -> None:
        iid = obs.instance_id
        host = self._hosts.get(iid)
        if obs.state == "running":
            if host is None:
                if (obs.eip and net.is_routable(obs.eip) and iid not in self._create_failed
                        and obs.image_id not in self._captures  # its image's disk is not copied yet
                        and self._wanted(obs)):
                    self._create(obs)
            elif not host.running and host.failure is None:
                try:
                    # A boot after a stop: cloud-init reads the user data as it is now.
                    host.boot(cloudinit.boot_scripts(obs.user_data, first_boot=False))
                except Exception as exc:
                    host.failure = f"boot failed: {exc}"
                    self._error(f"stand-in {iid}: {host.failure}")
        elif obs.state in ("stopping", "stopped"):
            self._create_failed.pop(iid, None)  # a start after a stop tries again
            if host is not None:
                host.failure = None
                host.request_power_off()

    def _create(self, obs: Observed) -> None:
        assert self._base is not None, "start() first"
        user_data = self._first_user_data.get(obs.instance_id, obs.user_data)
        extra_keys, problem = cloudinit.authorized_keys(user_data)
        if problem:
            self._error(f"stand-in {obs.instance_id}: {problem}")
        host = StandIn(obs.instance_id, self.state_dir, self._base, self.share_dir,
                       public_key=obs.public_key, extra_keys=extra_keys, plain=obs.plain)
        self._hosts[obs.instance_id] = host
        try:
            host.create(obs.eip, disk=disks.stored(self.state_dir, obs.image_id))
            assert host.link is not None
            port = self.imds.attach(obs.instance_id, host.link.host_addr, host.link.guest_addr,
                                    functools.partial(emulator_metadata, self.emulator, obs.region, obs.instance_id))
            net.redirect_metadata(host.link, port)
            host.boot(cloudinit.boot_scripts(user_data, first_boot=True))
        except Exception as exc:
            self._create_failed[obs.instance_id] = str(exc)
            self._error(f"stand-in {obs.instance_id}: could not be made: {exc}")
            self._destroy(obs.instance_id)

    def _destroy(self, iid: str, grace: float = 5) -> None:
        host = self._hosts.pop(iid)
        self.imds.detach(iid)
        try:
            host.destroy(grace)
        except Exception as exc:
            self._error(f"stand-in {iid}: destroy failed (cleanup_stale will retry): {exc}")

    def _block_unused(self, allocated: set[str]) -> None:
        routed = {h.ip for h in self._hosts.values() if h.ip}
        wanted = {ip for ip in allocated - routed if net.is_routable(ip)}
        if wanted == self._blocked:
            return
        for ip in self._blocked - wanted - routed:
            net.unroute_eip(ip)
        for ip in wanted - self._blocked:
            net.block_eip(ip)
        self._blocked = wanted
        record_blocked(self.state_dir, wanted)

    def _error(self, message: str) -> None:
        if message in self._said:  # the same trouble at every pass: say it once
            return
        self._said.add(message)
        self.errors.append(message)
        print(f"[gpu_lab stand-in] {message}", file=sys.stderr, flush=True)


def _info(h: StandIn) -> HostInfo:
    return HostInfo(instance_id=h.instance_id, ip=h.ip, booted=h.running, hostname=h.hostname,
                    machine_path=h.machine_path, pid=h.pid, leader_pid=h.leader_pid,
                    boots=h.boots, failure=h.failure)
