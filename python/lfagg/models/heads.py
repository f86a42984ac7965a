"""Differentiable heads trained jointly with an encoder: they map a batch of bag
representations R to a loss and return dJ/dR plus the gradients of their own parameters.

A head has ``params`` (list of float64 arrays updated in place by the optimiser) and
``loss_grad(R, targets) -> (loss, dJ/dR, [grad per param])``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from .._native import core
from .._threads import single_threaded_blas


#: The floor of an input's scale, relative to the typical one: a column nearly constant
#: on the initial representation (a soft VLAD codeword that hardly any feature reaches:
#: half of the columns of T2-16 on Elephant had standard deviations below 1e-45) must not
#: be divided by its tiny deviation, or its values grow by up to 1e12 once the encoder
#: moves, L-BFGS stalls (500 iterations) and the encoder's gradients through it explode.
MIN_RELATIVE_SCALE = 1e-3

#: Inputs whose spread is at most this fraction of their magnitude (root mean square) in
#: every column are constant but for rounding (float32's resolution is 6e-8): their scale
#: is 1. Divided by their rounding noise (standard deviations of 1e-17 when every bag had
#: the same max-pooled representation), the first step of the encoder blew them up by
#: 1e16 and every learning rate "diverged".
ROUNDING_SPREAD = 1e-6

#: Inputs per block of a full-batch evaluation (whole rows, at least 64): blocks fixed by
#: the inputs' shape, not the threads, so their sums, added in order, are the same for any
#: number of threads. Blocks of a million inputs keep the products' share of the time high
#: (blocks of 256 rows of 192 inputs spent most of theirs in Python's per-block overhead).
BLOCK_INPUTS = 1 << 20


#: The wide-input fit (see :class:`RowSpace`) takes its basis from the eigendecomposition
#: of Z Z^T when every eigenvalue it keeps is at least eps / ROW_SPACE_RTOL times the largest
#: (the basis is then orthonormal to about n * ROW_SPACE_RTOL at worst; 6e-8 measured at
#: that edge; on Elephant's inner folds the smallest eigenvalues were 1e-10 to 1e-8 of the
#: largest); otherwise from a Householder QR of Z^T, 23x slower at 14,720 x 144 (T2-64 on
#: those folds, where the QR was 45% of LearnedVLADCV's search).
ROW_SPACE_RTOL = 1e-6


class RowSpace:
    """An orthonormal basis Q (n_inputs, r) of the space spanned by the rows of Z (n,
    n_inputs), r <= n, and the inputs ``inputs`` = Z Q (n, r).

    Q is Z^T V L^(-1/2) for the eigenvectors V of Z Z^T whose eigenvalues L are not null
    (standardised inputs have at least one null: their rows sum to zero), never formed: a
    product with it is two with Z. Dropping the null ones, at most 10 n eps of the largest,
    leaves out directions along which Z's rows spread by at most sqrt(10 n eps) of their
    largest spread (7e-7 at n = 144), which the penalised fit would have all but zeroed.
    When an eigenvalue lies between the null ones and ROW_SPACE_RTOL's bound, Q is that of
    a thin QR of Z^T instead (r = n). Z is used in float64; ValueError unless it is finite."""

    def __init__(self, Z: np.ndarray):
        Z = np.asarray(Z, dtype=np.float64)  # float32 would blur the null eigenvalues
        gram = Z @ Z.T
        if not np.all(np.isfinite(gram)):
            raise ValueError("the classifier's inputs must be finite (they contain NaN or infinity, or overflow)")
        eigenvalues, V = np.linalg.eigh(gram)
        eps, largest = np.finfo(np.float64).eps, max(eigenvalues[-1], 0.0)
        kept = eigenvalues > 10 * len(Z) * eps * largest  # above the eigensolver's rounding of a 0
        self._Z, self._Q = Z, None
        if largest > 0 and np.all(eigenvalues[kept] > largest * eps / ROW_SPACE_RTOL):
            root = np.sqrt(eigenvalues[kept])
            self._coefficients, self.inputs = V[:, kept] / root, V[:, kept] * root  # Q = Z^T coefficients
        else:
            self._Q, R = np.linalg.qr(Z.T)
            self.inputs = np.ascontiguousarray(R.T)

    def coordinates(self, W: np.ndarray) -> np.ndarray:
        """Q^T W: (r, c) for W (n_inputs, c)."""
        return self._Q.T @ W if self._Q is not None else self._coefficients.T @ (self._Z @ W)

    def expand(self, B: np.ndarray) -> np.ndarray:
        """Q B: (n_inputs, c) for B (r, c)."""
        return self._Q @ B if self._Q is not None else self._Z.T @ (self._coefficients @ B)


def fits_in_row_space(Z: np.ndarray) -> bool:
    """Whether a fit on the (n, n_inputs) inputs Z runs in their :class:`RowSpace`: when
    the inputs outnumber the rows more than twice."""
    return Z.shape[1] > 2 * Z.shape[0]


def block_rows(n_inputs: int) -> int:
    """Rows per block of a full-batch evaluation on ``n_inputs`` inputs."""
    return max(64, BLOCK_INPUTS // max(n_inputs, 1))


class SoftmaxRegression:
    """Multinomial logistic regression (eq. 10 of the paper) on fixed-scale inputs.

    logits = ((X - mean) / scale) W + b; J = mean cross-entropy + l2 / 2 * ||W||^2.
    ``mean`` and ``scale`` are frozen (set by :meth:`fit_scaler`) so that SGD and L-BFGS
    see standardised inputs while the encoder keeps learning.

    Parameters
    ----------
    n_inputs, n_classes : int.
    l2 : float >= 0, the weight decay of W (not of b).
    """

    def __init__(self, n_inputs: int, n_classes: int, l2: float = 1e-4):
        self.l2 = l2
        self.W = np.zeros((n_inputs, n_classes))
        self.b = np.zeros(n_classes)
        self.mean = np.zeros(n_inputs)
        self.scale = np.ones(n_inputs)

    @property
    def params(self):
        return [self.W, self.b]

    @property
    def diverged_above(self) -> float:
        """A loss no sane training step reaches, even on a mini-batch of one bag misclassified
        by the wide margins of a penalty-free fit (a few thousand): a million times that of
        W = 0, b = 0 (log n_classes, which the fitted W0 is below). A runaway passes it within
        a few steps (1e26, 1e57, ...)."""
        return 1e6 * float(np.log(self.W.shape[1]))

    def fit_scaler(self, X: np.ndarray) -> None:
        """Freeze the input standardisation to the statistics of X (n, n_inputs): the
        columns' means, and their standard deviations floored at :data:`MIN_RELATIVE_SCALE`
        times the root mean square of them all (1 when every column is constant, to within
        :data:`ROUNDING_SPREAD` of the inputs' magnitude)."""
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        typical = float(np.sqrt(np.mean(np.square(std)))) if std.size else 0.0
        magnitude = np.sqrt(typical ** 2 + float(np.mean(np.square(self.mean)))) if std.size else 0.0  # RMS of X
        varies = typical > ROUNDING_SPREAD * magnitude
        self.scale = np.maximum(std, MIN_RELATIVE_SCALE * typical) if varies else np.ones_like(std)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, n_inputs) -> (n, n_classes) float64 logits."""
        return self.standardized_logits((X - self.mean) / self.scale)

    def standardized_logits(self, Z: np.ndarray) -> np.ndarray:
        """(n, n_classes) logits of standardised inputs Z (n, n_inputs)."""
        return Z @ self.W + self.b

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """J of the inputs X (n, n_inputs) and class indices y (n,), over blocks of rows."""
        return self._full_batch_loss_grad((X - self.mean) / self.scale, y)[0]

    def loss_grad(self, X: np.ndarray, y: np.ndarray):
        """Loss, dJ/dX (n, n_inputs) and [dJ/dW, dJ/db] for class indices y (n,)."""
        loss, dlogits, grads = self._standardized_loss_grad((X - self.mean) / self.scale, y)
        return loss, (dlogits @ self.W.T) / self.scale, grads

    def _standardized_loss_grad(self, Z: np.ndarray, y: np.ndarray):
        """Loss, dJ/dlogits and [dJ/dW, dJ/db] for standardised inputs Z (n, n_inputs)."""
        n = len(y)
        total, dlogits = self._cross_entropy(Z, y)
        dlogits /= n
        return total / n + self._penalty(), dlogits, [Z.T @ dlogits + self.l2 * self.W, dlogits.sum(axis=0)]

    def _cross_entropy(self, Z: np.ndarray, y: np.ndarray):
        """The summed cross-entropy of standardised inputs Z (n, n_inputs) and its
        gradient with respect to the logits, (n, n_classes) float64."""
        logp = log_softmax(self.standardized_logits(Z), axis=1)
        rows = np.arange(len(y))
        dlogits = np.exp(logp)
        dlogits[rows, y] -= 1
        return -logp[rows, y].sum(), dlogits

    def _penalty(self) -> float:
        with np.errstate(over="ignore"):  # an infinite loss: training reports it as diverged
            return 0.5 * self.l2 * np.sum(self.W ** 2)

    def _full_batch_loss_grad(self, Z: np.ndarray, y: np.ndarray, map_blocks=map):
        """:meth:`_standardized_loss_grad`'s loss and [dJ/dW, dJ/db], Z (n, n_inputs,
        float64 or float32) cast to float64 one block of :func:`block_rows` rows at a
        time, never whole: each block gives its logits and its share of the gradients;
        ``map_blocks`` (``map`` or a thread pool's) runs the blocks, whose sums are added
        in order."""
        rows = block_rows(Z.shape[1])

        def block_sums(start):
            Zb, yb = Z[start:start + rows].astype(np.float64, copy=False), y[start:start + rows]
            total, dlogits = self._cross_entropy(Zb, yb)
            return total, Zb.T @ dlogits, dlogits.sum(axis=0)

        total, dW, db = 0.0, 0.0, 0.0
        for block_total, block_dW, block_db in map_blocks(block_sums, range(0, len(y), rows)):
            total, dW, db = total + block_total, dW + block_dW, db + block_db
        n = len(y)
        return total / n + self._penalty(), [dW / n + self.l2 * self.W, db / n]

    def fit(self, X: np.ndarray, y: np.ndarray, max_iter: int = 500, n_threads: int = 1) -> None:
        """Minimise J over (W, b) with L-BFGS from the current values (the full-batch
        steps of Algorithm 1: W0 and the final fine-tuning), each evaluation on
        ``n_threads`` threads (0: all cores); the result does not depend on them."""
        # the scaler is frozen during the fit
        self._fit_standardized((X - self.mean) / self.scale, y, max_iter, n_threads)

    def _fit_standardized(self, Z: np.ndarray, y: np.ndarray, max_iter: int = 500, n_threads: int = 1,
                          space: RowSpace | None = None) -> None:
        """:meth:`fit` on standardised inputs Z (n, n_inputs).

        With many more inputs than examples (a soft VLAD of 16 x 230 on 180 bags;
        :func:`fits_in_row_space`) the fit runs in the row space of Z: for an orthonormal
        basis Q of it (:class:`RowSpace`; ``space`` when the caller has it already, as
        :func:`lfagg.models.l2.select_l2` for its penalties), W = Q B gives Z W = (Z Q) B and
        ||W|| = ||B|| on that space, so the fit over B on
        the r <= n inputs Z Q is the same convex problem up to the rounding RowSpace
        describes (the penalty zeroes W's part outside that space; with l2 = 0 that part
        is kept as it is) at a fraction of the cost."""
        n, n_inputs = Z.shape
        if fits_in_row_space(Z):
            space = space or RowSpace(Z)
            reduced = SoftmaxRegression(space.inputs.shape[1], self.W.shape[1], self.l2)
            reduced.W[...], reduced.b[...] = space.coordinates(self.W), self.b
            reduced._fit_standardized(space.inputs, y, max_iter, n_threads)
            outside = self.W - space.expand(space.coordinates(self.W)) if self.l2 == 0 else 0.0
            self.W[...], self.b[...] = space.expand(reduced.W) + outside, reduced.b
            return
        shapes = [p.shape for p in self.params]
        sizes = [p.size for p in self.params]

        def unpack(theta):
            return [t.reshape(s) for t, s in zip(np.split(theta, np.cumsum(sizes)[:-1]), shapes)]

        n_threads = min(core.max_threads() if n_threads == 0 else n_threads, -(-len(y) // block_rows(n_inputs)))
        with single_threaded_blas(), ThreadPoolExecutor(n_threads) as pool:
            map_blocks = map if n_threads == 1 else pool.map

            def objective(theta):
                self.W[...], self.b[...] = unpack(theta)
                loss, grads = self._full_batch_loss_grad(Z, y, map_blocks)
                return loss, np.concatenate([g.ravel() for g in grads])

            theta0 = np.concatenate([p.ravel() for p in self.params])
            result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        self.W[...], self.b[...] = unpack(result.x)


class MappedHead:
    """A fixed differentiable feature map (e.g. the chi2 map) followed by a head."""

    def __init__(self, feature_map, head):
        self.feature_map, self.head = feature_map, head

    @property
    def params(self):
        return self.head.params

    @property
    def diverged_above(self) -> float:
        return getattr(self.head, "diverged_above", np.inf)

    def loss_grad(self, R: np.ndarray, targets: np.ndarray):
        loss, d_mapped, grads = self.head.loss_grad(self.feature_map.transform(R), targets)
        return loss, self.feature_map.backward(R, d_mapped), grads
