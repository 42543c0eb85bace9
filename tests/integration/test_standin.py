"""The stand-in hosts behind the emulated EC2 API: each instance with an Elastic IP
answers SSH there, and follows stop / start / terminate / in-guest shutdown as EC2 would.

Needs root on Linux with systemd-nspawn & co (CI has them); skips, saying why, elsewhere.
The first run builds the stand-in image (about 60-70 s, cached afterwards).
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local_cloud.cloud import REPO, Cloud, hosts_unavailable_reason, read_info
from local_cloud.emulator import DLAMI_LINES, dlami_parameter_name
from local_cloud.standin import cloudinit, image, net
from local_cloud.standin.cleanup import OWNERS, _start_time, reap_orphans
from local_cloud.standin.host import ssh_answers, state_tag
from local_cloud.standin.system import file_lock, mounts_under

pytestmark = [
    pytest.mark.hosts,
    pytest.mark.skipif(hosts_unavailable_reason() is not None,
                       reason=f"no stand-in hosts: {hosts_unavailable_reason()}"),
]


# --- helpers --------------------------------------------------------------------------

@dataclass
class Launched:
    instance_id: str
    ip: str
    allocation_id: str
    key: Path


class Ssh:
    """ssh as the student would run it, but with a throwaway known_hosts (tests only)."""

    def __init__(self, workdir: Path) -> None:
        self.known_hosts = workdir / "known_hosts"

    def options(self, key: Path) -> list[str]:
        return ["-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                # accept-new: a host key that changes later (it must not) fails the test
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def run(self, host: Launched, command: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ssh", *self.options(host.key), f"ubuntu@{host.ip}", command],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {command!r} exited {proc.returncode}: {proc.stderr}")
        return proc

    def probe(self, host: Launched, **commands: str) -> dict[str, tuple[int, str]]:
        """Runs several commands over one connection (each would cost a handshake);
        returns name -> (exit status, output)."""
        script = "".join(f"echo '>>> {name}'; ( {command} ) 2>&1; echo \"<<< $?\"\n"
                         for name, command in commands.items())
        results = {}
        for section in self.run(host, script).stdout.split(">>> ")[1:]:
            name, _, rest = section.partition("\n")
            body, _, status = rest.rpartition("<<< ")
            results[name] = (int(status.strip()), body.strip())
        return results


@pytest.fixture
def ssh(tmp_path: Path) -> Ssh:
    return Ssh(tmp_path)


@pytest.fixture(scope="module")
def standin_cloud(cloud_session: Cloud) -> Cloud:
    """The session's cloud, emptied once for this module. Tests do not reset it in
    between (a reset costs 1.5-2 s); each uses its own names and terminates what it
    launched, as a student's teardown would."""
    if not cloud_session.hosts:
        pytest.skip(f"no stand-in hosts: {cloud_session.hosts_reason}")
    cloud_session.emulator.reset()
    cloud_session.controller.wait_settled()
    cloud_session.controller.only(None)  # an earlier module's choice of instances
    return cloud_session


@pytest.fixture
def ec2(standin_cloud: Cloud, aws: Callable[..., Any]) -> Any:
    return aws("ec2")


@pytest.fixture
def dlami(standin_cloud: Cloud, aws: Callable[..., Any]) -> str:
    name = dlami_parameter_name(DLAMI_LINES[0])
    return aws("ssm").get_parameter(Name=name)["Parameter"]["Value"]


@pytest.fixture
def launch(standin_cloud: Cloud, ec2: Any, dlami: str, tmp_path: Path) -> Iterator[Callable[..., Launched]]:
    """launch(image=DLAMI, eip=True, **run_instances options) -> a running instance, in
    a subnet without auto-assigned public IPs (so its public IP is its EIP)."""
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    launched: list[Launched] = []

    def _launch(image: str | None = None, eip: bool = True, **options: Any) -> Launched:
        name = f"lab-{uuid.uuid4().hex[:8]}"
        key_file = tmp_path / f"{name}.pem"
        key_file.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
        key_file.chmod(0o600)
        instance = ec2.run_instances(ImageId=image or dlami, MinCount=1, MaxCount=1,
                                     InstanceType="g4dn.xlarge", KeyName=name,
                                     SubnetId=subnet, **options)["Instances"][0]
        address = ec2.allocate_address(Domain="vpc")
        if eip:
            ec2.associate_address(InstanceId=instance["InstanceId"],
                                  AllocationId=address["AllocationId"])
        launched.append(Launched(instance["InstanceId"], address["PublicIp"],
                                 address["AllocationId"], key_file))
        return launched[-1]

    yield _launch
    for host in launched:  # release (disassociating first) before terminating, as on AWS
        with contextlib.suppress(ClientError):
            for address in ec2.describe_addresses(AllocationIds=[host.allocation_id])["Addresses"]:
                if address.get("AssociationId"):
                    ec2.disassociate_address(AssociationId=address["AssociationId"])
            ec2.release_address(AllocationId=host.allocation_id)
    if launched:
        ec2.terminate_instances(InstanceIds=[h.instance_id for h in launched])


def state_of(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def wait_for_state(ec2: Any, instance_id: str, wanted: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (instance := state_of(ec2, instance_id))["State"]["Name"] != wanted:
        assert time.monotonic() < deadline, f"{instance_id} is {instance['State']['Name']}, not {wanted}"
        time.sleep(0.2)
    return instance


def connect_error(ip: str, port: int = 22) -> str:
    """What a TCP connect to ip:port gets: 'connected', 'timeout' or the errno's name."""
    try:
        with socket.create_connection((ip, port), timeout=2):
            return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


# --- tests ------------------------------------------------------------------------------

def test_dlami_instance_answers_ssh_at_its_eip(standin_cloud: Cloud, launch: Callable[..., Launched],
                                               ssh: Ssh) -> None:
    started = time.monotonic()
    host = launch()
    standin_cloud.controller.wait_until(host.instance_id, "booted", timeout=30)
    assert time.monotonic() - started < 15, "a stand-in should boot in a few seconds"

    found = ssh.probe(
        host,
        state="systemctl is-system-running --wait",
        sudo="sudo -n true",
        jupyter="test -d /opt/pytorch && /opt/pytorch/bin/jupyter --version",
        hostname="hostname",
        user="id -u; echo $HOME",
        sshd="sudo sshd -T | grep -i '^passwordauthentication'",
        cas="ls /usr/local/share/ca-certificates",
    )
    assert found["state"][1] in ("running", "degraded"), found["state"]
    assert found["sudo"] == (0, "")
    assert found["jupyter"][0] == 0, found["jupyter"]
    assert "jupyterlab" in found["jupyter"][1] and "notebook" in found["jupyter"][1]
    assert found["hostname"] == (0, "ip-" + host.ip.replace(".", "-"))
    assert found["user"] == (0, "1000\n/home/ubuntu")
    assert found["sshd"] == (0, "passwordauthentication no")
    # This machine's CA (outbound TLS is re-signed here) is in the guest, not the image;
    # nor are host keys, which each instance makes for itself.
    host_cas = sorted(p.name for p in Path("/usr/local/share/ca-certificates").glob("*.crt"))
    assert sorted(found["cas"][1].split()) == host_cas
    base = image.ensure_base()
    assert not list(base.glob("usr/local/share/ca-certificates/*.crt"))
    assert not (base / image.BUILD_CA.lstrip("/")).exists()
    assert not list(base.glob("etc/ssh/ssh_host_*"))


def test_share_is_a_read_only_course_repo_source(standin_cloud: Cloud, launch: Callable[..., Launched],
                                                 ssh: Ssh, tmp_path: Path) -> None:
    share = standin_cloud.controller.share_dir
    repo = share / "course.git"
    if not repo.exists():
        work = tmp_path / "course"
        git = ["git", "-c", "user.name=Lab", "-c", "user.email=lab@example.invalid",
               "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q", str(work)], check=True)
        (work / "README.md").write_text("week 1\n")
        subprocess.run([*git, "-C", str(work), "add", "."], check=True)
        subprocess.run([*git, "-C", str(work), "commit", "-qm", "week 1"], check=True)
        subprocess.run([*git, "clone", "-q", "--bare", str(work), str(repo)], check=True)
        # Testbed workaround: owned by the guest's ubuntu (uid 1000), or git clone in
        # the guest refuses it ("dubious ownership").
        subprocess.run(["chown", "-R", "1000:1000", str(repo)], check=True)
    host = launch()
    standin_cloud.controller.wait_until(host.instance_id, "booted")
    out = ssh.run(host, "git clone -q /srv/share/course.git ~/course && cat ~/course/README.md")
    assert out.stdout == "week 1\n"
    assert ssh.run(host, "touch /srv/share/x", check=False).returncode != 0


class _Decoy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"the VM itself")

    def log_message(self, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ssh_tunnel_lands_on_the_guests_loopback(standin_cloud: Cloud, launch: Callable[..., Launched],
                                                 ssh: Ssh) -> None:
    # A decoy on this machine's loopback, on the very port the guest serves on: a
    # tunnel that ended up here instead of in the guest would fetch "the VM itself".
    decoy = http.server.HTTPServer(("127.0.0.1", 0), _Decoy)
    threading.Thread(target=decoy.serve_forever, daemon=True).start()
    port = decoy.server_address[1]
    host = launch()
    try:
        standin_cloud.controller.wait_until(host.instance_id, "booted")
        ssh.run(host, f"mkdir -p /tmp/w && hostname > /tmp/w/who && sudo systemd-run --quiet "
                      f"--uid=ubuntu --unit=probe python3 -m http.server {port} --bind 127.0.0.1 "
                      f"--directory /tmp/w && for i in $(seq 50); do "
                      f"curl -sf localhost:{port}/who >/dev/null && break; sleep 0.1; done")
        local = _free_port()
        tunnel = subprocess.Popen(["ssh", *ssh.options(host.key), "-N", "-o", "ExitOnForwardFailure=yes",
                                   "-L", f"{local}:localhost:{port}", f"ubuntu@{host.ip}"])
        try:
            body = ""
            for _ in range(50):
                proc = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{local}/who"],
                                      capture_output=True, text=True)
                if proc.returncode == 0:
                    body = proc.stdout.strip()
                    break
                time.sleep(0.1)
            assert body == "ip-" + host.ip.replace(".", "-")
        finally:
            tunnel.terminate()
            tunnel.wait(timeout=10)
    finally:
        decoy.shutdown()


def test_stop_powers_off_and_start_boots_the_same_disk(standin_cloud: Cloud, ec2: Any,
                                                       launch: Callable[..., Launched], ssh: Ssh) -> None:
    host = launch()
    controller = standin_cloud.controller
    controller.wait_until(host.instance_id, "booted")
    ssh.run(host, "echo notebook-1 > ~/work.txt")

    ec2.stop_instances(InstanceIds=[host.instance_id])
    controller.wait_until(host.instance_id, "off", timeout=15)
    assert connect_error(host.ip) in ("ECONNREFUSED", "timeout")
    assert ssh.run(host, "true", check=False).returncode == 255

    ec2.start_instances(InstanceIds=[host.instance_id])
    controller.wait_until(host.instance_id, "booted")
    # Same disk: the file is there, and the host key is the one known_hosts pinned.
    assert ssh.run(host, "cat ~/work.txt").stdout == "notebook-1\n"


def test_poweroff_inside_stops_the_instance(standin_cloud: Cloud, ec2: Any,
                                            launch: Callable[..., Launched], ssh: Ssh) -> None:
    host = launch()
    standin_cloud.controller.wait_until(host.instance_id, "booted")
    # The guest may drop the connection before ssh sees the command's exit status.
    ssh.run(host, "sudo systemctl poweroff --no-block", check=False)
    instance = wait_for_state(ec2, host.instance_id, "stopped", timeout=10)
    assert instance["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown", (
        instance, standin_cloud.controller.errors)
    assert standin_cloud.controller.host(host.instance_id) is not None  # the disk stays

    ec2.start_instances(InstanceIds=[host.instance_id])
    standin_cloud.controller.wait_until(host.instance_id, "booted")


def test_poweroff_inside_terminates_when_the_shutdown_behaviour_says_so(
        standin_cloud: Cloud, ec2: Any, launch: Callable[..., Launched], ssh: Ssh) -> None:
    host = launch(InstanceInitiatedShutdownBehavior="terminate")
    standin_cloud.controller.wait_until(host.instance_id, "booted")
    ssh.run(host, "sudo systemctl poweroff --no-block", check=False)
    wait_for_state(ec2, host.instance_id, "terminated", timeout=10)
    standin_cloud.controller.wait_until(host.instance_id, "gone", timeout=10)


def test_reboots_come_back(standin_cloud: Cloud, ec2: Any, launch: Callable[..., Launched],
                           ssh: Ssh) -> None:
    """An in-guest reboot (what Ansible's reboot module does) and RebootInstances."""
    host = launch()
    controller = standin_cloud.controller
    controller.wait_until(host.instance_id, "booted")
    boot_ids = {ssh.run(host, "cat /proc/sys/kernel/random/boot_id").stdout}
    for n, reboot in enumerate((
            lambda: ssh.run(host, "sudo systemctl reboot --no-block", check=False),
            lambda: ec2.reboot_instances(InstanceIds=[host.instance_id]))):
        reboot()
        deadline = time.monotonic() + 20
        while (info := controller.host(host.instance_id)) is None or info.boots < n + 2:
            assert time.monotonic() < deadline, f"no relaunch after reboot {n + 1}"
            time.sleep(0.1)
        controller.wait_until(host.instance_id, "booted")
        boot_ids.add(ssh.run(host, "cat /proc/sys/kernel/random/boot_id").stdout)
    assert len(boot_ids) == 3
    assert state_of(ec2, host.instance_id)["State"]["Name"] == "running"


def test_terminate_destroys_the_stand_in(standin_cloud: Cloud, ec2: Any,
                                         launch: Callable[..., Launched]) -> None:
    host = launch()
    controller = standin_cloud.controller
    info = controller.wait_until(host.instance_id, "booted")
    assert info is not None
    disk = info.machine_path.parent

    ec2.terminate_instances(InstanceIds=[host.instance_id])
    controller.wait_until(host.instance_id, "gone", timeout=15)
    assert not disk.exists()
    assert not [ns for ns in net.list_netns() if host.instance_id in ns]
    # The EIP is still allocated (moto even keeps it associated): it reaches nothing.
    assert connect_error(host.ip) == "EHOSTUNREACH"  # not this machine's own 127/8
    ec2.release_address(AllocationId=host.allocation_id)
    deadline = time.monotonic() + 5
    while net.routes_for(host.ip):
        assert time.monotonic() < deadline, f"route for released {host.ip} left behind"
        time.sleep(0.1)


def test_eip_route_follows_the_association(standin_cloud: Cloud, ec2: Any,
                                           launch: Callable[..., Launched], ssh: Ssh) -> None:
    first = launch()
    second = launch(eip=False)  # running, but unreachable: no stand-in yet
    controller = standin_cloud.controller
    controller.wait_until(first.instance_id, "booted")
    assert controller.host(second.instance_id) is None

    ec2.associate_address(InstanceId=second.instance_id, AllocationId=first.allocation_id,
                          AllowReassociation=True)
    controller.wait_until(second.instance_id, "booted")
    moved = Launched(second.instance_id, first.ip, first.allocation_id, second.key)
    info = controller.host(second.instance_id)
    assert info is not None
    machine_id = (info.machine_path / "etc/machine-id").read_text()
    ssh.known_hosts.unlink(missing_ok=True)  # another host at the same address, as on AWS
    assert ssh.run(moved, "cat /etc/machine-id").stdout == machine_id
    first_info = controller.host(first.instance_id)
    assert first_info is not None
    key = "etc/ssh/ssh_host_ed25519_key.pub"
    assert (first_info.machine_path / key).read_text() != (info.machine_path / key).read_text()
    assert controller.host(first.instance_id).booted  # still running, just not reachable

    association = ec2.describe_addresses(AllocationIds=[first.allocation_id])["Addresses"][0]
    ec2.disassociate_address(AssociationId=association["AssociationId"])
    deadline = time.monotonic() + 5
    while connect_error(first.ip) != "EHOSTUNREACH":
        assert time.monotonic() < deadline, "the route did not go with the association"
        time.sleep(0.1)


def test_plain_ami_has_no_pytorch_venv(standin_cloud: Cloud, ec2: Any,
                                       launch: Callable[..., Launched], ssh: Ssh) -> None:
    plain = ec2.register_image(Name="ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250901",
                               RootDeviceName="/dev/sda1")["ImageId"]
    host = launch(image=plain)
    standin_cloud.controller.wait_until(host.instance_id, "booted")
    ssh.run(host, "test ! -e /opt/pytorch && python3 -m venv --help >/dev/null && sudo -n true")


# --- a class: user data's admin key, stand-ins for chosen labs only --------------------

def test_cloud_config_parsing() -> None:
    header = "#cloud-config\n"
    assert cloudinit.authorized_keys(header + "ssh_authorized_keys:\n  - ssh-ed25519 AAAA a\n  - ssh-rsa B b\n") \
        == (["ssh-ed25519 AAAA a", "ssh-rsa B b"], None)
    assert cloudinit.authorized_keys(header + "packages: [git]\n") == ([], None)
    assert cloudinit.authorized_keys("#!/bin/sh\necho ssh_authorized_keys\n") == ([], None)
    assert cloudinit.authorized_keys(None) == ([], None)
    keys, problem = cloudinit.authorized_keys(header + "ssh_authorized_keys: [unclosed\n")
    assert keys == [] and problem and "not valid YAML" in problem
    keys, problem = cloudinit.authorized_keys(header + "ssh_authorized_keys: ssh-ed25519 AAAA a\n")
    assert keys == [] and problem and "not a list" in problem
    # moto keeps user data as sent: base64 (a Base64EncodedString); gzip/binary is not read
    from moto.core.types import Base64EncodedString

    assert cloudinit.user_data_text(Base64EncodedString("I2Nsb3VkLWNvbmZpZwo=")) == header
    assert cloudinit.user_data_text(Base64EncodedString("//4=")) is None  # not UTF-8
    assert cloudinit.user_data_text("%%%") is None


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def test_user_data_keys_are_authorized_beside_the_key_pair(standin_cloud: Cloud, launch: Callable[..., Launched],
                                                          ssh: Ssh, tmp_path: Path) -> None:
    admin_key = tmp_path / "admin"
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {_keygen(admin_key, 'dl2026-admin')}\n"
    student = launch(UserData=user_data)
    other = launch()  # no user data: the key pair's key only
    broken = launch(UserData="#cloud-config\nssh_authorized_keys: [unclosed\n")  # ignored, said
    for host in (student, other, broken):
        standin_cloud.controller.wait_until(host.instance_id, "booted")

    assert ssh.run(student, "whoami").stdout == "ubuntu\n"
    assert ssh.run(replace(student, key=admin_key), "whoami").stdout == "ubuntu\n"
    assert ssh.run(other, "whoami").stdout == "ubuntu\n"
    refused = ssh.run(replace(other, key=admin_key), "whoami", check=False)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    assert ssh.run(broken, "whoami").stdout == "ubuntu\n"
    errors = standin_cloud.controller.errors
    assert not [e for e in errors if student.instance_id in e or other.instance_id in e], errors
    assert [e for e in errors if broken.instance_id in e and "not valid YAML" in e], errors


@pytest.fixture
def only(standin_cloud: Cloud) -> Iterator[Callable[..., None]]:
    """controller.only, set back to every instance after the test. Ask for it BEFORE
    ``launch``: its teardown then runs after launch's has terminated the unchosen
    instances (which would otherwise get a stand-in the moment the filter goes)."""
    yield standin_cloud.controller.only
    standin_cloud.controller.only(None)


def test_only_chosen_instances_get_stand_ins(standin_cloud: Cloud, only: Callable[..., None],
                                             launch: Callable[..., Launched], ssh: Ssh) -> None:
    only(lambda observed: observed.tags.get("gpu_lab:student") in ("s1", "s3"))
    labs = {}
    for student in ("s1", "s2", "s3", "s4"):
        tags = [{"Key": "gpu_lab:lab", "Value": f"dl2026-{student}"}, {"Key": "gpu_lab:class", "Value": "dl2026"},
                {"Key": "gpu_lab:student", "Value": student}]
        labs[student] = launch(TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    controller = standin_cloud.controller
    for student in ("s1", "s3"):
        controller.wait_until(labs[student].instance_id, "booted")
        assert ssh.run(labs[student], "hostname").stdout == "ip-" + labs[student].ip.replace(".", "-") + "\n"

    made = {iid for iid in controller.hosts() if iid in {lab.instance_id for lab in labs.values()}}
    assert made == {labs["s1"].instance_id, labs["s3"].instance_id}
    for student in ("s2", "s4"):
        started = time.monotonic()
        assert connect_error(labs[student].ip) in ("EHOSTUNREACH", "ECONNREFUSED")
        assert ssh.run(labs[student], "true", check=False).returncode == 255
        assert time.monotonic() - started < 5, "an unchosen lab's EIP must fail fast, not hang"


# --- leaving nothing behind -----------------------------------------------------------

def leftovers(state_dir: Path, ip: str) -> dict[str, Any]:
    """Everything a cloud with this state dir could have left on the machine."""
    tag = state_tag(state_dir)
    nspawns = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"systemd-nspawn" in a for a in args) and any(str(state_dir).encode() in a for a in args):
            nspawns.append(cmdline.parent.name)
    found = {
        "netns": [ns for ns in net.list_netns() if ns.startswith(f"{net.NETNS_PREFIX}{tag}-")],
        "mounts": [str(m) for m in mounts_under(state_dir)],
        "routes": net.routes_for(ip),
        "nspawn": nspawns,
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/gpu_lab/{tag}")],
    }
    # The masquerade table is shared by every cloud on the machine (molecule's and the other
    # pytest run's too): look under the lock their changes take, or another cloud caught
    # between making its namespace and its table looks like a leftover.
    with file_lock(net._LOCK):  # noqa: SLF001 - the harness's own lock
        if not any(ns.startswith(net.NETNS_PREFIX) for ns in net.list_netns()):  # the last host
            nft = subprocess.run(["nft", "list", "table", "ip", net.NFT_TABLE], capture_output=True)
            found["nft"] = [net.NFT_TABLE] if nft.returncode == 0 else []
    return {k: v for k, v in found.items() if v}


def _launch_in(cloud_env: dict[str, str]) -> tuple[str, str]:
    """An instance with an EIP in an emulator of our own; returns (instance id, EIP)."""
    import boto3

    session = boto3.Session(aws_access_key_id=cloud_env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=cloud_env["AWS_SECRET_ACCESS_KEY"],
                            region_name=cloud_env["AWS_DEFAULT_REGION"])
    client = session.client("ec2", endpoint_url=cloud_env["AWS_ENDPOINT_URL"])
    ssm = session.client("ssm", endpoint_url=cloud_env["AWS_ENDPOINT_URL"])
    image = ssm.get_parameter(Name=dlami_parameter_name(DLAMI_LINES[0]))["Parameter"]["Value"]
    client.create_key_pair(KeyName="own")
    instance = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, KeyName="own",
                                    InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    address = client.allocate_address(Domain="vpc")
    client.associate_address(InstanceId=instance, AllocationId=address["AllocationId"])
    return instance, address["PublicIp"]


def _launch_booted(cloud_env: dict[str, str], hosts: Path, timeout: float = 30) -> str:
    """_launch_in, then wait until its stand-in runs and answers SSH; returns the EIP."""
    _, ip = _launch_in(cloud_env)
    deadline = time.monotonic() + timeout
    while not leftovers(hosts, ip).get("nspawn") or not ssh_answers(ip):
        assert time.monotonic() < deadline, "the cloud's host never booted"
        time.sleep(0.1)
    return ip


def cloud_cli(command: str, state: Path) -> None:
    """`python -m local_cloud COMMAND` as the demo and molecule run it: the cloud
    lives in its own process (moto's state is per process: a second Cloud in this one
    would share the session cloud's instances)."""
    subprocess.run([sys.executable, "-m", "local_cloud", command, "--state-dir", str(state)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)


def test_cloud_stop_leaves_nothing(tmp_path: Path) -> None:
    """`cloud down` (SIGTERM, then Cloud.stop()) of a cloud with a booted host."""
    state, hosts = tmp_path / "own", tmp_path / "own" / "hosts"
    cloud_cli("up", state)
    try:
        info = read_info(state)
        assert info is not None
        ip = _launch_booted(info["env"], hosts)
    finally:
        cloud_cli("down", state)
    assert leftovers(hosts, ip) == {}


def test_reaping_after_a_crash(tmp_path: Path) -> None:
    """A cloud process killed hard leaves its hosts running; the next controller to
    start (whatever its state dir) removes them."""
    state, hosts = tmp_path / "crashed", tmp_path / "crashed" / "hosts"
    cloud_cli("up", state)
    info = read_info(state)
    assert info is not None
    try:
        ip = _launch_booted(info["env"], hosts)
    finally:
        os.kill(info["pid"], signal.SIGKILL)  # the crash: no cleanup at all
    # SIGKILL is delivered at once but the process takes a moment to die (longer on a busy
    # machine): until then its owner record rightly counts as alive.
    deadline = time.monotonic() + 10
    while _start_time(info["pid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    left = leftovers(hosts, ip)
    mine = Path(os.path.realpath(hosts))
    if mine in reap_orphans():  # HostController.start() calls it
        assert left, "the crash left nothing to reap"
    else:
        # Another cloud starting meanwhile (molecule runs beside pytest) reaped it first.
        assert not [p for p in OWNERS.glob("*.json") if str(mine) in p.read_text()]
    assert leftovers(hosts, ip) == {}
