"""lab_checks: each problem of a launch is one sentence, the one users have always seen, in the
same order (the lab-wide settings, the role's settings, then what AWS and this machine say)."""

from __future__ import annotations

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
]


@pytest.mark.parametrize(("given", "sentence"), SETTINGS_CASES)
def test_each_bad_setting_is_one_sentence(checks, lab_of, given: dict[str, Any], sentence: str) -> None:
    assert checks.settings_problems(lab_of(**given), REGIONS) == [sentence]


def test_good_settings_have_no_problem(checks, lab_of) -> None:
    assert checks.settings_problems(lab_of(zones="us-east-1a,us-east-1b", volume_size="100",
                                           ami_id="ami-0123456789abcdef0"), REGIONS) == []
    assert checks.settings_problems(lab_of(ssh_cidr="0.0.0.0/0", allow_world_ssh="true"), REGIONS) == []


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


def test_the_image(checks, lab_of) -> None:
    assert checks.image_problems(lab_of(ami_id="ami-0aaaaaaaaaaaaaaaa"), found_of(image={})) == [
        "AMI ami-0aaaaaaaaaaaaaaaa does not exist in us-east-1 (an AMI id belongs to one region): set gpu_lab_ami_id "
        "to an image of this region, or to '' for the latest Deep Learning AMI."]
    assert checks.image_problems(lab_of(), found_of(image={})) == [
        "No Deep Learning AMI found in us-east-1 for the line 'line' (SSM parameter "
        "/aws/service/deeplearning/ami/x86_64/line/latest/ami-id) nor by the name pattern 'DL *': set gpu_lab_dlami "
        "to a published line (aws ssm get-parameters-by-path --path /aws/service/deeplearning/ami/x86_64) or "
        "gpu_lab_ami_id to an image id."]
    assert checks.image_problems(lab_of(volume_size="40"), found_of()) == [
        "Volume size 40 GiB is smaller than the AMI's 75 GiB snapshot: set gpu_lab_volume_size to 75 or more."]
    assert checks.image_problems(lab_of(volume_size="75"), found_of()) == []
    assert checks.image_problems(lab_of(volume_size="40"), found_of(instance={"id": "i-1"}, image={})) == []


def test_the_key_file(checks, lab_of, tmp_path: Path) -> None:
    key = str(tmp_path / ".ssh" / "csdl-server.pem")
    with_pair = found_of(key_pair={"name": "csdl-server"})
    assert checks.key_problems(lab_of(), with_pair, no_key(checks)) == [
        f"Key pair csdl-server exists in us-east-1 but its private key {key} is missing: copy it back there "
        "(chmod 400), or run with -e gpu_lab_rotate_key=true to replace the key pair (a lab instance that exists "
        "must then be relaunched: teardown.yml, then launch.yml)."]
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
    assert checks.ip_problems(detect, checks.IpCheck(msg="Status code was -1 and not [200]: Request failed")) == [
        "Could not detect this machine's public IPv4 address from https://checkip.example (Status code was -1 and "
        "not [200]: Request failed): set gpu_lab_ssh_cidr to the address you connect from, e.g. "
        "-e gpu_lab_ssh_cidr=203.0.113.7/32."]
    assert "(no answer)" in checks.ip_problems(detect, checks.IpCheck())[0]
    assert checks.ip_problems(lab_of(), checks.IpCheck()) == []  # its source is set: nothing asked
    assert checks.ssh_cidrs(lab_of(), checks.IpCheck()) == ["198.51.100.7/32"]


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
    tags = {"gpu_lab:autostop_minutes": "60", "gpu_lab:idle_alarm": "false"}
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
