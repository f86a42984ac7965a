"""Thread policy, in one place: OpenMP's wait policy, the kernels' thread count, the
limits lfagg puts on scikit-learn's and BLAS's thread pools, and its joblib runs."""
from __future__ import annotations

import contextlib
import contextvars
import os
import warnings

from joblib import Parallel, delayed
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


def as_they_finish(n_jobs, calls):
    """The results of ``calls`` (``joblib.delayed`` calls) in their order, run by joblib on
    ``n_jobs`` (the caller's ``parallel_config`` applies), each as soon as it and those
    before it finish, so that progress bars can count them (with a backend that cannot
    hand them out one by one, as joblib's "multiprocessing", all at the end; it refused
    to run them at all). Warnings raised in another process are raised again here, where
    the caller's filters see them (they went to that process's stderr)."""
    try:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    except ValueError:  # the backend of the caller's parallel_config yields no generator
        parallel = Parallel(n_jobs=n_jobs)
    parent = os.getpid()
    for result, caught in parallel(delayed(_with_warnings)(parent, *call) for call in calls):
        for message, category in caught:
            warnings.warn(message, category, stacklevel=3)
        yield result


def _with_warnings(parent: int, function, args, kwargs):
    """(function(*args, **kwargs), the (message, category) of its warnings when this is not
    the process ``parent``; none otherwise: they are raised as usual)."""
    if os.getpid() == parent:
        return function(*args, **kwargs), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the parent's filters decide
        result = function(*args, **kwargs)
    return result, [(str(w.message), w.category) for w in caught]
