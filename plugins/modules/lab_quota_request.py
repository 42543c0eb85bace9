#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""Ask AWS to raise an on-demand vCPU quota, once: a request already open is reported instead."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_quota_request
short_description: Ask AWS to raise the on-demand vCPU quotas a lab needs, never twice
version_added: 1.0.0
description:
  - For each of O(requests), looks for an increase request still open (PENDING or
    CASE_OPENED) for that quota in that region (ListRequestedServiceQuotaChangeHistoryByQuota);
    when there is one, reports it and files nothing; else files RequestServiceQuotaIncrease for
    O(requests[].desired_value) and reports the new request's id and status.
  - gpu_lab calls it only when the lab asks (C(gpu_lab_request_quota=true)) and the quota
    leaves no room for the lab's first candidate type - a request is never filed unasked.
  - A request that cannot be read or filed (no permission, a value AWS refuses) gets C(error);
    the module itself does not fail.
  - Supports check mode - then it only reads, and says in C(planned) what it would file.
author: gpu_lab developers (@csdl)
options:
  requests:
    description: The quotas to raise.
    type: list
    elements: dict
    required: true
    suboptions:
      region:
        description: The quota's region.
        type: str
        required: true
      quota_code:
        description: The quota, such as C(L-DB2E81BA) (Running On-Demand G and VT instances).
        type: str
        required: true
      desired_value:
        description: The value to ask for, in vCPUs.
        type: int
        required: true
      service_code:
        description: The quota's service.
        type: str
        default: ec2
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Ask for room for one g6.xlarge
  csdl.gpu_lab.lab_quota_request:
    requests:
      - {region: us-east-1, quota_code: L-DB2E81BA, desired_value: 4}
"""

RETURN = r"""
requests:
  description: One answer per request, in order.
  returned: always
  type: list
  elements: dict
  sample: [{region: us-east-1, quota_code: L-DB2E81BA, desired_value: 4, id: 3f1c..., status: PENDING,
            filed: true, planned: false, error: ''}]
  contains:
    region:
      description: The request's region.
      type: str
      sample: us-east-1
    quota_code:
      description: The quota's code.
      type: str
      sample: L-DB2E81BA
    desired_value:
      description: The vCPUs asked for.
      type: float
      sample: 4
    id:
      description: The ID of the request filed or found open, empty when none.
      type: str
      sample: 3f1c...
    status:
      description: The status of the request filed or found open (such as C(PENDING)), empty when none.
      type: str
      sample: PENDING
    filed:
      description: Whether this call filed it.
      type: bool
      sample: true
    planned:
      description: In check mode, whether it would be filed.
      type: bool
      sample: false
    error:
      description: Why it could not be read or filed, empty when it could.
      type: str
      sample: ''
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import bounded, client_config

OPEN_STATUSES = ("PENDING", "CASE_OPENED")


def _open_request(client: Any, service_code: str, quota_code: str) -> dict[str, Any] | None:
    pages = client.get_paginator("list_requested_service_quota_change_history_by_quota").paginate(
        ServiceCode=service_code, QuotaCode=quota_code)
    open_ones = [c for page in pages for c in page.get("RequestedQuotas", []) if c.get("Status") in OPEN_STATUSES]
    return open_ones[-1] if open_ones else None


def _error(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return f"{e.response['Error']['Code']}: {e.response['Error'].get('Message', '')}".rstrip(": ")
    return str(e)


def request_one(module: Any, wanted: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """The answer for one quota: the open request found, or the one filed (or, in check mode, planned)."""
    service, code, value = wanted.get("service_code") or "ec2", wanted["quota_code"], int(wanted["desired_value"])
    answer: dict[str, Any] = {"region": wanted["region"], "quota_code": code, "desired_value": value,
                              "id": "", "status": "", "filed": False, "planned": False, "error": ""}
    try:
        client = bounded(module.client("service-quotas", config=client_config(), region=wanted["region"]))
        found = _open_request(client, service, code)
        if found is None and check_mode:
            return answer | {"planned": True}
        if found is None:
            try:
                found = client.request_service_quota_increase(
                    ServiceCode=service, QuotaCode=code, DesiredValue=float(value))["RequestedQuota"]
                answer["filed"] = True
            except botocore.exceptions.ClientError as e:
                if e.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise
                found = _open_request(client, service, code)  # filed meanwhile by another run
        if found:
            answer.update(id=found.get("Id", ""), status=found.get("Status", ""),
                          desired_value=int(found.get("DesiredValue") or value))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        answer["error"] = _error(e)
    return answer


def request_all(module: Any, requests: list[dict[str, Any]], check_mode: bool) -> list[dict[str, Any]]:
    if not requests:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(requests))) as pool:
        return list(pool.map(lambda r: request_one(module, r, check_mode), requests))


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"requests": {"type": "list", "elements": "dict", "required": True, "options": {
            "region": {"type": "str", "required": True},
            "quota_code": {"type": "str", "required": True},
            "desired_value": {"type": "int", "required": True},
            "service_code": {"type": "str", "default": "ec2"},
        }}},
        supports_check_mode=True,
    )
    answers = request_all(module, module.params["requests"], module.check_mode)
    module.exit_json(changed=any(a["filed"] or a["planned"] for a in answers), requests=answers)


if __name__ == "__main__":
    main()
