#!/usr/bin/python
# Copyright: gpu_lab developers
# MIT License
"""Documentation of the csdl.gpu_lab.labs action plugin (plugins/action/labs.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: labs
short_description: One step of a gpu_lab lab's life, for every lab of the play in one task
version_added: 0.4.0
description:
  - Runs on the controller (an action plugin), once for the play (C(run_once) is required). It
    reads every play host's C(ec2_gpu_host_*) settings in that host's own context (its inventory,
    facts and the role's defaults), does the step for all the labs at once - one round of AWS
    calls through M(csdl.gpu_lab.lab_info) and M(csdl.gpu_lab.lab_host), not one per lab - and
    returns each lab's part under RV(labs), keyed by inventory host name.
  - A lab that fails (bad settings, AWS refused) gets C(failed) and C(msg) in its part; the task
    itself does not fail, so the others go on, and each lab's next task fails it alone.
  - Every decision of the step is Python (plugins/plugin_utils), unit-tested; the role's YAML
    only looks its part up.
  - Supports check mode - the steps then make no changing call and say in C(planned) what they
    would do.
author: gpu_lab developers (@csdl)
options:
  step:
    description:
      - C(find) - each lab's instance and Elastic IP (read-only). The steps below but C(check)
        and C(launch) act on what it found (the facts find.yml publishes), without a second look.
      - C(check) - the lab's settings and what AWS says, before anything is created.
      - C(launch) - bring the lab up (key pair, security group, instance, Elastic IP).
      - C(start), C(stop) - start or stop the lab's instance (disk and address are kept).
      - C(status) - the lab's state and cost; read-only but for the labs stopped longer than their
        C(gpu_lab_shelve_after_days) (0, the default - never), which are shelved first.
      - C(shelve) - keep only an image of the lab's disk (its shelf); instance and Elastic IP go.
      - C(confirm_teardown) - what a teardown deletes, the question that names it and what
        answers it (nothing is asked or removed).
      - C(teardown) - remove everything the lab has in AWS, and its key file here.
      - C(confirm_recover) - for a lost key file, what the recovery does (its C(plan)), and the question
        that names the stop of a running instance (nothing is asked or changed).
      - C(recover_key) - a new key file here (an old one kept aside), imported as the lab's key pair; the
        instance stopped, given user data that authorizes the new key at every boot, and started.
      - C(finish_recover) - log in with the new key, then stop, restore the original user data and
        start the instance again if it ran before.
    type: str
    required: true
    choices: [find, check, launch, start, stop, status, shelve, confirm_teardown, teardown, confirm_recover,
              recover_key, finish_recover]
  options:
    description:
      - The step's own options.
      - For C(find) - C(details) (also volumes and what any lab left over), C(orphans) (the
        left-overs alone).
      - For C(launch) - C(checked), the C(check) step's RV(labs).
      - For C(recover_key) - C(planned), the C(confirm_recover) step's RV(labs); for C(finish_recover) -
        C(recovered), the C(recover_key) step's RV(labs).
    type: dict
    default: {}
notes:
  - AWS credentials and endpoint come from the environment, as for the amazon.aws modules.
"""

EXAMPLES = r"""
- name: Find every lab's instance and address (one call for all of them)
  csdl.gpu_lab.labs:
    step: find
  run_once: true
  register: __labs

- name: Take this lab's part
  ansible.builtin.set_fact:
    ec2_gpu_host_lab: "{{ __labs.labs[inventory_hostname].lab }}"
"""

RETURN = r"""
labs:
  description:
    - Each lab's part, by inventory host name; the rest of a part is the step's.
  returned: always
  type: dict
  sample: {csdl: {failed: false, changed: false, address: 127.1.0.1, instance: {id: i-0abc, state: running}}}
  contains:
    failed:
      description: Whether this lab's step failed (the others went on).
      type: bool
      sample: false
    changed:
      description: Whether this lab's step changed something.
      type: bool
      sample: false
    msg:
      description: Why it failed, in words that say what to fix.
      type: str
      returned: when failed
      sample: Lab csdl has no instance; run launch.yml.
    lab:
      description: For C(find), the lab as found (name, region, key file and the other settings).
      type: dict
      returned: for the find step
      sample: {name: csdl, region: us-east-1}
    instance:
      description: For C(find), the lab's live instance (the keys of M(csdl.gpu_lab.lab_info)'s instance), or C({}).
      type: dict
      returned: for the find step
      sample: {id: i-0abc, state: running}
    address:
      description: For C(find), the lab's Elastic IP, empty when none.
      type: str
      returned: for the find step
      sample: 127.1.0.1
    found:
      description: For C(find), everything M(csdl.gpu_lab.lab_info) returned for the lab.
      type: dict
      returned: for the find step
      sample: {instance_count: 1}
    region_note:
      description: For C(find), a sentence when the lab's instance is in another region than asked, else empty.
      type: str
      returned: for the find step
      sample: ''
"""
