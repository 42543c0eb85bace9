# Copyright: gpu_lab developers
# MIT License
"""step=check and step=launch: the launch of every lab of the play, in two tasks.

check: the lab-wide settings the host and workstation roles use later (the course
repository read from here, once), every setting of the role offline
(lab_checks.settings_problems), then what AWS has of each lab
(one csdl.gpu_lab.lab_info call for all, lab_run.find), this machine's address when a lab's
SSH source is to be detected (asked once), then what AWS and this machine said
(lab_checks.aws_problems). Nothing is changed.

launch: from the check's parts (options.checked), the labs' keys on this machine (each key
file once), then one csdl.gpu_lab.lab_host call for every lab that needs its instance
launched, started or changed, then each lab's record of where it lives."""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.lookup.ec2_regions import LookupModule as Regions
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils import (
    lab_checks,
    lab_launch_local,
    lab_launch_spec,
    lab_quota,
)
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_checks import IpCheck, KeyFile
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_run import ModuleFailed, Part, Run, failed, find, ok
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import LabSettings

IP_CHECK_TIMEOUT = 5  # seconds, for the connection and for each read
IP_CHECK_MOST_BYTES = 65536  # read of the address check's answer: an address, or a portal's page


# --- step=check ----------------------------------------------------------------------------

def check_step(run: Run) -> dict[str, Part]:
    """Each part: failed and msg (every problem, one sentence each) or, for a lab that can be
    launched as set, ``found`` (lab_info's answer), ``cidrs`` (its SSH sources), ``reconcile``
    (which of reconcile.yml's changes it needs, and ``needed``) and what those tasks act on."""
    regions = Regions().run([])
    reads = read_courses(list(run.labs.values()))
    parts: dict[str, Part] = {}
    for host, lab in run.labs.items():
        course = lab_checks.Course.of(lab)
        # The lab-wide settings first: a lab whose host settings are wrong goes no further.
        problems = (lab_checks.lab_wide_problems(lab, reads.get((course.repo, course.branch)))
                    or lab_checks.settings_problems(lab, regions))
        if problems:
            parts[host] = failed(" ".join(problems))
    hosts = [host for host in run.labs if host not in parts]
    found = find(run, hosts, launch=True)
    ip = detect_address([run.labs[h] for h in hosts if not found[h]["failed"]])
    for host in hosts:
        parts[host] = checked_part(run.labs[host], found[host], ip)
    fit_quotas(run, parts)
    return parts


def fit_quotas(run: Run, parts: dict[str, Part]) -> None:
    """The vCPU quotas, before anything is created: for each region, the labs that passed the
    checks and need a new instance, in play order (lab_quota.decide), in each market a lab may
    launch in (a spot lab: the spot quota, then the on-demand one for its last resort, counted
    after the on-demand labs). A lab keeps the candidates that fit (``candidates`` on demand,
    ``spot_candidates``; the others are ``quota_skipped`` attempts); one with none in any market
    fails with the one message. Service Quotas unreadable: said once per region, and
    RunInstances decides. With gpu_lab_request_quota, one request per quota and region for the
    lab's own market."""
    by_region: dict[str, list[str]] = {}
    for host, part in parts.items():
        if not part.get("failed") and part["found"].get("quota"):
            by_region.setdefault(str(part["found"].get("region") or run.labs[host].region), []).append(host)
    fits: dict[str, dict[str, lab_quota.Fit]] = {}
    regions: dict[str, str] = {}
    for region, hosts in by_region.items():
        read = parts[hosts[0]]["found"]["quota"]
        quotas = lab_quota.RegionQuotas(region, dict(read.get("applied") or {}),
                                        lab_quota.in_use(read.get("running_vcpus") or {},
                                                         read.get("running_spot_vcpus") or {}),
                                        str(read.get("unavailable") or ""))
        if quotas.unavailable:
            run.warn(lab_quota.unavailable_warning(region, quotas.unavailable))
        wants: dict[str, list[lab_quota.Want]] = {"spot": [], "on-demand": []}
        # On demand: the on-demand labs first, then the spot labs' last resort.
        for host in sorted(hosts, key=lambda h: run.labs[h].markets[0] == "spot"):
            lab = run.labs[host]
            vcpus = {t.get("name"): int(t.get("vcpus") or 0) for t in parts[host]["found"].get("instance_types") or []}
            for market in lab.markets:
                wants[market].append(lab_quota.Want(lab.name, [(t, vcpus.get(t, 0)) for t in lab.candidates], market))
        decided = {market: lab_quota.decide(quotas, market_wants) for market, market_wants in wants.items()}
        for host in hosts:
            lab = run.labs[host]
            fits[host] = {market: decided[market][lab.name] for market in lab.markets}
        regions.update(dict.fromkeys(hosts, region))
    said = request_quotas(run, {h: f[run.labs[h].markets[0]] for h, f in fits.items() if run.labs[h].request_quota},
                          regions)
    for host, by_market in fits.items():
        part, note = parts[host], said.get(host, "")
        if not any(fit.fits for fit in by_market.values()):
            first = by_market[run.labs[host].markets[0]]
            others = " ".join(f.facts for m, f in by_market.items() if m != run.labs[host].markets[0])
            again = " Run launch.yml again once AWS approved it." if note and "status" in note else ""
            said_first = f"{first.facts} {note}{again}" if note else first.msg
            parts[host] = failed(f"{said_first} {others}".strip())
            continue
        part["candidates"] = by_market["on-demand"].candidates if "on-demand" in by_market else []
        if "spot" in by_market:
            part["spot_candidates"] = by_market["spot"].candidates
        part["quota_skipped"] = [s for fit in by_market.values() for s in fit.skipped]
        part["quota_notes"] = [note] if note else []


def request_quotas(run: Run, fits: dict[str, lab_quota.Fit], regions: dict[str, str]) -> dict[str, str]:
    """Asks AWS to raise each quota the labs' first candidates need (one request per quota and
    region, for the largest value any of them needs), in one csdl.gpu_lab.lab_quota_request
    call; the sentence for each lab that asked."""
    wanted: dict[tuple[str, str], int] = {}
    for host, fit in fits.items():
        if fit.request:
            key = (regions[host], fit.request[0])
            wanted[key] = max(wanted.get(key, 0), fit.request[1])
    if not wanted:
        return {}
    requests = [{"region": region, "quota_code": code, "desired_value": value}
                for (region, code), value in wanted.items()]
    try:
        answers = run.call("csdl.gpu_lab.lab_quota_request", {"requests": requests}).get("requests") or []
    except ModuleFailed as error:
        answers = [{**r, "error": str(error)} for r in requests]
    by_key = {(str(a.get("region")), str(a.get("quota_code"))): a for a in answers}
    return {host: lab_quota.request_sentence(by_key[(regions[host], fit.request[0])], regions[host])
            for host, fit in fits.items() if fit.request and (regions[host], fit.request[0]) in by_key}


def checked_part(lab: LabSettings, found: Part, ip: IpCheck) -> Part:
    key = KeyFile.of(lab.key_file)
    problems = lab_checks.aws_problems(lab, found, key, ip)
    if problems:
        return failed(" ".join(problems))
    cidrs = lab_checks.ssh_cidrs(lab, ip)
    group = found.get("security_group") or {}
    return ok(found=found, cidrs=cidrs, reconcile=lab_checks.reconcile(lab, found, cidrs, key),
              region=lab.region, tags=lab.tags, recorded_tags=lab.recorded_tags, key_name=lab.key_name,
              security_group={"name": lab.sg_name, "description": lab.sg_description,
                              "vpc_id": group.get("vpc_id", "")},
              instance_id=(found.get("instance") or {}).get("id", ""))


def read_courses(labs: list[LabSettings]) -> dict[tuple[str, str], lab_checks.CourseRead]:
    """Each course repository and branch the labs read from here, read once (a class's labs share one)."""
    wanted = [(c.repo, c.branch) for c in map(lab_checks.Course.of, labs) if c.read]
    return {(repo, branch): lab_checks.CourseRead(*lab_launch_local.read_course(
        repo, branch, lab_checks.COURSE_READ_TIMEOUT)) for repo, branch in dict.fromkeys(wanted)}


def detect_address(labs: list[LabSettings]) -> IpCheck:
    """This machine's public address, asked once (every lab is reached from here), and only
    when a lab's SSH source is to be detected."""
    wanting = [lab for lab in labs if not lab.ssh_cidrs]
    return ask_address(wanting[0].ip_check_url) if wanting else IpCheck()


def ask_address(url: str) -> IpCheck:
    """What the address check answers (body, status, Content-Type), or why it did not, in a
    few words (lab_checks.ip_problems makes the sentence)."""
    try:
        # Controller side, not a module: the standard library's default opener (what urlopen
        # uses), so no_answer() can tell urllib's own errors apart.
        opener = urllib.request.build_opener()
        with opener.open(url, timeout=IP_CHECK_TIMEOUT) as answer:  # noqa: S310 - the lab's setting
            body = answer.read(IP_CHECK_MOST_BYTES)
            return IpCheck(content=body.decode("utf-8", "replace"), msg=f"OK ({len(body)} bytes)",
                           status=answer.status or 200, content_type=answer.headers.get_content_type(), url=url)
    except urllib.error.HTTPError as error:
        try:
            body = error.read(IP_CHECK_MOST_BYTES)
        except (OSError, ValueError):
            body = b""
        return IpCheck(content=body.decode("utf-8", "replace"), msg=f"HTTP {error.code} {error.reason}",
                       status=error.code, content_type=error.headers.get_content_type() if error.headers else "",
                       url=url)
    except urllib.error.URLError as error:
        return IpCheck(msg=no_answer(error.reason), url=url)
    except (OSError, ValueError) as error:  # a read that timed out, a URL that is none
        return IpCheck(msg=no_answer(error), url=url)


def no_answer(reason: object) -> str:
    """Why the address check did not answer, in a few words."""
    if isinstance(reason, TimeoutError):
        return f"no answer within {IP_CHECK_TIMEOUT} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"its host name did not resolve: {reason}"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"its TLS certificate was not trusted: {reason.verify_message or reason}, as when a Wi-Fi captive "
                "portal answers in its place")
    return str(reason) or type(reason).__name__


# --- step=launch ---------------------------------------------------------------------------

def launch_step(run: Run) -> dict[str, Part]:
    """Each part: ``instance``, ``address``, ``lab`` (ec2_gpu_host_lab), ``region``,
    ``launch_note``, ``launch_attempts``, ``check_note`` ('' but in check mode) and ``changed``;
    a lab lab_host could not bring up has failed and msg too (and the rest, for the reports)."""
    checked = dict(run.options.get("checked") or {})
    parts: dict[str, Part] = {}
    ready: dict[str, Part] = {}
    for host, lab in run.labs.items():
        part = checked.get(host) or failed(f"Lab {lab.name} was not checked before its launch (preflight.yml).")
        if part.get("failed"):
            parts[host] = failed(str(part.get("msg")))
        else:
            ready[host] = part
    keys = local_keys(run, ready)
    specs = {}
    for host, part in ready.items():
        lab = run.labs[host]
        key = keys.get(lab.key_file, lab_launch_local.LocalKey())
        if key.error:
            parts[host] = failed(key.error)
        elif lab_launch_spec.needs_run(part["found"]):
            specs[host] = lab_launch_spec.run_spec(lab, part, key.public, rotated(part))
    answers = bring_up(run, specs)
    for host, part in ready.items():
        if host not in parts:
            key = keys.get(run.labs[host].key_file, lab_launch_local.LocalKey())
            ran = lab_launch_spec.with_quota(part, answers.get(host, {}))
            parts[host] = launched_part(run, run.labs[host], part["found"], ran, key.created)
    return parts


def rotated(part: Part) -> bool:
    """Whether reconcile.yml removed the lab's key pair (to rotate it): it did when it was
    needed (a lab whose removal failed did not get this far); in check mode it would have."""
    return bool(part["reconcile"]["key_pair"])


def local_keys(run: Run, ready: dict[str, Part]) -> dict[str, lab_launch_local.LocalKey]:
    """The labs' keys that are needed, each file made (if missing) and read once. In check mode
    none is made, nor read (ssh-keygen is a command: it does not run in check mode)."""
    if run.check_mode:
        return {}
    files = [run.labs[h].key_file for h, part in ready.items()
             if lab_launch_spec.needs_key(run.labs[h], part["found"], rotated(part))]
    return lab_launch_local.make_keys(files)


def bring_up(run: Run, specs: dict[str, dict[str, Any]]) -> dict[str, Part]:
    """lab_host's answer for each lab of ``specs``, in one call for all of them."""
    if not specs:
        return {}
    try:
        answer = run.call("csdl.gpu_lab.lab_host", {"labs": list(specs.values())})
    except ModuleFailed as error:
        return {host: failed(str(error)) for host in specs}
    return {host: answer.get("labs", {}).get(spec["lab"]) or failed(f"Lab {spec['lab']} was not brought up.")
            for host, spec in specs.items()}


def launched_part(run: Run, lab: LabSettings, found: Part, ran: Part, key_created: bool) -> Part:
    published = lab_launch_spec.outcome(lab, found, ran, run.check_mode)
    note = lab_launch_spec.check_note(lab, ran, os.path.isfile(lab.key_file)) if run.check_mode else ""
    if ran.get("failed"):
        return failed(str(ran.get("msg", f"Lab {lab.name} could not be brought up.")), check_note=note, **published)
    try:
        recorded = record(run, lab, published["instance"])
    except OSError as error:
        return failed(f"Could not write the record of lab {lab.name} ({lab.record_file}): {error}", **published)
    return ok(bool(ran.get("changed")) or key_created or recorded, check_note=note, **published)


def record(run: Run, lab: LabSettings, instance: dict[str, Any]) -> bool:
    """Where the lab lives, for the runs that come without this one's -e (lab_settings reads
    it): written when it changed (not in check mode). Whether it changed."""
    if not instance:
        return False
    wanted = lab_launch_local.record_of(lab.name, lab.region, str(instance.get("id", "")))
    if lab.record == wanted:
        return False
    if not run.check_mode:
        lab_launch_local.write_record(lab.record_file, wanted)
    return True
