# Copyright: gpu_lab developers
# MIT License
"""Bounded waits on AWS for lab_info and lab_host.

botocore waits 60 s for an answer and retries a timed-out call, and a module's own retries
multiply that: an endpoint that accepts connections and never answers gave minutes of
silence. Every client of the modules gets short connect and read timeouts, and a call that
timed out is tried at most TIMEOUT_ATTEMPTS times, whatever the retry count for throttling
(which stays high: AWS answering "slow down" is not AWS being gone). The first call that
gives up ends the work it was part of (lab_info: the region's lookup; lab_host: that lab)
with one sentence (timeout_message).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

try:
    import botocore.config
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# A second try gets past one lost packet; a third would only add another silent wait.
TIMEOUT_ATTEMPTS = 2
CONNECT_TIMEOUT_ENV = "GPU_LAB_AWS_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "GPU_LAB_AWS_READ_TIMEOUT"
# A timeout longer than this is no longer a bound worth the name.
MAX_TIMEOUT_S = 300.0


def timeouts(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(connect, read) timeouts in seconds: the defaults, or the environment's; ValueError
    with the sentence to show when a variable is set to something else than seconds."""
    env = os.environ if environ is None else environ
    return (_seconds(env, CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S),
            _seconds(env, READ_TIMEOUT_ENV, READ_TIMEOUT_S))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise ValueError(f"{name} is {text!r}: set it to a number of seconds between 0 and {MAX_TIMEOUT_S:g} "
                         f"(default {default:g}), or unset it.")
    return value


def longest_wait_s(environ: Mapping[str, str] | None = None) -> float:
    """The longest one call can stay silent before the module gives up (botocore's backoff
    between the tries adds at most a second or two)."""
    connect, read = timeouts(environ)
    return TIMEOUT_ATTEMPTS * (connect + read)


def client_config(environ: Mapping[str, str] | None = None, **extra: Any) -> botocore.config.Config:
    """A client's botocore Config: the bounded timeouts plus the caller's settings (retries,
    pool size). A user's O(aws_config) is merged after it by amazon.aws, so it still wins."""
    connect, read = timeouts(environ)
    return botocore.config.Config(connect_timeout=connect, read_timeout=read, **extra)


def bounded(client: Any) -> Any:
    """The client, made to give up on a call after TIMEOUT_ATTEMPTS timed-out tries. botocore's
    retry settings count every kind of failure alike; its needs-retry event lets a handler
    stop a retry by raising, and each timeout keeps what timeout_message needs to say it."""
    config = client.meta.config

    def give_up_on_silence(caught_exception: BaseException | None = None, attempts: int = 0,
                           **kwargs: Any) -> None:
        if isinstance(caught_exception, (botocore.exceptions.ReadTimeoutError,
                                         botocore.exceptions.ConnectTimeoutError)):
            caught_exception.gpu_lab_wait = {  # type: ignore[union-attr]
                "attempts": attempts, "connect_timeout": config.connect_timeout,
                "read_timeout": config.read_timeout}
            if attempts >= TIMEOUT_ATTEMPTS:
                raise caught_exception
        return None  # no opinion: botocore's own retry rules decide

    client.meta.events.register("needs-retry", give_up_on_silence)
    return client


def is_timeout(error: BaseException) -> bool:
    return isinstance(error, (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError))


def timeout_message(error: BaseException) -> str:
    """One sentence for a call that timed out: where, how long, how often, what to do."""
    wait = getattr(error, "gpu_lab_wait", {})
    kwargs = getattr(error, "kwargs", {}) or {}
    endpoint = _origin(str(kwargs.get("endpoint_url") or "")) or "its endpoint"
    tried = _tried(int(wait.get("attempts") or 1))
    advice = "check your network or AWS_ENDPOINT_URL, then run again."
    if isinstance(error, botocore.exceptions.ConnectTimeoutError):
        seconds = wait.get("connect_timeout") or CONNECT_TIMEOUT_S
        return f"AWS ({endpoint}) did not accept the connection within {seconds:g} s ({tried}): {advice}"
    seconds = wait.get("read_timeout") or READ_TIMEOUT_S
    return f"AWS ({endpoint}) accepted the connection but did not answer within {seconds:g} s ({tried}): {advice}"


def _origin(url: str) -> str:
    """https://ec2.us-east-1.amazonaws.com/ -> https://ec2.us-east-1.amazonaws.com"""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _tried(attempts: int) -> str:
    return "tried once" if attempts == 1 else f"tried {attempts} times"
