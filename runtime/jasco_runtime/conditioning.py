"""Conditioning in two phases, audiocraft's ``ConditioningProvider.tokenize`` then ``forward``
(audiocraft/modules/conditioners.py; JASCO's temporal conditions: models/jasco.py ``_prepare_temporal_conditions``).

* :meth:`ConditionProvider.prepare` (CPU only, no engine): the window plan, token ids, chords framed per window,
  the drum stem read (only what the song needs), resampled to the model rate and fitted, the melody salience.  It is
  the one validator of a request's inputs; its :class:`PreparedRequest` is what travels (a server's ingress
  prepares once, the generator never re-validates).
* :meth:`ConditionProvider.encode` (the engines): text encoder, drums encoder and the table lookups for one
  window's CFG batch, rows term-major (row ``i·B + b`` = term ``i``, prompt ``b``; audiocraft
  models/flow_matching.py ``_multi_source_cfg_preprocess``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import typing as tp
from dataclasses import dataclass

import numpy as np

from . import audio_io, chords as chords_mod, separation, windows as longform
from .errors import InputError
from .export_folder import ExportFolder
from .guidance import CFGTerm, cfg_terms
from .request import ResolvedRequest
from .tables import load_tables
from .text import TextTokenizer

logger = logging.getLogger(__name__)
Prompts = tp.Tuple[tp.Optional[str], ...]


@dataclass(frozen=True, eq=False)
class WindowInputs:
    """The CPU inputs of one generation window, before any engine runs."""

    prompts: Prompts
    tokens: tp.Tuple[np.ndarray, ...]  # per prompt: T5 ids with </s> ("" / None: the tokenization of "")
    chords: tp.Optional[np.ndarray]  # [T] chord index per frame
    drums: tp.Optional[np.ndarray]  # [T · samples_per_frame] mono at the model rate
    melody: tp.Optional[np.ndarray]  # [bins, ≤ T] salience


@dataclass(frozen=True, eq=False)
class PreparedRequest:
    """A request ready to run: its settings, window plan, CFG terms and every window's inputs.

    ``request`` keeps the settings only (its raw drums/melody are dropped once prepared).  Pickled (a server's
    ingress ships it to a generator replica), the windows' drum slices travel once, as the song's stem."""

    request: ResolvedRequest
    plan: longform.WindowPlan
    terms: tp.Tuple[CFGTerm, ...]
    windows: tp.Tuple[WindowInputs, ...]
    text_tokens: int  # padded T5 length of the request's rows (requests of other lengths cannot share a solve)
    song_drums: tp.Optional[np.ndarray] = None  # the fitted stem the windows' drums are views of

    def __getstate__(self) -> tp.Dict[str, tp.Any]:
        state = dict(self.__dict__)
        if self.song_drums is not None:
            state["windows"] = tuple(dataclasses.replace(w, drums=None) for w in self.windows)
        return state

    def with_song_drums(self, drums: np.ndarray) -> "PreparedRequest":
        """The same request with another song stem (the separated one), re-sliced per window."""
        windows = tuple(dataclasses.replace(w, drums=longform.window_drums(drums, self.plan, win))
                        for w, win in zip(self.windows, self.plan.windows))
        return dataclasses.replace(self, windows=windows, song_drums=drums)

    def __setstate__(self, state: tp.Dict[str, tp.Any]) -> None:
        song = state.get("song_drums")
        if song is not None:
            plan = state["plan"]
            state["windows"] = tuple(dataclasses.replace(w, drums=longform.window_drums(song, plan, win))
                                     for w, win in zip(state["windows"], plan.windows))
        self.__dict__.update(state)

    @property
    def batch_size(self) -> int:
        return len(self.request.prompts)

    @property
    def single_window(self) -> bool:
        return self.plan.n_windows == 1


@dataclass(frozen=True, eq=False)
class Conditions:
    """Condition tensors of one window's CFG batch (term-major rows)."""

    text: np.ndarray  # [N, L, dim]
    temporal: tp.Dict[str, np.ndarray]  # graph input name → [N, T, C]

    @property
    def rows(self) -> int:
        return int(self.text.shape[0])

    def feeds(self) -> tp.Dict[str, np.ndarray]:
        return {"text": self.text, **self.temporal}


class ConditionProvider:
    """Everything a request needs before the flow step, for one export folder."""

    def __init__(self, folder: ExportFolder, tokenizer: tp.Optional[TextTokenizer] = None,
                 tables: tp.Optional[tp.Mapping[str, np.ndarray]] = None,
                 chords_mapping: tp.Optional[tp.Mapping[str, int]] = None, uploads: bool = False):
        self.folder = folder
        self.from_uploads = uploads  # inputs arrive as uploads (a server's ingress): messages say "the ... upload"
        self.tokenizer = tokenizer or TextTokenizer(folder.file("tokenizer"))
        self._tables = dict(tables) if tables is not None else None
        if chords_mapping is None:
            chords_mapping = chords_mod.load_chord_mapping(folder.file("chords_mapping")) if folder.has_chords else {}
        self.chords_mapping = chords_mapping
        self.max_text_tokens = folder.graphs["text_encoder"].max_size("text_len")

    @property
    def tables(self) -> tp.Dict[str, np.ndarray]:
        """The condition tables (loaded on first use: preparing a request does not need them)."""
        if self._tables is None:
            self._tables = load_tables(self.folder.file("tables"))
        return self._tables

    # -- phase 1: prepare (CPU) ------------------------------------------------------------------------------
    def plan(self, req: ResolvedRequest) -> longform.WindowPlan:
        f = self.folder
        return longform.plan_for_folder(f, f.duration if req.duration is None else req.duration, req.overlap)

    def prepare(self, req: ResolvedRequest,
                window_prompts: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None) -> PreparedRequest:
        """Every input of ``req`` checked and made ready for :meth:`encode` (one-line :class:`InputError`s).
        ``window_prompts``: optionally one list of prompts per window of a long song."""
        f = self.folder
        plan = self.plan(req)
        prompts = [tuple(p) for p in longform.window_descriptions_for(plan, req.prompts, window_prompts)]
        progression = self._progression(req.chords)
        song_samples = max(plan.n_frames, plan.window_frames) * plan.samples_per_frame
        drums = self._drums(req.drums, req.drums_sample_rate, song_samples, plan)
        self._check_drums_stem(req.drums_stem, drums is not None)
        melody = self._melody(req.melody)
        B, D = len(req.prompts), f.latent_dim
        if req.init_noise is not None:
            want = (B, plan.n_frames if plan.n_windows > 1 else f.n_frames, D)
            if req.init_noise.shape != want:
                song = f"of a {plan.duration:g}-s song " if plan.n_windows > 1 else ""
                raise InputError(f"init noise {song}must be [{want[0]}, {want[1]}, {want[2]}] for {B} prompt(s), "
                                 f"got {list(req.init_noise.shape)}")
        cache: tp.Dict[tp.Optional[str], np.ndarray] = {}
        windows = []
        for w, window_prompts_k in zip(plan.windows, prompts):
            tokens = self._tokens(window_prompts_k, cache)
            if plan.n_windows == 1:  # exactly the single-clip inputs (no slicing)
                frames = None if progression is None else chords_mod.frame_chords(
                    progression, self.chords_mapping, f.frame_rate, f.duration)
                mel = melody
            else:
                frames = None if progression is None else longform.window_chords(
                    progression, self.chords_mapping, f.frame_rate, f.duration, w)
                mel = None if melody is None else longform.window_melody(melody, w)
            wd = None if drums is None else longform.window_drums(drums, plan, w)
            windows.append(WindowInputs(window_prompts_k, tokens, frames, wd, mel))
        terms = tuple(cfg_terms(req.cfg_coef_all, req.cfg_coef_txt))
        longest = max(len(t) for w in windows for t in w.tokens)
        settings = dataclasses.replace(req, drums=None, drums_sample_rate=None, melody=None, chords=None)
        return PreparedRequest(settings, plan, terms, tuple(windows), longest if len(windows) == 1 else -1,
                               song_drums=drums)

    def _tokens(self, prompts: Prompts, cache: tp.Dict[tp.Optional[str], np.ndarray]) -> tp.Tuple[np.ndarray, ...]:
        new = [p for p in dict.fromkeys(prompts) if p not in cache]
        for p, ids in zip(new, self.tokenizer.encode_each([p or "" for p in new])):
            if self.max_text_tokens is not None and len(ids) > self.max_text_tokens:
                raise InputError(f"a prompt is {len(ids)} T5 tokens long, the exported engines take at most "
                                 f"{self.max_text_tokens}; shorten it (an export for longer prompts takes "
                                 f"`jasco-export --max-text-tokens {len(ids)}`)")
            cache[p] = ids
        return tuple(cache[p] for p in prompts)

    def _progression(self, chords: tp.Any) -> tp.Optional[chords_mod.Progression]:
        if chords is None or (not isinstance(chords, (str, os.PathLike)) and len(chords) == 0):
            return None
        if not self.folder.has_chords:
            raise InputError("this model has no chords conditioner; drop the chords")
        progression = chords_mod.parse_chords(chords) if isinstance(chords, (str, os.PathLike)) \
            else chords_mod.progression(chords)
        # framed once here so that a bad label fails now, not in the middle of a song
        f = self.folder
        chords_mod.frame_chords(progression, self.chords_mapping, f.frame_rate, f.duration)
        return progression

    def _drums(self, drums: tp.Any, sample_rate: tp.Optional[int], song_samples: int,
               plan: longform.WindowPlan) -> tp.Optional[np.ndarray]:
        """The drum stem, mono at the model rate, trimmed / zero-padded to ``song_samples``; a file is read only as
        far as the song needs (plus the resampler's margin), never whole."""
        if drums is None:
            return None
        if not self.folder.has_drums:
            raise InputError(f"this model has no drums conditioner; drop the drums{' upload' if self.from_uploads else ''}")
        model_rate = self.folder.sample_rate
        seconds = song_samples / model_rate
        decoded = isinstance(drums, (str, os.PathLike))
        if decoded:
            drums, sample_rate = audio_io.load_audio(drums, max_seconds=seconds + audio_io.RESAMPLE_MARGIN_S)
        if sample_rate is None:
            raise InputError("drums given as an array need drums_sample_rate")
        wav = np.asarray(drums, dtype=np.float32)
        if plan.n_windows > 1 and wav.shape[-1] < plan.duration * int(sample_rate):
            logger.warning("the drum stem (%.2f s) is shorter than the song (%.2f s); the rest is silent drums "
                           "(zero-padded, as for a 10-s clip); loop the stem yourself to repeat it",
                           wav.shape[-1] / int(sample_rate), plan.duration)
        mono = audio_io.prepare_drums(wav, int(sample_rate), model_rate, seconds,
                                      channels_first=decoded or self.from_uploads)
        return longform.fit_length(mono, song_samples)

    def _check_drums_stem(self, stem: tp.Optional[bool], has_drums: bool) -> None:
        """``drums_stem``: True takes the drums as a separated stem, False requires the export's separator."""
        if stem is None:
            return
        if not has_drums:
            raise InputError("drums_stem says how to treat the drums; give drums or drop drums_stem")
        if stem is False and separation.folder_separator(self.folder) is None:
            raise InputError(f"{self.folder.folder} has no drum separator; re-export with `jasco-export --separator "
                             "htdemucs`, or pass the drums as an already separated stem")

    def _melody(self, melody: tp.Any) -> tp.Optional[np.ndarray]:
        if melody is None:
            return None
        if not self.folder.has_melody:
            raise InputError("this model has no melody conditioner (melody is only for chords-drums-melody models); "
                             f"drop the melody{' upload' if self.from_uploads else ''}")
        bins = int(self.folder.conditioners["melody"]["bins"])
        if isinstance(melody, (str, os.PathLike)):
            return audio_io.load_melody(melody, bins)
        return audio_io.as_salience(melody, bins, source="the melody upload" if self.from_uploads else "melody")

    # -- phase 2: encode (engines) -----------------------------------------------------------------------------
    def encode(self, window: WindowInputs, terms: tp.Sequence[CFGTerm], engines: tp.Any,
               timings: tp.Optional[tp.Dict[str, float]] = None) -> Conditions:
        """The CFG batch of one window: rows term-major (row i·B + b = term i, prompt b), as the torch reference."""
        from .timing import Stopwatch

        f, T = self.folder, self.folder.n_frames
        watch = Stopwatch(timings)
        rows = [(term, b) for term in terms for b in range(len(window.prompts))]
        with watch("tokenize"):
            ids, mask = self.tokenizer.pad([self.tokenizer.empty_ids if term.drops_description else window.tokens[b]
                                            for term, b in rows],
                                           [term.drops_description or not window.prompts[b] for term, b in rows])
        with watch("text_encoder"):
            text = engines.run("text_encoder", {"input_ids": ids, "attention_mask": mask})["text"]
        temporal: tp.Dict[str, np.ndarray] = {}
        chords_given = window.chords is not None
        if f.has_chords:
            table = self.tables["chords_emb"]
            null = table[int(f.conditioners["chords"]["null_index"])]
            given = table[window.chords] if chords_given else None
            temporal["chords"] = np.stack([null[None].repeat(T, 0) if (given is None or term.drops_chords) else given
                                           for term, _ in rows]).astype(np.float32)
        if f.has_drums:
            bias = self.tables["drums_null"]
            keeps = window.drums is not None and any(not term.drops_drums for term in terms)
            with watch("drums_encoder"):
                encoded = engines.run("drums_encoder", {"wav": window.drums[None, None]})["drums"][0] if keeps else None
            # dropped drums: a zero wav padded to the batch's longest → EnCodec "silence codes"; when no
            # row keeps drums the wav stays 1 sample long → zero latents → projection bias (BEHAVIOUR §4)
            dropped = self.tables["drums_silence"] if keeps else np.broadcast_to(bias, (T, bias.shape[-1]))
            temporal["drums"] = np.stack([encoded if (keeps and not term.drops_drums) else dropped
                                          for term, _ in rows]).astype(np.float32)
        if f.has_melody:
            w, b = self.tables["melody_weight"], self.tables["melody_bias"]
            mel = window.melody if window.melody is not None else np.zeros((w.shape[1], T), np.float32)

            def project(x: np.ndarray) -> np.ndarray:  # [bins, Tm] → [T, C], zero-padded after projection
                y = (x.T.astype(np.float32) @ w.T + b)[:T]
                return np.concatenate([y, np.zeros((T - y.shape[0], y.shape[1]), np.float32)]) if y.shape[0] < T else y

            kept, dropped_m = project(mel), project(np.zeros_like(mel))
            temporal["melody"] = np.stack([dropped_m if term.drops_melody(chords_given) else kept
                                           for term, _ in rows]).astype(np.float32)
        return Conditions(text.astype(np.float32), temporal)
