"""Answers during the start-up: JSON 503 + ``Retry-After`` on every path until the service is ready.

Ray Serve's HTTP proxy listens before any application can be deployed, and until then it answers every path
with a plain-text 404. Two ways to keep the service's error format (:class:`.http_io.HTTPError`) instead:

* :class:`StartupFront` (the private local instance): ``jasco-serve`` itself listens on the service's port
  before Ray starts. Its socket has ``SO_REUSEPORT``, as the proxy's has, and a one-instruction classic BPF
  program (``SO_ATTACH_REUSEPORT_CBPF``) sends every new connection of the port group to it (the group's
  first socket). When the application is ready the program points at the proxy's socket (the second), the
  connections already accepted or queued are answered, and the front closes: the proxy takes the port over
  without a connection refused or a 404 in between.
* :func:`starting_app` (``--address``, or where the front cannot be used): a placeholder Serve application on
  the service's name and route prefix, replaced by the real one; it narrows the proxy's 404 window to the
  placeholder's own deployment.
"""
from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import typing as tp
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .http_io import HTTPError

RETRY_AFTER_S = 5
STARTING = "the service is starting (loading the engines and warming up); retry"
HEAD_NODE = "node:__internal_head__"  # next to Serve's controller, like the ingress
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h> (Linux ≥ 4.5)
MAX_BODY_READ = 1 << 20  # a request body the front reads (and drops) before answering


def _answer() -> tp.Tuple[bytes, tp.List[tp.Tuple[str, str]]]:
    """Body and headers of the start-up 503, built like every other error of the service."""
    response = HTTPError(503, STARTING, retry_after=RETRY_AFTER_S).response()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers
               if k.lower() not in (b"content-length",)]
    return bytes(response.body), headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # a client that sends no request line is dropped

    def _unavailable(self) -> None:
        length = self.headers.get("content-length", "")
        if length.isdigit():  # read the body (bounded): a close with unread data would reset the connection
            self.rfile.read(min(int(length), MAX_BODY_READ))
        body, headers = self.server.answer  # type: ignore[attr-defined]
        self.send_response(503)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _unavailable

    def log_message(self, format: str, *args: tp.Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer = _answer()


def _steer_to(sock: socket.socket, index: int) -> tp.Any:
    """Send the port group's new connections to its ``index``-th socket (classic BPF: ``ret #index``); the
    returned buffer holds the program and must live until the kernel has copied it (setsockopt returns)."""
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, index))  # BPF_RET | BPF_K
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, struct.pack("HL", 1, ctypes.addressof(program)))
    return program


class StartupFront:
    """JSON 503 on ``host:port`` from before Ray starts until :meth:`hand_over` (see the module docstring)."""

    def __init__(self, server: ThreadingHTTPServer):
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="jasco-startup-front", daemon=True)
        self.thread.start()

    @classmethod
    def open(cls, host: str, port: int) -> tp.Optional["StartupFront"]:
        """The front listening, or None where it cannot share the port with the proxy (no ``SO_REUSEPORT``,
        Ray Serve's disabled with ``SERVE_SOCKET_REUSE_PORT_ENABLED=0``, no BPF steering, port taken)."""
        if not hasattr(socket, "SO_REUSEPORT") or os.environ.get("SERVE_SOCKET_REUSE_PORT_ENABLED", "1") != "1":
            return None
        server = _Server((host, port), _Handler, bind_and_activate=False)
        server.socket.close()  # made for AF_INET by the constructor; the right family here
        try:
            server.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            server.socket.bind((host, port))
            _steer_to(server.socket, 0)  # this socket: the first of the group (the proxy's joins later)
            server.server_activate()
        except OSError:
            server.server_close()
            return None
        return cls(server)

    def hand_over(self) -> None:
        """New connections to the proxy (the group's second socket); answer what was queued here; close."""
        try:
            _steer_to(self.server.socket, 1)
        except OSError:
            pass
        self.server.shutdown()
        for _ in range(1024):  # the connections queued before the switch: answered (503)
            if not select.select([self.server.socket], [], [], 0)[0]:
                break
            self.server._handle_request_noblock()
        self.close()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


def starting_app() -> tp.Any:
    """The placeholder Serve application: 503 + ``Retry-After`` on every path."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="JascoStarting", num_replicas=1, max_ongoing_requests=1000,
                      ray_actor_options={"num_cpus": 0, "resources": {HEAD_NODE: 0.001}})
    class JascoStarting:
        async def __call__(self, request: Request) -> JSONResponse:
            return HTTPError(503, STARTING, retry_after=RETRY_AFTER_S).response()

    return JascoStarting.bind()
