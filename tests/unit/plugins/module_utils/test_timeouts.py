"""timeouts: the modules' clients give up on a silent endpoint within the bound, in one
sentence, and still ride out throttling with their usual retries.

The clients here are real botocore clients against loopback listeners: one that accepts and
never answers (local_cloud/silent.py), and one that answers "slow down" a few times first.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest

try:
    from local_cloud.silent import silent_endpoint
except ImportError:  # ansible-test units from the installed collection
    silent_endpoint = None
needs_local_cloud = pytest.mark.skipif(silent_endpoint is None, reason="no local_cloud/: the emulator is not built in")
from plugins.module_utils.timeouts import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    TIMEOUT_ATTEMPTS,
    bounded,
    client_config,
    is_timeout,
    longest_wait_s,
    timeout_message,
    timeouts,
)


def ec2_client(url: str, config: Any) -> Any:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=url, config=config,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106


def test_defaults_are_short_and_bounded_well_under_two_minutes() -> None:
    assert timeouts({}) == (CONNECT_TIMEOUT_S, READ_TIMEOUT_S) == (10.0, 30.0)
    assert TIMEOUT_ATTEMPTS == 2
    assert longest_wait_s({}) == 80.0 < 120


def test_environment_sets_the_timeouts() -> None:
    env = {"GPU_LAB_AWS_CONNECT_TIMEOUT": "3", "GPU_LAB_AWS_READ_TIMEOUT": " 1.5 "}
    assert timeouts(env) == (3.0, 1.5)
    assert longest_wait_s(env) == 9.0
    assert timeouts({"GPU_LAB_AWS_READ_TIMEOUT": ""}) == (10.0, 30.0)  # set but empty: the default


@pytest.mark.parametrize("value", ["soon", "0", "-2", "nan", "inf", "301"])
def test_a_timeout_that_is_not_seconds_is_refused_in_one_sentence(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        timeouts({"GPU_LAB_AWS_READ_TIMEOUT": value})
    assert str(caught.value) == (f"GPU_LAB_AWS_READ_TIMEOUT is {value!r}: set it to a number of seconds between 0 "
                                 "and 300 (default 30), or unset it.")


def test_config_keeps_the_callers_settings() -> None:
    config = client_config({}, retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=50)
    assert (config.connect_timeout, config.read_timeout) == (10.0, 30.0)
    assert config.retries == {"mode": "standard", "max_attempts": 8}
    assert config.max_pool_connections == 50


@needs_local_cloud
def test_a_silent_endpoint_is_given_up_after_two_tries_whatever_the_retry_count() -> None:
    env = {"GPU_LAB_AWS_CONNECT_TIMEOUT": "1", "GPU_LAB_AWS_READ_TIMEOUT": "0.5"}
    with silent_endpoint() as url:
        # Eight retries for throttling, as lab_host's client has: a timeout must not get them.
        ec2 = bounded(ec2_client(url, client_config(env, retries={"mode": "standard", "max_attempts": 8})))
        start = time.monotonic()
        with pytest.raises(botocore.exceptions.ReadTimeoutError) as caught:
            ec2.describe_instances()
        elapsed = time.monotonic() - start
    assert 2 * 0.5 <= elapsed < 2 * 0.5 + 3, elapsed  # two tries of 0.5 s (and a short backoff), not nine
    assert is_timeout(caught.value)
    assert timeout_message(caught.value) == (
        f"AWS ({url}) accepted the connection but did not answer within 0.5 s (tried 2 times): check your network "
        "or AWS_ENDPOINT_URL, then run again.")


@needs_local_cloud
def test_a_client_that_makes_one_attempt_says_so() -> None:
    with silent_endpoint() as url:
        ec2 = bounded(ec2_client(url, client_config({"GPU_LAB_AWS_READ_TIMEOUT": "0.3"},
                                                    retries={"total_max_attempts": 1})))
        with pytest.raises(botocore.exceptions.ReadTimeoutError) as caught:
            ec2.describe_key_pairs()
    assert "did not answer within 0.3 s (tried once)" in timeout_message(caught.value)


def test_connect_timeout_sentence() -> None:
    error = botocore.exceptions.ConnectTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/",
                                                    error="timed out")
    error.gpu_lab_wait = {"attempts": 2, "connect_timeout": 10.0, "read_timeout": 30.0}  # type: ignore[attr-defined]
    assert is_timeout(error)
    assert timeout_message(error) == (
        "AWS (https://ec2.us-east-1.amazonaws.com) did not accept the connection within 10 s (tried 2 times): "
        "check your network or AWS_ENDPOINT_URL, then run again.")


def test_other_errors_are_not_timeouts() -> None:
    assert not is_timeout(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))
    assert not is_timeout(ValueError("x"))


class SlowDown(http.server.BaseHTTPRequestHandler):
    """Answers the first `refusals` calls with EC2's throttling error, then an empty
    DescribeKeyPairs."""

    refusals = 0
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls += 1
        if type(self).calls <= type(self).refusals:
            status, body = 503, ("<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
                                 "exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>")
        else:
            status, body = 200, ('<DescribeKeyPairsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                                 "<requestId>r</requestId><keySet/></DescribeKeyPairsResponse>")
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_down() -> Iterator[tuple[str, type[SlowDown]]]:
    handler = type("Handler", (SlowDown,), {"refusals": 3, "calls": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_throttling_still_gets_every_retry(slow_down: tuple[str, type[SlowDown]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = slow_down
    backoffs: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", backoffs.append)  # botocore's backoff, not waited
    ec2 = bounded(ec2_client(url, client_config({}, retries={"mode": "standard", "max_attempts": 8})))
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert handler.calls == 4  # three refusals (more than the two tries a timeout gets), then the answer
    assert len(backoffs) == 3
