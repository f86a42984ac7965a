"""lfagg.ops.soft_bow / soft_vlad and their backward ops against the numpy reference,
finite differences of the C++ forward, and thread-count determinism."""

import zlib

import numpy as np
import pytest

import lfagg.ops as ops
from reference import (
    central_diff,
    distances,
    ref_soft_bow,
    ref_soft_bow_backward,
    ref_soft_vlad,
    ref_soft_vlad_backward,
)

FWD = {"bow": ops.soft_bow, "vlad": ops.soft_vlad}
BWD = {"bow": ops.soft_bow_backward, "vlad": ops.soft_vlad_backward}
REF_FWD = {"bow": ref_soft_bow, "vlad": ref_soft_vlad}
REF_BWD = {"bow": ref_soft_bow_backward, "vlad": ref_soft_vlad_backward}
ENCODERS = ["bow", "vlad"]


def offsets_from_sizes(sizes):
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def make_problem(rng, sizes, D=8, K=5, dtype=np.float64, gamma_times_d=2.0):
    """Random problem; gamma chosen so that gamma * median distance ~ gamma_times_d."""
    offsets = offsets_from_sizes(sizes)
    n = int(offsets[-1])
    features = rng.normal(size=(n, D)).astype(dtype)
    centers = rng.normal(size=(K, D))
    precisions = rng.uniform(0.5, 2.0, size=(K, D))
    if n:
        med = np.median(distances(features[:2000], centers, precisions))
    else:
        med = 2.0 * D
    gamma = gamma_times_d / med
    return features, offsets, centers, precisions, gamma


def out_dim(encoder, K, D):
    return K if encoder == "bow" else K * D


def scaled_atol(ref, factor):
    m = float(np.max(np.abs(ref))) if np.size(ref) else 0.0
    return factor * m if m > 0 else factor


def seed_of(*names):
    return zlib.crc32("/".join(names).encode())


LAYOUTS = {
    "one_big_bag": [3000],
    "many_small_with_empty": [5, 0, 1, 17, 0, 64, 3, 0, 129, 2, 31, 0],
    "single_feature_bag": [1],
    "leading_and_trailing_empty": [0, 0, 7, 300, 0],
    "mixed_big_and_small": [1, 2500, 0, 40],
}


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_forward_float64_matches_reference(encoder, layout):
    rng = np.random.default_rng(seed_of(encoder, layout))
    sizes = LAYOUTS[layout]
    f, off, C, P, gamma = make_problem(rng, sizes, D=7, K=6)
    out = FWD[encoder](f, off, C, P, gamma)
    ref = REF_FWD[encoder](f, off, C, P, gamma)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    assert out.shape == (len(sizes), out_dim(encoder, 6, 7))
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=scaled_atol(ref, 1e-12))
    # empty bags encode to exact zero rows
    empty = np.asarray(sizes) == 0
    if empty.any():
        np.testing.assert_array_equal(out[empty], 0.0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_forward_float32_matches_reference(encoder, layout):
    rng = np.random.default_rng(1 + seed_of(encoder, layout))
    sizes = LAYOUTS[layout]
    f, off, C, P, gamma = make_problem(rng, sizes, D=7, K=6, dtype=np.float32)
    C32, P32 = C.astype(np.float32), P.astype(np.float32)
    out = FWD[encoder](f, off, C32, P32, np.float32(gamma))
    ref = REF_FWD[encoder](f, off, C32, P32, np.float32(gamma))
    assert out.dtype == np.float32
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=scaled_atol(ref, 1e-5))
    empty = np.asarray(sizes) == 0
    if empty.any():
        np.testing.assert_array_equal(out[empty], 0.0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_soft_bow_rows_sum_to_one(encoder):
    # property independent of the reference: the BoW rows of non-empty bags sum to 1,
    # and the VLAD blocks sum (over k) to mean(f) - sum_k a_k C_k, i.e. consistent with BoW
    rng = np.random.default_rng(5)
    sizes = [3, 0, 50, 1]
    f, off, C, P, gamma = make_problem(rng, sizes, D=4, K=3)
    bow = ops.soft_bow(f, off, C, P, gamma)
    np.testing.assert_allclose(bow[[0, 2, 3]].sum(axis=1), 1.0, rtol=1e-12)
    if encoder == "vlad":
        vlad = ops.soft_vlad(f, off, C, P, gamma).reshape(4, 3, 4)
        for b in (0, 2, 3):
            mean_f = f[off[b] : off[b + 1]].mean(axis=0)
            np.testing.assert_allclose(
                vlad[b].sum(axis=0), mean_f - bow[b] @ C, rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("encoder", ENCODERS)
def test_zero_bags(encoder):
    D, K = 4, 3
    rng = np.random.default_rng(6)
    C = rng.normal(size=(K, D))
    P = np.ones((K, D))
    for dtype in (np.float32, np.float64):
        f = np.zeros((0, D), dtype=dtype)
        off = np.array([0], dtype=np.int64)
        out = FWD[encoder](f, off, C, P, 1.0)
        assert out.shape == (0, out_dim(encoder, K, D))
        assert out.dtype == dtype
        G = np.zeros((0, out_dim(encoder, K, D)))
        gC, gP, gg = BWD[encoder](f, off, C, P, 1.0, G)
        np.testing.assert_array_equal(np.asarray(gC), 0.0)
        np.testing.assert_array_equal(np.asarray(gP), 0.0)
        assert float(gg) == 0.0
        assert np.shape(gC) == (K, D) and np.shape(gP) == (K, D)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_only_empty_bags(encoder):
    D, K = 3, 4
    rng = np.random.default_rng(8)
    C = rng.normal(size=(K, D))
    P = np.ones((K, D))
    f = np.zeros((0, D))
    off = np.zeros(4, dtype=np.int64)
    out = FWD[encoder](f, off, C, P, 1.0)
    assert out.shape == (3, out_dim(encoder, K, D))
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_backward_reads_no_row_of_grad_output_of_an_empty_bag(encoder, pooling):
    """NaN or infinity there (the signed square root of an empty bag's zero row) gives the
    gradients of zeros there, bit for bit; in a bag with features it is still refused."""
    rng = np.random.default_rng(12)
    f, off, C, P, g = make_problem(rng, [3, 0, 4, 0])
    G = rng.normal(size=(4, out_dim(encoder, 5, 8)))
    G[[1, 3]] = 0.0
    zeros = BWD[encoder](f, off, C, P, g, G, pooling=pooling, return_grad_features=True)
    G[1], G[3] = np.nan, np.inf
    for mine, expected in zip(BWD[encoder](f, off, C, P, g, G, pooling=pooling, return_grad_features=True), zeros):
        np.testing.assert_array_equal(mine, expected)
    G[2, 0] = np.nan
    with pytest.raises(ValueError, match="grad_output contains NaN or infinity"):
        BWD[encoder](f, off, C, P, g, G, pooling=pooling)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_dtype_conversion_integer_and_noncontiguous(encoder):
    rng = np.random.default_rng(9)
    sizes = [4, 0, 9]
    off = offsets_from_sizes(sizes)
    D, K = 5, 3
    fi = rng.integers(-3, 4, size=(13, D)).astype(np.int32)
    C = rng.normal(size=(K, D))
    P = rng.uniform(0.5, 2, size=(K, D))
    gamma = 0.05
    out = FWD[encoder](fi, off, C, P, gamma)
    assert out.dtype == np.float64
    ref = REF_FWD[encoder](fi, off, C, P, gamma)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=scaled_atol(ref, 1e-12))

    # non-contiguous / Fortran-ordered inputs give the same result as contiguous ones
    f = rng.normal(size=(13, 2 * D))
    f_view = f[:, ::2]
    C_f = np.asfortranarray(C)
    P_f = np.asfortranarray(P)
    a = FWD[encoder](f_view, off, C_f, P_f, gamma)
    b = FWD[encoder](np.ascontiguousarray(f_view), off, C, P, gamma)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_float64_params_with_float32_features(encoder):
    rng = np.random.default_rng(10)
    sizes = [20, 0, 3, 1]
    f, off, C, P, gamma = make_problem(rng, sizes, D=6, K=4, dtype=np.float32)
    out = FWD[encoder](f, off, C, P, float(gamma))  # C, P float64
    assert out.dtype == np.float32
    ref = REF_FWD[encoder](f, off, C, P, gamma)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=scaled_atol(ref, 1e-5))
    G = rng.normal(size=ref.shape)
    gC, gP, gg = BWD[encoder](f, off, C, P, float(gamma), G)
    assert np.all(np.isfinite(gC)) and np.all(np.isfinite(gP)) and np.isfinite(gg)
    assert np.shape(gC) == C.shape and np.shape(gP) == P.shape


# ----------------------------------------------------------------------------- backward


def small_problem(seed, D, K, sizes=(4, 0, 6)):
    rng = np.random.default_rng(seed)
    f, off, C, P, gamma = make_problem(rng, list(sizes), D=D, K=K, gamma_times_d=1.5)
    return rng, f, off, C, P, gamma


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("D,K", [(3, 3), (4, 4), (5, 3)])
def test_backward_matches_finite_differences_of_cpp_forward(encoder, D, K):
    rng, f, off, C, P, gamma = small_problem(1000 + 10 * D + K, D, K)
    fwd = FWD[encoder]
    G = rng.normal(size=(len(off) - 1, out_dim(encoder, K, D)))
    gC, gP, gg = BWD[encoder](f, off, C, P, gamma, G)
    gC, gP = np.asarray(gC), np.asarray(gP)
    assert gC.shape == C.shape and gP.shape == P.shape
    assert np.ndim(gg) == 0

    eps = 1e-6
    nC = central_diff(lambda x: np.sum(fwd(f, off, x, P, gamma) * G), C, eps)
    nP = central_diff(lambda x: np.sum(fwd(f, off, C, x, gamma) * G), P, eps)
    ng = central_diff(lambda x: np.sum(fwd(f, off, C, P, x) * G), gamma, eps)
    np.testing.assert_allclose(gC, nC, rtol=1e-6, atol=1e-8 * np.abs(nC).max())
    np.testing.assert_allclose(gP, nP, rtol=1e-6, atol=1e-8 * np.abs(nP).max())
    np.testing.assert_allclose(float(gg), ng, rtol=1e-6, atol=1e-8 * max(abs(ng), 1.0))


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(
    "sizes", [(4, 0, 6), (1,), (0, 3, 0), (2500, 1, 0, 30)], ids=["small", "one", "empties", "big"]
)
def test_backward_float64_matches_reference(encoder, sizes):
    rng, f, off, C, P, gamma = small_problem(2000 + len(sizes), 5, 4, sizes)
    G = rng.normal(size=(len(sizes), out_dim(encoder, 4, 5)))
    gC, gP, gg = BWD[encoder](f, off, C, P, gamma, G)
    rC, rP, rg = REF_BWD[encoder](f, off, C, P, gamma, G)
    assert np.asarray(gC).dtype == np.float64
    np.testing.assert_allclose(gC, rC, rtol=1e-9, atol=scaled_atol(rC, 1e-11))
    np.testing.assert_allclose(gP, rP, rtol=1e-9, atol=scaled_atol(rP, 1e-11))
    np.testing.assert_allclose(float(gg), rg, rtol=1e-9, atol=1e-11 * max(abs(rg), 1.0))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_backward_empty_bag_grad_output_ignored(encoder):
    rng, f, off, C, P, gamma = small_problem(3000, 4, 3, (5, 0, 2))
    G = rng.normal(size=(3, out_dim(encoder, 3, 4)))
    a = BWD[encoder](f, off, C, P, gamma, G)
    G[1] = 123.0
    b = BWD[encoder](f, off, C, P, gamma, G)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_backward_float32_matches_reference(encoder):
    rng = np.random.default_rng(4000)
    sizes = [30, 0, 1, 400]
    f, off, C, P, gamma = make_problem(rng, sizes, D=6, K=4, dtype=np.float32)
    C32, P32, g32 = C.astype(np.float32), P.astype(np.float32), np.float32(gamma)
    G = rng.normal(size=(len(sizes), out_dim(encoder, 4, 6))).astype(np.float32)
    gC, gP, gg = BWD[encoder](f, off, C32, P32, g32, G)
    rC, rP, rg = REF_BWD[encoder](f, off, C32, P32, g32, G)
    np.testing.assert_allclose(gC, rC, rtol=1e-3, atol=scaled_atol(rC, 1e-4))
    np.testing.assert_allclose(gP, rP, rtol=1e-3, atol=scaled_atol(rP, 1e-4))
    np.testing.assert_allclose(float(gg), rg, rtol=1e-3, atol=1e-4 * max(abs(rg), 1.0))


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_threads_deterministic(encoder, dtype):
    rng = np.random.default_rng(5000)
    # ~60 chunks of 512 rows: several waves of the parallel loops for 1-3 threads
    sizes = [3, 30000, 0, 17, 700, 1]
    f, off, C, P, gamma = make_problem(rng, sizes, D=16, K=12, dtype=dtype)
    C, P = C.astype(dtype), P.astype(dtype)
    G = rng.normal(size=(len(sizes), out_dim(encoder, 12, 16))).astype(dtype)

    r1 = FWD[encoder](f, off, C, P, gamma, n_threads=1)
    r2 = FWD[encoder](f, off, C, P, gamma, n_threads=2)
    rn = FWD[encoder](f, off, C, P, gamma, n_threads=None)
    r3 = FWD[encoder](f, off, C, P, gamma, n_threads=3)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(r1, rn)
    np.testing.assert_array_equal(r1, r3)
    # default (no keyword) equals n_threads=None
    np.testing.assert_array_equal(r1, FWD[encoder](f, off, C, P, gamma))

    b1 = BWD[encoder](f, off, C, P, gamma, G, n_threads=1)
    b2 = BWD[encoder](f, off, C, P, gamma, G, n_threads=2)
    bn = BWD[encoder](f, off, C, P, gamma, G, n_threads=None)
    b3 = BWD[encoder](f, off, C, P, gamma, G, n_threads=3)
    for other in (b2, bn, b3):
        for x, y in zip(b1, other):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # and repeated calls are bit-identical
    np.testing.assert_array_equal(r1, FWD[encoder](f, off, C, P, gamma, n_threads=2))


# ----------------------------------------------------------------------------- large gamma


def large_gamma_problem(seed, dtype, shift, spread, D=6, K=5, n=400, gamma_times_d=1e3):
    """Single-feature bags; keep features whose nearest centre is separated from the
    second nearest by > 30 / gamma (so exp(-gamma * gap) < 1e-13)."""
    rng = np.random.default_rng(seed)
    f = (shift + spread * rng.normal(size=(n, D))).astype(dtype)
    C = (shift + spread * rng.normal(size=(K, D))).astype(dtype)
    P = rng.uniform(0.5, 2.0, size=(K, D)).astype(dtype)
    d = distances(f, C, P)  # exact (float64) distances of the rounded inputs
    gamma = float(dtype(gamma_times_d / np.median(d)))
    ds = np.sort(d, axis=1)
    keep = gamma * (ds[:, 1] - ds[:, 0]) > 30.0
    assert keep.sum() > n // 4
    f = np.ascontiguousarray(f[keep])
    d = d[keep]
    off = np.arange(len(f) + 1, dtype=np.int64)
    onehot = np.eye(K)[np.argmin(d, axis=1)]
    return f, off, C, P, gamma, onehot


@pytest.mark.parametrize(
    "dtype,shift",
    [(np.float64, 0.0), (np.float32, 0.0), (np.float64, 100.0), (np.float32, 100.0)],
)
def test_large_gamma_hard_assignment(dtype, shift):
    # spread 0.1 around the shift: distances are small compared with |f|^2, which is
    # where the expanded GEMM form f^2.P - 2 f.(CP) + C^2.P cancels catastrophically
    spread = 0.1 if shift else 1.0
    f, off, C, P, gamma, onehot = large_gamma_problem(11, dtype, shift, spread)
    bow = ops.soft_bow(f, off, C, P, gamma)
    assert bow.dtype == dtype
    assert np.all(np.isfinite(bow))
    np.testing.assert_allclose(bow, onehot, rtol=0, atol=1e-6)

    vlad = ops.soft_vlad(f, off, C, P, gamma)
    assert np.all(np.isfinite(vlad))
    K, D = C.shape
    expected = onehot[:, :, None] * (f.astype(np.float64)[:, None, :] - C[None].astype(np.float64))
    # the VLAD block of the nearest centre is f - C_k, the others ~0
    np.testing.assert_allclose(
        vlad.reshape(-1, K, D), expected, rtol=1e-4 if dtype == np.float32 else 1e-9,
        atol=1e-6 * spread,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_large_gamma_forward_multi_feature_bags(encoder, dtype):
    # large gamma on ordinary bags (no filtering): finite and close to the reference
    rng = np.random.default_rng(12)
    sizes = [50, 1, 0, 300]
    f, off, C, P, gamma = make_problem(rng, sizes, D=5, K=4, dtype=dtype, gamma_times_d=1e3)
    f = (f + dtype(100.0)).astype(dtype)
    C = (C + 100.0).astype(dtype)
    P = P.astype(dtype)
    out = FWD[encoder](f, off, C, P, gamma)
    assert np.all(np.isfinite(out))
    ref = REF_FWD[encoder](f, off, C, P, gamma)
    if dtype == np.float64:
        np.testing.assert_allclose(out, ref, rtol=1e-8, atol=scaled_atol(ref, 1e-10))
    else:
        np.testing.assert_allclose(out, ref, rtol=2e-3, atol=scaled_atol(ref, 1e-3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_large_gamma_gradients_finite(encoder, dtype):
    rng = np.random.default_rng(13)
    sizes = [50, 1, 0, 300]
    for shift, tdist in [(0.0, 1e3), (100.0, 1e3), (0.0, 1e5)]:
        f, off, C, P, gamma = make_problem(rng, sizes, D=5, K=4, gamma_times_d=tdist)
        f = (f + shift).astype(dtype)
        C = (C + shift).astype(dtype)
        P = P.astype(dtype)
        G = rng.normal(size=(len(sizes), out_dim(encoder, 4, 5))).astype(dtype)
        gC, gP, gg = BWD[encoder](f, off, C, P, gamma, G)
        assert np.all(np.isfinite(gC)), (shift, tdist)
        assert np.all(np.isfinite(gP)), (shift, tdist)
        assert np.isfinite(gg), (shift, tdist)
        if dtype == np.float64 and shift == 0.0:
            rC, rP, rg = REF_BWD[encoder](f, off, C, P, gamma, G)
            np.testing.assert_allclose(gC, rC, rtol=1e-6, atol=scaled_atol(rC, 1e-8))
            np.testing.assert_allclose(gP, rP, rtol=1e-6, atol=scaled_atol(rP, 1e-8))
            np.testing.assert_allclose(float(gg), rg, rtol=1e-6, atol=1e-8 * max(abs(rg), 1.0))


def _at_offset(a, shift):
    """A C-contiguous copy of `a` whose data start `shift` elements into a fresh buffer,
    so the same values sit at a different address alignment."""
    buf = np.empty(a.size + 32, dtype=a.dtype)
    base = (-(buf.ctypes.data // a.itemsize)) % 16  # element index that is 64/128-byte aligned
    out = buf[base + shift : base + shift + a.size].reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_results_bitwise_reproducible(encoder, dtype):
    # Same values in -> same bits out: repeated calls, and inputs stored at different
    # memory alignments, must not change a single bit (the thread-count determinism
    # promise is meaningless otherwise). Bag sizes put bags both inside one tile and
    # across tiles.
    rng = np.random.default_rng(5001)
    sizes = [3, 5000, 0, 17, 700, 1, 5, 9]
    f, off, C, P, gamma = make_problem(rng, sizes, D=16, K=12, dtype=dtype)
    C, P = C.astype(dtype), P.astype(dtype)
    G = rng.normal(size=(len(sizes), out_dim(encoder, 12, 16))).astype(dtype)

    r0 = FWD[encoder](f, off, C, P, gamma, n_threads=1)
    b0 = BWD[encoder](f, off, C, P, gamma, G, n_threads=1)
    for rep in range(24):
        shift = rep % 8
        fs, Cs, Ps = _at_offset(f, shift), _at_offset(C, (shift + 3) % 8), _at_offset(P, (shift + 5) % 8)
        r = FWD[encoder](fs, off, Cs, Ps, gamma, n_threads=1 + rep % 2)
        np.testing.assert_array_equal(r, r0, err_msg=f"forward, repetition {rep}")
        b = BWD[encoder](fs, off, Cs, Ps, gamma, _at_offset(G, shift), n_threads=1 + rep % 2)
        for x, y in zip(b, b0):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"backward, repetition {rep}")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_results_do_not_depend_on_earlier_calls(encoder):
    """The kernels keep their scratch between calls from one thread: calls of other sizes,
    thread counts and options in between change no bit of a result."""
    rng = np.random.default_rng(5002)
    problems = []
    for sizes, D, K in [([3, 900, 0, 40], 16, 12), ([2000, 1, 600], 7, 40), ([5], 16, 12)]:
        f, off, C, P, gamma = make_problem(rng, sizes, D=D, K=K, dtype=np.float32)
        G = rng.normal(size=(len(sizes), out_dim(encoder, K, D))).astype(np.float32)
        problems.append((f, off, C.astype(np.float32), P.astype(np.float32), gamma, G))

    def run(problem, n_threads):
        f, off, C, P, gamma, G = problem
        R, A = FWD[encoder](f, off, C, P, gamma, n_threads=n_threads, return_assignments=True)
        kept = BWD[encoder](f, off, C, P, gamma, G, n_threads=n_threads, assignments=A, return_grad_features=True)
        recomputed = BWD[encoder](f, off, C, P, gamma, G, n_threads=n_threads)
        return [R, A, *kept, *recomputed]

    first = [run(problem, 1) for problem in problems]
    for rep, (i, n_threads) in enumerate([(1, 3), (0, 2), (2, 1), (1, 1), (0, 3), (2, 2), (0, 1)]):
        for x, y in zip(run(problems[i], n_threads), first[i]):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"problem {i}, call {rep}")


# ------------------------------------------------------------------ subnormal numbers


@pytest.mark.parametrize("encoder", ENCODERS)
def test_sharp_assignments_hold_no_subnormals_and_the_callers_mode_is_kept(encoder):
    """With a sharp gamma, the far codewords' assignments of float32 features would be
    subnormal (exp of -87 to -103): the kernels flush them to zero (they cost a microcode
    assist per operation on x86) and leave the calling thread's floating-point mode as
    it was. The encoding still matches the float64 reference."""
    rng = np.random.default_rng(seed_of("subnormal", encoder))
    features, offsets, centers, precisions, _ = make_problem(rng, [40, 25], D=4, K=6, dtype=np.float32)
    d = distances(features.astype(np.float64), centers, precisions)
    spread = np.sort(d, axis=1)[:, -1] - d.min(axis=1)
    gamma = 95.0 / np.median(spread)  # a far codeword's exp(-gamma (d - d_min)) is around e^-95
    c32, p32 = centers.astype(np.float32), precisions.astype(np.float32)
    out, assignments = FWD[encoder](features, offsets, c32, p32, gamma, 2, return_assignments=True)
    tiny = np.finfo(np.float32).tiny
    exact = np.exp(-gamma * (d - d.min(axis=1, keepdims=True)))
    exact /= exact.sum(axis=1, keepdims=True)
    assert np.any((exact > 1e-45) & (exact < tiny))  # the case has would-be subnormals
    assert not np.any((assignments > 0) & (assignments < tiny))
    ref = REF_FWD[encoder](features.astype(np.float64), offsets, centers, precisions, gamma)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=scaled_atol(ref, 1e-5))
    BWD[encoder](features, offsets, c32, p32, gamma, np.ones_like(out), 2, assignments=assignments)
    assert np.float32(1e-38) / np.float32(100) > 0  # this thread still computes subnormals


def test_a_backward_that_overflows_with_gamma_names_gamma():
    """A float32 gamma near its largest value overflows the backward alone; the message
    named every argument but gamma."""
    rng = np.random.default_rng(13)
    f, off, C, P, _ = make_problem(rng, [3, 7], D=3, K=4, dtype=np.float32)
    G = rng.normal(size=(2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="precisions, gamma or grad_output are out of this floating-point type"):
        ops.soft_bow_backward(f, off, C, P, 1.65e38, G, return_grad_features=True)
