"""Every bad input to the soft-encoder ops raises ValueError naming the argument;
random garbage raises only ValueError / TypeError (never crashes)."""

import numpy as np
import pytest

import lfagg.ops as ops

N, D, K = 10, 3, 4
OFFSETS = np.array([0, 4, 4, 10], dtype=np.int64)
N_BAGS = len(OFFSETS) - 1

OPS = {
    "soft_bow": (ops.soft_bow, False, K),
    "soft_vlad": (ops.soft_vlad, False, K * D),
    "soft_bow_backward": (ops.soft_bow_backward, True, K),
    "soft_vlad_backward": (ops.soft_vlad_backward, True, K * D),
}
ALL_OPS = list(OPS)
BACKWARD_OPS = [name for name in OPS if OPS[name][1]]


def valid_args(op_name, dtype=np.float64):
    rng = np.random.default_rng(0)
    _, backward, out_dim = OPS[op_name]
    args = dict(
        features=rng.normal(size=(N, D)).astype(dtype),
        offsets=OFFSETS.copy(),
        centers=rng.normal(size=(K, D)),
        precisions=np.ones((K, D)),
        gamma=0.5,
    )
    if backward:
        args["grad_output"] = rng.normal(size=(N_BAGS, out_dim))
    return args


def call(op_name, **overrides):
    fn, backward, _ = OPS[op_name]
    args = valid_args(op_name)
    args.update(overrides)
    order = ["features", "offsets", "centers", "precisions", "gamma"]
    if backward:
        order.append("grad_output")
    positional = [args.pop(k) for k in order]
    return fn(*positional, **args)


def with_value(shape, index, value):
    a = np.ones(shape)
    a[index] = value
    return a


def feat_with(value):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(N, D))
    f[7, 1] = value
    return f


def centers_with(value):
    c = np.random.default_rng(2).normal(size=(K, D))
    c[2, 0] = value
    return c


# (case id, overrides, argument name expected in the message)
CASES = [
    ("features_1d", dict(features=np.ones(N)), "features"),
    ("features_3d", dict(features=np.ones((N, D, 1))), "features"),
    ("features_0d", dict(features=np.float64(1.0)), "features"),
    (
        "features_0_columns",
        dict(features=np.ones((N, 0)), centers=np.ones((K, 0)), precisions=np.ones((K, 0))),
        "features",
    ),
    ("features_nan", dict(features=feat_with(np.nan)), "features"),
    ("features_inf", dict(features=feat_with(np.inf)), "features"),
    ("features_neg_inf", dict(features=feat_with(-np.inf)), "features"),
    ("features_nan_float32", dict(features=feat_with(np.nan).astype(np.float32)), "features"),
    ("centers_1d", dict(centers=np.ones(D), precisions=np.ones(D)), "centers"),
    ("centers_3d", dict(centers=np.ones((K, D, 1)), precisions=np.ones((K, D, 1))), "centers"),
    ("centers_wrong_D", dict(centers=np.ones((K, D + 2)), precisions=np.ones((K, D + 2))), "centers"),
    ("centers_fewer_D", dict(centers=np.ones((K, D - 1)), precisions=np.ones((K, D - 1))), "centers"),
    ("centers_0_rows", dict(centers=np.ones((0, D)), precisions=np.ones((0, D))), "centers"),
    ("centers_nan", dict(centers=centers_with(np.nan)), "centers"),
    ("centers_inf", dict(centers=centers_with(np.inf)), "centers"),
    ("precisions_wrong_K", dict(precisions=np.ones((K - 1, D))), "precisions"),
    ("precisions_wrong_D", dict(precisions=np.ones((K, D + 1))), "precisions"),
    ("precisions_1d", dict(precisions=np.ones(K * D)), "precisions"),
    ("precisions_transposed", dict(precisions=np.ones((D, K))), "precisions"),
    ("precisions_zero", dict(precisions=with_value((K, D), (1, 2), 0.0)), "precisions"),
    ("precisions_negative", dict(precisions=with_value((K, D), (3, 0), -0.5)), "precisions"),
    ("precisions_nan", dict(precisions=with_value((K, D), (0, 0), np.nan)), "precisions"),
    ("gamma_zero", dict(gamma=0.0), "gamma"),
    ("gamma_negative", dict(gamma=-1.0), "gamma"),
    ("gamma_nan", dict(gamma=float("nan")), "gamma"),
    ("gamma_inf", dict(gamma=float("inf")), "gamma"),
    ("offsets_2d", dict(offsets=OFFSETS.reshape(1, -1)), "offsets"),
    ("offsets_empty", dict(offsets=np.array([], dtype=np.int64)), "offsets"),
    ("offsets_first_nonzero", dict(offsets=np.array([1, 4, 4, 10])), "offsets"),
    ("offsets_first_negative", dict(offsets=np.array([-1, 4, 4, 10])), "offsets"),
    ("offsets_decreasing", dict(offsets=np.array([0, 6, 4, 10])), "offsets"),
    ("offsets_last_too_small", dict(offsets=np.array([0, 4, 4, 9])), "offsets"),
    ("offsets_last_too_big", dict(offsets=np.array([0, 4, 4, 11])), "offsets"),
    ("offsets_huge", dict(offsets=np.array([0, 2**62, 10])), "offsets"),
    ("offsets_float", dict(offsets=OFFSETS.astype(np.float64)), "offsets"),
    ("n_threads_zero", dict(n_threads=0), "n_threads"),
    ("n_threads_negative", dict(n_threads=-3), "n_threads"),
]

GRAD_CASES = [
    ("grad_output_too_few_bags", lambda od: np.ones((N_BAGS - 1, od)), "grad_output"),
    ("grad_output_too_many_bags", lambda od: np.ones((N_BAGS + 1, od)), "grad_output"),
    ("grad_output_wrong_width", lambda od: np.ones((N_BAGS, od + 1)), "grad_output"),
    ("grad_output_1d", lambda od: np.ones(N_BAGS * od), "grad_output"),
    ("grad_output_transposed", lambda od: np.ones((od, N_BAGS)), "grad_output"),
    ("grad_output_nan", lambda od: with_value((N_BAGS, od), (2, 1), np.nan), "grad_output"),
    ("grad_output_inf", lambda od: with_value((N_BAGS, od), (0, 0), np.inf), "grad_output"),
]


@pytest.mark.parametrize("op_name", ALL_OPS)
def test_valid_call_works(op_name):
    out = call(op_name)
    if OPS[op_name][1]:
        gC, gP, gg = out
        assert np.shape(gC) == (K, D) and np.shape(gP) == (K, D) and np.ndim(gg) == 0
    else:
        assert out.shape == (N_BAGS, OPS[op_name][2])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("op_name", ALL_OPS)
def test_bad_input_raises_value_error(op_name, case):
    _, overrides, name = case
    with pytest.raises(ValueError, match=name):
        call(op_name, **overrides)


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
@pytest.mark.parametrize("op_name", BACKWARD_OPS)
def test_bad_grad_output_raises_value_error(op_name, case):
    _, make, name = case
    with pytest.raises(ValueError, match=name):
        call(op_name, grad_output=make(OPS[op_name][2]))


@pytest.mark.parametrize("op_name", ALL_OPS)
def test_bad_input_float32_features(op_name):
    # the same checks apply to the float32 path
    f32 = valid_args(op_name, np.float32)["features"]
    with pytest.raises(ValueError, match="centers"):
        call(op_name, features=f32, centers=np.ones((K, D + 1)), precisions=np.ones((K, D + 1)))
    with pytest.raises(ValueError, match="precisions"):
        call(op_name, features=f32, precisions=with_value((K, D), (0, 1), -1.0))
    with pytest.raises(ValueError, match="offsets"):
        call(op_name, features=f32, offsets=np.array([0, 4, 3, 10]))
    with pytest.raises(ValueError, match="gamma"):
        call(op_name, features=f32, gamma=-2.0)


# ----------------------------------------------------------------------------- garbage


def _random_array(rng):
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(s) for s in rng.integers(0, 6, size=ndim))
    kind = int(rng.integers(0, 6))
    if kind == 0:
        a = rng.normal(size=shape)
    elif kind == 1:
        a = rng.normal(size=shape).astype(np.float32)
    elif kind == 2:
        a = rng.integers(-3, 12, size=shape)
    elif kind == 3:
        a = rng.choice([0.0, 1.0, -1.0, np.nan, np.inf, 1e308], size=shape)
    elif kind == 4:
        a = rng.integers(0, 2, size=shape).astype(bool)
    else:
        a = rng.integers(-(2**62), 2**62, size=shape)
    return a


def _random_gamma(rng):
    return rng.choice([0.5, 1e-300, 1e300, -1.0, 0.0, np.nan, np.inf, 3])


ALLOWED = (ValueError, TypeError)


def _try(op_name, args):
    fn, backward, _ = OPS[op_name]
    try:
        fn(*args)
    except ALLOWED:
        pass


# casting garbage such as 1e308 to float32 may warn before it is rejected
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op_name", ALL_OPS)
def test_random_garbage_numpy(op_name):
    rng = np.random.default_rng(1234)
    backward = OPS[op_name][1]
    for _ in range(150):
        base = valid_args(op_name)
        args = [base["features"], base["offsets"], base["centers"], base["precisions"], base["gamma"]]
        if backward:
            args.append(base["grad_output"])
        # corrupt one or more arguments
        for i in rng.choice(len(args), size=int(rng.integers(1, len(args) + 1)), replace=False):
            args[i] = _random_gamma(rng) if i == 4 else _random_array(rng)
        if rng.random() < 0.3:
            args.append(int(rng.integers(-4, 4)))  # n_threads
        _try(op_name, args)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op_name", ALL_OPS)
def test_random_garbage_objects(op_name):
    backward = OPS[op_name][1]
    junk = [None, "abc", [[1, 2], [3]], {"a": 1}, object(), np.array(["x", "y"]), 1j, [[]]]
    base = valid_args(op_name)
    keys = ["features", "offsets", "centers", "precisions", "gamma"]
    if backward:
        keys.append("grad_output")
    for key in keys:
        for j in junk:
            args = [base[k] for k in keys]
            args[keys.index(key)] = j
            _try(op_name, args)
    for j in ["2", 2.5, object()]:
        try:
            call(op_name, n_threads=j)
        except ALLOWED:
            pass


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_random_garbage_hypothesis():
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings, HealthCheck
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.bool_])

    def arrays():
        return dtypes.flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
        )

    offsets_st = st.one_of(
        arrays(),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.integers(0, 12), max_size=6).map(lambda v: np.array(v, dtype=np.int64)),
    )
    gamma_st = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
    n_threads_st = st.one_of(st.none(), st.integers(-5, 4))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        op_name=st.sampled_from(ALL_OPS),
        features=arrays(),
        offsets=offsets_st,
        centers=arrays(),
        precisions=arrays(),
        gamma=gamma_st,
        grad_output=arrays(),
        n_threads=n_threads_st,
    )
    def check(op_name, features, offsets, centers, precisions, gamma, grad_output, n_threads):
        fn, backward, _ = OPS[op_name]
        args = [features, offsets, centers, precisions, gamma]
        if backward:
            args.append(grad_output)
        try:
            fn(*args, n_threads=n_threads)
        except ALLOWED:
            pass

    check()

    # mostly-valid inputs with one field perturbed exercise the deeper checks
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        op_name=st.sampled_from(ALL_OPS),
        which=st.sampled_from(["features", "offsets", "centers", "precisions", "grad_output"]),
        value=arrays(),
        offsets=offsets_st,
        gamma=gamma_st,
    )
    def check_one(op_name, which, value, offsets, gamma):
        args = valid_args(op_name)
        if which == "offsets":
            args["offsets"] = offsets
        elif which != "grad_output" or OPS[op_name][1]:
            args[which] = value
        args["gamma"] = gamma
        try:
            call(op_name, **args)
        except ALLOWED:
            pass

    check_one()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("encoder", ["soft_bow", "soft_vlad"])
def test_a_bad_feature_far_from_the_first_rows_raises_on_every_path(encoder, bad, dtype):
    """The kernels check the features as they read each block: one NaN or infinity in
    the last of 3,000 rows (several blocks and threads' worth) must still be found."""
    rng = np.random.default_rng(5)
    features = rng.normal(size=(3_000, D)).astype(dtype)
    offsets = np.array([0, 1_000, 3_000])
    centers, precisions = rng.normal(size=(K, D)).astype(dtype), np.ones((K, D), dtype)
    forward, backward = getattr(ops, encoder), getattr(ops, encoder + "_backward")
    grad = rng.normal(size=(2, K if encoder == "soft_bow" else K * D)).astype(dtype)
    _, kept = forward(features, offsets, centers, precisions, 0.5, return_assignments=True)
    features[-1, 1] = bad
    for n_threads in (1, 2):
        for extra in ({}, dict(return_assignments=True), dict(assignments_out=np.empty_like(kept))):
            with pytest.raises(ValueError, match="features contains NaN or infinity"):
                forward(features, offsets, centers, precisions, 0.5, n_threads, **extra)
        for assignments in (None, kept):
            for with_grad_features in (False, True):
                with pytest.raises(ValueError, match="features contains NaN or infinity"):
                    backward(features, offsets, centers, precisions, 0.5, grad, n_threads, assignments=assignments,
                             return_grad_features=with_grad_features)


def test_gamma_underflowing_float32_is_rejected():
    f = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="gamma = 1e-46 is 0.0 in float32, the features' dtype"):
        ops.soft_bow(f, [0, 3], np.ones((1, 2)), np.ones((1, 2)), 1e-46)
    ops.soft_bow(f.astype(np.float64), [0, 3], np.ones((1, 2)), np.ones((1, 2)), 1e-46)  # fine in float64
