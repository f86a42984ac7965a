"""Synthetic two-class bags of 2-D points: the concentric circles and moons of Fig. 1."""
from __future__ import annotations

import numpy as np

from .._validation import as_generator, nonnegative_real, positive_int, real_in
from ..bags import Bags


def _two_class_bags(sample_a, sample_b, n_bags, n_per_bag, purity, random_state):
    """Bags whose features come from population a with probability `purity` for class 0
    and 1 - purity for class 1 (the rest from population b); classes alternate."""
    purity = real_in(purity, "purity", 0.5, 1, include_low=False, include_high=True)
    n_bags, n_per_bag = positive_int(n_bags, "n_bags", minimum=2), positive_int(n_per_bag, "n_per_bag")
    rng = as_generator(random_state)
    y = np.arange(n_bags) % 2
    p_a = np.where(y == 0, purity, 1 - purity)
    from_a = rng.random((n_bags, n_per_bag)) < p_a[:, None]
    n_a = int(from_a.sum())
    features = np.empty((n_bags * n_per_bag, 2))
    flat = from_a.ravel()
    features[flat] = sample_a(rng, n_a)
    features[~flat] = sample_b(rng, flat.size - n_a)
    return Bags(features, np.arange(n_bags + 1) * n_per_bag), y


def make_circles_bags(n_bags: int = 200, n_per_bag: int = 50, purity: float = 0.8, noise: float = 0.1,
                      random_state=None):
    """Two-class bags of 2-D points on two concentric circles (Fig. 1a of the paper).

    Class 0 bags draw each point from the inner circle (radius 0.5) with probability
    ``purity`` and from the outer circle (radius 1) otherwise; class 1 bags the reverse.
    Gaussian noise of std ``noise`` is added to each point.

    Returns
    -------
    (Bags of float64 features (n_bags * n_per_bag, 2), labels (n_bags,) int64 in {0, 1})
    """
    noise = nonnegative_real(noise, "noise")  # NaN or inf would make non-finite bags

    def circle(radius):
        def sample(rng, n):
            angle = rng.uniform(0, 2 * np.pi, n)
            return radius * np.c_[np.cos(angle), np.sin(angle)] + rng.normal(scale=noise, size=(n, 2))
        return sample

    return _two_class_bags(circle(0.5), circle(1.0), n_bags, n_per_bag, purity, random_state)


def make_moons_bags(n_bags: int = 200, n_per_bag: int = 50, purity: float = 0.8, noise: float = 0.1,
                    random_state=None):
    """Two-class bags of 2-D points on two interleaved half circles ("moons").

    Like :func:`make_circles_bags`, with the upper moon as class 0's main population.
    """
    noise = nonnegative_real(noise, "noise")

    def moon(upper):
        def sample(rng, n):
            t = rng.uniform(0, np.pi, n)
            pts = np.c_[np.cos(t), np.sin(t)] if upper else np.c_[1 - np.cos(t), 0.5 - np.sin(t)]
            return pts + rng.normal(scale=noise, size=(n, 2))
        return sample

    return _two_class_bags(moon(True), moon(False), n_bags, n_per_bag, purity, random_state)
