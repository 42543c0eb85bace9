#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""The lab's key pair and its instance's user data: read them, or replace them (a lost key's recovery)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_key
short_description: Read or replace a gpu_lab lab's key pair and its instance's user data
version_added: 1.0.0
description:
  - What the recovery of a lost key (C(recover_key.yml)) changes in AWS, for many labs in one call.
  - With O(state=query), reads each lab's key pair with its public key (DescribeKeyPairs with
    C(IncludePublicKey)) and its instance's user data (DescribeInstanceAttribute C(userData)).
    Nothing is changed.
  - With O(state=present), replaces the key pair with the lab's new public key when it holds
    another one (DeleteKeyPair, then ImportKeyPair of the same name, tagged again - the instance's
    C(KeyName) stays), then sets the instance's user data when it differs
    (ModifyInstanceAttribute; AWS allows that only while the instance is stopped).
  - Supports check mode - then nothing is changed and RV(labs) says in C(planned) what would be.
author: gpu_lab developers (@csdl)
options:
  state:
    description: C(query) reads, C(present) replaces what differs.
    type: str
    choices: [query, present]
    default: query
  labs:
    description:
      - Each lab - C(lab) (its name, required), C(region), C(key_name), C(instance_id), and for
        O(state=present) C(public_key) (the key pair's new OpenSSH public key; empty keeps the key
        pair), C(tags) (of a key pair imported again) and C(user_data) (the instance's new user data,
        base64; omitted or null keeps it).
    type: list
    elements: dict
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read the key pair and user data of a lab
  csdl.gpu_lab.lab_key:
    labs:
      - {lab: csdl, region: us-east-1, key_name: csdl-server, instance_id: i-0abc}
"""

RETURN = r"""
labs:
  description: Each lab's answer by lab name.
  returned: always
  type: dict
  sample: {csdl-ada: {failed: false, changed: true, key_pair_public_key: 'ssh-ed25519 AAAAC3Nza... csdl-ada',
           user_data: '', planned: []}}
  contains:
    failed:
      description: Whether this lab failed.
      type: bool
      sample: false
    changed:
      description: Whether this lab's key pair or user data was changed.
      type: bool
      sample: true
    msg:
      description: Why it failed.
      type: str
      returned: when failed
      sample: Lab csdl-ada has no instance to give user data to.
    key_pair_public_key:
      description: The key pair's public key before this call, empty when there is none.
      type: str
      sample: ssh-ed25519 AAAAC3Nza... csdl-ada
    user_data:
      description: The instance's user data before this call, base64, empty when none.
      type: str
      sample: ''
    planned:
      description: In check mode, what would be done, one sentence each.
      type: list
      elements: str
      returned: in check mode
      sample: [import key pair csdl-ada-server again]
"""

import base64
from typing import Any

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.csdl.gpu_lab.plugins.module_utils.timeouts import bounded, client_config, timeouts


def key_body(public_key: str) -> str:
    """The key itself (an OpenSSH line's second field): a comment or options do not change it."""
    fields = public_key.split()
    return fields[1] if len(fields) > 1 else public_key.strip()


def _read(ec2: Any, lab: dict[str, Any]) -> dict[str, Any]:
    public = ""
    if lab.get("key_name"):
        try:
            pairs = ec2.describe_key_pairs(KeyNames=[lab["key_name"]], IncludePublicKey=True)["KeyPairs"]
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InvalidKeyPair.NotFound":
                raise
            pairs = []
        public = str(pairs[0].get("PublicKey", "")).strip() if pairs else ""
    user_data = ""
    if lab.get("instance_id"):
        answer = ec2.describe_instance_attribute(InstanceId=lab["instance_id"], Attribute="userData")
        value = answer.get("UserData")
        user_data = str(value.get("Value", "") if isinstance(value, dict) else (value or ""))
    return {"key_pair_public_key": public, "user_data": user_data}


def _apply(ec2: Any, lab: dict[str, Any], before: dict[str, Any], check_mode: bool) -> list[str]:
    done: list[str] = []
    new_key = str(lab.get("public_key") or "").strip()
    if new_key and key_body(new_key) != key_body(before["key_pair_public_key"] or " "):
        done.append(f"import the new key as key pair {lab['key_name']}")
        if not check_mode:
            if before["key_pair_public_key"]:
                ec2.delete_key_pair(KeyName=lab["key_name"])
            tags = [{"Key": k, "Value": str(v)} for k, v in (lab.get("tags") or {}).items()]
            more = {"TagSpecifications": [{"ResourceType": "key-pair", "Tags": tags}]} if tags else {}
            ec2.import_key_pair(KeyName=lab["key_name"], PublicKeyMaterial=new_key.encode(), **more)
    wanted = lab.get("user_data")
    if wanted is not None and _raw(wanted) != _raw(before["user_data"]):
        done.append(f"set the user data of {lab['instance_id']}")
        if not check_mode:
            # A blob: botocore encodes it (base64) on the way.
            ec2.modify_instance_attribute(InstanceId=lab["instance_id"], UserData={"Value": _raw(wanted)})
    return done


def _raw(encoded: str) -> bytes:
    return base64.b64decode(encoded or "")


def key_labs(aws: Any, labs: list[dict[str, Any]], state: str, check_mode: bool) -> dict[str, dict[str, Any]]:
    """Each lab's answer (see RETURN); one lab's failure is its own."""
    clients: dict[str, Any] = {}
    result: dict[str, dict[str, Any]] = {}
    for lab in labs:
        name = str(lab.get("lab", ""))
        region = lab.get("region") or None
        key = region or ""
        try:
            if key not in clients:
                clients[key] = bounded(aws.client("ec2", config=client_config(
                    retries={"mode": "standard", "max_attempts": 8}), **({"region": region} if region else {})))
            ec2 = clients[key]
            before = _read(ec2, lab)
            done = _apply(ec2, lab, before, check_mode) if state == "present" else []
            result[name] = {"failed": False, "changed": bool(done), **before,
                            "planned": done if check_mode else [], "done": [] if check_mode else done}
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            result[name] = {"failed": True, "changed": False, "msg": f"Lab {name}: {e}"}
    return result


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"state": {"type": "str", "choices": ["query", "present"], "default": "query"},
                       "labs": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    try:
        timeouts()
    except ValueError as e:
        module.fail_json(msg=str(e))
    labs = key_labs(module, module.params["labs"], module.params["state"], module.check_mode)
    module.exit_json(changed=any(r.get("changed") for r in labs.values()), labs=labs)


if __name__ == "__main__":
    main()
