"""Every fenced command and code example of README.md and docs/*.md is run, so an example that stops working fails CI.

The examples run in order, in one sandbox folder per session, with bash (``python`` blocks with python), as a
newcomer would paste them after the set-up: README's ``jasco-export demo --out out/demo`` writes the tiny export
the other examples use. Substitutions: a real model folder (``engines/jasco-chords-drums-400M``) becomes the
tiny export, ``my_drum_stem.wav`` / ``my_30s_drum_stem.wav`` are synthetic drum stems written first, the
service port 8000 becomes a free port, and ``jasco-export`` / ``jasco-run`` / ``jasco-serve`` run this checkout's
code (``python -m …``). Annotations, on the line before a block:

* ``<!-- example: skip: WHY -->`` — not run (package installs, real weights, GPUs, clusters); keep them few;
* ``<!-- example: server -->`` — a long-running ``jasco-serve``: started in the background, waited for until
  ready, stopped at the next server block or the end of the file; the blocks after it talk to it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT
from serve_process import free_port

pytestmark = pytest.mark.service

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SUBSTITUTE = {"engines/jasco-chords-drums-400M": "out/demo/engines/chords-drums",
              "engines/M": "out/demo/engines/chords-drums"}
PRELUDE = """set -euo pipefail
jasco-export() { python -m jasco_export.cli "$@"; }
jasco-run() { python -m jasco_runtime.cli "$@"; }
jasco-serve() { python -m jasco_serve.cli "$@"; }
"""
BLOCK_TIMEOUT = 900  # the set-up export takes ~1 min on 2 idle cores, 10 on a machine at load 16


@dataclass
class Example:
    doc: str
    line: int
    lang: str
    code: str
    note: str  # "", "skip: …" or "server"


def examples(doc: str) -> tp.List[Example]:
    lines = (ROOT / doc).read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if m:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            note = re.match(r"^<!-- example: (.*?) -->$", lines[k].strip()) if k >= 0 else None
            out.append(Example(doc, i + 1, m.group(1), "\n".join(lines[i + 1:j]), note.group(1) if note else ""))
            i = j
        i += 1
    return out


def test_every_block_is_runnable_or_marked():
    """Only shell and Python blocks hold commands; a skip says why; nothing unknown is silently ignored."""
    for doc in DOCS:
        for ex in examples(doc):
            assert ex.lang in ("bash", "python", "text", "json"), (doc, ex.line, ex.lang)
            assert ex.note in ("", "server") or re.match(r"skip: \S", ex.note), (doc, ex.line, ex.note)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = tmp_path_factory.mktemp("docs-examples")
    rng = np.random.default_rng(0)
    for name, seconds in (("my_drum_stem.wav", 10), ("my_30s_drum_stem.wav", 30)):
        n = seconds * 44100
        hits = np.zeros(n, np.float32)
        hits[:: 44100 // 4] = 1.0
        wav = np.convolve(hits, rng.standard_normal(2000).astype(np.float32) * np.exp(-np.arange(2000) / 300))[:n]
        sf.write(str(box / name), 0.3 * wav, 44100)
    # a "song" for the extraction examples: a C–Am–F–G pad (2.5 s each) over the drum loop, as mp3
    t = np.arange(10 * 44100) / 44100
    chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    pad = sum(np.sin(2 * np.pi * f * t) * ((t // 2.5) == k) for k, notes in enumerate(chords) for f in notes)
    song = (0.15 * pad + sf.read(str(box / "my_drum_stem.wav"), dtype="float32")[0]).astype(np.float32)
    sf.write(str(box / "song.mp3"), song / max(1.0, float(np.abs(song).max())), 44100, format="MP3")
    return box


class _Server:
    def __init__(self) -> None:
        self.proc: tp.Optional[subprocess.Popen] = None

    def start(self, code: str, cwd: Path, env: tp.Dict[str, str], port: int, where: str) -> None:
        self.stop()
        log = cwd / f"server-{port}.log"
        self.log = log
        code = code.replace("jasco-serve ", f"jasco-serve --port {port} ", 1)  # before any trailing comment
        self.proc = subprocess.Popen(["bash", "-c", PRELUDE + code], cwd=cwd, env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while "jasco-serve: ready at" not in log.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"{where}: {log.read_text()[-3000:]}"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None


def _prepare(code: str, port: int) -> str:
    for old, new in SUBSTITUTE.items():
        code = code.replace(old, new)
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("doc", DOCS)
def test_doc_examples_run(doc, sandbox):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "runtime"), str(ROOT / "export"), str(ROOT / "serve"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg"}
    if doc != "README.md" and not (sandbox / "out" / "demo").exists():  # README's set-up ran elsewhere / not yet
        r = subprocess.run([sys.executable, "-m", "jasco_export.cli", "demo", "--out", "out/demo"], cwd=sandbox,
                           env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
        assert r.returncode == 0, r.stderr[-3000:]
    port = free_port()
    server = _Server()
    shell_env = ""  # `export X=…` lines of earlier blocks of this doc carry over, as in one terminal
    ran = 0
    try:
        for ex in examples(doc):
            where = f"{doc}:{ex.line}"
            if ex.note.startswith("skip") or ex.lang not in ("bash", "python"):
                continue
            if ex.note == "server":  # a fresh port per server: the previous one's Ray proxy may hold its port a while
                port = free_port()
            code = _prepare(ex.code, port)
            if ex.note == "server":
                server.start(shell_env + code, sandbox, env, port, where)
                ran += 1
                continue
            if ex.lang == "python":
                script = sandbox / f"example_{ex.line}.py"
                script.write_text(code)
                cmd = ["bash", "-c", PRELUDE + shell_env + f"python {script.name}"]
            else:
                cmd = ["bash", "-c", PRELUDE + shell_env + code]
            r = subprocess.run(cmd, cwd=sandbox, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
            assert r.returncode == 0, f"{where} exited {r.returncode}:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"
            shell_env += "".join(f"{ln.split('#')[0].strip()}\n" for ln in code.splitlines()
                                 if ln.startswith("export "))
            ran += 1
    finally:
        server.stop()
    skipped = [ex for ex in examples(doc) if ex.note.startswith("skip")]
    if not ran and not skipped:
        pytest.skip(f"{doc} has no examples")
