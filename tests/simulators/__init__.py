"""Loopback HTTP simulators of the ticket systems, for integration tests and benchmarks.

This module holds the shared plumbing: a fake clock and a threaded HTTP/1.1 server on
127.0.0.1 with transport-level faults (latency, dropped connections). Each simulator subclasses
LoopbackServer and implements ``handle``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

# 2026-01-01 00:00:00 UTC: a fixed, readable start so timestamps in assertions are predictable.
DEFAULT_EPOCH = 1_767_225_600.0


class Clock(Protocol):
    """Wall clock in UNIX seconds."""

    def now(self) -> float:
        """Current time in UNIX seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Current time in UNIX seconds."""
        return time.time()


class FakeClock:
    """A manual wall clock in UNIX seconds; tests advance it instead of sleeping."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current fake time in UNIX seconds."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds


@dataclass
class Request:
    """An HTTP request as a simulator sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    """A simulator's answer and what happens to it after ``handle`` returned.

    In order: ``after`` hooks run (the response is final); the answer is held ``hold_s``
    seconds (woken early by ``stop``, never holding a lock); ``finished`` hooks run; then the
    answer is sent, or with ``drop`` the connection is closed without an answer.
    """

    status: int
    body: Any = None  # JSON value, str (text/html), bytes (Content-Type from headers) or None
    headers: dict[str, str] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)
    hold_s: float = 0.0
    drop: bool = False
    finished: list[Callable[[], None]] = field(default_factory=list)


class LoopbackServer:
    """Threaded HTTP/1.1 server on an ephemeral 127.0.0.1 port with latency and drop faults."""

    server_header = "Simulator"

    def __init__(self) -> None:
        self.ssl_context: ssl.SSLContext | None = None  # set before start() to serve HTTPS
        self.port = 0  # 0: an ephemeral port
        self.latency_s = 0.0
        self.errors: list[BaseException] = []  # simulator bugs, surfaced to tests
        self._drops = 0
        self._drop_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, req: Request) -> Response:
        """Answer one request (implemented by each simulator)."""
        raise NotImplementedError

    def handle_dropped(self, req: Request) -> None:
        """Hook: a request whose connection was dropped on purpose."""

    def drop_next(self, count: int = 1) -> None:
        """Close the next ``count`` connections after reading the request, without answering."""
        with self._drop_lock:
            self._drops += count

    def reset_faults(self) -> None:
        """Clear pending connection drops and latency."""
        with self._drop_lock:
            self._drops = 0
        self.latency_s = 0.0

    def start(self) -> Self:
        """Bind a loopback port (``port``, 0: ephemeral) and serve in a background thread."""
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.sim = self
        if self.ssl_context is not None:  # the handshake runs in the handler thread (setup)
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, hang up open connections and join every thread."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()  # wakes requests sleeping in injected latency
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()  # joins handler threads (block_on_close)
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (``https`` with an ``ssl_context``)."""
        if self._server is None:
            raise RuntimeError("simulator is not running")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def _dispatch(self, req: Request) -> Response | None:
        """Apply transport faults, then ``handle``; None means: drop the connection."""
        if self.latency_s:
            self._stopping.wait(self.latency_s)
        with self._drop_lock:
            drop, self._drops = self._drops > 0, max(0, self._drops - 1)
        if drop:
            self.handle_dropped(req)
            return None
        try:
            resp = self.handle(req)
        except Exception as exc:  # a simulator bug must surface as a 500, not a hang
            log.exception("simulator error on %s %s", req.method, req.path)
            self.errors.append(exc)
            resp = Response(500, {"error": {"message": "Simulator error", "detail": repr(exc)}})
        self._run_hooks(req, resp.after)
        if resp.hold_s > 0:
            self._stopping.wait(resp.hold_s)
        self._run_hooks(req, resp.finished)
        return None if resp.drop else resp

    def _run_hooks(self, req: Request, hooks: list[Callable[[], None]]) -> None:
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # like an async business rule: never fails the response
                log.exception("simulator hook failed on %s %s", req.method, req.path)
                self.errors.append(exc)


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads so server_close() joins them: no thread outlives stop().
    daemon_threads = False
    block_on_close = True
    sim: LoopbackServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._conns: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._closing = False

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            if alive and self._closing:
                _hang_up(conn)
            (self._conns.add if alive else self._conns.discard)(conn)

    def close_connections(self) -> None:
        """Hang up idle keep-alive connections so their handler threads finish."""
        with self._conn_lock:
            self._closing = True
            for conn in self._conns:
                _hang_up(conn)


def _hang_up(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    sys_version = ""
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, alive=True)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ssl.SSLError):  # e.g. a client that does not trust the cert
                self.server.track(self.connection, alive=False)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, alive=False)

    def version_string(self) -> str:
        return self.server.sim.server_header

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator " + format, *args)

    def do_GET(self) -> None:
        """Serve any method through the simulator."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        resp = self.server.sim._dispatch(Request(self.command, url.path, query, headers, body))
        if resp is None:
            self.close_connection = True
            _hang_up(self.connection)
            return
        self._send(resp)

    def _send(self, resp: Response) -> None:
        if isinstance(resp.body, bytes):
            payload, ctype = resp.body, ""  # the simulator set Content-Type itself
        elif isinstance(resp.body, str):
            payload, ctype = resp.body.encode(), "text/html;charset=UTF-8"
        else:
            payload = b"" if resp.body is None else json.dumps(resp.body).encode()
            ctype = "application/json;charset=UTF-8"
        # The client may have given up (read timeout) while the answer was held: never raise.
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # the client gave up
            self.send_response(resp.status)  # buffered until end_headers()
            for name, value in resp.headers.items():
                self.send_header(name, value)
            if payload and ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET
