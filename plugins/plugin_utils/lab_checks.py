# Copyright: gpu_lab developers
# MIT License
"""The launch's checks, as pure functions: each problem is one sentence that says what to fix.

``settings_problems`` needs nothing but the lab's settings (and the regions botocore knows);
``aws_problems`` reads what csdl.gpu_lab.lab_info found of the lab, the state of its key file
on this machine and, for a lab whose SSH source is detected, what the address check answered.
The sentences and their order are the ones users (and tests/integration/test_bad_input.py) see.
"""

from __future__ import annotations

import html
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.csdl.gpu_lab.plugins.filter.file_mode import file_mode
from ansible_collections.csdl.gpu_lab.plugins.module_utils import dlami
from ansible_collections.csdl.gpu_lab.plugins.plugin_utils.lab_settings import LabSettings, as_bool, unique
from ansible_collections.csdl.gpu_lab.plugins.test.network import ipv4_cidr

LAB_NAME = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
INSTANCE_TYPE = r"^[a-z][a-z0-9-]*[.][a-z0-9]+$"
AMI_ID = r"^ami-[0-9a-f]{8,17}$"
WORLD = "0.0.0.0/0"
GOOD_KEY_MODES = ("", "400", "600")


def shown(value: Any) -> str:
    """A setting as a sentence quotes it: as given (text as it is, a list as Python prints it)."""
    return str(value)


def plural(items: list[str], many: str, one: str) -> str:
    return many if len(items) > 1 else one


# --- The host's and workstation's lab-wide settings (gpu_lab_*, used after the launch) --------

COURSE_URL = r"^((https?|ssh|git|file)://[^ ]+|[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^ ]+|/[^ ]+)$"
# A network URL is read from here (the host clones it later); a path is the host's own.
NETWORK_URL = r"^(https?|ssh|git)://|^[A-Za-z0-9_.-]+@"
COURSE_READ_TIMEOUT = 20  # seconds


@dataclass(frozen=True)
class Course:
    """The lab's course repository and branch, and whether it is read from this machine."""

    repo: str
    branch: str
    read: bool

    @classmethod
    def of(cls, lab: LabSettings) -> Course:
        repo, branch = _text(lab.given.get("course_repo")), _text(lab.given.get("course_branch"), "main")
        read = re.match(NETWORK_URL, repo) is not None and as_bool(lab.given.get("check_course_repo", True))
        return cls(repo=repo, branch=branch, read=read)


@dataclass(frozen=True)
class CourseRead:
    """What `git ls-remote --exit-code --heads REPO BRANCH` said (rc 2: no such branch)."""

    rc: int
    stderr: str = ""


def lab_wide_problems(lab: LabSettings, course_read: CourseRead | None) -> list[str]:
    """What is wrong with the lab-wide settings the host and workstation roles use later
    (course_read: the course's read from here, None when it was not read)."""
    given = lab.given
    port, idle, daily = given.get("jupyter_port", 8888), given.get("idle_minutes", 60), given.get("daily_stop", "")
    course = Course.of(lab)
    problems = []
    if not (re.match(r"^[0-9]{1,5}$", str(port)) and 1024 <= int(str(port)) <= 65535):
        problems.append(f"Jupyter port '{port}' is not valid: set gpu_lab_jupyter_port to a whole number from "
                        "1024 to 65535 (8888 is usual).")
    if course.repo and not re.match(COURSE_URL, course.repo):
        problems.append(f"Course repository '{course.repo}' is not a git URL: set gpu_lab_course_repo like "
                        'https://github.com/org/course.git or git@github.com:org/course.git, or to "" for none.')
    if not re.match(r"^[A-Za-z0-9._/-]+$", course.branch):
        problems.append(f"Course branch '{course.branch}' is not a branch name: set gpu_lab_course_branch "
                        "(main, master...).")
    if not re.match(r"^[0-9]+([.][0-9]+)?$", str(idle)):
        problems.append(f"Idle minutes '{idle}' is not valid: set gpu_lab_idle_minutes to a number of minutes "
                        "(60), or 0 to turn idle auto-stop off.")
    if not (isinstance(daily, str) and re.match(r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$", daily)):
        problems.append(f"Daily stop '{daily}' is not a time: set gpu_lab_daily_stop to a quoted 24-hour time "
                        'such as "23:00", or to "" for none.')
    if course_read is not None and course_read.rc != 0:
        problems.append(course_problem(course, course_read))
    return problems


def course_problem(course: Course, read: CourseRead) -> str:
    if read.rc == 2:
        return (f"Course repository {course.repo} has no branch '{course.branch}': set gpu_lab_course_branch "
                "to one of its branches.")
    lines = read.stderr.strip().splitlines()
    why = lines[-1] if lines else f"no answer within {COURSE_READ_TIMEOUT} s"
    return (f"Could not read the course repository {course.repo} from this machine ({why}): check the URL in "
            "gpu_lab_course_repo; if the host can read it but this machine cannot, add "
            "-e gpu_lab_check_course_repo=false.")


def _text(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


# --- Offline: the settings themselves ------------------------------------------------------

def settings_problems(lab: LabSettings, regions: list[str]) -> list[str]:
    """What is wrong with the lab's settings, before AWS is asked anything (in this order)."""
    given = lab.given
    fallbacks = given.get("fallback_instance_types", lab.fallback_instance_types)
    zones = given.get("zones", lab.zones)
    problems = []
    if not re.match(LAB_NAME, lab.name):
        problems.append(f"Lab name '{lab.name}' is not valid: set gpu_lab_name to 2-32 lowercase letters, "
                        "digits and hyphens, starting with a letter.")
    if lab.region not in regions:
        problems.append(f"Region '{lab.region}' is not an AWS region: set gpu_lab_region to one such as "
                        "us-east-1, us-west-2 or eu-west-1.")
    if not re.match(INSTANCE_TYPE, lab.instance_type):
        problems.append(f"Instance type '{lab.instance_type}' is not valid: set gpu_lab_instance_type to "
                        "a type such as g6.xlarge.")
    if any(not re.match(INSTANCE_TYPE, t) for t in lab.fallback_instance_types):
        problems.append(f"Fallback instance types {shown(fallbacks)} are not valid: set "
                        "gpu_lab_fallback_instance_types to a list of types such as [g5.xlarge, g4dn.xlarge], "
                        "or [] for none.")
    if any(not re.match(f"^{re.escape(lab.region)}[a-z]$", z) for z in lab.zones):
        problems.append(f"Zones {shown(zones)} are not all zones of {lab.region}: set gpu_lab_zones to a "
                        f"list such as [{lab.region}a, {lab.region}b], or [] for every zone offering the type.")
    if not volume_size_ok(lab.volume_size):
        problems.append(f"Volume size '{shown(lab.volume_size)}' is not valid: set gpu_lab_volume_size to a "
                        "whole number of GiB, at least the AMI's size (75 for the PyTorch Deep Learning AMI).")
    if lab.ami_id and not re.match(AMI_ID, lab.ami_id):
        problems.append(f"AMI id '{lab.ami_id}' is not valid: set gpu_lab_ami_id to an id like "
                        "ami-0123456789abcdef0, or to '' for the latest Deep Learning AMI.")
    bad_cidrs = [c for c in lab.ssh_cidrs if not ipv4_cidr(c)]
    if bad_cidrs:
        quoted = "', '".join(bad_cidrs)
        problems.append(f"SSH source '{quoted}' is not an IPv4 network in CIDR form: set "
                        "gpu_lab_ssh_cidr like 203.0.113.7/32 (or a list of such), or to '' to detect this "
                        "machine's address.")
    if WORLD in lab.ssh_cidrs and not lab.allow_world_ssh:
        problems.append("SSH source 0.0.0.0/0 opens the server to the whole internet: set gpu_lab_ssh_cidr to "
                        "your address (/32), or add -e gpu_lab_allow_world_ssh=true if you really mean it.")
    return problems + market_problems(lab)


MARKETS = ("on-demand", "spot")


def market_problems(lab: LabSettings) -> list[str]:
    """gpu_lab_market and the spot price cap."""
    problems = []
    if lab.market not in MARKETS:
        problems.append(f"Market '{lab.given.get('market', lab.market)}' is not valid: set gpu_lab_market to "
                        "on-demand or spot.")
    if lab.spot_max_price and not price_ok(lab.spot_max_price):
        problems.append(f"Spot price cap '{lab.spot_max_price}' is not valid: set gpu_lab_spot_max_price to a "
                        "price in USD per hour such as 0.40, or to '' to pay up to the on-demand price.")
    return problems


def price_ok(text: str) -> bool:
    """A positive price in USD with at most 6 decimals (what EC2's MaxPrice takes)."""
    return re.match(r"^([0-9]+|[0-9]*\.[0-9]{1,6})$", text) is not None and float(text) > 0


def volume_size_ok(value: Any) -> bool:
    text = str(value)
    return re.match(r"^[0-9]+$", text) is not None and 8 <= int(text) <= 16384


# --- This machine: the key file, the address check -----------------------------------------

@dataclass(frozen=True)
class KeyFile:
    """The lab's private key file on this machine, as the checks need it."""

    mode: str          # its permission bits ("400"), "" when there is no such file
    folder_is_file: bool  # its folder exists and is not a directory: the key cannot be made there

    @classmethod
    def of(cls, path: str) -> KeyFile:
        folder = os.path.dirname(path)
        return cls(mode=file_mode(path), folder_is_file=os.path.exists(folder) and not os.path.isdir(folder))


@dataclass(frozen=True)
class IpCheck:
    """What the address check answered: its body (content), HTTP status and Content-Type, or
    why it did not answer (msg: 'connection refused', 'no answer within 5 s'...); url, the
    check asked. status 0: no HTTP answer (or not said)."""

    content: str = ""
    msg: str = ""
    status: int = 0
    content_type: str = ""
    url: str = ""

    @property
    def cidr(self) -> str:
        return self.content.strip() + "/32"

    @property
    def kind(self) -> str:
        """'ipv4' (the answer wanted), 'ipv6', 'page' (a web page: a captive portal's login),
        'text' (an answer that is no address, or an empty one) or 'none' (no answer, or an
        HTTP error)."""
        text = self.content.strip()
        if self.status == 511 or (self.status in (0, 200) and looks_like_page(self.content, self.content_type)):
            return "page"  # 511: Network Authentication Required, a captive portal's status (RFC 6585)
        if self.status not in (0, 200) or (not self.status and not text):
            return "none"
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return "text"
        return "ipv4" if address.version == 4 else "ipv6"


PAGE_MARK = re.compile(r"<\s*(!doctype\s+html|html|head|body|title|meta|script|form|div|p|a)\b", re.IGNORECASE)
PAGE_TYPES = ("text/html", "application/xhtml+xml")


def looks_like_page(content: str, content_type: str = "") -> bool:
    """An HTML page, by its Content-Type or by its first tags."""
    return content_type.split(";")[0].strip().lower() in PAGE_TYPES or bool(PAGE_MARK.search(content[:4096]))


def page_title(content: str) -> str:
    found = re.search(r"<title[^>]*>(.*?)</title>", content[:16384], re.IGNORECASE | re.DOTALL)
    return excerpt(html.unescape(found.group(1))) if found else ""


def excerpt(text: str, most: int = 60) -> str:
    """text on one line, control characters out, cut to most characters: never a whole page."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= most else line[:most - 3].rstrip() + "..."


def ssh_cidrs(lab: LabSettings, ip: IpCheck) -> list[str]:
    """The SSH sources: the lab's own, else this machine's detected address."""
    return lab.ssh_cidrs or [ip.cidr]


def ingress(cidrs: list[str]) -> list[dict[str, Any]]:
    """The security group's one rule, as lab_info describes it."""
    return [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": sorted(unique(cidrs)),
             "ipv6_cidrs": [], "groups": 0}]


# --- What AWS and this machine say -----------------------------------------------------------

def aws_problems(lab: LabSettings, found: dict[str, Any], key: KeyFile, ip: IpCheck) -> list[str]:
    """What stops the lab from being launched as set, in this order (found = lab_info's answer
    for the lab, with failed/msg when AWS could not be read)."""
    if found.get("failed"):
        return [str(found.get("msg", ""))]
    return [*type_problems(lab, found), *elsewhere_problems(lab, found), *(found.get("drift") or {}).get("refuse", []),
            *new_instance_problems(lab, found), *image_problems(lab, found), *key_problems(lab, found, key),
            *ip_problems(lab, ip)]


def type_problems(lab: LabSettings, found: dict[str, Any]) -> list[str]:
    missing = [str(t["name"]) for t in found.get("instance_types", []) if not t.get("exists")]
    if not missing:
        return []
    if missing[0] == lab.instance_type:
        return [f"Instance type '{lab.instance_type}' does not exist in {lab.region}: set gpu_lab_instance_type "
                "to a GPU type offered there, such as g6.xlarge or g5.xlarge."]
    return [f"Fallback instance type{plural(missing, 's', '')} {', '.join(missing)} "
            f"{plural(missing, 'do', 'does')} not exist in {lab.region}: fix gpu_lab_fallback_instance_types "
            "(for example [g5.xlarge, g4dn.xlarge])."]


def elsewhere_problems(lab: LabSettings, found: dict[str, Any]) -> list[str]:
    """A lab is one lab: an instance where this machine launched it, in another region."""
    return [f"Lab {lab.name} already has an instance in {other['region']} ({other['instance']['id']}, "
            f"{other['instance']['state']}), and gpu_lab_region is {lab.region}: a lab is one lab. Keep "
            f"gpu_lab_region at {other['region']}, or to move it, push your work and run teardown.yml "
            f"-e gpu_lab_region={other['region']}, then launch.yml -e gpu_lab_region={lab.region}."
            for other in found.get("elsewhere") or []]


def new_instance_problems(lab: LabSettings, found: dict[str, Any]) -> list[str]:
    """A new instance: every candidate type must run the image (AWS refuses another
    architecture at RunInstances) and have a GPU, unless a GPU-less lab is wanted."""
    if found.get("instance"):
        return []
    present = [t for t in found.get("instance_types", []) if t.get("exists")]
    image = found.get("image") or {}
    arch = str(image.get("architecture", ""))
    problems = []
    misfit = [t for t in present if arch not in t.get("architectures", [])] if arch else []
    if misfit and lab.ami_id:
        names = [str(t["name"]) for t in misfit]
        theirs = unique(a for t in misfit for a in t.get("architectures", []))
        problems.append(f"The image gpu_lab_ami_id pins, {image.get('image_id')}, is {arch}, and instance "
                        f"type{plural(names, 's', '')} {', '.join(names)} {plural(names, 'run', 'runs')} "
                        f"{'/'.join(theirs)}: set gpu_lab_ami_id to an image of that architecture, or to '' for "
                        "the latest Deep Learning AMI of the type's architecture; nothing was created.")
    elif misfit:
        names = [str(t["name"]) for t in misfit]
        theirs = unique(a for t in misfit for a in t.get("architectures", []))
        problems.append(f"Instance type{plural(names, 's', '')} {', '.join(names)} cannot run the image "
                        f"{image.get('image_id')} ({arch}; {', '.join(names)} {plural(names, 'run', 'runs')} "
                        f"{'/'.join(theirs)}): choose types of the same architecture in gpu_lab_instance_type "
                        "and gpu_lab_fallback_instance_types, or an image for that architecture (gpu_lab_ami_id).")
    gpuless = [str(t["name"]) for t in present if "gpu_count" in t and t["gpu_count"] == 0]
    if gpuless and not lab.allow_no_gpu:
        problems.append(f"Instance type{plural(gpuless, 's', '')} {', '.join(gpuless)} "
                        f"{plural(gpuless, 'have', 'has')} no GPU: choose a GPU type such as g6.xlarge, or add "
                        "-e gpu_lab_allow_no_gpu=true to launch a lab without a GPU on purpose.")
    return problems


def image_problems(lab: LabSettings, found: dict[str, Any]) -> list[str]:
    if found.get("instance"):
        return []
    image = found.get("image") or {}
    if not image and lab.ami_id:
        return [f"AMI {lab.ami_id} does not exist in {lab.region} (an AMI id belongs to one region): set "
                "gpu_lab_ami_id to an image of this region, or to '' for the latest Deep Learning AMI."]
    if not image:
        arch = dlami.architecture_of(list(found.get("instance_types") or []))
        return [f"No Deep Learning AMI found in {lab.region} for the line '{lab.dlami_line}' on {arch} (SSM "
                f"{lab.ssm_parameter(arch)}; by the name pattern '{lab.ami_name_pattern}' when SSM cannot be "
                f"read): set gpu_lab_dlami to latest or to a line published for {arch} (aws ssm "
                f"get-parameters-by-path --path /aws/service/deeplearning/ami/{arch} --recursive), or gpu_lab_ami_id "
                "to an image id."]
    root = _int(image.get("root_size_gib"))
    if _int(lab.volume_size) < root:
        return [f"Volume size {shown(lab.volume_size)} GiB is smaller than the AMI's {root} GiB snapshot: set "
                f"gpu_lab_volume_size to {root} or more."]
    return []


def key_problems(lab: LabSettings, found: dict[str, Any], key: KeyFile) -> list[str]:
    problems = []
    if (not lab.key_pair_public_key and found.get("key_pair") and not key.mode and not lab.rotate_key):
        if found.get("instance"):
            fix = ("or, if it is lost, run ansible-playbook recover_key.yml: a new key opens the same instance, "
                   "with its disk and address kept")
        else:
            fix = "or run with -e gpu_lab_rotate_key=true to replace the key pair (the lab has no instance yet)"
        problems.append(f"Key pair {lab.key_name} exists in {lab.region} but its private key {lab.key_file} is "
                        f"missing: copy it back there (chmod 400), {fix}.")
    # A lab whose key pair is someone else's (a student's) is reached with the key its first
    # boot authorized (the class admin key): without it, nobody can configure it.
    if lab.key_pair_public_key and found.get("instance") and not key.mode:
        problems.append(f"Lab {lab.name} has an instance, reached by its first boot's key {lab.key_file}, and "
                        "that file is missing: copy it back there (chmod 400). Its student can still connect "
                        "with their own key.")
    # The key is made on this machine after AWS has been changed: its folder must take it.
    if key.folder_is_file:
        folder = os.path.dirname(lab.key_file)
        problems.append(f"{folder} is a file, not a directory: move it out of the way (mv {folder} "
                        f"{folder}.old) and run again.")
    # ssh refuses a private key others can read: say so now, not at the first connection.
    if key.mode not in GOOD_KEY_MODES:
        problems.append(f"The private key {lab.key_file} can be read by others (mode {key.mode}), and ssh "
                        f"refuses such a key: run chmod 400 {lab.key_file}.")
    return problems


def ip_problems(lab: LabSettings, ip: IpCheck) -> list[str]:
    """What the address check's answer stops, for a lab whose SSH source is detected: one
    sentence for each way it goes wrong (an IPv6 address, a web page, another text, none)."""
    kind = ip.kind
    if lab.ssh_cidrs or (kind == "ipv4" and ipv4_cidr(ip.cidr)):
        return []
    url = ip.url or lab.ip_check_url
    start = f"Could not detect this machine's public IPv4 address: the address check {url}"
    set_it = "set gpu_lab_ssh_cidr to your public IPv4 address as a /32, e.g. -e gpu_lab_ssh_cidr=203.0.113.7/32"
    if kind == "ipv6":
        return [f"{start} answered with the IPv6 address {ip.content.strip()}, and the security group's SSH rule "
                "needs an IPv4 address (your network seems IPv6-only, or the check answered over IPv6), so nothing "
                f"was created: {set_it}."]
    if kind == "page":
        title = page_title(ip.content)
        shown_page = f" ('{title}')" if title else ""
        status = f" (HTTP {ip.status})" if ip.status not in (0, 200) else ""
        return [f"{start} answered with a web page{shown_page}{status} instead of an address, as a Wi-Fi captive "
                "portal does until you log in, so nothing was created: open a browser, log in to the network and "
                f"run again, or {set_it}."]
    if kind == "text":
        said = f"'{excerpt(ip.content)}'" if ip.content.strip() else "with an empty page"
        return [f"{start} answered {said}, which is not an IP address, so nothing was created: {set_it}, or "
                "gpu_lab_ip_check_url to a URL that answers with the address alone, such as "
                "https://checkip.amazonaws.com."]
    why = f"answered {ip.msg}" if ip.status else f"did not answer ({ip.msg or 'no answer'})"
    return [f"{start} {why}, so nothing was created: {set_it}, or gpu_lab_ip_check_url to an address check "
            "this machine can reach."]


def _int(value: Any) -> int:
    """A number as Jinja's int filter reads it (0 when it is none)."""
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(float(str(value)))
        except ValueError:
            return 0


# --- What an existing lab needs brought in line (reconcile.yml) ------------------------------

def reconcile(lab: LabSettings, found: dict[str, Any], cidrs: list[str], key: KeyFile) -> dict[str, bool]:
    """Which of reconcile.yml's tasks the lab needs: rarely any (a moved workstation, a lost
    key, changed settings)."""
    group = found.get("security_group") or {}
    instance = found.get("instance") or {}
    tags = instance.get("tags") or {}
    needs = {
        "security_group": bool(group) and group.get("ingress") != ingress(cidrs),
        "key_pair": lab.rotate_key and bool(found.get("key_pair")) and not key.mode,
        "instance_tags": bool(instance) and any(tags.get(k) != v for k, v in lab.recorded_tags.items()),
    }
    return needs | {"needed": any(needs.values())}
