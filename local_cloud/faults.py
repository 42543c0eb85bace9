"""Fault injection for the emulated cloud: chosen API calls answered with real AWS errors.

The injector sits in the emulator's request path (``Emulator.interceptors``, first in the
list), between botocore and moto, at the HTTP boundary. A call it answers never reaches
moto (nothing is created) nor the stand-in controller. Its answers are what AWS sends:

* EC2 (query protocol): ``<Response><Errors><Error><Code>..</Code><Message>..</Message>
  </Error></Errors><RequestID>..</RequestID></Response>``;
* other query services (STS, IAM): ``<ErrorResponse><Error><Type>Sender|Receiver</Type>...``;
* JSON protocols (SSM, CloudWatch): ``{"__type": code, "message": ..}`` with
  ``x-amzn-RequestId`` (and ``x-amzn-query-error`` when the client asked in query mode);

each with the HTTP status AWS uses for that code (``KNOWN_ERRORS``), or the one given.

A rule selects calls by action (``ec2:RunInstances``, ``RunInstances`` for any service,
globs such as ``ec2:Describe*``, ``*``), optionally by ``where`` (request fields, see
``Request.values``), and fires on a schedule counted over the calls it selects: ``always``
(default), ``nth=N`` (only the Nth), ``every=N`` (N, 2N, ...), ``first=N`` (1..N).
Every rule counts the calls it selects on its own; the first rule (in the order added)
whose schedule fires answers the call. Each injection is logged.

In-process::

    rule = emulator.faults.add("ec2:RunInstances", "InsufficientInstanceCapacity",
                               where={"InstanceType": "g6.xlarge", "zone": "us-east-1a"})
    emulator.faults.add("*", "throttle", every=3)   # each service's own throttling error
    emulator.faults.log                              # [Injection(rule=1, action=..., ...)]
    emulator.faults.remove(rule); emulator.faults.clear()

Over HTTP (another process, or ``python -m local_cloud serve``)::

    POST   /_gpu_lab/faults        {"action": "ec2:RunInstances", "code": "Unsupported",
                                    "where": {"InstanceType": "g6.xlarge"}, "first": 2}
                                   (or a list of such objects) -> 201 {"rules": [...]}
    GET    /_gpu_lab/faults        -> {"rules": [...], "log": [...]}
    DELETE /_gpu_lab/faults        -> removes every rule and the log (answers what was there)
    DELETE /_gpu_lab/faults/<id>   -> removes one rule

``RemoteFaults(url)`` is the same API over HTTP, and ``python -m local_cloud.faults``
the same from a shell (``add``, ``list``, ``remove``, ``clear``; endpoint from
``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.sax.saxutils import escape

PATH = "/_gpu_lab/faults"

# code -> (HTTP status, message). Messages are AWS's wording; {InstanceType}, {zone},
# {other_zones} and any request field are filled in from the request when present.
KNOWN_ERRORS: dict[str, tuple[int, str]] = {
    "InsufficientInstanceCapacity": (
        500,
        "We currently do not have sufficient {InstanceType} capacity in the Availability Zone you "
        "requested ({zone}). Our system will be working on provisioning additional capacity. You can "
        "currently get {InstanceType} capacity by not specifying an Availability Zone in your request "
        "or choosing {other_zones}.",
    ),
    "Unsupported": (
        400,
        "Your requested instance type ({InstanceType}) is not supported in your requested Availability "
        "Zone ({zone}). Please retry your request by not specifying an Availability Zone or choosing "
        "{other_zones}.",
    ),
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "VcpuLimitExceeded": (
        400,
        "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the "
        "instance bucket that the specified instance type belongs to. Please visit "
        "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
    ),
    "InternalError": (500, "An internal error has occurred"),
    "Unavailable": (503, "The service is unavailable. Please try again shortly."),
    "InsufficientAddressCapacity": (500, "Insufficient address capacity."),
    "Throttling": (400, "Rate exceeded"),
    "ThrottlingException": (400, "Rate exceeded"),
    "InternalServerError": (500, "An internal error has occurred"),
}
# "throttle": whatever the called service sends when it throttles.
THROTTLE = "throttle"
THROTTLE_BY_PROTOCOL = {"ec2": "RequestLimitExceeded", "query": "Throttling", "json": "ThrottlingException"}

SCHEDULES = ("nth", "every", "first")


# --- the request, as a rule sees it --------------------------------------------------------

@dataclass
class Request:
    """One API call at the HTTP boundary."""

    action: str  # "ec2:RunInstances"
    protocol: str  # "ec2", "query" (STS, IAM...) or "json" (SSM, CloudWatch)
    params: dict[str, list[str]]  # form fields; a JSON body flattened the same way (A.1.B)
    region: str | None  # from the SigV4 credential scope
    query_mode: bool  # a JSON client that wants query-compatible error codes
    content_type: str
    zone_of_subnet: Callable[[str | None, str], str | None] = field(repr=False, default=lambda r, s: None)

    @property
    def service(self) -> str:
        return self.action.split(":", 1)[0]

    @property
    def operation(self) -> str:
        return self.action.split(":", 1)[-1]

    def first(self, key: str) -> str | None:
        found = self.values(key)
        return found[0] if found else None

    def values(self, key: str) -> list[str]:
        """The request's values for a field (``InstanceType``, ``Placement.AvailabilityZone``,
        a glob such as ``NetworkInterface.*.SubnetId``) or a derived one: ``zone`` (the
        Availability Zone asked for, directly or through the subnet) and ``region``."""
        if key == "region":
            return [self.region] if self.region else []
        if key == "zone":
            return self.zones()
        if any(c in key for c in "*?["):
            return [v for k, vs in self.params.items() if fnmatch.fnmatchcase(k, key) for v in vs]
        return list(self.params.get(key, []))

    def zones(self) -> list[str]:
        zones = self.values("Placement.AvailabilityZone") + self.values("AvailabilityZone")
        subnets = self.values("SubnetId") + self.values("NetworkInterface.*.SubnetId")
        zones += [z for z in (self.zone_of_subnet(self.region, s) for s in subnets) if z]
        return list(dict.fromkeys(zones))


def _flatten(value: Any, prefix: str, out: dict[str, list[str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for n, v in enumerate(value, 1):
            _flatten(v, f"{prefix}.{n}", out)
    else:
        text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
        out.setdefault(prefix, []).append(text)


def parse_request(environ: Mapping[str, Any], body: bytes, action: str,
                  zone_of_subnet: Callable[[str | None, str], str | None] | None = None) -> Request:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:  # AWS4-HMAC-SHA256 Credential=KEY/20250101/us-east-1/ec2/aws4_request, ...
        region: str | None = auth.split("Credential=")[1].split(",")[0].split("/")[2]
    except IndexError:
        region = None
    params: dict[str, list[str]] = {}
    if environ.get("HTTP_X_AMZ_TARGET"):
        protocol = "json"
        try:
            _flatten(json.loads(body or b"{}"), "", params)
        except ValueError:
            pass
    else:
        protocol = "ec2" if action.startswith("ec2:") else "query"
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return Request(
        action=action,
        protocol=protocol,
        params=params,
        region=region,
        query_mode=str(environ.get("HTTP_X_AMZN_QUERY_MODE", "")).lower() == "true",
        content_type=environ.get("CONTENT_TYPE") or "application/x-amz-json-1.1",
        zone_of_subnet=zone_of_subnet or (lambda r, s: None),
    )


# --- rules ---------------------------------------------------------------------------------

Where = Mapping[str, str | list[str]] | Callable[[Request], bool]


@dataclass(eq=False)
class Rule:
    """Answer the calls it selects with ``code`` on its schedule."""

    id: int
    action: str | list[str]
    code: str
    status: int | None = None  # None: the code's own (KNOWN_ERRORS), else 400
    message: str | None = None  # None: the code's own; may use {field} from the request
    where: Where | None = None
    schedule: str = "always"  # always, nth, every, first
    n: int = 0
    matched: int = 0  # calls this rule selected so far
    injected: int = 0  # of which it answered

    def selects(self, request: Request) -> bool:
        patterns = [self.action] if isinstance(self.action, str) else self.action
        if not any(_action_matches(p, request.action) for p in patterns):
            return False
        if self.where is None:
            return True
        if callable(self.where):
            return bool(self.where(request))
        for key, wanted in self.where.items():
            options = [wanted] if isinstance(wanted, str) else list(wanted)
            have = request.values(key)
            if not any(fnmatch.fnmatchcase(v, str(o)) for v in have for o in options):
                return False
        return True

    def fires(self, call: int) -> bool:
        if self.schedule == "nth":
            return call == self.n
        if self.schedule == "every":
            return call % self.n == 0
        if self.schedule == "first":
            return call <= self.n
        return True

    def as_dict(self) -> dict[str, Any]:
        where: Any = self.where
        if callable(where):
            where = f"<predicate {getattr(where, '__name__', 'callable')}>"
        elif where is not None:
            where = dict(where)
        spec: dict[str, Any] = {"id": self.id, "action": self.action, "code": self.code,
                                "status": self.status, "message": self.message, "where": where,
                                "schedule": self.schedule}
        if self.schedule != "always":
            spec[self.schedule] = self.n
        spec.update(matched=self.matched, injected=self.injected)
        return spec


def _action_matches(pattern: str, action: str) -> bool:
    if ":" not in pattern and pattern != "*":
        action = action.split(":", 1)[-1]
    return fnmatch.fnmatchcase(action, pattern)


@dataclass(frozen=True)
class Injection:
    """One call the injector answered."""

    rule: int
    action: str
    code: str
    status: int
    call: int  # the rule's count: the Nth call it selected
    request: int  # the Nth API call the injector saw since the last clear()
    time: float  # epoch seconds
    request_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the injector --------------------------------------------------------------------------

class FaultInjector:
    """An emulator interceptor: ``hook(environ, body, action) -> (status, headers, body) | None``."""

    def __init__(self, zone_of_subnet: Callable[[str | None, str], str | None] | None = None,
                 zones_of_region: Callable[[str | None], list[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._log: list[Injection] = []
        self._next_id = 1
        self._seen = 0
        self._zone_of_subnet = zone_of_subnet
        self._zones_of_region = zones_of_region or (lambda region: [])

    # in-process control
    def add(self, action: str | list[str] = "*", code: str = "InternalError", *, status: int | None = None,
            message: str | None = None, where: Where | None = None, nth: int | None = None,
            every: int | None = None, first: int | None = None) -> Rule:
        given = {k: v for k, v in (("nth", nth), ("every", every), ("first", first)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"give one schedule of nth, every, first (or none: always), not {sorted(given)}")
        schedule, n = next(iter(given.items())) if given else ("always", 0)
        if schedule != "always" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"{schedule} must be a whole number of at least 1, not {n!r}")
        if not code or not isinstance(code, str):
            raise ValueError("code must name an AWS error code (or 'throttle')")
        if not action or not (isinstance(action, str) or all(isinstance(a, str) for a in action)):
            raise ValueError("action must be an action name, a glob, or a list of them")
        if message is not None and not isinstance(message, str):
            raise ValueError(f"message must be text, not {message!r}")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not 400 <= status <= 599):
            raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
        if where is not None and not callable(where):
            if not isinstance(where, Mapping) or not all(
                    isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
                    for v in where.values()):
                raise ValueError("where must map request fields to a value or a list of values")
        with self._lock:
            rule = Rule(self._next_id, action if isinstance(action, str) else list(action), code,
                        status, message, where, schedule, n)
            self._next_id += 1
            self._rules.append(rule)
        return rule

    def add_spec(self, spec: Mapping[str, Any]) -> Rule:
        """A rule from its JSON form: {"action", "code", "status", "message", "where",
        and at most one of "nth", "every", "first"}."""
        if not isinstance(spec, Mapping):
            raise ValueError(f"a rule is a JSON object, not {spec!r}")
        unknown = set(spec) - {"action", "code", "status", "message", "where", *SCHEDULES}
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        if "code" not in spec:
            raise ValueError("a rule needs a code")
        return self.add(spec.get("action", "*"), spec["code"], status=spec.get("status"),
                        message=spec.get("message"), where=spec.get("where"),
                        **{k: spec[k] for k in SCHEDULES if k in spec})

    def remove(self, rule: Rule | int) -> bool:
        rule_id = rule.id if isinstance(rule, Rule) else rule
        with self._lock:
            kept = [r for r in self._rules if r.id != rule_id]
            found = len(kept) != len(self._rules)
            self._rules = kept
        return found

    def clear(self) -> None:
        """No rules, an empty log, counting from 1 again."""
        with self._lock:
            self._rules.clear()
            self._log.clear()
            self._seen = 0

    @contextlib.contextmanager
    def active(self, *args: Any, **kwargs: Any) -> Iterator[Rule]:
        """``with faults.active("ec2:RunInstances", "Unsupported"): ...`` removes it after."""
        rule = self.add(*args, **kwargs)
        try:
            yield rule
        finally:
            self.remove(rule)

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    @property
    def log(self) -> list[Injection]:
        with self._lock:
            return list(self._log)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [r.as_dict() for r in self._rules], "log": [i.as_dict() for i in self._log]}

    # the request path
    def __call__(self, environ: dict[str, Any], body: bytes, action: str | None
                 ) -> tuple[int, dict[str, str], bytes] | None:
        if action is None:
            return None
        with self._lock:
            self._seen += 1
            if not self._rules:
                return None
            seen = self._seen
        request = parse_request(environ, body, action, self._zone_of_subnet)
        with self._lock:
            chosen: Rule | None = None
            for rule in self._rules:
                if not rule.selects(request):
                    continue
                rule.matched += 1
                if chosen is None and rule.fires(rule.matched):
                    chosen = rule
            if chosen is None:
                return None
            chosen.injected += 1
            code, status, message = self._error_for(chosen, request)
            request_id = str(uuid.uuid4())
            self._log.append(Injection(chosen.id, action, code, status, chosen.matched, seen, time.time(),
                                       request_id))
        return error_response(request, code, status, message, request_id)

    def _error_for(self, rule: Rule, request: Request) -> tuple[str, int, str]:
        code = rule.code
        if code == THROTTLE:  # a JSON client in query mode (CloudWatch) gets the query code
            code = THROTTLE_BY_PROTOCOL["query" if request.query_mode else request.protocol]
        known_status, known_message = KNOWN_ERRORS.get(code, (400, f"{code} (injected by the test harness)"))
        status = rule.status or known_status
        template = rule.message if rule.message is not None else known_message
        zone = request.first("zone")
        others = [z for z in self._zones_of_region(request.region) if z != zone]
        fields = {k: v[0] for k, v in request.params.items() if v}
        fields.update(zone=zone or "?", region=request.region or "?", action=request.action,
                      other_zones=", ".join(others) or "another Availability Zone")
        try:
            message = template.format_map(_Missing(fields))
        except (ValueError, IndexError, AttributeError):
            message = template
        return code, status, message


class _Missing(dict):  # str.format_map: an unknown {field} stays as it is
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def error_response(request: Request, code: str, status: int, message: str,
                   request_id: str) -> tuple[int, dict[str, str], bytes]:
    """What AWS answers for ``code`` in the request's protocol."""
    if request.protocol == "json":
        headers = {"Content-Type": request.content_type, "x-amzn-RequestId": request_id}
        if request.query_mode:
            headers["x-amzn-query-error"] = f"{code};{'Receiver' if status >= 500 else 'Sender'}"
        return status, headers, json.dumps({"__type": code, "message": message}).encode()
    if request.protocol == "ec2":
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                f"</Error></Errors><RequestID>{request_id}</RequestID></Response>")
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return status, {"Content-Type": "text/xml;charset=UTF-8", "x-amzn-RequestId": request_id}, body.encode()


# --- HTTP control (served by the emulator at /_gpu_lab/faults) ------------------------------

def handle_http(injector: FaultInjector, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """The control endpoint: (HTTP status, JSON answer)."""
    rest = path[len(PATH):].strip("/")
    if rest:
        if method != "DELETE" or not rest.isdigit():
            return 404, {"error": f"{method} {path}: only DELETE {PATH}/<rule id>"}
        removed = [r.as_dict() for r in injector.rules if r.id == int(rest)]
        if not injector.remove(int(rest)):
            return 404, {"error": f"no rule {rest}"}
        return 200, {"rules": removed}
    if method == "GET":
        return 200, injector.snapshot()
    if method == "DELETE":
        before = injector.snapshot()
        injector.clear()
        return 200, before
    if method == "POST":
        try:
            spec = json.loads(body or b"null")
            specs = spec.get("rules") if isinstance(spec, dict) and "rules" in spec else spec
            specs = specs if isinstance(specs, list) else [specs]
            added: list[Rule] = []
            try:
                for one in specs:
                    added.append(injector.add_spec(one))
            except ValueError:
                for rule in added:  # all or nothing
                    injector.remove(rule)
                raise
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 201, {"rules": [r.as_dict() for r in added]}
    return 405, {"error": f"{method} {PATH}: use GET, POST or DELETE"}


class RemoteFaults:
    """The injector of an emulator in another process, over HTTP."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint.rstrip("/") + PATH

    def _call(self, method: str, path: str = "", payload: Any = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,  # noqa: S310
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - the emulator
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            raise ValueError(json.load(exc).get("error", str(exc))) from exc

    def add(self, action: str | list[str] = "*", code: str = "InternalError", **spec: Any) -> dict[str, Any]:
        return self._call("POST", payload={"action": action, "code": code, **spec})["rules"][0]

    def remove(self, rule_id: int) -> bool:
        try:
            self._call("DELETE", f"/{rule_id}")
        except ValueError:
            return False
        return True

    def clear(self) -> dict[str, Any]:
        return self._call("DELETE")

    @property
    def rules(self) -> list[dict[str, Any]]:
        return self._call("GET")["rules"]

    @property
    def log(self) -> list[dict[str, Any]]:
        return self._call("GET")["log"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cloud.faults",
                                     description="Control the emulator's fault injector.")
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""),
                        help="the emulator (default: $AWS_ENDPOINT_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a rule")
    add.add_argument("action", help="ec2:RunInstances, RunInstances, ec2:Describe*, *")
    add.add_argument("code", help=f"an AWS error code, or {THROTTLE!r}")
    add.add_argument("--status", type=int)
    add.add_argument("--message")
    add.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE")
    when = add.add_mutually_exclusive_group()
    for name in SCHEDULES:
        when.add_argument(f"--{name}", type=int)
    sub.add_parser("list", help="rules and log, as JSON")
    remove = sub.add_parser("remove", help="remove one rule")
    remove.add_argument("id", type=int)
    sub.add_parser("clear", help="remove every rule and the log")
    args = parser.parse_args(argv)
    if not args.endpoint:
        parser.error("no emulator: give --endpoint or set AWS_ENDPOINT_URL")
    remote = RemoteFaults(args.endpoint)
    try:
        if args.command == "add":
            where: dict[str, list[str]] = {}
            for item in args.where:
                key, sep, value = item.partition("=")
                if not sep:
                    parser.error(f"--where {item!r}: write FIELD=VALUE")
                where.setdefault(key, []).append(value)
            spec: dict[str, Any] = {k: getattr(args, k) for k in ("status", "message", *SCHEDULES)
                                    if getattr(args, k) is not None}
            if where:
                spec["where"] = where
            result: Any = remote.add(args.action, args.code, **spec)
        elif args.command == "list":
            result = remote._call("GET")
        elif args.command == "remove":
            if not remote.remove(args.id):
                print(f"no rule {args.id}", file=sys.stderr)
                return 1
            result = {"removed": args.id}
        else:
            result = remote.clear()
    except (ValueError, OSError) as exc:
        print(f"{args.endpoint}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
