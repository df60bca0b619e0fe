"""Tiny, deterministic, offline stand-ins for the two external models JASCO loads by name.

JASCO's release checkpoints name two models that are fetched from the Hugging Face hub at load time:
a T5 encoder (``t5-base``, text conditioning) and ``facebook/encodec_32khz`` (drum codes and the final
decoder).  Tests and demos must run offline, so this module builds small random versions of both that
go through *exactly* the same loading code as the real ones:

- :func:`make_tiny_t5` — a ``T5EncoderModel`` (random, seeded) and a T5 tokenizer whose SentencePiece
  style Unigram vocabulary is *trained offline* on an embedded corpus of music descriptions, saved with
  ``save_pretrained`` (``AutoTokenizer`` / ``T5Tokenizer`` load it) and as a standalone
  ``tokenizer.json`` (``tokenizers.Tokenizer.from_file`` gives the same ids; the torch-free runtime
  uses that file).
- :func:`make_tiny_encodec` — a transformers ``EncodecModel`` with ``facebook/encodec_32khz``'s
  structure (32 kHz mono, hop 640 → 50 Hz, 128-d latents, 2 LSTM layers, weight norm, reflect pad)
  but few channels and a small codebook.  The codebooks are fitted (a few k-means steps) on encoder
  outputs of a seeded synthetic signal, so nearest-codebook encoding is meaningful.
- :func:`write_hub_repo` — writes a folder or files into a Hugging Face hub *cache* layout, so that
  with ``HF_HUB_CACHE=<cache> HF_HUB_OFFLINE=1`` ``hf_hub_download``, ``snapshot_download`` and
  ``transformers.*.from_pretrained(repo_id)`` resolve them.

Everything is deterministic: same arguments (and seed) → byte-identical weights and tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import string
import typing as tp
from pathlib import Path

import torch

from jasco_runtime.files import sha256_file

PathLike = tp.Union[str, "os.PathLike[str]"]

__all__ = [
    "CORPUS", "ENCODEC_32KHZ_CONFIG", "build_t5_tokenizer", "make_tiny_t5", "tiny_encodec_config",
    "make_tiny_encodec", "write_hub_repo", "hub_repo_folder",
]

# --------------------------------------------------------------------------------------------------
# T5
# --------------------------------------------------------------------------------------------------

CORPUS: tp.Tuple[str, ...] = (
    "upbeat funk groove with slap bass and brass",
    "calm piano ballad with soft strings",
    "energetic rock song with distorted electric guitars and loud drums",
    "lofi hip hop beat with vinyl crackle and mellow keys",
    "smooth jazz trio with upright bass, brushed drums and piano",
    "dark techno track with a pounding kick and acid synth lines",
    "cinematic orchestral score with epic brass and choir",
    "acoustic folk song with fingerpicked guitar and harmonica",
    "dreamy ambient pad with slow evolving textures",
    "fast drum and bass with rolling breakbeats and deep sub bass",
    "reggae rhythm with offbeat guitar skanks and a warm bassline",
    "latin salsa with congas, timbales and a bright horn section",
    "classic blues shuffle with a crying electric guitar solo",
    "chill house music with a four on the floor beat and filtered chords",
    "heavy metal riff with double kick drums and screaming vocals",
    "gentle lullaby played on a music box and celesta",
    "eighties synthpop with gated reverb snare and arpeggiated synths",
    "country ballad with pedal steel guitar and fiddle",
    "minimal piano piece in a minor key, sad and reflective",
    "happy ukulele tune with hand claps and whistling",
    "trap beat with booming 808 bass and crisp hi hats",
    "baroque harpsichord sonata with ornamented melodies",
    "psychedelic rock jam with swirling organ and wah guitar",
    "afrobeat groove with polyrhythmic percussion and saxophone",
    "bossa nova with nylon guitar and soft female vocals",
    "dubstep drop with wobble bass and heavy snare",
    "string quartet playing a slow romantic adagio",
    "funky disco track with four on the floor kick, strings and clavinet",
    "epic trailer music with taiko drums and rising tension",
    "soulful gospel choir with hammond organ and tambourine",
    "indie pop song with jangly guitars and catchy hooks",
    "meditative tibetan bowls and a quiet drone",
    "128 bpm progressive trance with uplifting leads",
    "90s boom bap hip hop with dusty samples and scratches",
    "flamenco guitar with rapid strumming and palm claps",
    "video game chiptune melody with square waves and noise drums",
    "big band swing with a walking bass and trumpet section",
    "melancholic cello solo with distant rain",
    "punk rock anthem with fast power chords and shouted chorus",
    "tropical house with marimba, plucked synths and a relaxed vibe",
    "jazz fusion with complex chords, electric piano and fretless bass",
    "irish jig with tin whistle, fiddle and bodhran",
    "ominous horror soundscape with dissonant strings",
    "rnb slow jam with smooth vocals and lush keys",
    "marching band with snare drums, tubas and cymbals",
    "cheerful morning acoustic track, light and breezy",
    "Upbeat Funk, 110 BPM: Slap Bass & Brass!",
    "A calm piano melody in C major (4/4 time).",
    "warm analog synthesizer bass with a slow filter sweep",
    "bright pop chorus with stacked harmonies and claps",
    "moody downtempo electronica with trip hop drums",
    "solo violin improvisation over a sustained drone",
    "groovy neo soul with rhodes piano and live drums",
    "driving krautrock rhythm with motorik drums and repetitive bass",
    "romantic waltz for piano and accordion in three four time",
    "aggressive industrial beat with metallic percussion and noise",
    "sunny surf rock with reverb drenched guitars",
    "delicate harp arpeggios with flute and light percussion",
    "uplifting anthem with a massive synth lead and euphoric build up",
    "sparse minimal techno with clicks, hats and a rumbling kick",
    "bluegrass breakdown with banjo, mandolin and dobro",
    "mysterious middle eastern melody with oud and darbuka",
    "relaxing spa music with gentle chimes and ocean waves",
    "garage rock with raw fuzzy guitars and a pounding tom groove",
    "kpop dance track with punchy synths and layered vocals",
    "slow cinematic piano with swelling strings and timpani rolls",
    "old school electro with robotic vocoder and drum machine",
    "cool west coast jazz with muted trumpet and soft saxophone",
    "stadium rock ballad with soaring guitar solo and big drums",
    "children's song with glockenspiel, xylophone and happy melody",
    "hypnotic dub with echoing snares and a heavy bassline",
    "sad acoustic guitar song with quiet humming and rain sounds",
    "jungle breaks at 170 bpm with chopped amen drums",
    "swinging ska with upstroke guitar, trombone and walking bass",
    "epic fantasy adventure theme with french horns and harp",
    "synthwave night drive with retro pads and a pulsing bassline",
    "tense thriller underscore with ticking clock and low strings",
    "joyful celtic reel with bagpipes and bouncing rhythm",
    "zen garden music with bamboo flute and koto",
    "quirky electro swing with vintage horns and a shuffling beat",
)
"""Training text of the tiny tokenizer (written for this project)."""

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5's SentencePiece model
_MIN_SCORE_PENALTY_DELTA = 1e-4  # tokenizers' UnigramTrainer spacing of never-seen required characters


def _metaspace_pre_tokenizer():
    from tokenizers import pre_tokenizers

    # Same pre-tokenization as transformers' T5Tokenizer rebuilds on load.
    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])


def _canonical_unigram_vocab(vocab: tp.Sequence[tp.Tuple[str, float]]) -> tp.List[tp.Tuple[str, float]]:
    """Make a trained Unigram vocab independent of hash-map iteration order.

    tokenizers' UnigramTrainer is deterministic except for the *required characters* it adds at the end
    (characters of the alphabet the EM pruned or never saw): they get scores ``min_score + k·1e-4`` in
    hash-set order, which changes from process to process.  Those characters (and any single character
    scored inside that band) are re-scored in sorted order; the whole vocab is then ordered by
    (score desc, piece) after the special tokens.  Scores are rounded to 6 decimals: the EM's float
    sums also vary in the last bits between runs.
    """
    specials = [(p, s) for p, s in vocab if p in T5_SPECIAL_TOKENS]
    assert [p for p, _ in specials] == list(T5_SPECIAL_TOKENS), specials
    pieces = [(p, round(float(s), 6)) for p, s in vocab if p not in T5_SPECIAL_TOKENS]
    min_score = min(s for _, s in pieces)
    n_single = sum(1 for p, _ in pieces if len(p) == 1)
    band = min_score + _MIN_SCORE_PENALTY_DELTA * (n_single + 1) + 1e-9
    low = sorted(p for p, s in pieces if len(p) == 1 and s < band)
    rescored = {p: round(min_score + _MIN_SCORE_PENALTY_DELTA * (len(low) - 1 - i), 6) for i, p in enumerate(low)}
    pieces = [(p, rescored.get(p, s)) for p, s in pieces]
    pieces.sort(key=lambda ps: (-ps[1], ps[0]))
    return [(p, 0.0) for p, _ in specials] + pieces


def build_t5_tokenizer(vocab_size: int = 600, extra_ids: int = 100, corpus: tp.Sequence[str] = CORPUS):
    """Train a T5-style tokenizer offline; return a ``transformers`` T5 tokenizer (tokenizers backend).

    A Unigram model (SentencePiece-like, Metaspace pre-tokenizer) is trained on ``corpus`` with the
    printable ASCII characters as required alphabet; ``vocab_size`` is an upper bound (the small corpus
    yields ~480 pieces).  T5 conventions: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, ``extra_ids``
    sentinels ``<extra_id_{extra_ids-1}>`` … ``<extra_id_0>`` at the end of the vocabulary, and a
    post-processor appending ``</s>`` (so ``""`` → ``[1]``).
    """
    from tokenizers import Tokenizer, models, trainers
    from transformers import T5Tokenizer

    alphabet = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = _metaspace_pre_tokenizer()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(T5_SPECIAL_TOKENS),
                                      unk_token="<unk>", show_progress=False, initial_alphabet=alphabet)
    tok.train_from_iterator(list(corpus), trainer)
    trained = json.loads(tok.to_str())["model"]["vocab"]
    vocab = _canonical_unigram_vocab([(p, s) for p, s in trained])
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids)


@torch.no_grad()
def make_tiny_t5(out_dir: PathLike, d_model: int = 32, num_layers: int = 2, num_heads: int = 2, d_ff: int = 64,
                 d_kv: int = 16, seed: int = 0, vocab_size: int = 600, extra_ids: int = 100,
                 perturb_norms: bool = True) -> Path:
    """Write a tiny T5 encoder + tokenizer into ``out_dir`` (``save_pretrained`` layout); return it.

    Files: ``config.json``, ``model.safetensors`` (``T5EncoderModel``), ``tokenizer.json``,
    ``tokenizer_config.json``.  The model is t5-base-like (ReLU feed-forward, relative attention
    buckets 32 / max distance 128, LayerNorm eps 1e-6); its ``vocab_size`` is the tokenizer size rounded
    up to a multiple of 64 (t5-base: 32100 tokens, vocab 32128).  ``perturb_norms`` gives the RMS-norm
    gains random values around 1 (transformers initialises them to exactly 1, which would hide a port
    that ignores them).
    """
    from transformers import T5Config, T5EncoderModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_t5_tokenizer(vocab_size=vocab_size, extra_ids=extra_ids)
    n_tokens = len(tokenizer)
    config = T5Config(
        vocab_size=int(math.ceil(n_tokens / 64) * 64), d_model=d_model, d_kv=d_kv, d_ff=d_ff,
        num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
        layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu", is_encoder_decoder=True,
        use_cache=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config).eval()
        if perturb_norms:
            gen = torch.Generator().manual_seed(seed + 1)
            for name, p in model.named_parameters():
                if name.endswith("layer_norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    assert (out / "tokenizer.json").is_file(), "transformers did not write tokenizer.json"
    return out


# --------------------------------------------------------------------------------------------------
# EnCodec
# --------------------------------------------------------------------------------------------------

ENCODEC_32KHZ_CONFIG: tp.Dict[str, tp.Any] = {
    "sampling_rate": 32000, "audio_channels": 1, "upsampling_ratios": [8, 5, 4, 4], "hidden_size": 128,
    "codebook_dim": 128, "num_lstm_layers": 2, "norm_type": "weight_norm", "use_causal_conv": False,
    "normalize": False, "pad_mode": "reflect", "compress": 2, "kernel_size": 7, "last_kernel_size": 7,
    "residual_kernel_size": 3, "dilation_growth_rate": 2, "num_residual_layers": 1, "trim_right_ratio": 1.0,
    "use_conv_shortcut": False, "chunk_length_s": None, "overlap": None, "num_filters": 64,
    "codebook_size": 2048, "target_bandwidths": [2.2],
}
"""``facebook/encodec_32khz``'s architecture (transformers ``EncodecConfig`` fields; 4 quantizers)."""

CALIBRATION_CHUNK = 8  # calibration items per encoder pass
LATENT_STD = 4.0102  # compression_model_latent_std of the JASCO releases: the tiny encoder is scaled to it


def _target_bandwidth(num_quantizers: int, codebook_size: int, frame_rate: int) -> float:
    """A bandwidth (kbps) giving exactly ``num_quantizers`` both in transformers (``num_quantizers``)
    and in audiocraft's HFEncodecCompressionModel (``bw·1000 / (frame_rate·log2(card))`` must be an
    integer there)."""
    nbits = math.log2(codebook_size)
    if nbits != int(nbits):
        raise ValueError(f"codebook_size must be a power of 2, got {codebook_size}")
    bw = num_quantizers * frame_rate * int(nbits) / 1000.0
    assert int(1000 * bw // (frame_rate * int(nbits))) == num_quantizers
    assert bw * 1000 / (frame_rate * nbits) == num_quantizers
    return bw


def tiny_encodec_config(num_filters: int = 8, codebook_size: int = 64, num_quantizers: int = 4,
                        **overrides: tp.Any):
    """An ``EncodecConfig`` with encodec_32khz's structure and small channels / codebook."""
    from transformers import EncodecConfig

    fields = dict(ENCODEC_32KHZ_CONFIG)
    fields.update(num_filters=num_filters, codebook_size=codebook_size)
    fields.update(overrides)
    hop = int(math.prod(fields["upsampling_ratios"]))
    frame_rate = int(math.ceil(fields["sampling_rate"] / hop))
    if "target_bandwidths" not in overrides:
        fields["target_bandwidths"] = [_target_bandwidth(num_quantizers, fields["codebook_size"], frame_rate)]
    config = EncodecConfig(**fields)
    config.architectures = ["EncodecModel"]
    return config


def _calibration_audio(gen: torch.Generator, n_items: int, seconds: float, sr: int) -> torch.Tensor:
    """Seeded synthetic music-like audio [n_items, 1, T]: tones + decaying noise bursts (+ one noise item)."""
    T = int(seconds * sr)
    t = torch.arange(T, dtype=torch.float64) / sr
    items = []
    for i in range(n_items):
        if i == n_items - 1:
            items.append(0.3 * torch.randn(T, generator=gen, dtype=torch.float64))  # plain white noise
            continue
        x = torch.zeros(T, dtype=torch.float64)
        for _ in range(3):  # tones
            f = 55.0 * 2 ** (5.5 * torch.rand((), generator=gen, dtype=torch.float64))
            a = 0.05 + 0.2 * torch.rand((), generator=gen, dtype=torch.float64)
            x += a * torch.sin(2 * math.pi * f * t + 6.28 * torch.rand((), generator=gen, dtype=torch.float64))
        step = int(sr * (0.125 + 0.25 * torch.rand((), generator=gen).item()))
        for onset in range(int(0.05 * sr * torch.rand((), generator=gen).item()), T, step):  # drum-like hits
            n = min(T - onset, int(0.2 * sr))
            decay = 0.01 + 0.05 * torch.rand((), generator=gen, dtype=torch.float64)
            env = torch.exp(-torch.arange(n, dtype=torch.float64) / sr / decay)
            x[onset:onset + n] += 0.5 * env * torch.randn(n, generator=gen, dtype=torch.float64)
        x += 0.01 * torch.randn(T, generator=gen, dtype=torch.float64)
        items.append(0.5 * x / x.abs().max())
    return torch.stack(items)[:, None].float()


def _kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int) -> torch.Tensor:
    """Plain Lloyd k-means on rows of ``x`` [N, D] (float64), initialised on random distinct rows."""
    centers = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    centers += 1e-3 * x.std() * torch.randn(centers.shape, generator=gen, dtype=x.dtype)  # break duplicates
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        nonempty = counts > 0
        centers[nonempty] = sums[nonempty] / counts[nonempty, None].to(x.dtype)
    return centers


def _scale_conv_(conv_module: torch.nn.Module, factor: float, bias: bool = True) -> None:
    """Scale a (weight-normed) EncodecConv1d's output by ``factor``."""
    conv = conv_module.conv
    parametrizations = getattr(conv, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        parametrizations.weight.original0.mul_(factor)  # g
    elif hasattr(conv, "weight_g"):
        conv.weight_g.mul_(factor)
    else:
        conv.weight.mul_(factor)
    if bias and conv.bias is not None:
        conv.bias.mul_(factor)


def _unit_scale_convs_(module: torch.nn.Module, run: tp.Callable[[], torch.Tensor], last_std: float) -> None:
    """Scale each conv of ``module`` (forward order) so its output std on ``run()``'s input is 1
    (``last_std`` for the last one)."""
    convs = [m for m in module.modules() if hasattr(m, "conv") and isinstance(
        m.conv, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    seen: tp.List[float] = []
    for i, conv in enumerate(convs):
        handle = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.std().item()))
        try:
            seen.clear()
            run()
        finally:
            handle.remove()
        target = last_std if i == len(convs) - 1 else 1.0
        _scale_conv_(conv, target / seen[0])


@torch.no_grad()
def make_tiny_encodec(out_dir: PathLike, seed: int = 0, num_filters: int = 8, codebook_size: int = 64,
                      num_quantizers: int = 4, latent_std: float = LATENT_STD, kmeans_iters: int = 10,
                      **config_overrides: tp.Any) -> Path:
    """Write a tiny random EnCodec (``EncodecModel.save_pretrained``) into ``out_dir``; return it.

    Structure of ``facebook/encodec_32khz`` (see :data:`ENCODEC_32KHZ_CONFIG`: 32 kHz mono, hop 640,
    50 Hz frames, 128-d latents, codebook_dim 128, 2 LSTM layers, weight norm, reflect padding, not
    causal) with ``num_filters`` channels and ``num_quantizers`` codebooks of ``codebook_size``.

    Weights are transformers' random init under ``torch.manual_seed(seed)``, then calibrated on seeded
    synthetic audio: each conv (weight-norm gain and bias) is scaled so its output has unit std, the
    encoder's last so latents have std ≈ ``latent_std`` (like the real model: JASCO's latent std is
    4.01) and the decoder's last to a 0.1 output std, so the decoder output depends on its input
    rather than on biases; each quantizer layer's codebook is fitted by k-means on the (residual)
    latents, with ``inited`` = 1, ``cluster_size`` = the cluster counts (≥ 1) and
    ``embed_avg = embed · cluster_size`` (so an EMA step would keep ``embed``).
    """
    from transformers import EncodecModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_encodec_config(num_filters=num_filters, codebook_size=codebook_size,
                                 num_quantizers=num_quantizers, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncodecModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 12345)
    frames_per_item = int(2.0 * config.frame_rate)
    n_items = max(8, math.ceil(8 * codebook_size / frames_per_item))
    audio = _calibration_audio(gen, n_items=n_items, seconds=2.0, sr=config.sampling_rate)

    # Data-dependent scaling (LSUV-like): every conv's output gets unit std on the calibration audio,
    # the encoder's last one latent_std, the decoder's last one 0.1.  transformers' random init alone
    # gives tiny latents and a decoder whose output is almost all bias (insensitive to its input).
    probe = audio[::max(1, n_items // 2), :, : config.sampling_rate]
    _unit_scale_convs_(model.encoder, lambda: model.encoder(probe), last_std=latent_std)
    probe_latents = model.encoder(probe)
    _unit_scale_convs_(model.decoder, lambda: model.decoder(probe_latents), last_std=0.1)
    # in chunks of items: one pass over all of them holds several activations of [items, filters, samples]
    # (≈ 10 GB at encodec_32khz's 64 filters and 2048 codes); the tiny preset's 8 items are one chunk
    latents = torch.cat([model.encoder(chunk) for chunk in audio.split(CALIBRATION_CHUNK)])

    residual = latents.permute(0, 2, 1).reshape(-1, config.codebook_dim).double()
    for layer in model.quantizer.layers[: config.num_quantizers]:
        cb = layer.codebook
        centers = _kmeans(residual, codebook_size, gen, kmeans_iters)
        assign = torch.cdist(residual, centers).argmin(dim=1)
        counts = torch.bincount(assign, minlength=codebook_size).clamp_min(1).to(cb.cluster_size.dtype)
        cb.embed.copy_(centers.to(cb.embed.dtype))
        cb.cluster_size.copy_(counts)
        cb.embed_avg.copy_(cb.embed * counts[:, None])
        cb.inited.fill_(1.0)
        residual = residual - cb.embed.double()[assign]
    model.save_pretrained(out, safe_serialization=True)
    return out


# --------------------------------------------------------------------------------------------------
# Hugging Face hub cache
# --------------------------------------------------------------------------------------------------

def hub_repo_folder(cache_dir: PathLike, repo_id: str, repo_type: str = "model") -> Path:
    """``<cache_dir>/models--{org}--{name}`` as huggingface_hub names it."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


def _collect_files(files: tp.Union[PathLike, tp.Mapping[str, PathLike]]) -> tp.Dict[str, Path]:
    if isinstance(files, tp.Mapping):
        out = {str(k).replace(os.sep, "/"): Path(v) for k, v in files.items()}
    else:
        src = Path(files)
        if not src.is_dir():
            raise NotADirectoryError(f"{src} is not a directory (pass a dict of files instead)")
        out = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
    for name, p in out.items():
        if not p.is_file():
            raise FileNotFoundError(f"{p} (for {name!r})")
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad repo file name {name!r}")
    if not out:
        raise ValueError("no files to write")
    return out


def write_hub_repo(cache_dir: PathLike, repo_id: str, files: tp.Union[PathLike, tp.Mapping[str, PathLike]],
                   commit_hash: tp.Optional[str] = None, revision: tp.Optional[str] = None,
                   repo_type: str = "model") -> Path:
    """Write ``files`` as a snapshot of ``repo_id`` into the hub cache ``cache_dir``; return the snapshot.

    ``files`` is a directory (every file below it, relative names kept) or a mapping
    ``{name in repo: local path}``.  Layout (huggingface_hub's): ``<repo folder>/blobs/<sha256>``,
    ``snapshots/<commit>/<name>`` (relative symlink to the blob, or a copy where symlinks are not
    supported) and ``refs/<revision>`` (default ``main``) holding the commit.  ``commit_hash`` defaults
    to a 40-hex digest of the file names and contents, so the same files give the same snapshot.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import are_symlinks_supported

    revision = revision or constants.DEFAULT_REVISION
    items = _collect_files(files)
    digests = {name: sha256_file(path) for name, path in items.items()}
    if commit_hash is None:
        h = hashlib.sha1()
        for name in sorted(digests):
            h.update(f"{name}\0{digests[name]}\n".encode())
        commit_hash = h.hexdigest()
    if len(commit_hash) != 40 or any(c not in string.hexdigits for c in commit_hash):
        raise ValueError(f"commit_hash must be 40 hex digits, got {commit_hash!r}")

    repo_dir = hub_repo_folder(cache_dir, repo_id, repo_type)
    blobs, snapshot, refs = repo_dir / "blobs", repo_dir / "snapshots" / commit_hash, repo_dir / "refs"
    for d in (blobs, snapshot, refs):
        d.mkdir(parents=True, exist_ok=True)
    use_links = are_symlinks_supported(str(Path(cache_dir)))
    for name, path in items.items():
        blob = blobs / digests[name]
        if not blob.exists():
            tmp = blob.with_name(blob.name + ".incomplete")
            shutil.copyfile(path, tmp)
            os.replace(tmp, blob)
        dst = snapshot / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if use_links:
            os.symlink(os.path.relpath(blob, dst.parent), dst)
        else:
            shutil.copyfile(blob, dst)
    ref = refs / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit_hash)
    return snapshot
