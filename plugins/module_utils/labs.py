# Copyright: gpu_lab developers
# MIT License
"""The O(labs) list of the batch modules (lab_info, lab_host): each entry checked against the
module's options for one lab, and each lab named once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator


def check_labs(given: list[dict[str, Any]],
               options: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The valid entries (their defaults filled in, in the order given) and, by lab name, why
    each other entry cannot be used: it breaks the options, or another entry has its name.
    A bad entry is its lab's failure alone: the caller goes on with the valid ones."""
    validator = ArgumentSpecValidator(options)
    counts = Counter(str(entry.get("lab", "")) for entry in given)
    valid: list[dict[str, Any]] = []
    invalid: dict[str, str] = {}
    for entry in given:
        name = str(entry.get("lab", ""))
        checked = validator.validate(entry)
        if checked.error_messages:
            invalid[name] = f"Lab {name!r}: " + "; ".join(checked.error_messages)
        elif counts[name] > 1:
            invalid[name] = (f"Lab {name} is named by {counts[name]} hosts of the play: "
                             "each lab needs its own name (gpu_lab_name).")
        else:
            valid.append(checked.validated_parameters)
    return valid, invalid
