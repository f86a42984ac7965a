"""Differentiable heads trained jointly with an encoder: they map a batch of bag
representations R to a loss and return dJ/dR plus the gradients of their own parameters.

A head has ``params`` (list of float64 arrays updated in place by the optimiser) and
``loss_grad(R, targets) -> (loss, dJ/dR, [grad per param])``.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits


def single_threaded_blas():
    """Context limiting BLAS to one thread. Outside lfagg's own kernels, Algorithm 1 makes
    thousands of small or thin matrix products (classifier steps, L-BFGS evaluations,
    K-Means++ distances), where BLAS threads cost more than they save; on a machine
    shared with other processes, OpenBLAS's spinning threads made LearnedBoW's fit on
    2,000 CIFAR-10 bags take 61 s instead of 8 s."""
    return threadpool_limits(limits=1, user_api="blas")


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

    def fit_scaler(self, X: np.ndarray) -> None:
        """Freeze the input standardisation to the statistics of X (n, n_inputs)."""
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale = np.where(std > 1e-12 * max(1.0, std.max()), std, 1.0)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, n_inputs) -> (n, n_classes) float64 logits."""
        return ((X - self.mean) / self.scale) @ self.W + self.b

    def loss_grad(self, X: np.ndarray, y: np.ndarray):
        """Loss, dJ/dX (n, n_inputs) and [dJ/dW, dJ/db] for class indices y (n,)."""
        loss, dlogits, grads = self._standardized_loss_grad((X - self.mean) / self.scale, y)
        return loss, (dlogits @ self.W.T) / self.scale, grads

    def _standardized_loss_grad(self, Z: np.ndarray, y: np.ndarray):
        """Loss, dJ/dlogits and [dJ/dW, dJ/db] for standardised inputs Z (n, n_inputs)."""
        logp = log_softmax(Z @ self.W + self.b, axis=1)
        n = len(y)
        loss = -logp[np.arange(n), y].mean() + 0.5 * self.l2 * np.sum(self.W ** 2)
        dlogits = np.exp(logp)
        dlogits[np.arange(n), y] -= 1
        dlogits /= n
        return loss, dlogits, [Z.T @ dlogits + self.l2 * self.W, dlogits.sum(axis=0)]

    def fit(self, X: np.ndarray, y: np.ndarray, max_iter: int = 500) -> None:
        """Minimise J over (W, b) with L-BFGS from the current values (the full-batch
        steps of Algorithm 1: W0 and the final fine-tuning)."""
        self._fit_standardized((X - self.mean) / self.scale, y, max_iter)  # the scaler is frozen during the fit

    def _fit_standardized(self, Z: np.ndarray, y: np.ndarray, max_iter: int = 500) -> None:
        """:meth:`fit` on standardised inputs Z (n, n_inputs)."""
        shapes = [p.shape for p in self.params]
        sizes = [p.size for p in self.params]

        def unpack(theta):
            return [t.reshape(s) for t, s in zip(np.split(theta, np.cumsum(sizes)[:-1]), shapes)]

        def objective(theta):
            self.W[...], self.b[...] = unpack(theta)
            loss, _, grads = self._standardized_loss_grad(Z, y)
            return loss, np.concatenate([g.ravel() for g in grads])

        theta0 = np.concatenate([p.ravel() for p in self.params])
        with single_threaded_blas():
            result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        self.W[...], self.b[...] = unpack(result.x)


def check_l2(l2) -> float:
    """``l2`` as a float; ValueError unless it is a finite number >= 0."""
    if isinstance(l2, numbers.Real) and not isinstance(l2, bool) and np.isfinite(l2) and l2 >= 0:
        return float(l2)
    raise ValueError(f"l2 must be 'auto' or a finite number >= 0, got {l2!r}")


#: Candidate L2 penalties of ``l2="auto"`` (the inputs are standardised, so one grid fits
#: every representation).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
#: The penalty of ``l2="auto"`` when too few examples are given to hold any out.
L2_FEW_EXAMPLES = 1e-2


def select_l2(X: np.ndarray, y: np.ndarray, n_classes: int, grid=L2_GRID, validation_fraction: float = 0.2,
              random_state=0) -> float:
    """The penalty of ``grid`` whose :class:`SoftmaxRegression`, fitted on the other rows
    of (X, y), best classifies ``max(n_classes, validation_fraction * n)`` held-out rows
    (stratified when every class has two rows or more); ties go to the larger penalty.
    With fewer than that plus two rows, :data:`L2_FEW_EXAMPLES` and a warning.

    With many inputs per training example a weak penalty lets the classifier memorise
    its training set (on 4,000 CIFAR-10 images with T1-1024, l2 = 1e-4 gave 99.7%
    training and 43% validation accuracy, l2 = 1e-2 49%) and then leaves a learned
    encoder almost no gradient.

    Parameters
    ----------
    X : (n, n_inputs) float array; y : (n,) int class indices in [0, n_classes).
    grid : candidate penalties (finite floats >= 0).
    random_state : int, seeds the split.

    Returns
    -------
    float, the chosen penalty.
    """
    grid = sorted((check_l2(value) for value in grid), reverse=True)  # ties go to the larger penalty
    if not grid:
        raise ValueError("grid must hold at least one penalty")
    y = np.asarray(y)
    n_val = max(n_classes, int(round(validation_fraction * len(y))))
    if len(y) - n_val < 2:
        warnings.warn(f"{len(y)} training examples are too few to choose l2 on held-out ones: "
                      f"l2={L2_FEW_EXAMPLES:g}", stacklevel=2)
        return L2_FEW_EXAMPLES
    stratify = y if np.bincount(y, minlength=n_classes)[np.unique(y)].min() >= 2 else None
    train, val = train_test_split(np.arange(len(y)), test_size=n_val, stratify=stratify, random_state=random_state)
    X_train = X[train]  # one copy: for a T2 row it is 16,000 x 6,912 float64
    clf = SoftmaxRegression(X.shape[1], n_classes)
    clf.fit_scaler(X_train)
    Z_train, Z_val = (X_train - clf.mean) / clf.scale, (X[val] - clf.mean) / clf.scale
    del X_train
    best, best_accuracy = None, -1.0
    for l2 in grid:  # each fit starts from the previous, more strongly penalised, solution
        clf.l2 = l2
        clf._fit_standardized(Z_train, y[train])
        accuracy = float(np.mean(np.argmax(Z_val @ clf.W + clf.b, axis=1) == y[val]))
        if accuracy > best_accuracy:
            best, best_accuracy = l2, accuracy
    return best


def resolve_l2(l2, X: np.ndarray, y: np.ndarray, n_classes: int, random_state=0) -> float:
    """The penalty ``l2`` stands for: :func:`select_l2` on (X, y) for "auto", else ``l2``
    checked by :func:`check_l2`."""
    if isinstance(l2, str) and l2 == "auto":
        return select_l2(X, y, n_classes, random_state=random_state)
    return check_l2(l2)


class MappedHead:
    """A fixed differentiable feature map (e.g. the chi2 map) followed by a head."""

    def __init__(self, feature_map, head):
        self.feature_map, self.head = feature_map, head

    @property
    def params(self):
        return self.head.params

    def loss_grad(self, R: np.ndarray, targets: np.ndarray):
        loss, d_mapped, grads = self.head.loss_grad(self.feature_map.transform(R), targets)
        return loss, self.feature_map.backward(R, d_mapped), grads


class LossFunction:
    """A head without parameters around a callable ``loss(R, targets) -> (loss, dJ/dR)``."""

    params: list = []

    def __init__(self, loss):
        self.loss = loss

    def loss_grad(self, R, targets):
        loss, dR = self.loss(R, targets)
        return float(loss), np.asarray(dR), []
