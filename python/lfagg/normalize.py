"""Normalisations of global representations (one row per bag), as used with VLAD and
Fisher Vectors; every function returns a new array of the input's float dtype, and raises
ValueError for NaN or infinity in its input.

The order VLFeat applies them in (vl_vlad) is power, then intra, then L2; the improved
Fisher Vector (Perronnin 2010) is power with alpha = 0.5, then L2.
"""
from __future__ import annotations

import numpy as np

from ._native import core
from ._validation import positive_int, real_in

__all__ = ["power_normalize", "l2_normalize", "intra_normalize", "improved_fisher_normalize"]

#: Norms below this are treated as this (VLFeat's guard): a zero row stays zero.
MIN_NORM = 1e-12


def _rows(x) -> np.ndarray:
    """x as a 2-D float array; ValueError for another shape or dtype, NaN or infinity
    (which the norms would spread over the row as NaN)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n_bags, dim), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"x must be a real numeric array, got dtype {x.dtype}")
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    scannable = x.dtype in (np.float32, np.float64) and x.flags.c_contiguous
    if not (core.all_finite(x, 0) if scannable else np.isfinite(x).all()):  # the core's scan is threaded
        raise ValueError("x contains NaN or infinity")
    return x


def _alpha(alpha) -> float:
    """The power normalisation's exponent, checked: a float in (0, 1]."""
    return real_in(alpha, "alpha", 0, 1, include_low=False, include_high=True)


def power_normalize(x, alpha: float = 0.5) -> np.ndarray:
    """sign(x) |x|^alpha elementwise; alpha = 0.5 is the signed square root.

    Parameters
    ----------
    x : (n_bags, dim) float array.
    alpha : float in (0, 1].

    Returns
    -------
    (n_bags, dim) array of x's dtype.
    """
    return power(_rows(x), _alpha(alpha))


def power(x: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`power_normalize` of a checked float array (finite, 2-D) with a checked alpha."""
    return np.sign(x) * np.abs(x) ** x.dtype.type(alpha)


def l2_normalize(x) -> np.ndarray:
    """Each row divided by its Euclidean norm (at least MIN_NORM, so zero rows stay zero).

    Parameters
    ----------
    x : (n_bags, dim) float array.

    Returns
    -------
    (n_bags, dim) array of x's dtype.
    """
    return l2(_rows(x))


def l2(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` of a checked float array (finite, 2-D)."""
    dtype = x.dtype
    x = x.astype(np.promote_types(dtype, np.float32), copy=False)  # float16 holds MIN_NORM as 0: 0 / 0
    # each row over its largest magnitude first: the norm of x itself can overflow to inf
    scale = np.abs(x).max(axis=1, keepdims=True, initial=0)
    zero = scale == 0
    scale[zero] = 1
    unit = x / scale
    norm = np.linalg.norm(unit, axis=1, keepdims=True)  # >= 1 but for zero rows
    norm[zero] = 1
    # rows whose norm, scale * norm, is below MIN_NORM (MIN_NORM / scale overflowed for subnormal rows)
    small = (scale < MIN_NORM / norm)[:, 0]
    unit /= norm
    unit[small] = x[small] / x.dtype.type(MIN_NORM)
    return unit.astype(dtype, copy=False)


def intra_normalize(x, n_blocks: int) -> np.ndarray:
    """Intra-normalisation (Arandjelovic & Zisserman 2013): each of the n_blocks
    consecutive blocks of a row (VLAD's per-codeword residuals) is L2-normalised.

    Parameters
    ----------
    x : (n_bags, n_blocks * block_dim) float array.
    n_blocks : positive int, e.g. the number of codewords K of a (n_bags, K * D) VLAD.

    Returns
    -------
    (n_bags, n_blocks * block_dim) array of x's dtype.
    """
    x = _rows(x)
    n_blocks = positive_int(n_blocks, "n_blocks")
    if x.shape[1] % n_blocks:
        raise ValueError(f"n_blocks must be a positive divisor of x.shape[1] = {x.shape[1]}, got {n_blocks!r}")
    return intra(x, n_blocks)


def intra(x: np.ndarray, n_blocks: int) -> np.ndarray:
    """:func:`intra_normalize` of a checked float array (finite, 2-D) into n_blocks, a checked divisor of its width."""
    return l2(x.reshape(x.shape[0] * n_blocks, x.shape[1] // n_blocks)).reshape(x.shape)  # no rows: 0 * n_blocks


def improved_fisher_normalize(x, alpha: float = 0.5) -> np.ndarray:
    """The improved Fisher Vector normalisation: power_normalize(x, alpha), then l2_normalize;
    (n_bags, dim) float array in, the same shape and dtype out."""
    return improved(_rows(x), _alpha(alpha))


def improved(x: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """:func:`improved_fisher_normalize` of a checked float array (finite, 2-D) with a checked alpha."""
    return l2(power(x, alpha))
