"""lab_checks: each problem of a launch is one sentence, the one users have always seen, in the
same order (the lab-wide settings, the role's settings, then what AWS and this machine say)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

REGIONS = ["eu-west-1", "us-east-1", "us-west-2"]
GPU = {"name": "g6.xlarge", "exists": True, "gpu_count": 1, "architectures": ["x86_64"]}
IMAGE = {"image_id": "ami-0123456789abcdef0", "architecture": "x86_64", "root_size_gib": 75,
         "root_device_name": "/dev/sda1"}


@pytest.fixture
def checks(plugin):
    return plugin("plugin_utils.lab_checks")


@pytest.fixture
def lab_of(plugin, tmp_path: Path):
    settings = plugin("plugin_utils.lab_settings")

    def make(**given: Any):
        values = {"ec2_gpu_host_lab_name": "csdl", "ec2_gpu_host_region": "us-east-1",
                  "ec2_gpu_host_instance_type": "g6.xlarge", "ec2_gpu_host_fallback_instance_types": [],
                  "ec2_gpu_host_home": str(tmp_path), "ec2_gpu_host_ssh_cidr": "198.51.100.7/32",
                  "ec2_gpu_host_key_file": str(tmp_path / ".ssh" / "csdl-server.pem"),
                  "ec2_gpu_host_dlami": "line", "ec2_gpu_host_ami_name_pattern": "DL *",
                  "ec2_gpu_host_ip_check_url": "https://checkip.example"}
        return settings.settings_of("localhost", values | {k if k.startswith("gpu_lab_") else f"ec2_gpu_host_{k}": v
                                                           for k, v in given.items()})
    return make


def found_of(**more: Any) -> dict[str, Any]:
    return {"failed": False, "instance": {}, "addresses": [], "security_group": {}, "key_pair": {},
            "instance_types": [GPU], "image": IMAGE, "drift": {"apply": {}, "refuse": [], "notes": []},
            "elsewhere": []} | more


def no_key(checks):
    return checks.KeyFile(mode="", folder_is_file=False)


# --- The role's settings, offline -------------------------------------------------------------

SETTINGS_CASES = [
    ({"lab_name": "CSDL_lab!"}, "Lab name 'CSDL_lab!' is not valid: set gpu_lab_name to 2-32 lowercase letters, "
     "digits and hyphens, starting with a letter."),
    ({"lab_name": "a" * 40}, f"Lab name '{'a' * 40}' is not valid: set gpu_lab_name to 2-32 lowercase letters, "
     "digits and hyphens, starting with a letter."),
    ({"region": "us-easst-1"}, "Region 'us-easst-1' is not an AWS region: set gpu_lab_region to one such as "
     "us-east-1, us-west-2 or eu-west-1."),
    ({"instance_type": ""}, "Instance type '' is not valid: set gpu_lab_instance_type to a type such as g6.xlarge."),
    ({"fallback_instance_types": "g5.xlarge,big"}, "Fallback instance types g5.xlarge,big are not valid: set "
     "gpu_lab_fallback_instance_types to a list of types such as [g5.xlarge, g4dn.xlarge], or [] for none."),
    ({"fallback_instance_types": ["g5.xlarge", "big"]}, "Fallback instance types ['g5.xlarge', 'big'] are not valid: "
     "set gpu_lab_fallback_instance_types to a list of types such as [g5.xlarge, g4dn.xlarge], or [] for none."),
    ({"zones": "us-west-2a"}, "Zones us-west-2a are not all zones of us-east-1: set gpu_lab_zones to a list such as "
     "[us-east-1a, us-east-1b], or [] for every zone offering the type."),
    ({"volume_size": "lots"}, "Volume size 'lots' is not valid: set gpu_lab_volume_size to a whole number of GiB, "
     "at least the AMI's size (75 for the PyTorch Deep Learning AMI)."),
    ({"volume_size": 4}, "Volume size '4' is not valid: set gpu_lab_volume_size to a whole number of GiB, "
     "at least the AMI's size (75 for the PyTorch Deep Learning AMI)."),
    ({"ami_id": "ubuntu"}, "AMI id 'ubuntu' is not valid: set gpu_lab_ami_id to an id like ami-0123456789abcdef0, "
     "or to '' for the latest Deep Learning AMI."),
    ({"ssh_cidr": "203.0.113.300/32,203.0.113.7/24"}, "SSH source '203.0.113.300/32', '203.0.113.7/24' is not an "
     "IPv4 network in CIDR form: set gpu_lab_ssh_cidr like 203.0.113.7/32 (or a list of such), or to '' to detect "
     "this machine's address."),
    ({"ssh_cidr": "0.0.0.0/0"}, "SSH source 0.0.0.0/0 opens the server to the whole internet: set gpu_lab_ssh_cidr "
     "to your address (/32), or add -e gpu_lab_allow_world_ssh=true if you really mean it."),
    ({"market": "Spot-Instance"}, "Market 'Spot-Instance' is not valid: set gpu_lab_market to on-demand or spot."),
    *(({"market": "spot", "spot_max_price": bad}, f"Spot price cap '{bad}' is not valid: set gpu_lab_spot_max_price "
       "to a price in USD per hour such as 0.40, or to '' to pay up to the on-demand price.")
      for bad in ("$0.40", "0", "-1", "0.1234567", "1.2.3", "cheap")),
]


@pytest.mark.parametrize(("given", "sentence"), SETTINGS_CASES)
def test_each_bad_setting_is_one_sentence(checks, lab_of, given: dict[str, Any], sentence: str) -> None:
    assert checks.settings_problems(lab_of(**given), REGIONS) == [sentence]


def test_good_settings_have_no_problem(checks, lab_of) -> None:
    assert checks.settings_problems(lab_of(zones="us-east-1a,us-east-1b", volume_size="100",
                                           ami_id="ami-0123456789abcdef0"), REGIONS) == []
    assert checks.settings_problems(lab_of(ssh_cidr="0.0.0.0/0", allow_world_ssh="true"), REGIONS) == []
    for price in ("", "0.40", "1", ".5", "0.123456"):
        assert checks.settings_problems(lab_of(market="SPOT", spot_max_price=price), REGIONS) == []


def test_settings_problems_come_in_order_joined_by_the_caller(checks, lab_of) -> None:
    problems = checks.settings_problems(lab_of(lab_name="X", volume_size="lots", ssh_cidr="0.0.0.0/0"), REGIONS)
    assert [p.split(" ")[0] for p in problems] == ["Lab", "Volume", "SSH"]


# --- The lab-wide settings of the host and workstation ------------------------------------------

LAB_WIDE_CASES = [
    ({"gpu_lab_jupyter_port": "70000"}, "Jupyter port '70000' is not valid: set gpu_lab_jupyter_port to a whole "
     "number from 1024 to 65535 (8888 is usual)."),
    ({"gpu_lab_jupyter_port": 80}, "Jupyter port '80' is not valid: set gpu_lab_jupyter_port to a whole "
     "number from 1024 to 65535 (8888 is usual)."),
    ({"gpu_lab_course_repo": "course.git"}, "Course repository 'course.git' is not a git URL: set "
     'gpu_lab_course_repo like https://github.com/org/course.git or git@github.com:org/course.git, or to "" for none.'),
    ({"gpu_lab_course_branch": "a b"}, "Course branch 'a b' is not a branch name: set gpu_lab_course_branch "
     "(main, master...)."),
    ({"gpu_lab_idle_minutes": "1h"}, "Idle minutes '1h' is not valid: set gpu_lab_idle_minutes to a number of "
     "minutes (60), or 0 to turn idle auto-stop off."),
    ({"gpu_lab_daily_stop": "25:00"}, "Daily stop '25:00' is not a time: set gpu_lab_daily_stop to a quoted 24-hour "
     'time such as "23:00", or to "" for none.'),
    # YAML reads an unquoted 23:00 as a number (1380): it must be quoted.
    ({"gpu_lab_daily_stop": 1380}, "Daily stop '1380' is not a time: set gpu_lab_daily_stop to a quoted 24-hour "
     'time such as "23:00", or to "" for none.'),
]


@pytest.mark.parametrize(("given", "sentence"), LAB_WIDE_CASES)
def test_each_bad_lab_wide_setting_is_one_sentence(checks, lab_of, given: dict[str, Any], sentence: str) -> None:
    assert checks.lab_wide_problems(lab_of(**given), None) == [sentence]


def test_lab_wide_defaults_and_good_values_pass(checks, lab_of) -> None:
    assert checks.lab_wide_problems(lab_of(), None) == []
    good = lab_of(gpu_lab_jupyter_port=8888, gpu_lab_course_repo="git@github.com:org/course.git",
                  gpu_lab_course_branch="release/1.0", gpu_lab_idle_minutes="7.5", gpu_lab_daily_stop="23:00")
    assert checks.lab_wide_problems(good, checks.CourseRead(rc=0)) == []


def test_the_course_is_read_only_when_it_is_a_network_url_and_wanted(checks, lab_of) -> None:
    assert checks.Course.of(lab_of(gpu_lab_course_repo="https://example.org/c.git")).read
    assert checks.Course.of(lab_of(gpu_lab_course_repo="git@example.org:c.git")).read
    assert not checks.Course.of(lab_of(gpu_lab_course_repo="/srv/course")).read
    assert not checks.Course.of(lab_of()).read
    assert not checks.Course.of(lab_of(gpu_lab_course_repo="https://example.org/c.git",
                                       gpu_lab_check_course_repo="false")).read


def test_the_course_read_says_what_failed(checks, lab_of) -> None:
    lab = lab_of(gpu_lab_course_repo="https://127.0.0.1:9/course.git", gpu_lab_course_branch="spring")
    assert checks.lab_wide_problems(lab, checks.CourseRead(rc=2)) == [
        "Course repository https://127.0.0.1:9/course.git has no branch 'spring': set gpu_lab_course_branch to "
        "one of its branches."]
    refused = checks.CourseRead(rc=128, stderr="warning: x\nfatal: unable to access: Connection refused\n")
    assert checks.lab_wide_problems(lab, refused) == [
        "Could not read the course repository https://127.0.0.1:9/course.git from this machine (fatal: unable to "
        "access: Connection refused): check the URL in gpu_lab_course_repo; if the host can read it but this "
        "machine cannot, add -e gpu_lab_check_course_repo=false."]
    assert "(no answer within 20 s)" in checks.lab_wide_problems(lab, checks.CourseRead(rc=124))[0]


# --- What AWS and this machine say ------------------------------------------------------------

def test_aws_could_not_be_read_is_the_only_problem(checks, lab_of) -> None:
    found = {"failed": True, "msg": "No working AWS credentials were found."}
    assert checks.aws_problems(lab_of(), found, no_key(checks), checks.IpCheck()) == [found["msg"]]


def test_unknown_types(checks, lab_of) -> None:
    gone = {"exists": False, "gpu_count": 0, "architectures": []}
    lab = lab_of(instance_type="g9.huge", fallback_instance_types=["g5.xlarge"])
    found = found_of(instance_types=[{"name": "g9.huge", **gone}, GPU | {"name": "g5.xlarge"}])
    assert checks.type_problems(lab, found) == [
        "Instance type 'g9.huge' does not exist in us-east-1: set gpu_lab_instance_type to a GPU type offered "
        "there, such as g6.xlarge or g5.xlarge."]
    found = found_of(instance_types=[GPU, {"name": "g9.huge", **gone}])
    assert checks.type_problems(lab_of(), found) == [
        "Fallback instance type g9.huge does not exist in us-east-1: fix gpu_lab_fallback_instance_types "
        "(for example [g5.xlarge, g4dn.xlarge])."]
    found = found_of(instance_types=[GPU, {"name": "g9.huge", **gone}, {"name": "g9.big", **gone}])
    assert checks.type_problems(lab_of(), found) == [
        "Fallback instance types g9.huge, g9.big do not exist in us-east-1: fix gpu_lab_fallback_instance_types "
        "(for example [g5.xlarge, g4dn.xlarge])."]


def test_a_lab_is_one_lab(checks, lab_of) -> None:
    found = found_of(elsewhere=[{"region": "us-west-2", "instance": {"id": "i-0def", "state": "stopped"}}])
    assert checks.elsewhere_problems(lab_of(), found) == [
        "Lab csdl already has an instance in us-west-2 (i-0def, stopped), and gpu_lab_region is us-east-1: a lab is "
        "one lab. Keep gpu_lab_region at us-west-2, or to move it, push your work and run teardown.yml "
        "-e gpu_lab_region=us-west-2, then launch.yml -e gpu_lab_region=us-east-1."]


def test_drift_refused_is_said_as_lab_info_says_it(checks, lab_of) -> None:
    found = found_of(instance={"id": "i-1", "state": "running"}, image={},
                     drift={"apply": {}, "refuse": ["A volume cannot shrink."], "notes": []})
    assert checks.aws_problems(lab_of(), found, checks.KeyFile("400", False), checks.IpCheck()) == [
        "A volume cannot shrink."]


def test_a_new_instance_needs_the_image_architecture_and_a_gpu(checks, lab_of) -> None:
    arm = {"name": "g5g.xlarge", "exists": True, "gpu_count": 1, "architectures": ["arm64"]}
    cpu = {"name": "m5.xlarge", "exists": True, "gpu_count": 0, "architectures": ["x86_64"]}
    cpu2 = cpu | {"name": "t3.xlarge"}
    assert checks.new_instance_problems(lab_of(), found_of(instance_types=[arm])) == [
        "Instance type g5g.xlarge cannot run the image ami-0123456789abcdef0 (x86_64; g5g.xlarge runs arm64): "
        "choose types of the same architecture in gpu_lab_instance_type and gpu_lab_fallback_instance_types, "
        "or an image for that architecture (gpu_lab_ami_id)."]
    two_arm = [arm, arm | {"name": "g5g.2xlarge", "architectures": ["arm64", "arm64e"]}]
    assert "Instance types g5g.xlarge, g5g.2xlarge cannot run the image ami-0123456789abcdef0 (x86_64; " \
           "g5g.xlarge, g5g.2xlarge run arm64/arm64e):" in checks.new_instance_problems(
               lab_of(), found_of(instance_types=two_arm))[0]
    assert checks.new_instance_problems(lab_of(), found_of(instance_types=[cpu])) == [
        "Instance type m5.xlarge has no GPU: choose a GPU type such as g6.xlarge, or add "
        "-e gpu_lab_allow_no_gpu=true to launch a lab without a GPU on purpose."]
    assert checks.new_instance_problems(lab_of(), found_of(instance_types=[GPU, cpu, cpu2]))[0].startswith(
        "Instance types m5.xlarge, t3.xlarge have no GPU:")
    assert checks.new_instance_problems(lab_of(allow_no_gpu=True), found_of(instance_types=[cpu])) == []
    # A lab that exists keeps its instance: nothing to say about new ones.
    assert checks.new_instance_problems(lab_of(), found_of(instance={"id": "i-1"}, instance_types=[arm])) == []
    # A pinned image id that does not fit the type: one sentence that names the setting.
    pinned = lab_of(ami_id="ami-0123456789abcdef0", instance_type="g5g.xlarge")
    assert checks.new_instance_problems(pinned, found_of(instance_types=[arm])) == [
        "The image gpu_lab_ami_id pins, ami-0123456789abcdef0, is x86_64, and instance type g5g.xlarge runs arm64: "
        "set gpu_lab_ami_id to an image of that architecture, or to '' for the latest Deep Learning AMI of the "
        "type's architecture; nothing was created."]
    assert checks.new_instance_problems(pinned, found_of(instance_types=[arm], image=IMAGE | {
        "architecture": "arm64"})) == []


def test_the_image(checks, lab_of) -> None:
    assert checks.image_problems(lab_of(ami_id="ami-0aaaaaaaaaaaaaaaa"), found_of(image={})) == [
        "AMI ami-0aaaaaaaaaaaaaaaa does not exist in us-east-1 (an AMI id belongs to one region): set gpu_lab_ami_id "
        "to an image of this region, or to '' for the latest Deep Learning AMI."]
    assert checks.image_problems(lab_of(), found_of(image={})) == [
        "No Deep Learning AMI found in us-east-1 for the line 'line' on x86_64 (SSM "
        "/aws/service/deeplearning/ami/x86_64/line/latest/ami-id; by the name pattern 'DL *' when SSM cannot be "
        "read): set gpu_lab_dlami to latest or to a line published for x86_64 (aws ssm get-parameters-by-path "
        "--path /aws/service/deeplearning/ami/x86_64 --recursive), or gpu_lab_ami_id to an image id."]
    # For an arm64 type, the arm64 lines; for latest, the path of every line.
    arm = {"name": "g5g.xlarge", "exists": True, "gpu_count": 1, "architectures": ["arm64"]}
    said = checks.image_problems(lab_of(dlami="latest", instance_type="g5g.xlarge"),
                                 found_of(image={}, instance_types=[arm]))[0]
    assert said.startswith("No Deep Learning AMI found in us-east-1 for the line 'latest' on arm64 (SSM "
                           "/aws/service/deeplearning/ami/arm64/;"), said
    assert checks.image_problems(lab_of(volume_size="40"), found_of()) == [
        "Volume size 40 GiB is smaller than the AMI's 75 GiB snapshot: set gpu_lab_volume_size to 75 or more."]
    assert checks.image_problems(lab_of(volume_size="75"), found_of()) == []
    assert checks.image_problems(lab_of(volume_size="40"), found_of(instance={"id": "i-1"}, image={})) == []


def test_the_key_file(checks, lab_of, tmp_path: Path) -> None:
    key = str(tmp_path / ".ssh" / "csdl-server.pem")
    with_pair = found_of(key_pair={"name": "csdl-server"})
    assert checks.key_problems(lab_of(), with_pair, no_key(checks)) == [
        f"Key pair csdl-server exists in us-east-1 but its private key {key} is missing: copy it back there "
        "(chmod 400), or run with -e gpu_lab_rotate_key=true to replace the key pair (the lab has no instance yet)."]
    with_instance = found_of(key_pair={"name": "csdl-server"}, instance={"id": "i-1"})
    assert checks.key_problems(lab_of(), with_instance, no_key(checks)) == [
        f"Key pair csdl-server exists in us-east-1 but its private key {key} is missing: copy it back there "
        "(chmod 400), or, if it is lost, run ansible-playbook recover_key.yml: a new key opens the same instance, "
        "with its disk and address kept."]
    assert checks.key_problems(lab_of(rotate_key="true"), with_pair, no_key(checks)) == []
    student = lab_of(key_pair_public_key="ssh-ed25519 AAAA student")
    assert checks.key_problems(student, found_of(instance={"id": "i-1"}, key_pair={"name": "x"}), no_key(checks)) == [
        f"Lab csdl has an instance, reached by its first boot's key {key}, and that file is missing: copy it back "
        "there (chmod 400). Its student can still connect with their own key."]
    folder = str(tmp_path / ".ssh")
    assert checks.key_problems(lab_of(), found_of(), checks.KeyFile("", True)) == [
        f"{folder} is a file, not a directory: move it out of the way (mv {folder} {folder}.old) and run again."]
    assert checks.key_problems(lab_of(), found_of(), checks.KeyFile("644", False)) == [
        f"The private key {key} can be read by others (mode 644), and ssh refuses such a key: run chmod 400 {key}."]
    assert checks.key_problems(lab_of(), found_of(), checks.KeyFile("600", False)) == []


def test_the_key_file_as_found_on_disk(checks, tmp_path: Path) -> None:
    (tmp_path / "folder").write_text("")
    assert checks.KeyFile.of(str(tmp_path / "folder" / "k.pem")) == checks.KeyFile("", True)
    key = tmp_path / "k.pem"
    key.write_text("")
    key.chmod(0o400)
    assert checks.KeyFile.of(str(key)) == checks.KeyFile("400", False)


def test_this_machine_address(checks, lab_of) -> None:
    detect = lab_of(ssh_cidr="")
    assert checks.ip_problems(detect, checks.IpCheck(content="203.0.113.9\n", msg="OK (12 bytes)")) == []
    assert checks.ssh_cidrs(detect, checks.IpCheck(content="203.0.113.9\n")) == ["203.0.113.9/32"]
    assert checks.ip_problems(detect, checks.IpCheck(msg="connection refused")) == [
        "Could not detect this machine's public IPv4 address: the address check https://checkip.example did not "
        "answer (connection refused), so nothing was created: set gpu_lab_ssh_cidr to your public IPv4 address as "
        "a /32, e.g. -e gpu_lab_ssh_cidr=203.0.113.7/32, or gpu_lab_ip_check_url to an address check this machine "
        "can reach."]
    assert "(no answer)" in checks.ip_problems(detect, checks.IpCheck())[0]
    assert checks.ip_problems(lab_of(), checks.IpCheck()) == []  # its source is set: nothing asked
    assert checks.ssh_cidrs(lab_of(), checks.IpCheck()) == ["198.51.100.7/32"]


# --- The address check's answer, each way it goes wrong (local_cloud/checkip.py serves them) ------

ADDRESS_KINDS = [
    ({"content": "203.0.113.9\n", "status": 200, "content_type": "text/plain"}, "ipv4"),
    ({"content": "  203.0.113.9 \r\n\r\n", "status": 200}, "ipv4"),
    ({"content": "2001:db8::7\n", "status": 200}, "ipv6"),
    ({"content": "<!DOCTYPE html><html><title>Log in</title></html>", "status": 200, "content_type": "text/html"},
     "page"),
    ({"content": "<html><body>Log in</body></html>", "status": 200, "content_type": "text/plain"}, "page"),
    ({"content": "", "status": 511, "content_type": "text/html"}, "page"),
    ({"content": "Service busy\n", "status": 200}, "text"),
    ({"content": "203.0.113.300\n", "status": 200}, "text"),
    ({"content": "", "status": 200}, "text"),
    ({"content": "<html><h1>404</h1></html>", "status": 404, "content_type": "text/html", "msg": "HTTP 404 Not Found"},
     "none"),
    ({"content": "203.0.113.9\n", "status": 503, "msg": "HTTP 503 Service Unavailable"}, "none"),
    ({"msg": "connection refused"}, "none"),
    ({}, "none"),
]


@pytest.mark.parametrize(("answer", "kind"), ADDRESS_KINDS,
                         ids=[f"{k}-{i}" for i, (_unused, k) in enumerate(ADDRESS_KINDS)])
def test_what_the_address_check_answered(checks, answer: dict[str, Any], kind: str) -> None:
    assert checks.IpCheck(**answer).kind == kind


def test_an_address_with_spaces_around_it_is_the_address(checks, lab_of) -> None:
    spaced = checks.IpCheck(content="  203.0.113.9 \r\n\r\n", msg="OK (18 bytes)", status=200)
    assert checks.ip_problems(lab_of(ssh_cidr=""), spaced) == []
    assert checks.ssh_cidrs(lab_of(ssh_cidr=""), spaced) == ["203.0.113.9/32"]


def test_an_ipv6_answer_asks_for_the_ipv4_address(checks, lab_of) -> None:
    ipv6 = checks.IpCheck(content="2001:db8::7\n", status=200, url="http://127.0.0.1:9/ipv6")
    assert checks.ip_problems(lab_of(ssh_cidr=""), ipv6) == [
        "Could not detect this machine's public IPv4 address: the address check http://127.0.0.1:9/ipv6 answered "
        "with the IPv6 address 2001:db8::7, and the security group's SSH rule needs an IPv4 address (your network "
        "seems IPv6-only, or the check answered over IPv6), so nothing was created: set gpu_lab_ssh_cidr to your "
        "public IPv4 address as a /32, e.g. -e gpu_lab_ssh_cidr=203.0.113.7/32."]


def test_a_captive_portal_page_says_log_in_and_is_not_echoed(checks, lab_of) -> None:
    page = ("<!DOCTYPE html>\n<html><head><title>\n  Guest Wi-Fi &amp; Caf\u00e9: please log in to continue browsing "
            "the internet today\n</title></head><body>" + "<p>Terms of use apply.</p>" * 200 + "</body></html>")
    portal = checks.IpCheck(content=page, status=200, content_type="text/html")
    (message,) = checks.ip_problems(lab_of(ssh_cidr=""), portal)
    assert message == (
        "Could not detect this machine's public IPv4 address: the address check https://checkip.example answered "
        "with a web page ('Guest Wi-Fi & Caf\u00e9: please log in to continue browsing th...') instead of an "
        "address, as a Wi-Fi captive portal does until you log in, so nothing was created: open a browser, log in "
        "to the network and run again, or set gpu_lab_ssh_cidr to your public IPv4 address as a /32, e.g. "
        "-e gpu_lab_ssh_cidr=203.0.113.7/32.")
    assert "<" not in message and "Terms of use" not in message
    untitled = checks.ip_problems(lab_of(ssh_cidr=""), checks.IpCheck(content="", status=511, msg="HTTP 511 x"))[0]
    assert "answered with a web page (HTTP 511) instead of an address, as a Wi-Fi captive portal does" in untitled


def test_an_answer_that_is_no_address_is_shown_cut(checks, lab_of) -> None:
    busy = checks.IpCheck(content="Service busy,\ttry again later; " * 10 + "\n", status=200)
    (message,) = checks.ip_problems(lab_of(ssh_cidr=""), busy)
    assert message == (
        "Could not detect this machine's public IPv4 address: the address check https://checkip.example answered "
        "'Service busy, try again later; Service busy, try again la...', which is not an IP address, so nothing was "
        "created: set gpu_lab_ssh_cidr to your public IPv4 address as a /32, e.g. -e gpu_lab_ssh_cidr=203.0.113.7/32, "
        "or gpu_lab_ip_check_url to a URL that answers with the address alone, such as https://checkip.amazonaws.com.")
    empty = checks.ip_problems(lab_of(ssh_cidr=""), checks.IpCheck(content="\n", status=200))[0]
    assert "https://checkip.example answered with an empty page, which is not an IP address" in empty


def test_an_http_error_is_no_answer_even_with_a_page(checks, lab_of) -> None:
    not_found = checks.IpCheck(content="<html><title>Not here</title></html>", status=404, content_type="text/html",
                               msg="HTTP 404 Not Found")
    (message,) = checks.ip_problems(lab_of(ssh_cidr=""), not_found)
    assert message.startswith("Could not detect this machine's public IPv4 address: the address check "
                              "https://checkip.example answered HTTP 404 Not Found, so nothing was created: ")
    assert "captive portal" not in message and "Not here" not in message


@pytest.mark.parametrize("answer", [a for a, kind in ADDRESS_KINDS if kind != "ipv4"])
def test_each_address_message_is_one_sentence_saying_nothing_was_created(checks, lab_of,
                                                                         answer: dict[str, Any]) -> None:
    (message,) = checks.ip_problems(lab_of(ssh_cidr=""), checks.IpCheck(**answer))
    assert "so nothing was created: " in message and "gpu_lab_ssh_cidr" in message
    assert message.endswith(".") and re.search(r"[.!?] [A-Z]", message) is None, message
    assert len(message) < 420, len(message)


def test_the_address_check_as_asked_over_http(plugin, checks, lab_of) -> None:
    """ask_address against local_cloud's stand-in for checkip.amazonaws.com: what it reads is
    what ip_problems needs (the hanging check: tests/integration/test_address_check.py)."""
    CheckIp = pytest.importorskip("local_cloud.checkip", reason="no local_cloud/: the emulator is not built in").CheckIp

    launch = plugin("plugin_utils.lab_launch")
    detect = lab_of(ssh_cidr="")
    with CheckIp() as check:
        good = launch.ask_address(check.url())
        assert (good.kind, good.status, good.content_type, good.url) == ("ipv4", 200, "text/plain", check.url())
        assert checks.ip_problems(detect, good) == [] and checks.ssh_cidrs(detect, good) == ["203.0.113.7/32"]
        assert launch.ask_address(check.url("spaced")).kind == "ipv4"
        assert [launch.ask_address(check.url(p)).kind for p in ("ipv6", "portal", "portal511", "text", "empty")] == [
            "ipv6", "page", "page", "text", "text"]
        assert "('Guest Wi-Fi: log in')" in checks.ip_problems(detect, launch.ask_address(check.url("portal")))[0]
        missing = launch.ask_address(check.url("nowhere"))
        assert (missing.kind, missing.msg) == ("none", "HTTP 404 Not Found")
        refused = launch.ask_address(check.refused_url())
        assert (refused.kind, refused.msg, refused.status) == ("none", "connection refused", 0)
        assert f"the address check {check.refused_url()} did not answer (connection refused), so nothing was created" \
            in checks.ip_problems(detect, refused)[0]
        assert check.asked == ["/", "/spaced", "/ipv6", "/portal", "/portal511", "/text", "/empty", "/portal",
                               "/nowhere"]
    assert launch.ask_address("checkip.example").msg.startswith("unknown url type")


def test_why_the_address_check_did_not_answer(plugin) -> None:
    import socket
    import ssl

    launch = plugin("plugin_utils.lab_launch")
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    assert [launch.no_answer(r) for r in (TimeoutError("timed out"), ConnectionRefusedError(111, "refused"),
                                          socket.gaierror(-2, "Name or service not known"), untrusted)] == [
        f"no answer within {launch.IP_CHECK_TIMEOUT} s", "connection refused",
        "its host name did not resolve: [Errno -2] Name or service not known",
        "its TLS certificate was not trusted: self-signed certificate, as when a Wi-Fi captive portal answers in "
        "its place"]


def test_aws_problems_come_in_order(checks, lab_of) -> None:
    cpu = {"name": "m5.xlarge", "exists": True, "gpu_count": 0, "architectures": ["x86_64"]}
    found = found_of(instance_types=[cpu], image=IMAGE, key_pair={"name": "csdl-server"},
                     elsewhere=[{"region": "us-west-2", "instance": {"id": "i-2", "state": "running"}}])
    problems = checks.aws_problems(lab_of(instance_type="m5.xlarge", volume_size="40", ssh_cidr=""), found,
                                   checks.KeyFile("", False), checks.IpCheck())
    assert [p.split(" ")[0:2] for p in problems] == [["Lab", "csdl"], ["Instance", "type"], ["Volume", "size"],
                                                     ["Key", "pair"], ["Could", "not"]]


def test_what_an_existing_lab_needs_brought_in_line(checks, lab_of) -> None:
    rule = checks.ingress(["198.51.100.7/32"])
    assert rule == [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.7/32"],
                     "ipv6_cidrs": [], "groups": 0}]
    tags = {"gpu_lab:autostop_minutes": "60", "gpu_lab:idle_alarm": "false",
            "gpu_lab:shelve_after_days": "0"}
    same = found_of(security_group={"group_id": "sg-1", "ingress": rule}, key_pair={"name": "csdl-server"},
                    instance={"id": "i-1", "tags": tags})
    key = checks.KeyFile("400", False)
    assert checks.reconcile(lab_of(), same, ["198.51.100.7/32"], key) == {
        "security_group": False, "key_pair": False, "instance_tags": False, "needed": False}
    moved = checks.reconcile(lab_of(gpu_lab_x="y", autostop_minutes=30), same, ["203.0.113.9/32"], key)
    assert moved == {"security_group": True, "key_pair": False, "instance_tags": True, "needed": True}
    lost = checks.reconcile(lab_of(rotate_key="yes"), same, ["198.51.100.7/32"], checks.KeyFile("", False))
    assert lost["key_pair"] and lost["needed"]
    assert not checks.reconcile(lab_of(), found_of(), [], key)["needed"]  # a new lab: lab_host makes it all
