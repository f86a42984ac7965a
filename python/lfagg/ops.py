"""Low-level encoding kernels (C++, OpenMP) over ragged bags of local features.

Every function takes the bags as ``features`` (N, D) and ``offsets`` (n_bags + 1,): bag b
holds rows ``offsets[b]:offsets[b + 1]``. The computation runs in float32 when
``features`` is float32 and in float64 otherwise; parameters and gradients are cast to
that dtype, and ``features`` is never copied when it already is C-contiguous float32 or
float64. Empty bags encode to zero vectors and contribute nothing to gradients (the
backward ignores their rows of ``grad_output``, NaN included).
``n_threads=None`` uses every core OpenMP may use (``OMP_NUM_THREADS`` and threadpoolctl
limits are honoured); results are bitwise identical for every thread count.

Bad input raises ValueError naming the argument; NaN or infinity is rejected.

Every function returns the raw encoding; normalisations (power, intra, L2, the improved
Fisher Vector) are the separate step :mod:`lfagg.normalize`, which the estimators compose.
The soft encoders and BoW average over each bag's features (the paper's T1 and T2), as
the Fisher Vector does by its definition; :func:`vlad` sums them, as VLFeat's vl_vlad.
"""
from __future__ import annotations

import numpy as np

from . import _native
from ._validation import (as_offsets, boolean, check_gamma_dtype, check_resolvable_distances, choice, float_array,
                          n_threads_arg, positive_real)
from .encoders.soft import soft_bow_max, soft_bow_max_backward, soft_vlad_max, soft_vlad_max_backward

_core = _native.core

#: Instruction set of the compiled core in use ("baseline", "avx2", "avx512" or "native").
isa: str = _core.isa

__all__ = [
    "soft_bow", "soft_bow_backward", "soft_vlad", "soft_vlad_backward", "bow", "vlad", "fisher_vector", "isa",
]


def _soft_args(features, offsets, centers, precisions, gamma, n_threads):
    features = float_array(features, "features")
    dtype = features.dtype
    return (features, as_offsets(offsets), float_array(centers, "centers", dtype),
            float_array(precisions, "precisions", dtype),
            check_gamma_dtype(positive_real(gamma, "gamma"), dtype)), n_threads_arg(n_threads)


def _assignments_out(out, args):
    """``out`` unchanged when it can receive the assignments of the checked ``args``
    (features, offsets, centers, precisions, gamma) in place, else ValueError: of their
    dtype, C-contiguous, and apart from their memory (the max pooling read features and
    centres that it had overwritten with assignments: 0.84 off, without a word)."""
    dtype = args[0].dtype
    if out is None:
        return None
    if not (isinstance(out, np.ndarray) and out.dtype == dtype and out.flags.c_contiguous):
        got = (f"{type(out).__name__}" if not isinstance(out, np.ndarray)
               else f"an array of dtype {out.dtype}" + ("" if out.flags.c_contiguous else " that is not C-contiguous"))
        raise ValueError(f"assignments_out must be a C-contiguous numpy array of the features' dtype ({dtype}), "
                         f"got {got}")
    for name, arg in zip(("features", "offsets", "centers", "precisions"), args):
        if np.may_share_memory(out, arg):
            raise ValueError(f"assignments_out shares memory with {name}: give an array of its own")
    return out


def _empty_bag_rows_zeroed(grad_output, offsets):
    """grad_output with its rows of empty bags set to 0 where they are not finite: no
    feature reads them (an empty bag's output is a constant 0), so a NaN there, as the
    signed square root of that zero row gives, must not fail the check for NaN. A copy
    only then; wrong shapes are left for the kernel to name."""
    if offsets.ndim != 1 or grad_output.ndim != 2 or len(grad_output) != len(offsets) - 1:
        return grad_output
    empty = np.flatnonzero(offsets[1:] == offsets[:-1])
    if empty.size and not np.isfinite(grad_output[empty]).all():
        grad_output = grad_output.copy()
        grad_output[empty] = 0
    return grad_output


def _backward_args(grad_output, assignments, dtype):
    return (float_array(grad_output, "grad_output", dtype),
            None if assignments is None else float_array(assignments, "assignments", dtype))


#: The poolings of :func:`soft_bow` and :func:`soft_vlad` over a bag's features.
POOLINGS = ("mean", "max")


def is_max_pooling(pooling) -> bool:
    """Whether ``pooling`` is "max" (False for "mean"); ValueError for any other value."""
    return choice(pooling, "pooling", POOLINGS) == "max"


def _forward(kernel, max_kernel, features, offsets, centers, precisions, gamma, n_threads, pooling,
             return_assignments, assignments_out):
    """A soft encoder's forward, every argument checked: the core's ``kernel``, or
    ``max_kernel`` (of :mod:`lfagg.encoders.soft`) for the max pooling."""
    args, nt = _soft_args(features, offsets, centers, precisions, gamma, n_threads)
    return_assignments = boolean(return_assignments, "return_assignments")
    assignments_out = _assignments_out(assignments_out, args)
    if is_max_pooling(pooling):
        return max_kernel(*args[:4], gamma=args[4], n_threads=nt, check_features=True,
                          return_assignments=return_assignments, assignments_out=assignments_out)
    return kernel(*args, nt, return_assignments, assignments_out=assignments_out)


def _backward(kernel, max_kernel, features, offsets, centers, precisions, gamma, grad_output, n_threads, pooling,
              assignments, return_grad_features):
    """A soft encoder's backward, every argument checked, as :func:`_forward` chooses its kernel."""
    args, nt = _soft_args(features, offsets, centers, precisions, gamma, n_threads)
    grad_output, assignments = _backward_args(grad_output, assignments, args[0].dtype)
    grad_output = _empty_bag_rows_zeroed(grad_output, args[1])
    return_grad_features = boolean(return_grad_features, "return_grad_features")
    if is_max_pooling(pooling):
        return max_kernel(*args[:4], gamma=args[4], grad_output=grad_output, assignments=assignments,
                          n_threads=nt, check_features=True, return_grad_features=return_grad_features)
    return kernel(*args, grad_output, assignments, n_threads=nt, return_grad_features=return_grad_features)


def soft_bow(features, offsets, centers, precisions, gamma, n_threads=None, *, pooling="mean",
             return_assignments=False, assignments_out=None):
    """T1, the learnable soft Bag of Words (eq. 6-8 of the paper).

    R_b[k] = (1/N_b) sum_n a_nk with a_nk = softmax_k(-gamma d_nk) and the squared
    Mahalanobis distance d_nk = sum_j P_kj (f_nj - C_kj)^2; with ``pooling="max"``, R_b[k] = max_n a_nk.

    Parameters
    ----------
    features : (N, D) float array, the local features of all bags, concatenated.
    offsets : (n_bags + 1,) integer array, offsets[0] == 0, non-decreasing, offsets[-1] == N.
    centers : (K, D) float array, the codewords C.
    precisions : (K, D) float array, strictly positive diagonal precisions P = Sigma^-1.
    gamma : positive float.
    n_threads : positive int or None (all cores).
    pooling : "mean", the paper's T1, or "max": each codeword's largest soft assignment in
        the bag, for bags labelled by whether they hold some kind of feature at all
        (multiple-instance learning), where the mean dilutes one telling feature among
        many. The max pooling holds the (N, K) assignments in memory even without
        return_assignments.
    return_assignments : bool, also return the soft assignments a (N, K), rows summing
        to 1; passing them to :func:`soft_bow_backward` halves its cost, at the price of
        N * K values of memory (the forward pass alone never holds more than a few rows).
    assignments_out : optional writeable C-contiguous (N, K) array of the features' dtype
        that receives the assignments (and is returned) instead of a new array: a training
        loop reuses one buffer across its steps (implies return_assignments); after an
        error its content is unspecified.

    Returns
    -------
    (n_bags, K) array of the features' dtype (float32 or float64), zeros for an empty
    bag; with the mean pooling, every other row sums to 1. With return_assignments, the
    tuple (encoding, assignments).
    """
    return _forward(_core.soft_bow, soft_bow_max, features, offsets, centers, precisions, gamma, n_threads, pooling,
                    return_assignments, assignments_out)


def soft_bow_backward(features, offsets, centers, precisions, gamma, grad_output, n_threads=None, *,
                      pooling="mean", assignments=None, return_grad_features=False):
    """Gradients of a loss J through :func:`soft_bow`.

    Parameters are those of :func:`soft_bow` (``pooling`` as there), plus ``grad_output``
    (n_bags, K), dJ/dR,
    ``assignments``: None to recompute the soft assignments, or the (N, K) array that
    ``soft_bow(..., return_assignments=True)`` returned for the same features and
    parameters (their shape, finiteness and sign are checked, a negative value below the
    dtype's smallest normal number counting as the zero the kernel reads it as; whether
    they come from these features and parameters is not: other values give wrong
    gradients), and
    ``return_grad_features``: also return dJ/dF, the gradient with respect to the local
    features, for a network below the encoder (one more matrix product per block of
    features; nothing extra when False).

    Returns
    -------
    (grad_centers, grad_precisions, grad_gamma): two (K, D) arrays of the features' dtype
    and a Python float; with return_grad_features, also grad_features (N, D) of the
    features' dtype.
    """
    return _backward(_core.soft_bow_backward, soft_bow_max_backward, features, offsets, centers, precisions, gamma,
                     grad_output, n_threads, pooling, assignments, return_grad_features)


def soft_vlad(features, offsets, centers, precisions, gamma, n_threads=None, *, pooling="mean",
              return_assignments=False, assignments_out=None):
    """T2, the learnable soft VLAD (eq. 9 of the paper).

    R_b[k, :] = (1/N_b) sum_n a_nk (f_n - C_k), with a_nk as in :func:`soft_bow`; with
    ``pooling="max"``, R_b[k, j] = max_n a_nk (f_nj - C_kj), formed by NumPy over the
    core's assignments (N K D operations: for multiple-instance data, not large
    collections). Parameters are those of :func:`soft_bow`.

    Returns
    -------
    (n_bags, K * D) array of the features' dtype, k-major (codeword k's residual is
    columns k*D:(k+1)*D); zeros for an empty bag. With return_assignments, the tuple
    (encoding, assignments (N, K)).
    """
    return _forward(_core.soft_vlad, soft_vlad_max, features, offsets, centers, precisions, gamma, n_threads, pooling,
                    return_assignments, assignments_out)


def soft_vlad_backward(features, offsets, centers, precisions, gamma, grad_output, n_threads=None, *,
                       pooling="mean", assignments=None, return_grad_features=False):
    """Gradients of a loss J through :func:`soft_vlad`.

    Parameters are those of :func:`soft_bow_backward`, with ``grad_output`` (n_bags, K * D)
    and ``assignments`` from ``soft_vlad(..., return_assignments=True)``.

    Returns
    -------
    (grad_centers, grad_precisions, grad_gamma): two (K, D) arrays of the features' dtype
    and a Python float; with return_grad_features, also grad_features (N, D) of the
    features' dtype.
    """
    return _backward(_core.soft_vlad_backward, soft_vlad_max_backward, features, offsets, centers, precisions, gamma,
                     grad_output, n_threads, pooling, assignments, return_grad_features)


def _check_nearest_centre_codebook(centers: np.ndarray) -> None:
    """For hard assignment to ``centers`` (K, D): a ValueError when they spread so little
    that squared distances at their scale underflow the dtype, as the estimators' K-Means
    refuses such features."""
    if centers.ndim != 2 or not centers.size:  # the core refuses other shapes, naming the argument
        return
    with np.errstate(over="ignore"):  # a span beyond the dtype's range is no underflow
        spread = float(np.ptp(centers, axis=0).max())
    check_resolvable_distances(spread * spread * centers.shape[1], centers.dtype, lambda: spread, "centers",
                               "the features and centers")  # float's ** raises OverflowError, * gives inf


def bow(features, offsets, centers, n_threads=None) -> np.ndarray:
    """Hard-assignment Bag of Words (Csurka et al. 2004).

    Every feature votes for its nearest centre (Euclidean distance, computed as a matrix
    product: a feature equidistant from two centres may go to either, and which one can
    differ between the core's instruction sets) and each bag's histogram is divided by the
    bag's size.

    Parameters
    ----------
    features : (N, D) float array, the local features of all bags, concatenated.
    offsets : (n_bags + 1,) integer array, offsets[0] == 0, non-decreasing, offsets[-1] == N.
    centers : (K, D) float array, the codewords.
    n_threads : positive int or None (all cores).

    Returns
    -------
    (n_bags, K) array of the features' dtype: the fraction of each bag's features nearest
    to each codeword, so rows sum to 1 (0 for an empty bag).
    """
    features = float_array(features, "features")
    centers = float_array(centers, "centers", features.dtype)
    _check_nearest_centre_codebook(centers)
    return _core.bow(features, as_offsets(offsets), centers, n_threads_arg(n_threads))


def vlad(features, offsets, centers, assignments=None, n_threads=None) -> np.ndarray:
    """VLAD, the Vector of Locally Aggregated Descriptors (Jegou et al. 2010), unnormalised.

    R_b[k, :] = sum_n a_nk (f_n - C_k) over the features f_n of bag b, as VLFeat's
    ``vl_vlad(..., 'Unnormalized')``: no division by the bag size or the mass of a
    codeword, no normalisation (see :mod:`lfagg.normalize` for those).

    Parameters
    ----------
    features : (N, D) float array, the local features of all bags, concatenated.
    offsets : (n_bags + 1,) integer array, offsets[0] == 0, non-decreasing, offsets[-1] == N.
    centers : (K, D) float array, the codewords C.
    assignments : None, or (N, K) non-negative float array of weights a_nk (soft
        assignments, one row per feature). None assigns each feature to its nearest centre
        (Euclidean; a_nk = 1 for that centre, 0 otherwise).
    n_threads : positive int or None (all cores).

    Returns
    -------
    (n_bags, K * D) array of the features' dtype, k-major (codeword k's residual sum is
    columns k*D:(k+1)*D); zeros for an empty bag.
    """
    features = float_array(features, "features")
    dtype = features.dtype
    centers = float_array(centers, "centers", dtype)
    if assignments is not None:
        assignments = float_array(assignments, "assignments", dtype)
    else:
        _check_nearest_centre_codebook(centers)
    return _core.vlad(features, as_offsets(offsets), centers, assignments, n_threads_arg(n_threads))


def fisher_vector(features, offsets, means, variances, weights, n_threads=None, *,
                  with_weights=False) -> np.ndarray:
    """Fisher Vectors of a diagonal Gaussian mixture (Perronnin et al. 2010), as VLFeat's vl_fisher.

    With posteriors q_nk = w_k N(f_n; mu_k, var_k) / sum_k' w_k' N(f_n; mu_k', var_k')
    (computed in log space) and sigma_k = sqrt(var_k), bag b of N_b features gives

        u_k = 1 / (N_b sqrt(w_k))   sum_n q_nk (f_n - mu_k) / sigma_k
        v_k = 1 / (N_b sqrt(2 w_k)) sum_n q_nk ((f_n - mu_k)^2 / sigma_k^2 - 1)

    laid out as VLFeat does: [u_1, ..., u_K, v_1, ..., v_K]; ``with_weights`` appends the
    K gradients with respect to the mixture weights (Sanchez et al. 2013, which VLFeat
    omits), a_k = 1 / (N_b sqrt(w_k)) sum_n (q_nk - w_k). Unlike VLFeat, posteriors below
    1e-6 are not dropped, and an empty bag encodes to zeros instead of NaN.

    Parameters
    ----------
    features : (N, D) float array, the local features of all bags, concatenated.
    offsets : (n_bags + 1,) integer array, offsets[0] == 0, non-decreasing, offsets[-1] == N.
    means : (K, D) float array, the component means mu.
    variances : (K, D) float array, strictly positive diagonal variances.
    weights : (K,) float array, strictly positive mixture weights (normally summing to 1).
    n_threads : positive int or None (all cores).
    with_weights : bool, append the K weight gradients.

    Returns
    -------
    (n_bags, 2 * K * D) array of the features' dtype, (n_bags, 2 * K * D + K) with_weights,
    unnormalised: :func:`lfagg.normalize.improved_fisher_normalize` of it is VLFeat's
    ``vl_fisher(..., 'Improved')``.
    """
    features = float_array(features, "features")
    dtype = features.dtype
    return _core.fisher_vector(features, as_offsets(offsets), float_array(means, "means", dtype),
                               float_array(variances, "variances", dtype), float_array(weights, "weights", dtype),
                               boolean(with_weights, "with_weights"), n_threads_arg(n_threads))
