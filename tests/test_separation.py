"""htdemucs drum separation: numpy STFT / apply_model / the exported network against torch and demucs itself."""
from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from jasco_runtime.separation import ApplyOptions, SeparatorConfig, separate, separate_drums, stft  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model():
    from jasco_export.tiny.htdemucs import build_htdemucs

    return build_htdemucs("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    """The tiny network exported as the drums_separator graph (fp32), on ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.separator import declare_separator, separator_record

    spec = declare_separator(tiny_model, max_batch=2)
    path = onnx_export.export_graph(spec, tmp_path_factory.mktemp("sep") / "drums_separator.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def engine(**feeds):
        return dict(zip(names, sess.run(None, feeds)))

    return engine, SeparatorConfig.from_record(separator_record(tiny_model, "tiny", 2)), path


def _torch_engine(model):
    """The graph's module itself as an engine (to test apply_model without ONNX in between)."""
    from jasco_export.graphs.separator import SeparatorNetwork

    net = SeparatorNetwork(model)

    def engine(mix, spec):
        with torch.no_grad():
            a, b = net(torch.from_numpy(mix), torch.from_numpy(spec))
        return {"drums_spec": a.numpy(), "drums_wave": b.numpy()}
    return engine


def _mixture(seconds: float, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """Stereo drums + bass line + pad [2, samples] (the golden set's mixture)."""
    from jasco_export.parity.golden import synthetic_mixture

    return synthetic_mixture(seconds, sr, seed=seed)


# -- STFT -----------------------------------------------------------------------------------------------
def test_stft_and_istft_match_torch_with_demucs_window_and_normalisation():
    from demucs.spec import ispectro, spectro

    x = _mixture(1.5)[None]
    z = stft.stft(x, 4096, 1024)
    ref = spectro(torch.from_numpy(x), 4096, 1024).numpy()  # torch.stft: hann(4096), normalized, reflect
    assert z.shape == ref.shape
    assert np.abs(z - ref).max() <= 1e-5
    y = stft.istft(ref, 1024, x.shape[-1])
    y_ref = ispectro(torch.from_numpy(ref), 1024, length=x.shape[-1]).numpy()
    assert np.abs(y - y_ref).max() <= 1e-5
    assert np.abs(y - x).max() < 1e-5  # and it inverts


@pytest.mark.parametrize("length", [85995, 44100, 1000])  # 1000 < 3·hop/2: pad1d's zero extension
def test_htdemucs_padding_matches_its_spec_and_ispec(tiny_model, length):
    x = _mixture(2.0)[None, :, :length]
    z = stft.htdemucs_spec(x, 4096)
    ref = tiny_model._spec(torch.from_numpy(x)).numpy()
    assert z.shape == ref.shape and np.abs(z - ref).max() <= 1e-5
    cac = stft.to_cac(z)
    assert np.abs(cac - tiny_model._magnitude(torch.from_numpy(ref)).numpy()).max() <= 1e-5
    assert np.array_equal(stft.from_cac(cac), z)
    y = stft.htdemucs_ispec(z, length)
    y_ref = tiny_model._ispec(torch.from_numpy(ref), length).numpy()
    assert np.abs(y - y_ref).max() <= 1e-5


# -- apply_model ----------------------------------------------------------------------------------------
def _demucs_apply(model, mix: np.ndarray, seed: int) -> np.ndarray:
    from demucs.apply import BagOfModels, apply_model

    random.seed(seed)
    with torch.no_grad():  # audiocraft's call: a bag of one model, apply_model's defaults
        return apply_model(BagOfModels([model]), torch.from_numpy(mix))[:, 0].numpy()


def test_apply_model_matches_demucs_shift_split_and_transitions(tiny_model, tiny_onnx):
    engine, cfg, _ = tiny_onnx
    mix = np.stack([_mixture(2.7), _mixture(2.7, seed=1)[:, ::-1]])  # 2.7 s + shift: 3 chunks, a short last one
    ref = _demucs_apply(tiny_model, mix, seed=5)
    got = separate(engine, mix, cfg, ApplyOptions(seed=5))
    assert got.shape == ref.shape == mix.shape
    assert np.abs(got - ref).max() <= 1e-4
    # the shift matters: another seed's offset gives another separation (the test above can fail)
    assert np.abs(separate(engine, mix, cfg, ApplyOptions(seed=6)) - ref).max() > 1e-3


def test_graph_module_is_htdemucs_forward_without_its_stft(tiny_model):
    """SeparatorNetwork between the numpy STFT and iSTFT = HTDemucs.forward's drums source."""
    L = int(tiny_model.segment * 44100)
    mix = _mixture(2.0)[None, :, :L]
    got = _torch_engine(tiny_model)(mix=mix, spec=stft.to_cac(stft.htdemucs_spec(mix, 4096)))
    y = got["drums_wave"] + stft.htdemucs_ispec(stft.from_cac(got["drums_spec"]), L)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(mix))[:, 0].numpy()
    assert np.abs(y - ref).max() <= 1e-5


def test_exported_graph_separates_a_441_stereo_mixture_as_demucs(tiny_model, tiny_onnx):
    from jasco_export.reference.separation import separate_drums as reference_separate

    engine, cfg, _ = tiny_onnx
    mix = _mixture(3.0)
    from demucs.apply import BagOfModels

    ref = reference_separate(torch.from_numpy(mix)[None], 44100, 32000, model=BagOfModels([tiny_model]))[0, 0].numpy()
    got = separate_drums(mix, 44100, engine, cfg)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(ref).max() > 1e-3  # a real signal, not two zeros


def test_audiocraft_path_32k_mono_segment(tiny_model, tiny_onnx):
    """What the drums conditioner separates: the prepared 32 kHz mono segment → 44.1 kHz stereo → 32 kHz mono."""
    from demucs.apply import BagOfModels
    from jasco_export.reference.separation import separate_drums as reference_separate
    from jasco_runtime.resample import resample_frac

    engine, cfg, _ = tiny_onnx
    mono = resample_frac(_mixture(2.0).mean(0), 44100, 32000)
    ref = reference_separate(torch.from_numpy(mono)[None, None], 32000, 32000, model=BagOfModels([tiny_model]))
    got = separate_drums(mono, 32000, engine, cfg)
    assert got.shape == (mono.shape[0],) == tuple(ref.shape[-1:])
    assert np.abs(got - ref[0, 0].numpy()).max() <= 1e-4


def test_silence_separates_to_exact_zeros(tiny_model, tiny_onnx):
    """Dropped-drums rows are zeros: htdemucs' own normalisation (x·std + mean, std = mean = 0) returns exact
    zeros, so the EnCodec "silence codes" table does not depend on the separator's weights."""
    from demucs.apply import BagOfModels
    from jasco_export.reference.separation import separate_drums as reference_separate

    engine, cfg, _ = tiny_onnx
    zeros = np.zeros(32000 * 2, np.float32)
    ref = reference_separate(torch.zeros(1, 1, zeros.shape[0]), 32000, 32000, model=BagOfModels([tiny_model]))
    assert not ref.abs().max().item()
    assert not np.abs(separate_drums(zeros, 32000, engine, cfg)).max()


def test_empty_drums_are_refused_with_one_line(tiny_onnx):
    from jasco_runtime.errors import InputError

    engine, cfg, _ = tiny_onnx
    with pytest.raises(InputError, match=r"drums must be \[channels, samples\]"):
        separate_drums(np.zeros((2, 0), np.float32), 44100, engine, cfg)


def test_real_htdemucs_declaration():
    """The real architecture's graph contract (7.8 s segments, 2048 bins × 336 frames), TensorRT profile included."""
    from jasco_export.graphs.separator import declare_separator
    from jasco_export.tiny.htdemucs import build_htdemucs

    spec = declare_separator(build_htdemucs("htdemucs"))
    assert [(s.name, s.shape) for s in spec.inputs] == [("mix", ("batch", 2, 343980)), ("spec", ("batch", 4, 2048, 336))]
    assert [(s.name, s.shape) for s in spec.outputs] == [("drums_spec", ("batch", 4, 2048, 336)),
                                                        ("drums_wave", ("batch", 2, 343980))]
    assert spec.precisions == ("fp32", "fp16") and spec.role == "runtime"
    assert spec.profile_shapes()["spec"] == ((1, 4, 2048, 336),) * 3


@pytest.mark.slow
def test_real_size_graph_separates_10s_as_demucs(tmp_path):
    """Real htdemucs architecture (random weights): exported graph + numpy vs demucs.apply.apply_model, 10 s."""
    ort = pytest.importorskip("onnxruntime")
    from demucs.apply import BagOfModels
    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.separator import declare_separator, separator_record
    from jasco_export.reference.separation import separate_drums as reference_separate
    from jasco_export.tiny.htdemucs import build_htdemucs

    model = build_htdemucs("htdemucs")
    path = onnx_export.export_graph(declare_separator(model), tmp_path / "drums_separator.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    cfg = SeparatorConfig.from_record(separator_record(model, "htdemucs", 1))
    mix = _mixture(10.0)
    got = separate_drums(mix, 44100, lambda **f: dict(zip(names, sess.run(None, f))), cfg)
    ref = reference_separate(torch.from_numpy(mix)[None], 44100, 32000, model=BagOfModels([model]))[0, 0].numpy()
    assert np.abs(got - ref).max() <= 1e-4


def test_separation_benchmark_smoke(tmp_path):
    """benchmarks/separation.py runs end to end (tiny preset, runtime only) and reports its figures."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("onnxruntime")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / d) for d in ("runtime", "export", "serve", "."))}
    out = subprocess.run([sys.executable, "-m", "benchmarks.separation", "--out", str(tmp_path), "--seconds", "2",
                          "--repeats", "1", "--variants", "runtime-fp32"], capture_output=True, text=True, env=env,
                         cwd=root, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = json.loads((tmp_path / "separation.json").read_text())["results"]
    assert result["variant"] == "runtime-fp32" and result["s_per_10s_audio"] > 0 and result["peak_rss_mb"] > 0
