# Copyright: gpu_lab developers
# MIT License
"""Lookup plugin: the EC2 regions botocore knows, without asking AWS."""

from __future__ import annotations

DOCUMENTATION = r"""
name: ec2_regions
author: gpu_lab developers (@csdl)
short_description: The EC2 regions known to botocore, offline
description:
  - Returns the region names for which botocore has an EC2 endpoint, in every partition
    (aws, aws-cn, aws-us-gov), from the data that ships with botocore; no API call.
  - Used to reject a mistyped region before anything is created.
options: {}
"""

EXAMPLES = r"""
- name: Refuse an unknown region
  ansible.builtin.assert:
    that: region in lookup('csdl.gpu_lab.ec2_regions', wantlist=True)
"""

RETURN = r"""
_raw:
  description: Region names, sorted.
  type: list
  elements: str
  sample: [ap-northeast-1, eu-west-1, us-east-1, us-west-2]
"""

import gzip
import json
import re
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        try:
            import botocore
        except ImportError as e:
            raise AnsibleLookupError("csdl.gpu_lab.ec2_regions needs botocore (pip install boto3)") from e
        # botocore's endpoint data, read directly: the same regions as a botocore session's
        # get_available_regions("ec2") in every partition, in a tenth of the time (a class's
        # labs each check their region).
        data = Path(botocore.__file__).parent / "data"
        plain, packed = data / "endpoints.json", data / "endpoints.json.gz"
        text = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
        regions: set[str] = set()
        for partition in json.loads(text)["partitions"]:
            regions.update(partition.get("regions", {}))
            regions.update(r for r in partition.get("services", {}).get("ec2", {}).get("endpoints", {})
                           if partition.get("regionRegex") and re.match(partition["regionRegex"], r))
        return sorted(regions)
