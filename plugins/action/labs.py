# Copyright: gpu_lab developers
# MIT License
"""csdl.gpu_lab.labs: one step of a lab's life (find, check, launch, start, stop, status,
teardown) for every lab of the play, in one task. See plugins/modules/labs.py for the
documentation; the steps themselves live in plugins/plugin_utils/."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import aws_here, lab_steps
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import facts_of, play_vars, settings_of

display = Display()


class ActionModule(ActionBase):
    """Reads every lab's settings, runs the step's Python once for all of them (a class is one
    round of AWS calls, not one per lab) and answers each lab's part under ``labs``, keyed by
    inventory host name: the YAML that follows only looks its own part up."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("step", "options"))

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        step = self._task.args.get("step")
        if step not in lab_steps.STEPS:
            raise AnsibleActionFail(f"step must be one of {', '.join(lab_steps.STEPS)}, not {step!r}")
        if not self._task.run_once:
            raise AnsibleActionFail("csdl.gpu_lab.labs acts for every lab of the play: give it run_once: true")
        labs, facts, parts = {}, {}, {}
        for host, values in play_vars(self, task_vars).items():
            try:
                if isinstance(values, Exception):
                    raise values
                labs[host] = settings_of(host, values)
                facts[host] = facts_of(values)
            except Exception as error:  # noqa: BLE001 - a lab's bad setting is its own failure
                parts[host] = {"failed": True, "changed": False,
                               "msg": f"The settings of {host} cannot be read: {error}"}
        run = lab_steps.Run(
            labs=labs,
            facts=facts,
            options=dict(self._task.args.get("options") or {}),
            check_mode=bool(self._task.check_mode),
            execute=lambda name, args: self._module(name, args, task_vars),
            warn=display.warning,
        )
        parts |= lab_steps.STEPS[step](run)
        result.update(changed=False, labs=parts)
        return result

    def _module(self, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """The module's answer: run in this process where it can be (aws_here.py), else as usual.
        A module that fails as a whole answers failed and msg, as _execute_module does."""
        here = aws_here.runner(name)
        if here is None:
            return self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        try:
            return here(args, bool(self._task.check_mode))
        except ValueError as error:  # a setting the module refuses as a whole (a bad GPU_LAB_AWS_*_TIMEOUT)
            return {"failed": True, "msg": str(error)}
        except Exception as error:  # noqa: BLE001 - every lab of the call fails with this sentence
            return {"failed": True, "msg": f"{name} failed: {type(error).__name__}: {error}"}
