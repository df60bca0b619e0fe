"""The PyTorch reference (jasco_export): loading, conditions, CFG batch, solvers, determinism, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import shared_path


# -- temporal blur ----------------------------------------------------------------------------------
def _blur_float64(x: np.ndarray, factor: int) -> np.ndarray:
    """Hand computation: reflect-pad right to a multiple, group means, repeat, crop (float64)."""
    t = x.shape[0]
    pad = (-t) % factor
    if pad:
        x = np.concatenate([x, x[-2:-2 - pad:-1]], axis=0)
    out = np.repeat(x.reshape(-1, factor, *x.shape[1:]).mean(axis=1), factor, axis=0)
    return out[:t]


@pytest.mark.parametrize("t", [8, 9, 500, 10])
def test_temporal_blur_matches_float64_hand_computation(t):
    from jasco_export.reference.conditioners import temporal_blur

    x = np.random.default_rng(t).standard_normal((t, 3))
    ours = temporal_blur(torch.from_numpy(x)[None].float(), 3)[0].double().numpy()
    np.testing.assert_allclose(ours, _blur_float64(x, 3), atol=1e-6)


def test_temporal_blur_documented_example():
    from jasco_export.reference.conditioners import temporal_blur

    x = torch.arange(8, dtype=torch.float32).view(1, 8, 1)
    got = temporal_blur(x, 3).flatten().tolist()
    # groups (0,1,2), (3,4,5), (6,7 + reflect 6) → 1, 4, 19/3
    assert got == pytest.approx([1, 1, 1, 4, 4, 4, 19 / 3, 19 / 3])


# -- loading ------------------------------------------------------------------------------------------
def test_release_roundtrip_through_hub_cache(tiny_cd, tiny_hub):
    """What make-tiny wrote is exactly what loads back (strict), via the hub id."""
    from jasco_export.reference import loading

    files = loading.resolve_model("jasco-tiny/chords-drums")
    state, _ = loading.read_release(files.state_dict)
    ours = tiny_cd.model.state_dict()
    assert set(state) == set(ours)
    for k, v in state.items():
        assert torch.equal(v, ours[k]), k
    assert tiny_cd.cfg.variant == "chords-drums"


def test_old_weight_norm_key_style_is_accepted(tiny_hub, tmp_path):
    from jasco_export import get_pretrained
    from jasco_export.reference import loading

    files = loading.resolve_model("jasco-tiny/chords-drums")
    pkg = torch.load(files.state_dict, weights_only=True)
    renamed = {}
    for k, v in pkg["best_state"].items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        renamed[k] = v
    assert any(k.endswith("weight_g") for k in renamed)
    pkg["best_state"] = renamed
    torch.save(pkg, tmp_path / "state_dict.bin")
    (tmp_path / "compression_state_dict.bin").write_bytes(files.compression_state_dict.read_bytes())
    (tmp_path / "chord_to_index_mapping.pkl").write_bytes((files.folder / "chord_to_index_mapping.pkl").read_bytes())
    model = get_pretrained(str(tmp_path))
    ref = get_pretrained("jasco-tiny/chords-drums")
    for (k, a), (_, b) in zip(model.model.state_dict().items(), ref.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_missing_and_unexpected_keys_give_readable_diff(tiny_hub, tmp_path):
    from jasco_export import CheckpointError, get_pretrained
    from jasco_export.reference import loading

    files = loading.resolve_model("jasco-tiny/chords-drums")
    pkg = torch.load(files.state_dict, weights_only=True)
    pkg["best_state"].pop("emb.weight")
    pkg["best_state"]["bogus.weight"] = torch.zeros(1)
    torch.save(pkg, tmp_path / "state_dict.bin")
    (tmp_path / "compression_state_dict.bin").write_bytes(files.compression_state_dict.read_bytes())
    with pytest.raises(CheckpointError) as exc:
        get_pretrained(str(tmp_path), chords_mapping_path=str(files.folder / "chord_to_index_mapping.pkl"))
    msg = str(exc.value)
    assert "1 missing: emb.weight" in msg and "1 unexpected: bogus.weight" in msg and "\n" not in msg


def test_corrupt_checkpoint_and_unknown_model_errors(tiny_hub, tmp_path):
    from jasco_export import CheckpointError, ModelNotFoundError, get_pretrained

    (tmp_path / "state_dict.bin").write_bytes(b"not a checkpoint")
    (tmp_path / "compression_state_dict.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="corrupt"):
        get_pretrained(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache|not found"):
        get_pretrained("jasco-tiny/does-not-exist")
    with pytest.raises(ModelNotFoundError, match="no state_dict.bin"):
        get_pretrained(str(tmp_path.parent))


def test_full_audiocraft_encodec_checkpoint_is_a_clear_error(tmp_path):
    from jasco_export import CheckpointError
    from jasco_export.reference import loading

    torch.save({"best_state": {}, "xp.cfg": "a: 1"}, tmp_path / "compression_state_dict.bin")
    with pytest.raises(CheckpointError, match="full audiocraft EnCodec"):
        loading.load_compression_model(tmp_path / "compression_state_dict.bin")


def test_bundled_encodec_config_used_when_pointer_is_not_cached(tmp_path):
    from jasco_export.reference import loading

    torch.save({"pretrained": "facebook/encodec_32khz"}, tmp_path / "compression_state_dict.bin")
    model = loading.load_compression_model(tmp_path / "compression_state_dict.bin")
    assert model.config.sampling_rate == 32000 and model.config.num_filters == 64


# -- conditions and the CFG batch ----------------------------------------------------------------
def _terms(a, t):
    from jasco_export.reference.guidance import cfg_terms

    return cfg_terms(a, t)


def test_cfg_batch_rows_and_null_conditions(tiny_cd):
    j = tiny_cd
    terms = _terms(1.25, 2.5)  # All, Text, Null
    assert [t.kind for t in terms] == ["all", "text", "null"]
    frames = j.frame_chords([("C", 0.0), ("F", 4.0)])
    drums = torch.randn(1, 1, 320000) * 0.1
    tok = j.condition_inputs(["a funky groove", "calm"], terms, frames, drums)
    card = j.model.condition_provider.conditioners["chords"].card
    ch = tok["chords"]
    assert ch.dtype == torch.int64 and ch.shape == (6, 500)
    assert torch.equal(ch[0], torch.as_tensor(frames)) and (ch[2:] == card).all()
    assert tok["self_wav"].shape == (6, 1, 320000) and (tok["self_wav"][2:] == 0).all()
    mask = tok["description"]["attention_mask"]
    assert (mask[4:] == 0).all() and mask[:4].sum() > 0  # Null rows: "" with zeroed mask
    cond = j.condition_tensors(tok)
    assert cond["description"][0][4:].abs().max() == 0
    bias = j.model.condition_provider.conditioners["self_wav"].output_proj.bias
    silence = cond["self_wav"][0][2]
    assert not torch.allclose(silence, bias.expand_as(silence))  # dropped drums → silence codes, not bias
    torch.testing.assert_close(cond["self_wav"][0][2], cond["self_wav"][0][5])


def test_drums_absent_everywhere_gives_projection_bias(tiny_cd):
    j = tiny_cd
    tok = j.condition_inputs(["x"], _terms(5.0, 0.0), None, None)
    assert tok["chords"].dtype == torch.int32 and (tok["chords"] == 194).all()
    assert tok["self_wav"].shape[-1] == 1
    d = j.condition_tensors(tok)["self_wav"][0]
    bias = j.model.condition_provider.conditioners["self_wav"].output_proj.bias
    torch.testing.assert_close(d, bias.expand_as(d))


def test_melody_kept_in_null_terms_when_chords_absent(tiny_cdm):
    j = tiny_cdm
    mel = torch.rand(53, 500)
    terms = _terms(1.25, 2.5)
    no_chords = j.condition_inputs(["x"], terms, None, None, mel)["melody"]
    assert all(torch.equal(no_chords[i], mel) for i in range(3))
    with_chords = j.condition_inputs(["x"], terms, j.frame_chords([("C", 0.0)]), None, mel)["melody"]
    assert torch.equal(with_chords[0], mel) and (with_chords[1:] == 0).all()


def test_short_melody_is_zero_padded_after_projection(tiny_cdm):
    from jasco_export.reference.flow_model import align_length

    j = tiny_cdm
    mel = torch.rand(1, 53, 450)
    emb, _ = j.model.condition_provider.conditioners["melody"](mel)
    aligned = align_length(emb, 500)
    assert aligned.shape == (1, 500, 16) and (aligned[:, 450:] == 0).all()


def test_text_padding_changes_the_output(tiny_cd):
    """No key mask in cross-attention: a prompt batched with a longer one gets a different field."""
    j = tiny_cd
    terms = _terms(1.0, 0.0)
    z = torch.randn(1, 500, 128, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5])
    alone = j.condition_tensors(j.condition_inputs(["calm"], terms))
    v_alone = j.guided_vector_field(z, t, alone, terms)
    batched = j.condition_tensors(j.condition_inputs(["calm", "a very long description of an energetic rock song"], terms))
    v_batched = j.guided_vector_field(z.repeat(2, 1, 1), t, batched, terms)[:1]
    assert (v_alone - v_batched).abs().max() > 1e-3


# -- solvers and determinism ---------------------------------------------------------------------
def test_euler_on_a_known_vector_field(tiny_cd, monkeypatch):
    """With v(z, t) = -z (guidance weights sum to 1) Euler gives z0·(1 - dt)^N exactly."""
    j = tiny_cd
    monkeypatch.setattr(j, "guided_vector_field", lambda z, t, c, terms: -z)
    j.set_generation_params(cfg_coef_all=1.0, cfg_coef_txt=0.0, euler=True, euler_steps=8)
    z0 = torch.randn(1, 500, 128, dtype=torch.float32)
    z, nfe = j.integrate(z0, {}, _terms(1.0, 0.0))
    expected = z0.double() * (1 - 1 / 8) ** 8
    assert nfe == 8
    torch.testing.assert_close(z.double(), expected, rtol=1e-5, atol=1e-6)


def test_dopri5_default_when_euler_not_set(tiny_cd, monkeypatch):
    j = tiny_cd
    monkeypatch.setattr(j, "guided_vector_field", lambda z, t, c, terms: -z)
    j.set_generation_params(cfg_coef_all=1.0, cfg_coef_txt=0.0)
    z0 = torch.ones(1, 4, 2)
    z, nfe = j.integrate(z0, {}, _terms(1.0, 0.0))
    torch.testing.assert_close(z, z0 * math.exp(-(1 - 1e-5)), rtol=1e-4, atol=1e-5)
    assert nfe > 6


def test_seed_and_explicit_noise_are_deterministic(tiny_cd):
    j = tiny_cd
    j.set_generation_params(cfg_coef_all=1.25, cfg_coef_txt=2.5, euler=True, euler_steps=3)
    a = j.generate_music(["funk"], chords=[("C", 0.0)], seed=3, return_output=True)
    b = j.generate_music(["funk"], chords=[("C", 0.0)], seed=3, return_output=True)
    c = j.generate_music(["funk"], chords=[("C", 0.0)], init_noise=a.init_noise, return_output=True)
    d = j.generate_music(["funk"], chords=[("C", 0.0)], seed=4, return_output=True)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.latents, c.latents)
    assert not torch.equal(a.latents, d.latents)
    assert a.audio.shape == (1, 1, 320000) and torch.isfinite(a.audio).all()


def test_bad_inputs(tiny_cd):
    from jasco_export import InputError

    j = tiny_cd
    with pytest.raises(InputError, match="no melody conditioner"):
        j.generate_music(["x"], melody_salience_matrix=torch.zeros(53, 500))
    with pytest.raises(InputError, match="init_noise"):
        j.generate_music(["x"], init_noise=torch.zeros(2, 500, 128))
    with pytest.raises(InputError, match="no descriptions"):
        j.generate_music([])
    with pytest.raises(InputError, match="unknown generation parameter"):
        j.set_generation_params(cfg_coef_all=1.0, eular=True)


def test_real_drum_stem_gives_varied_codes(tiny_cd):
    import soundfile as sf

    wav, sr = sf.read(str(shared_path("assets", "sep_drums_1.mp3")), dtype="float32", always_2d=True)
    drums = tiny_cd.prepare_drums(torch.from_numpy(wav.T), sr)
    assert drums.shape == (1, 1, 320000)
    codes = tiny_cd.model.condition_provider.conditioners["self_wav"].drum_codes(drums)
    assert codes.shape == (1, 500) and codes.unique().numel() > 3


def test_cfg_batch_encodes_each_distinct_drum_stem_once_with_the_batched_codes(tiny_cd):
    """The reference encodes the stem once per distinct waveform (memory); the codes must equal audiocraft's way,
    one batched EnCodec call over every CFG row (kept rows: the stem, dropped rows: zeros)."""
    import soundfile as sf

    wav, sr = sf.read(str(shared_path("assets", "sep_drums_1.mp3")), dtype="float32", always_2d=True)
    stem = tiny_cd.prepare_drums(torch.from_numpy(wav.T), sr)[0]
    other = torch.roll(stem, 4000, dims=-1)
    batch = torch.stack([stem, other, torch.zeros_like(stem), stem, torch.zeros_like(stem), other])
    drums = tiny_cd.model.condition_provider.conditioners["self_wav"]
    calls = []
    original = drums.drum_codes
    drums.drum_codes = lambda w, **kw: calls.append(w.shape[0]) or original(w, **kw)
    try:
        distinct = drums.distinct_drum_codes(batch)
    finally:
        del drums.drum_codes
    assert calls == [1, 1, 1]  # three distinct waveforms, each encoded alone
    torch.testing.assert_close(distinct, drums.drum_codes(batch), rtol=0, atol=0)


def test_drum_separation_is_opt_in_with_a_clear_error_when_unavailable(tiny_cd):
    import importlib.util

    from jasco_export.reference.separation import SeparationUnavailable

    if importlib.util.find_spec("demucs") is not None:
        pytest.skip("demucs is installed here")
    with pytest.raises(SeparationUnavailable, match="demucs"):
        tiny_cd.generate_music(["x"], drums_wav=torch.zeros(1, 32000), separate_drums=True)
