"""T2 with max pooling beyond what it shares with T1's (test_max_pooling.py): one
codeword's max pooling of the features, its input checks, and the search and
train_encoder with it."""

import numpy as np
import pytest

import lfagg
from lfagg.bags import Bags
from lfagg.encoders import SOFT_VLAD_MAX
from test_max_pooling import mil_bags, problem, ref_vlad_max


def vlad_problem(seed, dtype=np.float64, D=4, K=3):
    return problem(seed, dtype, D, K, encoder=SOFT_VLAD_MAX)


def test_one_codeword_is_the_max_pooling_of_the_features_less_the_centre():
    f, off, C, P, _, _ = vlad_problem(2, K=1)
    R = SOFT_VLAD_MAX.forward(Bags(f, off), C, P, 0.7)
    filled = np.flatnonzero(np.diff(off))
    np.testing.assert_array_equal(R[filled], np.maximum.reduceat(f, off[filled], axis=0) - C)


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


@pytest.mark.filterwarnings("error")  # no NumPy warning on the way to the error
def test_kept_assignments_come_with_the_same_checks_of_features_and_centres():
    f, off, C, P, gamma, G = vlad_problem(7)
    _, A = lfagg.ops.soft_vlad(f, off, C, P, gamma, pooling="max", return_assignments=True)
    with_nan, with_inf = f.copy(), C.copy()
    with_nan[3, 1], with_inf[0, 0] = np.nan, np.inf
    for args, message in [((f, off, C[:, :2], P[:, :2], gamma, G[:, :6]), "centers must be .* dim = 4"),
                          ((f[:, 0], off, C, P, gamma, G), r"features must be a 2-D array"),  # an IndexError
                          ((with_nan, off, C, P, gamma, G), "features contains NaN"),
                          ((f, off, with_inf, P, gamma, G), "centers contains NaN")]:
        with pytest.raises(ValueError, match=message):
            lfagg.ops.soft_vlad_backward(*args, pooling="max", assignments=A)


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
