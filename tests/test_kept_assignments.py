"""The soft assignments kept by the forward pass (return_assignments=True) and the
backward pass that reuses them, against the numpy reference and the recomputing backward."""

import numpy as np
import pytest

import lfagg.ops as ops
from reference import assignments as ref_assignments
from test_soft_encoders import BWD, ENCODERS, FWD, REF_BWD, make_problem, out_dim, scaled_atol

LAYOUTS = {"small": [4, 0, 6], "one_big_bag": [3000], "mixed": [5, 0, 1, 700, 0, 3, 129]}


def problem(seed, sizes, dtype, D=6, K=5, gamma_times_d=1.5):
    rng = np.random.default_rng(seed)
    f, off, C, P, gamma = make_problem(rng, sizes, D=D, K=K, dtype=dtype, gamma_times_d=gamma_times_d)
    return rng, f, off, C.astype(dtype), P.astype(dtype), gamma


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_forward_returns_the_encoding_and_the_assignments(encoder, layout, dtype):
    _, f, off, C, P, gamma = problem(1, LAYOUTS[layout], dtype)
    R, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    np.testing.assert_array_equal(R, FWD[encoder](f, off, C, P, gamma))
    assert A.shape == (len(f), len(C)) and A.dtype == dtype
    ref = ref_assignments(f, C, P, gamma)
    tol = dict(rtol=1e-10, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(A, ref, **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_backward_with_kept_assignments_matches_reference(encoder, layout, dtype):
    rng, f, off, C, P, gamma = problem(2, LAYOUTS[layout], dtype)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    G = rng.normal(size=(len(off) - 1, out_dim(encoder, len(C), f.shape[1]))).astype(dtype)
    gC, gP, gg = BWD[encoder](f, off, C, P, gamma, G, assignments=A)
    rC, rP, rg = REF_BWD[encoder](f, off, C, P, gamma, G)
    rtol, atol = (1e-9, 1e-11) if dtype == np.float64 else (1e-3, 1e-4)
    assert gC.dtype == dtype and gP.dtype == dtype
    np.testing.assert_allclose(gC, rC, rtol=rtol, atol=scaled_atol(rC, atol))
    np.testing.assert_allclose(gP, rP, rtol=rtol, atol=scaled_atol(rP, atol))
    np.testing.assert_allclose(float(gg), rg, rtol=rtol, atol=atol * max(abs(rg), 1.0))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_kept_assignments_with_exact_zeros(encoder):
    """gamma * distance ~ 1e4: most assignments underflow to exactly 0, whose logs the
    gradient w.r.t. gamma must not turn into NaN."""
    rng, f, off, C, P, gamma = problem(3, [40, 1, 0, 300], np.float64, gamma_times_d=1e4)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    assert np.mean(A == 0) > 0.5
    G = rng.normal(size=(4, out_dim(encoder, len(C), f.shape[1])))
    kept = BWD[encoder](f, off, C, P, gamma, G, assignments=A)
    rC, rP, rg = REF_BWD[encoder](f, off, C, P, gamma, G)
    np.testing.assert_allclose(kept[0], rC, rtol=1e-6, atol=scaled_atol(rC, 1e-8))
    np.testing.assert_allclose(kept[1], rP, rtol=1e-6, atol=scaled_atol(rP, 1e-8))
    np.testing.assert_allclose(float(kept[2]), rg, rtol=1e-6, atol=1e-8 * max(abs(rg), 1.0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_kept_assignments_threads_deterministic(encoder, dtype):
    # ~60 chunks of 512 rows: several waves of the parallel loops for 1-3 threads
    rng, f, off, C, P, gamma = problem(4, [3, 30000, 0, 17, 700, 1], dtype, D=16, K=12)
    G = rng.normal(size=(6, out_dim(encoder, 12, 16))).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        R, A = FWD[encoder](f, off, C, P, gamma, n_threads=nt, return_assignments=True)
        results.append((R, A, *BWD[encoder](f, off, C, P, gamma, G, n_threads=nt, assignments=A)))
    for other in results[1:]:
        for x, y in zip(results[0], other):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


BAD_ASSIGNMENTS = {
    "too_few_rows": lambda A: A[:-1],
    "too_many_columns": lambda A: np.hstack([A, A[:, :1]]),
    "one_dimensional": lambda A: A.ravel(),
    "nan": lambda A: np.where(np.arange(A.size).reshape(A.shape) == 7, np.nan, A),
    "inf": lambda A: np.where(np.arange(A.size).reshape(A.shape) == 3, np.inf, A),
    "negative": lambda A: np.where(np.arange(A.size).reshape(A.shape) == 5, -0.5, A),
}


@pytest.mark.parametrize("case", list(BAD_ASSIGNMENTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_bad_assignments_raise_value_error(encoder, case):
    rng, f, off, C, P, gamma = problem(5, [4, 0, 6], np.float64)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    G = rng.normal(size=(3, out_dim(encoder, len(C), f.shape[1])))
    with pytest.raises(ValueError, match="assignments"):
        BWD[encoder](f, off, C, P, gamma, G, assignments=BAD_ASSIGNMENTS[case](A))


@pytest.mark.parametrize("value", [np.nan, -np.inf, -1e-30])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_bad_assignments_far_from_the_first_rows_raise(encoder, n_threads, value):
    """The backward checks kept assignments as it reads them, chunk by chunk: a bad value
    in the very last row of many chunks' worth of features is still caught."""
    rng, f, off, C, P, gamma = problem(7, [1500, 0, 1700], np.float32)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    A[-1, -1] = value
    G = rng.normal(size=(3, out_dim(encoder, len(C), f.shape[1]))).astype(np.float32)
    with pytest.raises(ValueError, match="assignments must be finite and non-negative"):
        BWD[encoder](f, off, C, P, gamma, G, n_threads=n_threads, assignments=A)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_negative_subnormal_kept_assignment_counts_as_zero(encoder):
    """The kernels flush subnormal numbers to zero while they run: a kept assignment of
    -1e-40 (float32) is read, and checked, as the zero it becomes."""
    rng, f, off, C, P, gamma = problem(8, [700, 0, 500], np.float32)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    A[-1, -1] = 0.0
    G = rng.normal(size=(3, out_dim(encoder, len(C), f.shape[1]))).astype(np.float32)
    expected = BWD[encoder](f, off, C, P, gamma, G, assignments=A)
    A[-1, -1] = -1e-40
    for mine, theirs in zip(BWD[encoder](f, off, C, P, gamma, G, assignments=A), expected):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_empty_input_gives_empty_assignments():
    f = np.zeros((0, 3), dtype=np.float32)
    R, A = ops.soft_bow(f, [0], np.ones((2, 3)), np.ones((2, 3)), 1.0, return_assignments=True)
    assert R.shape == (0, 2) and A.shape == (0, 2) and A.dtype == np.float32


@pytest.mark.parametrize("encoder", ENCODERS)
def test_float32_gamma_gradient_with_kept_assignments_is_accurate(encoder):
    """Many dimensions and a small gamma (as auto_gamma gives): the gradient w.r.t. gamma
    from kept float32 assignments is as accurate as the one that recomputes distances."""
    rng, f, off, C, P, gamma = problem(6, [300, 500], np.float32, D=128, K=16, gamma_times_d=0.25)
    G = rng.normal(size=(2, out_dim(encoder, 16, 128))).astype(np.float32)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    *_, kept = BWD[encoder](f, off, C, P, gamma, G, assignments=A)
    *_, recomputed = BWD[encoder](f, off, C, P, gamma, G)
    *_, ref = REF_BWD[encoder](f, off, C, P, gamma, G)
    assert abs(kept - ref) <= 1e-5 * abs(ref)
    assert abs(recomputed - ref) <= 1e-5 * abs(ref)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gamma_gradient_with_kept_assignments_at_tiny_gamma(encoder):
    """gamma = 1e-30: the assignments are uniform; nothing in the gradient w.r.t. gamma
    may divide by gamma (a log(a) / gamma surrogate of the distances gave ~1e13 here)."""
    rng, f, off, C, P, _ = problem(7, [20, 0, 35], np.float64)
    G = rng.normal(size=(3, out_dim(encoder, len(C), f.shape[1])))
    _, A = FWD[encoder](f, off, C, P, 1e-30, return_assignments=True)
    *_, kept = BWD[encoder](f, off, C, P, 1e-30, G, assignments=A)
    *_, ref = REF_BWD[encoder](f, off, C, P, 1e-30, G)
    np.testing.assert_allclose(kept, ref, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_assignments_written_into_a_reused_buffer(encoder, dtype):
    """The training loop's buffer: a view of a larger array, holding the previous step's
    values (here NaN), receives exactly the assignments a fresh forward returns."""
    from lfagg import Bags
    from lfagg.encoders.soft import SOFT_ENCODERS
    from lfagg.training.loop import _Buffer

    _, f, off, C, P, gamma = problem(4, LAYOUTS["mixed"], dtype)
    soft, bags = SOFT_ENCODERS[encoder], Bags(f, off)
    buffer = _Buffer()
    buffer.take((len(f) + 50, len(C)), dtype)[...] = np.nan
    out = buffer.take((len(f), len(C)), dtype)
    R, A = soft.forward(bags, C, P, gamma, assignments_out=out)
    R_new, A_new = soft.forward(bags, C, P, gamma, return_assignments=True)
    assert np.shares_memory(A, out)
    np.testing.assert_array_equal(A, A_new)
    np.testing.assert_array_equal(R, R_new)
    with pytest.raises(ValueError, match="assignments_out must have shape"):
        soft.forward(bags, C, P, gamma, assignments_out=np.empty((len(f) - 1, len(C)), dtype))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        soft.forward(bags, C, P, gamma, assignments_out=out)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_public_forward_fills_assignments_out(encoder):
    _, f, off, C, P, gamma = problem(5, LAYOUTS["small"], np.float32)
    out = np.full((len(f), len(C)), np.nan, np.float32)
    R, A = FWD[encoder](f, off, C, P, gamma, assignments_out=out)
    assert A is out or np.shares_memory(A, out)
    R_new, A_new = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    np.testing.assert_array_equal(out, A_new)
    np.testing.assert_array_equal(R, R_new)
    for bad in (out.astype(np.float64), np.asfortranarray(out), out.tolist()):
        with pytest.raises(ValueError, match="assignments_out must be a C-contiguous numpy array"):
            FWD[encoder](f, off, C, P, gamma, assignments_out=bad)


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_assignments_out_sharing_memory_with_the_inputs_is_refused(encoder, pooling):
    """The max pooling of soft VLAD read the features (or centres) it had just overwritten
    with the assignments: 0.84 off, without a word."""
    rng = np.random.default_rng(0)
    f, C, P = rng.normal(size=(2, 2)), rng.normal(size=(2, 2)), np.ones((2, 2))  # (N, K) = (2, 2): any may be `out`
    original = f.copy()
    for name, features, centers in (("features", f, C), ("centers", f, C)):
        out = features if name == "features" else centers
        with pytest.raises(ValueError, match=f"assignments_out shares memory with {name}"):
            FWD[encoder](features, [0, 2], centers, P, 1.0, pooling=pooling, assignments_out=out)
    np.testing.assert_array_equal(f, original)  # refused before anything was written
