"""The instance metadata service (IMDSv2) for the stand-in hosts, as EC2 serves it at
``http://169.254.169.254`` with ``HttpTokens=required``:

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: N`` (1-21600) gives a
  session token (400 without a valid TTL; 403 with ``X-Forwarded-For``, as EC2 refuses proxied
  token requests); the answer carries the TTL back in the same header;
* ``GET /latest/meta-data/...`` with ``X-aws-ec2-metadata-token: TOKEN``: the instance's own
  metadata; 401 without a token, with an unknown or expired one, or with another instance's.
  A directory (``/latest/meta-data/``, ``placement/``) lists its entries, one a line;
  ``spot/instance-action`` is EC2's interruption notice (``{"action": "stop", "time": ...}``)
  while there is one, else 404 (local_cloud/spot.py ``instance_action``);
* ``GET /latest/dynamic/instance-identity/document``: the identity document's JSON.

Which instance asks is told by the connection's source address (each stand-in's guest end of
its veth, see standin/net.py): one listener per stand-in, bound to the host end of its veth on
a port of its own, and inside the stand-in's network namespace a DNAT rule that sends
169.254.169.254:80 there (``net.redirect_metadata``). So this machine's own 169.254.169.254 (a
VM's metadata service, say) is never touched, nothing else listens on port 80, and the rule
goes with the namespace. Tokens are per instance and live in this process only.
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_cloud.emulator import Emulator

ADDRESS = "169.254.169.254"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
META_PREFIX = "/latest/meta-data/"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TTL = 21600

# The metadata of one instance, as leaves by path under /latest/meta-data/ (None: it is gone).
Describe = Callable[[], "dict[str, str] | None"]


@dataclass
class _Token:
    instance_id: str
    expires: float


@dataclass
class _Guest:
    instance_id: str
    describe: Describe
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread = field(repr=False)


class ImdsService:
    """The metadata service of every stand-in of one controller."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._guests: dict[str, _Guest] = {}  # guest address -> its instance
        self._tokens: dict[str, _Token] = {}

    # --- the controller's side ----------------------------------------------------------
    def attach(self, instance_id: str, host_addr: str, guest_addr: str, describe: Describe) -> int:
        """Serves the instance whose stand-in has guest_addr, on host_addr; returns the port
        (a new one: the redirect inside the stand-in's namespace points there)."""
        self.detach(instance_id)
        service = self

        class Handler(_Handler):
            imds = service

        server = http.server.ThreadingHTTPServer((host_addr, 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name=f"imds-{instance_id}", daemon=True)
        with self._lock:
            self._guests[guest_addr] = _Guest(instance_id, describe, server, thread)
        thread.start()
        return int(server.server_address[1])

    def detach(self, instance_id: str) -> None:
        """Stops serving the instance; its tokens go too."""
        with self._lock:
            gone = [(a, g) for a, g in self._guests.items() if g.instance_id == instance_id]
            for address, _ in gone:
                del self._guests[address]
            self._tokens = {k: t for k, t in self._tokens.items() if t.instance_id != instance_id}
        for _, guest in gone:
            guest.server.shutdown()
            guest.server.server_close()
            guest.thread.join(timeout=5)

    def close(self) -> None:
        with self._lock:
            ids = {g.instance_id for g in self._guests.values()}
        for instance_id in ids:
            self.detach(instance_id)

    def served(self) -> dict[str, str]:
        """guest address -> instance id, of every stand-in served now."""
        with self._lock:
            return {a: g.instance_id for a, g in self._guests.items()}

    def listeners(self) -> dict[str, tuple[str, int]]:
        """instance id -> (address, port) its listener is bound to."""
        with self._lock:
            return {g.instance_id: (str(g.server.server_address[0]), int(g.server.server_address[1]))
                    for g in self._guests.values()}

    # --- the answers ------------------------------------------------------------------------
    def answer(self, method: str, path: str, headers: dict[str, str], source: str) -> tuple[int, str, dict[str, str]]:
        """(status, body, extra headers) for one request from source (an address)."""
        headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            guest = self._guests.get(source)
        if guest is None:
            return 403, "Forbidden", {}
        path = path.split("?", 1)[0]
        if path == TOKEN_PATH:
            if method != "PUT":
                return 405, "Method Not Allowed", {"Allow": "PUT"}
            if "x-forwarded-for" in headers:
                return 403, "Forbidden", {}
            ttl_text = headers.get(TTL_HEADER.lower(), "").strip()
            if not ttl_text.isdigit() or not 1 <= int(ttl_text) <= MAX_TTL:
                return 400, "Bad Request", {}
            token = secrets.token_urlsafe(42)
            with self._lock:
                now = self.clock()
                self._tokens = {k: t for k, t in self._tokens.items() if t.expires > now}
                self._tokens[token] = _Token(guest.instance_id, now + int(ttl_text))
            return 200, token, {TTL_HEADER: str(int(ttl_text))}
        if method != "GET":
            return 405, "Method Not Allowed", {"Allow": "GET"}
        with self._lock:
            token = self._tokens.get(headers.get(TOKEN_HEADER.lower(), ""))
            left = token.expires - self.clock() if token else 0.0
        if token is None or token.instance_id != guest.instance_id or left <= 0:
            return 401, "Unauthorized", {}
        ttl = {TTL_HEADER: str(max(1, int(left)))}
        leaves = guest.describe()
        if leaves is None:
            return 404, "Not Found", ttl
        if path == IDENTITY_PATH:
            return 200, json.dumps(identity_document(leaves), indent=2), ttl
        if path in ("/latest", "/latest/"):
            return 200, "dynamic\nmeta-data", ttl
        if path == "/latest/meta-data":
            path = META_PREFIX
        if not path.startswith(META_PREFIX):
            return 404, "Not Found", ttl
        key = path[len(META_PREFIX):]
        if key in leaves:
            return 200, leaves[key], ttl
        listing = entries(leaves, key)
        return (200, "\n".join(listing), ttl) if listing else (404, "Not Found", ttl)


def entries(leaves: dict[str, str], directory: str) -> list[str]:
    """What a directory lists: its leaves, and its subdirectories with a trailing slash."""
    prefix = directory.rstrip("/") + "/" if directory.strip("/") else ""
    found = set()
    for key in leaves:
        if key.startswith(prefix) and key != prefix:
            head, slash, _ = key[len(prefix):].partition("/")
            found.add(head + slash)
    return sorted(found)


def identity_document(leaves: dict[str, str]) -> dict[str, Any]:
    from local_cloud.emulator import ACCOUNT_ID

    return {"accountId": ACCOUNT_ID, "availabilityZone": leaves.get("placement/availability-zone"),
            "imageId": leaves.get("ami-id"), "instanceId": leaves.get("instance-id"),
            "instanceType": leaves.get("instance-type"), "privateIp": leaves.get("local-ipv4"),
            "region": leaves.get("placement/region"), "version": "2017-09-30"}


class _Handler(http.server.BaseHTTPRequestHandler):
    imds: ImdsService
    server_version = "EC2ws"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10  # a guest that opens a connection and says nothing

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        status, body, extra = self.imds.answer(self.command, self.path, dict(self.headers.items()),
                                               self.client_address[0])
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    def log_message(self, *args: Any) -> None:
        pass


def emulator_metadata(emulator: Emulator, region: str, instance_id: str) -> dict[str, str] | None:
    """The instance's metadata leaves, read from moto (and the spot state) as it is now."""
    from moto.ec2.models import ec2_backends

    from local_cloud.emulator import ACCOUNT_ID

    backend = ec2_backends[ACCOUNT_ID][region]
    instance = backend.get_instance_by_id(instance_id)
    if instance is None:
        return None
    zone = instance.placement.zone or f"{region}a"
    leaves = {
        "ami-id": str(instance.image_id),
        "instance-id": instance.id,
        "instance-type": str(instance.instance_type),
        "instance-life-cycle": "spot" if getattr(instance, "lifecycle", None) == "spot" else "on-demand",
        "placement/availability-zone": zone,
        "placement/region": region,
        "local-ipv4": str(instance.private_ip or ""),
        "hostname": str(instance.private_dns_name),
        "local-hostname": str(instance.private_dns_name),
    }
    public = next((a.public_ip for a in list(backend.addresses) if a.instance is not None
                   and a.instance.id == instance_id), None)
    if public:
        leaves["public-ipv4"] = public
    action = emulator.spot.instance_action(instance_id)
    if action is not None:
        leaves["spot/instance-action"] = json.dumps(action)
    return leaves
