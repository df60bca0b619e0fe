"""The jasco-serve command: bad settings exit 2 before Ray starts; SIGTERM drains in-flight requests, exits 0."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as tp

import pytest
import requests
import soundfile as sf

pytestmark = pytest.mark.service

CLI = [sys.executable, "-m", "jasco_serve.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, words", [
    (["--engines", "/nonexistent/engines"], "does not exist"),
    (["--replicas", "0"], "--replicas must be a positive integer"),
    (["--max-queued", "-3"], "--max-queued must be a positive integer"),
    (["--request-timeout", "0"], "--request-timeout must be a positive number"),
])
def test_bad_settings_exit_2_with_one_line(tiny_engines, args, words):
    cmd = CLI + ["--engines", str(tiny_engines.out)] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jasco-serve: error: ") and words in lines[0], r.stderr


def test_sigterm_drains_in_flight_requests_and_exits_0(tiny_engines, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(CLI + ["--engines", str(tiny_engines.out), "--port", str(port), "--cpus-per-replica", "0",
                                   "--max-batch-prompts", "2", "--request-timeout", "120"],
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "jasco-serve: ready at" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        answers: tp.Dict[int, tp.Union[requests.Response, BaseException]] = {}

        def one(i: int) -> None:
            try:
                answers[i] = requests.post(f"{url}/v1/generate", json={"text": "hard rock", "steps": 15, "seed": i},
                                           timeout=200)
            except BaseException as exc:  # noqa: BLE001 — asserted below
                answers[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while True:  # all three admitted before the signal
            text = requests.get(f"{url}/metrics", timeout=30).text
            m = re.search(r"^jasco_queue_depth (\S+)$", text, re.M)
            if m and float(m.group(1)) == 3:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(timeout=240)
        for i in range(3):
            r = answers[i]
            assert isinstance(r, requests.Response) and r.status_code == 200, r
            wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
            assert sr == 32000 and wav.shape == (320000,)
        assert proc.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert "draining in-flight requests" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
