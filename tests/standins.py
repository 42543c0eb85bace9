"""What the test modules built on stand-in hosts share: the emulator's clients for a module of
its own (a fresh emulator, every instance booted), and a key pair whose private key is a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local_cloud.cloud import Cloud


def standin_clients(cloud: Cloud) -> tuple[Any, Any]:
    """EC2 and SSM clients of the session's emulator, reset for this module, with every instance
    it launches booted as a stand-in; the module skips (saying why) where stand-ins cannot run."""
    if not cloud.hosts:
        pytest.skip(f"no stand-in hosts: {cloud.hosts_reason}")
    cloud.emulator.reset()
    cloud.controller.wait_settled()
    cloud.controller.only(None)
    return emulator_client(cloud, "ec2"), emulator_client(cloud, "ssm")


def emulator_client(cloud: Cloud, service: str) -> Any:
    """A boto3 client of the emulator, with the credentials and region the playbooks get (a
    client of its own for a thread that watches the instances)."""
    import boto3

    env = cloud.env()
    session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=env["AWS_SESSION_TOKEN"], region_name=env["AWS_DEFAULT_REGION"])
    return session.client(service, endpoint_url=env["AWS_ENDPOINT_URL"])


def key_pair_file(ec2: Any, folder: Path, name: str) -> Path:
    """A new key pair; its private key in folder/<name>.pem (0600), as ssh wants it."""
    key = folder / f"{name}.pem"
    key.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    key.chmod(0o600)
    return key
