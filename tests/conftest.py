"""Fixtures and data shared by the test modules."""
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import lfagg

#: The development data sets beside the checkout (../shared/data); tests that read them
#: skip when they are absent.
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CIFAR = SHARED_DATA / "cifar10_subset.npz"


@pytest.fixture(scope="module")
def one_thread():
    """One thread for the kernels, K-Means and BLAS: on tiny problems threads only add
    synchronisation cost (and spin under a loaded machine)."""
    with threadpool_limits(1):
        yield


def three_class_bags(seed, n_bags, n_per_bag=15):
    """Bags of 2-D points from three blobs; class c draws 70% of its points from blob c."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    y = np.arange(n_bags) % 3
    arrays = []
    for c in y:
        blob = np.where(rng.random(n_per_bag) < 0.7, c, rng.integers(0, 3, n_per_bag))
        arrays.append(centres[blob] + rng.normal(scale=0.6, size=(n_per_bag, 2)))
    return lfagg.Bags.from_arrays(arrays), y
