"""A process forked after lfagg's core ran on several threads (multiprocessing's default
start method on Linux; DataLoader workers) runs the core on one thread instead of hanging:
GNU OpenMP's threads do not survive fork()."""
import multiprocessing

import numpy as np
import pytest

import lfagg.ops as ops


def _encode_into(queue, *args):
    queue.put(ops.soft_bow(*args, 0.5, 2))  # two threads asked for


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork() here")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # Python 3.12's note on fork()
def test_a_child_forked_after_threads_ran_runs_the_core_instead_of_hanging():
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(20_000, 8)), np.array([0, 20_000]), rng.normal(size=(6, 8)), np.ones((6, 8)))
    parent = ops.soft_bow(*args, 0.5, 2)  # the parent's OpenMP threads exist from here on
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_encode_into, args=(queue, *args))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "the forked child hung in the core"
    np.testing.assert_array_equal(queue.get(timeout=10), parent)  # one thread: bitwise the same result
