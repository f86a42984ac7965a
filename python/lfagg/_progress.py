"""Progress and timing of long work: the wall time per phase of a fit (``timings_``) and
what the user sees on stderr, named after the model: a line per phase, begun when the
phase starts and ended with its time, and per training epoch (model search, conversion)
a tqdm bar on a terminal or plain lines otherwise (so that log files get no
carriage-return frames). Nothing is shown at verbose=0."""
from __future__ import annotations

import contextlib
import sys
import time

from tqdm.auto import tqdm


def _stderr_is_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def bags_count(n: int) -> str:
    """"1 bag", "2 bags", "1,024 bags": a count of bags for a message."""
    return f"{n:,} bag{'' if n == 1 else 's'}"


class Stopwatch(dict):
    """Seconds per phase, summed over the phase's runs: ``with watch("encode", "encoding"): ...``.

    name : str, the model named in the messages; verbose : int, > 0 reports each phase
    given a description as it starts and ends.
    """

    def __init__(self, name: str = "", verbose: int = 0):
        super().__init__()
        self.name, self.verbose = name, verbose

    @contextlib.contextmanager
    def __call__(self, phase: str, description: str | None = None):
        report = bool(description) and self.verbose > 0
        if report:  # the line is ended when the phase is: one line per phase, in a log too
            print(f"{self.name}: {description} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        outcome = "failed"  # what ends the line when the phase raises
        try:
            yield
            outcome = None
        finally:
            elapsed = time.perf_counter() - start
            self[phase] = self.get(phase, 0.0) + elapsed
            if report:
                print(f" {outcome or f'{elapsed:.1f} s'}", file=sys.stderr, flush=True)


#: In a log file, long work also reports its count done at most this often (seconds).
LOG_INTERVAL_S = 30.0


class _DoneLine:
    """tqdm's interface for a log file: one line when the work ends, with its postfix,
    and the count done every :data:`LOG_INTERVAL_S` seconds while it lasts longer; with
    ``announce``, one when it starts too."""

    disable = False

    def __init__(self, desc: str, total: int, announce: bool = False):
        self.desc, self.total, self.done, self.postfix = desc, total, 0, {}
        self.start = self.reported = time.perf_counter()
        if announce:
            print(f"{desc}: 0/{total}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.reported >= LOG_INTERVAL_S and self.done < self.total:
            self.reported = now
            print(f"{self.desc}: {self.done}/{self.total} ({now - self.start:.1f} s)", file=sys.stderr, flush=True)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self.postfix = dict(ordered_dict or {}, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        elapsed = time.perf_counter() - self.start
        if exc_type is not None:  # its postfix (an epoch's mean loss so far) would pass for the finished work's
            print(f"{self.desc}: stopped at {self.done}/{self.total} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
            return
        values = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"{self.desc}{values} ({elapsed:.1f} s)", file=sys.stderr, flush=True)


def progress_bar(desc: str, total: int, verbose: int, announce: bool = False):
    """The progress of ``total`` steps (an epoch's batches, a conversion's bags): a
    context manager with tqdm's ``update``, ``set_postfix`` and ``disable``. ``announce``:
    in a log file too, a line as the work starts (for steps that each take minutes: the
    folds of a search, whose first line would otherwise come after the first fold)."""
    if verbose > 0 and not _stderr_is_terminal():
        return _DoneLine(desc, total, announce)
    return tqdm(total=total, desc=desc, disable=verbose <= 0, leave=True, file=sys.stderr)
