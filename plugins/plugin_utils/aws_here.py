# Copyright: gpu_lab developers
# MIT License
"""Running csdl.gpu_lab.lab_info and lab_host in the controller's own process.

The labs of a play are always this machine (connection local), so the action plugin need not
ship the module to a new Python process (AnsiballZ: about 0.7 s of packing, starting Python and
importing boto3 per call, which is most of what a stop or a re-run costs). The modules'
functions take anything with ``client(service, config=, region=)`` and ``region``: here, a
boto3 session with the usual credential chain and AWS_ENDPOINT_URL, as the amazon.aws modules
and the inventory plugin use them. Where boto3 cannot be imported, the action plugin runs the
module the usual way (and the module says what is missing)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.aws_loader import with_shared_loader

try:
    import boto3
    import botocore.session
except ImportError:  # pragma: no cover - the module path says what is missing
    boto3 = None


class ControllerAWS:
    """What the modules' functions use of AnsibleAWSModule: ``client()`` and ``region``."""

    def __init__(self) -> None:
        # The service models as this process has them already (aws_loader.py): not read again.
        self.session = boto3.session.Session(botocore_session=with_shared_loader(botocore.session.get_session()))
        self.region = self.session.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def client(self, service: str, config: Any = None, region: str | None = None) -> Any:
        return self.session.client(service, region_name=region or self.region, config=config)


def runner(name: str) -> Callable[[dict[str, Any], bool], dict[str, Any]] | None:
    """How to run module ``name`` here, or None (run it the usual way)."""
    if boto3 is None:
        return None
    return {"csdl.gpu_lab.lab_info": _lab_info, "csdl.gpu_lab.lab_host": _lab_host,
            "csdl.gpu_lab.lab_key": _lab_key, "csdl.gpu_lab.lab_quota_request": _lab_quota_request}.get(name)


def _lab_quota_request(args: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import timeouts
    from ansible_collections.csdl.gpu_lab.plugins.modules import lab_quota_request

    timeouts()
    wanted = [{"service_code": "ec2"} | dict(r) for r in args["requests"]]
    answers = lab_quota_request.request_all(ControllerAWS(), wanted, check_mode)
    return {"changed": any(a["filed"] or a["planned"] for a in answers), "requests": answers}


def _lab_info(args: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import timeouts
    from ansible_collections.csdl.gpu_lab.plugins.modules import lab_info

    timeouts()  # a bad GPU_LAB_AWS_*_TIMEOUT is said once (ValueError), before any call
    aws = ControllerAWS()
    labs = lab_info.discover_labs(aws, args["labs"], bool(args.get("volumes")), bool(args.get("orphans"))) \
        if args.get("labs") else {}
    answer = {"changed": False, "labs": labs}
    if args.get("prices"):  # entries as the module's O(prices) takes them (with its defaults)
        answer["prices"] = lab_info.prices_of(aws, [{"instance_types": [], "storage": True} | dict(ask)
                                                    for ask in args["prices"]])
    return answer


def _lab_host(args: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import timeouts
    from ansible_collections.csdl.gpu_lab.plugins.modules import lab_host

    timeouts()
    state = args.get("state", "present")
    if state == "stopped":
        labs = lab_host.stop_labs(ControllerAWS(), args["labs"], check_mode)
    else:
        labs = lab_host.converge_labs(ControllerAWS(), args["labs"], state, check_mode)
    return {"changed": any(r.get("changed") for r in labs.values()), "labs": labs}


def _lab_key(args: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import timeouts
    from ansible_collections.csdl.gpu_lab.plugins.modules import lab_key

    timeouts()
    labs = lab_key.key_labs(ControllerAWS(), args["labs"], args.get("state", "query"), check_mode)
    return {"changed": any(r.get("changed") for r in labs.values()), "labs": labs}
