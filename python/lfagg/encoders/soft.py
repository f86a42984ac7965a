"""The learnable encoders of the paper as small objects over the C++ core: T1, the soft
Bag of Words, and T2, the soft VLAD, and T1 with max pooling. Each knows its kernels, its
output size and whether its output is non-negative (what the chi2 feature map needs); the
estimators and the training loop use them instead of branching on a name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._native import core
from .._kernels import run_validated
from .._validation import check_offsets


@dataclass(frozen=True)
class SoftEncoder:
    """A soft-assignment encoder: forward and backward kernels over validated bags.

    name : str; nonnegative : bool, whether every output value is >= 0;
    output_dim : callable(K, D) -> int, the representation's columns for K codewords of
    D-dimensional features.
    """

    name: str
    nonnegative: bool
    output_dim: Callable[[int, int], int]
    _forward: Callable
    _backward: Callable

    def forward(self, bags, centers, precisions, gamma: float, n_threads: int = 0, return_assignments=False,
                assignments_out=None):
        """The (n_bags, output_dim) representation in the bags' dtype, and with
        ``return_assignments`` the (N, K) soft assignments too.

        bags : a Bags whose features were checked finite; centers, precisions : (K, D)
        float arrays; gamma : float > 0; n_threads : int, 0 for all cores;
        assignments_out : optional writeable C-contiguous (N, K) array of the bags' dtype
        that receives the assignments instead of a new array (implies return_assignments; the
        array returned is the one written, a copy if ``assignments_out`` had to be cast).
        """
        return run_validated(self._forward, bags, centers, precisions, gamma=float(gamma), n_threads=n_threads,
                             return_assignments=bool(return_assignments), assignments_out=assignments_out)

    def backward(self, bags, centers, precisions, gamma: float, grad_output, n_threads: int = 0,
                 assignments=None, return_grad_features=False):
        """(dJ/dcenters (K, D), dJ/dprecisions (K, D), dJ/dgamma float) given
        grad_output = dJ/dR (n_bags, output_dim); ``assignments`` as returned by
        :meth:`forward`, or None to recompute them; with ``return_grad_features`` also
        dJ/dF (N, D)."""
        return run_validated(self._backward, bags, centers, precisions, gamma=float(gamma), grad_output=grad_output,
                             assignments=assignments, n_threads=n_threads,
                             return_grad_features=bool(return_grad_features))


#: T1 (eq. 6-8): (n_bags, K), rows summing to 1.
SOFT_BOW = SoftEncoder("soft_bow", True, lambda K, D: K, core.soft_bow, core.soft_bow_backward)
#: T2 (eq. 9): (n_bags, K * D), k-major.
SOFT_VLAD = SoftEncoder("soft_vlad", False, lambda K, D: K * D, core.soft_vlad, core.soft_vlad_backward)


def _one_bag_per_feature(features) -> np.ndarray:
    """Offsets that make every feature a bag of its own: the soft BoW of such bags is the
    features' soft assignments, and its backward the gradient through them."""
    return np.arange(len(features) + 1, dtype=np.int64)


def _assignments(features, offsets, centers, precisions, gamma, n_threads, check_features, out=None) -> np.ndarray:
    """The (N, K) soft assignments of the features, written into ``out`` when given: from
    the core's soft BoW of the bags, which checks every argument, the offsets included."""
    return core.soft_bow(features, offsets, centers, precisions, gamma, n_threads=n_threads, return_assignments=True,
                         check_features=check_features, assignments_out=out)[1]


def _check_shape(array, shape: tuple, name: str, what: str) -> None:
    """ValueError naming ``name`` unless ``array`` has ``shape``, worded as the core's (``what`` names the shape)."""
    if np.shape(array) != shape:
        raise ValueError(f"{name} must have {what} {shape}, got shape {np.shape(array)}")


def soft_bow_max(features, offsets, centers, precisions, *, gamma, n_threads, check_features,
                 return_assignments=False, assignments_out=None):
    """The soft assignments' maximum over each bag's features, R_b[k] = max_n a_nk (0 for
    an empty bag), in the signature of the core's soft_bow; the (N, K) assignments are
    returned with ``return_assignments``, or written into ``assignments_out`` and it returned."""
    assignments = _assignments(features, offsets, centers, precisions, gamma, n_threads, check_features,
                               assignments_out)
    pooled = np.zeros((len(offsets) - 1, assignments.shape[1]), dtype=assignments.dtype)
    filled = np.flatnonzero(np.diff(offsets))
    if len(filled):  # each non-empty bag's rows end where the next non-empty bag's start
        pooled[filled] = np.maximum.reduceat(assignments, offsets[filled], axis=0)
    return (pooled, assignments) if return_assignments or assignments_out is not None else pooled


def soft_bow_max_backward(features, offsets, centers, precisions, *, gamma, grad_output, assignments, n_threads,
                          check_features, return_grad_features=False):
    """Gradients through :func:`soft_bow_max`, in the signature of the core's
    soft_bow_backward: dJ/dR_b[k] goes to the bag's first feature of the largest a_nk, then
    back through the soft assignments on the core (which sees one bag per feature, so the
    bags' offsets, and kept assignments' shape, are checked here)."""
    if assignments is None:
        assignments = _assignments(features, offsets, centers, precisions, gamma, n_threads, check_features)
    else:
        check_offsets(offsets, len(features))
        if np.ndim(centers) != 2:
            raise ValueError(f"centers must be a 2-D array (n_codewords, dim), got shape {np.shape(centers)}")
        _check_shape(assignments, (len(features), len(centers)), "assignments", "shape (n_features, n_codewords) =")
    _check_shape(grad_output, (len(offsets) - 1, len(centers)), "grad_output", "the shape of the encoder's output")
    if not np.isfinite(grad_output).all():
        raise ValueError("grad_output contains NaN or infinity")
    grad_assignments = np.zeros_like(assignments)
    codewords = np.arange(assignments.shape[1])
    for b in np.flatnonzero(np.diff(offsets)):
        start, end = offsets[b], offsets[b + 1]
        grad_assignments[start + assignments[start:end].argmax(axis=0), codewords] = grad_output[b]
    return core.soft_bow_backward(features, _one_bag_per_feature(features), centers, precisions, gamma,
                                  grad_assignments, assignments, n_threads=n_threads, check_features=check_features,
                                  return_grad_features=return_grad_features)


#: T1 with max pooling: (n_bags, K), each codeword's largest soft assignment in the bag.
#: Suits bags labelled by whether they hold some kind of feature at all (multiple-instance
#: learning), where the mean dilutes one telling feature among many others.
SOFT_BOW_MAX = SoftEncoder("soft_bow_max", True, lambda K, D: K, soft_bow_max, soft_bow_max_backward)
#: The names :func:`lfagg.training.train_encoder` accepts for them.
SOFT_ENCODERS = {"bow": SOFT_BOW, "vlad": SOFT_VLAD, "bow_max": SOFT_BOW_MAX}


def soft_encoder(encoder) -> SoftEncoder:
    """``encoder`` itself, or the SoftEncoder named "bow" (T1), "vlad" (T2) or "bow_max" (T1
    with max pooling)."""
    if isinstance(encoder, SoftEncoder):
        return encoder
    try:
        return SOFT_ENCODERS[encoder]
    except (KeyError, TypeError):
        raise ValueError(f"encoder must be 'bow', 'vlad', 'bow_max' or a SoftEncoder, got {encoder!r}") from None
