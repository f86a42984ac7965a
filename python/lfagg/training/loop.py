"""The core training loop of Algorithm 1: joint stochastic gradient descent on the encoder
parameters (centres, precisions, gamma) and a head (e.g. a classifier), each bag
subsampled per step (eq. 5 of the paper).

:func:`train_encoder` is the generic entry point: any differentiable task whose loss is a
function of the bag representations R (a classifier, a regressor, a ranking loss) can
drive the encoder through a head or a plain callable ``loss(R, targets) -> (J, dJ/dR)``.
"""
from __future__ import annotations

import contextlib
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
from .._progress import progress_bar
from .._validation import (as_generator, boolean, check_bags, choice, float_array, n_threads_arg, nonnegative_int,
                           positive_int, positive_real, real_in, verbosity)
from ..encoders.codebook import mean_variance
from ..encoders.soft import SoftEncoder, soft_encoder
from ..store import BagStore
from .optim import OPTIMIZERS, make_optimizer

#: Largest (N, K) matrix of soft assignments a training step keeps from the forward pass
#: for the backward pass (which then costs about half as much); larger batches recompute.
MAX_KEPT_ASSIGNMENTS_BYTES = 256 << 20


class LossFunction:
    """A head without parameters around a callable ``loss(R, targets) -> (loss, dJ/dR)``
    (what :func:`train_encoder` accepts besides heads, see :mod:`lfagg.models.heads`)."""

    params: list = []

    def __init__(self, loss):
        self.loss = loss

    def loss_grad(self, R, targets):
        loss, dR = self.loss(R, targets)
        return float(loss), np.asarray(dR), []


class TrainingDiverged(ValueError, FloatingPointError):
    """The loss or the parameters left the finite numbers, or the loss exploded (beyond a
    head's ``diverged_above``): a learning rate is too large."""

    @classmethod
    def at(cls, why: str, epoch: int, learning_rate: float, head_learning_rate: float | None = None
           ) -> "TrainingDiverged":
        """The error for a training that diverged (``why``) during epoch ``epoch`` (from 0);
        ``head_learning_rate``, when the head learns at another rate, is named too."""
        rates = f"learning_rate ({learning_rate:g})"
        if head_learning_rate is not None and head_learning_rate != learning_rate:
            rates += f" or the classifier's learning rate ({head_learning_rate:g})"
        return cls(f"training diverged ({why}) at epoch {epoch + 1}: lower {rates}")


@dataclass
class TrainResult:
    """Parameters after training and the per-epoch history (lists keyed by name)."""

    centers: np.ndarray
    precisions: np.ndarray
    gamma: float
    history: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SGDSettings:
    """The checked settings of the SGD loop; :meth:`checked` documents them."""

    n_epochs: int = 10
    batch_size: int = 32
    n_samples_per_bag: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    head_learning_rate: float | None = None
    momentum: float = 0.9
    learn_centers: bool = True
    learn_precisions: bool = True
    learn_gamma: bool = False

    @classmethod
    def checked(cls, *, n_epochs=10, batch_size=32, n_samples_per_bag=None, optimizer="adam", learning_rate=1e-3,
                head_learning_rate=None, momentum=0.9, learn_centers=True, learn_precisions=True,
                learn_gamma=False) -> "SGDSettings":
        """Settings from user values; ValueError naming a bad one (see :func:`train_encoder`)."""
        return cls(nonnegative_int(n_epochs, "n_epochs"), positive_int(batch_size, "batch_size"),
                   None if n_samples_per_bag is None else positive_int(n_samples_per_bag, "n_samples_per_bag"),
                   choice(optimizer, "optimizer", OPTIMIZERS), positive_real(learning_rate, "learning_rate"),
                   None if head_learning_rate is None else positive_real(head_learning_rate, "head_learning_rate"),
                   real_in(momentum, "momentum", 0, 1), boolean(learn_centers, "learn_centers"),
                   boolean(learn_precisions, "learn_precisions"), boolean(learn_gamma, "learn_gamma"))


def train_encoder(bags, targets, loss, encoder, centers, precisions, gamma, *, n_epochs: int = 10,
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
        :mod:`lfagg.models.heads`), whose parameters are optimised too, or a callable
        ``loss(R, targets) -> (J, dJ/dR)`` with R (batch, out_dim) float64.
    encoder : "bow" (T1, soft BoW), "vlad" (T2, soft VLAD), "bow_max" / "vlad_max" (T1 /
        T2 with max pooling) or a :class:`lfagg.encoders.SoftEncoder`.
    centers, precisions : (K, D) initial values; gamma : initial positive float.
    n_epochs, batch_size : passes over the bags and bags per step.
    n_samples_per_bag : features drawn (without replacement) from each bag per step, or
        None to use whole bags.
    optimizer : "adam" or "sgd" (with ``momentum``, in [0, 1)).
    learning_rate : step size for log-precisions and log-gamma; the centres' step is this
        times the features' spread (the root of their mean variance per dimension), so it
        is in feature units.
    head_learning_rate : step size of the head's parameters (default learning_rate).
    learn_centers, learn_precisions, learn_gamma : which encoder parameters move;
        precisions and gamma are optimised through their logarithms and stay positive.
    random_state : seed of the bag order and the subsampling.
    verbose : > 0 shows the progress of each epoch on stderr (a tqdm bar on a terminal,
        one line per epoch otherwise).
    on_epoch_end : optional callable(epoch, record, result) -> bool; a record is a dict
        with the epoch's mean "loss", its "time" and the part of it in the encoder's
        forward and backward calls, "encoder_time" (s), that the callable may extend (e.g. validation
        accuracy); returning True stops training.

    Returns
    -------
    TrainResult with float64 centers, precisions (K, D), gamma and history
    {"loss": [...], ...} (one value per epoch for each key of the records).
    """
    n_threads = n_threads_arg(n_threads)
    bags = check_bags(bags, n_threads=n_threads)
    targets = np.asarray(targets)
    if targets.ndim < 1 or len(targets) != len(bags):
        raise ValueError(f"targets must have one row per bag: got shape {targets.shape} for {len(bags)} bags")
    centers = float_array(centers, "centers", np.float64)
    precisions = float_array(precisions, "precisions", np.float64)
    if centers.ndim != 2 or centers.shape[1] != bags.dim or precisions.shape != centers.shape:
        raise ValueError(f"centers and precisions must both have shape (n_codewords, {bags.dim}), got "
                         f"{centers.shape} and {precisions.shape}")
    if not (np.isfinite(centers).all() and np.isfinite(precisions).all() and (precisions > 0).all()):
        raise ValueError("centers must be finite and precisions finite and strictly positive")
    settings = SGDSettings.checked(
        n_epochs=n_epochs, batch_size=batch_size, n_samples_per_bag=n_samples_per_bag, optimizer=optimizer,
        learning_rate=learning_rate, head_learning_rate=head_learning_rate, momentum=momentum,
        learn_centers=learn_centers, learn_precisions=learn_precisions, learn_gamma=learn_gamma)
    if not (hasattr(loss, "loss_grad") or callable(loss)):
        raise TypeError(f"loss must be a head (with loss_grad) or a callable loss(R, targets) -> (J, dJ/dR), "
                        f"got {type(loss).__name__}")
    head = loss if hasattr(loss, "loss_grad") else LossFunction(loss)
    return run_sgd(bags, targets, head, soft_encoder(encoder), centers, precisions, positive_real(gamma, "gamma"),
                   settings, random_state=random_state, n_threads=n_threads, verbose=verbosity(verbose),
                   on_epoch_end=on_epoch_end)


def _feature_scale(bags, n_threads: int = 0) -> float:
    """The local features' spread: the root of their variance per dimension averaged over
    the dimensions (of 100,000 features at most), which scales the centres' learning rate.
    Not the std of all their values pooled, which a dimension far from the others' means
    inflates (one shifted by 1,000 made the centres' steps 1,000x too long)."""
    if isinstance(bags, BagStore):  # a random part of the store; all of it when it holds <= 100,000 features
        sample = bags.sample_features(100_000, random_state=0)
    else:
        sample = np.ascontiguousarray(bags.features[:: max(1, bags.n_features // 100_000)])
    return float(np.sqrt(mean_variance(sample, n_threads))) or 1.0


class _Buffer:
    """One array reused for the soft assignments that every step keeps for its backward
    pass, instead of a new (N, K) array whose pages are zeroed every step (forward and
    backward 1.06x faster at 32 bags x 1,000 x 108, K = 1024, one thread)."""

    def __init__(self):
        self._data = np.empty(0)

    def take(self, shape: tuple[int, int], dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (its content is undefined)."""
        size = shape[0] * shape[1]
        if self._data.size < size or self._data.dtype != dtype:
            self._data = np.empty(size, dtype)
        return self._data[:size].reshape(shape)


def _representable(C, P, g: float, dtype) -> bool:
    """Whether the encoder's parameters (float64) stay finite, and the precisions and gamma
    positive, in the features' dtype, where the kernels use them."""
    with np.errstate(over="ignore", under="ignore"):
        C, P, g = C.astype(dtype), P.astype(dtype), np.asarray(g, dtype)
    return bool(np.isfinite(C).all() and np.isfinite(P).all() and (P > 0).all() and 0 < g < np.inf)


@contextlib.contextmanager
def _diverged_if_overflow(epoch: int, learning_rate: float, head_learning_rate: float | None):
    """A kernel's overflow during training (its input was checked finite) as TrainingDiverged."""
    try:
        yield
    except ValueError as exc:
        if "overflowed" not in str(exc):
            raise
        raise TrainingDiverged.at("the encoding overflowed", epoch, learning_rate, head_learning_rate) from None


def run_sgd(bags, targets: np.ndarray, head, encoder: SoftEncoder, centers, precisions, gamma: float,
            settings: SGDSettings, *, random_state=None, n_threads: int = 0, verbose: int = 0,
            on_epoch_end=None, name: str = "train_encoder") -> TrainResult:
    """:func:`train_encoder` on validated input: bags (finite features), targets (one row
    per bag), a head, a SoftEncoder, checked settings and the core's ``n_threads`` (0: all);
    the progress is reported under ``name``."""
    s = settings
    C = np.array(centers, dtype=np.float64)
    log_p = np.log(np.asarray(precisions, dtype=np.float64))
    log_gamma = np.array([np.log(float(gamma))])
    feature_scale = _feature_scale(bags, n_threads)
    learnable = [(s.learn_centers, C, s.learning_rate * feature_scale), (s.learn_precisions, log_p, s.learning_rate),
                 (s.learn_gamma, log_gamma, s.learning_rate)]
    head_lr = s.learning_rate if s.head_learning_rate is None else s.head_learning_rate
    params = [p for on, p, _ in learnable if on] + list(head.params)
    rates = [lr for on, _, lr in learnable if on] + [head_lr] * len(head.params)
    opt = make_optimizer(s.optimizer, params, rates, s.momentum)

    P0, g0 = np.array(precisions, dtype=np.float64), float(gamma)
    rates_named = (s.learning_rate, head_lr if head.params else None)
    diverged_above = getattr(head, "diverged_above", np.inf)  # a loss no sane step reaches

    def current_precisions_gamma():  # what is not learned stays as given, not exp(log(x))
        with np.errstate(over="ignore", under="ignore"):
            return (np.exp(log_p) if s.learn_precisions else P0,
                    float(np.exp(log_gamma[0])) if s.learn_gamma else g0)

    rng = as_generator(random_state)
    kept = _Buffer()
    n_batches = -(-len(bags) // s.batch_size)
    result = TrainResult(C, *current_precisions_gamma(), {})
    for epoch in range(s.n_epochs):
        started = time.perf_counter()
        order = rng.permutation(len(bags))
        losses, encoder_time = [], 0.0
        with progress_bar(f"{name}: epoch {epoch + 1}/{s.n_epochs}", n_batches, verbose) as bar:
            for i in range(n_batches):
                idx = order[i * s.batch_size:(i + 1) * s.batch_size]
                if s.n_samples_per_bag is None:
                    batch = bags[idx]
                else:  # reads only the sampled rows of the step's bags
                    batch = bags.read_subsampled(idx, s.n_samples_per_bag, rng)
                P, g = current_precisions_gamma()
                keep = batch.n_features * len(C) * batch.features.itemsize <= MAX_KEPT_ASSIGNMENTS_BYTES
                kernels_started = time.perf_counter()
                with _diverged_if_overflow(epoch, *rates_named):
                    if keep:
                        R, A = encoder.forward(batch, C, P, g, n_threads,
                                               assignments_out=kept.take((batch.n_features, len(C)), batch.dtype))
                    else:
                        R, A = encoder.forward(batch, C, P, g, n_threads), None
                encoder_time += time.perf_counter() - kernels_started
                value, dR, head_grads = head.loss_grad(R.astype(np.float64), targets[idx])
                if not np.isfinite(value) or value > diverged_above:
                    raise TrainingDiverged.at(f"loss {value:g}", epoch, *rates_named)
                kernels_started = time.perf_counter()
                with _diverged_if_overflow(epoch, *rates_named):
                    gC, gP, g_gamma = encoder.backward(batch, C, P, g, dR, n_threads, assignments=A)
                encoder_time += time.perf_counter() - kernels_started
                grads = [gC.astype(np.float64), gP * P, np.array([g_gamma * g])]
                try:  # Adam's squared gradients overflow beyond 1e154: its steps would be 0, silently
                    with np.errstate(over="raise"):
                        opt.step([gr for (on, _, _), gr in zip(learnable, grads) if on] + list(head_grads))
                except FloatingPointError:
                    raise TrainingDiverged.at("the gradients overflowed the optimizer", epoch, *rates_named) from None
                # checked after every step: the last one's parameters go on to the caller
                if not (_representable(C, *current_precisions_gamma(), batch.dtype)
                        and all(np.isfinite(p).all() for p in head.params)):
                    raise TrainingDiverged.at("the parameters overflowed", epoch, *rates_named)
                losses.append(value)
                bar.update()
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", refresh=False)
            result.precisions, result.gamma = current_precisions_gamma()
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "time": time.perf_counter() - started, "encoder_time": encoder_time}
            stop = bool(on_epoch_end(epoch, record, result)) if on_epoch_end is not None else False
            if not bar.disable:  # the loss and what on_epoch_end added, when it is a number
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if isinstance(v, numbers.Real)
                                 and k not in ("epoch", "time", "encoder_time")})
        for key, value in record.items():
            result.history.setdefault(key, []).append(value)
        if stop:
            break
    return result
