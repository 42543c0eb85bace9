"""csdl.gpu_lab.as_list: a list setting from an inventory list, -e text, YAML/JSON or CSV."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from plugins.filter.as_list import as_list


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["g5.xlarge", "g4dn.xlarge"], ["g5.xlarge", "g4dn.xlarge"]),
        ("g5.xlarge,g4dn.xlarge", ["g5.xlarge", "g4dn.xlarge"]),
        (" us-east-1a , us-east-1b ,", ["us-east-1a", "us-east-1b"]),
        ('["us-east-1a", "us-east-1b"]', ["us-east-1a", "us-east-1b"]),
        ("[us-east-1a, us-east-1b]", ["us-east-1a", "us-east-1b"]),
        ("[]", []),
        ("", []),
        (None, []),
        (("a",), ["a"]),
        (5, [5]),
    ],
)
def test_as_list(given, expected):
    assert as_list(given) == expected


def test_a_mapping_is_refused():
    with pytest.raises(AnsibleFilterError, match="mapping"):
        as_list({"a": 1})
