"""The learnable encoders of the paper as small objects over the C++ core: T1, the soft
Bag of Words, and T2, the soft VLAD, each also with max pooling. Each knows its kernels, its
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


def _kept_or_recomputed(features, offsets, centers, precisions, gamma, assignments, n_threads, check_features):
    """The kept (N, K) ``assignments`` once the offsets, the centres' shape and values, the
    features' values (with ``check_features``) and the assignments' shape are checked,
    before NumPy computes with them (the core checks the rest), or the assignments
    recomputed when None."""
    if assignments is None:
        return _assignments(features, offsets, centers, precisions, gamma, n_threads, check_features)
    if np.ndim(features) != 2:
        raise ValueError(f"features must be a 2-D array (n_features, dim), got shape {np.shape(features)}")
    check_offsets(offsets, len(features))
    if np.ndim(centers) != 2 or np.shape(centers)[1] != np.shape(features)[1]:
        raise ValueError(f"centers must be a 2-D array (n_codewords, dim) of the features' dim = "
                         f"{np.shape(features)[1]}, got shape {np.shape(centers)}")
    for name, values in (("centers", centers), ("features", features if check_features else 0.0)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinity")
    _check_shape(assignments, (len(features), len(centers)), "assignments", "shape (n_features, n_codewords) =")
    return assignments


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
    assignments = _kept_or_recomputed(features, offsets, centers, precisions, gamma, assignments, n_threads,
                                      check_features)
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


#: Rows x K x D values of the weighted residuals that soft_vlad_max forms at a time.
_VLAD_MAX_BLOCK = 1 << 22


def _weighted_residual_max(features, assignments, centers):
    """For one bag's (m, D) features and (m, K) assignments: the (K, D) maximum over its
    rows of a_nk (f_nj - C_kj) and the (K, D) row of each maximum (the first, on ties),
    formed a block of rows at a time in the features' dtype."""
    block = max(1, _VLAD_MAX_BLOCK // centers.size)
    best = arg = None
    for r0 in range(0, len(features), block):
        values = assignments[r0:r0 + block, :, None] * (features[r0:r0 + block, None, :] - centers)
        rows = values.argmax(axis=0)
        top = np.take_along_axis(values, rows[None], axis=0)[0]
        if best is None:
            best, arg = top, rows
        else:
            better = top > best
            best, arg = np.where(better, top, best), np.where(better, rows + r0, arg)
    return best, arg


def _nonempty_bags(offsets):
    """(bag, start, end) of every non-empty bag."""
    return [(b, offsets[b], offsets[b + 1]) for b in np.flatnonzero(np.diff(offsets))]


def soft_vlad_max(features, offsets, centers, precisions, *, gamma, n_threads, check_features,
                  return_assignments=False, assignments_out=None):
    """T2 with max pooling: R_b[k, j] = max_n a_nk (f_nj - C_kj) (0 for an empty bag), the
    (n_bags, K * D) k-major representation, in the signature of the core's soft_vlad; the
    (N, K) assignments come from the core, the maximum from NumPy, blocks of rows at a time
    (N K D operations: 0.6 s for 22,000 x 108 features at K = 64, where the mean takes
    milliseconds). With one codeword, whatever gamma, it is the max pooling of the
    features less the centre."""
    assignments = _assignments(features, offsets, centers, precisions, gamma, n_threads, check_features,
                               assignments_out)
    centers = np.asarray(centers, dtype=assignments.dtype)
    pooled = np.zeros((len(offsets) - 1,) + centers.shape, dtype=assignments.dtype)
    for b, start, end in _nonempty_bags(offsets):
        pooled[b] = _weighted_residual_max(features[start:end], assignments[start:end], centers)[0]
    pooled = pooled.reshape(len(pooled), centers.size)  # not -1: with no bags that is ambiguous
    return (pooled, assignments) if return_assignments or assignments_out is not None else pooled


def soft_vlad_max_backward(features, offsets, centers, precisions, *, gamma, grad_output, assignments, n_threads,
                           check_features, return_grad_features=False):
    """Gradients through :func:`soft_vlad_max`, in the signature of the core's
    soft_vlad_backward. dJ/dR_b[k, j] reaches the bag's row n of the maximum: a_nk gets
    dJ/dR (f_nj - C_kj) (then the core takes it back through the soft assignments, as in
    soft_bow_max_backward), C_kj gets -dJ/dR a_nk and f_nj gets dJ/dR a_nk."""
    assignments = _kept_or_recomputed(features, offsets, centers, precisions, gamma, assignments, n_threads,
                                      check_features)
    centers = np.asarray(centers, dtype=assignments.dtype)
    K, D = centers.shape
    _check_shape(grad_output, (len(offsets) - 1, K * D), "grad_output", "the shape of the encoder's output")
    if not np.isfinite(grad_output).all():
        raise ValueError("grad_output contains NaN or infinity")
    grad_assignments = np.zeros_like(assignments)
    direct_centers = np.zeros((K, D))
    direct_features = np.zeros(np.shape(features)) if return_grad_features else None
    codewords, dims = np.arange(K)[:, None], np.arange(D)[None, :]
    for b, start, end in _nonempty_bags(offsets):
        rows = _weighted_residual_max(features[start:end], assignments[start:end], centers)[1] + start
        grad_b = np.asarray(grad_output[b], dtype=np.float64).reshape(K, D)
        a_max = assignments[rows, codewords].astype(np.float64)
        np.add.at(grad_assignments, (rows, np.broadcast_to(codewords, rows.shape)),
                  grad_b * (features[rows, dims] - centers))
        direct_centers -= grad_b * a_max
        if direct_features is not None:
            np.add.at(direct_features, (rows, np.broadcast_to(dims, rows.shape)), grad_b * a_max)
    grads = core.soft_bow_backward(features, _one_bag_per_feature(features), centers, precisions, gamma,
                                   grad_assignments, assignments, n_threads=n_threads, check_features=check_features,
                                   return_grad_features=return_grad_features)
    grad_centers = (grads[0] + direct_centers).astype(grads[0].dtype)
    if not return_grad_features:
        return grad_centers, grads[1], grads[2]
    return grad_centers, grads[1], grads[2], (grads[3] + direct_features).astype(grads[3].dtype)


#: T1 with max pooling: (n_bags, K), each codeword's largest soft assignment in the bag.
#: Suits bags labelled by whether they hold some kind of feature at all (multiple-instance
#: learning), where the mean dilutes one telling feature among many others.
SOFT_BOW_MAX = SoftEncoder("soft_bow_max", True, lambda K, D: K, soft_bow_max, soft_bow_max_backward)
#: T2 with max pooling: (n_bags, K * D), k-major; see :func:`soft_vlad_max`.
SOFT_VLAD_MAX = SoftEncoder("soft_vlad_max", False, lambda K, D: K * D, soft_vlad_max, soft_vlad_max_backward)
#: The names :func:`lfagg.training.train_encoder` accepts for them.
SOFT_ENCODERS = {"bow": SOFT_BOW, "vlad": SOFT_VLAD, "bow_max": SOFT_BOW_MAX, "vlad_max": SOFT_VLAD_MAX}


def soft_encoder(encoder) -> SoftEncoder:
    """``encoder`` itself, or the SoftEncoder named "bow" (T1), "vlad" (T2), "bow_max" (T1
    with max pooling) or "vlad_max" (T2 with max pooling)."""
    if isinstance(encoder, SoftEncoder):
        return encoder
    try:
        return SOFT_ENCODERS[encoder]
    except (KeyError, TypeError):
        raise ValueError(f"encoder must be 'bow', 'vlad', 'bow_max', 'vlad_max' or a SoftEncoder, "
                         f"got {encoder!r}") from None
