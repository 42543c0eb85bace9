"""step=start, status, confirm_teardown and teardown (plugin_utils/lab_lifecycle.py): they act
on what find.yml found earlier in the run, in at most one lab_host call for every lab."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment

REGION = "us-east-1"
NOW = dt.datetime(2026, 11, 10, 15, 0, 0, tzinfo=dt.UTC)
ADDRESS = {"public_ip": "127.0.0.9", "allocation_id": "eipalloc-1", "instance_id": "i-a"}


def make_run(plugin, tmp_path: Path, found: dict[str, dict[str, Any] | None], answer: Any = None,
             check_mode: bool = False, **settings: Any):
    """A Run of the labs of ``found`` (host -> what find found; None: not looked up), whose
    lab_host answers ``answer`` (a dict, or a function of the call's args); the calls made."""
    lab_settings, lab_run = plugin("plugin_utils.lab_settings"), plugin("plugin_utils.lab_run")
    calls: list[tuple[str, dict[str, Any]]] = []

    def execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return answer(args) if callable(answer) else dict(answer or {})

    labs, facts = {}, {}
    for host, resources in found.items():
        labs[host] = lab_settings.settings_of(host, {
            "ec2_gpu_host_lab_name": host, "ec2_gpu_host_region": REGION, "ec2_gpu_host_home": str(tmp_path),
            "ec2_gpu_host_key_file": str(tmp_path / f"{host}.pem")} | settings)
        if resources is not None:
            facts[host] = {"resources": resources, "instance": resources.get("instance") or {},
                           "address": (resources.get("addresses") or [{}])[0].get("public_ip", ""),
                           "lab": {"name": host, "region": REGION, "address": "", "ssh_ready": False}}
    return lab_run.Run(labs=labs, facts=facts, execute=execute, check_mode=check_mode), calls


def lab(plugin, tmp_path: Path, **settings: Any):
    return plugin("plugin_utils.lab_settings").settings_of("lab1", {
        "ec2_gpu_host_lab_name": "lab1", "ec2_gpu_host_region": REGION, "ec2_gpu_host_home": str(tmp_path),
        "ec2_gpu_host_key_file": str(tmp_path / "lab1.pem")} | settings)


# --- step=start ----------------------------------------------------------------------------

def test_a_lab_running_at_its_address_makes_no_call(plugin, tmp_path: Path) -> None:
    instance = {"id": "i-a", "state": "running"}
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": instance, "addresses": [ADDRESS]}})
    part = plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]
    assert calls == []
    assert part == {"failed": False, "changed": False, "instance": instance, "address": "127.0.0.9",
                    "lab": run.facts["a1"]["lab"], "check_note": "", "start_note": ""}


def test_stopped_or_away_from_its_address_is_started_in_one_call(plugin, tmp_path: Path) -> None:
    stopped = {"id": "i-a", "state": "stopped"}
    away = {"id": "i-b", "state": "running"}  # its address is at nothing: re-associated
    loose = {"public_ip": "127.0.0.10", "allocation_id": "eipalloc-2", "instance_id": ""}
    answer = {"labs": {"a1": {"changed": True, "instance": {"id": "i-a", "state": "running"},
                              "address": {"public_ip": "127.0.0.7"}},
                       "b2": {"changed": True, "instance": away, "address": {"public_ip": "127.0.0.10"}}}}
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": stopped, "addresses": [ADDRESS]},
                                             "b2": {"instance": away, "addresses": [loose]}},
                          answer, ec2_gpu_host_instance_timeout=321, ec2_gpu_host_instance_type="g6.xlarge",
                          ec2_gpu_host_fallback_instance_types=["g5.xlarge", "g4dn.xlarge"])
    parts = plugin("plugin_utils.lab_lifecycle").start_step(run)
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_host"]
    args = calls[0][1]
    assert args["state"] == "present"
    # A start without capacity: 5 minutes of tries, then the lab's other candidate types.
    starting = {"instance_types": ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"], "start_capacity_wait": 300.0,
                "start_change_type": True}
    assert args["labs"] == [
        {"lab": "a1", "region": REGION, "instance": stopped, "addresses": [ADDRESS], "wait_timeout": 321,
         **starting},
        {"lab": "b2", "region": REGION, "instance": away, "addresses": [loose], "wait_timeout": 321, **starting}]
    a1 = parts["a1"]
    assert a1["changed"] is True and a1["failed"] is False
    assert a1["instance"] == {"id": "i-a", "state": "running"}
    assert a1["address"] == "127.0.0.7"
    assert a1["lab"] == {"name": "a1", "region": REGION, "address": "127.0.0.7", "ssh_ready": True}
    assert a1["check_note"] == ""
    assert parts["b2"]["lab"]["ssh_ready"] is True and parts["b2"]["address"] == "127.0.0.10"


def test_a_lab_without_an_instance_fails_without_a_call(plugin, tmp_path: Path) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": {}, "addresses": [ADDRESS]}})
    part = plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]
    assert part == {"failed": True, "changed": False,
                    "msg": "Lab a1 has no instance in us-east-1; create it with `ansible-playbook launch.yml`."}
    assert calls == []


def test_one_labs_failure_is_its_own(plugin, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"failed": True, "msg": "No capacity for g5.xlarge in us-east-1a."},
                       "b2": {"changed": True, "instance": {"id": "i-b", "state": "running"},
                              "address": {"public_ip": "127.0.0.8"}}}}
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}},
                                             "b2": {"instance": {"id": "i-b", "state": "stopped"}}}, answer)
    parts = plugin("plugin_utils.lab_lifecycle").start_step(run)
    assert len(calls) == 1
    assert parts["a1"]["failed"] is True and parts["a1"]["changed"] is False
    assert parts["a1"]["msg"] == "No capacity for g5.xlarge in us-east-1a."
    assert parts["a1"]["instance"] == {"id": "i-a", "state": "stopped"} and parts["a1"]["lab"]["ssh_ready"] is False
    assert parts["b2"]["failed"] is False and parts["b2"]["lab"]["address"] == "127.0.0.8"


def test_a_call_that_fails_as_a_whole_fails_every_lab_of_it(plugin, tmp_path: Path) -> None:
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}},
                                               "b2": {"instance": {"id": "i-b", "state": "stopped"}}},
                            {"failed": True, "msg": "UnauthorizedOperation"})
    parts = plugin("plugin_utils.lab_lifecycle").start_step(run)
    for host in ("a1", "b2"):
        assert (parts[host]["failed"], parts[host]["changed"], parts[host]["msg"]) == (
            True, False, "UnauthorizedOperation")
        assert parts[host]["lab"]["ssh_ready"] is False


def test_a_lab_without_an_answer_fails(plugin, tmp_path: Path) -> None:
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}}}, {"labs": {}})
    assert plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]["msg"] == "Lab a1 got no answer."


def test_check_mode_says_what_would_start(plugin, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"changed": True, "instance": {"id": "i-a", "state": "stopped"}, "address": {},
                              "planned": ["start i-a"]}}}
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}}}, answer,
                            check_mode=True)
    part = plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]
    assert part["check_note"] == "Check mode: lab a1 would start i-a."
    assert part["lab"]["ssh_ready"] is False


def test_no_check_note_outside_check_mode_or_without_a_plan(plugin, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"changed": True, "planned": ["start i-a"]}}}
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}}}, answer)
    assert plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]["check_note"] == ""
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"}}},
                            {"labs": {"a1": {"changed": False, "planned": []}}}, check_mode=True)
    assert plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]["check_note"] == ""


def test_check_mode_does_not_make_a_stopped_lab_ssh_ready(plugin, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"changed": True, "instance": {"id": "i-a", "state": "stopped"},
                              "address": {"public_ip": "127.0.0.9", "allocation_id": "eipalloc-1"},
                              "planned": ["start i-a"]}}}
    run, _unused = make_run(plugin, tmp_path, {"a1": {"instance": {"id": "i-a", "state": "stopped"},
                                                      "addresses": [ADDRESS]}}, answer, check_mode=True)
    assert plugin("plugin_utils.lab_lifecycle").start_step(run)["a1"]["lab"]["ssh_ready"] is False


@pytest.mark.parametrize("step", ["start_step", "status_step", "confirm_teardown_step", "teardown_step"])
def test_a_lab_not_looked_up_fails(plugin, tmp_path: Path, step: str) -> None:
    run, calls = make_run(plugin, tmp_path, {"a1": None}, {"labs": {}})
    part = getattr(plugin("plugin_utils.lab_lifecycle"), step)(run)["a1"]
    assert part["failed"] is True
    assert part["msg"].startswith("Lab a1 was not looked up before the ") and "(find.yml runs first)" in part["msg"]
    assert calls == []


def test_start_options_carry_the_wait_in_seconds_and_the_candidates(plugin, tmp_path: Path) -> None:
    life = plugin("plugin_utils.lab_lifecycle")
    one = lab(plugin, tmp_path, ec2_gpu_host_instance_type="g6.xlarge",
              ec2_gpu_host_fallback_instance_types="g5.xlarge", ec2_gpu_host_start_capacity_wait_minutes="0.05",
              ec2_gpu_host_start_change_type="false")
    assert life.start_options(one) == {"instance_types": ["g6.xlarge", "g5.xlarge"], "start_capacity_wait": 3.0,
                                       "start_change_type": False}


def test_a_bad_start_wait_is_said_in_one_sentence(plugin, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gpu_lab_start_capacity_wait_minutes is 'soon': set it to a number of "
                                         "minutes, 0 or more."):
        lab(plugin, tmp_path, ec2_gpu_host_start_capacity_wait_minutes="soon")


def test_start_note_after_refusals_in_the_same_type(plugin, tmp_path: Path) -> None:
    refused = {"type": "g6.xlarge", "zone": "us-east-1a", "outcome": "no capacity",
               "code": "InsufficientInstanceCapacity"}
    ran = {"changed": True, "instance": {"id": "i-a"}, "notes": [],
           "attempts": [refused, refused, {"type": "g6.xlarge", "zone": "us-east-1a", "outcome": "started"}]}
    assert plugin("plugin_utils.lab_lifecycle").start_note(lab(plugin, tmp_path), ran) == (
        "Lab lab1 started i-a (g6.xlarge in us-east-1a) after 2 refusals for capacity (InsufficientInstanceCapacity).")


def test_start_note_of_a_changed_type_is_lab_hosts_note_and_none_without_refusals(plugin, tmp_path: Path) -> None:
    life = plugin("plugin_utils.lab_lifecycle")
    refused = {"type": "g6.xlarge", "outcome": "no capacity", "code": "InsufficientInstanceCapacity"}
    changed = {"attempts": [refused, {"type": "g5.xlarge", "outcome": "started"}], "notes": ["Changed it."]}
    assert life.start_note(lab(plugin, tmp_path), changed) == "Changed it."
    assert life.start_note(lab(plugin, tmp_path), {"attempts": [{"outcome": "started"}]}) == ""
    assert life.start_note(lab(plugin, tmp_path), {"failed": True, "attempts": [refused]}) == ""


# --- step=status ---------------------------------------------------------------------------

RUNNING = {"id": "i-a", "state": "running", "type": "g5.xlarge", "zone": "us-east-1a",
           "launch_time": "2026-11-10T10:00:00+00:00", "tags": {"gpu_lab:autostop_minutes": "60"}}
VOLUMES = [{"id": "vol-1", "size_gib": 100}, {"id": "vol-2", "size_gib": 20}]


def test_status_of_a_running_lab_by_hand(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    found = {"instance": RUNNING, "addresses": [ADDRESS], "volumes": VOLUMES, "orphans": []}
    status = lifecycle.status_of(lab(plugin, tmp_path), REGION, found, NOW.replace(tzinfo=None))
    assert status == {
        "lab": "lab1", "region": REGION, "state": "running", "since_utc": "2026-11-10 10:00:00",
        "hours_in_state": 5.0, "instance_id": "i-a", "type": "g5.xlarge", "zone": "us-east-1a",
        "address": "127.0.0.9", "hourly_usd": 1.006, "running_period_usd": 5.03, "disk_gib": 120,
        "stopped_monthly_usd": {"disk": 9.6, "addresses": 3.65}, "autostop_minutes": "60",
        "prices": "shipped table, us-east-1 list prices 2026-11", "orphans": [], "warnings": [],
        "image": {"name": "", "creation_date": "", "newer": ""}, "quota_requests": [],
        "market": "on-demand", "spot": {"usd_per_hour": 0.0, "zone": "", "saving_percent": 0, "request_state": "",
                                        "request_status": "", "interrupted": ""},
        "shelf": {"image_id": "", "created": "", "count": 0, "size_gib": 0, "monthly_usd": 0.0},
    }


def test_status_names_the_instances_image_and_what_is_newer(plugin) -> None:
    image_status = plugin("plugin_utils.lab_lifecycle").image_status
    image = {"image_id": "ami-1", "name": "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.12 (Ubuntu 24.04) 2026",
             "creation_date": "2026-08-22T00:00:00.000Z", "newer": "Image ...: a newer image of its line exists ...",
             "note": ""}
    assert image_status({"instance": RUNNING | {"image": "ami-1"}, "image": image}) == {
        "name": image["name"], "creation_date": "2026-08-22", "newer": image["newer"]}
    # An image that is gone is named by its id; why what is newer is not known is said.
    assert image_status({"instance": RUNNING | {"image": "ami-1"},
                         "image": {"image_id": "ami-1", "name": "", "note": "SSM refused."}}) == {
        "name": "ami-1", "creation_date": "", "newer": "SSM refused."}
    assert image_status({"instance": {}, "image": image}) == {"name": "", "creation_date": "", "newer": ""}


def test_status_step_reads_the_facts_with_a_clock(plugin, tmp_path: Path) -> None:
    # The region's prices: asked once (no cache in this HOME yet), then cached for the week.
    prices = {"prices": {REGION: {"hourly_usd": {"g5.xlarge": 1.006}, "gp3_gib_month_usd": 0.08,
                                  "public_ipv4_hour_usd": 0.005, "calls": 3}}}
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": RUNNING, "addresses": [ADDRESS],
                                                    "volumes": VOLUMES}}, prices)
    part = plugin("plugin_utils.lab_lifecycle").status_step(run, now=lambda: NOW)["a1"]
    assert calls == [("csdl.gpu_lab.lab_info", {"prices": [
        {"region": REGION, "instance_types": ["g5.xlarge"], "storage": True}]})]
    assert part["failed"] is False and part["changed"] is False
    assert (part["status"]["lab"], part["status"]["hours_in_state"], part["status"]["running_period_usd"]) == (
        "a1", 5.0, 5.03)
    assert part["status"]["prices"] == f"AWS Price List API, {REGION}, fetched {NOW:%Y-%m-%d}"
    plugin("plugin_utils.lab_lifecycle").status_step(run, now=lambda: NOW + dt.timedelta(days=1))
    assert len(calls) == 1


def test_status_step_without_price_list_answer_uses_the_table(plugin, tmp_path: Path) -> None:
    answer = {"prices": {REGION: {"failed": True, "msg": "no permission for pricing:GetProducts (AccessDenied)"}}}
    run, calls = make_run(plugin, tmp_path, {"a1": {"instance": RUNNING, "addresses": [ADDRESS]},
                                             "a2": {"instance": {}}}, answer)
    parts = plugin("plugin_utils.lab_lifecycle").status_step(run, now=lambda: NOW)
    assert len(calls) == 1  # a lab without an instance needs no price
    assert parts["a1"]["status"]["hourly_usd"] == 1.006
    assert parts["a1"]["status"]["prices"] == ("shipped table, us-east-1 list prices 2026-11, AWS Price List not "
                                               "reachable: no permission for pricing:GetProducts (AccessDenied)")


def test_a_lab_stopped_for_long_warns_what_it_still_costs(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    stopped = RUNNING | {"state": "stopped", "state_reason": "User initiated (2026-10-31 15:00:00 UTC)"}
    found = {"instance": stopped, "addresses": [ADDRESS], "volumes": VOLUMES}
    status = lifecycle.status_of(lab(plugin, tmp_path), REGION, found, NOW.replace(tzinfo=None))
    assert (status["since_utc"], status["hours_in_state"], status["running_period_usd"]) == (
        "2026-10-31 15:00:00", 240.0, 0)
    assert status["warnings"] == ["Stopped for 10.0 days: disk and address still cost about $13.25/month; "
                                  "teardown.yml removes them."]
    # Not over the limit: no warning (the default is 7 days).
    assert lifecycle.status_of(lab(plugin, tmp_path, ec2_gpu_host_stopped_warn_days=10), REGION, found,
                               NOW.replace(tzinfo=None))["warnings"] == []


def test_since_of(plugin) -> None:
    since_of = plugin("plugin_utils.lab_lifecycle").since_of
    assert since_of({"state": "pending", "launch_time": "2026-11-10T10:00:00.123+00:00"}) == "2026-11-10 10:00:00"
    assert since_of({"state": "stopped", "launch_time": "2026-11-10T10:00:00+00:00",
                     "state_reason": "User initiated (2026-11-01 08:30:05 UTC)"}) == "2026-11-01 08:30:05"
    assert since_of({"state": "stopped", "state_reason": ""}) == ""
    assert since_of({}) == ""


def test_autostop_disabled_while_running_warns(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    found = {"instance": RUNNING | {"tags": {"gpu_lab:autostop_minutes": "0"}}}
    status = lifecycle.status_of(lab(plugin, tmp_path), REGION, found, NOW.replace(tzinfo=None))
    assert status["autostop_minutes"] == "0"
    assert status["warnings"] == [
        "Running with idle auto-stop disabled: it bills until you stop it (ansible-playbook stop.yml)."]
    stopped = {"instance": found["instance"] | {"state": "stopped", "state_reason": ""}}
    assert lifecycle.status_of(lab(plugin, tmp_path), REGION, stopped, NOW.replace(tzinfo=None))["warnings"] == []


def test_left_overs_warn(plugin, tmp_path: Path) -> None:
    orphans = [{"kind": "elastic_ip", "id": "eipalloc-9", "summary": "elastic ip 127.0.0.99 of lab old"},
               {"kind": "key_pair", "id": "key-1", "summary": "key pair old-server of lab old"}]
    status = plugin("plugin_utils.lab_lifecycle").status_of(lab(plugin, tmp_path), REGION, {"orphans": orphans},
                                                            NOW.replace(tzinfo=None))
    assert status["orphans"] == orphans
    assert status["warnings"] == [
        "Left over: elastic ip 127.0.0.99 of lab old, used by no instance (teardown.yml -e gpu_lab_remove_orphans=true "
        "removes it).",
        "Left over: key pair old-server of lab old, used by no instance (teardown.yml -e gpu_lab_remove_orphans=true "
        "removes it)."]


def test_an_absent_lab(plugin, tmp_path: Path) -> None:
    status = plugin("plugin_utils.lab_lifecycle").status_of(lab(plugin, tmp_path), REGION, {},
                                                            NOW.replace(tzinfo=None))
    assert (status["state"], status["since_utc"], status["hours_in_state"], status["instance_id"]) == (
        "absent", "", 0, "")
    assert (status["address"], status["hourly_usd"], status["running_period_usd"], status["disk_gib"]) == (
        "", None, 0, 0)
    assert status["stopped_monthly_usd"] == {"disk": 0, "addresses": 0} and status["warnings"] == []


def test_an_unknown_type_has_no_price(plugin, tmp_path: Path) -> None:
    found = {"instance": RUNNING | {"type": "x9.huge"}}
    status = plugin("plugin_utils.lab_lifecycle").status_of(lab(plugin, tmp_path), REGION, found,
                                                            NOW.replace(tzinfo=None))
    assert (status["hours_in_state"], status["hourly_usd"], status["running_period_usd"]) == (5.0, None, 0)


# --- step=confirm_teardown -----------------------------------------------------------------

EVERYTHING = {"instance": {"id": "i-a", "state": "stopped", "type": "g5.xlarge"},
              "addresses": [ADDRESS, {"public_ip": "127.0.0.10"}],
              "security_group": {"group_id": "sg-1"}, "key_pair": {"name": "lab1-server"}}


def test_existing_names_everything_in_order(plugin, tmp_path: Path) -> None:
    existing_of = plugin("plugin_utils.lab_lifecycle").existing_of
    key_file = tmp_path / "lab1.pem"
    assert existing_of(lab(plugin, tmp_path), EVERYTHING) == [
        "instance i-a (stopped, g5.xlarge) with its disk and everything on it",
        "Elastic IP 127.0.0.9", "Elastic IP 127.0.0.10", "security group lab1-ssh", "key pair lab1-server"]
    key_file.write_text("KEY")
    assert existing_of(lab(plugin, tmp_path), EVERYTHING)[-1] == str(key_file)
    # A key the user brought (key_pair_public_key) is theirs: the teardown keeps its file.
    assert str(key_file) not in existing_of(lab(plugin, tmp_path, ec2_gpu_host_key_pair_public_key="ssh-ed25519 A"),
                                            EVERYTHING)
    assert existing_of(lab(plugin, tmp_path), {"instance": {}, "addresses": [], "security_group": {},
                                               "key_pair": {}}) == [str(key_file)]


def test_a_lab_is_confirmed_by_its_name(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    run, calls = make_run(plugin, tmp_path, {"a1": EVERYTHING})
    part = lifecycle.confirm_teardown_step(run)["a1"]
    assert calls == []
    assert part["confirmed"] is False and part["confirm_word"] == "a1"
    assert part["existing"][0].startswith("instance i-a ") and "security group a1-ssh" in part["existing"]
    assert part["prompt"] == (
        f"This deletes lab a1 in us-east-1: {', '.join(part['existing'])}, and this machine's ssh entry and shell "
        "shortcuts for it. Type the lab name to confirm")
    assert part["refused"] == ("Teardown not confirmed: type the lab name at the prompt, or pass "
                               "-e gpu_lab_confirm_teardown=a1 in scripts.")
    run, _unused = make_run(plugin, tmp_path, {"a1": EVERYTHING}, ec2_gpu_host_teardown_confirm="a1")
    assert lifecycle.confirm_teardown_step(run)["a1"]["confirmed"] is True
    run, _unused = make_run(plugin, tmp_path, {"a1": EVERYTHING}, ec2_gpu_host_teardown_confirm="A1")
    assert lifecycle.confirm_teardown_step(run)["a1"]["confirmed"] is False


def test_a_lab_with_nothing_left_needs_no_confirmation(plugin, tmp_path: Path) -> None:
    run, _unused = make_run(plugin, tmp_path, {"a1": {}})
    part = plugin("plugin_utils.lab_lifecycle").confirm_teardown_step(run)["a1"]
    assert part["existing"] == [] and part["confirmed"] is True
    (tmp_path / "a1.pem").write_text("KEY")  # its key file is something left
    assert plugin("plugin_utils.lab_lifecycle").confirm_teardown_step(run)["a1"]["confirmed"] is False


def test_a_class_lab_is_confirmed_by_the_class_name_only(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    found = {"cs1-ada": EVERYTHING, "cs1-bob": {}}
    for given in ("", "cs1-ada", "cs1-bob"):
        run, _unused = make_run(plugin, tmp_path, found, gpu_lab_class="cs1", ec2_gpu_host_teardown_confirm=given)
        parts = lifecycle.confirm_teardown_step(run)
        assert [p["confirmed"] for p in parts.values()] == [False, False], given  # even with nothing left
    part = parts["cs1-ada"]
    assert part["confirm_word"] == "cs1"
    assert part["prompt"] == ("This deletes 2 lab(s) of class cs1 in us-east-1 (cs1-ada, cs1-bob): their instances "
                              "and disks, Elastic IPs, security groups and key pairs. Type the class name to confirm")
    assert parts["cs1-bob"]["prompt"] == part["prompt"]
    assert part["refused"] == ("Teardown not confirmed: type the class name at the prompt, or pass "
                               "-e gpu_lab_confirm_teardown=cs1 in scripts.")
    run, _unused = make_run(plugin, tmp_path, found, gpu_lab_class="cs1", ec2_gpu_host_teardown_confirm="cs1")
    assert all(p["confirmed"] for p in lifecycle.confirm_teardown_step(run).values())


def test_a_big_class_prompt_truncates_its_hosts(plugin, tmp_path: Path) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    hosts = [f"cs1-student{n:02}" for n in range(30)]
    prompt = lifecycle.teardown_prompt(lab(plugin, tmp_path, gpu_lab_class="cs1"), REGION, [], hosts)
    shown = lifecycle.truncate(", ".join(hosts))
    assert shown.endswith("...") and len(shown) <= 200
    assert f"30 lab(s) of class cs1 in us-east-1 ({shown}):" in prompt


@pytest.mark.parametrize("text", [
    "", "short", "x" * 205, "x" * 206, "word " * 41, "word " * 42, "a" * 150 + " " + "b" * 100,
    " ".join(f"cs1-student{n:02}" for n in range(30)), "nospace" * 40,
])
def test_truncate_is_jinjas(plugin, text: str) -> None:
    jinja = Environment(autoescape=True).from_string("{{ text | truncate(200) }}")
    assert plugin("plugin_utils.lab_lifecycle").truncate(text) == jinja.render(text=text)


# --- step=teardown -------------------------------------------------------------------------

REMOVED = {"addresses": ["127.0.0.9"], "instances": ["i-a"], "security_group": "sg-1", "key_pair": "a1-server",
           "orphans": []}
NOTHING = {"addresses": [], "instances": [], "security_group": "", "key_pair": "", "orphans": []}
ORPHANS = [{"kind": "elastic_ip", "id": "eipalloc-9", "summary": "elastic ip 127.0.0.99 of lab old"}]


def test_teardown_removes_what_find_found_in_one_call(plugin, tmp_path: Path) -> None:
    found = EVERYTHING | {"instances": [EVERYTHING["instance"]], "orphans": ORPHANS}
    run, calls = make_run(plugin, tmp_path, {"a1": found, "b2": {}},
                          {"labs": {"a1": {"changed": True, "removed": REMOVED},
                                    "b2": {"changed": False, "removed": NOTHING}}},
                          ec2_gpu_host_instance_timeout=321)
    key_file = tmp_path / "a1.pem"
    key_file.write_text("KEY")
    parts = plugin("plugin_utils.lab_lifecycle").teardown_step(run)
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_host"]
    assert calls[0][1]["state"] == "absent"
    assert calls[0][1]["labs"] == [
        {"lab": "a1", "region": REGION, "addresses": found["addresses"], "instances": found["instances"],
         "shelves": [], "security_group_id": "sg-1", "key_name": "a1-server", "orphans": [], "wait_timeout": 321},
        {"lab": "b2", "region": REGION, "addresses": [], "instances": [], "shelves": [], "security_group_id": "",
         "key_name": "", "orphans": [], "wait_timeout": 321}]
    assert not key_file.exists()
    assert (parts["a1"]["failed"], parts["a1"]["changed"], parts["a1"]["removed"]) == (False, True, REMOVED)
    assert parts["a1"]["message"] == (f"Lab a1: removed Elastic IP 127.0.0.9, instance i-a, security group a1-ssh, "
                                      f"key pair a1-server, {key_file}.")
    assert parts["b2"] == {"failed": False, "changed": False, "removed": NOTHING, "planned": [],
                           "message": "Lab b2: nothing was left to remove."}


def test_left_overs_are_removed_only_when_asked(plugin, tmp_path: Path) -> None:
    answer = {"labs": {"a1": {"changed": True, "removed": NOTHING | {"orphans": ["elastic ip 127.0.0.99 of lab old"]}}}}
    run, calls = make_run(plugin, tmp_path, {"a1": {"orphans": ORPHANS}}, answer, ec2_gpu_host_remove_orphans=True)
    part = plugin("plugin_utils.lab_lifecycle").teardown_step(run)["a1"]
    assert calls[0][1]["labs"][0]["orphans"] == ORPHANS
    assert part["message"] == "Lab a1: removed left-over elastic ip 127.0.0.99 of lab old."
    run, calls = make_run(plugin, tmp_path, {"a1": {"orphans": ORPHANS}}, answer, ec2_gpu_host_remove_orphans=False)
    plugin("plugin_utils.lab_lifecycle").teardown_step(run)
    assert calls[0][1]["labs"][0]["orphans"] == []


def test_a_key_the_user_brought_is_kept(plugin, tmp_path: Path) -> None:
    key_file = tmp_path / "a1.pem"
    key_file.write_text("KEY")
    run, _unused = make_run(plugin, tmp_path, {"a1": {}}, {"labs": {"a1": {"changed": False, "removed": NOTHING}}},
                            ec2_gpu_host_key_pair_public_key="ssh-ed25519 AAAA")
    part = plugin("plugin_utils.lab_lifecycle").teardown_step(run)["a1"]
    assert key_file.exists()
    assert part["changed"] is False and part["message"] == "Lab a1: nothing was left to remove."


def test_check_mode_says_what_would_go_and_deletes_nothing(plugin, tmp_path: Path) -> None:
    key_file = tmp_path / "a1.pem"
    key_file.write_text("KEY")
    answer = {"labs": {"a1": {"changed": True, "removed": NOTHING,
                              "planned": ["release 127.0.0.9", "terminate i-a"]}}}
    run, _unused = make_run(plugin, tmp_path, {"a1": EVERYTHING}, answer, check_mode=True)
    part = plugin("plugin_utils.lab_lifecycle").teardown_step(run)["a1"]
    assert key_file.exists()
    assert part["planned"] == ["release 127.0.0.9", "terminate i-a", f"delete {key_file}"]
    assert part["message"] == f"Check mode: lab a1 would release 127.0.0.9; terminate i-a; delete {key_file}."
    assert part["changed"] is True


def test_check_mode_with_nothing_left(plugin, tmp_path: Path) -> None:
    run, _unused = make_run(plugin, tmp_path, {"a1": {}}, {"labs": {"a1": {"changed": False, "planned": []}}},
                            check_mode=True)
    part = plugin("plugin_utils.lab_lifecycle").teardown_step(run)["a1"]
    assert part["message"] == "Check mode: lab a1 would remove nothing: nothing is left."
    assert part["changed"] is False and part["planned"] == []


def test_a_failed_removal_keeps_the_key_and_says_what_went(plugin, tmp_path: Path) -> None:
    key_file = tmp_path / "a1.pem"
    key_file.write_text("KEY")
    gone = NOTHING | {"addresses": ["127.0.0.9"]}
    answer = {"labs": {"a1": {"failed": True, "changed": True, "msg": "i-a did not terminate within 600 s.",
                              "removed": gone},
                       "b2": {"changed": True, "removed": REMOVED | {"key_pair": "b2-server"}}}}
    run, _unused = make_run(plugin, tmp_path, {"a1": EVERYTHING, "b2": EVERYTHING}, answer)
    parts = plugin("plugin_utils.lab_lifecycle").teardown_step(run)
    assert key_file.exists()
    assert parts["a1"] == {
        "failed": True, "changed": True, "removed": gone, "planned": [],
        "msg": "i-a did not terminate within 600 s. (What was removed before that is listed above; run teardown.yml "
               "again.)",
        "message": "Lab a1: removed Elastic IP 127.0.0.9."}
    assert parts["b2"]["failed"] is False
    assert parts["b2"]["message"].startswith("Lab b2: removed Elastic IP 127.0.0.9, instance i-a, ")


def test_removal_message(plugin, tmp_path: Path) -> None:
    removal_message = plugin("plugin_utils.lab_lifecycle").removal_message
    settings = lab(plugin, tmp_path)
    gone = {"addresses": ["127.0.0.9", "127.0.0.10"], "instances": ["i-a", "i-b"], "security_group": "sg-1",
            "key_pair": "lab1-server", "orphans": ["key pair old-server of lab old"]}
    assert removal_message(settings, gone, "/k/lab1.pem", [], False) == (
        "Lab lab1: removed Elastic IP 127.0.0.9, Elastic IP 127.0.0.10, instance i-a, i-b, security group lab1-ssh, "
        "key pair lab1-server, /k/lab1.pem, left-over key pair old-server of lab old.")
    assert removal_message(settings, {}, "", [], False) == "Lab lab1: nothing was left to remove."


def test_a_lab_with_only_its_key_file_left_changes(plugin, tmp_path: Path) -> None:
    key_file = tmp_path / "a1.pem"
    key_file.write_text("KEY")
    run, _unused = make_run(plugin, tmp_path, {"a1": {}}, {"labs": {"a1": {"changed": False, "removed": NOTHING}}})
    part = plugin("plugin_utils.lab_lifecycle").teardown_step(run)["a1"]
    assert not key_file.exists()
    assert part["changed"] is True and part["message"] == f"Lab a1: removed {key_file}."


def test_spot_status_prices_and_an_interruption(plugin) -> None:
    lifecycle = plugin("plugin_utils.lab_lifecycle")
    interrupted = {"market": "spot", "state": "stopped", "state_reason_code": "Server.SpotInstanceShutdown",
                   "spot_request": {"state": "open", "status": "instance-stopped-no-capacity",
                                    "updated": "2026-12-01T09:30:12+00:00"}}
    said = lifecycle.spot_status(interrupted, {"usd_per_hour": 0.3, "zone": "us-east-1a"}, 0.8)
    assert (said["usd_per_hour"], said["saving_percent"], said["request_state"]) == (0.3, 62, "open")
    assert said["interrupted"].startswith("Interrupted by AWS at 2026-12-01 09:30 UTC (Server.SpotInstanceShutdown)")
    stopped_by_owner = {**interrupted, "spot_request": {"state": "disabled", "status": "instance-stopped-by-user"}}
    assert lifecycle.spot_status(stopped_by_owner, {}, 0.8)["interrupted"] == ""
    assert lifecycle.spot_status({"market": "on-demand"}, {"usd_per_hour": 0.3}, 0)["saving_percent"] == 0
