"""The silent endpoint: accepts, never answers, and is gone when its context ends."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse

import boto3
import botocore.config
import botocore.exceptions
import pytest

from local_cloud.silent import silent_endpoint, silent_server

REQUEST = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"


def address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def silent_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "silent-endpoint"]


def test_accepts_reads_and_never_answers_then_closes_with_its_context() -> None:
    with silent_server() as endpoint:
        client = socket.create_connection(address(endpoint.url), timeout=2)
        client.sendall(REQUEST)
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(1)  # not a byte, not an EOF: an open, mute connection
        assert endpoint.accepted == 1
        assert silent_threads()
    try:
        # The context closed its side: the client sees the connection end, promptly.
        client.settimeout(2)
        assert client.recv(1) == b""
    finally:
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address(endpoint.url), timeout=2).close()
    assert not silent_threads()


def test_a_large_request_is_taken_whole() -> None:
    """Reading what is sent keeps a client's send from stalling on a full buffer: the
    failure a test sees is the read timeout it is after, not a send that hangs."""
    body = b"x" * (8 * 1024 * 1024)
    with silent_endpoint() as url:
        client = socket.create_connection(address(url), timeout=5)
        try:
            client.sendall(body)  # raises TimeoutError if nobody reads
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(1)
        finally:
            client.close()


def test_an_aws_client_gives_up_within_its_read_timeout() -> None:
    """What the endpoint is for: a client pointed at an AWS endpoint that never answers
    fails with a read timeout within its bound, rather than waiting for ever."""
    with silent_endpoint() as url:
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url,
                           aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106
                           config=botocore.config.Config(connect_timeout=1, read_timeout=0.5,
                                                         retries={"total_max_attempts": 1}))
        started = time.monotonic()
        with pytest.raises(botocore.exceptions.ReadTimeoutError) as error:
            ec2.describe_instances()
        assert time.monotonic() - started < 3
    assert url in str(error.value)  # the error names the endpoint that did not answer
