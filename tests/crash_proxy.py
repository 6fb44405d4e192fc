"""Crashing a server at an exact point of a client's conversation with it, for the fault tests.

A client's requests that follow each other within milliseconds (an alias move, then a stage move) leave no
moment to aim a kill at by polling. `CrashProxy` stands between the client and the server: it relays each
request and, when it has relayed the server's answer to the request that `after` picks out, it SIGKILLs
the server's process group (as `crash` does) and stops listening. Every later request of the client then
finds nothing listening (connection refused), as it would if it had talked to the crashed server directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from tools.ports import free_port

# Hop-by-hop headers (RFC 9110, section 7.6.1) and what `requests` recomputes itself.
SKIPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class CrashProxy:
    """An HTTP proxy on a free loopback port in front of `upstream` (a URL), until `crash` has been called once.

    `after(method, path)` says whether the answer to this request is the last one the server gives: that
    answer is relayed, and `crash()` is called before the next request can be read. `crashed_after` then
    holds that request ("POST /api/...").
    """

    def __init__(self, upstream: str, *, after: Callable[[str, str], bool], crash: Callable[[], None]) -> None:
        self.upstream = upstream.rstrip("/")
        self.after, self.crash = after, crash
        self.crashed_after: str | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in SKIPPED_HEADERS}
                with proxy._lock:
                    if proxy.crashed_after is not None:
                        # Raced the crash on a connection accepted before it: answer as a dead server would.
                        self.close_connection = True
                        return
                    answer = requests.request(
                        self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=120
                    )
                    last = proxy.after(self.command, self.path.split("?", 1)[0])
                    if last:
                        proxy.crashed_after = f"{self.command} {self.path}"
                        proxy.crash()
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in SKIPPED_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                if last:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(answer.content)
                if last:
                    threading.Thread(target=proxy._stop_listening, daemon=True).start()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _stop_listening(self) -> None:
        # Closing the listening socket makes the next connection attempt fail at once (refused).
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CrashProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_listening()
