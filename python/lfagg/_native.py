"""Selection of the compiled core: one extension per instruction set, the best one the CPU runs.

Set the environment variable ``LFAGG_ISA`` (``baseline``, ``avx2``, ``avx512`` or ``native``)
before importing lfagg to force one (one that is not available gives a warning and the best one).
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

from ._threads import default_wait_policy

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
    isas = available()
    if not isas:
        raise ImportError("no compiled lfagg core found: reinstall lfagg (pip install .)")
    forced = os.environ.get("LFAGG_ISA")
    if forced in isas:
        return _import(forced)
    if forced:  # a typo must not make `import lfagg` fail with a traceback
        warnings.warn(f"LFAGG_ISA={forced!r} is not available here (available: {', '.join(isas)}); using "
                      f"{isas[0]}", RuntimeWarning, stacklevel=2)
    return _import(isas[0])


def _after_fork_in_child() -> None:
    """PyTorch shares GNU OpenMP's runtime with a core built from source (the libgomp.so.1
    loaded first serves both; the wheel vendors a libgomp of its own): a child forked after
    torch ran on several threads hung in the core's first region of several threads, which
    the core's own fork guard, knowing only its own regions, let it start. With torch
    loaded, a forked child runs the core on one thread."""
    if "torch" in sys.modules:
        for isa in ISAS:
            module = sys.modules.get(f"lfagg._core_{isa}")
            if module is not None:
                module.run_on_one_thread()


default_wait_policy()
if TYPE_CHECKING:  # type checkers see the interface every core has (_core.pyi)
    from . import _core as core
else:
    core = _select()
    os.register_at_fork(after_in_child=_after_fork_in_child)
