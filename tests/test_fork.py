"""A process forked after lfagg's core ran on several threads (multiprocessing's default
start method on Linux; DataLoader workers) runs the core on one thread instead of hanging
(GNU OpenMP's threads do not survive fork()), as does one forked with torch loaded, whose
threads share the core's OpenMP runtime; one forked before any such region keeps its
threads. Each case runs in a fresh parent (a "spawn" process), whose history is its own."""
import multiprocessing

import numpy as np
import pytest

import lfagg.ops as ops
from lfagg import _native

pytestmark = [pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork() here"),
              pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")]  # Python 3.12's note


def _args():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20_000, 8)), np.array([0, 20_000]), rng.normal(size=(6, 8)), np.ones((6, 8))


def _child(queue):
    queue.put((_native.core.max_threads(), ops.soft_bow(*_args(), 0.5, 2)))  # two threads asked for


def _parent(queue, before_fork):
    """Runs ``before_fork`` in this fresh process, then reports a forked child's threads and result."""
    if before_fork == "two threads ran":
        ops.soft_bow(*_args(), 0.5, 2)
    elif before_fork == "torch ran two threads":  # torch and the core share GNU OpenMP's runtime
        import torch

        torch.set_num_threads(2)
        torch.randn(500, 500) @ torch.randn(500, 500)
    elif before_fork == "calls that start no threads":
        _native.core.max_threads()
        ops.soft_bow(np.ones((3, 8)), np.array([0, 3]), np.ones((2, 8)), np.ones((2, 8)), 0.5, 2)  # one tile
    context = multiprocessing.get_context("fork")
    inner = context.Queue()
    child = context.Process(target=_child, args=(inner,))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    queue.put(("hung", None) if hung else inner.get(timeout=10))


@pytest.mark.parametrize("before_fork, child_threads", [("two threads ran", 1), ("calls that start no threads", 2),
                                                        ("nothing", 2), ("torch ran two threads", 1)])
def test_a_forked_child_runs_the_core_on_the_threads_it_can(before_fork, child_threads, monkeypatch):
    if before_fork.startswith("torch"):  # the child hung: the core's guard knew only its own threads
        pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the fresh parent's default (Dask's LocalCluster sets 1 here)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    parent = context.Process(target=_parent, args=(queue, before_fork))
    parent.start()
    threads, result = queue.get(timeout=120)
    parent.join(10)
    assert threads != "hung", "the forked child hung in the core"
    assert threads == child_threads
    np.testing.assert_array_equal(result, ops.soft_bow(*_args(), 0.5, 1))  # bitwise, whatever the threads
