"""The emulated EC2 API: moto's server, seeded with what real AWS has and moto lacks.

Everything the playbooks do reaches it over real HTTP through ``AWS_ENDPOINT_URL``; no
module is patched. On top of moto this adds, in one WSGI middleware:

* the DLAMI images owned by ``amazon`` and their public SSM parameters, which cannot be
  created through the public API (moto answers ``AccessDeniedException: reserved
  parameter name``), so they are put straight into moto's backends;
* a count of API calls per action, split into mutating and read-only, for the benchmarks
  (``GET /_gpu_lab/calls``, ``DELETE /_gpu_lab/calls`` to reset); calls answered by an
  interceptor instead of moto are counted too, and also as ``injected``;
* fault injection (``emulator.faults``, ``/_gpu_lab/faults``): chosen calls answered with
  real AWS errors, see local_cloud/faults.py;
* Service Quotas' EC2 vCPU quotas, a course account's (``emulator.quotas``,
  ``/_gpu_lab/quotas``), which EC2 enforces, see local_cloud/quotas.py;
* EC2's own rules where moto is laxer (a started instance's LaunchTime, an AMI whose
  architecture the instance type cannot run), see local_cloud/aws_rules.py.
"""

from __future__ import annotations

import datetime as dt
import http
import io
import json
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from local_cloud import aws_rules, images
from local_cloud import quotas as quotas_module
from local_cloud import spot as spot_module
from local_cloud.faults import PATH as FAULTS_PATH
from local_cloud.faults import FaultInjector, handle_http
from local_cloud.idempotency import RunInstancesTokens
from local_cloud.pricing import PriceListAPI
from local_cloud.quotas import TARGET_PREFIX as QUOTAS_TARGET
from local_cloud.quotas import QuotaState
from local_cloud.spot import SpotState

ACCOUNT_ID = "123456789012"
AMAZON_OWNER_ID = "898082745236"  # the account that publishes the Deep Learning AMIs
DEFAULT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")

# Read-only API actions start with one of these verbs; everything else mutates.
READ_ONLY_PREFIXES = ("Describe", "Get", "List")


@dataclass(frozen=True)
class DlamiLine:
    """One published line of Deep Learning AMIs (its SSM parameter family)."""

    parameter: str  # the part between .../ami/<architecture>/ and /latest/ami-id
    name_prefix: str
    root_gib: int
    architecture: str = "x86_64"
    # The start of the image's description, as AWS words it for the line's architecture.
    supported: str = "Supported EC2 instances: G4dn, G5, G6, Gr6, G6e, P4, P5."
    # Its images' release dates (the last one is what the parameter points at), as AWS names them.
    releases: tuple[str, ...] = ("20250915", "20251020")


ARM64_SUPPORTED = "Supported EC2 instances: G5g."
# Seeded like a real region at the end of 2026: an unsupported PyTorch 2.7 line on Ubuntu 22.04
# (still published), the base line, and the supported 2.9 and 2.12 lines on 24.04, each for
# both architectures (the base line x86_64 only), with several images per line. The x86_64
# lines come first: tests take "a DLAMI" as the first of a region's images
# (next(iter(emulator.dlami[region].values()))) and launch it on x86_64 types.
DLAMI_LINES = (
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04",
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.7 (Ubuntu 22.04)",
        75,
    ),
    DlamiLine(
        "base-oss-nvidia-driver-gpu-ubuntu-24.04",
        "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)",
        45,
    ),
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04",
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04)",
        75,
        releases=("20251110", "20260310"),
    ),
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04",
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04)",
        75,
        releases=("20260610", "20260715", "20260822"),
    ),
    # AWS publishes the arm64 build of a line under the same line name and its own
    # architecture path; its image names say ARM64, so the x86_64 name patterns miss it.
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04",
        "Deep Learning ARM64 OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04)",
        75,
        architecture="arm64",
        supported=ARM64_SUPPORTED,
        releases=("20251110", "20260310"),
    ),
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.12-ubuntu-24.04",
        "Deep Learning ARM64 OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04)",
        75,
        architecture="arm64",
        supported=ARM64_SUPPORTED,
        releases=("20260715", "20260822"),
    ),
    DlamiLine(
        "oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04",
        "Deep Learning ARM64 OSS Nvidia Driver AMI GPU PyTorch 2.7 (Ubuntu 22.04)",
        75,
        architecture="arm64",
        supported=ARM64_SUPPORTED,
    ),
)
# Kept for callers that name the default releases (each line has its own: DlamiLine.releases).
DLAMI_RELEASES = DlamiLine.releases


def dlami_parameter_name(line: DlamiLine) -> str:
    return f"/aws/service/deeplearning/ami/{line.architecture}/{line.parameter}/latest/ami-id"


def dlami_line(parameter: str, architecture: str = "x86_64") -> DlamiLine:
    """The seeded line of that name and architecture."""
    return next(line for line in DLAMI_LINES if line.parameter == parameter and line.architecture == architecture)


def _seed_catalogue() -> None:
    """moto's instance-type catalogue lacks p3.2xlarge, which AWS still sells."""
    from moto.ec2.models.instance_types import (
        INSTANCE_TYPE_OFFERINGS,
        INSTANCE_TYPES,
        InstanceType,
        InstanceTypeBackend,
    )

    if "p3.2xlarge" not in INSTANCE_TYPES and "g5.2xlarge" in INSTANCE_TYPES:
        p3 = json.loads(json.dumps(INSTANCE_TYPES["g5.2xlarge"]))
        p3["InstanceType"] = "p3.2xlarge"
        p3["GpuInfo"] = {
            "Gpus": [{"Name": "V100", "Manufacturer": "NVIDIA", "Count": 1, "MemoryInfo": {"SizeInMiB": 16384}}],
            "TotalGpuMemoryInMiB": 16384,
        }
        INSTANCE_TYPES["p3.2xlarge"] = p3
        InstanceTypeBackend.instance_types.append(InstanceType("p3.2xlarge"))
        # ... and its offerings: where g5.2xlarge is offered, so is p3.2xlarge.
        for regions in INSTANCE_TYPE_OFFERINGS.values():
            for offers in regions.values():
                offers += [{**o, "InstanceType": "p3.2xlarge"} for o in offers if o["InstanceType"] == "g5.2xlarge"]


def _seed_region(account: str, region: str) -> dict[str, str]:
    """Adds the DLAMI images and SSM parameters to one region; returns parameter -> AMI id."""
    from moto.ec2.models import ec2_backends
    from moto.ssm.models import ssm_backends

    ec2 = ec2_backends[account][region]
    ssm = ssm_backends[account][region]
    # moto gives an instance in a default subnet an auto-assigned public IP that changes on
    # stop/start and hides the Elastic IP (AWS shows the EIP). With the flag off, moto's
    # public IP is the EIP, as AWS reports it.
    for subnets in ec2.subnets.values():
        for subnet in subnets.values():
            subnet.map_public_ip_on_launch = "false"
    published: dict[str, str] = {}
    for line in DLAMI_LINES:
        name = dlami_parameter_name(line)
        if ssm._parameters.get(name):  # moto's backends are per process: seeded already
            published[name] = ssm._parameters[name][-1].value
            continue
        for release in line.releases:
            published[name] = _add_dlami_image(account, region, line, release)
    return published


def _add_dlami_image(account: str, region: str, line: DlamiLine, release: str) -> str:
    """One more image of a line, released on ``release`` (YYYYMMDD), and the line's SSM
    parameter pointed at it (a new version, as AWS publishes a release)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.utils import random_ami_id
    from moto.ssm.models import Parameter, ssm_backends

    ec2 = ec2_backends[account][region]
    ssm = ssm_backends[account][region]
    ami = _SizedAmi(
        ec2,
        random_ami_id(),
        name=f"{line.name_prefix} {release}",
        description=f"{line.supported} {line.name_prefix}",
        owner_id=AMAZON_OWNER_ID,
        owner_alias="amazon",
        public=True,
        virtualization_type="hvm",
        architecture=line.architecture,
        root_device_type="ebs",
        region_name=f"{region}a",
        creation_date=dt.datetime.strptime(release, "%Y%m%d").replace(tzinfo=dt.UTC),
    )
    ami.root_gib = line.root_gib
    ec2.amis[ami.id] = ami
    name = dlami_parameter_name(line)
    versions = ssm._parameters[name]
    versions.append(
        Parameter(
            account_id=account,
            name=name,
            value=ami.id,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=dt.datetime.now(dt.UTC).timestamp(),
            version=len(versions) + 1,
            data_type="aws:ec2:image",
        )
    )
    return str(ami.id)


class _SizedAmi:  # replaced by a real subclass on first use (moto imports are slow)
    pass


def _make_sized_ami_class() -> None:
    """moto reports every AMI's root snapshot as 15 GiB; real DLAMIs need 45-75 GiB."""
    global _SizedAmi
    from moto.ec2.models.amis import Ami

    class SizedAmi(Ami):
        root_gib = 15

        @property
        def block_device_mappings(self) -> list[dict[str, Any]]:
            mappings = super().block_device_mappings
            for m in mappings:
                if "Ebs" in m:
                    m["Ebs"]["VolumeSize"] = self.root_gib
                    m["Ebs"]["DeleteOnTermination"] = True
                    m["Ebs"]["VolumeType"] = "gp3"
            return mappings

    _SizedAmi = SizedAmi  # type: ignore[misc,assignment]


def _settle_shared_transformers() -> None:
    """moto 5.2 serializes every EC2 response with one dict of key-path transformers shared by
    all of them, and the first DescribeKeyPairs adds a path to it. A response serialized in
    another thread at that moment fails with "dictionary changed size during iteration"
    (HTTP 500: lab_info's parallel first reads hit it). With the
    path there before the server takes requests, later calls only change its value."""
    from moto.core.serialize import never_return
    from moto.ec2.responses._base_response import EC2BaseResponse

    EC2BaseResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER.setdefault(
        "DescribeKeyPairsResult.KeyPairs.KeyPairInfo.PublicKey", never_return)


@dataclass
class CallLog:
    """API calls seen at the HTTP boundary, by service and action."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)  # answered by an interceptor, not moto

    def record(self, action: str, injected: bool = False) -> None:
        with self.lock:
            self.calls[action] += 1
            if injected:
                self.injected[action] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            calls = dict(self.calls)
            injected = dict(self.injected)
        mutating = {a: n for a, n in calls.items() if not a.split(":")[-1].startswith(READ_ONLY_PREFIXES)}
        return {
            "total": sum(calls.values()),
            "mutating": sum(mutating.values()),
            "read_only": sum(calls.values()) - sum(mutating.values()),
            "by_action": calls,
            "injected": sum(injected.values()),
            "injected_by_action": injected,
        }

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.injected.clear()


def request_action(environ: dict[str, Any], body: bytes) -> str | None:
    """The AWS action of a request: ``ec2:RunInstances``, ``ssm:GetParameter``..."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:  # JSON protocols (SSM, CloudWatch in JSON mode...)
        prefix, _, action = target.partition(".")
        service = JSON_TARGET_SERVICES.get(prefix.split("_")[0], prefix.lower())
        return f"{service}:{action}"
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    if "Action" in form:
        service = _service_from_auth(environ.get("HTTP_AUTHORIZATION", "")) or "aws"
        return f"{service}:{form['Action'][0]}"
    return None


def _service_from_auth(auth: str) -> str | None:
    # AWS4-HMAC-SHA256 Credential=KEY/20250101/us-east-1/ec2/aws4_request, ...
    try:
        return auth.split("Credential=")[1].split(",")[0].split("/")[3]
    except IndexError:
        return None


JSON_TARGET_SERVICES = {"AmazonSSM": "ssm", "GraniteServiceVersion20100801": "monitoring",
                        "AWSPriceListService": "pricing", QUOTAS_TARGET: "servicequotas"}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per call is noise
        pass


Middleware = Callable[[dict[str, Any], bytes, str | None], tuple[int, dict[str, str], bytes] | None]


class Emulator:
    """moto's server on a loopback port, seeded, counting, with optional fault hooks.

    moto keeps its state in module-level backends, so every Emulator of one process sees
    the same resources: a test run uses one (tests/conftest.py) and resets it between tests.
    """

    def __init__(self, port: int = 0, regions: Iterable[str] = DEFAULT_REGIONS) -> None:
        self.regions = tuple(regions)
        self.calls = CallLog()
        # Hooks in the request path; the first one to answer wins and moto never sees the call.
        # The fault injector goes first: a call it fails reaches no later hook (the stand-in
        # controller's) either, as a failed call does nothing on AWS.
        self.faults = FaultInjector(zone_of_subnet=self._zone_of_subnet, zones_of_region=self._zones_of_region)
        self.interceptors: list[Middleware] = [self.faults]
        self.interceptors.append(PriceListAPI())  # moto has no Price List API (local_cloud/pricing.py)
        # EC2's vCPU quotas, a course account's (local_cloud/quotas.py); EC2 enforces them (aws_rules.py).
        self.quotas = QuotaState(course=True)
        self.interceptors.append(self.quotas)
        # Spot requests, interruptions and notices moto lacks (local_cloud/spot.py).
        self.spot = SpotState()
        self.interceptors.append(self.spot)
        self.run_tokens = RunInstancesTokens()  # moto ignores RunInstances' ClientToken
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.dlami: dict[str, dict[str, str]] = {}

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this emulator instead of AWS."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto accepts any key
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.regions[0],
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> Emulator:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        _make_sized_ami_class()
        _settle_shared_transformers()
        aws_rules.install()
        quotas_module.ACTIVE = self.quotas
        spot_module.ACTIVE = self.spot  # its patches of moto come with the first spot call (spot.install)
        images.install()  # CreateImage as EC2 does it (local_cloud/images.py)
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", self._port, self._wrap(app), threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto")
        self._thread.start()
        self.seed()
        return self

    def seed(self) -> None:
        _seed_catalogue()
        for region in self.regions:
            self.dlami[region] = _seed_region(ACCOUNT_ID, region)

    def publish_dlami(self, region: str, line: DlamiLine, release: str) -> str:
        """AWS releases a new image of a line: the image, and the line's parameter pointing at
        it (in one region). Returns the new image's id."""
        image = _add_dlami_image(ACCOUNT_ID, region, line, release)
        self.dlami[region][dlami_parameter_name(line)] = image
        return image

    def reset(self) -> None:
        """Forgets every resource (moto's reset), the call counts and the fault rules, and
        seeds again."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))  # noqa: S310
        self.calls.reset()
        self.run_tokens.reset()
        self.faults.clear()
        self.quotas.reset(course=True)
        self.spot.reset()
        self.seed()

    def _zone_of_subnet(self, region: str | None, subnet_id: str) -> str | None:
        from moto.ec2.models import ec2_backends

        try:
            return ec2_backends[ACCOUNT_ID][region or self.regions[0]].get_subnet(subnet_id).availability_zone
        except Exception:  # noqa: BLE001 - an unknown subnet selects no zone; moto answers the call
            return None

    def _zones_of_region(self, region: str | None) -> list[str]:
        from moto.ec2.models import ec2_backends

        try:
            return [z.name for z in ec2_backends[ACCOUNT_ID][region or self.regions[0]].describe_availability_zones()]
        except Exception:  # noqa: BLE001 - only for the wording of a message
            return []

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/_gpu_lab/calls":
                if environ["REQUEST_METHOD"] == "DELETE":
                    self.calls.reset()
                body = json.dumps(self.calls.snapshot()).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [body]
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            if path == FAULTS_PATH or path.startswith(FAULTS_PATH + "/"):
                code, answer = handle_http(self.faults, environ["REQUEST_METHOD"], path, body)
                start_response(_status_line(code), [("Content-Type", "application/json")])
                return [json.dumps(answer).encode()]
            action = request_action(environ, body)
            for hook in list(self.interceptors):
                answer = hook(environ, body, action)
                if answer is not None:
                    if action:
                        self.calls.record(action, injected=True)
                    status, headers, payload = answer
                    start_response(_status_line(status), list(headers.items()))
                    return [payload]
            if action:
                self.calls.record(action)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            if action == "ec2:RunInstances":
                replayed = self.run_tokens.serve(body, environ, app, start_response)
                if replayed is not None:
                    return replayed
            return app(environ, start_response)

        return middleware


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"
