"""The estimators' way into the compiled core: kernels called on bags that lfagg has
already validated, without the public ops' conversions and scans."""
from __future__ import annotations

import numpy as np


def run_validated(kernel, bags, *params, n_threads: int, **kwargs):
    """``kernel`` of the core on a validated Bags: its features are not scanned again, the
    array arguments (positional or keyword) are cast to their dtype and ``n_threads`` is
    the core's int argument (0: all cores). The estimators' path, after they checked their
    input once."""
    def cast(a):  # a value beyond float32 becomes inf, which the kernel refuses by name
        if not isinstance(a, np.ndarray):
            return a
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(a, dtype=bags.dtype)

    kwargs = {name: cast(value) for name, value in kwargs.items()}
    return kernel(bags.features, bags.offsets, *map(cast, params), n_threads=n_threads, check_features=False,
                  **kwargs)
