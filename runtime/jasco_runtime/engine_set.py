"""The pipeline's graphs, either all open at once or opened one at a time.

A generation uses its graphs in stages (text encoder, drums encoder → flow step for the whole ODE
solve → EnCodec decoder), so holding only the graph in use bounds the memory at the largest graph
instead of their sum.  That is what ``verify`` runs (its end-to-end check after an export must not hold
every graph next to the golden set) and what ``jasco-run --low-memory`` offers 8–16 GB edge boards,
at the cost of opening each graph once per clip.  Graphs of one stage open together (``together``: the flow step
and ``solver_step``, the weightless graph the device-resident ODE loop runs beside it).
"""
from __future__ import annotations

import typing as tp

import numpy as np

from .backends.base import Engine, run_chunked

Opener = tp.Callable[[str], Engine]


class EngineSet:
    """Graph name → open engine.  ``one_at_a_time``: open a graph (with the others of its group in ``together``) on
    first use and close the previous ones."""

    def __init__(self, names: tp.Sequence[str], opener: Opener, one_at_a_time: bool = False,
                 together: tp.Sequence[tp.Sequence[str]] = ()):
        self.names = list(names)
        self.one_at_a_time = one_at_a_time
        self._groups = {n: [m for m in group if m in self.names] for group in together for n in group}
        self._opener = opener
        self._open: tp.Dict[str, Engine] = {}
        if not one_at_a_time:
            try:
                for name in self.names:
                    self._open[name] = opener(name)
            except BaseException:
                self.close()
                raise

    def __getitem__(self, name: str) -> Engine:
        if name not in self.names:
            raise KeyError(name)
        if name not in self._open:
            self.close()  # only reached one at a time: the graphs of the stage in use are the only ones in memory
            try:
                for member in self._groups.get(name, [name]):
                    self._open[member] = self._opener(member)
            except BaseException:
                self.close()
                raise
        return self._open[name]

    def __setitem__(self, name: str, engine: Engine) -> None:
        """Use ``engine`` for ``name`` (a wrapper or a replacement; the engine it replaces is not closed, the
        caller owns it).  Only on a set that keeps every graph open: one at a time, it would be lost at the next
        switch."""
        if self.one_at_a_time:
            raise TypeError("engines opened one at a time cannot be replaced; open the pipeline without low_memory")
        if name not in self.names:
            self.names.append(name)
        self._open[name] = engine

    def run(self, name: str, feeds: tp.Mapping[str, np.ndarray]) -> tp.Dict[str, np.ndarray]:
        """Engine ``name`` over row chunks of its own profile (:func:`~jasco_runtime.backends.base.run_chunked`)."""
        return run_chunked(self[name], feeds)

    def get(self, name: str, default: tp.Any = None) -> tp.Any:
        return self[name] if name in self.names else default

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def opened(self) -> tp.List[str]:
        """Graphs open now."""
        return list(self._open)

    def close(self) -> None:
        """Close every open engine (TensorRT device buffers are not garbage-collected)."""
        engines, self._open = list(self._open.values()), {}
        for engine in engines:
            engine.close()
