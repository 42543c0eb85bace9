"""The on-demand vCPU quota before a launch: which group a type is in, which labs and candidates
fit (a class in play order), and the one message when none does."""

from __future__ import annotations

import pytest

G, P, STD = "L-DB2E81BA", "L-417A185B", "L-1216C47A"


@pytest.fixture
def q(plugin):
    return plugin("plugin_utils.lab_quota")


@pytest.mark.parametrize(("instance_type", "code"), [
    ("g6.xlarge", G), ("g4dn.xlarge", G), ("g5g.xlarge", G), ("gr6.4xlarge", G), ("vt1.3xlarge", G),
    ("p3.2xlarge", P), ("p5e.48xlarge", P), ("m5.xlarge", STD), ("t3.micro", STD), ("c7gn.large", STD),
    ("r7iz.large", STD), ("z1d.large", STD), ("i4i.large", STD), ("im4gn.large", STD), ("d3en.xlarge", STD),
    ("f1.2xlarge", "L-74FC7D96"), ("x2idn.16xlarge", "L-7295265B"), ("inf2.xlarge", "L-1945791B"),
    ("trn1.2xlarge", "L-2C3B7624"), ("dl1.24xlarge", "L-6E869C2A"), ("mac1.metal", ""), ("u-6tb1.metal", ""),
])
def test_each_family_has_its_quota(q, instance_type: str, code: str) -> None:
    assert q.quota_code(instance_type) == code


def test_codes_once_each_in_order(q) -> None:
    assert q.quota_codes(["g6.xlarge", "p3.2xlarge", "g5.xlarge", "mac1.metal"]) == [G, P]


def test_in_use_sums_vcpus_per_group(q) -> None:
    assert q.in_use({"g4dn.xlarge": 8, "g5.2xlarge": 8, "p3.2xlarge": 8, "m5.large": 2}) == {G: 16, P: 8, STD: 2}


def region(q, values, used=None, unavailable=""):
    return q.RegionQuotas("us-east-1", values, used or {}, unavailable)


def test_quota_zero_nothing_fits_one_message_with_how_to_ask(q) -> None:
    want = q.Want("csdl", [("g6.xlarge", 4), ("g5.xlarge", 4), ("g4dn.xlarge", 4)])
    fit = q.decide(region(q, {G: 0.0}), [want])["csdl"]
    assert not fit.fits and fit.candidates == []
    assert [s["type"] for s in fit.skipped] == ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]
    assert all(s["outcome"] == "quota" for s in fit.skipped)
    assert fit.request == (G, 4)
    assert fit.msg.startswith("Lab csdl does not fit the account's on-demand vCPU quota in us-east-1: Running "
                              "On-Demand G and VT instances (L-DB2E81BA) is 0 vCPUs with 0 in use (g6.xlarge needs "
                              "4, g5.xlarge needs 4, g4dn.xlarge needs 4), so nothing was created.")
    assert ("`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA "
            "--desired-value 4 --region us-east-1`") in fit.msg
    assert "Service Quotas console" in fit.msg and "Running On-Demand G and VT instances" in fit.msg
    assert "-e gpu_lab_request_quota=true" in fit.msg


def test_one_running_lab_leaves_no_room_for_a_second(q) -> None:
    quotas = region(q, {G: 4.0}, q.in_use({"g4dn.xlarge": 4}))
    fit = q.decide(quotas, [q.Want("b", [("g4dn.xlarge", 4)])])["b"]
    assert not fit.fits
    assert "is 4 vCPUs with 4 in use (g4dn.xlarge needs 4)" in fit.msg
    assert "--desired-value 8 " in fit.msg
    assert fit.request == (G, 8)


def test_a_fallback_of_another_group_that_fits_is_kept(q) -> None:
    fit = q.decide(region(q, {G: 0.0, P: 64.0}), [q.Want("a", [("g6.xlarge", 4), ("p3.2xlarge", 8)])])["a"]
    assert fit.fits and fit.candidates == ["p3.2xlarge"]
    assert [s["type"] for s in fit.skipped] == ["g6.xlarge"]
    assert "g6.xlarge needs 4" in fit.skipped[0]["message"]
    assert fit.request == (G, 4) and fit.msg == ""


def test_a_bigger_fallback_that_does_not_fit_is_left_out(q) -> None:
    fit = q.decide(region(q, {G: 4.0}), [q.Want("a", [("g6.xlarge", 4), ("g5.2xlarge", 8)])])["a"]
    assert fit.candidates == ["g6.xlarge"] and [s["type"] for s in fit.skipped] == ["g5.2xlarge"]
    assert fit.request is None  # the first candidate fits: nothing to ask for


def test_a_class_of_30_against_64_the_first_16_fit_in_play_order(q) -> None:
    wants = [q.Want(f"s{n:02d}", [("g6.xlarge", 4)]) for n in range(1, 31)]
    fits = q.decide(region(q, {G: 64.0}), wants)
    fitting = [name for name, fit in fits.items() if fit.fits]
    assert fitting == [f"s{n:02d}" for n in range(1, 17)]
    assert list(fits) == [w.lab for w in wants]
    assert "is 64 vCPUs with 64 in use" in fits["s17"].msg and "--desired-value 68 " in fits["s17"].msg
    assert "--desired-value 120 " in fits["s30"].msg
    assert q.requests_wanted(fits) == {G: 120}  # one request, for the whole class


def test_what_runs_already_counts_for_the_class(q) -> None:
    fits = q.decide(region(q, {G: 12.0}, {G: 4}), [q.Want(f"s{n}", [("g4dn.xlarge", 4)]) for n in range(5)])
    assert [name for name, fit in fits.items() if fit.fits] == ["s0", "s1"]


def test_unknown_quota_or_vcpus_is_left_to_run_instances(q) -> None:
    fits = q.decide(region(q, {G: None}), [q.Want("a", [("g6.xlarge", 4)]), q.Want("b", [("mac1.metal", 12)]),
                                           q.Want("c", [("g9.nothing", 0)])])
    assert all(f.fits and not f.skipped for f in fits.values())


def test_service_quotas_unreadable_keeps_every_candidate(q) -> None:
    fit = q.decide(region(q, {}, unavailable="AccessDeniedException"), [q.Want("a", [("g6.xlarge", 4)])])["a"]
    assert fit.candidates == ["g6.xlarge"] and not fit.skipped
    warning = q.unavailable_warning("us-east-1", "AccessDeniedException")
    assert "AccessDeniedException" in warning and "RunInstances decides" in warning


def test_request_sentences(q) -> None:
    filed = {"quota_code": G, "desired_value": 4, "id": "r-1", "status": "PENDING", "filed": True}
    assert q.request_sentence(filed, "us-east-1") == (
        "Asked AWS to raise Running On-Demand G and VT instances (L-DB2E81BA) in us-east-1 to 4 vCPUs: "
        "request r-1, status PENDING.")
    assert q.request_sentence(filed | {"filed": False}, "us-east-1").startswith("A request is already open")
    assert q.request_sentence({"quota_code": G, "planned": True, "desired_value": 4}, "us-east-1").startswith(
        "Check mode: would ask")
    assert "AccessDeniedException" in q.request_sentence({"quota_code": G, "error": "AccessDeniedException: no"},
                                                         "us-east-1")


def test_open_requests_only(q) -> None:
    changes = [{"Id": "1", "QuotaCode": G, "Status": "APPROVED"}, {"Id": "2", "QuotaCode": G, "Status": "PENDING"},
               {"Id": "3", "QuotaCode": G, "Status": "CASE_OPENED"}]
    assert [r["id"] for r in q.open_requests(changes)] == ["2", "3"]


# --- wired into the check step, the launch spec and the status view ------------------------------

GPU4 = {"exists": True, "gpu_count": 1, "architectures": ["x86_64"], "vcpus": 4}
IMAGE = {"image_id": "ami-0123456789abcdef0", "architecture": "x86_64", "root_size_gib": 75}


def found_of(quota: dict, *types: str) -> dict:
    return {"instance": {}, "instances": [], "addresses": [], "security_group": {}, "key_pair": {},
            "instance_types": [GPU4 | {"name": t} for t in types], "image": IMAGE,
            "drift": {"apply": {}, "refuse": [], "notes": []}, "elsewhere": [], "quota": quota,
            "quota_requests": []}


def make_run(plugin, tmp_path, labs: dict, answers: dict, warnings: list):
    settings, lab_run = plugin("plugin_utils.lab_settings"), plugin("plugin_utils.lab_run")
    calls: list = []

    def execute(name: str, args: dict) -> dict:
        calls.append((name, args))
        return answers.get(name, {})

    by_host = {host: settings.settings_of(host, {
        "ec2_gpu_host_lab_name": host, "ec2_gpu_host_region": "us-east-1",
        "ec2_gpu_host_instance_type": "g6.xlarge", "ec2_gpu_host_fallback_instance_types": [],
        "ec2_gpu_host_home": str(tmp_path), "ec2_gpu_host_ssh_cidr": "198.51.100.7/32",
        "ec2_gpu_host_key_file": str(tmp_path / f"{host}.pem")} | {f"ec2_gpu_host_{k}": v for k, v in given.items()})
        for host, given in labs.items()}
    return lab_run.Run(labs=by_host, execute=execute, warn=warnings.append), calls


def test_the_check_step_fits_a_class_in_play_order_and_asks_once(plugin, tmp_path) -> None:
    launch = plugin("plugin_utils.lab_launch")
    quota = {"applied": {G: 8.0}, "running_vcpus": {}, "unavailable": ""}
    labs = {f"s{n}": {"request_quota": "true"} for n in range(1, 5)}
    answers = {"csdl.gpu_lab.lab_info": {"labs": {h: found_of(quota, "g6.xlarge") for h in labs}},
               "csdl.gpu_lab.lab_quota_request": {"requests": [
                   {"region": "us-east-1", "quota_code": G, "desired_value": 16, "id": "r-1", "status": "PENDING",
                    "filed": True}]}}
    warnings: list = []
    run, calls = make_run(plugin, tmp_path, labs, answers, warnings)
    parts = launch.check_step(run)
    entry = calls[0][1]["labs"][0]
    assert entry["quota"] == {"codes": [G], "check": True, "requests": False}
    assert [h for h, p in parts.items() if not p["failed"]] == ["s1", "s2"]
    assert parts["s1"]["candidates"] == ["g6.xlarge"]
    # One request for the class: room for all four.
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_info", "csdl.gpu_lab.lab_quota_request"]
    assert calls[1][1] == {"requests": [{"region": "us-east-1", "quota_code": G, "desired_value": 16}]}
    assert parts["s3"]["msg"].endswith("request r-1, status PENDING. Run launch.yml again once AWS approved it.")
    assert "is 8 vCPUs with 8 in use" in parts["s4"]["msg"] and not warnings


def test_the_check_step_asks_nothing_unasked_and_warns_once_when_unreadable(plugin, tmp_path) -> None:
    launch = plugin("plugin_utils.lab_launch")
    unreadable = {"applied": {G: None}, "running_vcpus": {}, "unavailable": "AccessDeniedException"}
    labs = {"la": {}, "lb": {}}
    answers = {"csdl.gpu_lab.lab_info": {"labs": {h: found_of(unreadable, "g6.xlarge") for h in labs}}}
    warnings: list = []
    run, calls = make_run(plugin, tmp_path, labs, answers, warnings)
    parts = launch.check_step(run)
    assert not any(p["failed"] for p in parts.values()), parts
    assert len(warnings) == 1 and "AccessDeniedException" in warnings[0]
    for found in answers["csdl.gpu_lab.lab_info"]["labs"].values():
        found["quota"] = {"applied": {G: 0.0}, "running_vcpus": {}, "unavailable": ""}
    run, calls = make_run(plugin, tmp_path, labs, answers, warnings)
    parts = launch.check_step(run)
    assert all(p["failed"] for p in parts.values())
    assert [name for name, _unused in calls] == ["csdl.gpu_lab.lab_info"]  # gpu_lab_request_quota is false


def test_skipped_candidates_are_left_out_and_said(plugin, tmp_path) -> None:
    spec = plugin("plugin_utils.lab_launch_spec")
    skipped = [{"type": "g5.2xlarge", "zone": "", "outcome": "quota", "code": "", "message": "..."}]
    checked = {"candidates": ["g4dn.xlarge"], "quota_skipped": skipped, "quota_notes": []}
    ran = {"launched": True, "instance": {"type": "g4dn.xlarge", "zone": "us-east-1a"},
           "attempts": [{"type": "g4dn.xlarge", "zone": "us-east-1a", "outcome": "launched", "code": ""}]}
    with_quota = spec.with_quota(checked, ran)
    assert [a["outcome"] for a in with_quota["attempts"]] == ["quota", "launched"]
    run, _unused = make_run(plugin, tmp_path, {"la": {"fallback_instance_types": ["g4dn.xlarge"],
                                                      "instance_type": "g5.2xlarge"}}, {}, [])
    lab = run.labs["la"]
    assert spec.launch_note(lab, {}, with_quota) == ("Launched g4dn.xlarge in us-east-1a, after g5.2xlarge in no "
                                                     "zone: quota.")
    part = {"found": found_of({}, "g5.2xlarge", "g4dn.xlarge"), "cidrs": ["198.51.100.7/32"]} | checked
    assert spec.run_spec(lab, part, "ssh-ed25519 AAAA", False)["instance_types"] == ["g4dn.xlarge"]
    assert spec.run_spec(lab, {k: v for k, v in part.items() if k != "candidates"}, "ssh-ed25519 AAAA",
                         False)["instance_types"] == ["g5.2xlarge", "g4dn.xlarge"]


def test_status_shows_the_open_requests(plugin) -> None:
    lines = plugin("filter.lab_status").lab_status_lines({
        "lab": "a", "region": "us-east-1", "state": "absent", "instance_id": "", "warnings": [],
        "quota_requests": [{"id": "r-1", "quota_code": G, "quota_name": "Running On-Demand G and VT instances",
                            "desired_value": 4.0, "status": "PENDING"}]})
    assert "quota      request r-1 to raise Running On-Demand G and VT instances to 4 vCPUs: PENDING" in lines


# --- spot: its own quotas -------------------------------------------------------------------------

SPOT_G = "L-3819A6DF"


def test_a_spot_type_counts_against_its_groups_spot_quota(q) -> None:
    assert [q.quota_code(t, "spot") for t in ("g6.xlarge", "p4d.24xlarge", "m5.large", "mac1.metal")] == [
        SPOT_G, "L-7212CCBC", "L-34B43A08", ""]
    assert q.quota_codes(["g6.xlarge", "g5.xlarge"], ["spot", "on-demand"]) == [SPOT_G, G]
    assert q.quota_name(SPOT_G) == "All G and VT Spot Instance Requests"


def test_in_use_keeps_the_markets_apart(q) -> None:
    assert q.in_use({"g5.xlarge": 4}, {"g6.xlarge": 8}) == {G: 4, SPOT_G: 8}


def test_a_spot_want_is_decided_on_the_spot_quota_only(q) -> None:
    quotas = region(q, {G: 64.0, SPOT_G: 4.0}, {SPOT_G: 4})
    fit = q.decide(quotas, [q.Want("csdl", [("g6.xlarge", 4)], "spot")])["csdl"]
    assert not fit.fits and fit.skipped[0]["market"] == "spot"
    assert fit.msg.startswith("Lab csdl does not fit the account's spot vCPU quota in us-east-1: All G and VT Spot "
                              "Instance Requests (L-3819A6DF) is 4 vCPUs with 4 in use (g6.xlarge needs 4)")
    assert fit.request == (SPOT_G, 8) and "--quota-code L-3819A6DF --desired-value 8" in fit.msg
    assert q.decide(quotas, [q.Want("csdl", [("g6.xlarge", 4)])])["csdl"].fits  # on demand: another quota
