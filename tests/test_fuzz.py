"""Property-based fuzzing (hypothesis) of lfagg with hostile input: random shapes, dtypes,
offsets, NaN/inf placements and parameter values through lfagg.ops, lfagg.Bags, every
estimator and model search, and the train / encode / evaluate / store build / demo
commands of lfagg.cli.main (in process), and random or garbled .npy / .npz / CSV / .txt /
model files through the loaders, lfagg.load and the command line.

The only outcomes allowed are a correct result (finite, of the documented shape and dtype;
an estimator's fitted attributes present) or a ValueError; for lfagg.cli.main, status 0,
status 1 with one line "lfagg <command>: error: ..." on stderr, or argparse's status 2.
(tests/test_errors.py feeds the soft-encoder ops garbage arguments; here every result is
checked too.) Bugs the fuzz found are pinned as ``@example``s of their target, or plain tests.

The default run is sized for CI (2 cores, under a minute) and derandomized: every run tries
the same examples. A long fuzz draws new examples on each run:

    LFAGG_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py

runs 5000 examples per cheap target (ops, Bags, loaders, lfagg.load), a fifth of that per
costly one (estimator fits, command-line runs), a 25th of demos and a 50th of model
searches (about 20 minutes). The command line's warnings are judged too: each must be one
line "lfagg <command>: warning: ...".
"""
import contextlib
import functools
import io
import json
import os
import tempfile
import zipfile

import numpy as np
import pytest
import skops.io
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lfagg
from lfagg import Bags, cli, ops
from lfagg.datasets import load_bags, make_circles_bags
from lfagg.persistence import ESTIMATORS

# The fuzz judges outcomes, not warnings (K-Means convergence, overflow on the way to a ValueError).
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]

_EXAMPLES = os.environ.get("LFAGG_FUZZ_EXAMPLES")


def fuzz(default: int, divisor: int = 1):
    """Settings of one target: ``default`` examples, derandomized, or LFAGG_FUZZ_EXAMPLES //
    ``divisor`` examples drawn afresh."""
    n = max(1, int(_EXAMPLES) // divisor) if _EXAMPLES else default
    return settings(max_examples=n, deadline=None, derandomize=not _EXAMPLES, database=None,
                    print_blob=bool(_EXAMPLES), suppress_health_check=list(HealthCheck))


CHEAP, COSTLY = fuzz(300), fuzz(100, divisor=5)

# ---------------------------------------------------------------------------------------
# Strategies and checks
# ---------------------------------------------------------------------------------------
REAL_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)
SCALES = (0.0, 1e-300, 1e-30, 1e-3, 1.0, 1e3, 1e30, 1e300)
NONFINITE = (np.nan, np.inf, -np.inf)
# Values no parameter accepts, or only some (None, True, "auto"): a ValueError or a fit. No huge
# positive counts: n_init=2**70 is legitimate, and endless.
JUNK = st.sampled_from([0, -1, 1.5, np.nan, np.inf, -np.inf, "x", "auto", None, True, [1], b"1", -2 ** 70,
                        np.array([1, 2]), np.int8(3), np.float32(0.5), lfagg.BagOfWords])


def one_in(n: int):
    """True about once in n draws (False is what hypothesis tries first and shrinks to)."""
    return st.integers(1, n).map(lambda i: i == n)


def mostly(good, bad=JUNK):
    """``good`` seven times in eight, else ``bad``: most examples get far enough to run."""
    return one_in(8).flatmap(lambda spoil: bad if spoil else good)


@st.composite
def reals(draw, shape, dtypes=REAL_DTYPES, scales=SCALES, nonfinite=True):
    """An array of ``shape`` and a random real dtype: values in [-10, 10] times a random
    power of ten, one in ten with NaN or infinity at a random place."""
    with np.errstate(all="ignore"):
        a = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10))) * draw(st.sampled_from(scales))
        if nonfinite and a.size and draw(one_in(10)):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(NONFINITE))
        return a.astype(draw(st.sampled_from(dtypes)))


@st.composite
def positives(draw, shape):
    """A float array of ``shape`` of positive values of any magnitude, one in ten with a
    zero, negative or non-finite value."""
    with np.errstate(all="ignore"):
        a = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.1, 10))) * draw(
            st.sampled_from((1e-300, 1e-30, 1e-3, 1.0, 1e3, 1e30, 1e300)))
        if a.size and draw(one_in(10)):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from((0.0, -1.0, *NONFINITE)))
        return a.astype(draw(st.sampled_from((np.float64, np.float32))))


GAMMAS = st.one_of(st.floats(1e-300, 1e300), st.sampled_from([1e-46, 1e-30, 1e30, 1e39, 0.0, -1.0, np.nan]))
SIZES = st.lists(st.integers(0, 5), max_size=6)


def offsets_of(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@st.composite
def bags_arrays(draw, n_bags=st.integers(1, 6), dim=st.integers(1, 3)):
    """Bags as a list of (N_i, D) arrays (N_i >= 0) of one random dtype and scale (an extreme
    one time in four); one set in ten with a NaN or infinity, one in ten of mixed dtypes."""
    D, dtype = draw(dim), draw(st.sampled_from(REAL_DTYPES))
    scale = draw(st.sampled_from(SCALES) if draw(one_in(4)) else st.sampled_from((1e-3, 1.0, 1e3)))
    n = draw(n_bags)
    sizes = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    dtypes = st.sampled_from(REAL_DTYPES) if draw(one_in(10)) else st.just(dtype)
    arrays = [draw(reals((size, D), dtypes=(draw(dtypes),), scales=(scale,), nonfinite=False)) for size in sizes]
    spoilt = [a for a in arrays if a.size and a.dtype.kind == "f"]
    if spoilt and draw(one_in(10)):
        draw(st.sampled_from(spoilt)).flat[0] = draw(st.sampled_from(NONFINITE))
    return arrays


GOOD_LABELS = ([0, 1, 2], [-5, 2 ** 62], ["a", "b"], ["x", "yy", "zzz"], [True, False])
BAD_LABELS = ([0.5, -1.0, np.nan], [1, "a"], [b"x", "y"], [None, 1], [1.5, np.inf])


@st.composite
def labels_for(draw, n):
    """Labels of n bags as a list or an array (object dtype too): integers, strings or bools;
    one in four times of a kind or a length that may be refused (NaN, None, mixes)."""
    if draw(one_in(4)):
        pool = draw(st.sampled_from(BAD_LABELS + GOOD_LABELS))
        values = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        if draw(st.booleans()):
            values = values[:draw(st.integers(0, n))] + draw(st.lists(st.sampled_from(pool), max_size=2))
    else:  # every class of the pool, as far as n goes
        pool = draw(st.sampled_from(GOOD_LABELS))
        values = draw(st.permutations([pool[i % len(pool)] for i in range(n)]))
    return draw(st.sampled_from([list, np.array, lambda v: np.array(v, dtype=object)]))(values)


@st.composite
def perturbed(draw, params):
    """``params``, or one time in four with one of them replaced by junk."""
    if draw(one_in(4)):
        params[draw(st.sampled_from(sorted(params)))] = draw(JUNK)
    return params


def expected_dtype(features):
    return np.float32 if np.asarray(features).dtype == np.float32 else np.float64


def finite_input(*arrays):
    with np.errstate(over="ignore"):
        return all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays)


def computed(a, features):
    """``a`` in the dtype the ops compute in for these features (values beyond it become inf)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(a).astype(expected_dtype(features))


def check_encoding(R, n_bags, width, dtype, sizes):
    """R is a finite (n_bags, width) array of ``dtype``, zero for empty bags."""
    assert isinstance(R, np.ndarray) and R.shape == (n_bags, width) and R.dtype == dtype
    assert np.isfinite(R).all()
    assert not R[np.asarray(sizes) == 0].any()


def check_sums(R, sizes, dtype):
    """Rows are histograms: they sum to 1, or 0 for an empty bag."""
    np.testing.assert_allclose(R.sum(axis=1), np.asarray(sizes) > 0, atol=1e-4 if dtype == np.float32 else 1e-10)
    assert (R >= 0).all()


def check_unit_rows(R, dtype):
    """L2-normalised rows: norm 1, or below when the norm was under the normalisation's guard."""
    assert (np.linalg.norm(R.astype(np.float64), axis=1) <= 1 + (1e-3 if dtype == np.float32 else 1e-8)).all()


# ---------------------------------------------------------------------------------------
# lfagg.ops: every result checked
# ---------------------------------------------------------------------------------------
@st.composite
def problems(draw):
    """(features, offsets, K): well-formed bags of random size, dtype and scale, sometimes
    with NaN/inf or broken offsets."""
    offsets = offsets_of(draw(SIZES))
    features = draw(reals((int(offsets[-1]), draw(st.integers(1, 3)))))
    if draw(one_in(10)) and offsets.size > 1:
        offsets[draw(st.integers(0, offsets.size - 1))] += draw(st.sampled_from([-1, 1, 2 ** 40]))
    return features, offsets, draw(st.integers(1, 3))


@st.composite
def soft_cases(draw):
    """(op, features, offsets, centers, precisions, gamma, grad_output, n_threads)."""
    features, offsets, K = draw(problems())
    D = features.shape[1]
    op = draw(st.sampled_from(["soft_bow", "soft_vlad"]))
    return (op, features, offsets, draw(reals((K, D))), draw(positives((K, D))), draw(GAMMAS),
            draw(reals((offsets.size - 1, K if op == "soft_bow" else K * D))), draw(st.sampled_from([None, 1, 2])))


@CHEAP
@given(case=soft_cases())
def test_soft_ops(case):
    op, features, offsets, centers, precisions, gamma, grad_output, n_threads = case
    K, D = centers.shape
    args = (features, offsets, centers, precisions, gamma)
    P = computed(precisions, features)  # what must be finite and positive in the compute dtype
    valid = finite_input(features, computed(centers, features), P) and (P > 0).all() and 0 < computed(
        gamma, features) < np.inf
    try:
        R, A = getattr(ops, op)(*args, n_threads, return_assignments=True)
    except ValueError:
        return
    assert valid, "NaN, infinity or a non-positive precision or gamma accepted"
    dtype, sizes = expected_dtype(features), np.diff(offsets)
    check_encoding(R, len(sizes), K if op == "soft_bow" else K * D, dtype, sizes)
    assert A.shape == (features.shape[0], K) and A.dtype == dtype and (A >= 0).all()
    np.testing.assert_allclose(A.sum(axis=1), 1, atol=1e-4 if dtype == np.float32 else 1e-10)
    if op == "soft_bow":
        check_sums(R, sizes, dtype)
    for assignments in (None, A):
        try:
            gC, gP, g_gamma = getattr(ops, f"{op}_backward")(*args, grad_output, n_threads, assignments=assignments)
        except ValueError:
            continue
        read = computed(grad_output, features)[sizes > 0]  # an empty bag's row is not read
        assert finite_input(read), "NaN or infinity accepted in grad_output"
        for g in (gC, gP):
            assert g.shape == (K, D) and g.dtype == dtype and np.isfinite(g).all()
        assert isinstance(g_gamma, float) and np.isfinite(g_gamma)


@st.composite
def baseline_cases(draw):
    features, offsets, K = draw(problems())
    N, D = features.shape
    return dict(op=draw(st.sampled_from(["bow", "vlad", "fisher_vector"])), features=features, offsets=offsets,
                centers=draw(reals((K, D))), assignments=draw(st.none() | reals((N, K))),
                variances=draw(positives((K, D))), weights=draw(positives((K,))), with_weights=draw(st.booleans()))


@CHEAP
@given(case=baseline_cases())
def test_baseline_ops(case):
    op, features, offsets, centers = (case[k] for k in ("op", "features", "offsets", "centers"))
    K, D = centers.shape
    # what must be finite in the compute dtype: sqrt and log are NaN or -inf where a value must not be
    inputs = [features, computed(centers, features)]
    if op == "bow":
        call, width = functools.partial(ops.bow, features, offsets, centers), K
    elif op == "vlad":  # hard, or with given soft assignments (which must be >= 0)
        call, width = functools.partial(ops.vlad, features, offsets, centers, case["assignments"]), K * D
        if case["assignments"] is not None:
            inputs.append(np.sqrt(computed(case["assignments"], features)))
    else:
        variances, weights, with_weights = case["variances"], case["weights"], case["with_weights"]
        call = functools.partial(ops.fisher_vector, features, offsets, centers, variances, weights,
                                 with_weights=with_weights)
        width = 2 * K * D + K * with_weights
        inputs += [np.log(computed(variances, features)), np.log(computed(weights, features))]
    try:
        R = call()
    except ValueError:
        return
    assert finite_input(*inputs), "NaN, infinity, negative assignments or non-positive variances accepted"
    sizes = np.diff(offsets)
    check_encoding(R, len(sizes), width, expected_dtype(features), sizes)
    if op == "bow":
        check_sums(R, sizes, R.dtype)


# ---------------------------------------------------------------------------------------
# lfagg.Bags
# ---------------------------------------------------------------------------------------
ODD = st.sampled_from([np.ones((2, 2), complex), np.array([["a", "b"]]), np.array([[1, None]], dtype=object),
                       np.zeros((2, 2), dtype="datetime64[s]"), np.ones((0, 0)), np.float64(1.0), [[1, 2], [3]],
                       "features", None, {"a": 1}])
ANY_SHAPE = st.integers(0, 3).flatmap(lambda nd: hnp.array_shapes(min_dims=nd, max_dims=nd, min_side=0, max_side=4))


@CHEAP
@given(features=ANY_SHAPE.flatmap(reals) | ODD,
       offsets=SIZES.map(offsets_of) | st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=4)
       | hnp.array_shapes(max_dims=2, max_side=4).flatmap(reals) | ODD)
def test_bags_constructor(features, offsets):
    try:
        bags = Bags(features, offsets)
    except ValueError:
        return
    f = np.asarray(features)
    assert bags.features.ndim == 2 and bags.features.flags.c_contiguous and bags.dtype == expected_dtype(f)
    np.testing.assert_array_equal(bags.features, f.astype(bags.dtype))
    np.testing.assert_array_equal(bags.offsets, np.asarray(offsets))
    assert bags.offsets.dtype == np.int64 and len(bags) == len(bags.offsets) - 1
    assert (bags.sizes >= 0).all() and bags.sizes.sum() == bags.n_features == f.shape[0]


@CHEAP
@given(arrays=st.lists(ANY_SHAPE.flatmap(reals) | ODD, max_size=4) | bags_arrays() | ODD | st.integers())
def test_bags_from_arrays(arrays):
    try:
        bags = Bags.from_arrays(arrays)
    except ValueError:
        return
    arrays = [np.asarray(a) for a in arrays]
    assert len(bags) == len(arrays)
    assert bags.dtype == (np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64)
    for bag, a in zip(bags, arrays):
        np.testing.assert_array_equal(bag, a.astype(bags.dtype))


@st.composite
def indexed_bags(draw):
    """(arrays, index): bags and any kind of index of a sequence of them, in range or not."""
    arrays = draw(bags_arrays())
    n = len(arrays)
    i = st.integers(-n - 2, n + 2)
    index = draw(st.one_of(
        i, i.map(np.int32), i.map(np.int64),
        st.builds(slice, st.none() | i, st.none() | i, st.none() | st.integers(-3, 3)),
        st.lists(i, max_size=5), st.lists(i, max_size=5).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.booleans(), min_size=n, max_size=n + 1).map(lambda v: np.array(v, dtype=bool)),
        st.sampled_from([1.5, "0", np.array([0.0]), np.array([[0]])])))
    return arrays, index


def python_index(items, index):
    """``items[index]`` by a list's rules, a boolean mask keeping the items where it is True;
    IndexError out of range, TypeError for an index a list refuses."""
    if isinstance(index, np.ndarray) and index.dtype == bool:
        if index.shape != (len(items),):
            raise IndexError("a mask of another length")
        return [x for x, keep in zip(items, index) if keep]
    if isinstance(index, list) or isinstance(index, np.ndarray) and index.dtype.kind == "i" and index.ndim == 1:
        return [items[int(i)] for i in index]
    return items[index]


@CHEAP
@given(case=indexed_bags())
def test_bags_indexing(case):
    arrays, index = case
    bags = Bags.from_arrays(arrays)
    try:
        expected = python_index(list(range(len(bags))), index)
    except (IndexError, TypeError, ValueError) as refused:
        # Python's sequence protocol: IndexError out of range, IndexError or TypeError for a bad index
        with pytest.raises(IndexError if isinstance(refused, IndexError) else (IndexError, TypeError, ValueError)):
            bags[index]
        return
    got = bags[index]
    if isinstance(expected, int):
        np.testing.assert_array_equal(got, arrays[expected].astype(bags.dtype))
        return
    assert isinstance(got, Bags) and len(got) == len(expected) and got.dtype == bags.dtype
    for bag, b in zip(got, expected):
        np.testing.assert_array_equal(bag, arrays[b].astype(bags.dtype))


@CHEAP
@given(sizes=SIZES.filter(len), dtype=st.sampled_from([np.float32, np.float64]),
       n_per_bag=mostly(st.integers(1, 6), st.sampled_from([0, -1, 2.0, True, None, "3", np.int16(2), 2 ** 70])),
       random_state=mostly(st.none() | st.integers(0, 2 ** 64) | st.builds(np.random.default_rng)
                           | st.builds(np.random.RandomState, st.integers(0, 2 ** 32 - 1))))
def test_bags_subsample(sizes, dtype, n_per_bag, random_state):
    offsets = offsets_of(sizes)
    ids = np.arange(offsets[-1])
    bags = Bags(np.c_[ids, -ids].astype(dtype), offsets)  # column 0 names each feature
    try:
        sub = bags.subsample(n_per_bag, random_state)
    except ValueError:
        return
    assert len(sub) == len(bags) and sub.dtype == bags.dtype
    assert sub.sizes.tolist() == [min(size, int(n_per_bag)) for size in bags.sizes.tolist()]
    for bag, kept in zip(bags, sub):
        assert np.isin(kept[:, 0], bag[:, 0]).all() and (np.diff(kept[:, 0]) > 0).all()  # a subset, in order
        np.testing.assert_array_equal(kept[:, 1], -kept[:, 0])


# ---------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------
@st.composite
def codebook_params(draw):
    """Valid parameters every encoder has, for tiny fits."""
    K = draw(st.integers(1, 4))
    return dict(n_codewords=K, max_init_features=draw(st.integers(K, 40)),
                random_state=draw(st.none() | st.integers(0, 2 ** 32)), n_threads=draw(st.sampled_from([None, 1, 2])))


@st.composite
def gamma_params(draw):
    """gamma="auto" with a random scale, or a random gamma (any magnitude)."""
    if draw(st.booleans()):
        return dict(gamma="auto", gamma_scale=draw(st.floats(1e-3, 1e3)))
    return dict(gamma=draw(st.floats(1e-300, 1e300) | st.sampled_from([1e-30, 1e30, 1e39])), gamma_scale=1.0)


@st.composite
def transformers(draw):
    """An unfitted BagOfWords, VLAD or FisherVector with random parameters."""
    cls = draw(st.sampled_from([lfagg.BagOfWords, lfagg.VLAD, lfagg.FisherVector]))
    params = dict(draw(codebook_params()), max_iter=draw(st.integers(1, 5)), n_init=draw(st.integers(1, 2)))
    if cls is lfagg.FisherVector:
        params.update(improved=draw(st.booleans()), with_weights=draw(st.booleans()),
                      reg_covar=draw(st.sampled_from([0.0, 1e-6, 1e-2, 1e6])))
    else:
        params.update(assignment=draw(st.sampled_from(["hard", "soft"])), **draw(gamma_params()))
    if cls is lfagg.VLAD:
        params.update(power_alpha=draw(st.none() | st.floats(0.01, 1)), intra_normalize=draw(st.booleans()),
                      l2_normalize=draw(st.booleans()))
    return cls(**draw(perturbed(params)))


def transformer_width(model, D):
    K = model.n_codewords
    if isinstance(model, lfagg.BagOfWords):
        return K
    return K * D if isinstance(model, lfagg.VLAD) else 2 * K * D + K * bool(model.with_weights)


def check_transform(model, R, bags):
    """A fitted transformer's encoding R of Bags ``bags``: shape, dtype, finiteness and the
    documented normalisation."""
    check_encoding(R, len(bags), transformer_width(model, bags.dim), bags.dtype, bags.sizes)
    if isinstance(model, lfagg.BagOfWords):
        check_sums(R, bags.sizes, bags.dtype)
    elif model.l2_normalize if isinstance(model, lfagg.VLAD) else model.improved:
        check_unit_rows(R, bags.dtype)


def check_fitted_transformer(model, D):
    K = model.n_codewords
    assert model.n_features_in_ == D
    if isinstance(model, lfagg.FisherVector):
        assert model.means_.shape == model.variances_.shape == (K, D) and model.weights_.shape == (K,)
        assert np.isfinite(model.means_).all() and np.isfinite(model.variances_).all()
        assert (model.variances_ > 0).all() and (model.weights_ > 0).all() and abs(model.weights_.sum() - 1) < 1e-6
    else:
        assert model.cluster_centers_.shape == (K, D) and np.isfinite(model.cluster_centers_).all()
        assert model.gamma_ is None if model.assignment == "hard" else 0 < model.gamma_ < np.inf


@st.composite
def transformer_cases(draw):
    """(model, arrays to fit, other arrays to encode: mostly of the same dimension)."""
    arrays = draw(bags_arrays())
    D = np.shape(arrays[0])[1]
    return draw(transformers()), arrays, draw(bags_arrays(dim=st.integers(1, 3) if draw(one_in(4)) else st.just(D)))


@COSTLY
@given(case=transformer_cases())
# Found by the fuzz: VLAD's intra-normalisation failed on no bags ("cannot reshape array of size 0").
@example(case=(lfagg.VLAD(1, random_state=0), [np.array([[0.0]]), np.array([[1.0]])], [np.array([[0.0]])]))
def test_transformers(case):
    model, arrays, other = case
    try:
        bags = Bags.from_arrays(arrays)
        R = model.fit(bags).transform(bags)
    except ValueError:
        return
    assert finite_input(*arrays), "NaN or infinity accepted"
    check_fitted_transformer(model, bags.dim)
    check_transform(model, R, bags)
    check_transform(model, model.transform(bags[:0]), bags[:0])  # no bags: valid, an empty encoding
    try:
        R = model.transform(other)
    except ValueError:
        return
    check_transform(model, R, Bags.from_arrays(other))


# the float32 kernels overflow from about 30, long before the float64 parameters do
LEARNING_RATES = st.sampled_from([1e-3, 1e-1, 10.0, 1e6, 1e300]) | st.floats(1e-3, 1e3)


@st.composite
def classifiers(draw):
    """An unfitted BagClassifier, LearnedBoW or LearnedVLAD with random parameters (tiny fits)."""
    kind = draw(st.sampled_from(["bag_classifier", "t1", "t2"]))
    nonnegative = kind == "t1"
    params = dict(l2=draw(st.sampled_from(["auto", 0.0, 1e-3, 1.0, 1e6])), verbose=draw(st.sampled_from([0, 0, 0, 1])))
    if kind == "bag_classifier":
        params.update(encoder=draw(transformers()), random_state=draw(st.none() | st.integers(0, 2 ** 32)))
        nonnegative = isinstance(params["encoder"], lfagg.BagOfWords)
    else:
        params.update(
            draw(codebook_params()), **draw(gamma_params()), learn_gamma=draw(st.booleans()),
            learn_covariances=draw(st.booleans()), init=draw(st.sampled_from(["kmeans", "gmm", "random"])),
            n_epochs=draw(st.integers(0, 2)), batch_size=draw(st.integers(1, 4)),
            n_samples_per_bag=draw(st.none() | st.integers(1, 4)), optimizer=draw(st.sampled_from(["adam", "sgd"])),
            learning_rate=draw(LEARNING_RATES),
            classifier_learning_rate=draw(st.none() | st.floats(1e-4, 1e4)),
            validation_fraction=draw(st.none() | st.floats(0.1, 0.9)), early_stopping=draw(st.booleans()),
            n_iter_no_change=draw(st.integers(1, 2)))
    params["feature_map"] = draw(st.sampled_from(["auto", None, "chi2"] if nonnegative else ["auto", None]))
    params = draw(perturbed(params))
    cls = {"bag_classifier": lfagg.BagClassifier, "t1": lfagg.LearnedBoW, "t2": lfagg.LearnedVLAD}[kind]
    return cls(**params)


@st.composite
def classifier_cases(draw):
    """(model, arrays, y, other arrays to predict, keyword arguments of fit: LearnedBoW and
    LearnedVLAD sometimes get the other arrays as validation_data)."""
    arrays = draw(bags_arrays(n_bags=st.integers(2, 8)))
    D = np.shape(arrays[0])[1]
    other = draw(bags_arrays(dim=st.integers(1, 3) if draw(one_in(4)) else st.just(D)))
    model = draw(classifiers())
    validate = not isinstance(model, lfagg.BagClassifier) and draw(one_in(3))
    return model, arrays, draw(labels_for(len(arrays))), other, dict(
        validation_data=(other, draw(labels_for(len(other))))) if validate else {}


def check_predictions(model, bags, classes):
    """The fitted classifier's outputs on Bags ``bags``."""
    n, C = len(bags), len(classes)
    predicted = model.predict(bags)
    assert predicted.shape == (n,) and np.isin(predicted, classes).all()
    proba = model.predict_proba(bags)
    assert proba.shape == (n, C) and np.isfinite(proba).all() and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-9)
    scores = model.decision_function(bags)
    assert scores.shape == ((n,) if C == 2 else (n, C)) and np.isfinite(scores).all()
    R = model.transform(bags)
    if isinstance(model, lfagg.BagClassifier):
        check_transform(model.encoder_, R, bags)
    else:
        K, D = getattr(model, "best_params_", model.get_params())["n_codewords"], bags.dim
        bow = isinstance(model, (lfagg.LearnedBoW, lfagg.LearnedBoWCV))
        check_encoding(R, n, K if bow else K * D, bags.dtype, bags.sizes)
        if bow:
            check_sums(R, bags.sizes, bags.dtype)


def check_fitted_classifier(model, D, classes):
    np.testing.assert_array_equal(model.classes_, classes)
    assert model.n_features_in_ == D and 0 <= model.l2_ < np.inf
    assert all(0 <= t < np.inf for t in model.timings_.values())
    clf = model.classifier_
    assert clf.W.shape[1] == len(classes) and np.isfinite(clf.W).all() and np.isfinite(clf.b).all()
    if isinstance(model, lfagg.BagClassifier):
        check_fitted_transformer(model.encoder_, D)
        return
    K = model.n_codewords
    assert model.centers_.shape == model.covariances_.shape == (K, D) and np.isfinite(model.centers_).all()
    assert np.isfinite(model.covariances_).all() and (model.covariances_ > 0).all() and 0 < model.gamma_ < np.inf
    losses = model.history_.get("loss", [])
    assert len(losses) <= model.n_epochs and np.isfinite(losses).all()


FOUR_BAGS = [np.array([[0.0, 0.0], [1.0, 1.0]]) + i for i in range(4)]


@COSTLY
@given(case=classifier_cases())
# Found by the fuzz: an object array mixing str and int passed the label check, then np.unique raised TypeError.
@example(case=(lfagg.BagClassifier(lfagg.BagOfWords(2, random_state=0)), FOUR_BAGS,
               np.array([1, "a", 1, "a"], dtype=object), FOUR_BAGS, {}))
# Found by the fuzz: fit took bytes labels, then score (scikit-learn's accuracy) raised TypeError on them.
@example(case=(lfagg.BagClassifier(lfagg.BagOfWords(2, random_state=0)), FOUR_BAGS, np.array([b"x", b"y"] * 2),
               FOUR_BAGS, {}))
def test_classifiers(case):
    model, arrays, y, other, fit_kwargs = case
    try:
        model.fit(arrays, y, **fit_kwargs)
    except ValueError:
        return
    assert finite_input(*arrays), "NaN or infinity accepted"
    classes = np.unique(np.asarray(y))
    bags = Bags.from_arrays(arrays)
    check_fitted_classifier(model, bags.dim, classes)
    check_predictions(model, bags, classes)
    check_predictions(model, bags[:0], classes)  # no bags: valid, empty predictions
    with contextlib.suppress(ValueError):  # scikit-learn's accuracy refuses real-valued labels, which fit takes
        assert 0 <= model.score(arrays, y) <= 1
    try:
        other = Bags.from_arrays(other)
        check_predictions(model, other, classes)
    except ValueError:  # another dimension, NaN, or an encoding that overflows
        pass


@st.composite
def searches(draw):
    """An unfitted LearnedBoWCV or LearnedVLADCV with random grids (tiny searches)."""
    grid = st.lists(st.integers(1, 3), min_size=1, max_size=2)
    params = dict(
        n_codewords=draw(grid), gamma_scale=draw(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=2)),
        learning_rate=draw(st.lists(LEARNING_RATES, min_size=1, max_size=2)), max_epochs=draw(st.integers(0, 2)),
        cv=draw(st.integers(2, 3)), scoring=draw(st.sampled_from(["neg_log_loss", "accuracy"])),
        n_estimators=draw(st.integers(1, 2)), batch_size=draw(st.sampled_from(["auto", 1, 4])),
        n_samples_per_bag=draw(st.none() | st.integers(1, 4)), learn_gamma=draw(st.booleans()),
        max_init_features=draw(st.integers(3, 40)), random_state=draw(st.none() | st.integers(0, 2 ** 32)),
        n_threads=1, verbose=draw(st.sampled_from([0, 0, 1])))
    params = draw(perturbed(params))
    return draw(st.sampled_from([lfagg.LearnedBoWCV, lfagg.LearnedVLADCV]))(**params)


@fuzz(40, divisor=50)
@given(model=searches(), arrays=bags_arrays(n_bags=st.integers(6, 12)), data=st.data())
def test_searches(model, arrays, data):
    y = data.draw(labels_for(len(arrays)))
    try:
        model.fit(arrays, y)
    except ValueError as exc:
        event(f"refused: {str(exc)[:40]}")
        return
    event("fitted")
    assert finite_input(*arrays), "NaN or infinity accepted"
    classes, bags = np.unique(np.asarray(y)), Bags.from_arrays(arrays)
    assert len(model.estimators_) == model.n_estimators and model.best_estimator_ is model.estimators_[0]
    for refit in model.estimators_:
        check_fitted_classifier(refit, bags.dim, classes)
    assert np.isfinite(model.best_score_) and model.best_params_ in model.cv_results_["params"]
    check_predictions(model, bags, classes)
    check_predictions(model, bags[:0], classes)


# ---------------------------------------------------------------------------------------
# Files: bags, labels and models, well formed or garbled, as {relative path: bytes}
# ---------------------------------------------------------------------------------------
class Described(bytes):
    """Bytes whose repr says how they were made, so that a falsifying example stays readable."""

    def __new__(cls, data, description):
        made = super().__new__(cls, data)
        made.description = description
        return made

    def __repr__(self):
        return f"<{len(self)} bytes: {self.description}>"


def npy_bytes(a) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=True)
    return buffer.getvalue()


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@st.composite
def garbled(draw, data: bytes):
    """``data`` truncated, with a few bytes overwritten, or replaced by random bytes."""
    how = draw(st.sampled_from(["truncate", "overwrite", "random"]))
    if how == "random" or not data:
        return draw(st.binary(max_size=300))
    if how == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


# Found by the fuzz: numpy's header parser raised tokenize.TokenError on it, which load_npy_dir let through.
UNCLOSED_NPY = Described(npy_bytes(np.ones((1, 2))).replace(b"(1, 2)", b"(1, 2 "), "an .npy header lacking a ')'")


@st.composite
def npy_headers(draw):
    """An .npy header of random dtype, order and shape (huge or negative too), then random bytes."""
    header = dict(descr=draw(st.sampled_from(["<f8", "<f4", ">f8", "|b1", "<i8", "<c16", "|O", "<U3", "|V8", "?"])),
                  fortran_order=draw(st.booleans()),
                  shape=tuple(draw(st.lists(st.integers(0, 4) | st.integers(-1, 2 ** 63), max_size=3))))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + draw(st.binary(max_size=64))


@st.composite
def spoilt(draw, data: bytes):
    """``data`` three times in four, else garbled."""
    return draw(garbled(data)) if draw(one_in(4)) else data


ODD_NPY = st.sampled_from([np.ones(3), np.ones((2, 0)), np.ones((2, 2, 2)), np.array([["a"]]), np.ones((1, 2), complex),
                           np.array([[1, None]], dtype=object), np.zeros((1, 2), "datetime64[s]"), np.float64(2)])


@st.composite
def label_text(draw, labels, names=None):
    """A .txt/.csv labels file: one label per line, or name,label rows in a random order,
    maybe with a header; one time in four with a line spoilt."""
    rows = [f"{n},{v}" for n, v in zip(names, labels)] if names is not None else [str(v) for v in labels]
    if names is not None:
        rows = draw(st.permutations(rows))
    if draw(st.booleans()):
        rows = [draw(st.sampled_from(["label", "name,label", "Class", "y"]))] + rows
    if rows and draw(one_in(4)):
        rows[draw(st.integers(0, len(rows) - 1))] = draw(st.sampled_from(["", ",", "a,b,c", " ", "x", "\x00",
                                                                          "é,1", '"', "9" * 5000]))
    return (draw(st.sampled_from(["\n", "\r\n", "\r"])).join(rows) + draw(st.sampled_from(["", "\n", "\n\n"]))).encode()


@st.composite
def bag_files(draw, dim=st.integers(1, 3)):
    """(files, bags path, labels path or None): bags as a directory of .npy files or one .npz,
    labels stored in the .npz or in a .txt/.csv file, each well formed or not."""
    arrays = draw(bags_arrays(n_bags=st.integers(1, 6), dim=dim))
    labels = [str(v) for v in draw(labels_for(len(arrays)))]
    names = [f"bag{i}" for i in draw(st.lists(st.integers(0, 30), min_size=len(arrays), max_size=len(arrays),
                                              unique=True))]
    files, labels_path = {}, None
    if draw(st.booleans()):
        bags_path = "bags"
        for name, a in zip(names, arrays):
            data = npy_bytes(draw(ODD_NPY) if draw(one_in(16)) else a)
            if draw(one_in(16)):
                data = draw(st.sampled_from([b"", draw(garbled(data)), draw(npy_headers())]))
            files[f"bags/{name}.npy"] = data
        if draw(one_in(10)):
            files["bags/notes.txt"] = b"other files are ignored"
        if not draw(one_in(5)):
            labels_path = draw(st.sampled_from(["y.txt", "y.csv", "y.CSV", "y.dat"]))
            by_name = labels_path.lower().endswith(".csv") and draw(st.booleans())
            files[labels_path] = draw(label_text(labels, names if by_name else None))
    else:
        bags_path = draw(st.sampled_from(["bags.npz", "bags.NPZ", "bags.npy"]))
        bags = Bags.from_arrays(arrays)
        stored = dict(features=bags.features, offsets=bags.offsets)
        if not draw(one_in(4)):
            stored["labels"] = np.array(labels)
        if draw(one_in(10)):  # no bags at all
            stored = {key: a[:1] if key == "offsets" else a[:0] for key, a in stored.items()}
        if draw(one_in(5)):  # an array missing, of another shape or dtype
            key = draw(st.sampled_from(sorted(stored)))
            stored[key] = draw(st.sampled_from([stored[key][:-1], stored[key].astype(str), stored[key].reshape(1, -1),
                                                draw(ODD_NPY)]))
            stored = {k: v for k, v in stored.items() if v.dtype != object}
        files[bags_path] = draw(spoilt(npz_bytes(**stored)))
        if draw(one_in(3)):
            labels_path = draw(st.sampled_from(["y.txt", "y.csv"]))
            files[labels_path] = draw(label_text(labels))
    if draw(one_in(20)):
        bags_path = "missing.npz"
    if labels_path and draw(one_in(10)):
        files[labels_path] = draw(st.binary(max_size=100))
    return files, bags_path, labels_path


@contextlib.contextmanager
def written(files):
    """A temporary directory holding ``files``; yields its path."""
    with tempfile.TemporaryDirectory() as root:
        for name, data in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
        yield root


def check_loaded(bags, y):
    """What the loaders return: Bags of finite features and one label per bag."""
    assert isinstance(bags, Bags) and bags.dtype in (np.float32, np.float64)
    assert np.isfinite(bags.features).all() and bags.dim >= 1
    assert y is None or (isinstance(y, np.ndarray) and y.shape == (len(bags),))


@CHEAP
@given(case=bag_files())
@example(case=({"bags/bag1.npy": UNCLOSED_NPY}, "bags", None))
def test_loaders(case):
    files, bags_path, labels_path = case
    with written(files) as root:
        try:
            bags, y = load_bags(os.path.join(root, bags_path), labels_path and os.path.join(root, labels_path))
        except ValueError:
            return
    check_loaded(bags, y)
    if labels_path and labels_path.endswith((".txt", ".csv")):  # whole numbers, other (finite) numbers, or text
        assert y.dtype == np.int64 or (y.dtype == np.float64 and np.isfinite(y).all()) or y.dtype.kind == "U"


@functools.lru_cache(maxsize=None)
def fitted(kind: str):
    """A tiny fitted model: one of the command line's methods (as 'lfagg train' builds it), or
    a fitted BagOfWords, which is no classifier."""
    bags, y = make_circles_bags(12, 8, random_state=0)
    if kind == "encoder":
        return lfagg.BagOfWords(2, random_state=0).fit(bags)
    labels = np.array(["inner", "outer"])[y] if kind in ("t1", "vlad") else y  # string and integer classes
    return cli.build_model(kind, 2, epochs=1, samples_per_bag=5, verbose=0).fit(bags, labels)


def archive(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def saved(kind: str) -> bytes:
    """The bytes lfagg.save writes for ``fitted(kind)``."""
    with tempfile.TemporaryDirectory() as root:
        lfagg.save(fitted(kind), os.path.join(root, "m.lfagg"))
        with open(os.path.join(root, "m.lfagg"), "rb") as fh:
            return fh.read()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
KINDS = ("t1", "t2", "bow", "vlad", "fv", "encoder")


@st.composite
def tampered(draw, kind):
    """(payload, description): the skops payload of ``fitted(kind)`` with one fitted
    attribute (of the model, its classifier or its encoder) replaced by a random value."""
    model = skops.io.loads(skops.io.dumps(fitted(kind)), trusted=list(lfagg.persistence.TRUSTED_TYPES))
    parts = [model] + [getattr(model, name) for name in ("classifier_", "encoder_") if hasattr(model, name)]
    part = draw(st.sampled_from(parts))
    name = draw(st.sampled_from(sorted(n for n in vars(part) if n.endswith("_") or part is not model)))
    value = draw(ANY_SHAPE.flatmap(reals) | st.sampled_from([None, "x", -1, 0, 2.5, np.nan, [1, 2]]))
    setattr(part, name, value)
    return skops.io.dumps(model), f"{type(part).__name__}.{name} = {value!r}"


@st.composite
def model_bytes(draw):
    """A model file as lfagg.save writes it, garbled, or an archive of its layout whose
    lfagg.json (random JSON, deeply nested too) or model.skops (garbled, another object,
    a tampered model) is crafted."""
    kind = draw(st.sampled_from(KINDS))
    how = draw(st.sampled_from(["saved", "garbled", "meta", "payload", "members"]))
    if how == "saved":
        return Described(saved(kind), f"{kind} as saved")
    if how == "garbled":
        return Described(draw(garbled(saved(kind))), f"{kind} garbled")
    with zipfile.ZipFile(io.BytesIO(saved(kind))) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    if how == "meta":
        meta = json.loads(members["lfagg.json"])
        choice = draw(st.sampled_from(["field", "json", "deep"]))
        if choice == "field":
            meta[draw(st.sampled_from(sorted(meta)))] = draw(JSON)
            members["lfagg.json"] = json.dumps(meta)
        elif choice == "json":
            members["lfagg.json"] = json.dumps(draw(JSON))
        else:
            depth = draw(st.sampled_from([10, 100_000]))
            members["lfagg.json"] = "[" * depth + "]" * depth
        how = f"lfagg.json {members['lfagg.json'][:60]!r}"
    elif how == "payload":
        what = draw(st.sampled_from(["garbled", "tampered", "another object"]))
        if what == "garbled":
            members["model.skops"] = draw(garbled(members["model.skops"]))
        elif what == "tampered":
            members["model.skops"], what = draw(tampered(kind))
        else:
            members["model.skops"] = skops.io.dumps(draw(st.sampled_from([np.arange(3), {"a": 1}, [1, "x"], None])))
        how = f"model.skops {what}"
    else:
        dropped = draw(st.sampled_from(sorted(members)))
        del members[dropped]
        members["other"] = draw(st.binary(max_size=20))
        how = f"{dropped} replaced by another member"
    return Described(archive(members), f"{kind}, {how}")


# Found by the fuzz: json.loads raised RecursionError on it, which lfagg.load let through.
DEEP_JSON_MODEL = Described(archive({"lfagg.json": "[" * 100_000 + "]" * 100_000, "model.skops": b""}),
                            "lfagg.json of 100,000 nested lists")


@CHEAP
@given(data=model_bytes())
@example(data=DEEP_JSON_MODEL)
def test_load(data):
    with written({"m.lfagg": data}) as root:
        try:
            model = lfagg.load(os.path.join(root, "m.lfagg"))
        except ValueError:
            return
    assert isinstance(model, ESTIMATORS)


# ---------------------------------------------------------------------------------------
# The command line, in process
# ---------------------------------------------------------------------------------------
MALFORMED = st.sampled_from(["", "abc", "-1", "0", "nan", "inf", "1e999", "2.5", "--x", "１"])
TRAIN_OPTIONS = {
    "--method": st.sampled_from(cli.METHODS), "--codewords": st.integers(1, 4).map(str),
    "--epochs": st.integers(0, 2).map(str), "--gamma": st.sampled_from(["auto", "0.5", "1e-30", "1e300"]),
    "--gamma-scale": st.sampled_from(["1", "0.01", "100"]),
    "--lr": st.sampled_from(["1e-3", "0.1", "30", "300", "1e6"]),
    "--samples-per-bag": st.integers(1, 5).map(str), "--seed": st.integers(-2, 2 ** 40).map(str),
    "--threads": st.sampled_from(["1", "2"]), "--verbose": st.sampled_from(["0", "0", "1"])}


@st.composite
def options(draw, choices):
    """Some of ``choices`` with their values, rarely one malformed."""
    argv = []
    for name, values in choices.items():
        if draw(st.booleans()):
            argv += [name, draw(MALFORMED if draw(one_in(20)) else values)]
    return argv


@st.composite
def cli_cases(draw):
    """(files, argv with "{root}" for the directory holding the files): train, encode or
    evaluate on random bags, labels and model files."""
    files, bags_path, labels_path = draw(bag_files(dim=mostly(st.just(2), st.integers(1, 3))))  # models: D = 2
    command = draw(st.sampled_from(["train", "encode", "evaluate", "store"]))
    if command == "store":  # store build: the files as a Zarr bag store
        argv = ["store", "build", "--bags", f"{{root}}/{bags_path}", "--out",
                draw(st.sampled_from(["{root}/s.zarr"] * 4 + ["{root}/nowhere/s.zarr", "{root}"]))]
        return files, argv + (["--labels", f"{{root}}/{labels_path}"] if labels_path else [])
    argv = [command, "--bags", f"{{root}}/{bags_path}"]
    if labels_path and command != "encode":
        argv += ["--labels", f"{{root}}/{labels_path}"]
    if command == "train":
        argv += ["--codewords", draw(st.integers(1, 4).map(str)), "--epochs", draw(st.integers(0, 2).map(str)),
                 *draw(options(TRAIN_OPTIONS)), "--model",
                 draw(st.sampled_from(["{root}/m.lfagg"] * 8 + ["{root}/nowhere/m.lfagg", "{root}"]))]
        return files, argv
    kind = draw(st.sampled_from(KINDS))
    files["model.lfagg"] = draw(model_bytes()) if draw(one_in(2)) else Described(saved(kind), f"{kind} as saved")
    argv += ["--model", "{root}/missing.lfagg" if draw(one_in(20)) else "{root}/model.lfagg"]
    argv += draw(options({"--threads": st.sampled_from(["1", "2"])}))
    if command == "encode":
        argv += ["--out", draw(st.sampled_from(["{root}/r.npy", "{root}/r", "{root}/nowhere/r.npy", "{root}"]))]
    return files, argv


def run_main(argv):
    """(status, stdout, stderr) of lfagg.cli.main(argv), in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def option(argv, name, default=None):
    """The value of option ``name`` in argv (the last one, as argparse takes), or ``default``."""
    values = [value for flag, value in zip(argv, argv[1:]) if flag == name]
    return values[-1] if values else default


def check_status(argv, rc, err):
    """Status 0, 2 (argparse, with its usage) or 1 with one error line "lfagg <command>:
    error: ...", last on stderr; other lines only warnings, or progress when verbose."""
    command, lines = argv[0], err.splitlines()
    assert rc in (0, 1, 2), (rc, err)
    assert "Traceback" not in err
    if rc == 2:
        assert "usage: lfagg" in err
        return
    if rc == 1:
        assert lines and lines[-1].startswith(f"lfagg {command}: error: "), err
        lines.pop()
    if command in ("train", "demo", "store", "encode", "evaluate") and option(argv, "--verbose", "1") != "0":
        assert not any(line.startswith(f"lfagg {command}: error:") for line in lines), err
    else:
        assert all(line.startswith(f"lfagg {command}: warning: ") for line in lines), err


def check_cli(files, argv) -> int:
    """lfagg.cli.main(argv) on ``files``: its status (returned) and stderr, and what it wrote or printed."""
    with written(files) as root:
        argv = [a.replace("{root}", root) for a in argv]
        rc, out, err = run_main(argv)
        check_status(argv, rc, err)
        if rc:
            return rc
        if argv[0] == "train":
            model = lfagg.load(option(argv, "--model"))
            assert isinstance(model, (lfagg.LearnedBoW, lfagg.LearnedVLAD, lfagg.BagClassifier))
            assert hasattr(model, "classifier_") and "saved to" in out
        elif argv[0] == "store":
            store = lfagg.BagStore.open(option(argv, "--out"))
            assert "written to" in out and len(store) == len(load_bags(option(argv, "--bags"))[0])
        elif argv[0] == "encode":
            path = option(argv, "--out")
            R = np.load(path if path.endswith(".npy") else path + ".npy")  # as numpy.save names it
            assert R.ndim == 2 and R.shape[0] == len(load_bags(option(argv, "--bags"))[0]) and np.isfinite(R).all()
        else:
            accuracy = float(out.split()[1])
            assert out.startswith("accuracy ") and 0 <= accuracy <= 1
    return rc


FOUR_BAGS_NPZ = dict(features=np.concatenate(FOUR_BAGS), offsets=np.arange(0, 9, 2))


@COSTLY
@pytest.mark.filterwarnings("default")  # shown as "lfagg <command>: warning: ..." lines, which check_status judges
@given(case=cli_cases())
# the files found above, through the command line
@example(case=({"model.lfagg": DEEP_JSON_MODEL, "bags.npz": npz_bytes(**FOUR_BAGS_NPZ, labels=np.arange(4) % 2)},
               ["evaluate", "--model", "{root}/model.lfagg", "--bags", "{root}/bags.npz"]))
@example(case=({"bags/bag1.npy": UNCLOSED_NPY, "y.txt": b"0\n"},
               ["train", "--bags", "{root}/bags", "--labels", "{root}/y.txt", "--model", "{root}/m.lfagg"]))
# Found by the fuzz: 'lfagg train' took bytes labels from an .npz, then model.score raised TypeError.
@example(case=({"bags.npz": npz_bytes(**FOUR_BAGS_NPZ, labels=np.array([b"x", b"y"] * 2))},
               ["train", "--bags", "{root}/bags.npz", "--method", "bow", "--codewords", "2", "--verbose", "0",
                "--model", "{root}/m.lfagg"]))
def test_cli(case):
    check_cli(*case)


NO_BAGS_NPZ = npz_bytes(features=np.zeros((0, 2)), offsets=np.zeros(1, np.int64), labels=np.zeros(0, np.int64))


def test_evaluate_no_bags():
    """Found by the fuzz: 'lfagg evaluate' on an .npz of no bags printed "accuracy nan" and exited with 0."""
    check_cli({"model.lfagg": saved("t1"), "bags.npz": NO_BAGS_NPZ},
              ["evaluate", "--model", "{root}/model.lfagg", "--bags", "{root}/bags.npz"])


def test_encode_no_bags():
    """Found by the fuzz: 'lfagg encode' of an .npz of no bags (valid: every other model encodes them as an
    empty array) with a VLAD model failed in VLAD's intra-normalisation."""
    argv = ["encode", "--model", "{root}/model.lfagg", "--bags", "{root}/bags.npz", "--out", "{root}/r.npy"]
    assert check_cli({"model.lfagg": saved("vlad"), "bags.npz": NO_BAGS_NPZ}, argv) == 0


@st.composite
def demo_argv(draw):
    """Small demos, most of them big enough for BoW-16K (16 K local features)."""
    return ["demo", "--n-bags", draw(mostly(st.integers(4, 8), st.integers(1, 3)).map(str)),
            "--n-per-bag", draw(mostly(st.integers(4, 8), st.integers(1, 3)).map(str)),
            "--codewords", draw(mostly(st.just(1), st.integers(2, 3)).map(str)),
            "--epochs", draw(st.integers(0, 1).map(str)),
            *draw(options({"--seed": st.integers(-2, 2 ** 40).map(str), "--threads": st.sampled_from(["1", "2"]),
                           "--verbose": st.sampled_from(["0", "1"])}))]


@fuzz(10, divisor=25)
@given(argv=demo_argv())
def test_cli_demo(argv):
    rc, out, err = run_main(argv)
    check_status(argv, rc, err)
    if rc == 0:
        accuracies = [float(line.split()[-2]) for line in out.splitlines()[2:]]
        assert len(accuracies) == 8 and all(0 <= a <= 1 for a in accuracies), out
