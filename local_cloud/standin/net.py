"""The stand-ins' network: one network namespace per instance, joined to this machine
by a veth pair with link-local addresses; the instance's Elastic IP (127.x.y.z) routed
into it; outbound traffic (apt, PyPI) masqueraded by an nft table of our own.

Testbed workarounds (see the testbed note):
* the whole 127/8 is local on Linux, so an EIP only reaches a guest through a /32
  route in table ``local`` (more specific than the built-in 127/8), with
  ``route_localnet=1`` on both ends of the veth so neither kernel drops the packets
  as martians;
* never host-network mode: the guest would see and bind this machine's own sockets.

The instance metadata address 169.254.169.254:80 (local_cloud/imds.py) is sent, by a DNAT rule
inside each namespace (``redirect_metadata``), to that stand-in's metadata listener on the host
end of its veth: this machine's own 169.254.169.254 stays as it is, and the rule goes with the
namespace.

Names and addresses are machine-wide, so other stand-ins (another state dir, another
developer's) must never be touched: our namespaces start with ``gl-``, our host-side
veths with ``glh``, and a /30 is only taken where no address on this machine overlaps.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from local_cloud.standin.system import RUN_DIR, file_lock, run

NETNS_PREFIX = "gl-"
VETH_PREFIX = "glh"
GUEST_IFNAME = "eth0"
# 169.254.64.0/18: link-local, clear of 169.254.169.254 (the metadata address).
POOL = ipaddress.ip_network("169.254.64.0/18")
NFT_TABLE = "gpu_lab_standin"
ROUTE_PROTO = "245"  # marks our EIP routes, so they are told apart from anyone else's
IMDS_TABLE = "gpu_lab_imds"  # inside each stand-in's namespace
METADATA_ADDR = "169.254.169.254"
_LOCK = RUN_DIR / "net.lock"
_SAVED_FORWARD = RUN_DIR / "ip_forward.saved"


@dataclass(frozen=True)
class Link:
    """One instance's end of the network: its namespace and veth pair."""

    netns: str
    veth: str  # the host side; the guest side is GUEST_IFNAME inside netns
    host_addr: str
    guest_addr: str
    prefixlen: int = 30

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Link:
        return cls(**data)  # type: ignore[arg-type]


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = run(["ip", "-j", "-4", "addr", "show"]).stdout
    nets = []
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            nets.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)
    return nets


def _free_slot() -> ipaddress.IPv4Network:
    used = _used_networks()
    for slot in POOL.subnets(new_prefix=30):
        if not any(slot.overlaps(n) for n in used):
            return slot
    raise RuntimeError(f"no free /30 left in {POOL} for another stand-in")


def _uplink_mtu() -> int:
    """Testbed workaround: this VM's uplink has MTU 1400; a 1500-byte veth would
    rely on path MTU discovery for every outbound TCP connection."""
    out = run(["ip", "-j", "route", "get", "1.1.1.1"], check=False).stdout
    try:
        dev = json.loads(out)[0]["dev"]
        return min(1500, int(Path(f"/sys/class/net/{dev}/mtu").read_text()))
    except (ValueError, KeyError, IndexError, OSError):
        return 1500


def create_link(netns: str, veth: str) -> Link:
    """Makes the namespace and the veth pair, addressed and routed, plus the shared
    masquerade table. Idempotent per name: a stale leftover of the same name goes first."""
    with file_lock(_LOCK):
        _delete_link_locked(netns, veth)
        slot = _free_slot()
        host, guest = (str(a) for a in list(slot.hosts())[:2])
        mtu = str(_uplink_mtu())
        link = Link(netns, veth, host, guest)
        try:
            run(["ip", "netns", "add", netns])
            run(["ip", "link", "add", veth, "mtu", mtu, "type", "veth",
                 "peer", "name", GUEST_IFNAME, "mtu", mtu, "netns", netns])
            run(["ip", "addr", "add", f"{host}/30", "dev", veth])
            run(["ip", "link", "set", veth, "up"])
            # Testbed workaround: route_localnet on both ends, or 127.x packets crossing
            # the veth are dropped as martians.
            run(["sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.route_localnet=1"])
            for cmd in (["addr", "add", f"{guest}/30", "dev", GUEST_IFNAME],
                        ["link", "set", "lo", "up"],
                        ["link", "set", GUEST_IFNAME, "up"],
                        ["route", "add", "default", "via", host]):
                run(["ip", "-n", netns, *cmd])
            run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
                 f"net.ipv4.conf.{GUEST_IFNAME}.route_localnet=1"])
            _ensure_masquerade_locked()
        except Exception:
            _delete_link_locked(netns, veth)
            raise
        return link


def delete_link(netns: str, veth: str) -> None:
    """Removes the namespace and veth (their routes go with them); then, if no stand-in
    of anyone's state dir is left, the masquerade table too."""
    with file_lock(_LOCK):
        _delete_link_locked(netns, veth)
        _release_shared_locked()


def _delete_link_locked(netns: str, veth: str) -> None:
    if netns in list_netns():
        run(["ip", "netns", "delete", netns], check=False)
    if veth and Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "delete", veth], check=False)


def redirect_metadata(link: Link, port: int) -> None:
    """Inside the stand-in's namespace: connections to 169.254.169.254:80 go to port on the
    host end of its veth (its metadata listener), so the guest asks at EC2's address. Replaces
    an earlier redirect of the same namespace (a new listener, a new port)."""
    rules = (f"table ip {IMDS_TABLE}\n"
             f"delete table ip {IMDS_TABLE}\n"
             f"table ip {IMDS_TABLE} {{\n"
             "  chain output {\n"
             "    type nat hook output priority -100; policy accept;\n"
             f"    ip daddr {METADATA_ADDR} tcp dport 80 dnat to {link.host_addr}:{port}\n"
             "  }\n"
             "}\n")
    run(["ip", "netns", "exec", link.netns, "nft", "-f", "-"], input=rules)


def list_netns() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout
    try:
        return [ns["name"] for ns in json.loads(out or "[]")]
    except (ValueError, KeyError):
        return []


# --- Elastic IP routes ------------------------------------------------------------------

def routes_for(ip: str) -> list[dict[str, str]]:
    """Every route for exactly ip/32 in table local (ours or anyone's)."""
    out = run(["ip", "-j", "route", "show", "table", "local", f"{ip}/32"], check=False).stdout
    try:
        return [r for r in json.loads(out or "[]") if r.get("dst") == ip]
    except ValueError:
        return []


def route_eip(ip: str, link: Link) -> None:
    """Sends traffic for ip into the guest (replacing our own block route, if any)."""
    _check_routable(ip)
    with file_lock(_LOCK):
        for route in routes_for(ip):
            if route.get("protocol") != ROUTE_PROTO:
                raise RuntimeError(f"{ip} is already routed by someone else: {route}")
        # Testbed workaround: a /32 in table local beats the built-in local 127/8.
        run(["ip", "route", "replace", f"{ip}/32", "dev", link.veth, "src", link.host_addr,
             "table", "local", "proto", ROUTE_PROTO])


def block_eip(ip: str) -> None:
    """An allocated EIP that reaches no instance: 'No route to host', as on EC2 (where
    it times out), rather than falling through to this machine's own 127/8."""
    _check_routable(ip)
    with file_lock(_LOCK):
        if any(r.get("protocol") != ROUTE_PROTO for r in routes_for(ip)):
            return  # someone else's address: leave it be
        run(["ip", "route", "replace", "unreachable", f"{ip}/32", "table", "local",
             "proto", ROUTE_PROTO])


def unroute_eip(ip: str) -> None:
    """Removes our route for ip, whatever it is (device or block)."""
    with file_lock(_LOCK):
        for route in routes_for(ip):
            if route.get("protocol") == ROUTE_PROTO:
                kind = [route["type"]] if route.get("type") not in (None, "unicast") else []
                run(["ip", "route", "del", *kind, f"{ip}/32", "table", "local",
                     "proto", ROUTE_PROTO], check=False)


def is_routable(ip: str) -> bool:
    """moto picks EIPs at random in 127/8; a few of those would cut this machine off."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.version == 4 and addr.is_loopback and ip not in (
        "127.0.0.0", "127.0.0.1", "127.255.255.255")


def _check_routable(ip: str) -> None:
    if not is_routable(ip):
        raise ValueError(f"refusing to route {ip} into a stand-in")


# --- outbound: masquerade and forwarding ----------------------------------------------

def _ensure_masquerade_locked() -> None:
    if run(["nft", "list", "table", "ip", NFT_TABLE], check=False).returncode != 0:
        run(["nft", "-f", "-"], input=(
            f"table ip {NFT_TABLE} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    iifname "{VETH_PREFIX}*" oifname != "{VETH_PREFIX}*" masquerade\n'
            "  }\n"
            "}\n"))
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    if forward.read_text().strip() != "1":
        if not _SAVED_FORWARD.exists():  # remember the machine's own setting once
            _SAVED_FORWARD.write_text(forward.read_text())
        forward.write_text("1\n")


def release_shared() -> None:
    with file_lock(_LOCK):
        _release_shared_locked()


def _release_shared_locked() -> None:
    """The last stand-in (of any state dir) is gone: drop our table, restore forwarding."""
    if any(ns.startswith(NETNS_PREFIX) for ns in list_netns()):
        return
    run(["nft", "delete", "table", "ip", NFT_TABLE], check=False)
    if _SAVED_FORWARD.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(_SAVED_FORWARD.read_text())
        _SAVED_FORWARD.unlink()
