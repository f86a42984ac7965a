"""T2 with max pooling (LearnedVLAD(pooling="max"), SOFT_VLAD_MAX): R_b[k, j] =
max_n a_nk (f_nj - C_kj) against the float64 numpy reference, its gradients against
central finite differences of that reference, the tie rule, blocks and thread counts,
and the estimators around it."""

import numpy as np
import pytest

import lfagg
from lfagg.bags import Bags
from lfagg.encoders import SOFT_VLAD_MAX
from lfagg.encoders import soft as soft_module
from reference import assignments, central_diff
from test_max_pooling import SIZES, mil_bags, problem


def ref_vlad_max(features, offsets, centers, precisions, gamma):
    """(n_bags, K * D): each bag's largest a_nk (f_nj - C_kj) per (k, j), zeros for an empty bag."""
    K, D = np.shape(centers)
    out = np.zeros((len(offsets) - 1, K, D))
    for b in range(len(offsets) - 1):
        f = np.asarray(features[offsets[b]:offsets[b + 1]], dtype=np.float64)
        if len(f):
            a = assignments(f, centers, precisions, gamma)
            out[b] = (a[:, :, None] * (f[:, None, :] - np.asarray(centers, dtype=np.float64))).max(axis=0)
    return out.reshape(len(out), K * D)


def vlad_problem(seed, dtype=np.float64, D=4, K=3):
    """problem() with dJ/dR of T2's width."""
    f, off, C, P, gamma, _ = problem(seed, dtype, D, K)
    G = np.random.default_rng(seed + 100).normal(size=(len(SIZES), K * D)).astype(dtype)
    return f, off, C, P, gamma, G


def test_forward_matches_reference_and_empty_bags_are_zero():
    f, off, C, P, gamma, _ = vlad_problem(0)
    R, A = SOFT_VLAD_MAX.forward(Bags(f, off), C, P, gamma, 2, return_assignments=True)
    np.testing.assert_allclose(R, ref_vlad_max(f, off, C, P, gamma), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(A, assignments(f, C, P, gamma), rtol=1e-12, atol=1e-14)
    assert not R[np.diff(off) == 0].any()


def test_float32_forward_close_to_reference():
    f, off, C, P, gamma, _ = vlad_problem(1, np.float32)
    R = SOFT_VLAD_MAX.forward(Bags(f, off), C, P, gamma, 1)
    assert R.dtype == np.float32
    np.testing.assert_allclose(R, ref_vlad_max(f, off, C, P, gamma), atol=1e-5)


def test_one_codeword_is_the_max_pooling_of_the_features_less_the_centre():
    f, off, C, P, _, _ = vlad_problem(2, K=1)
    R = SOFT_VLAD_MAX.forward(Bags(f, off), C, P, 0.7)
    filled = np.flatnonzero(np.diff(off))
    np.testing.assert_array_equal(R[filled], np.maximum.reduceat(f, off[filled], axis=0) - C)


def test_gradients_match_finite_differences_of_the_reference():
    f, off, C, P, gamma, G = vlad_problem(3)
    gC, gP, gg, gF = SOFT_VLAD_MAX.backward(Bags(f, off), C, P, gamma, G, 2, return_grad_features=True)

    def loss(features=f, centers=C, precisions=P, g=gamma):
        return float(np.sum(G * ref_vlad_max(features, off, centers, precisions, g)))

    np.testing.assert_allclose(gC, central_diff(lambda c: loss(centers=c), C), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gP, central_diff(lambda p: loss(precisions=p), P), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gg, central_diff(lambda g: loss(g=g), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gF, central_diff(lambda x: loss(features=x), f), rtol=1e-6, atol=1e-8)


def test_blocks_kept_assignments_and_thread_counts_agree_bitwise(monkeypatch):
    f, off, C, P, gamma, G = vlad_problem(4, np.float32, D=9, K=6)
    bags = Bags(f, off)
    R, A = SOFT_VLAD_MAX.forward(bags, C, P, gamma, 1, return_assignments=True)
    reference = SOFT_VLAD_MAX.backward(bags, C, P, gamma, G, 1, assignments=A, return_grad_features=True)
    monkeypatch.setattr(soft_module, "_VLAD_MAX_BLOCK", 2 * C.size)  # the largest bag in 6 blocks of 2 rows
    for n_threads in (1, 2, 3):
        np.testing.assert_array_equal(SOFT_VLAD_MAX.forward(bags, C, P, gamma, n_threads), R)
        for kept in (A, None):
            grads = SOFT_VLAD_MAX.backward(bags, C, P, gamma, G, n_threads, assignments=kept,
                                           return_grad_features=True)
            for mine, expected in zip(grads, reference):
                np.testing.assert_array_equal(mine, expected)


@pytest.mark.parametrize("block_rows", [1, 3, 100])
def test_a_repeated_feature_takes_no_gradient(monkeypatch, block_rows):
    """Of equal maxima the bag's first feature takes dJ/dR, also when the repeat falls in
    another block of rows: a bag with a feature repeated has the bag's gradients without it."""
    f, _, C, P, gamma, G = vlad_problem(5)
    monkeypatch.setattr(soft_module, "_VLAD_MAX_BLOCK", block_rows * C.size)
    once, twice = f[:4], np.concatenate([f[:4], f[2:3]])
    g_once = SOFT_VLAD_MAX.backward(Bags(once, [0, 4]), C, P, gamma, G[:1], 1, return_grad_features=True)
    g_twice = SOFT_VLAD_MAX.backward(Bags(twice, [0, 5]), C, P, gamma, G[:1], 1, return_grad_features=True)
    for a, b in zip(g_once[:3], g_twice[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(g_twice[3][:4], g_once[3])
    assert not g_twice[3][4].any()


def test_backward_checks_its_input():
    f, off, C, P, gamma, G = vlad_problem(6)
    bags = Bags(f, off)
    _, A = SOFT_VLAD_MAX.forward(bags, C, P, gamma, return_assignments=True)
    bad_grad = G.copy()
    bad_grad[1, 0] = np.nan  # bag 1 is empty: its gradient is still checked
    for name, call in [("grad_output", lambda: SOFT_VLAD_MAX.backward(bags, C, P, gamma, G[:, :-1])),
                       ("grad_output", lambda: SOFT_VLAD_MAX.backward(bags, C, P, gamma, bad_grad, assignments=A)),
                       ("assignments", lambda: SOFT_VLAD_MAX.backward(bags, C, P, gamma, G, assignments=A[1:]))]:
        with pytest.raises(ValueError, match=name):
            call()


def test_learned_vlad_with_max_pooling_fits_transforms_and_round_trips(tmp_path):
    bags, y = mil_bags()
    model = lfagg.LearnedVLAD(2, pooling="max", n_epochs=3, random_state=0, n_threads=1).fit(bags, y)
    expected = ref_vlad_max(bags.features, bags.offsets, model.centers_, 1 / model.covariances_, model.gamma_)
    np.testing.assert_allclose(model.transform(bags), expected, rtol=1e-10, atol=1e-12)
    assert model.score(bags, y) >= 0.9  # the telling feature is each positive bag's largest
    lfagg.save(model, tmp_path / "vlad_max.lfagg")
    loaded = lfagg.load(tmp_path / "vlad_max.lfagg")
    assert loaded.pooling == "max"
    np.testing.assert_array_equal(loaded.predict_proba(bags), model.predict_proba(bags))


def test_the_search_refits_with_max_pooling_and_train_encoder_takes_it_by_name():
    bags, y = mil_bags(30)
    search = lfagg.LearnedVLADCV(n_codewords=(1,), gamma_scale=(1.0,), learning_rate=(1e-2,), max_epochs=1, cv=3,
                                 n_estimators=1, pooling="max", random_state=0, n_threads=1).fit(bags, y)
    refit = search.best_estimator_
    assert refit.pooling == "max"
    expected = ref_vlad_max(bags.features, bags.offsets, refit.centers_, 1 / refit.covariances_, refit.gamma_)
    np.testing.assert_allclose(search.transform(bags), expected, rtol=1e-10, atol=1e-12)

    centers = bags.features[:2]
    targets = np.repeat(y[:, None], 2 * bags.dim, axis=1).astype(float)

    def squared_loss(R, t):
        return 0.5 * float(np.sum((R - t) ** 2)), R - t

    result = lfagg.train_encoder(bags, targets, squared_loss, "vlad_max", centers, np.ones((2, bags.dim)), 0.5,
                                 n_epochs=2, batch_size=4, random_state=0)
    assert np.all(np.isfinite(result.centers)) and not np.array_equal(result.centers, centers)


def test_torch_soft_vlad_refuses_an_estimator_with_max_pooling():
    pytest.importorskip("torch")
    lt = pytest.importorskip("lfagg.torch")
    bags, y = mil_bags(12)
    model = lfagg.LearnedVLAD(2, pooling="max", n_epochs=1, random_state=0, n_threads=1).fit(bags, y)
    with pytest.raises(ValueError, match="pool"):
        lt.SoftVLAD.from_estimator(model)
    model.pooling = "mean"
    assert lt.SoftVLAD.from_estimator(model).n_codewords == 2
