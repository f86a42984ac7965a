"""The classifier's L2 penalty: checked, or chosen on held-out training examples."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import train_test_split

from .._validation import nonnegative_real
from .heads import RowSpace, SoftmaxRegression, fits_in_row_space


def check_l2(l2) -> float:
    """``l2`` as a float; ValueError unless it is a finite number >= 0."""
    return nonnegative_real(l2, "l2", allow_auto=True)


#: Candidate L2 penalties of ``l2="auto"``, half a decade apart (the inputs are
#: standardised, so one grid fits every representation). It reaches 10: on Table I's
#: widest inputs (3,072 to 13,824 per image) 0.3 classified held-out images 0.7-1.6 points
#: better than 0.1, the strongest penalty of the earlier grid (1e-4 to 1e-1, decades), and
#: FV-64 then chose 1, the edge of a grid that stopped there.
L2_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4)
#: The search along the grid, strongest penalty first, stops once this many penalties in
#: a row classify worse than the best so far: weaker penalties fit more slowly (500 L-BFGS
#: iterations at 1e-4) and, past the best, only fit the training set more closely.
L2_PATIENCE = 2
#: The penalty of ``l2="auto"`` when too few examples are given to hold any out.
L2_FEW_EXAMPLES = 1e-2


def select_l2(X: np.ndarray, y: np.ndarray, n_classes: int, grid=L2_GRID, validation_fraction: float = 0.2,
              random_state=0, n_threads: int = 1, return_weights: bool = False):
    """The penalty of ``grid`` whose :class:`SoftmaxRegression`, fitted on the other rows
    of (X, y), best classifies ``max(n_classes, validation_fraction * n)`` held-out rows
    (stratified when every class has two rows or more); ties go to the larger penalty.
    Penalties are fitted from the strongest down, each from the previous solution, until
    :data:`L2_PATIENCE` in a row classify worse than the best. With fewer than
    ``max(n_classes, validation_fraction * n)`` plus two rows, :data:`L2_FEW_EXAMPLES` and
    a warning.

    With many inputs per training example a weak penalty lets the classifier memorise
    its training set (on 4,000 CIFAR-10 images with T1-1024, l2 = 1e-4 gave 99.7%
    training and 43% validation accuracy, l2 = 1e-2 49%) and then leaves a learned
    encoder almost no gradient.

    Parameters
    ----------
    X : (n, n_inputs) float array; y : (n,) int class indices in [0, n_classes).
    grid : candidate penalties (finite floats >= 0).
    random_state : int, seeds the split.
    n_threads : threads of each fit's L-BFGS evaluations (0: all cores); the choice does
        not depend on them.
    return_weights : also return the chosen penalty's weights, a start for the fit on all
        the rows.

    Returns
    -------
    float, the chosen penalty; with ``return_weights`` (penalty, (W, b)), W (n_inputs,
    n_classes) and b (n_classes,) float64 on inputs standardised by the training rows'
    statistics, or (L2_FEW_EXAMPLES, None) when too few rows were given.
    """
    grid = sorted((check_l2(value) for value in grid), reverse=True)  # ties go to the larger penalty
    if not grid:
        raise ValueError("grid must hold at least one penalty")
    y = np.asarray(y)
    n_val = max(n_classes, int(round(validation_fraction * len(y))))
    if len(y) - n_val < 2:
        warnings.warn(f"{len(y)} training examples are too few to choose l2 on held-out ones: "
                      f"l2={L2_FEW_EXAMPLES:g}", stacklevel=2)
        return (L2_FEW_EXAMPLES, None) if return_weights else L2_FEW_EXAMPLES
    stratify = y if np.bincount(y, minlength=n_classes)[np.unique(y)].min() >= 2 else None
    train, val = train_test_split(np.arange(len(y)), test_size=n_val, stratify=stratify, random_state=random_state)
    X_train = X[train]  # one copy: for a T2 row it is 16,000 x 6,912 float64
    clf = SoftmaxRegression(X.shape[1], n_classes)
    clf.fit_scaler(X_train)
    Z_train, Z_val = (X_train - clf.mean) / clf.scale, (X[val] - clf.mean) / clf.scale
    del X_train
    space = RowSpace(Z_train) if fits_in_row_space(Z_train) else None  # one basis for every penalty
    best, best_accuracy, worse = None, -1.0, 0
    for l2 in grid:  # each fit starts from the previous, more strongly penalised, solution
        clf.l2 = l2
        clf._fit_standardized(Z_train, y[train], n_threads=n_threads, space=space)
        accuracy = float(np.mean(np.argmax(clf.standardized_logits(Z_val), axis=1) == y[val]))
        if accuracy > best_accuracy:
            best, best_accuracy, weights = l2, accuracy, (clf.W.copy(), clf.b.copy())
        worse = worse + 1 if accuracy < best_accuracy else 0
        if worse == L2_PATIENCE:
            break
    return (best, weights) if return_weights else best
