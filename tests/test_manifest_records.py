"""The manifest's typed records (jasco_runtime.export_folder): round trips, one-line errors naming a damaged
field, schema 2.0 folders, artifact digests checked before anything runs, one backend/precision vocabulary
from which every CLI builds its choices."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import (ArtifactKey, ArtifactRecord, Backend, ExportFolder, GoldenRecord, GraphRecord,
                                         Manifest, Precision, TensorRTRecord)


def _copy(tiny_engines, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_engines.out, tmp_path / "engines"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write(folder: Path, m: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(m))


def as_schema_2_0(folder: Path) -> None:
    """Rewrite a folder's manifest as jasco-export wrote it before schema 2.1 (no digests, no recorded maximum
    duration or runtime graphs, export backend spelled ``onnx``)."""
    m = _manifest(folder)
    m["schema_version"] = "2.0"
    del m["audio"]["max_duration"]
    del m["export"]["runtime_graphs"]
    m["export"]["backend"] = "onnx"
    for g in m["graphs"].values():
        for art in g["artifacts"].values():
            del art["digests"]
    _write(folder, m)


# -- records ------------------------------------------------------------------------------------------------
def test_the_exported_manifest_round_trips_through_the_records(tiny_engines):
    raw = _manifest(tiny_engines.out)
    records = Manifest.from_dict(copy.deepcopy(raw))
    assert records.to_dict() == raw
    assert records.audio.max_duration == 60.0 and records.export.runtime_graphs == (
        "text_encoder", "drums_encoder", "flow_step", "solver_step", "encodec_decoder")
    flow = records.graphs["flow_step"]
    assert isinstance(flow, GraphRecord) and flow.input_names == ["z", "t", "text", "chords", "drums"]
    assert flow.profile["batch"].max == 6 and flow.max_size("text_len") == 128
    fp32 = flow.artifact_records["onnx-fp32"]
    assert isinstance(fp32, ArtifactRecord) and set(fp32.digests) == {"flow_step.fp32.onnx"}
    assert fp32.digests["flow_step.fp32.onnx"].size == (tiny_engines.out / "flow_step.fp32.onnx").stat().st_size
    assert isinstance(records.golden, GoldenRecord) and records.golden.e2e.settings["drums_sample_rate"] == 44100
    assert isinstance(records.tensorrt, TensorRTRecord) and all(c.ok for c in records.tensorrt.compatibility.values())


def test_records_round_trip_from_hand_written_blocks():
    art = {"file": "g.fp16.plan", "seconds": 1.5, "digests": {"g.fp16.plan": {"size": 3, "sha256": "ab"}}}
    rec = ArtifactRecord.from_dict(art, "a")
    assert rec.info == {"seconds": 1.5} and rec.digests["g.fp16.plan"].size == 3 and rec.to_dict() == art
    golden = {"graphs": {"g": "g.npz"}, "cases": ["random"], "bytes": 10,
              "e2e": {"file": "e2e.npz", "prompts": ["a"], "settings": {"steps": 2}}}
    assert GoldenRecord.from_dict(golden).to_dict() == golden
    trt = {"compatibility": {"g": {"ok": False, "problems": ["op 'Unique'"], "ops": ["Unique"]}}, "skipped": "no GPU"}
    back = TensorRTRecord.from_dict(trt)
    assert back.compatibility["g"].details == {"ops": ["Unique"]} and back.to_dict() == trt


def test_graphs_are_built_once(tiny_engines):
    folder = ExportFolder.open(tiny_engines.out)
    assert folder.graphs is folder.graphs and folder.graphs["flow_step"] is folder.graphs["flow_step"]


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["graphs"]["flow_step"]["profile"]["batch"].update(max="6"), "'graphs.flow_step.profile.batch.max' must be int"),
    (lambda m: m["graphs"]["flow_step"]["inputs"][0].pop("dtype"), "lacks 'graphs.flow_step.inputs[0].dtype'"),
    (lambda m: m["export"].update(max_batch=0), "'export.max_batch' must be positive"),
    (lambda m: m["export"].update(backend="cuda"), "'export.backend' is 'cuda'"),
    (lambda m: m["tensorrt"]["compatibility"]["flow_step"].update(ok="yes"), "'tensorrt.compatibility.flow_step.ok' must be bool"),
    (lambda m: m["golden"]["e2e"].update(prompts=[1]), "'golden.e2e.prompts[0]' must be str"),
    (lambda m: m["graphs"]["text_encoder"]["artifacts"]["onnx-fp32"]["digests"]["text_encoder.fp32.onnx"].update(size="1"),
     "'graphs.text_encoder.artifacts.onnx-fp32.digests.text_encoder.fp32.onnx.size' must be int"),
    (lambda m: m["audio"].update(max_duration=-1), "'audio.max_duration' must be positive"),
    (lambda m: m["model"].pop("id"), "lacks 'model.id'"),
])
def test_a_damaged_field_is_one_line_naming_it(tiny_engines, tmp_path, edit, fragment):
    folder = _copy(tiny_engines, tmp_path)
    m = _manifest(folder)
    edit(m)
    _write(folder, m)
    with pytest.raises(InputError) as err:
        ExportFolder.open(folder)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg and "re-run jasco-export" in msg and str(folder) in msg


def test_a_schema_2_0_folder_still_opens_and_verifies(tiny_engines, tmp_path):
    from jasco_runtime.longform import plan_for_folder
    from jasco_runtime.verify import verify_folder

    folder = _copy(tiny_engines, tmp_path)
    as_schema_2_0(folder)
    old = ExportFolder.open(folder)
    assert old.records.schema_version == "2.0" and old.export.backend == Backend.ONNXRUNTIME.value
    assert old.max_duration == 60.0  # from the decoder's frames profile (3000 frames at 50 Hz)
    assert old.runtime_graphs() == ["text_encoder", "drums_encoder", "flow_step", "encodec_decoder"]
    assert len(plan_for_folder(old, 30.0).windows) > 1
    report = verify_folder(old, backends=["onnx"], end_to_end=False, log=lambda m: None)
    assert report["passed"], report.get("reason")


def test_the_maximum_duration_comes_from_the_manifest(tiny_engines, tmp_path):
    from jasco_runtime.longform import plan_for_folder

    folder = _copy(tiny_engines, tmp_path)
    m = _manifest(folder)
    m["audio"]["max_duration"] = 15.0  # the decoder's profile would take 60 s: the record wins
    _write(folder, m)
    f = ExportFolder.open(folder)
    assert f.max_duration == 15.0 and len(plan_for_folder(f, 15.0).windows) == 2
    with pytest.raises(InputError, match="maximum of 15 s"):
        plan_for_folder(f, 20.0)


# -- digests ------------------------------------------------------------------------------------------------
def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_truncated_artifact_is_named_when_the_folder_opens(tiny_engines, tmp_path):
    folder = _copy(tiny_engines, tmp_path)
    target = folder / "flow_step.fp16.onnx"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(InputError) as err:
        ExportFolder.open(folder)
    msg = str(err.value)
    assert "flow_step.fp16.onnx has 1000 bytes, the manifest records" in msg and "\n" not in msg
    assert "copy the export folder again" in msg


def test_verify_names_a_file_whose_sha256_differs_before_anything_runs(tiny_engines, tmp_path, capsys, monkeypatch):
    from jasco_runtime import backends
    from jasco_runtime.cli import main

    folder = _copy(tiny_engines, tmp_path)
    _flip_middle_byte(folder / "encodec_decoder.fp16.onnx")
    ExportFolder.open(folder)  # same size: the fast path at open passes; the hash is verify's
    monkeypatch.setattr(backends, "open_engine", lambda *a, **k: pytest.fail("verify ran an engine on a damaged folder"))
    assert main(["verify", str(folder), "--no-e2e"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encodec_decoder.fp16.onnx does not match its recorded sha256" in err[0]
    assert "flow_step" not in err[0]  # only the damaged file is named
    assert not (folder / "verify.json").exists()


def test_every_registered_artifact_gets_digests_also_tensorrt_engines(tiny_engines, tmp_path, trt_standin):
    folder = _copy(tiny_engines, tmp_path)
    trt_standin.build_engines(folder)
    f = ExportFolder.open(folder)
    engines = [a for a in f.artifacts() if a.key.runtime is Backend.TENSORRT]
    assert len(engines) == 5
    for a in f.artifacts():
        assert a.file in a.record.digests, a.key
        assert a.record.digests[a.file].size == (folder / a.file).stat().st_size
    assert f.digest_problems(full=True) == []
    _flip_middle_byte(folder / "flow_step.fp16.plan")
    assert ExportFolder.open(folder).digest_problems() == ["flow_step.fp16.plan does not match its recorded sha256"]


# -- vocabulary ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling, backend", [
    ("onnx", Backend.ONNXRUNTIME), ("onnxruntime", Backend.ONNXRUNTIME), ("ort-cpu", Backend.ONNXRUNTIME),
    ("ort-cuda", Backend.ONNXRUNTIME), ("trt", Backend.TENSORRT), ("tensorrt", Backend.TENSORRT),
])
def test_every_backend_spelling_maps_to_one_backend(spelling, backend):
    assert Backend.parse(spelling) is backend
    key = ArtifactKey("flow_step", "fp16", spelling)
    assert key.runtime is backend and key.slot == f"{backend.artifact}-fp16"


def test_unknown_backend_and_precision_are_one_line():
    with pytest.raises(InputError, match=r"unknown backend 'cuda'; use one of onnxruntime, tensorrt"):
        Backend.parse("cuda")
    with pytest.raises(InputError, match=r"unknown precision 'bf16'; use one of fp32, fp16, int8"):
        ArtifactKey("flow_step", "bf16", "onnx")


def _runtime_parser():
    from jasco_runtime.cli import app

    return app.parser(), ["generate", "--engines", "e", "--text", "x", "--out", "o.wav"]


def _verify_parser():
    from jasco_runtime.cli import app

    return app.parser(), ["verify", "e"]


def _serve_parser():
    from jasco_serve import cli

    return cli.parser(), ["--engines", "e"]


def _export_parser():
    from jasco_export import cli

    return cli._export_parser(), ["--model", "m"]


def _serve_bench_parser():
    from benchmarks import serve

    class Parser:  # parse_args builds its parser on each call
        parse_args = staticmethod(serve.parse_args)

    return Parser(), ["--engines", "e"]


CLIS = {"jasco-run": (_runtime_parser, ["backend", "precision"]), "jasco-run verify": (_verify_parser, ["backend"]),
        "jasco-serve": (_serve_parser, ["backend", "precision"]), "jasco-export": (_export_parser, ["backend"]),
        "benchmarks.serve": (_serve_bench_parser, ["backend", "precision"])}


@pytest.mark.parametrize("name", sorted(CLIS))
def test_the_enumerations_drive_every_cli_choice(name, monkeypatch):
    """A made-up backend/precision added to the enumerations' choices is accepted by every CLI that takes the
    option, and refused before: the CLIs hard-code no list of their own."""
    make, options = CLIS[name]
    for option in options:
        parser, base = make()
        value = {"backend": "fakert", "precision": "fp8"}[option]
        try:
            parser.parse_args(base + [f"--{option}", value])
        except (SystemExit, Exception):  # argparse exits; jasco-run's parser raises its UsageError
            pass
        else:
            pytest.fail(f"{name} --{option} {value} was accepted before the enumeration had it")
        with monkeypatch.context() as m:
            if option == "backend":
                real_choices, real_spellings = Backend.choices, Backend.spellings
                m.setattr(Backend, "choices", classmethod(lambda cls, *extra: real_choices(*extra) + ["fakert"]))
                m.setattr(Backend, "spellings", classmethod(lambda cls: real_spellings() + ["fakert"]))
            else:
                real = Precision.choices
                m.setattr(Precision, "choices", classmethod(lambda cls: real() + ["fp8"]))
            parser, base = make()
            assert getattr(parser.parse_args(base + [f"--{option}", value]), option) == value
