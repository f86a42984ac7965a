"""Selection of the compiled core: one extension per instruction set, the best one the CPU runs.

Set the environment variable ``LFAGG_ISA`` (``baseline``, ``avx2``, ``avx512`` or ``native``)
before importing lfagg to force one.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

#: Instruction sets lfagg builds extensions for, best first.
ISAS = ("native", "avx512", "avx2", "baseline")


def _import(isa: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"lfagg._core_{isa}")
    except ImportError:
        return None


def _cpu_supports(isa: str) -> bool:
    if isa == "native":  # built with -march=native for this very machine
        return True
    probe = _import("baseline")
    return probe is not None and probe.cpu_supports(isa)


def available() -> list[str]:
    """Instruction sets whose extension is installed and runs on this CPU, best first."""
    return [isa for isa in ISAS if _import(isa) is not None and _cpu_supports(isa)]


def load(isa: str) -> ModuleType:
    """The compiled core for ``isa``; ValueError when it is not installed or not supported."""
    if isa not in available():
        raise ValueError(f"instruction set {isa!r} is not available here; available: {available()}")
    return _import(isa)


def _select() -> ModuleType:
    forced = os.environ.get("LFAGG_ISA")
    if forced:
        return load(forced)
    isas = available()
    if not isas:
        raise ImportError("no compiled lfagg core found: reinstall lfagg (pip install .)")
    return _import(isas[0])


# Threads that finish their share of a call sleep instead of spinning (unless the user set
# OMP_WAIT_POLICY): the kernels' parallel regions are coarse, so waking costs little, while
# spinning threads on a machine shared with other processes stole the cores of the
# threads they waited for (two threads ran 2-5x slower than one). libgomp reads the
# variable when the first core module loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
core = _select()
