"""The scenario's lab host on the emulated cloud, made and removed through the EC2 API.
Run it with the cloud's environment (`python -m local_cloud env`): boto3 then
talks to the emulator.

    python lab_instance.py up   --name NAME --key-file FILE --out FILE
    python lab_instance.py down --out FILE

`up` makes a key pair, a subnet whose instances get no public IP of their own, a Deep
Learning AMI instance (the image from AWS's public SSM parameter) with the key, and an
Elastic IP associated; saves the private key 0400; waits until SSH answers at the EIP
(the harness boots a stand-in host there); writes what it made to --out as JSON. `down`
releases the address, then terminates the instance and deletes the key pair and its file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import boto3

DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04/latest/ami-id"
)


def ssh_banner(ip: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, 22), timeout=1) as s:
                s.settimeout(1)
                if s.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no SSH at {ip} after {timeout:.0f} s")
        time.sleep(0.2)


def up(ec2: Any, ssm: Any, name: str, key_file: Path, timeout: float) -> dict[str, str]:
    image = ssm.get_parameter(Name=DLAMI_PARAMETER)["Parameter"]["Value"]
    key = ec2.create_key_pair(KeyName=name)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(key["KeyMaterial"])
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g6.xlarge",
                                 KeyName=name, SubnetId=subnet)["Instances"][0]["InstanceId"]
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=instance, AllocationId=address["AllocationId"])
    made = {"instance_id": instance, "allocation_id": address["AllocationId"],
            "address": address["PublicIp"], "key_name": name, "key_file": str(key_file),
            "image_id": image}
    ssh_banner(address["PublicIp"], timeout)
    return made


def down(ec2: Any, made: dict[str, str]) -> None:
    # As on real AWS: the address first (moto would keep it on a terminated instance).
    ec2.disassociate_address(PublicIp=made["address"])
    ec2.release_address(AllocationId=made["allocation_id"])
    ec2.terminate_instances(InstanceIds=[made["instance_id"]])
    ec2.delete_key_pair(KeyName=made["key_name"])
    Path(made["key_file"]).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="mol-server")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--ssh-timeout", type=float, default=60)
    args = parser.parse_args(argv)
    ec2 = boto3.client("ec2")
    if args.command == "up":
        if args.key_file is None:
            parser.error("up needs --key-file")
        made = up(ec2, boto3.client("ssm"), args.name, args.key_file, args.ssh_timeout)
        args.out.write_text(json.dumps(made, indent=2))
        print(json.dumps(made))
    elif args.out.exists():
        down(ec2, json.loads(args.out.read_text()))
        args.out.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
