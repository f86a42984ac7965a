"""PyTorch layers on lfagg's C++ core: the soft BoW (T1) and soft VLAD (T2) of ragged bags,
differentiable with respect to the local features, the centres, the precisions and gamma.

Bags are given as ``(features (N, D), offsets (n_bags + 1,))`` (bag b is
``features[offsets[b]:offsets[b + 1]]``) or as one of torch's jagged nested tensors
(``torch.nested.nested_tensor(list_of_(n_i, D)_tensors, layout=torch.jagged)``), never
padded: no row of padding is ever counted as a feature, and no N x K x D tensor is ever
built (the core works on blocks of features). CPU tensors only; float32 or float64, the
features and the layer of one dtype. The tensors reach the core without a copy (a
non-contiguous features tensor is made contiguous first) and the core runs without the
GIL on ``torch.get_num_threads()`` threads unless ``n_threads`` says otherwise; results
are bitwise identical for every thread count.

Limits: the layers are differentiable once (differentiating their gradients again, as
``torch.autograd.functional.hessian``, ``jvp`` or a gradient penalty through them does,
raises a RuntimeError); ``torch.func`` transforms (``grad``, ``vmap``, and so
``jacobian(..., vectorize=True)``) and TorchScript do not take them. ``torch.compile``
(``fullgraph=True`` too) and ``torch.export`` trace through them called as
``layer(features, offsets)``: the core's kernels are the custom operators
``torch.ops.lfagg.encode`` / ``encode_backward``; a jagged nested tensor input breaks
the graph (its offsets are read as numbers), and a program exported with a dynamic
number of bags refuses one bag (torch specialises an operator's output dimension away
from 1: export with static shapes, or for batches of two bags or more). Under
``torch.autocast`` half-precision features are computed in the layer's float32, as torch's
float32-only operators are. A NaN or infinite gradient reaching them makes every gradient
they return NaN (``torch.amp.GradScaler`` then skips the step and lowers its scale), except
in the rows of empty bags, which no feature reads; a NaN or infinite feature is an error.
A process forked after lfagg ran on several threads, or with torch loaded (whose threads
share the OpenMP runtime of an lfagg built from source), runs lfagg on one thread (GNU
OpenMP's threads do not survive fork()).

Install with ``pip install "lfagg[torch]"``; lfagg itself never imports torch.
"""
from __future__ import annotations

import math

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError('lfagg.torch needs PyTorch: pip install "lfagg[torch]"') from exc

from . import ops
from ._validation import boolean, choice, n_threads_arg, positive_int, positive_real
from .bags import gather_rows

__all__ = ["SoftBoW", "SoftVLAD", "soft_bow", "soft_vlad", "SoftBoWFunction", "SoftBoWMaxFunction", "SoftVLADFunction",
           "SoftVLADMaxFunction"]


def _numpy(tensor):
    """A NumPy view of a CPU tensor (no copy unless torch holds it as a lazily negated view), for the core."""
    return tensor.detach().resolve_neg().numpy()


class _DifferentiatedOnce(torch.autograd.Function):
    """The first-order gradients of an lfagg Function, passed through unchanged but tied to
    the inputs that need a gradient, so that differentiating them again raises an error
    instead of treating them as constants (a Hessian of zeros)."""

    @staticmethod
    def forward(ctx, n_grads, *tensors):
        return tuple(t.clone() for t in tensors[:n_grads])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("lfagg.torch's layers are differentiable once: their gradients cannot be differentiated "
                           "again (double backward, create_graph=True, torch.autograd.functional.hessian)")


#: the core's kernel pairs by encoder name, for the custom ops below
_KERNELS = {"soft_bow": (ops.soft_bow, ops.soft_bow_backward), "soft_vlad": (ops.soft_vlad, ops.soft_vlad_backward)}


# The core's kernels as torch custom operators, so that torch.compile and torch.export
# trace through the layers (fullgraph) instead of breaking the graph at them: an op
# declares its outputs' shapes (register_fake) and runs on real CPU tensors only. Eager
# calls skip the dispatcher (about 35 us an op) and call the kernel function itself.
# n_threads 0 is torch's count, read when the op runs (get_num_threads cannot be traced).
def _core_args(features, offsets, centers, precisions, gamma, n_threads) -> tuple:
    """The arguments both kernels of an encoder start with, as lfagg.ops takes them."""
    return (_numpy(features), _numpy(offsets), _numpy(centers), _numpy(precisions), float(gamma.detach()),
            n_threads or torch.get_num_threads())


def _encode_kernel(features: torch.Tensor, offsets: torch.Tensor, centers: torch.Tensor, precisions: torch.Tensor,
                   gamma: torch.Tensor, encoder: str, pooling: str, n_threads: int,
                   keep_assignments: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, the (N, K) soft assignments, or a (0, K) tensor when they are not kept)."""
    forward = _KERNELS[encoder][0]
    args = _core_args(features, offsets, centers, precisions, gamma, n_threads)
    if keep_assignments:
        out, assignments = forward(*args, pooling=pooling, return_assignments=True)
        return torch.from_numpy(out), torch.from_numpy(assignments)
    return torch.from_numpy(forward(*args, pooling=pooling)), features.new_empty((0, centers.shape[0]))


# The schemas written out: torch 2.4 reads no string annotations (this module's, under
# `from __future__ import annotations`).
_encode_op = torch.library.custom_op(
    "lfagg::encode", _encode_kernel, mutates_args=(),
    schema="(Tensor features, Tensor offsets, Tensor centers, Tensor precisions, Tensor gamma, str encoder, "
           "str pooling, int n_threads, bool keep_assignments) -> (Tensor, Tensor)")


@_encode_op.register_fake
def _(features, offsets, centers, precisions, gamma, encoder, pooling, n_threads, keep_assignments):
    k = centers.shape[0]
    width = k if encoder == "soft_bow" else k * centers.shape[1]
    return (features.new_empty((offsets.shape[0] - 1, width)),
            features.new_empty((features.shape[0] if keep_assignments else 0, k)))


#: how the core refuses a NaN or infinite grad_output (outside the rows of empty bags)
_NON_FINITE_GRAD = "grad_output contains NaN or infinity"


def _encode_backward_kernel(features: torch.Tensor, offsets: torch.Tensor, centers: torch.Tensor,
                            precisions: torch.Tensor, gamma: torch.Tensor, grad_output: torch.Tensor,
                            assignments: torch.Tensor, encoder: str, pooling: str, n_threads: int,
                            grad_features: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dJ/dF, or a (0, D) tensor unless grad_features, dJ/dC, dJ/dP, dJ/dgamma (0-d));
    assignments: those the forward kept, or (0, K) to recompute them."""
    kept = assignments.shape[0] == features.shape[0]
    *args, n_threads = _core_args(features, offsets, centers, precisions, gamma, n_threads)
    try:
        grads = _KERNELS[encoder][1](*args, _numpy(grad_output.contiguous()), n_threads, pooling=pooling,
                                     assignments=_numpy(assignments) if kept else None,
                                     return_grad_features=grad_features)
    except ValueError as exc:  # the core's own check: a scan in torch would read grad_output once more
        if not str(exc).startswith(_NON_FINITE_GRAD):
            raise
        nan = float("nan")  # a GradScaler's overflow, say: passed on, as torch's own operators pass it
        return (features.new_full((features.shape[0] if grad_features else 0, features.shape[1]), nan),
                centers.new_full(centers.shape, nan), precisions.new_full(precisions.shape, nan),
                gamma.new_full((), nan))
    return (torch.from_numpy(grads[3]) if grad_features else features.new_empty((0, features.shape[1])),
            torch.from_numpy(grads[0]), torch.from_numpy(grads[1]), torch.tensor(grads[2], dtype=gamma.dtype))


_encode_backward_op = torch.library.custom_op(
    "lfagg::encode_backward", _encode_backward_kernel, mutates_args=(),
    schema="(Tensor features, Tensor offsets, Tensor centers, Tensor precisions, Tensor gamma, Tensor grad_output, "
           "Tensor assignments, str encoder, str pooling, int n_threads, bool grad_features) "
           "-> (Tensor, Tensor, Tensor, Tensor)")


@_encode_backward_op.register_fake
def _(features, offsets, centers, precisions, gamma, grad_output, assignments, encoder, pooling, n_threads,
      grad_features):
    return (features.new_empty((features.shape[0] if grad_features else 0, features.shape[1])),
            centers.new_empty(centers.shape), precisions.new_empty(precisions.shape), gamma.new_empty(()))


def _run(op, kernel, *args):
    """``op`` (the custom operator) while torch.compile traces, else its ``kernel`` directly."""
    return op(*args) if torch.compiler.is_compiling() else kernel(*args)


def _autograd_function(name: str, encoder: str, pooling: str, doc: str):
    """A torch.autograd.Function over one of the core's encoders (``encoder``, ``pooling``):
    forward through its kernel, backward through its backward kernel, which also gives
    dJ/dF when the features need a gradient. ``apply(features, offsets, centers,
    precisions, gamma, n_threads, keep_assignments)`` takes checked CPU tensors (see
    :func:`soft_bow`) and n_threads as an int (0: ``torch.get_num_threads()``)."""

    def forward(ctx, features, offsets, centers, precisions, gamma, n_threads, keep_assignments):
        out, assignments = _run(_encode_op, _encode_kernel, features, offsets, centers, precisions, gamma, encoder,
                                pooling, n_threads, keep_assignments)
        # Saved, not a ctx attribute: autograd frees saved tensors after the backward, where
        # an attribute lived (N x K values) as long as anything held the output.
        ctx.save_for_backward(features, offsets, centers, precisions, gamma, assignments)
        ctx.n_threads = n_threads
        return out

    def backward(ctx, grad_output):
        features, offsets, centers, precisions, gamma, assignments = ctx.saved_tensors
        need_features = ctx.needs_input_grad[0]
        grads = list(_run(_encode_backward_op, _encode_backward_kernel, features, offsets, centers, precisions, gamma,
                          grad_output, assignments, encoder, pooling, ctx.n_threads, need_features))
        if not need_features:
            grads[0] = None
        if torch.is_grad_enabled():  # create_graph=True: the gradients must not pass for constants
            inputs = [t for t in (features, centers, precisions, gamma, grad_output) if t.requires_grad]
            given = [g for g in grads if g is not None]
            tied = iter(_DifferentiatedOnce.apply(len(given), *given, *inputs))
            grads = [None if g is None else next(tied) for g in grads]
        return (grads[0], None, *grads[1:], None, None)

    namespace = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc,
                 "__module__": __name__}
    return type(name, (torch.autograd.Function,), namespace)


SoftBoWFunction = _autograd_function(
    "SoftBoWFunction", "soft_bow", "mean",
    "T1 as a torch.autograd.Function; :func:`soft_bow` checks the input and applies it.")
SoftBoWMaxFunction = _autograd_function(
    "SoftBoWMaxFunction", "soft_bow", "max",
    "T1 with max pooling as a torch.autograd.Function; :func:`soft_bow` checks the input and applies it.")
SoftVLADFunction = _autograd_function(
    "SoftVLADFunction", "soft_vlad", "mean",
    "T2 as a torch.autograd.Function; :func:`soft_vlad` checks the input and applies it.")
SoftVLADMaxFunction = _autograd_function(
    "SoftVLADMaxFunction", "soft_vlad", "max",
    "T2 with max pooling as a torch.autograd.Function; :func:`soft_vlad` checks the input and applies it.")


def _jagged_rows(nested):
    """(features (N, D), offsets (n_bags + 1,)) of a jagged nested tensor of (n_i, D) bags.
    One with holes (``lengths()``, as ``torch.nested.narrow`` makes) has its bags' rows
    gathered by ``index_select``, which autograd follows (its ``contiguous()`` loses the
    gradient in torch 2.13); one whose bags span only part of its values
    (``nested_tensor_from_jagged(values, offsets)`` with offsets[0] > 0 or offsets[-1] < N)
    has that part sliced out."""
    if nested.dim() != 3 or nested._ragged_idx != 1:
        raise ValueError("features must be a jagged nested tensor of (n_i, D) bags, ragged in dimension 1; got one "
                         f"of {nested.dim()} dimensions ragged in dimension {nested._ragged_idx}")
    if nested.device.type != "cpu":
        raise ValueError(f"features is on {nested.device}: lfagg.torch runs on CPU tensors (move it with .cpu())")
    values, offsets, lengths = nested.values(), nested.offsets(), nested.lengths()
    if lengths is not None and not (bool((lengths >= 0).all()) and bool((offsets[:-1] >= 0).all())
                                    and bool((offsets[:-1] + lengths <= len(values)).all())):
        raise ValueError(f"features: a jagged nested tensor whose bags (offsets and lengths) lie outside its "
                         f"{len(values)} rows of values")
    if lengths is None:
        first, last = int(offsets[0]), int(offsets[-1])
        if first == 0 and last == len(values):
            return values, offsets
        return values[first:last], offsets - first
    rows, new_offsets = gather_rows(offsets[:-1].numpy().astype(np.int64), lengths.numpy().astype(np.int64))
    return values.index_select(0, torch.from_numpy(rows)), torch.from_numpy(new_offsets)


def _check_inputs(features, offsets, centers, precisions, gamma):
    """(features, offsets) as the core takes them; TypeError/ValueError naming the argument."""
    if getattr(features, "is_nested", False):
        if offsets is not None:
            raise ValueError("offsets must be None when features is a nested tensor (it holds its own)")
        if features.layout != torch.jagged:
            raise ValueError("features must be a jagged nested tensor (layout=torch.jagged), got layout "
                             f"{features.layout}")
        features, offsets = _jagged_rows(features)
    for name, value in (("features", features), ("offsets", offsets), ("centers", centers),
                        ("precisions", precisions), ("gamma", gamma)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.device.type != "cpu":
            raise ValueError(f"{name} is on {value.device}: lfagg.torch runs on CPU tensors (move it with .cpu())")
        if value.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {value.layout} (use .to_dense())")
    if features.dtype not in (torch.float32, torch.float64) or features.dim() != 2:
        raise TypeError(f"features must be a 2-D float32 or float64 tensor (N, D), got {features.dtype} of shape "
                        f"{tuple(features.shape)}")
    for name, value in (("centers", centers), ("precisions", precisions), ("gamma", gamma)):
        if value.dtype != features.dtype:
            raise TypeError(f"{name} is {value.dtype} but features are {features.dtype}: convert one "
                            "(layer.double() / layer.float(), or features.to(dtype))")
    if offsets.dtype not in (torch.int64, torch.int32) or offsets.dim() != 1:
        raise TypeError(f"offsets must be a 1-D int64 or int32 tensor (n_bags + 1,), got {offsets.dtype} of shape "
                        f"{tuple(offsets.shape)}")
    if centers.dim() == 2 and features.shape[1] != centers.shape[1]:  # the input's fault, as a layer sees it
        raise ValueError(f"features have {features.shape[1]} dimensions per row, the centers {centers.shape[1]}: "
                         f"features of shape {tuple(features.shape)}")
    if gamma.dim() != 0:
        raise ValueError(f"gamma must be a 0-d tensor, got shape {tuple(gamma.shape)}")
    return features.contiguous(), offsets.to(torch.int64).contiguous()


def _encode(function, features, offsets, centers, precisions, gamma, n_threads, keep_assignments):
    if features.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled("cpu"):
        features = features.to(centers.dtype)  # autocast's rule for operators that compute in float32
    features, offsets = _check_inputs(features, offsets, centers, precisions, gamma)
    n_threads = 0 if n_threads is None else n_threads_arg(n_threads)  # 0: torch's count when the op runs
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (features, centers, precisions, gamma))
    return function.apply(features, offsets, centers.contiguous(), precisions.contiguous(), gamma, n_threads,
                          boolean(keep_assignments, "keep_assignments") and needs_grad)


def soft_bow(features, offsets, centers, precisions, gamma, n_threads=None, keep_assignments=True, pooling="mean"):
    """T1, the soft Bag of Words of ragged bags, differentiable (the functional form of :class:`SoftBoW`).

    Parameters
    ----------
    features : (N, D) float32/float64 tensor with ``offsets`` (n_bags + 1,) int64 tensor,
        or a jagged nested tensor of (n_i, D) bags with ``offsets=None``.
    centers, precisions : (K, D) tensors of the features' dtype (precisions > 0).
    gamma : 0-d tensor of that dtype, > 0.
    n_threads : None (``torch.get_num_threads()``) or a positive int.
    keep_assignments : keep the (N, K) soft assignments for the backward when a gradient is
        needed (its cost then falls to about one forward; N * K values of memory).
    pooling : "mean" (the paper's T1: the mean of the bag's soft assignments) or "max"
        (each codeword's largest soft assignment in the bag; see :func:`lfagg.ops.soft_bow`).

    Returns
    -------
    (n_bags, K) tensor of the features' dtype, zeros for an empty bag; with the mean
    pooling, every other row sums to 1.
    """
    function = SoftBoWMaxFunction if ops.is_max_pooling(pooling) else SoftBoWFunction
    return _encode(function, features, offsets, centers, precisions, gamma, n_threads, keep_assignments)


def soft_vlad(features, offsets, centers, precisions, gamma, n_threads=None, keep_assignments=True, pooling="mean"):
    """T2, the soft VLAD of ragged bags, differentiable: as :func:`soft_bow`, returning
    (n_bags, K * D), k-major: R_b[k, :] = (1/N_b) sum_n a_nk (f_n - C_k), or with
    ``pooling="max"`` R_b[k, j] = max_n a_nk (f_nj - C_kj) (see :func:`lfagg.ops.soft_vlad`)."""
    function = SoftVLADMaxFunction if ops.is_max_pooling(pooling) else SoftVLADFunction
    return _encode(function, features, offsets, centers, precisions, gamma, n_threads, keep_assignments)


def _device_type(device) -> str | None:
    """torch.device(device).type, None for what torch does not take as a device."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return None


def _first_attribute(obj, names, default):
    return next((getattr(obj, n) for n in names if hasattr(obj, n)), default)


class _SoftEncoderLayer(torch.nn.Module):
    """Parameters ``centers`` (K, D), ``log_precisions`` (K, D) (learned unless
    ``learn_precisions=False``) and ``log_gamma`` (a parameter when ``learn_gamma``, else a
    buffer) and ``pooling``; ``_function`` is the functional form."""

    def __init__(self, n_codewords, dim, *, gamma=1.0, learn_gamma=False, learn_precisions=True,
                 keep_assignments=True, n_threads=None, dtype=None, device=None, pooling="mean"):
        super().__init__()
        if device is not None and _device_type(device) != "cpu":
            raise ValueError(f"device must be 'cpu' (or None): lfagg.torch runs on CPU tensors, got {device!r}")
        self.pooling = choice(pooling, "pooling", ops.POOLINGS)
        n_codewords, dim = positive_int(n_codewords, "n_codewords"), positive_int(dim, "dim")
        gamma = positive_real(gamma, "gamma")
        self.keep_assignments = boolean(keep_assignments, "keep_assignments")
        self.n_threads = None if n_threads is None else n_threads_arg(n_threads)
        dtype = dtype or torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (those the core computes in), got {dtype}")
        # On the CPU whatever torch's default device (a "meta" or "cuda" context), where the core runs
        cpu = dict(dtype=dtype, device="cpu")
        if not 0 < torch.tensor(math.log(gamma), **cpu).exp() < math.inf:
            raise ValueError(f"gamma = {gamma:g} is out of the range of {dtype} (the layer holds it as log_gamma)")
        self.centers = torch.nn.Parameter(torch.empty(n_codewords, dim, **cpu))
        self.log_precisions = torch.nn.Parameter(torch.zeros(n_codewords, dim, **cpu),
                                                 requires_grad=boolean(learn_precisions, "learn_precisions"))
        self.initial_gamma = gamma
        log_gamma = torch.empty((), **cpu)
        if boolean(learn_gamma, "learn_gamma"):
            self.log_gamma = torch.nn.Parameter(log_gamma)
        else:
            self.register_buffer("log_gamma", log_gamma)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Centres drawn from N(0, 1) with torch's generator (``torch.manual_seed``), unit
        precisions, gamma the constructor's (``initial_gamma``): a start for standardised
        features; :meth:`from_estimator` starts from a fitted codebook instead."""
        with torch.no_grad():
            self.centers.normal_()
            self.log_precisions.zero_()
            self.log_gamma.fill_(math.log(self.initial_gamma))

    @property
    def n_codewords(self) -> int:
        """K, from the centres (so also after they are replaced)."""
        return self.centers.shape[0]

    @property
    def dim(self) -> int:
        """D, the local features' dimension, from the centres."""
        return self.centers.shape[1]

    @property
    def gamma(self) -> float:
        return float(self.log_gamma.detach().exp())  # a float: no graph, no warning

    @classmethod
    def from_estimator(cls, estimator, *, gamma=None, **kwargs):
        """A layer starting from a fitted codebook: a LearnedBoW/LearnedVLAD (centres,
        covariances and gamma), a BagOfWords/VLAD or scikit-learn KMeans
        (``cluster_centers_``, unit precisions), a FisherVector or diagonal scikit-learn
        GaussianMixture (means and variances), or a (K, D) array of centres.

        gamma : None takes the estimator's ``gamma_`` (required when it has none);
        kwargs : the layer's other parameters (learn_gamma, dtype, ...); ``pooling``
        defaults to the estimator's (a LearnedBoW's or LearnedVLAD's), else "mean".
        """
        kwargs.setdefault("pooling", getattr(estimator, "pooling", "mean"))
        covariance_type = getattr(estimator, "covariance_type", "diag")  # a GaussianMixture's
        if covariance_type != "diag":  # a "tied" (D, D) matrix passed for K diagonals when K == D
            raise ValueError(f"a GaussianMixture must have covariance_type='diag' (one variance per codeword and "
                             f"dimension), got {covariance_type!r}")
        centers = _first_attribute(estimator, ("centers_", "cluster_centers_", "means_"), estimator)
        covariances = _first_attribute(estimator, ("covariances_", "variances_"), np.ones(np.shape(centers)))
        try:
            centers, covariances = (np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
                                    for a in (centers, covariances))
        except (TypeError, ValueError, RuntimeError):
            centers = covariances = np.empty(0)
        if not (centers.ndim == 2 and centers.size and covariances.shape == centers.shape
                and np.isfinite(centers).all() and np.isfinite(covariances).all() and (covariances > 0).all()):
            raise ValueError("estimator must be a fitted LearnedBoW, LearnedVLAD, BagOfWords, VLAD, FisherVector, "
                             "KMeans or diagonal GaussianMixture, or a finite (K, D) array of centres; got "
                             f"{type(estimator).__name__}")
        if gamma is None:
            gamma = getattr(estimator, "gamma_", None)
            if gamma is None:
                raise ValueError(f"give gamma: {type(estimator).__name__} has no fitted gamma_")
        layer = cls(*centers.shape, gamma=gamma, **kwargs)
        with torch.no_grad():
            layer.centers.copy_(torch.from_numpy(centers))
            layer.log_precisions.copy_(torch.from_numpy(-np.log(covariances)))
        precisions = layer.log_precisions.detach().exp()
        if not (torch.isfinite(layer.centers).all() and torch.isfinite(precisions).all() and (precisions > 0).all()):
            raise ValueError(f"the estimator's centres or covariances overflow the layer's {layer.centers.dtype}: "
                             "rescale the features it was fitted on, or give dtype=torch.float64")
        return layer

    def forward(self, features, offsets=None):
        """features (N, D) with offsets (n_bags + 1,), or a jagged nested tensor with
        offsets=None -> (n_bags, output width) of the features' dtype."""
        return self._function(features, offsets, self.centers, self.log_precisions.exp(), self.log_gamma.exp(),
                              self.n_threads, self.keep_assignments, pooling=self.pooling)

    def extra_repr(self) -> str:
        gamma = "(meta)" if self.log_gamma.is_meta else f"{self.gamma:.4g}"  # a meta tensor has no value
        return (f"n_codewords={self.n_codewords}, dim={self.dim}, gamma={gamma}, "
                f"learn_gamma={isinstance(self.log_gamma, torch.nn.Parameter)}, pooling={self.pooling!r}")


class SoftBoW(_SoftEncoderLayer):
    """T1, the learnable soft Bag of Words, as a layer: ``layer(features, offsets)`` or
    ``layer(jagged_nested_tensor)`` -> (n_bags, K), each row the mean of the bag's soft
    assignments a_nk = softmax_k(-gamma sum_j P_kj (f_nj - C_kj)^2).

    Parameters
    ----------
    n_codewords : K; dim : D, the local features' dimension.
    gamma : float > 0, the initial softness; learn_gamma : learn it (as ``log_gamma``).
    learn_precisions : learn the diagonal precisions P (as ``log_precisions``).
    keep_assignments : keep the (N, K) assignments between forward and backward (faster
        backward, N * K values of memory).
    n_threads : None (``torch.get_num_threads()``) or a positive int.
    dtype : of the parameters (default: torch's default dtype); device : None or "cpu", the
        only device the layers run on (accepted as torch's own layers take it).
    pooling : "mean" (the paper's T1) or "max": each codeword's largest soft assignment in
        the bag (see :func:`soft_bow`). A constructor argument, not in the ``state_dict``:
        build the layer with the pooling its weights were trained with.
    """

    _function = staticmethod(soft_bow)


class SoftVLAD(_SoftEncoderLayer):
    """T2, the learnable soft VLAD, as a layer -> (n_bags, K * D), k-major: the mean over
    the bag of a_nk (f_n - C_k), or with ``pooling="max"`` the largest a_nk (f_nj - C_kj)
    (see :func:`soft_vlad`). Parameters as :class:`SoftBoW`."""

    _function = staticmethod(soft_vlad)
