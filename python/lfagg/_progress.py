"""A dependency-free progress line on stderr: one bar per epoch, with the running loss."""
from __future__ import annotations

import sys
import time


class EpochProgress:
    """Prints ``epoch 3/10 [#####.....] 52/100 loss 0.6931`` and a summary per epoch."""

    def __init__(self, n_epochs: int, n_batches: int, enabled: bool, stream=None, width: int = 20):
        self.n_epochs, self.n_batches, self.enabled, self.width = n_epochs, n_batches, enabled, width
        self.stream = stream or sys.stderr
        self._start = time.perf_counter()

    def start_epoch(self) -> None:
        self._start = time.perf_counter()

    def update(self, epoch: int, batch: int, loss: float) -> None:
        if not self.enabled:
            return
        done = self.width * batch // max(1, self.n_batches)
        bar = "#" * done + "." * (self.width - done)
        self.stream.write(f"\repoch {epoch + 1}/{self.n_epochs} [{bar}] {batch}/{self.n_batches} loss {loss:.4f}")
        self.stream.flush()

    def end_epoch(self, epoch: int, record: dict) -> None:
        if not self.enabled:
            return
        extra = "".join(f" {k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "time"))
        self.stream.write(f"\repoch {epoch + 1}/{self.n_epochs}{extra} ({time.perf_counter() - self._start:.1f} s)"
                          + " " * self.width + "\n")
        self.stream.flush()
