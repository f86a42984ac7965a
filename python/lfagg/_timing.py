"""Wall time per phase of a fit, which estimators expose as ``timings_``."""
from __future__ import annotations

import contextlib
import time


class Stopwatch(dict):
    """Seconds per phase name, summed over the phase's runs: ``with watch("encode"): ...``."""

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.perf_counter() - start
