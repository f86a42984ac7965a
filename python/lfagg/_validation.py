"""Checks of user input: Bags, the ops, every estimator, the datasets and the loaders use
these, each at its public entry only; internal paths take already-validated values. (The
checks of one parameter family live beside it: gamma and the codebook's size in
encoders/codebook.py, the penalty in models/l2.py, the feature map in models/feature_map.py.)

Every check raises ValueError naming the argument. Integers are ``numbers.Integral``
(NumPy's too) and reals ``numbers.Real``; booleans are neither.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from ._native import core


def boolean(value, name: str) -> bool:
    """``value`` as a bool: True or False (NumPy's too); anything else, like the string
    "no" that would be true, is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _unwrapped(value):
    """A 0-d NumPy array or tensor (np.array(0.5), torch.tensor(0.5)) as the number it holds; else ``value``."""
    return value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value


def _is_real(value) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int; ValueError unless it is an integer >= minimum."""
    value = _unwrapped(value)
    if is_int(value) and value >= minimum:
        return int(value)
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    raise ValueError(f"{name} must be {what}, got {value!r}")


def nonnegative_int(value, name: str) -> int:
    return positive_int(value, name, minimum=0)


def positive_real(value, name: str, *, allow_auto: bool = False) -> float:
    """``value`` as a float; ValueError unless it is a finite number > 0."""
    value = _unwrapped(value)
    if _is_real(value) and value > 0:
        return float(value)
    auto = "'auto' or " if allow_auto else ""
    raise ValueError(f"{name} must be {auto}a positive finite number, got {value!r}")


def nonnegative_real(value, name: str, *, allow_auto: bool = False) -> float:
    """``value`` as a float; ValueError unless it is a finite number >= 0."""
    value = _unwrapped(value)
    if _is_real(value) and value >= 0:
        return float(value)
    auto = "'auto' or " if allow_auto else ""
    raise ValueError(f"{name} must be {auto}a finite number >= 0, got {value!r}")


def real_in(value, name: str, low: float, high: float, *, include_low: bool = True,
            include_high: bool = False) -> float:
    """``value`` as a float; ValueError unless it is a number between low and high,
    each bound included or not as said."""
    value = _unwrapped(value)
    if (_is_real(value) and (low <= value if include_low else low < value)
            and (value <= high if include_high else value < high)):
        return float(value)
    interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"
    raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def verbosity(value) -> int:
    """``verbose`` as an int >= 0 (booleans are accepted here: verbose=True is common)."""
    if isinstance(value, numbers.Integral) and value >= 0:
        return int(value)
    raise ValueError(f"verbose must be a non-negative integer, got {value!r}")


def choice(value, name: str, choices):
    """``value`` if it is one of ``choices``."""
    try:
        if value in choices:
            return value
    except (TypeError, ValueError):  # unhashable or array-like values are never a choice
        pass
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


MAX_THREADS = 1 << 16


def n_threads_arg(n_threads) -> int:
    """The core's ``n_threads`` argument: 0 (all cores OpenMP may use) for None."""
    if n_threads is None:
        return 0
    if is_int(n_threads) and 1 <= n_threads <= MAX_THREADS:
        return int(n_threads)
    raise ValueError(f"n_threads must be None or an integer from 1 to {MAX_THREADS}, got {n_threads!r}")


def n_jobs_arg(n_jobs):
    """joblib's ``n_jobs``: None (1), a number of processes, or -1 (all cores), -2 (all but one)..."""
    if n_jobs is None or (is_int(n_jobs) and n_jobs != 0 and abs(n_jobs) <= MAX_THREADS):
        return None if n_jobs is None else int(n_jobs)
    raise ValueError(f"n_jobs must be None, a number of processes from 1 to {MAX_THREADS} or a negative count "
                     f"from the number of cores (-1: all), got {n_jobs!r}")


def as_generator(random_state) -> np.random.Generator:
    """A NumPy Generator from None, an int, a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    if random_state is None or (is_int(random_state) and random_state >= 0):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, a non-negative integer or a numpy random generator, "
                     f"got {random_state!r}")


def spawn_seeds(random_state, n: int) -> list[int]:
    """``n`` int seeds drawn from ``random_state``: how every estimator seeds its stages."""
    return [int(s) for s in as_generator(random_state).integers(2 ** 31, size=n)]


def float_array(x, name: str, dtype=None) -> np.ndarray:
    """C-contiguous float array; float32 stays float32 unless ``dtype`` says otherwise."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    with np.errstate(over="ignore"):  # values beyond float32 become inf, rejected by the finiteness checks
        return np.ascontiguousarray(arr, dtype=dtype)


def check_gamma_dtype(gamma: float, dtype, what: str = "gamma") -> float:
    """``gamma`` (a positive float) if it stays positive and finite in ``dtype``, the
    features' computation type; else ValueError saying so."""
    with np.errstate(over="ignore", under="ignore"):  # said below, in the user's terms
        value = np.dtype(dtype).type(gamma)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{what} = {gamma:g} is {value} in {np.dtype(dtype).name}, the features' dtype: rescale the "
                         "features" + (" or use float64 ones" if np.dtype(dtype) == np.float32 else ""))
    return gamma


def _offsets_shape_error(shape: tuple) -> ValueError:
    return ValueError(f"offsets must be a non-empty 1-D array (n_bags + 1,), got shape {shape}")


def as_offsets(offsets) -> np.ndarray:
    """``offsets`` as a C-contiguous 1-D int64 array; ValueError for non-integer or other-shaped input."""
    arr = np.asarray(offsets)
    if arr.size == 0:  # [] is float64 to numpy: its length, not its dtype, is what is wrong
        raise _offsets_shape_error(arr.shape)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"offsets must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:  # a 0-d one passed the core's check as a single offset 0
        raise ValueError(f"offsets must be a 1-D array of shape (n_bags + 1,), got shape {arr.shape}")
    check_fits_int64(arr, "offsets")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_fits_int64(arr: np.ndarray, name: str) -> None:
    """ValueError when the integer array ``arr`` holds unsigned values beyond int64's range
    (its cast to int64 would wrap them to negative numbers)."""
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {arr.max()}")


def check_resolvable_distances(squared: float, dtype, spread, what: str, rescale: str) -> None:
    """ValueError when squared distances of about ``squared`` (summed over the dimensions)
    underflow ``dtype``: the core flushes subnormal distances to zero, and every feature
    would tie with codeword 0. ``spread()``, called only then, is the largest span of one
    dimension (0: the points coincide, which distances resolve). The message names
    ``what`` spreads too little and says to rescale ``rescale``."""
    limits = np.finfo(dtype)
    if squared < limits.tiny / limits.eps and (span := float(spread())) > 0:
        raise ValueError(f"{what} spread too little for {np.dtype(dtype)} distances (no dimension spans more than "
                         f"{span:.3g}): rescale {rescale}, e.g. standardise them")


def check_offsets(offsets: np.ndarray, n_features: int) -> None:
    """ValueError unless ``offsets`` (int64) delimit bags of ``n_features`` rows."""
    if offsets.ndim != 1 or offsets.size < 1:
        raise _offsets_shape_error(offsets.shape)
    if offsets[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {offsets[0]}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    if offsets[-1] != n_features:
        raise ValueError(f"offsets[-1] must equal the number of features {n_features}, got {offsets[-1]}")


def first_nonfinite_bag(bags, n_threads: int = 0) -> int | None:
    """Index of the first bag holding NaN or infinity, or None: one threaded scan when all are finite."""
    if core.all_finite(bags.features, n_threads):
        return None
    row = np.flatnonzero(~np.isfinite(bags.features).all(axis=1))[0]
    return int(np.searchsorted(bags.offsets, row, side="right")) - 1


def check_bags(X, dim: int | None = None, n_threads: int = 0, dim_of: str = "the model was fitted on"):
    """``X`` (a Bags or a list of (N_i, D) arrays) as Bags with finite features and, when
    given, local features of dimension ``dim`` (``dim_of`` completes the message "... but
    {dim_of} dimension {dim}"); the scan uses ``n_threads`` threads (the core's argument: 0
    for all cores). A BagStore is returned as it is (its dimension checked): its bags are
    checked as they are read."""
    from .bags import as_bags
    from .store import BagStore

    if isinstance(X, BagStore):  # read by block, each block checked finite as it is read
        if dim is not None and X.dim != dim:
            raise ValueError(f"the store's local features have dimension {X.dim}, but {dim_of} dimension {dim}")
        return X
    bags = as_bags(X)
    if bags.dim == 0:
        raise ValueError("bags have local features of dimension 0: a local feature needs at least one value")
    if dim is not None and bags.dim != dim:
        raise ValueError(f"bags have local features of dimension {bags.dim}, but {dim_of} dimension {dim}")
    check_finite_bags(bags, n_threads)
    return bags


def check_finite_bags(bags, n_threads: int = 0, first_bag: int = 0) -> None:
    """ValueError naming the first bag of ``bags`` (numbered from ``first_bag``: a block's
    number in a larger collection) that holds NaN or infinity."""
    bad = first_nonfinite_bag(bags, n_threads)
    if bad is not None:
        raise ValueError(f"bags contain NaN or infinity (bag {first_bag + bad})")


def check_labels(y, n_bags: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D array of one class label per bag: integers (also as whole reals like
    1.0), strings or booleans, one kind throughout. A NaN or None label would silently
    become a class of its own, mixed kinds cannot be sorted into classes, and reals like
    0.5 are regression targets (scikit-learn's scoring refuses them as "continuous")."""
    y = fixed_width_strings(np.asarray(y))
    if y.ndim != 1 or len(y) != n_bags:
        raise ValueError(f"{name} must be a 1-D array with one label per bag: got shape {y.shape} for {n_bags} bags")
    one_kind = y.dtype.kind != "O" or all(isinstance(v, str) for v in y) or all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in y) or all(
        isinstance(v, (bool, np.bool_)) for v in y)
    whole = y.dtype.kind != "f" or (np.isfinite(y).all() and (y == np.round(y)).all())
    if y.dtype.kind not in "biufUO" or not one_kind or not whole:
        odd = y[~np.isfinite(y)] if y.dtype.kind == "f" and not np.isfinite(y).all() else y  # NaN: a missing label
        raise ValueError(f"{name} must hold class labels (integers, whole reals, strings or booleans) of one kind, got "
                         f"dtype {y.dtype} with values like {odd[:3].tolist()}")
    if y.dtype.kind == "O" and len(y) and not isinstance(y[0], str):  # integers or booleans: scikit-learn's
        # metrics refuse their object array (target type "unknown"), so predictions of these classes failed to score
        if isinstance(y[0], (bool, np.bool_)):
            return y.astype(bool)
        try:
            return y.astype(np.int64)
        except OverflowError:
            raise ValueError(f"{name}: integer labels must fit in int64") from None
    return y


def fixed_width_strings(a: np.ndarray) -> np.ndarray:
    """``a``, with numpy's variable-width strings (dtype kind "T", as Zarr reads them) as
    fixed-width ones, which scikit-learn's metrics take."""
    return np.array(a.tolist(), dtype=str) if a.dtype.kind == "T" else a


def holds_text(labels: np.ndarray) -> bool:
    """Whether labels that :func:`check_labels` passed (non-empty) are strings: of a str
    dtype, or in an object array (pandas'), where the rest would be integers."""
    return labels.dtype.kind in "UT" or (labels.dtype.kind == "O" and isinstance(labels.flat[0], str))


def check_classes(y) -> tuple[np.ndarray, np.ndarray]:
    """(classes, y as indices into classes); ValueError for fewer than two classes."""
    classes, y_index = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y must hold at least two classes, got only {classes.tolist()}")
    return classes, y_index


def fitted_array(value, name: str, shape: tuple, *, positive: bool = False) -> np.ndarray:
    """``value``, a fitted attribute of a model read from a file, if it is a non-empty,
    finite float array of ``shape`` (None: any length), > 0 when ``positive``."""
    if (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 0 and value.ndim == len(shape)
            and all(s is None or s == n for s, n in zip(shape, value.shape)) and np.isfinite(value).all()
            and not (positive and (value <= 0).any())):
        return value
    got = f"shape {value.shape}, dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
    want = ", ".join("any" if s is None else str(s) for s in shape)
    raise ValueError(f"{name} must be a finite{' positive' if positive else ''} float array of shape ({want}), "
                     f"got {got}")


def fitted_names(estimator) -> list[str]:
    """The names of an estimator's fitted attributes (public names ending in "_")."""
    return [n for n in vars(estimator) if n.endswith("_") and not n.startswith("_")]


@contextlib.contextmanager
def unfitted_on_failure(estimator):
    """Within it, an exception (a fit that failed, diverged or was interrupted) leaves
    ``estimator`` unfitted (:func:`forget_fit`), not half-trained with a model to predict with."""
    try:
        yield
    except BaseException:
        forget_fit(estimator)
        raise


def forget_fit(estimator) -> None:
    """Deletes an estimator's fitted attributes (public names ending in "_"), so that a
    refit that fails leaves it unfitted rather than half old, half new."""
    for name in fitted_names(estimator):
        delattr(estimator, name)
