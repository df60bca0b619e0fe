"""The inputs every variant is measured on: prompts, chords, a drum stem, the CFG batch, noise.

Conditions are computed once with the PyTorch reference (text through T5, drums through EnCodec),
so every backend's flow step sees the same tensors, and the latent-quality solve differs only in the
flow step. Graph inputs carry the names the graph declarations give them
(:mod:`jasco_export.graphs.spec`: ``GraphSpec.input_names`` and ``TEMPORAL_NAMES``).
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field

import numpy as np

PROMPTS = ["upbeat funk groove with slap bass and brass", "calm piano ballad with soft strings",
           "80s synth-pop with punchy drums", "lo-fi hip hop with dusty vinyl crackle"]
CHORDS = [("C", 0.0), ("F", 2.5), ("G", 5.0), ("C", 7.5)]
CFG = {"demo": (1.25, 2.5), "all-only": (1.0, 0.0)}
"""--cfg → (cfg_coef_all, cfg_coef_txt). demo: the demo app's values (3 terms: All, Text, Null);
all-only: All 1 / Text 0, which audiocraft's term-removal loop leaves as [All 1, Null 0] (2 terms)."""


@dataclass
class BatchInputs:
    batch: int
    descriptions: tp.List[str]
    noise: np.ndarray  # [B, T, D]
    text: tp.Dict[str, np.ndarray]  # input_ids / attention_mask [rows, L]
    flow: tp.Dict[str, np.ndarray]  # z, t, text, chords, drums (, melody) with rows = B × terms
    decoder: tp.Dict[str, np.ndarray]  # latents [B, T, D]

    @property
    def rows(self) -> int:
        return int(self.flow["z"].shape[0])

    @property
    def text_len(self) -> int:
        return int(self.flow["text"].shape[1])


@dataclass
class Workload:
    cfg_name: str
    cfg: tp.Tuple[float, float]
    terms: tp.List[tp.Any]
    solver: str
    steps: int
    sample_rate: int
    duration: float
    n_frames: int
    chords: tp.List[tp.Tuple[str, float]]
    drums_wav: np.ndarray  # [S] float32 at the model rate
    batches: tp.Dict[int, BatchInputs] = field(default_factory=dict)

    def component_inputs(self, components: tp.Sequence[str]) -> tp.Iterator[tp.Tuple[str, tp.Dict[str, np.ndarray]]]:
        """(measurement key, graph inputs) for every component × batch; drums encoding is per generation."""
        if "drums_encoder" in components:
            yield "drums_encoder", {"wav": self.drums_wav[None, None]}
        for b, bi in self.batches.items():
            if "text_encoder" in components:
                yield f"text_encoder/b{b}", bi.text
            if "flow_step" in components:
                yield f"flow_step/b{b}", bi.flow
            if "decoder" in components:
                yield f"decoder/b{b}", bi.decoder

    def flow_inputs(self, b: int, t: float, z: np.ndarray) -> tp.Dict[str, np.ndarray]:
        """Flow-step inputs of batch ``b`` at state ``z`` [B, T, D] (replicated per CFG term, term-major)."""
        bi = self.batches[b]
        n = len(self.terms)
        zz = np.concatenate([z] * n, axis=0) if n > 1 else z
        return {**bi.flow, "z": zz.astype(np.float32), "t": np.full((zz.shape[0],), t, dtype=np.float32)}

    def nfe(self) -> tp.Optional[int]:
        """Evaluations per generation for fixed-step solvers (None for adaptive dopri5)."""
        from jasco_runtime.solvers import SOLVERS

        if self.solver == "dopri5":
            return None
        return int(SOLVERS[self.solver](lambda t, z: np.zeros_like(z), np.zeros((1, 1, 1), np.float32), self.steps).nfe)


def build_workload(jasco: tp.Any, batches: tp.Sequence[int], cfg_name: str, solver: str, steps: int,
                   seed: int = 0) -> Workload:
    import torch

    from jasco_export.graphs.spec import TEMPORAL_NAMES, declare_graphs
    from jasco_export.parity.golden import synthetic_drums
    from jasco_runtime.guidance import cfg_terms

    flow_names = declare_graphs(jasco)["flow_step"].input_names
    conditioner_of = {graph_input: cond for cond, graph_input in TEMPORAL_NAMES.items()}

    cfg = CFG[cfg_name]
    terms = cfg_terms(*cfg)
    conds = jasco.model.condition_provider.conditioners
    T, D = jasco.n_frames, jasco.model.flow_dim
    drums = synthetic_drums(jasco.duration, jasco.sample_rate, seed=seed)
    chords = CHORDS if jasco.chords_mapping else []
    frames = jasco.frame_chords(chords) if chords else None
    wl = Workload(cfg_name, cfg, terms, solver, steps, jasco.sample_rate, jasco.duration, T, chords, drums)
    rng = np.random.default_rng(seed)
    for b in batches:
        desc = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
        melody = None
        if "melody" in conds:
            g = torch.Generator().manual_seed(seed)
            melody = (torch.rand(conds["melody"].card, T, generator=g) > 0.9).float()
        tok = jasco.condition_inputs(desc, terms, frames, torch.from_numpy(drums)[None, None] if "self_wav" in conds else None,
                                     melody)
        c = jasco.condition_tensors(tok)
        rows = len(terms) * b
        flow = {"z": rng.standard_normal((rows, T, D)).astype(np.float32), "t": np.full((rows,), 0.5, np.float32),
                "text": c["description"][0].float().numpy()}
        for name in (n for n in flow_names if n in conditioner_of):  # temporal conditions, as declared
            flow[name] = c[conditioner_of[name]][0].float().numpy()
        wl.batches[b] = BatchInputs(
            batch=b, descriptions=desc, noise=rng.standard_normal((b, T, D)).astype(np.float32),
            text={k: v.numpy() for k, v in tok["description"].items()}, flow=flow,
            decoder={"latents": (0.8 * rng.standard_normal((b, T, jasco.cfg.latent_dim))).astype(np.float32)})
    return wl
