"""The jasco-run command layer (jasco_runtime.cli) and the error contract of every subcommand (README "Error
contract"): one parser, one wrapper for exit codes, signals and ``--json`` errors, checks before the engines
load, and messages that say what really happened.  Case ids are those of the new-user sweep
(../shared/reviews/new-user-sweep-2026-12.md).  Real processes where a signal is the point."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest

from test_errors import RUN_ENV, _Stderr, _terminate, _wait_for, assert_one_line, files_in, run_cli

# fixtures reused from test_errors (pytest finds fixtures only in conftest or the test module itself)
from test_errors import no_engine_loading, no_model_loading, out_dir  # noqa: F401,F811


def _main(capfd, *args: str) -> tp.Tuple[int, tp.List[str], str]:
    """``jasco-run ARGS`` in-process, exactly as given → (exit code, stderr lines, stdout)."""
    from jasco_runtime.cli import main

    code = main(list(args))
    cap = capfd.readouterr()
    return code, cap.err.strip().splitlines(), cap.out


# -- one parser ------------------------------------------------------------------------------------------------
def test_help_lists_every_subcommand(capfd):
    code, _, out = _main(capfd, "--help")
    assert code == 0
    for name in ("generate", "verify", "build-engines"):
        assert name in out


def test_generate_is_the_default_subcommand(tiny_engines, out_dir, capfd):
    """``jasco-run --engines D --text x --out o.wav`` and ``jasco-run generate ...`` are the same command."""
    args = ["--engines", str(tiny_engines.out), "--text", "x", "--steps", "1", "--seed", "3", "--no-progress"]
    assert _main(capfd, *args, "--out", str(out_dir / "a.wav"))[0] == 0
    assert _main(capfd, "generate", *args, "--out", str(out_dir / "b.wav"))[0] == 0
    import soundfile as sf

    a, b = sf.read(str(out_dir / "a.wav"))[0], sf.read(str(out_dir / "b.wav"))[0]
    np.testing.assert_allclose(a, b, atol=1e-5)  # same seed, same clip (up to ONNX Runtime's threaded sums)


@pytest.mark.parametrize("args, fragment", [
    (["verify"], "the following arguments are required: ENGINES_DIR"),  # V13
    (["verify", "ENGINES", "--bogus"], "unrecognized arguments: --bogus"),  # V15
    (["verify", "ENGINES", "--backend", "cuda"], "argument --backend: invalid choice"),  # V22
    (["verify", "ENGINES", "--provider"], "argument --provider: expected one argument"),  # V23
    (["build-engines"], "the following arguments are required: ENGINES_DIR"),  # B13
    (["build-engines", "ENGINES", "--max-batch", "six"], "argument --max-batch: invalid int value"),  # B14
])
@pytest.mark.parametrize("as_json", [False, True])
def test_subcommand_syntax_error_is_one_line_and_json_with_json(args, fragment, as_json, tiny_engines, capfd):
    """V13/V15/V22/V23/B13/B14: argparse's multi-line usage (and SystemExit) became one line, exit 2; with
    ``--json`` stdout is exactly one JSON object (``verify … --json --bogus`` printed none)."""
    args = [str(tiny_engines.out) if a == "ENGINES" else a for a in args] + (["--json"] if as_json else [])
    code, lines, out = _main(capfd, *args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"jasco-run {args[0]}: error: ") and fragment in lines[0], lines
    assert f"see jasco-run {args[0]} --help" in lines[0]
    if as_json:
        assert json.loads(out) == {"error": lines[0].split(": error: ", 1)[1], "exit_code": 2}
    else:
        assert out == ""


def test_make_tiny_syntax_error_is_one_line(capfd):
    """MT07: ``jasco-export make-tiny --bogus`` printed argparse's usage block."""
    from jasco_export.cli import main

    code = main(["make-tiny", "--bogus"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jasco-export make-tiny: error: ")
    assert "--out" in err[0] or "--bogus" in err[0]


# -- paths: what exists is not "missing" ---------------------------------------------------------------------
@pytest.mark.parametrize("case, fragment", [
    ("verify-file", "is a file, not a folder"),  # V21
    ("build-engines-file", "is a file, not a folder"),  # B15
    ("drums-folder", "is a folder, not a file"),  # Z05
    ("drums-dev-zero", "is not a regular file"),  # Z05
])
def test_existing_paths_are_not_reported_missing(case, fragment, tiny_engines, out_dir, tmp_path, capfd,
                                                no_engine_loading):
    """V21/B15/Z05: an existing file, folder or /dev/zero was reported as "does not exist"."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-folder").mkdir()
    if case == "verify-file":
        code, lines, _ = _main(capfd, "verify", str(a_file))
        prefix = "jasco-run verify: error: "
    elif case == "build-engines-file":
        code, lines, _ = _main(capfd, "build-engines", str(a_file))
        prefix = "jasco-run build-engines: error: "
    else:
        drums = str(tmp_path / "a-folder") if case == "drums-folder" else "/dev/zero"
        code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", "--drums", drums,
                                 "--out", str(out_dir / "o.wav"))
        prefix = "jasco-run: error: "
    assert code == 2 and len(lines) == 1 and lines[0].startswith(prefix), lines
    assert fragment in lines[0] and "does not exist" not in lines[0], lines
    assert files_in(out_dir) == []


def test_too_long_output_name_is_checked_up_front(tiny_engines, out_dir, capfd, no_engine_loading):
    """Z06: a 300-character --out name raised OSError [Errno 36] from the output check (a traceback)."""
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x",
                             "--out", str(out_dir / ("n" * 300 + ".wav")))
    assert_one_line(code, lines, "file name of --out is 304 bytes long", "choose a shorter name")
    assert files_in(out_dir) == []


def test_output_name_the_temp_file_cannot_hold_is_refused(tiny_engines, out_dir, capfd, no_engine_loading):
    """A 250-byte name fits the file system but not its hidden temp file (.NAME.XXXXXXXX.tmp): refused first."""
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x",
                             "--out", str(out_dir / ("n" * 246 + ".wav")))
    assert_one_line(code, lines, "250 bytes long")


def test_verify_out_an_existing_folder_fails_before_verifying(tiny_engines, tmp_path, capfd, monkeypatch):
    """V19: ``jasco-run verify D --out EXISTING_DIR`` ran the whole verification, then IsADirectoryError."""
    import jasco_runtime.verify as verify_mod

    monkeypatch.setattr(verify_mod, "verify_folder", lambda *a, **k: pytest.fail("verified before checking --out"))
    (tmp_path / "V").mkdir()
    code, lines, out = _main(capfd, "verify", str(tiny_engines.out), "--no-e2e", "--out", str(tmp_path / "V"))
    assert code == 2 and lines == [lines[0]] and lines[0].startswith("jasco-run verify: error: --out ")
    assert "is a folder" in lines[0] and out == ""
    assert files_in(tmp_path / "V") == []


def test_verify_with_a_provider_not_installed_is_bad_input_up_front(tiny_engines, tmp_path, capfd, monkeypatch):
    """V14 / B17: ``verify --provider cuda`` without onnxruntime-gpu exited 1 with one provider error per artifact
    (jasco-run exits 2 with one line for the same thing)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    import jasco_runtime.verify as verify_mod

    monkeypatch.setattr(verify_mod, "verify_folder", lambda *a, **k: pytest.fail("verified before the provider check"))
    code, lines, _ = _main(capfd, "verify", str(tiny_engines.out), "--provider", "cuda", "--no-e2e",
                           "--out", str(tmp_path / "v.json"))
    assert code == 2 and len(lines) == 1, lines
    assert "provider 'cuda' is not available" in lines[0] and lines[0].count("cuda") <= 3
    assert not (tmp_path / "v.json").exists()


# -- duration, normalisation, overlap ----------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--duration", "1e-6"], "duration must be at least one latent frame (0.02 s)"),  # D10 (ZeroDivisionError, 0-sample wav)
    (["--duration", "1e-6", "--normalize", "peak"], "at least one latent frame"),  # D11
    (["--duration", "0.01", "--format", "pcm16", "--normalize", "loudness"], "at least one latent frame"),  # D12
    (["--duration", "0.03", "--normalize", "loudness"], "needs at least 0.4 s of audio"),  # between the two minimums
    (["--duration", "0.3", "--normalize", "loudness"], "needs at least 0.4 s of audio"),  # D14
    (["--overlap", "2"], "overlap applies to songs longer than one window; give a duration"),  # O09
])
def test_minimum_duration_and_overlap_are_checked_before_the_engines_load(args, fragment, tiny_engines, out_dir,
                                                                         capfd, no_engine_loading):
    """D10–D14: tracebacks (ZeroDivisionError, zero-size reduction, pyloudnorm's block size) after the whole
    generation, and D10 left a 0-sample wav; O09: --overlap without --duration was silently ignored."""
    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", *args,
                             "--out", str(out_dir / "o.wav"))
    assert_one_line(code, lines, fragment)
    assert files_in(out_dir) == []


@pytest.mark.parametrize("duration, normalize, frames", [("0.02", "peak", 640), ("0.4", "loudness", 12800)])
def test_the_minimum_durations_themselves_are_generated(duration, normalize, frames, tiny_engines, out_dir, capfd):
    """The control of the test above: one latent frame (peak) and one BS.1770 block (loudness) are written."""
    import soundfile as sf

    code, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", "--steps", "1", "--seed", "0",
                             "--duration", duration, "--normalize", normalize, "--out", str(out_dir / "o.wav"))
    assert code == 0, lines
    assert sf.info(str(out_dir / "o.wav")).frames == frames


# -- what the summary reports ------------------------------------------------------------------------------------
def test_drawn_seed_is_reported_and_replays_the_run(tiny_engines, out_dir, capfd):
    """J01/J02: without --seed neither the summary nor --json said which seed was used."""
    base = ["--engines", str(tiny_engines.out), "--text", "x", "--steps", "1", "--json"]
    code, lines, out = run_cli(capfd, *base, "--out", str(out_dir / "a.wav"), "--save-latents", str(out_dir / "a.npy"))
    assert code == 0, lines
    seed = json.loads(out)["seed"]
    assert isinstance(seed, int) and seed >= 0
    code, lines, out = run_cli(capfd, *base, "--seed", str(seed), "--out", str(out_dir / "b.wav"),
                               "--save-latents", str(out_dir / "b.npy"))
    assert code == 0 and json.loads(out)["seed"] == seed
    np.testing.assert_allclose(np.load(out_dir / "a.npy"), np.load(out_dir / "b.npy"), atol=1e-4)  # same noise
    code, lines, out = run_cli(capfd, *base, "--seed", str(seed + 1), "--out", str(out_dir / "d.wav"),
                               "--save-latents", str(out_dir / "d.npy"))
    assert code == 0 and np.abs(np.load(out_dir / "a.npy") - np.load(out_dir / "d.npy")).max() > 1e-2  # can fail
    code, lines, out = run_cli(capfd, *base[:-1], "--out", str(out_dir / "c.wav"))
    assert code == 0 and ", seed " in out  # the one-line summary too


def test_prompts_file_byte_order_mark_is_not_part_of_the_prompt(tiny_engines, out_dir, tmp_path, capfd):
    """Z12: a UTF-8 BOM (Windows editors) stayed in the first prompt."""
    (tmp_path / "p.txt").write_bytes("\ufefffunk groove\npiano\n".encode("utf-8"))
    code, lines, out = run_cli(capfd, "--engines", str(tiny_engines.out), "--prompts", str(tmp_path / "p.txt"),
                               "--steps", "1", "--seed", "0", "--json", "--out", str(out_dir / "o.wav"))
    assert code == 0, lines
    assert json.loads(out)["prompts"] == ["funk groove", "piano"]


def test_pcm16_clipping_is_a_warning(caplog):
    """NB-pcm16-none: --format pcm16 hard-clipped 56 % of the samples without a word."""
    import argparse
    import logging

    import soundfile as sf

    from jasco_runtime.cli.generate import _encode

    clip = np.linspace(-2.0, 2.0, 1000, dtype=np.float32)[None]  # half of the samples beyond ±1
    a = argparse.Namespace(format="pcm16", normalize=None)
    with caplog.at_level(logging.WARNING):
        data = _encode(clip, 32000, a, Path("o.wav"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "50.0 % of the samples exceed ±1" in warnings[0] and "--normalize peak" in warnings[0]
    import io

    assert np.abs(sf.read(io.BytesIO(data))[0]).max() <= 1.0
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the same clip normalised, or as float: no warning
        _encode(clip, 32000, argparse.Namespace(format="pcm16", normalize="peak"), Path("o.wav"))
        _encode(clip, 32000, argparse.Namespace(format="float", normalize=None), Path("o.wav"))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- melody inputs ----------------------------------------------------------------------------------------------
def test_complex_melody_is_refused_without_numpy_warnings(tmp_path, recwarn):
    """ML04/ML21: complex64 salience was accepted (imaginary part dropped, numpy's 2-line ComplexWarning)."""
    from jasco_runtime import InputError
    from jasco_runtime.audio_io import as_salience, load_melody

    mel = (np.ones((53, 100)) + 1j * np.ones((53, 100))).astype(np.complex64)
    with pytest.raises(InputError, match=r"is complex \(complex64\).*numpy.abs"):
        as_salience(mel, 53)
    np.save(tmp_path / "m.npy", mel)
    with pytest.raises(InputError, match="is complex"):
        load_melody(tmp_path / "m.npy", 53)
    assert [w for w in recwarn if "Complex" in type(w.message).__name__] == []


def test_audio_given_as_melody_is_named_as_audio(tmp_path):
    """ML19/ML22: a wav given as melody → "This file contains pickled (object) data …"."""
    import soundfile as sf

    from jasco_runtime import InputError
    from jasco_runtime.audio_io import load_melody, read_melody_bytes

    sf.write(str(tmp_path / "m.npy"), np.zeros(3200, np.float32), 32000, format="WAV")  # a wav named .npy
    with pytest.raises(InputError, match="is a wav audio file; a melody is a salience matrix") as info:
        load_melody(tmp_path / "m.npy", 53)
    assert "pickled" not in str(info.value)
    with pytest.raises(InputError, match="the melody upload is a wav audio file"):
        read_melody_bytes((tmp_path / "m.npy").read_bytes(), 53)
    np.save(tmp_path / "ok.npy", np.ones((53, 60), np.float32))  # a real .npy still loads
    assert load_melody(tmp_path / "ok.npy", 53).shape == (53, 60)


# -- build-engines ----------------------------------------------------------------------------------------------
def test_build_engines_builds_a_graph_named_twice_once(tiny_engines, tmp_path, trt_standin, capfd):
    """B22: ``--graphs flow_step,flow_step`` built the engine twice."""
    folder = Path(shutil.copytree(tiny_engines.out, tmp_path / "e"))
    code, lines, out = _main(capfd, "build-engines", str(folder), "--graphs", "flow_step,flow_step", "--json")
    assert code == 0, lines
    assert json.loads(out.strip().splitlines()[-1]) == {"built": ["flow_step.fp16.plan"]}  # the stand-in logs above
    assert [b["source"] for b in trt_standin.builds] == ["flow_step.fp16.onnx"]


# -- jasco-export subcommands -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["make-tiny", "demo"])
def test_make_tiny_and_demo_out_a_file_is_bad_input(command, tmp_path, capfd):
    """MT04/MT08: ``make-tiny --out FILE`` / ``demo --out FILE`` → NotADirectoryError traceback; then the line
    carried the prefix twice (``jasco-export: error: jasco-export make-tiny --out …``)."""
    from jasco_export.cli import main

    (tmp_path / "FILE").write_text("keep me")
    code = main([command, "--out", str(tmp_path / "FILE")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"jasco-export: error: --out {tmp_path / 'FILE'} is a file, not a folder; "
                                 "give a folder (it is created if missing)"], err
    assert (tmp_path / "FILE").read_text() == "keep me" and files_in(tmp_path) == ["FILE"]


@pytest.mark.parametrize("command", ["make-tiny", "demo"])
def test_make_tiny_and_demo_out_a_name_too_long_is_bad_input(command, tmp_path, capfd):
    """MT04/MT08 with a 300-byte name (Z06's case for a folder): ``OSError: [Errno 36] File name too long``."""
    from jasco_export.cli import main

    code = main([command, "--out", str(tmp_path / ("n" * 300))])
    err = capfd.readouterr().err.strip().splitlines()
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert code == 2 and err == [f"jasco-export: error: a name in --out is 300 bytes long; this file system takes "
                                 f"at most {limit}; choose a shorter name"], err
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("variants, written, fragment", [
    ("chords-drums,chords-drums", ["chords-drums"], None),  # MT02: written twice, different seeds
    (" , ", None, "--variants ' , ' names no variant"),  # MT05: "unknown variant(s) []"
    ("", None, "--variants '' names no variant"),  # MT05
    ("chords-drums,drums-only", None, "unknown variant(s) drums-only"),
])
def test_make_tiny_variants_each_once_and_empty_named(variants, written, fragment, tmp_path, capfd, monkeypatch):
    import jasco_export.tiny.presets as presets
    from jasco_export.cli import main

    calls = []
    monkeypatch.setattr(presets, "make_tiny_models",
                        lambda out, **k: calls.append(list(k["variants"])) or Path(out) / "hub")
    code = main(["make-tiny", "--out", str(tmp_path / "t"), "--variants", variants])
    err = capfd.readouterr().err.strip().splitlines()
    if written is not None:
        assert code == 0 and calls == [written]
    else:
        assert code == 2 and calls == [] and len(err) == 1 and fragment in err[0], err


@pytest.mark.parametrize("case, fragment", [
    ("not-a-dict", "is not a {label: index} dict"),  # XE06
    ("no-N", "has no 'N' (no chord) entry"),  # XE07
    ("garbage", "cannot read chord mapping"),  # XE08
    ("folder", "is a folder, not a file"),  # XE09
    ("/dev/zero", "is not a regular file"),  # XE09
])
def test_chord_mapping_contents_are_checked_before_the_model_loads(case, fragment, tmp_path, capfd,
                                                                  no_model_loading):
    """XE06–XE08: the mapping's contents were checked after the checkpoint had loaded; XE09: a folder or
    /dev/zero was "does not exist"."""
    import pickle

    from jasco_export.cli import main

    path = tmp_path / "m.pkl"
    if case == "not-a-dict":
        path.write_bytes(pickle.dumps([("C", 1)]))
    elif case == "no-N":
        path.write_bytes(pickle.dumps({"C": 1, "G": 2}))
    elif case == "garbage":
        path.write_bytes(b"\x80\x05garbage")
    elif case == "folder":
        path.mkdir()
    else:
        path = Path(case)
    code = main(["--model", "jasco-tiny/chords-drums", "--out", str(tmp_path / "o"), "--chords-mapping", str(path)])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "o").exists()


def test_backend_trt_without_tensorrt_is_checked_before_the_model_loads(tmp_path, capfd, no_model_loading):
    """XO10: ``--backend trt`` without TensorRT ran the whole export (33 s), then exit 1."""
    from jasco_runtime.backends import tensorrt_unavailable_reason
    from jasco_export.cli import main

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT can build engines here")
    code = main(["--model", "jasco-tiny/chords-drums", "--out", str(tmp_path / "o"), "--backend", "trt"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--backend trt: TensorRT engines cannot be built here" in err[0] and "--backend onnx" in err[0]
    assert not (tmp_path / "o").exists()


# -- signals that tell the truth ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_signal_while_onnx_runtime_opens_a_graph_is_an_interrupt(signum, code, word, tiny_engines, out_dir, capfd,
                                                                monkeypatch):
    """S02/SY-*: a signal while ONNX Runtime opens a graph came back as its "initialization failed" and was
    reported as "the file is damaged … re-run jasco-export", exit 2.  Modelled here with a real signal that the
    engine's constructor swallows into a RuntimeError, as ONNX Runtime's native code does."""
    import jasco_runtime.backends.onnxruntime_backend as ort_backend

    real = ort_backend.OnnxRuntimeEngine

    class SwallowsTheSignal(real):
        def __init__(self, *args, **kwargs):
            try:
                os.kill(os.getpid(), signum)
                time.sleep(1)  # the handler runs here
            except KeyboardInterrupt:
                raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : initialization failed") from None
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ort_backend, "OnnxRuntimeEngine", SwallowsTheSignal)
    rc, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", "--steps", "1",
                           "--out", str(out_dir / "o.wav"))
    assert rc == code and lines == [f"jasco-run: {word}; nothing was written"], lines
    assert files_in(out_dir) == []


def test_a_real_load_failure_without_a_signal_is_still_a_damaged_file(tiny_engines, out_dir, capfd, monkeypatch):
    """The control: the same RuntimeError with no signal is the one-line "damaged" error, exit 2."""
    import jasco_runtime.backends.onnxruntime_backend as ort_backend

    def fails(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : initialization failed")

    monkeypatch.setattr(ort_backend, "OnnxRuntimeEngine", fails)
    rc, lines, _ = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "x", "--steps", "1",
                           "--out", str(out_dir / "o.wav"))
    assert_one_line(rc, lines, "initialization failed", "the file is damaged")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_after_the_outputs_are_in_place_does_not_say_nothing_was_written(signum, tiny_engines, out_dir,
                                                                                 capfd, monkeypatch):
    """S09/S10: SIGTERM/SIGINT once the outputs were renamed into place printed "nothing was written" and
    exited 143/130 while every file was on disk.  Now the signal is held until the report is printed: the
    files are complete, exit 0, and one line says the signal arrived while they were put in place."""
    import jasco_runtime.cli.generate as generate_mod

    real = generate_mod.atomic_write_all

    def then_signal(files):
        late = real(files)
        os.kill(os.getpid(), signum)  # every file is in place now
        return late

    monkeypatch.setattr(generate_mod, "atomic_write_all", then_signal)
    rc, lines, out = run_cli(capfd, "--engines", str(tiny_engines.out), "--text", "a", "--text", "b", "--steps", "1",
                             "--seed", "0", "--out", str(out_dir / "t.wav"), "--save-latents", str(out_dir / "t.npy"))
    name = signal.Signals(signum).name
    assert rc == 0, lines
    assert lines == [f"jasco-run: {name} arrived while the outputs were being put in place; they were completed"]
    assert files_in(out_dir) == ["t.npy", "t_0.wav", "t_1.wav"] and out.startswith("wrote ")


def test_signal_during_the_renames_completes_them_all(tmp_path):
    """S09 at the library level: a signal between two renames of atomic_write_all is held, every file lands,
    and the signal is returned (not raised half way, which left some outputs and deleted others)."""
    import jasco_runtime.files as files_mod
    from jasco_runtime.signals import interrupts

    real_replace = os.replace
    renames = []

    def replace(src, dst):
        renames.append(dst)
        real_replace(src, dst)
        if len(renames) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, between two renames

    files = [(tmp_path / f"f{i}.bin", bytes([i]) * 10) for i in range(3)]
    with interrupts():
        os_replace, files_mod.os.replace = files_mod.os.replace, replace
        try:
            late = files_mod.atomic_write_all(files)
        finally:
            files_mod.os.replace = os_replace
    assert late == "SIGTERM" and len(renames) == 3
    assert files_in(tmp_path) == ["f0.bin", "f1.bin", "f2.bin"]


def test_sigterm_during_jasco_run_verify_is_one_line_and_writes_no_report(tiny_engines, tmp_path):
    """SV01: SIGTERM during ``jasco-run verify`` killed it with no message; now exit 143 and one line."""
    folder = Path(shutil.copytree(tiny_engines.out, tmp_path / "e"))
    proc = subprocess.Popen([sys.executable, "-m", "jasco_runtime.cli", "verify", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    out = _Stderr(type("Stdout", (), {"stderr": proc.stdout})())  # the same reader, on stdout (progress lines)
    err = _Stderr(proc)
    _wait_for(lambda: "[jasco-run verify]" in out.text, proc, 300, "verify's first progress line")
    code = _terminate(proc)
    lines = [ln for ln in err.join().splitlines() if ln.strip()]
    assert code == 143, err.text
    assert lines == ["jasco-run verify: terminated by SIGTERM; no report was written"], err.text
    assert not (folder / "verify.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_engines.out.iterdir())


def test_sigterm_during_jasco_run_build_engines_is_one_line(tiny_engines, tmp_path):
    """The error contract for ``jasco-run build-engines`` with a real process: it was outside the SIGTERM
    handler (killed by the signal, rc -15).  The process runs on the strict TensorRT stand-in, made slow."""
    pytest.importorskip("polygraphy")
    folder = Path(shutil.copytree(tiny_engines.out, tmp_path / "e"))
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import pytest\n"
        "from standins.tensorrt import TensorRTStandin\n"
        "mp = pytest.MonkeyPatch()\n"
        "TensorRTStandin().install(mp)\n"
        "import jasco_runtime.tensorrt.build as b\n"
        "real = b.build_engine\n"
        "def slow(*a, **k):\n"
        "    print('building', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "    return real(*a, **k)\n"
        "b.build_engine = slow\n"
        "from jasco_runtime.cli import main\n"
        f"raise SystemExit(main(['build-engines', {str(folder)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    err = _Stderr(proc)
    _wait_for(lambda: "building" in err.text, proc, 120, "the first engine build")
    rc = _terminate(proc)
    lines = [ln for ln in err.join().splitlines() if ln.strip() and ln != "building"]
    assert rc == 143, err.text
    assert lines[-1] == ("jasco-run build-engines: terminated by SIGTERM; the engine being built was not registered; "
                         "engines finished before it are in the manifest"), err.text
    assert all(ln.startswith("jasco-run build-engines: ") for ln in lines), err.text  # progress lines, no traceback
    assert not list(folder.glob("*.plan")) and "tensorrt-fp16" not in (folder / "manifest.json").read_text()


def test_the_start_up_handler_is_in_place_before_the_signal_module_is_imported():
    """The flaky first-moments test: ``import signal`` (its enums: milliseconds under load) ran before jasco-run's
    start-up handler, so a Ctrl-C then was a KeyboardInterrupt traceback from jasco_runtime/cli/__init__.py."""
    code = textwrap.dedent("""
        import _signal, sys
        seen = []
        class Spy:
            def find_spec(self, name, path=None, target=None):
                if name == "signal" and not seen:
                    seen.append(_signal.getsignal(_signal.SIGINT))
        sys.meta_path.insert(0, Spy())
        sys.modules.pop("signal", None)
        sys.argv[0] = "-m"  # as while `python -m jasco_runtime.cli` imports the package
        import jasco_runtime.cli as cli
        print(seen[0] is cli._exit_during_start_up)
    """)
    res = subprocess.run([sys.executable, "-c", code], env=RUN_ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "True", (res.stdout, res.stderr)


def test_a_signal_swallowed_by_a_weakref_callback_is_raised_at_the_next_check(monkeypatch):
    """The flaky first-moments test: SIGTERM arriving while importlib ran a module-lock weakref callback (during
    ``import onnxruntime``) was "Exception ignored in …" and lost: the run went on to write its wav, exit 0."""
    import weakref

    from jasco_runtime import signals

    class Thing:
        pass

    def callback(_: object) -> None:
        signal.raise_signal(signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, where Python cannot raise
            pass

    ignored: tp.List[object] = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    with pytest.raises(signals.Terminated):
        with signals.settling(), signals.interrupts():
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing
            for _ in range(1000):
                pass
            signals.check()
    assert ref() is None and ignored == []


@pytest.mark.parametrize("signum, exc", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_a_signal_swallowed_by_a_finaliser_is_delivered_again(monkeypatch, signum, exc):
    """CI flake of MK01 (jasco-export make-tiny, no milestones of its own): SIGTERM arrived while a regex object's
    ``__del__`` ran — "Exception ignored in <function Group.__del__>", and the command went on.  The swallowed
    signal is delivered again once the finaliser returns, so it is raised without any ``check()``."""
    from jasco_runtime import signals

    class Finalised:
        def __del__(self) -> None:
            signal.raise_signal(signum)
            for _ in range(1000):  # the handler runs here, where Python cannot raise
                pass

    ignored: tp.List[object] = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    after = []
    with pytest.raises(getattr(signals, exc, KeyboardInterrupt)):
        with signals.interrupts():
            thing = Finalised()
            del thing
            time.sleep(0.5)  # the command's work: the signal arrives again meanwhile
            after.append("the command went on")
    assert ignored == [] and after == []


def test_a_signal_a_library_swallowed_is_raised_at_the_next_check():
    """A native library may clear a signal's exception (no trace at all): ``signals.check()`` raises it."""
    from jasco_runtime import signals

    with signals.settling(), signals.interrupts():
        try:
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):
                pass
        except signals.Terminated:
            pass  # what the library did
        with pytest.raises(signals.Terminated):
            signals.check()
        signals.settle()
        signals.check()  # once the outcome is settled, nothing more is raised
    signals.check()  # and outside a command's scope never


def test_a_signal_just_after_the_outputs_are_in_place_keeps_them(tiny_engines, tmp_path, capfd, monkeypatch):
    """S09/S10: SIGTERM after the renames, before generate returned → "terminated by SIGTERM; nothing was written",
    exit 143, with every output on disk."""
    import jasco_runtime.cli.generate as gen

    note = gen.late_signal_note
    monkeypatch.setattr(gen, "late_signal_note", lambda *a: (signal.raise_signal(signal.SIGTERM), note(*a)))
    code, lines, _ = _main(capfd, "--engines", str(tiny_engines.out), "--text", "a", "--text", "b", "--steps", "1",
                           "--no-progress", "--out", str(tmp_path / "t.wav"))
    assert code == 0 and lines[-1] == "jasco-run: SIGTERM arrived after the command had finished; its result stands", \
        lines
    assert files_in(tmp_path) == ["t_0.wav", "t_1.wav"]


def test_a_signal_after_the_command_returned_is_no_traceback(tmp_path):
    """S09/S10 in CI: a signal after the wrapper had reported, before jasco-run ended the process → a Terminated
    traceback, exit 1.  (A real process: only the command itself ends the process in ``_settle``.)"""
    code = textwrap.dedent(f"""
        import signal, sys
        sys.argv = ["-m", "--engines", {str(tmp_path / "missing")!r}, "--text", "x", "--out", "o.wav"]
        import jasco_runtime.cli as cli
        settle = cli._settle
        cli._settle = lambda code: (signal.raise_signal(signal.SIGTERM), settle(code))
        sys.exit(cli.main())
    """)
    res = subprocess.run([sys.executable, "-c", code], env=RUN_ENV, capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2 and "does not exist" in lines[0], res.stderr
    assert lines[1] == "jasco-run: SIGTERM arrived after the command had finished; its result stands", res.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_the_first_moments_is_one_line(signum, tiny_engines, tmp_path):
    """SX-INT-0.05/0.1: Ctrl-C in the first 0.1 s gave a KeyboardInterrupt traceback (numpy was still being
    imported, before any handler).  At each moment: the documented exit code and one line, never a traceback
    from jasco-run's imports; a signal during Python's own start-up (site, before jasco-run's first line) is
    Python's, and is allowed to end the process by that signal."""
    out = tmp_path / "o"
    out.mkdir()
    codes = []
    t0 = time.perf_counter()  # Python's own start-up here (0.1 s idle, 0.35 s on a loaded CI box)
    subprocess.run([sys.executable, "-c", "pass"], env=RUN_ENV, check=True)
    python_up = time.perf_counter() - t0
    for delay in (0.03, python_up * 0.5, python_up, python_up + 0.05, python_up + 0.1, python_up + 0.2,
                  python_up + 0.4, 2 * python_up + 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "jasco_runtime.cli", "--engines", str(tiny_engines.out),
                                 "--text", "x", "--steps", "3000", "--out", str(out / "o.wav")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
        time.sleep(delay)
        proc.send_signal(signum)
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"no exit within 120 s of the signal at {delay} s")
        text = stderr.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        expected = 128 + signum
        if proc.returncode == expected:
            assert len(lines) == 1 and "nothing was written" in lines[0], (delay, text)
        else:  # the signal came before jasco-run's first line ran (Python's own start-up, site imports)
            assert proc.returncode in (-signum, 1), (delay, proc.returncode, text)  # 1: "init_import_site"
            assert "jasco_runtime" not in text and "numpy" not in text, (delay, text)
        codes.append(proc.returncode)
        assert files_in(out) == []
    assert codes[-3:] == [128 + signum] * 3, codes  # once Python is up, jasco-run's handler is always there


@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGTERM, 143, "jasco-export: terminated by SIGTERM; temporary files removed"),
    (signal.SIGINT, 130, "jasco-export: interrupted; temporary files removed")])
def test_sigterm_during_jasco_export_verify_leaves_no_golden_temp_folder(tiny_engines, tmp_path, signum, code, line):
    """SV03: ``jasco-export verify`` had no SIGTERM handler (rc -15) and left DIR/.golden-XXXX/ behind; SV04:
    SIGINT cleans up the same way."""
    folder = Path(shutil.copytree(tiny_engines.out, tmp_path / "e"))
    before = sorted(p.name for p in folder.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "jasco_export.cli", "verify", str(folder), "--no-e2e"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    err = _Stderr(proc)
    _wait_for(lambda: any(folder.glob(".golden-*")), proc, 300, "the hidden golden folder")
    proc.send_signal(signum)
    try:
        got = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the process did not stop within 120 s of the signal")
    text = err.join()
    assert got == code, text
    assert text.strip().splitlines()[-1] == line, text
    assert "Traceback" not in text and sorted(p.name for p in folder.iterdir()) == before


def test_sigterm_during_make_tiny_leaves_no_temp_folder(tmp_path):
    """MK01 / MK02: SIGTERM during ``jasco-export make-tiny`` (rc -15) left $TMPDIR/jasco-tiny-XXXX/."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "jasco_export.cli", "make-tiny", "--out", str(tmp_path / "t")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**RUN_ENV, "TMPDIR": str(tmp)})
    err = _Stderr(proc)
    _wait_for(lambda: any(tmp.glob("jasco-tiny-*")), proc, 300, "make-tiny's temp folder")
    code = _terminate(proc)
    text = err.join()
    assert code == 143, text
    assert text.strip().splitlines()[-1] == "jasco-export: terminated by SIGTERM; temporary files removed", text
    assert list(tmp.glob("jasco-tiny-*")) == [] and not (tmp_path / "t" / "hub").exists()


def test_first_line_is_the_one_quoting_rule():
    """errors.first_line replaces the ~15 hand-written copies (architecture review §5)."""
    from jasco_runtime.errors import first_line

    assert first_line(ValueError("\n  bad header  \nstack line 2")) == "bad header"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(OSError("x" * 500), limit=300) == "x" * 300
    assert first_line(KeyError("k")) == "'k'"
