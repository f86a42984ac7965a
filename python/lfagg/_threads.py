"""Thread policy, in one place: OpenMP's wait policy, the kernels' thread count, and the
limits lfagg puts on scikit-learn's and BLAS's thread pools."""
from __future__ import annotations

import contextlib
import contextvars
import os

from threadpoolctl import threadpool_limits


def default_wait_policy() -> None:
    """Threads that finish their share of a call sleep instead of spinning (unless the user
    set OMP_WAIT_POLICY): the kernels' parallel regions are coarse, so waking costs little,
    while spinning threads on a machine shared with other processes stole the cores of the
    threads they waited for (two threads ran 2-5x slower than one). libgomp reads the
    variable when the first core module loads it, so this runs before that."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: Whether an enclosing single_threaded_blas already holds the limit.
_BLAS_LIMITED = contextvars.ContextVar("lfagg_single_threaded_blas", default=False)


@contextlib.contextmanager
def single_threaded_blas():
    """Context limiting BLAS to one thread. Outside lfagg's own kernels, Algorithm 1 makes
    thousands of small or thin matrix products (classifier steps, L-BFGS evaluations,
    K-Means++ distances), where BLAS threads cost more than they save; on a machine
    shared with other processes, OpenBLAS's spinning threads made LearnedBoW's fit on
    2,000 CIFAR-10 bags take 61 s instead of 8 s. Nested inside another it does nothing:
    threadpoolctl scans the loaded libraries on every call (3 ms; a model search made
    hundreds of nested calls, 12% of its time)."""
    if _BLAS_LIMITED.get():
        yield
        return
    token = _BLAS_LIMITED.set(True)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _BLAS_LIMITED.reset(token)


def limit_threads(n_threads: int):
    """Context limiting every OpenMP and BLAS pool (scikit-learn's K-Means and GMM, NumPy)
    to ``n_threads``, the core's validated argument; no limit for 0 (all cores)."""
    return contextlib.nullcontext() if n_threads == 0 else threadpool_limits(limits=n_threads)
