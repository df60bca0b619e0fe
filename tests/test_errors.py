"""The error contract (README "Error contract"): bad input → one line naming the problem and the fix on
stderr, exit 2, nothing written; SIGTERM/SIGINT → 143/130, nothing left behind.  One test per case family
of issue 8 §4.  The CLIs run in-process (``main([...])``) except where a real process is the point (signals)."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, as_schema_2_0

RUN_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "export"), str(ROOT / "runtime")])}


# -- helpers ----------------------------------------------------------------------------------------------
def run_cli(capfd, *args: str) -> tp.Tuple[int, tp.List[str], str]:
    """``jasco-run ARGS --no-progress`` in-process → (exit code, stderr lines, stdout); fd-level capture, so
    anything a native library prints counts against the one-line rule."""
    from jasco_runtime.cli import main

    code = main([*args, "--no-progress"])
    cap = capfd.readouterr()
    return code, cap.err.strip().splitlines(), cap.out


def assert_one_line(code: int, lines: tp.List[str], *fragments: str, expected_code: int = 2) -> None:
    assert code == expected_code, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("jasco-run: error: ") or expected_code != 2, lines
    for f in fragments:
        assert f in lines[0], lines[0]


def files_in(folder: Path) -> tp.List[str]:
    """Every entry of ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def engines_copy(tiny_engines, tmp_path) -> Path:
    """A private copy of the tiny export folder, to damage."""
    return Path(shutil.copytree(tiny_engines.out, tmp_path / "engines"))


@pytest.fixture
def no_engine_loading(monkeypatch):
    """Fail the test if the engines are loaded: argument checks must come before any heavy work."""
    from jasco_runtime.pipeline import JascoPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("engines were loaded before the arguments were validated")

    monkeypatch.setattr(JascoPipeline, "from_dir", refuse)


# -- damaged export folder ----------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_manifest(edit: tp.Callable[[dict], tp.Any]) -> tp.Callable[[Path], None]:
    def damage(folder: Path) -> None:
        m = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps(edit(m)))
    return damage


def _schema_2_0(damage: tp.Callable[[Path], None]) -> tp.Callable[[Path], None]:
    """The same damage to a folder written before schema 2.1 (no digests): the engine's own checks name it."""
    def legacy(folder: Path) -> None:
        as_schema_2_0(folder)
        damage(folder)
    return legacy


def _garbage_of_the_same_size(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _drop_sample_rate(m: dict) -> dict:
    del m["audio"]["sample_rate"]
    return m


DAMAGE = {
    # name: (damage(folder), fragments of the message, fails before the engines load)
    # a recorded size that differs: named when the folder opens (schema 2.1 digests)
    "onnx-truncated": (lambda f: _truncate(f / "flow_step.fp32.onnx"),
                       ["flow_step.fp32.onnx has", "the manifest records", "copy the export folder again"], True),
    "onnx-other-graph": (lambda f: shutil.copy(f / "text_encoder.fp32.onnx", f / "flow_step.fp32.onnx"),
                         ["flow_step.fp32.onnx has", "the manifest records"], True),
    # the same size, or no digests (a schema 2.0 folder): the engine's own checks
    "onnx-garbage": (lambda f: _garbage_of_the_same_size(f / "text_encoder.fp32.onnx"),
                     ["text_encoder.fp32.onnx", "damaged or not an ONNX graph"], False),
    "onnx-truncated-2.0": (_schema_2_0(lambda f: _truncate(f / "flow_step.fp32.onnx")),
                           ["ONNX Runtime cannot load", "flow_step.fp32.onnx", "re-run jasco-export"], False),
    "onnx-other-graph-2.0": (_schema_2_0(lambda f: shutil.copy(f / "text_encoder.fp32.onnx", f / "flow_step.fp32.onnx")),
                             ["is not the flow_step graph the manifest declares", "re-run jasco-export"], False),
    "tokenizer-garbage": (lambda f: (f / "tokenizer.json").write_bytes(b'{"x\x00\xff'),
                          ["tokenizer.json is damaged", "re-run jasco-export"], False),
    "tokenizer-not-a-tokenizer": (lambda f: (f / "tokenizer.json").write_text('{"model": 1}'),
                                  ["tokenizer.json is damaged"], False),
    "tables-truncated": (lambda f: _truncate(f / "tables.npz"), ["tables.npz is damaged"], False),
    "tables-garbage": (lambda f: (f / "tables.npz").write_bytes(b"PK\x03\x04" + bytes(200)),
                       ["tables.npz is damaged"], False),
    "manifest-list": (_edit_manifest(lambda m: [m]), ["must be an object, got list", "re-run jasco-export"], True),
    "manifest-no-sample-rate": (_edit_manifest(_drop_sample_rate), ["lacks 'audio.sample_rate'"], True),
    "manifest-sample-rate-text": (_edit_manifest(lambda m: {**m, "audio": {**m["audio"], "sample_rate": "32k"}}),
                                  ["'audio.sample_rate' must be int"], True),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_export_folder_is_one_line(case, engines_copy, out_dir, capfd, monkeypatch):
    damage, fragments, before_engines = DAMAGE[case]
    damage(engines_copy)
    if before_engines:
        monkeypatch.setattr("jasco_runtime.pipeline.JascoPipeline.from_dir",
                            lambda *a, **k: pytest.fail("a damaged manifest must fail before the engines load"))
    code, lines, _ = run_cli(capfd, "--engines", str(engines_copy), "--text", "x", "--steps", "1",
                             "--out", str(out_dir / "o.wav"))
    assert_one_line(code, lines, *fragments)
    assert files_in(out_dir) == []


# -- generation settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--steps", "-1"], "steps must be between 1"),
    (["--steps", "0"], "steps must be between 1"),  # was: silently 10 steps
    (["--solver", "dopri5", "--rtol", "0"], "rtol must be > 0"),
    (["--solver", "dopri5", "--atol=-1e-5"], "atol must be > 0"),
    (["--solver", "dopri5", "--atol", "-1e-5"], "argument --atol: expected one argument (see jasco-run generate --help)"),
    (["--solver", "dopri5", "--rtol", "nan"], "rtol must be a finite number"),
    (["--rtol", "1e-3"], "rtol/atol apply to the adaptive dopri5 solver only"),  # euler default: was ignored
    (["--solver", "heun", "--atol", "1e-3"], "rtol/atol apply to the adaptive dopri5 solver only"),
    (["--solver", "dopri5", "--steps", "5"], "steps applies to the fixed-step solvers"),
    (["--cfg-all", "nan"], "cfg_coef_all must be a finite number"),
    (["--cfg-txt", "inf"], "cfg_coef_txt must be a finite number"),
    (["--cfg-all=-inf"], "cfg_coef_all must be a finite number"),
    (["--seed", "-5"], "use a non-negative seed"),
    (["--init-noise", "NAN_NOISE"], "init noise contains NaN"),
    (["--init-noise", "GARBAGE"], "cannot read --init-noise"),
    (["--init-noise", "PICKLED"], "cannot read --init-noise"),
])
def test_bad_generation_setting_fails_before_loading_engines(args, fragment, tiny_engines, out_dir, tmp_path, capfd,
                                                            no_engine_loading):
    noise = np.zeros((1, 500, 128), np.float32)
    noise[0, 3, 7] = np.nan
    np.save(tmp_path / "nan.npy", noise)
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files = {"NAN_NOISE": "nan.npy", "GARBAGE": "garbage.npy", "PICKLED": "pickled.npy"}
    args = [str(tmp_path / files[a]) if a in files else a for a in args]
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", *args,
                             "--out", str(out_dir / "o.wav"))
    assert_one_line(code, lines, fragment)
    assert files_in(out_dir) == []


# -- output paths -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("out, latents, fragment", [
    ("FOLDER.wav", None, "is a folder"),
    ("o.mp3", None, "--out must end in .wav"),
    ("nodir/o.wav", None, "does not exist; create it first"),
    ("o.wav", "nodir/l.npy", "of --save-latents does not exist"),  # was: failed after the wav was written
    ("o.wav", "FOLDER.npy", "--save-latents"),
    ("o.wav", "l.txt", "--save-latents must end in .npy"),
])
def test_bad_output_path_fails_before_loading_engines(out, latents, fragment, tiny_engines, out_dir, capfd,
                                                     no_engine_loading):
    (out_dir / "FOLDER.wav").mkdir()
    (out_dir / "FOLDER.npy").mkdir()
    before = files_in(out_dir)
    extra = [] if latents is None else ["--save-latents", str(out_dir / latents)]
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "a", "--text", "b",
                             "--out", str(out_dir / out), *extra)
    assert_one_line(code, lines, fragment)
    assert files_in(out_dir) == before


# -- input files --------------------------------------------------------------------------------------------
INPUT_FILES = {
    "prompts.bin": np.random.default_rng(1).bytes(300) + b"\xff\xfe",
    "prompts-nul.txt": b"funk\nbass\x00line\n",
    "chords.lab": np.random.default_rng(2).bytes(300) + b"\xff\xfe",
    "list-start.json": b'[["C", 0.0], ["F", "four"]]',
    "dict-start.json": b'[{"chord": "C", "start": 0}, {"chord": "G", "start": "x"}]',
    "bool-start.json": b'[["C", true]]',
    "null-start.json": b'{"chords": [["C", null]]}',
    "drums.wav": b"RIFF not really a wav",
    "melody.npy": b"\x93NUMPY" + np.random.default_rng(3).bytes(64),
}


@pytest.mark.parametrize("args, fragment", [
    (["--prompts", "prompts.bin"], "is not UTF-8 text"),
    (["--prompts", "prompts-nul.txt"], "NUL character"),
    (["--text", "x", "--chords", "chords.lab"], "is not UTF-8 text"),
    (["--text", "x", "--chords", "list-start.json"], "entry 1 ('F') has start 'four'"),
    (["--text", "x", "--chords", "dict-start.json"], "entry 1 ('G') has start 'x'"),
    (["--text", "x", "--chords", "bool-start.json"], "has start True"),
    (["--text", "x", "--chords", "null-start.json"], "has start None"),
    (["--text", "x", "--chords", "C:0 F:nan"], "F:nan"),
    (["--text", "x", "--chords", "(C, 0.0), (F, -)"], "the start must be seconds"),
    (["--text", "x", "--drums", "drums.wav"], "cannot read audio file"),
    (["--text", "x", "--drums", "missing.wav"], "does not exist"),
    (["--text", "x", "--melody", "missing.npy"], "does not exist"),
    (["--text", "x", "--melody", "melody.npy"], "no melody conditioner"),  # before the file is read
])
def test_unreadable_input_file_fails_before_loading_engines(args, fragment, tiny_engines, out_dir, tmp_path, capfd,
                                                           no_engine_loading):
    for name, data in INPUT_FILES.items():
        (tmp_path / name).write_bytes(data)
    args = [str(tmp_path / a) if (tmp_path / a).exists() or a.startswith("missing") else a for a in args]
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), *args, "--out", str(out_dir / "o.wav"))
    assert_one_line(code, lines, fragment)
    assert files_in(out_dir) == []


@pytest.mark.parametrize("shape, fragment", [
    ((53, 0), "has 0 frames"),
    ((0, 53), "has 0 frames"),
    ((53, 53), "cannot be told apart"),
    ((53,), "must be a salience matrix"),
])
def test_melody_without_frames_or_of_ambiguous_orientation_is_refused(shape, fragment, tmp_path):
    from jasco_runtime import InputError
    from jasco_runtime.audio_io import as_salience, load_melody

    with pytest.raises(InputError, match=fragment):
        as_salience(np.ones(shape, np.float32), 53)
    np.save(tmp_path / "m.npy", np.ones(shape, np.float32))
    with pytest.raises(InputError, match=fragment) as info:
        load_melody(tmp_path / "m.npy", 53)
    assert str(tmp_path / "m.npy") in str(info.value) and "\n" not in str(info.value)
    # one frame more or less is unambiguous, in both orientations
    assert as_salience(np.ones((53, 54), np.float32), 53).shape == (53, 54)
    assert as_salience(np.ones((52, 53), np.float32), 53).shape == (53, 52)


# -- --json ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--steps", "-1"], "steps must be between 1"),
    (["--steps", "ten"], "invalid int value: 'ten'"),  # argparse's own check
    (["--engines", "/nonexistent/engines"], "does not exist"),
])
def test_json_error_is_a_json_object(args, fragment, tiny_engines, out_dir, capfd, no_engine_loading):
    from jasco_runtime.cli import main

    if "--engines" not in args:
        args = ["--engines", str(tiny_engines.out), *args]
    code = main([*args, "--text", "x", "--out", str(out_dir / "o.wav"), "--json"])
    cap = capfd.readouterr()
    assert code == 2
    error = json.loads(cap.out)  # stdout is exactly one JSON object, no traceback
    assert error == {"error": error["error"], "exit_code": 2} and fragment in error["error"]
    assert cap.err.strip().splitlines()[-1] == f"jasco-run: error: {error['error']}"
    assert "Traceback" not in cap.err and files_in(out_dir) == []


# -- non-finite results ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("graph, output, fragment", [
    ("flow_step", "v", "the state became non-finite"),  # the solver's check, after the last step
    ("encodec_decoder", "audio", "non-finite audio (NaN/Inf); nothing was written"),
])
def test_non_finite_results_are_never_written(graph, output, fragment, tiny_engines, out_dir, capfd, monkeypatch):
    """A broken engine (NaN vector field, Inf audio) → one line, no wav, no latents file."""
    import jasco_runtime.pipeline as pipeline_mod

    real_open = pipeline_mod.open_engine

    def open_broken(folder, key, *args, **kwargs):
        engine = real_open(folder, key, *args, **kwargs)
        if key.graph != graph:
            return engine

        real_run = engine.run

        def broken(feeds):
            outs = real_run(feeds)
            outs[output] = np.full_like(outs[output], np.nan if output == "v" else np.inf)
            return outs
        engine.run = broken
        return engine

    monkeypatch.setattr(pipeline_mod, "open_engine", open_broken)
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", "--steps", "2", "--seed", "0",
                             "--out", str(out_dir / "o.wav"), "--save-latents", str(out_dir / "l.npy"))
    assert_one_line(code, lines, fragment)
    assert files_in(out_dir) == []


# -- all or nothing -------------------------------------------------------------------------------------------
def _disk_full(path, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _sigterm(path, data):
    from jasco_runtime.signals import Terminated

    raise Terminated("signal 15")


@pytest.mark.parametrize("failure, code, fragment", [
    ("write", 2, "No space left on device"),
    ("write-sigterm", 143, "terminated by SIGTERM; nothing was written"),
    ("rename", 2, "nothing was written"),
])
def test_multi_output_run_writes_all_or_nothing(failure, code, fragment, tiny_engines, out_dir, capfd, monkeypatch):
    """2 prompts + latents = 3 files; the 2nd one fails (full disk / SIGTERM while writing, or its rename):
    no wav, no latents, no temp file remains.  The wavs are encoded in memory first, so a full disk is an
    OSError with its message, not soundfile's bare AssertionError."""
    import jasco_runtime.files as files_mod

    calls = []
    if failure == "rename":
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if Path(dst).parent == out_dir:
                calls.append(dst)
                if len(calls) == 2:
                    raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(files_mod.os, "replace", replace)
    else:
        real_write = files_mod._write_temp

        def write_temp(path, data):
            calls.append(path)
            if len(calls) == 2:
                (_disk_full if failure == "write" else _sigterm)(path, data)
            return real_write(path, data)

        monkeypatch.setattr(files_mod, "_write_temp", write_temp)
    rc, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "funk", "--text", "piano",
                           "--steps", "1", "--seed", "0", "--out", str(out_dir / "o.wav"),
                           "--save-latents", str(out_dir / "l.npy"))
    assert_one_line(rc, lines, fragment, expected_code=code)
    assert len(calls) == 2 and files_in(out_dir) == []


def test_multi_output_run_without_failure_writes_every_file(tiny_engines, out_dir, capfd):
    """The control for the test above: the same run writes 3 files and no temp file."""
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "funk", "--text", "piano",
                             "--steps", "1", "--seed", "0", "--out", str(out_dir / "o.wav"),
                             "--save-latents", str(out_dir / "l.npy"))
    assert code == 0, lines
    assert files_in(out_dir) == ["l.npy", "o_0.wav", "o_1.wav"]
    assert np.load(out_dir / "l.npy").shape == (2, 500, 128)


# -- signals (real processes) ---------------------------------------------------------------------------------
class _Stderr:
    """Collects a process's stderr in a thread, so the test can wait for a marker without blocking."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            self.text += chunk.decode(errors="replace")

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def _wait_for(condition: tp.Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the process did not stop within 120 s of SIGTERM")


def test_sigterm_during_generation_writes_nothing(tiny_engines, out_dir):
    """SIGTERM while the ODE runs (10000 Euler steps, so it is still running) → exit 143, one line, no wav,
    no latents, no temp file."""
    proc = subprocess.Popen([sys.executable, "-m", "jasco_runtime.cli", "--engines", str(tiny_engines.out),
                             "--text", "x", "--steps", "10000", "--out", str(out_dir / "o.wav"),
                             "--save-latents", str(out_dir / "l.npy"), "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    err = _Stderr(proc)
    ready = "jasco-run: engines of"  # -v: logged once the engines are loaded, just before the solve
    _wait_for(lambda: ready in err.text, proc, 300, "the engines to load")
    time.sleep(0.5)
    code = _terminate(proc)
    lines = [ln for ln in err.join().splitlines() if ln.strip() and not ln.startswith(ready)]
    assert code == 143, err.text
    assert lines == ["jasco-run: terminated by SIGTERM; nothing was written"], err.text
    assert files_in(out_dir) == []


def test_sigterm_during_export_leaves_no_temp_folder(tiny_hub, tmp_path):
    """SIGTERM once the export's hidden temp folder exists → exit 143, one line, nothing next to --out."""
    parent = tmp_path / "engines"
    parent.mkdir()
    out = parent / "cd"
    proc = subprocess.Popen([sys.executable, "-m", "jasco_export.cli", "--model", "jasco-tiny/chords-drums",
                             "--out", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    err = _Stderr(proc)
    _wait_for(lambda: any(parent.glob(".cd.tmp-*")), proc, 300, "the export's temp folder")
    code = _terminate(proc)
    lines = [ln for ln in err.join().replace("\r", "\n").splitlines() if ln.strip()]
    assert code == 143, err.text
    assert lines[-1] == "jasco-export: terminated by SIGTERM; temporary files removed", err.text
    assert "Traceback" not in err.text
    assert files_in(parent) == []


# -- jasco-export -------------------------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch):
    from jasco_export.reference.jasco import JASCO

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were validated")

    monkeypatch.setattr(JASCO, "get_pretrained", refuse)


@pytest.mark.parametrize("args, fragment", [
    (["--opset", "5"], "--opset 5 is not supported"),  # was: a traceback after an IR dump on stdout
    (["--max-batch", "0"], "--max-batch must be between 1 and 256"),  # was: failed after 37 s
    (["--max-text-tokens", "0"], "--max-text-tokens must be between 1"),
    (["--precision", "fp16"], "--precision must include fp32"),
    (["--precision", "fp32,int4"], "unknown precision 'int4'"),
    (["--out", "FILE"], "is a file"),
    (["--chords-mapping", "missing.pkl"], "--chords-mapping missing.pkl does not exist"),
])
def test_export_options_are_checked_before_loading_the_model(args, fragment, tmp_path, capfd, no_model_loading):
    from jasco_export.cli import main

    (tmp_path / "file").write_text("x")
    args = [str(tmp_path / "file") if a == "FILE" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
    code = main(["--model", "jasco-tiny/chords-drums", *out, *args])
    cap = capfd.readouterr()
    assert code == 2 and cap.out == ""  # nothing on stdout (no IR dump)
    assert cap.err.strip().splitlines() == [cap.err.strip()] and fragment in cap.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


class _RunsCode:
    """A pickle that would create a folder when loaded without ``weights_only`` (observable, harmless)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_checkpoint_with_code_is_refused_as_such(legacy, tiny_hub, tmp_path, capfd):
    import torch

    from jasco_export.cli import main

    model = tmp_path / "model"
    model.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"best_state": {"w": torch.zeros(2)}, "xp.cfg": "", "hook": _RunsCode(marker)},
               model / "state_dict.bin", _use_new_zipfile_serialization=not legacy)
    torch.save({"w": torch.zeros(2)}, model / "compression_state_dict.bin")
    code = main(["--model", str(model), "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "was refused because it contains code" in err and "it imports posix.mkdir" in err
    assert "weights_only" not in err and "re-download" not in err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_damaged_checkpoint_is_not_called_code(tmp_path):
    """The control: a truncated checkpoint is "corrupt — re-download", not "contains code"."""
    import torch

    from jasco_export.errors import CheckpointError
    from jasco_export.reference.loading import load_checkpoint

    path = tmp_path / "state_dict.bin"
    torch.save({"w": torch.zeros(100)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint — re-download it") as info:
        load_checkpoint(path)
    assert "contains code" not in str(info.value) and "\n" not in str(info.value)


def test_chord_mapping_with_code_is_refused_as_such(tmp_path):
    from jasco_runtime import InputError
    from jasco_runtime.chords import load_chord_mapping

    marker = tmp_path / "code-ran"
    path = tmp_path / "chord_to_index_mapping.pkl"
    path.write_bytes(pickle.dumps({"N": 0, "C": _RunsCode(marker)}))
    with pytest.raises(InputError, match="was refused because it contains code .*posix.mkdir"):
        load_chord_mapping(path)
    assert not marker.exists()
