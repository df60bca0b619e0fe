"""Tiny offline stand-ins for T5 and EnCodec (jasco_export.tiny.assets) and the hub-cache writer."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from jasco_export.tiny import assets as ta

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "jasco-400M-chords-drums.keys.json"
TEXTS = [
    "upbeat funk groove with slap bass and brass",
    "calm piano",
    "",
    "  Multiple   SPACES, punctuation!? and digits 120 bpm ",
    "unseen wörds ♪ and émoji 🎵",
    "<extra_id_0> sentinel",
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_assets")
    return {"t5": ta.make_tiny_t5(root / "t5"), "encodec": ta.make_tiny_encodec(root / "encodec")}


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------- T5

def test_t5_files_and_config(assets):
    from transformers import AutoTokenizer, T5Config

    d = assets["t5"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (d / name).is_file(), name
    cfg = T5Config.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_ff, cfg.d_kv) == (32, 2, 2, 64, 16)
    assert 500 <= len(tok) <= 1000
    assert cfg.vocab_size >= len(tok) and cfg.vocab_size % 64 == 0
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1  # T5 layout: sentinels last, reversed


def test_tokenizer_matches_standalone_file(assets):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(assets["t5"])
    raw = Tokenizer.from_file(str(assets["t5"] / "tokenizer.json"))
    for text in TEXTS:
        ids = auto(text).input_ids
        assert ids == raw.encode(text).ids, text
        assert ids[-1] == 1 and 1 not in ids[:-1]  # exactly one trailing </s>
    assert auto("").input_ids == [1] and raw.encode("").ids == [1]
    assert 2 in auto("unseen wörds ♪").input_ids  # unknown characters → <unk>
    assert len(auto("upbeat funk groove with slap bass").input_ids) < len("upbeat funk groove with slap bass")


def test_tokenizer_padding_batch(assets):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(assets["t5"])
    batch = auto(TEXTS, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    singles = [auto(t).input_ids for t in TEXTS]
    assert ids.shape == (len(TEXTS), max(len(s) for s in singles))
    for row, m, single in zip(ids.tolist(), mask.tolist(), singles):
        n = len(single)
        assert row[:n] == single and all(i == 0 for i in row[n:])  # right padding with <pad> = 0
        assert m == [1] * n + [0] * (len(row) - n)
    raw = Tokenizer.from_file(str(assets["t5"] / "tokenizer.json"))
    raw.enable_padding(pad_id=0, pad_token="<pad>")
    enc = raw.encode_batch(TEXTS)
    assert [e.ids for e in enc] == ids.tolist() and [e.attention_mask for e in enc] == mask.tolist()


def test_tokenizer_training_is_deterministic(assets):
    # tokenizers' trainer iterates hash maps in random order: two builds in one process differ there.
    a, b = ta.build_t5_tokenizer(), ta.build_t5_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    saved = json.loads((assets["t5"] / "tokenizer.json").read_text())
    assert saved["model"]["vocab"] == json.loads(a.backend_tokenizer.to_str())["model"]["vocab"]


def test_t5_model_forward_and_determinism(assets, tmp_path):
    from transformers import AutoTokenizer, T5EncoderModel

    model = T5EncoderModel.from_pretrained(assets["t5"]).eval()
    tok = AutoTokenizer.from_pretrained(assets["t5"])
    inputs = tok(TEXTS[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        h = model(**inputs).last_hidden_state
    assert h.shape == (3, inputs["input_ids"].shape[1], 32) and torch.isfinite(h).all()
    norms = [p for n, p in model.named_parameters() if n.endswith("layer_norm.weight")]
    assert norms and all((p - 1).abs().max() > 1e-3 for p in norms)  # gains perturbed away from 1
    again = T5EncoderModel.from_pretrained(ta.make_tiny_t5(tmp_path / "same", seed=0))
    other = T5EncoderModel.from_pretrained(ta.make_tiny_t5(tmp_path / "other", seed=1))
    s0, s1, s2 = _state(model), _state(again), _state(other)
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert not torch.equal(s0["shared.weight"], s2["shared.weight"])
    assert (tmp_path / "same" / "tokenizer.json").read_bytes() == (assets["t5"] / "tokenizer.json").read_bytes()


# ------------------------------------------------------------------------------------------ EnCodec

def test_encodec_config_matches_release_structure(assets):
    from transformers import EncodecConfig

    cfg = EncodecConfig.from_pretrained(assets["encodec"])
    if SPEC.is_file():
        real = json.loads(SPEC.read_text())["compression_model_copy"]["config"]
        assert {k: v for k, v in real.items() if k != "architectures"} == ta.ENCODEC_32KHZ_CONFIG
    ref = ta.ENCODEC_32KHZ_CONFIG
    for key, value in ref.items():
        if key in ("num_filters", "codebook_size", "target_bandwidths"):
            continue
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert (cfg.num_filters, cfg.codebook_size, cfg.num_quantizers) == (8, 64, 4)
    assert cfg.hop_length == 640 and cfg.frame_rate == 50 and cfg.hidden_size == 128
    # audiocraft's HFEncodecCompressionModel needs bandwidth·1000 / (frame_rate·log2(card)) integral
    nq = cfg.target_bandwidths[-1] * 1000 / (cfg.frame_rate * math.log2(cfg.codebook_size))
    assert nq == 4.0


def test_encodec_shapes_codes_and_codebooks(assets):
    from transformers import EncodecModel

    model = EncodecModel.from_pretrained(assets["encodec"]).eval()
    gen = torch.Generator().manual_seed(1)
    T = 2 * 32000
    t = torch.arange(T) / 32000
    tones = 0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + torch.sin(2 * math.pi * 3 * t))
    x = torch.stack([0.2 * torch.randn(T, generator=gen), tones])[:, None]
    with torch.no_grad():
        z = model.encoder(x)
        assert z.shape == (2, 128, T // 640)
        assert 1.0 < z.std().item() < 16.0  # calibrated to the release latent scale (~4)
        codes = model.quantizer.layers[0].encode(z)
        assert codes.shape == (2, T // 640) and codes.dtype == torch.int64
        assert codes[0].unique().numel() > 1 and codes[1].unique().numel() > 1
        q = model.quantizer.layers[0].decode(codes)
        assert q.shape == z.shape
        assert ((z - q).norm() < z.norm())  # the nearest codebook entry explains part of the latent
        y = model.decoder(z)
        assert y.shape == (2, 1, T) and torch.isfinite(y).all()
        # the output depends on the latents, not just on biases (JASCO decodes generated latents)
        assert (y - model.decoder(torch.zeros_like(z))).std() > 0.3 * y.std()
        assert 0.01 < y.std().item() < 1.0
        all_codes = model.quantizer.encode(z)
        assert all_codes.shape == (4, 2, T // 640)
    for layer in model.quantizer.layers:
        cb = layer.codebook
        assert cb.inited.item() == 1.0
        assert (cb.cluster_size >= 1).all()
        torch.testing.assert_close(cb.embed_avg / cb.cluster_size[:, None], cb.embed)
        assert torch.cdist(cb.embed, cb.embed).add(torch.eye(64) * 1e9).min() > 0  # distinct entries
    emb0 = model.quantizer.layers[0].codebook.embed
    assert 0.2 < emb0.std().item() / z.std().item() < 5.0


def test_encodec_determinism(assets, tmp_path):
    from transformers import EncodecModel

    a = _state(EncodecModel.from_pretrained(assets["encodec"]))
    b = _state(EncodecModel.from_pretrained(ta.make_tiny_encodec(tmp_path / "same", seed=0)))
    c = _state(EncodecModel.from_pretrained(ta.make_tiny_encodec(tmp_path / "other", seed=1)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    key = "quantizer.layers.0.codebook.embed"
    assert not torch.equal(a[key], c[key])
    assert any(k.endswith("parametrizations.weight.original0") for k in a)  # weight norm as in the release


# ---------------------------------------------------------------------------------------- hub cache

def _offline(monkeypatch, cache: Path) -> None:
    """HF_HUB_CACHE / HF_HUB_OFFLINE are read when huggingface_hub is imported: patch its constants too."""
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)


def test_write_hub_repo_layout(assets, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snap = ta.write_hub_repo(cache, "jasco-tiny/t5", assets["t5"])
    repo = cache / f"models{constants.REPO_ID_SEPARATOR}jasco-tiny{constants.REPO_ID_SEPARATOR}t5"
    assert repo == ta.hub_repo_folder(cache, "jasco-tiny/t5")
    commit = (repo / "refs" / "main").read_text()
    assert snap == repo / "snapshots" / commit and len(commit) == 40
    names = sorted(p.name for p in snap.iterdir())
    assert names == sorted(p.name for p in assets["t5"].iterdir())
    for p in snap.iterdir():
        blob = p.resolve()
        assert blob.parent == (repo / "blobs").resolve()
        assert blob.name == hashlib.sha256((assets["t5"] / p.name).read_bytes()).hexdigest()
        if p.is_symlink():
            assert not os.path.isabs(os.readlink(p))
    # same content → same snapshot; a mapping with nested names and an explicit commit
    assert ta.write_hub_repo(cache, "jasco-tiny/t5", assets["t5"]) == snap
    snap2 = ta.write_hub_repo(cache, "org/other", {"sub/dir/config.json": assets["t5"] / "config.json"},
                              commit_hash="a" * 40)
    assert (snap2 / "sub" / "dir" / "config.json").read_bytes() == (assets["t5"] / "config.json").read_bytes()
    with pytest.raises(ValueError):
        ta.write_hub_repo(cache, "org/bad", assets["t5"], commit_hash="xyz")


def test_hub_cache_resolves_offline(assets, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download, snapshot_download
    from transformers import AutoTokenizer, EncodecModel, T5EncoderModel

    cache = tmp_path / "hub"
    snap_t5 = ta.write_hub_repo(cache, "jasco-tiny/t5", assets["t5"])
    snap_enc = ta.write_hub_repo(cache, "jasco-tiny/encodec_32khz", assets["encodec"])
    _offline(monkeypatch, cache)
    path = hf_hub_download("jasco-tiny/t5", "tokenizer.json")
    assert Path(path) == snap_t5 / "tokenizer.json"
    assert Path(snapshot_download("jasco-tiny/encodec_32khz")) == snap_enc
    tok = AutoTokenizer.from_pretrained("jasco-tiny/t5")
    assert tok("calm piano").input_ids == AutoTokenizer.from_pretrained(assets["t5"])("calm piano").input_ids
    t5 = T5EncoderModel.from_pretrained("jasco-tiny/t5")
    enc = EncodecModel.from_pretrained("jasco-tiny/encodec_32khz")
    assert t5.config.d_model == 32 and enc.config.codebook_size == 64
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises((LocalEntryNotFoundError, FileNotFoundError)):
        hf_hub_download("jasco-tiny/not-there", "config.json")


def test_hub_cache_env_in_fresh_process(assets, tmp_path):
    """The real mechanism: env vars set before huggingface_hub / transformers are imported."""
    cache = tmp_path / "hub"
    ta.write_hub_repo(cache, "jasco-tiny/t5", assets["t5"])
    ta.write_hub_repo(cache, "jasco-tiny/encodec_32khz", assets["encodec"])
    code = textwrap.dedent("""
        import json, huggingface_hub
        from huggingface_hub import hf_hub_download, snapshot_download
        from transformers import AutoTokenizer, EncodecModel, T5Tokenizer
        assert huggingface_hub.constants.HF_HUB_OFFLINE
        p = hf_hub_download("jasco-tiny/encodec_32khz", "config.json")
        s = snapshot_download("jasco-tiny/t5")
        ids = T5Tokenizer.from_pretrained("jasco-tiny/t5")(["calm piano", ""], padding=True).input_ids
        EncodecModel.from_pretrained("jasco-tiny/encodec_32khz")
        print(json.dumps({"p": p, "s": s, "ids": ids}))
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("HF_HOME", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["p"].startswith(str(cache)) and out["s"].startswith(str(cache))
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(assets["t5"])(["calm piano", ""], padding=True).input_ids
    assert out["ids"] == expected and out["ids"][1][0] == 1
