"""A jasco-serve command run as a real process (the way a user starts it) for the service tests."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "jasco_serve.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``jasco-serve ARGS`` with its own TMPDIR (to see what it leaves behind) and its output in a log file."""

    def __init__(self, args: tp.Sequence[str], workdir: Path, port: tp.Optional[int] = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="js-", dir="/tmp"))  # short: Ray's socket paths live under it
        self.log_path = workdir / "serve.log"
        self._log = open(self.log_path, "w+")
        env = {**os.environ, "TMPDIR": str(self.tmp)}
        self.proc = subprocess.Popen(CLI + list(args) + ["--port", str(self.port)], stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while "jasco-serve: ready at" not in self.log:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log[-3000:]
            time.sleep(0.5)
        return self

    def wait_for(self, words: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.log:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log[-3000:]
            time.sleep(0.2)

    def listening(self) -> tp.List[tp.Tuple[str, int, str]]:
        """(address, port, process name) of every listening TCP socket of the process tree."""
        root = psutil.Process(self.proc.pid)
        found = []
        for p in [root, *root.children(recursive=True)]:
            try:
                conns, name = p.net_connections(kind="inet"), p.name()
            except psutil.Error:
                continue
            found += [(c.laddr.ip, c.laddr.port, name) for c in conns if c.status == psutil.CONN_LISTEN]
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL whatever is left of the process group this test started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)
        if not self._log.closed:
            self._log.close()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def left_behind(tmp: Path) -> tp.List[Path]:
    """What a run left in its TMPDIR, less ONNX Runtime's own ``.ses`` (a session-id file every
    onnxruntime.InferenceSession writes to $TMPDIR and keeps for the next process)."""
    return [p for p in tmp.iterdir() if p.name != ".ses"]


def is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback
