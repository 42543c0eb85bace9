"""RunInstances' idempotency token, which moto stores but does not honour.

On AWS, a RunInstances request that repeats the ClientToken of an earlier one launches
nothing and answers with the earlier reservation, so two launches of one lab that race each
other get one instance. moto launches again. This replays the first answer for a repeated
token (the same token with other parameters is IdempotentParameterMismatch on AWS; replayed
here too: the project never does that), and makes requests with one token wait for each other.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any


class RunInstancesTokens:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token_locks: dict[str, threading.Lock] = {}
        self._answers: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}

    def reset(self) -> None:
        with self._lock:
            self._answers.clear()

    def serve(self, body: bytes, environ: dict[str, Any], app: Callable[..., Iterable[bytes]],
              start_response: Callable[..., Any]) -> Iterable[bytes] | None:
        """The answer for a RunInstances request with a known token; None to let moto answer."""
        token = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("ClientToken", [""])[0]
        if not token:
            return None
        with self._lock:
            token_lock = self._token_locks.setdefault(token, threading.Lock())
        with token_lock:
            if token not in self._answers:
                captured: dict[str, Any] = {}

                def capture(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                    captured["status"], captured["headers"] = status, headers
                    return lambda data: None

                payload = b"".join(app(environ, capture))
                if not captured["status"].startswith("200"):
                    start_response(captured["status"], captured["headers"])
                    return [payload]
                self._answers[token] = (captured["status"], captured["headers"], payload)
            status, headers, payload = self._answers[token]
        start_response(status, headers)
        return [payload]
