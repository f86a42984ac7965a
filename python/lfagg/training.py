"""The core training loop of Algorithm 1: joint stochastic gradient descent on the encoder
parameters (centres, precisions, gamma) and a head (e.g. a classifier), each bag
subsampled per step (eq. 5 of the paper).

:func:`train_encoder` is the generic entry point: any differentiable task whose loss is a
function of the bag representations R (a classifier, a regressor, a ranking loss) can
drive the encoder through a head or a plain callable ``loss(R, targets) -> (J, dJ/dR)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import ops
from ._bags import as_bags
from ._progress import EpochProgress
from .heads import LossFunction
from .optim import make_optimizer

#: encoder name -> (forward, backward) kernels of lfagg.ops
ENCODERS = {
    "bow": (ops.soft_bow, ops.soft_bow_backward),
    "vlad": (ops.soft_vlad, ops.soft_vlad_backward),
}


#: Largest (N, K) matrix of soft assignments a training step keeps from the forward pass
#: for the backward pass (which then costs about half as much); larger batches recompute.
MAX_KEPT_ASSIGNMENTS_BYTES = 256 << 20


def _kernels(encoder: str):
    try:
        return ENCODERS[encoder]
    except KeyError:
        raise ValueError(f"encoder must be one of {sorted(ENCODERS)}, got {encoder!r}") from None


def encode(bags, encoder: str, centers, precisions, gamma, n_threads=None) -> np.ndarray:
    """The representation of every bag: (n_bags, K) for "bow" (T1), (n_bags, K*D) for "vlad" (T2)."""
    bags = as_bags(bags)
    forward, _ = _kernels(encoder)
    return forward(bags.features, bags.offsets, centers, precisions, gamma, n_threads)


@dataclass
class TrainResult:
    """Parameters after training and the per-epoch history (lists keyed by name)."""

    centers: np.ndarray
    precisions: np.ndarray
    gamma: float
    history: dict = field(default_factory=dict)


def train_encoder(bags, targets, loss, encoder: str, centers, precisions, gamma, *, n_epochs: int = 10,
                  batch_size: int = 32, n_samples_per_bag: int | None = None, optimizer: str = "adam",
                  learning_rate: float = 1e-3, head_learning_rate: float | None = None,
                  learn_centers: bool = True, learn_precisions: bool = True, learn_gamma: bool = False,
                  momentum: float = 0.9, random_state=None, n_threads=None, verbose: int = 0,
                  on_epoch_end=None) -> TrainResult:
    """Learn encoder parameters by backpropagating ``loss`` (the SGD loop of Algorithm 1).

    Parameters
    ----------
    bags : Bags or list of (N_i, D) arrays.
    targets : array of n_bags rows; ``targets[batch]`` is passed to the loss.
    loss : a head (``params`` list and ``loss_grad(R, targets) -> (J, dJ/dR, grads)``, see
        :mod:`lfagg.heads`), whose parameters are optimised too, or a callable
        ``loss(R, targets) -> (J, dJ/dR)`` with R (batch, out_dim) float64.
    encoder : "bow" (T1, soft BoW) or "vlad" (T2, soft VLAD).
    centers, precisions : (K, D) initial values; gamma : initial positive float.
    n_epochs, batch_size : passes over the bags and bags per step.
    n_samples_per_bag : features drawn (without replacement) from each bag per step, or
        None to use whole bags.
    optimizer : "adam" or "sgd" (with ``momentum``).
    learning_rate : step size for log-precisions and log-gamma; the centres' step is this
        times the standard deviation of the features, so it is in feature units.
    head_learning_rate : step size of the head's parameters (default learning_rate).
    learn_centers, learn_precisions, learn_gamma : which encoder parameters move;
        precisions and gamma are optimised through their logarithms and stay positive.
    random_state : seed of the bag order and the subsampling.
    verbose : > 0 prints a progress bar per epoch on stderr.
    on_epoch_end : optional callable(epoch, record, result) -> bool; a record is a dict
        with the epoch's mean "loss" and "time" (s) that the callable may extend (e.g. validation
        accuracy); returning True stops training.

    Returns
    -------
    TrainResult with float64 centers, precisions (K, D), gamma and history
    {"loss": [...], ...} (one value per epoch for each key of the records).
    """
    bags = as_bags(bags)
    targets = np.asarray(targets)
    if len(targets) != len(bags):
        raise ValueError(f"targets must have one row per bag: {len(targets)} targets for {len(bags)} bags")
    if not (isinstance(n_epochs, int) and n_epochs >= 0):
        raise ValueError(f"n_epochs must be a non-negative integer, got {n_epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    head = loss if hasattr(loss, "loss_grad") else LossFunction(loss)
    forward, backward = _kernels(encoder)

    C = np.array(centers, dtype=np.float64)
    log_p = np.log(np.asarray(precisions, dtype=np.float64))
    log_gamma = np.array([np.log(float(gamma))])
    feature_scale = float(np.std(bags.features[:: max(1, bags.n_features // 100_000)])) or 1.0
    learnable = [(learn_centers, C, learning_rate * feature_scale), (learn_precisions, log_p, learning_rate),
                 (learn_gamma, log_gamma, learning_rate)]
    head_lr = learning_rate if head_learning_rate is None else head_learning_rate
    params = [p for on, p, _ in learnable if on] + list(head.params)
    rates = [lr for on, _, lr in learnable if on] + [head_lr] * len(head.params)
    opt = make_optimizer(optimizer, params, rates, momentum)

    rng = np.random.default_rng(random_state)
    n_batches = -(-len(bags) // batch_size)
    progress = EpochProgress(n_epochs, n_batches, verbose > 0)
    result = TrainResult(C, np.exp(log_p), float(np.exp(log_gamma[0])), {})
    for epoch in range(n_epochs):
        progress.start_epoch()
        started = time.perf_counter()
        order = rng.permutation(len(bags))
        losses = []
        for i in range(n_batches):
            idx = order[i * batch_size:(i + 1) * batch_size]
            batch = bags[idx]
            if n_samples_per_bag is not None:
                batch = batch.subsample(n_samples_per_bag, rng)
            P, g = np.exp(log_p), float(np.exp(log_gamma[0]))
            keep = batch.n_features * len(C) * batch.features.itemsize <= MAX_KEPT_ASSIGNMENTS_BYTES
            out = forward(batch.features, batch.offsets, C, P, g, n_threads, return_assignments=keep)
            R, A = out if keep else (out, None)
            R = R.astype(np.float64)
            value, dR, head_grads = head.loss_grad(R, targets[idx])
            if not np.isfinite(value):
                raise FloatingPointError(f"training diverged (loss {value}) at epoch {epoch + 1}: "
                                         "lower the learning rate")
            gC, gP, g_gamma = backward(batch.features, batch.offsets, C, P, g, dR, n_threads, assignments=A)
            grads = [gC.astype(np.float64), gP * P, np.array([g_gamma * g])]
            opt.step([gr for (on, _, _), gr in zip(learnable, grads) if on] + list(head_grads))
            losses.append(value)
            progress.update(epoch, i + 1, float(np.mean(losses)))
        result.precisions, result.gamma = np.exp(log_p), float(np.exp(log_gamma[0]))
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                  "time": time.perf_counter() - started}
        stop = bool(on_epoch_end(epoch, record, result)) if on_epoch_end is not None else False
        for key, value in record.items():
            result.history.setdefault(key, []).append(value)
        progress.end_epoch(epoch, record)
        if stop:
            break
    return result
