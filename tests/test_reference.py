"""Self-tests of the numpy reference (tests/reference.py): needs numpy only."""

import math

import numpy as np
import pytest

from reference import (
    assignments,
    central_diff,
    distances,
    ref_soft_bow,
    ref_soft_bow_backward,
    ref_soft_vlad,
    ref_soft_vlad_backward,
)


def make_problem(rng, sizes=(4, 0, 1, 6), D=4, K=3, gamma=0.3):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    features = rng.normal(size=(int(offsets[-1]), D))
    centers = rng.normal(size=(K, D))
    precisions = rng.uniform(0.5, 2.0, size=(K, D))
    return features, offsets, centers, precisions, gamma


def loop_forward(features, offsets, centers, precisions, gamma):
    """Scalar-loop forward, for checking the broadcasting reference."""
    K, D = centers.shape
    n_bags = len(offsets) - 1
    bow = np.zeros((n_bags, K))
    vlad = np.zeros((n_bags, K * D))
    for b in range(n_bags):
        lo, hi = offsets[b], offsets[b + 1]
        for n in range(lo, hi):
            d = [
                sum(precisions[k, j] * (features[n, j] - centers[k, j]) ** 2 for j in range(D))
                for k in range(K)
            ]
            w = [math.exp(-gamma * dk) for dk in d]
            z = sum(w)
            for k in range(K):
                bow[b, k] += w[k] / z / (hi - lo)
                for j in range(D):
                    vlad[b, k * D + j] += w[k] / z * (features[n, j] - centers[k, j]) / (hi - lo)
    return bow, vlad


def test_forward_matches_scalar_loops():
    rng = np.random.default_rng(0)
    prob = make_problem(rng)
    bow, vlad = loop_forward(*prob)
    np.testing.assert_allclose(ref_soft_bow(*prob), bow, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref_soft_vlad(*prob), vlad, rtol=1e-12, atol=1e-15)


def test_forward_properties():
    rng = np.random.default_rng(1)
    f, off, C, P, gamma = make_problem(rng, sizes=(5, 0, 3))
    bow = ref_soft_bow(f, off, C, P, gamma)
    assert bow.shape == (3, 3)
    np.testing.assert_allclose(bow[[0, 2]].sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(bow[1], 0.0)
    vlad = ref_soft_vlad(f, off, C, P, gamma)
    assert vlad.shape == (3, 3 * 4)
    np.testing.assert_array_equal(vlad[1], 0.0)
    # gamma -> 0: uniform assignment; VLAD block k = (mean(f) - C_k) / K
    tiny = 1e-300
    np.testing.assert_allclose(ref_soft_bow(f, off, C, P, tiny)[0], 1.0 / 3)
    expected = (f[0:5].mean(axis=0)[None, :] - C) / 3
    np.testing.assert_allclose(ref_soft_vlad(f, off, C, P, tiny)[0], expected.ravel(), rtol=1e-12)


def test_stable_softmax_huge_gamma():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(20, 3)) + 100.0
    C = rng.normal(size=(4, 3)) + 100.0
    P = np.ones((4, 3))
    a = assignments(f, C, P, 1e6)
    assert np.all(np.isfinite(a))
    d = distances(f, C, P)
    np.testing.assert_array_equal(np.argmax(a, axis=1), np.argmin(d, axis=1))


def test_central_diff_helper():
    np.testing.assert_allclose(central_diff(lambda x: x**3, 2.0, 1e-5), 12.0, rtol=1e-8)
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    g = central_diff(lambda y: np.sum(np.sin(y) * y), x, 1e-6)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-8)


@pytest.mark.parametrize("encoder", ["bow", "vlad"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_backward_matches_finite_differences(encoder, seed):
    rng = np.random.default_rng(100 + seed)
    D = 3 + seed
    K = 3 + seed % 2
    f, off, C, P, gamma = make_problem(rng, sizes=(5, 0, 1, 4), D=D, K=K, gamma=0.4)
    fwd = ref_soft_bow if encoder == "bow" else ref_soft_vlad
    bwd = ref_soft_bow_backward if encoder == "bow" else ref_soft_vlad_backward
    out_shape = fwd(f, off, C, P, gamma).shape
    G = rng.normal(size=out_shape)

    gC, gP, gg, gF = bwd(f, off, C, P, gamma, G, with_features=True)
    assert gC.shape == C.shape and gP.shape == P.shape and np.ndim(gg) == 0 and gF.shape == f.shape

    eps = 1e-6
    nF = central_diff(lambda x: np.sum(fwd(x, off, C, P, gamma) * G), f, eps)
    np.testing.assert_allclose(gF, nF, rtol=1e-6, atol=1e-8 * np.abs(nF).max())
    nC = central_diff(lambda x: np.sum(fwd(f, off, x, P, gamma) * G), C, eps)
    nP = central_diff(lambda x: np.sum(fwd(f, off, C, x, gamma) * G), P, eps)
    ng = central_diff(lambda x: np.sum(fwd(f, off, C, P, x) * G), gamma, eps)
    np.testing.assert_allclose(gC, nC, rtol=1e-6, atol=1e-8 * np.abs(nC).max())
    np.testing.assert_allclose(gP, nP, rtol=1e-6, atol=1e-8 * np.abs(nP).max())
    np.testing.assert_allclose(gg, ng, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bwd", [ref_soft_bow_backward, ref_soft_vlad_backward])
def test_reference_backward_empty_bags_contribute_nothing(bwd):
    rng = np.random.default_rng(7)
    f, off, C, P, gamma = make_problem(rng, sizes=(3, 0, 2), D=3, K=3)
    out_dim = 3 if bwd is ref_soft_bow_backward else 9
    G = rng.normal(size=(3, out_dim))
    base = bwd(f, off, C, P, gamma, G)
    G2 = G.copy()
    G2[1] = 1e6  # gradient on the empty bag must be ignored
    other = bwd(f, off, C, P, gamma, G2)
    for x, y in zip(base, other):
        np.testing.assert_array_equal(x, y)
