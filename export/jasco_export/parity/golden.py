"""The golden set, computed by the PyTorch reference: per-graph inputs/outputs and one end-to-end generation.

Written into the export folder (``golden/``, see :mod:`jasco_runtime.golden`) so that ``verify`` can check any
artifact later without torch; the parity gate is "write the golden set, then verify every artifact on it".
The end-to-end case feeds a 44.1 kHz stereo drum stem, so the runtime's resampler (julius ``resample_frac``,
BEHAVIOUR.md §5) is on the gated path.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import torch

from jasco_runtime import stage_layout
from jasco_runtime.golden import CASES, EndToEndCase, GraphCase, save_e2e_case, save_graph_case
from jasco_runtime.export_folder import GoldenRecord

from ..graphs.spec import TEMPORAL_NAMES, GraphSpec
from ..reference.guidance import cfg_terms

PROMPTS = ["upbeat funk groove with slap bass and brass", "calm piano"]
CHORDS = [("C", 0.0), ("F", 2.5), ("G", 5.0), ("C", 7.5)]
CFG = (1.25, 2.5)  # the demo app's settings (BEHAVIOUR.md §1)
STEPS = 10
DRUMS_RATE, DRUMS_CHANNELS, DRUMS_SECONDS = 44100, 2, 6.0  # a typical drum stem: not the model rate, shorter than 10 s


def synthetic_drums(seconds: float, sr: int, bpm: float = 120.0, seed: int = 0,
                    channels: tp.Optional[int] = None) -> np.ndarray:
    """A drum-like test signal: decaying 55 Hz kick on beats, noise snare on off-beats.  [samples], or
    [channels, samples] with ``channels`` (they differ by a small delay, so a wrong channel mix shows)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros(n, np.float64)
    beat = 60.0 / bpm
    for k, start in enumerate(np.arange(0, seconds, beat / 2)):
        i = int(start * sr)
        seg = t[: n - i]
        if k % 2 == 0:
            out[i:] += 0.8 * np.sin(2 * np.pi * 55 * seg) * np.exp(-seg * 18)
        else:
            out[i:] += 0.4 * rng.standard_normal(n - i) * np.exp(-seg * 35)
    out = out / np.max(np.abs(out)) * 0.9
    if channels is None:
        return out.astype(np.float32)
    return np.stack([np.roll(out, 37 * c) * (1.0 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def synthetic_mixture(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A song-like stereo mixture [2, samples]: :func:`synthetic_drums` + a bass line (55–96 Hz, a note every
    0.5 s) + a two-tone pad, so that separation has something to remove."""
    t = np.arange(int(seconds * sr)) / sr
    bass = 0.3 * np.sin(2 * np.pi * 55 * (1 + (t // 0.5) % 3 / 4) * t)
    pad = 0.1 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 277.2 * t + 1.0))
    return (synthetic_drums(seconds, sr, seed=seed, channels=2) + np.stack([bass + pad, 0.8 * bass + pad])).astype(np.float32)


def _separator_inputs(jasco: tp.Any) -> tp.Dict[str, torch.Tensor]:
    """One htdemucs segment of the mixture and its spectrogram, by demucs' own _spec / _magnitude."""
    from ..reference.separation import single_model

    model = single_model(jasco.separator)
    length = int(model.segment * model.samplerate)
    mix = torch.from_numpy(synthetic_mixture(length / model.samplerate + 0.01, int(model.samplerate))[None, :, :length])
    with torch.no_grad():
        return {"mix": mix, "spec": model._magnitude(model._spec(mix))}


def _melody(jasco: tp.Any) -> tp.Optional[torch.Tensor]:
    conds = jasco.model.condition_provider.conditioners
    if "melody" not in conds:
        return None
    g = torch.Generator().manual_seed(1)
    return (torch.rand(conds["melody"].card, jasco.n_frames, generator=g) > 0.9).float()


def _solver_step_inputs(jasco: tp.Any, prompts: int, g: torch.Generator) -> tp.Dict[str, torch.Tensor]:
    """Dormand-Prince's fourth stage input of a continued window with the golden CFG terms (three derivatives in
    slots k0–k2 and this call's field in slot 3, the others zero as the device loop binds them), with the error norm
    against two states: velocities of field size, states of noise scale, a step of 1/8."""
    terms = cfg_terms(*CFG)
    shape = (prompts, jasco.n_frames, jasco.model.flow_dim)
    dt = 1 / 8
    keep = torch.zeros(prompts, shape[1], 1)
    keep[:, :shape[1] // 5] = 1  # a window continued over its first fifth
    beta = (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729)
    c = stage_layout.coefficients([np.float32(b) * np.float32(dt) for b in beta], v_slot=3,
                                  seen_at=0.375 + 8 / 9 * dt, atol=1e-5, rtol=1e-5)
    slots = {n: torch.randn(*shape, generator=g) if j < 3 else torch.zeros(*shape)
             for j, n in enumerate(stage_layout.SLOT_NAMES)}
    return {"v_rows": torch.randn(prompts, len(terms), *shape[1:], generator=g),
            "weights": torch.tensor([[t.weight if len(terms) > 1 else 1.0 for t in terms]] * prompts, dtype=torch.float32),
            "base": torch.randn(*shape, generator=g), **slots, "c": torch.from_numpy(c), "keep": keep,
            **{n: torch.randn(*shape, generator=g) for n in ("velocity", "noise", "known", "a", "b")}}


def graph_inputs(jasco: tp.Any, graphs: tp.Mapping[str, GraphSpec]) -> tp.Dict[str, tp.Dict[str, tp.Dict[str, torch.Tensor]]]:
    """graph → case → inputs.  ``realistic``: what a generation feeds the graph (tokenized prompts, a drum stem,
    reference conditions); ``random``: random inputs at mid-profile sizes."""
    conds = jasco.model.condition_provider.conditioners
    S = int(jasco.duration * jasco.sample_rate)
    drums = torch.from_numpy(synthetic_drums(jasco.duration, jasco.sample_rate, channels=1))
    frames = jasco.frame_chords(CHORDS) if jasco.chords_mapping else None
    tok = jasco.condition_inputs(PROMPTS, cfg_terms(*CFG), frames, drums if "self_wav" in conds else None, _melody(jasco))
    c = jasco.condition_tensors(tok)
    g = torch.Generator().manual_seed(2)
    n = c["description"][0].shape[0]
    flow = {"z": torch.randn(n, jasco.n_frames, jasco.model.flow_dim, generator=g), "t": torch.full((n,), 0.3),
            "text": c["description"][0]}
    flow.update({TEMPORAL_NAMES[k]: c[k][0] for k in TEMPORAL_NAMES if k in c})
    realistic = {"text_encoder": {"input_ids": tok["description"]["input_ids"],
                                  "attention_mask": tok["description"]["attention_mask"]},
                 "drums_encoder": {"wav": drums.reshape(1, 1, S)}, "flow_step": flow,
                 "encodec_decoder": {"latents": torch.randn(1, jasco.n_frames, jasco.cfg.latent_dim, generator=g) * 0.8},
                 "encodec_encoder": {"wav": drums.reshape(1, 1, S)}}
    if "solver_step" in graphs:
        realistic["solver_step"] = _solver_step_inputs(jasco, len(PROMPTS), g)
    if "drums_separator" in graphs:
        realistic["drums_separator"] = _separator_inputs(jasco)
    gen = torch.Generator().manual_seed(1234)
    out = {}
    for name, spec in graphs.items():
        sizes = {k: min(max(2, r.opt), r.max) for k, r in spec.axes.items()}
        out[name] = {"random": spec.sample(sizes, gen), "realistic": realistic[name]}
    return out


def write_golden_set(jasco: tp.Any, graphs: tp.Mapping[str, GraphSpec], golden_dir: Path, end_to_end: bool = True,
                     log: tp.Callable[[str], None] = print) -> GoldenRecord:
    """Run the PyTorch reference on the golden inputs, save them under ``golden_dir``; returns the manifest record."""
    golden_dir.mkdir(parents=True, exist_ok=True)
    record: tp.Dict[str, tp.Any] = {"graphs": {}, "cases": list(CASES)}
    for name, cases in graph_inputs(jasco, graphs).items():
        spec = graphs[name]
        saved = {}
        for case, inputs in cases.items():
            log(f"golden {name} {case}: PyTorch reference")
            with torch.no_grad():
                refs = spec.module(*[inputs[s.name] for s in spec.inputs])
            refs = refs if isinstance(refs, tuple) else (refs,)
            saved[case] = GraphCase({s.name: inputs[s.name].numpy() for s in spec.inputs},
                                    {o.name: r.numpy() for o, r in zip(spec.outputs, refs)})
        save_graph_case(golden_dir / f"{name}.npz", saved)
        record["graphs"][name] = f"{name}.npz"
    if end_to_end:
        record["e2e"] = _end_to_end(jasco, golden_dir, log)
    record["bytes"] = sum(p.stat().st_size for p in golden_dir.glob("*.npz"))
    return GoldenRecord.from_dict(record)


def _end_to_end(jasco: tp.Any, golden_dir: Path, log: tp.Callable[[str], None]) -> tp.Dict[str, tp.Any]:
    conds = jasco.model.condition_provider.conditioners
    chords = CHORDS if jasco.chords_mapping else None
    separate = "self_wav" in conds and jasco.separator is not None  # then the drums input is a whole mixture
    drums = None if "self_wav" not in conds else (synthetic_mixture if separate else synthetic_drums)(
        DRUMS_SECONDS, DRUMS_RATE, **({} if separate else {"channels": DRUMS_CHANNELS}))
    melody = _melody(jasco)
    noise = np.random.default_rng(7).standard_normal((len(PROMPTS), jasco.n_frames, jasco.model.flow_dim)).astype(np.float32)
    jasco.set_generation_params(cfg_coef_all=CFG[0], cfg_coef_txt=CFG[1], euler=True, euler_steps=STEPS)
    log(f"golden end-to-end: PyTorch reference, Euler {STEPS}, drums {DRUMS_RATE} Hz × {DRUMS_CHANNELS}")
    out = jasco.generate_music(PROMPTS, drums_wav=torch.from_numpy(drums) if drums is not None else None,
                               drums_sample_rate=DRUMS_RATE, chords=chords, melody_salience_matrix=melody,
                               init_noise=torch.from_numpy(noise), return_output=True, separate_drums=separate)
    case = EndToEndCase(PROMPTS, {}, noise, drums, melody.numpy() if melody is not None else None,
                        out.latents.numpy(), out.audio.numpy())
    save_e2e_case(golden_dir / "e2e.npz", case)
    return {"file": "e2e.npz", "prompts": PROMPTS,
            "settings": {"chords": [list(c) for c in chords] if chords else None, "cfg_coef_all": CFG[0],
                         "cfg_coef_txt": CFG[1], "solver": "euler", "steps": STEPS,
                         "drums_sample_rate": DRUMS_RATE if drums is not None else None,
                         "drums_separated": separate}}
