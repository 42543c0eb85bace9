"""csdl.gpu_lab.lab_start_plan: what start.yml says before it starts a stopped lab."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.unit.collection import load


@pytest.fixture(scope="module")
def f() -> ModuleType:
    return load("filter.lab_start")


STOPPED = {"id": "i-a", "type": "g6.xlarge", "zone": "us-east-1a", "state": "stopped", "market": "on-demand"}


def test_an_on_demand_lab_tries_again_then_changes_the_type_when_allowed(f: ModuleType) -> None:
    assert f.lab_start_plan(STOPPED, 5, True) == (
        "Starting i-a (g6.xlarge). If AWS has no capacity for it in us-east-1a, start.yml tries again for up to "
        "5 minute(s), then changes the stopped instance to a fallback type its zone offers.")
    assert f.lab_start_plan(STOPPED, "0.5", "false").endswith("for up to 0.5 minute(s).")


def test_a_spot_lab_never_changes_type_and_an_interrupted_one_waits_for_aws(f: ModuleType) -> None:
    spot = STOPPED | {"market": "spot", "spot_request": {"state": "disabled", "status": "instance-stopped-by-user"}}
    assert f.lab_start_plan(spot, 5, True).endswith("for up to 5 minute(s).")
    interrupted = spot | {"spot_request": {"state": "open", "status": "instance-stopped-no-capacity"}}
    assert f.lab_start_plan(interrupted, 5, True) == (
        "Starting i-a (g6.xlarge). AWS interrupted this spot instance, and only AWS can start it again when it has "
        "capacity in us-east-1a: start.yml waits up to 5 minute(s) for that.")


def test_the_filter_is_registered(f: ModuleType) -> None:
    assert f.FilterModule().filters()["lab_start_plan"] is f.lab_start_plan
