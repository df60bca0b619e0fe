"""Wall-clock timings of a generation's stages (host ``perf_counter``), summed per stage name."""
from __future__ import annotations

import contextlib
import time
import typing as tp


class Stopwatch:
    """``with watch("flow"): ...`` adds the block's seconds to ``timings["flow"]`` (a no-op when timings is None)."""

    def __init__(self, timings: tp.Optional[tp.Dict[str, float]] = None):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> tp.Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def clock() -> tp.Callable[[], float]:
    """Seconds since the call."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
