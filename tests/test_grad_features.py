"""dJ/dF, the gradient of the soft encoders with respect to the local features
(``return_grad_features=True``): against the float64 numpy reference, central finite
differences of the C++ forward, both backward paths (kept and recomputed assignments),
float32, thread-count determinism, and that asking for it changes nothing else."""

import numpy as np
import pytest

from reference import central_diff
from test_soft_encoders import BWD, ENCODERS, FWD, LAYOUTS, REF_BWD, make_problem, out_dim, scaled_atol


def problem(seed, sizes, dtype=np.float64, D=6, K=5):
    rng = np.random.default_rng(seed)
    f, off, C, P, gamma = make_problem(rng, list(sizes), D=D, K=K, dtype=dtype, gamma_times_d=1.5)
    G = rng.normal(size=(len(sizes), K * D)).astype(dtype)  # columns for either encoder; T1 takes the first K
    return f, off, C.astype(dtype), P.astype(dtype), gamma, G


def grads(encoder, f, off, C, P, gamma, G, **kwargs):
    G = np.ascontiguousarray(G[:, :out_dim(encoder, *C.shape)])
    return BWD[encoder](f, off, C, P, gamma, G, return_grad_features=True, **kwargs), G


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("encoder", ENCODERS)
def test_float64_matches_reference(encoder, layout):
    f, off, C, P, gamma, G = problem(11, LAYOUTS[layout])
    (gC, gP, gg, gF), G = grads(encoder, f, off, C, P, gamma, G)
    rC, rP, rg, rF = REF_BWD[encoder](f, off, C, P, gamma, G, with_features=True)
    assert gF.shape == f.shape and gF.dtype == np.float64
    np.testing.assert_allclose(gF, rF, rtol=1e-9, atol=scaled_atol(rF, 1e-11))
    np.testing.assert_allclose(gC, rC, rtol=1e-9, atol=scaled_atol(rC, 1e-11))


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("D,K", [(3, 3), (5, 4)])
def test_matches_finite_differences_of_cpp_forward(encoder, D, K):
    f, off, C, P, gamma, G = problem(100 + D, (4, 0, 1, 6), D=D, K=K)
    (_, _, _, gF), G = grads(encoder, f, off, C, P, gamma, G)
    nF = central_diff(lambda x: np.sum(FWD[encoder](x, off, C, P, gamma) * G), f, 1e-6)
    np.testing.assert_allclose(gF, nF, rtol=1e-6, atol=1e-8 * np.abs(nF).max())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_float32_matches_reference(encoder):
    f, off, C, P, gamma, G = problem(12, (30, 0, 1, 700), dtype=np.float32)
    (_, _, _, gF), G = grads(encoder, f, off, C, P, np.float32(gamma), G)
    rF = REF_BWD[encoder](f, off, C, P, np.float32(gamma), G, with_features=True)[3]
    assert gF.dtype == np.float32
    np.testing.assert_allclose(gF, rF, rtol=2e-3, atol=scaled_atol(rF, 1e-4))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_kept_assignments_give_the_same_gradients(encoder, dtype):
    f, off, C, P, gamma, G = problem(13, LAYOUTS["mixed_big_and_small"], dtype=dtype)
    _, A = FWD[encoder](f, off, C, P, gamma, return_assignments=True)
    recomputed, G = grads(encoder, f, off, C, P, gamma, G)
    kept, _ = grads(encoder, f, off, C, P, gamma, G, assignments=A)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for x, y in zip(recomputed, kept):
        np.testing.assert_allclose(x, y, rtol=tol, atol=scaled_atol(x, tol))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_asking_for_it_changes_nothing_else(encoder, dtype):
    f, off, C, P, gamma, G = problem(14, LAYOUTS["many_small_with_empty"], dtype=dtype)
    (gC, gP, gg, _), G = grads(encoder, f, off, C, P, gamma, G)
    without = BWD[encoder](f, off, C, P, gamma, G)
    assert len(without) == 3
    for x, y in zip((gC, gP, gg), without):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_bitwise_identical_for_every_thread_count(encoder, dtype):
    # ~40 chunks: several waves of the parallel loop for 1-3 threads; a bag across chunks
    f, off, C, P, gamma, G = problem(15, [3, 20000, 0, 17, 700, 1], dtype=dtype, D=16, K=12)
    (*_, one), G = grads(encoder, f, off, C, P, gamma, G, n_threads=1)
    for n_threads in (2, 3, None):
        np.testing.assert_array_equal(grads(encoder, f, off, C, P, gamma, G, n_threads=n_threads)[0][3], one)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_empty_bags_have_no_rows_and_ignore_their_gradient(encoder):
    f, off, C, P, gamma, G = problem(16, (0, 5, 0))
    (*_, gF), G = grads(encoder, f, off, C, P, gamma, G)
    G[[0, 2]] = 1e6
    np.testing.assert_array_equal(BWD[encoder](f, off, C, P, gamma, G, return_grad_features=True)[3], gF)
    no_features = BWD[encoder](f[:0], np.zeros(4, np.int64), C, P, gamma, G, return_grad_features=True)[3]
    assert no_features.shape == (0, f.shape[1])


@pytest.mark.parametrize("encoder,grad_output,float64_grad_features", [
    ("bow", [[2e38, -2e38]], -4e38),   # beyond float32's range (3.4e38)
    ("vlad", [[-2e38, -2e38]], 2e38),  # within it, but float32's sum 4e38 - 2e38 overflows on the way
])
def test_an_overflowing_grad_features_is_an_error(encoder, grad_output, float64_grad_features):
    """One feature between two codewords (D = 1): the gradients of the centres and the
    precisions stay finite in float32 (2e38 or 1e38 each, as float64 confirms) while dJ/dF
    overflows: a ValueError naming grad_output, never a silent infinity."""
    args64 = (np.zeros((1, 1)), np.array([0, 1]), np.array([[-1.0], [1.0]]), np.ones((2, 1)), 1.0,
              np.array(grad_output))
    gC, gP, _, gF = BWD[encoder](*args64, return_grad_features=True)
    np.testing.assert_allclose(gF, [[float64_grad_features]], rtol=1e-7)
    args32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args64]
    gC32, gP32, _ = BWD[encoder](*args32)
    assert np.all(np.abs(gC32) < 3e38) and np.all(np.abs(gP32) < 3e38)
    with pytest.raises(ValueError, match="overflowed.*grad_output"):
        BWD[encoder](*args32, return_grad_features=True)
