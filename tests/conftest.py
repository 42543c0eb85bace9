"""Shared pytest fixtures: the emulated cloud (EC2 API + stand-in hosts) and clients for it.

* ``cloud_session``: one emulated cloud for the whole run (stand-in hosts where the
  machine allows: root on Linux; see ``Cloud.hosts_reason`` otherwise);
* ``cloud``: the same cloud, reset before the test: no resources, no stand-ins, a
  stand-in for every instance again (``cloud.controller.only(None)``);
* ``hosts_cloud``: ``cloud``, or a skip saying why stand-in hosts cannot run here;
* ``aws``: ``aws("ec2")`` gives a boto3 client talking to the emulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    # Imported by the fixtures that start it: tests/unit (run by ansible-test units from the
    # installed collection, which has no local_cloud/) never needs the emulator or its werkzeug.
    from local_cloud.cloud import Cloud


@pytest.fixture(scope="session")
def cloud_session(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Cloud]:
    # The first run builds the stand-in image (about a minute): let its progress lines
    # through pytest's output capture instead of sitting silent.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    from local_cloud.cloud import Cloud

    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        cloud = Cloud(tmp_path_factory.mktemp("cloud"), hosts=True).start()
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture
def cloud(cloud_session: Cloud) -> Cloud:
    """The session's cloud, emptied: an earlier test's instances (and stand-ins) are gone,
    and so is its choice of instances that get a stand-in (after the reset: an earlier
    test's unchosen instances must not boot in between)."""
    cloud_session.emulator.reset()
    if cloud_session.controller is not None:
        cloud_session.controller.wait_settled()
        cloud_session.controller.only(None)
    return cloud_session


@pytest.fixture
def hosts_cloud(cloud: Cloud) -> Cloud:
    if not cloud.hosts:
        pytest.skip(f"no stand-in hosts: {cloud.hosts_reason}")
    return cloud


@pytest.fixture
def aws(cloud_session: Cloud) -> Callable[..., Any]:
    """aws(service, region=None) -> a boto3 client for the emulated cloud (no reset:
    ask for ``cloud`` as well for that)."""
    import boto3

    env = cloud_session.env()

    def client(service: str, region: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=region or env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
        )

    return client
