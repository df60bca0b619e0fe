"""The jasco-serve command: bad settings exit 2 before Ray starts; SIGTERM drains in-flight requests, exits 0."""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as tp
from pathlib import Path

import psutil
import pytest
import requests
import soundfile as sf

from serve_process import left_behind

pytestmark = pytest.mark.service

CLI = [sys.executable, "-m", "jasco_serve.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_gpu() -> bool:
    from jasco_serve.preflight import local_gpus

    return local_gpus() == 0


@pytest.mark.parametrize("args, words", [
    (["--engines", "/nonexistent/engines"], "does not exist"),
    (["--replicas", "0"], "--replicas must be a positive integer"),
    (["--replicas", "many"], "--replicas: must be a positive integer or auto"),
    (["--max-queued", "-3"], "--max-queued must be a positive integer"),
    (["--request-timeout", "0"], "--request-timeout must be a positive number"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    # the start-up failures of the new-user sweep (SC08, SC09, SC12, SC15 and the busy port): before Ray starts
    (["--host", "999.1.1.1"], "--host '999.1.1.1' is not an IP address"),
    (["--host", "192.0.2.123"], "--host 192.0.2.123 is not an address of this machine"),
    (["--provider", "cuda"], "ONNX Runtime here has no CUDAExecutionProvider"),
    (["--precision", "int8"], "has no int8 flow_step graph (has: fp16, fp32)"),
    (["--backend", "tensorrt"], "has no TensorRT engines"),
    (["--gpus-per-replica", "1"], "need 1 GPU(s), this machine has 0"),
    (["--replicas", "64", "--cpus-per-replica", "1"], "need 64 CPUs, this machine has"),
    (["--api-key-file", "/nonexistent/keys.txt"], "--api-key-file /nonexistent/keys.txt does not exist"),
    (["--replicas", "auto", "--min-replicas", "3", "--max-replicas", "2"], "--min-replicas (3) is above --max-replicas (2)"),
])
def test_bad_settings_exit_2_with_one_line(tiny_engines, tmp_path, args, words):
    if "--provider" in args:
        ort = pytest.importorskip("onnxruntime")
        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this machine has the CUDA provider")
    if "--gpus-per-replica" in args and not _no_gpu():
        pytest.skip("this machine has a GPU")
    cmd = CLI + ["--engines", str(tiny_engines.out)] + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jasco-serve: error: ") and words in lines[0], r.stderr
    assert left_behind(tmp_path) == []  # Ray never started: no session folder


def test_busy_port_exits_2_before_ray_starts(tiny_engines, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(CLI + ["--engines", str(tiny_engines.out), "--port", str(port)], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.strip() == (
        f"jasco-serve: error: port {port} on 127.0.0.1 is already in use (another jasco-serve?); pick another "
        "--port or stop the program listening there"), r.stderr
    assert left_behind(tmp_path) == []


def _ray_agents_running(svc) -> bool:
    """Whether the raylet's dashboard and runtime-env agents run under the service (Ray is up)."""
    try:
        procs = psutil.Process(svc.proc.pid).children(recursive=True)
    except psutil.Error:
        return False
    text = []
    for p in procs:
        try:
            text.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    joined = "\n".join(text)
    return all(any(w in joined for w in words) for words in (("DashboardAgent", "dashboard/agent.py"),
                                                              ("RuntimeEnvAgent", "runtime_env/agent/main.py")))


def _alive(procs: tp.Sequence[psutil.Process]) -> tp.List[str]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.Error:
            pass
    return left


@pytest.mark.parametrize("when, sig", [("session-folder", signal.SIGTERM),  # Ray starting
                                       ("ray-running", signal.SIGTERM),  # SS03: Ray up, application not ready
                                       ("ray-running", signal.SIGINT)])  # SS04
def test_signal_during_start_up_exits_128_plus_signal_and_leaves_nothing(tiny_engines, tmp_path, when, sig):
    """SS01–SS04: a signal during the start-up: exit 143 / 130 with one line (SS01 was exit 15, SS02 a
    KeyboardInterrupt traceback), and when the command has returned no process of its Ray instance is left (the
    raylet's agents used to outlive it by a minute) and nothing is left in $TMPDIR (LR01)."""
    from serve_process import ServeProcess

    svc = ServeProcess(["--engines", str(tiny_engines.out), "--cpus-per-replica", "0"], tmp_path)
    try:
        deadline = time.monotonic() + 180
        ready = (lambda: any(svc.tmp.iterdir())) if when == "session-folder" else (lambda: _ray_agents_running(svc))
        while not ready():
            assert svc.proc.poll() is None and time.monotonic() < deadline, svc.log
            time.sleep(0.1)
        assert "ready at" not in svc.log, svc.log
        tree = psutil.Process(svc.proc.pid).children(recursive=True)
        sent = time.monotonic()
        os.kill(svc.proc.pid, sig)
        rc = svc.proc.wait(timeout=60)
        took = time.monotonic() - sent
        name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        assert rc == 128 + sig, svc.log
        assert svc.log.strip().splitlines() == [f"jasco-serve: {name} during start-up; stopped"], svc.log
        assert took < 30, took
        left = _alive(tree)
        for _ in range(20):  # "within a few seconds": processes that are exiting get 2 s
            if not left:
                break
            time.sleep(0.1)
            left = _alive(tree)
        assert not left, left
        assert left_behind(svc.tmp) == [], left_behind(svc.tmp)
        assert not [p for p in psutil.process_iter(["cmdline"]) if str(svc.tmp) in " ".join(p.info["cmdline"] or [])]
    finally:
        svc.cleanup()


def test_start_up_answers_json_503_until_ready(tiny_engines, tmp_path):
    """SU01: from the moment the port accepts connections until the service is ready every answer on /v1/*,
    /healthz and /readyz is the service's JSON 503 with Retry-After (never the proxy's plain-text 404); then
    the real answers, and they stay."""
    from serve_process import ServeProcess

    svc = ServeProcess(["--engines", str(tiny_engines.out), "--cpus-per-replica", "0"], tmp_path)
    calls = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/models"), ("POST", "/v1/generate")]
    answers: tp.List[tp.Tuple[bool, str, requests.Response]] = []  # (ready line printed, path, answer)
    try:
        deadline = time.monotonic() + 300
        i = 0
        while True:
            assert svc.proc.poll() is None and time.monotonic() < deadline, svc.log[-3000:]
            method, path = calls[i % len(calls)]
            i += 1
            ready = "jasco-serve: ready at" in svc.log  # read before the request: a 503 after it is a failure
            try:
                r = requests.request(method, svc.url + path, json={} if method == "POST" else None, timeout=30)
            except requests.ConnectionError:
                assert not answers, "the port stopped accepting connections after it had answered"
                time.sleep(0.05)
                continue
            answers.append((ready, path, r))
            if ready and path == "/healthz" and r.status_code == 200:
                break
            time.sleep(0.02)
        assert svc.stop(signal.SIGTERM, timeout=120) == 0, svc.log[-3000:]
    finally:
        svc.cleanup()
    plain = [(path, r.status_code, r.text[:80]) for _, path, r in answers
             if not r.headers.get("content-type", "").startswith("application/json")]
    assert not plain, f"{len(plain)} of {len(answers)} answers not JSON, e.g. {plain[:3]}"
    first_real = next(k for k, (_, _, r) in enumerate(answers) if r.status_code != 503)
    assert first_real > 0, "no answer during the start-up: the test saw nothing to check"
    for ready, path, r in answers[:first_real]:
        assert not ready, (path, r.status_code)
        assert r.headers.get("content-type", "").startswith("application/json"), (path, r.status_code, r.text[:200])
        body = r.json()
        assert list(body) == ["error"] and "starting" in body["error"] and len(body["error"]) <= 300, body
        assert r.headers.get("retry-after", "").isdigit(), dict(r.headers)
    for ready, path, r in answers[first_real:]:  # the real application: no 503, no 404, JSON everywhere
        assert r.status_code in (200, 400) and r.headers["content-type"].startswith("application/json"), (
            path, r.status_code, r.text[:200])
    print(f"{first_real} start-up 503(s), then {len(answers) - first_real} answer(s) of the application")


def test_sigterm_drains_in_flight_requests_and_exits_0(tiny_engines, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w+")
    tmp = Path(tempfile.mkdtemp(prefix="js-", dir="/tmp"))  # the process's TMPDIR: what it leaves behind
    proc = subprocess.Popen(CLI + ["--engines", str(tiny_engines.out), "--port", str(port), "--cpus-per-replica", "0",
                                   "--max-batch-prompts", "2", "--request-timeout", "120"],
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
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
        text = (tmp_path / "serve.log").read_text()
        assert "draining in-flight requests" in text
        # quiet and clean: no colour codes, no Ray shutdown noise, no session folder left in $TMPDIR
        assert "\x1b[" not in text and "graceful_shutdown" not in text and "Traceback" not in text, text
        assert left_behind(tmp) == [], left_behind(tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
