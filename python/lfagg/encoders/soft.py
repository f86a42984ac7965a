"""The learnable encoders of the paper as small objects over the C++ core: T1, the soft
Bag of Words, and T2, the soft VLAD. Each knows its kernels, its output size and whether
its output is non-negative (what the chi2 feature map needs); the estimators and the
training loop use them instead of branching on a name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._native import core
from .._kernels import run_validated


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
#: The names :func:`lfagg.training.train_encoder` accepts for them.
SOFT_ENCODERS = {"bow": SOFT_BOW, "vlad": SOFT_VLAD}


def soft_encoder(encoder) -> SoftEncoder:
    """``encoder`` itself, or the SoftEncoder named "bow" (T1) or "vlad" (T2)."""
    if isinstance(encoder, SoftEncoder):
        return encoder
    try:
        return SOFT_ENCODERS[encoder]
    except (KeyError, TypeError):
        raise ValueError(f"encoder must be 'bow', 'vlad' or a SoftEncoder, got {encoder!r}") from None
