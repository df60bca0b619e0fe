"""T5 tokenization without transformers: ``tokenizers`` + the exported ``tokenizer.json``.

Reproduces audiocraft's T5Conditioner.tokenize: the whole CFG batch is tokenized together, padded
to its longest entry (no truncation, no fixed maximum), and missing descriptions ("" → ``</s>``)
get an all-zero attention mask (BEHAVIOUR.md §3, §7).
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np

from .errors import InputError


class TextTokenizer:
    def __init__(self, path: tp.Union[str, Path], pad_id: int = 0, pad_token: str = "<pad>"):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable / invalid JSON
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path} is damaged ({detail}); re-run jasco-export or copy the folder again") from exc
        self.pad_id = pad_id
        self.tokenizer.no_truncation()
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, direction="right")

    def encode_each(self, texts: tp.Sequence[str]) -> tp.List[np.ndarray]:
        """Token ids of each text on its own (with ``</s>``, no padding), int64."""
        encodings = self.tokenizer.encode_batch(list(texts))  # padded to the batch's longest: cut each back
        return [np.asarray(e.ids[:sum(e.attention_mask)], dtype=np.int64) for e in encodings]

    @property
    def empty_ids(self) -> np.ndarray:
        """The ids of a missing description ("" → ``</s>``)."""
        if not hasattr(self, "_empty"):
            self._empty = self.encode_each([""])[0]
        return self._empty

    def pad(self, rows: tp.Sequence[np.ndarray], masked: tp.Sequence[bool]) -> tp.Tuple[np.ndarray, np.ndarray]:
        """Rows of ids → (input_ids [N, L], attention_mask [N, L]) padded to the longest, as the batch tokenization
        of :meth:`__call__` pads them; ``masked`` rows (missing descriptions) get an all-zero mask."""
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, (r, m) in enumerate(zip(rows, masked)):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 0 if m else 1
        return ids, mask

    def __call__(self, texts: tp.Sequence[tp.Optional[str]]) -> tp.Tuple[np.ndarray, np.ndarray]:
        """→ (input_ids [B, L] int64, attention_mask [B, L] int64)."""
        entries = [t if t is not None else "" for t in texts]
        encodings = self.tokenizer.encode_batch(entries)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        for i, entry in enumerate(entries):
            if entry == "":
                mask[i] = 0
        return ids, mask
