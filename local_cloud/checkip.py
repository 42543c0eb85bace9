"""A stand-in for https://checkip.amazonaws.com: the address check a launch asks when
gpu_lab_ssh_cidr is empty, with the ways a real network's answer goes wrong.

    with CheckIp() as check:                       # http://127.0.0.1:PORT, a thread
        launch(ip_check_url=check.url())           # "203.0.113.7\n", text/plain
        launch(ip_check_url=check.url("ipv6"))     # "2001:db8::7\n"
        launch(ip_check_url=check.url("portal"))   # a captive portal's login page, 200 text/html
        launch(ip_check_url=check.url("hang"))     # accepted, read, never answered
        launch(ip_check_url=check.refused_url())   # a port that refuses the connection

Paths (any other answers 404):

| path | answer |
| --- | --- |
| `/` | `ADDRESS\\n` (203.0.113.7 unless given), text/plain, as checkip.amazonaws.com |
| `/spaced` | the address with spaces and CRLF around it |
| `/ipv6` | `2001:db8::7\\n`: an IPv6-only network, or the check reached over IPv6 |
| `/portal` | 200 text/html, a Wi-Fi login page (what a captive portal sends for any URL) |
| `/portal511` | 511 Network Authentication Required with the same page (RFC 6585) |
| `/text` | `Service busy, try again later\\n`, text/plain: neither an address nor a page |
| `/empty` | 200 with no body |
| `/hang` | the request is read, nothing is ever written (until the server stops) |

``asked`` lists the paths asked so far, in order. When the context ends the server, its
thread and every hanging request are gone: nothing of it outlives the test.
"""

from __future__ import annotations

import http.server
import socket
import threading
from types import TracebackType

ADDRESS = "203.0.113.7"
IPV6 = "2001:db8::7"
PORTAL_TITLE = "Guest Wi-Fi: log in"
PORTAL = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    f"<title>{PORTAL_TITLE}</title>\n"
    "<style>body { font-family: sans-serif; margin: 4em; } .box { border: 1px solid #ccc; }</style>\n"
    "</head>\n<body>\n<div class=\"box\">\n<h1>Welcome to Guest Wi-Fi</h1>\n"
    "<p>Please accept the terms of use to continue to the internet.</p>\n"
    "<form method=\"post\" action=\"/login\"><input type=\"checkbox\" name=\"terms\"> I accept"
    "<button type=\"submit\">Connect</button></form>\n"
    + "<p class=\"legal\">" + "Terms of use apply. " * 40 + "</p>\n"
    "</div>\n</body>\n</html>\n"
)
TEXT = "Service busy, try again later\n"
HANG_LIMIT_S = 120.0  # a hanging request gives up by itself at the latest after this


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    check: CheckIp


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        check = self.server.check
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        with check.lock:
            check.asked.append(path)
        if path == "/hang":
            check.stopping.wait(HANG_LIMIT_S)
            self.close_connection = True
            return
        answers = {
            "/": (200, "text/plain", f"{check.address}\n"),
            "/spaced": (200, "text/plain", f"  {check.address} \r\n\r\n"),
            "/ipv6": (200, "text/plain", f"{check.ipv6}\n"),
            "/portal": (200, "text/html; charset=utf-8", PORTAL),
            "/portal511": (511, "text/html; charset=utf-8", PORTAL),
            "/text": (200, "text/plain", TEXT),
            "/empty": (200, "text/plain", ""),
        }
        status, kind, body = answers.get(path, (404, "text/plain", "not found\n"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


class CheckIp:
    """The address check on 127.0.0.1 (a free port), serving from a thread once started."""

    def __init__(self, address: str = ADDRESS, ipv6: str = IPV6, host: str = "127.0.0.1") -> None:
        self.address, self.ipv6, self.host = address, ipv6, host
        self.asked: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = _Server((host, 0), _Handler)
        self._server.check = self
        self.port: int = self._server.server_address[1]
        # Bound, never listening: a connection to it is refused at once (Linux answers RST),
        # and no other program can take the port while the check lives.
        self._closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed.bind((host, 0))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="checkip", daemon=True)

    def url(self, path: str = "") -> str:
        """The URL of a path of the check ('' is the good answer)."""
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def refused_url(self) -> str:
        """A URL on this host whose port refuses every connection."""
        return f"http://{self.host}:{self._closed.getsockname()[1]}/"

    def start(self) -> CheckIp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # the hanging requests return (and close their connections)
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self._closed.close()

    def __enter__(self) -> CheckIp:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":  # python -m local_cloud.checkip: serve until Ctrl-C, for a try by hand
    with CheckIp() as served:
        print("\n".join(served.url(p) for p in ("", "spaced", "ipv6", "portal", "portal511", "text", "empty",
                                                "hang")), "\n" + served.refused_url() + "  (refused)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
