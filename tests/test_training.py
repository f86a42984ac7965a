"""Training: the gradient of the whole composed loss (encoder -> chi2 map -> softmax
regression) against central finite differences, the heads, the train_encoder loop
(loss decreases, determinism, the chain rule to log-parameters, learn_* switches), the
generic entry point with a user loss (regression), and errors."""

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

import lfagg
import lfagg.ops as ops
from lfagg.datasets import make_circles_bags
from lfagg.encoders.codebook import auto_gamma, fit_codebook
from lfagg.models.feature_map import AdditiveChi2Map
from lfagg.models import heads
from lfagg.models.heads import MappedHead, SoftmaxRegression, block_rows
from lfagg.models.l2 import L2_FEW_EXAMPLES, L2_GRID, L2_PATIENCE, select_l2
from lfagg.training import TrainingDiverged, train_encoder


def encode(bags, C, P, gamma):
    """The soft BoW (T1) representation of every bag."""
    return ops.soft_bow(bags.features, bags.offsets, C, P, gamma)

FWD = {"bow": ops.soft_bow, "vlad": ops.soft_vlad}
BWD = {"bow": ops.soft_bow_backward, "vlad": ops.soft_vlad_backward}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------
# An independent numpy float64 softmax-regression loss (eq. 10 + L2 on W)
# ---------------------------------------------------------------------------------------
def ref_softmax_loss(X, y, W, b, mean, scale, l2):
    Z = (X - mean) / scale
    logits = Z @ W + b
    log_p = logits - logsumexp(logits, axis=1, keepdims=True)
    return -np.mean(log_p[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(W * W)


def central_diff(f, x, h):
    """Gradient of the scalar f at array x by central differences (h scalar or array like x)."""
    x = np.asarray(x, dtype=np.float64)
    h = np.broadcast_to(h, x.shape)
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h[idx]
        xm[idx] -= h[idx]
        grad[idx] = (f(xp) - f(xm)) / (2 * h[idx])
    return grad


def assert_grad_close(got, expected, rtol=1e-5, atol_factor=1e-6):
    atol = atol_factor * max(1e-12, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def small_problem(seed, sizes=(5, 8, 3, 7, 6, 4), D=3, K=4, n_classes=3):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    F = rng.normal(size=(offsets[-1], D))
    C = rng.normal(size=(K, D))
    P = rng.uniform(0.5, 2.0, size=(K, D))
    d = ((F[:, None, :] - C[None]) ** 2 * P[None]).sum(-1)
    gamma = 1.0 / np.median(d)
    y = np.arange(len(sizes)) % n_classes
    return rng, F, offsets, C, P, gamma, y


def make_head(rng, encoder, R0, n_classes, l2):
    """The head train_encoder uses for T1 (chi2 map + softmax regression) or T2 (softmax regression)."""
    fmap = AdditiveChi2Map(sample_steps=2) if encoder == "bow" else None
    n_in = fmap.output_dim(R0.shape[1]) if fmap else R0.shape[1]
    clf = SoftmaxRegression(n_in, n_classes, l2=l2)
    clf.fit_scaler(fmap.transform(R0) if fmap else R0)  # non-trivial frozen mean and scale
    clf.W[...] = rng.normal(scale=0.7, size=clf.W.shape)
    clf.b[...] = rng.normal(scale=0.3, size=clf.b.shape)
    return (MappedHead(fmap, clf) if fmap else clf), fmap, clf


def composed_loss(encoder, F, offsets, fmap, clf, y, C, P, gamma, W, b):
    """J(C, P, gamma, W, b) computed from the forward kernel and the reference loss only."""
    R = FWD[encoder](F, offsets, C, P, gamma)
    X = fmap.transform(R) if fmap else R
    return ref_softmax_loss(X, y, W, b, clf.mean, clf.scale, clf.l2)


# ---------------------------------------------------------------------------------------
# Gradient of the whole composed loss
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["bow", "vlad"])
@pytest.mark.parametrize("seed", [0, 1])
def test_composed_loss_gradient_matches_finite_differences(encoder, seed):
    rng, F, offsets, C, P, gamma, y = small_problem(seed)
    R0 = FWD[encoder](F, offsets, C, P, gamma)
    head, fmap, clf = make_head(rng, encoder, R0, 3, l2=0.05)
    W, b = clf.W.copy(), clf.b.copy()

    def J(C=C, P=P, gamma=gamma, W=W, b=b):
        return composed_loss(encoder, F, offsets, fmap, clf, y, C, P, gamma, W, b)

    # Analytic: the pieces train_encoder chains (head.loss_grad then the ops backward).
    loss, dR, (dW, db) = head.loss_grad(R0.astype(np.float64), y)
    gC, gP, g_gamma = BWD[encoder](F, offsets, C, P, gamma, dR)
    assert loss == pytest.approx(J(), rel=1e-12)
    assert dR.shape == R0.shape

    assert_grad_close(gC, central_diff(lambda c: J(C=c), C, 1e-6))
    assert_grad_close(gP, central_diff(lambda p: J(P=p), P, 1e-6 * P))
    fd_gamma = central_diff(lambda g: J(gamma=float(g[0])), np.array([gamma]), 1e-6 * gamma)[0]
    assert float(g_gamma) == pytest.approx(fd_gamma, rel=1e-5, abs=1e-10)
    assert_grad_close(dW, central_diff(lambda w: J(W=w), W, 1e-6))
    assert_grad_close(db, central_diff(lambda bb: J(b=bb), b, 1e-6))
    # Every parameter actually influences the loss (the check is not vacuous).
    for g in (gC, gP, dW, db):
        assert np.max(np.abs(g)) > 1e-6
    assert abs(g_gamma) > 1e-6


def test_composed_gradient_finite_when_a_codeword_gets_no_mass():
    """A codeword far from every feature gives R[:, k] ~ 0, the chi2 map's singular point:
    the clamped backward keeps every gradient finite."""
    rng, F, offsets, C, P, gamma, y = small_problem(3)
    C = C.copy()
    C[0] = 50.0  # no feature anywhere near: its soft assignment underflows to 0
    R0 = ops.soft_bow(F, offsets, C, P, gamma)
    assert np.max(R0[:, 0]) < 1e-200
    head, _, _ = make_head(rng, "bow", R0, 3, l2=0.05)
    loss, dR, head_grads = head.loss_grad(R0, y)
    grads = ops.soft_bow_backward(F, offsets, C, P, gamma, dR)
    assert np.isfinite(loss)
    for g in [dR, *head_grads, *grads]:
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("encoder", ["bow", "vlad"])
def test_train_encoder_step_uses_log_parameter_gradients(encoder):
    """One full-batch SGD step without momentum moves (C, log P, log gamma, W, b) by
    -lr * gradient, so the step recovers dJ/dC, dJ/dlog P, dJ/dlog gamma, dJ/dW, dJ/db:
    compare them with finite differences of J in those coordinates."""
    rng, F, offsets, C, P, gamma, y = small_problem(7)
    bags = lfagg.Bags(F, offsets)
    R0 = FWD[encoder](F, offsets, C, P, gamma)
    head, fmap, clf = make_head(rng, encoder, R0, 3, l2=0.05)
    W0, b0 = clf.W.copy(), clf.b.copy()

    def J(C=C, log_p=np.log(P), log_gamma=np.log(gamma), W=W0, b=b0):
        return composed_loss(encoder, F, offsets, fmap, clf, y, C, np.exp(log_p), float(np.exp(log_gamma)), W, b)

    J0 = J()
    lr = 1e-3
    res = train_encoder(bags, y, head, encoder, C, P, gamma, n_epochs=1, batch_size=len(bags),
                        n_samples_per_bag=None, optimizer="sgd", momentum=0.0, learning_rate=lr,
                        learn_gamma=True, random_state=0)
    assert res.history["loss"] == [pytest.approx(J0, rel=1e-12)]
    # documented: the centres' step is learning_rate times the root mean variance per dimension
    feature_scale = float(np.sqrt(np.var(F.astype(np.float64), axis=0).mean()))
    step_C = (C - res.centers) / (lr * feature_scale)
    step_log_p = (np.log(P) - np.log(res.precisions)) / lr
    step_log_gamma = (np.log(gamma) - np.log(res.gamma)) / lr
    step_W, step_b = (W0 - clf.W) / lr, (b0 - clf.b) / lr

    assert_grad_close(step_C, central_diff(lambda c: J(C=c), C, 1e-6), rtol=1e-4)
    assert_grad_close(step_log_p, central_diff(lambda lp: J(log_p=lp), np.log(P), 1e-6), rtol=1e-4)
    fd = central_diff(lambda lg: J(log_gamma=float(lg[0])), np.array([np.log(gamma)]), 1e-6)[0]
    assert step_log_gamma == pytest.approx(fd, rel=1e-4)
    assert_grad_close(step_W, central_diff(lambda w: J(W=w), W0, 1e-6), rtol=1e-4)
    assert_grad_close(step_b, central_diff(lambda bb: J(b=bb), b0, 1e-6), rtol=1e-4)
    # The inputs were not modified in place.
    assert not np.shares_memory(res.centers, C)


def test_a_dimension_far_from_the_others_does_not_change_the_centres_steps():
    """The centres' step scale is the features' spread per dimension: shifting one dimension
    (descriptors' dimensions have uneven means) moves the whole fit with it, where the std of
    all values pooled once made the steps 1,000x too long and the fit fell to chance."""
    train, y = lfagg.datasets.make_circles_bags(60, 20, random_state=0)
    test, y_test = lfagg.datasets.make_circles_bags(40, 20, random_state=1)
    shift = np.array([1000.0, 0.0])
    kwargs = dict(n_codewords=4, n_epochs=5, learning_rate=0.01, gamma=5.0, random_state=0, n_threads=1)
    plain = lfagg.LearnedBoW(**kwargs).fit(train, y)
    shifted = lfagg.LearnedBoW(**kwargs).fit(lfagg.Bags(train.features + shift, train.offsets), y)
    np.testing.assert_allclose(shifted.centers_ - shift, plain.centers_, atol=1e-6)
    assert shifted.score(lfagg.Bags(test.features + shift, test.offsets), y_test) == plain.score(test, y_test)


# ---------------------------------------------------------------------------------------
# SoftmaxRegression
# ---------------------------------------------------------------------------------------
def test_softmax_regression_loss_grad_matches_finite_differences():
    rng = np.random.default_rng(11)
    X = rng.normal(loc=2.0, scale=3.0, size=(9, 4))
    y = rng.integers(0, 3, size=9)
    clf = SoftmaxRegression(4, 3, l2=0.3)
    clf.fit_scaler(X)
    clf.W[...] = rng.normal(size=(4, 3))
    clf.b[...] = rng.normal(size=3)
    W, b = clf.W.copy(), clf.b.copy()
    loss, dX, (dW, db) = clf.loss_grad(X, y)

    def J(X=X, W=W, b=b):
        return ref_softmax_loss(X, y, W, b, clf.mean, clf.scale, clf.l2)

    assert loss == pytest.approx(J(), rel=1e-12)
    assert_grad_close(dX, central_diff(lambda x: J(X=x), X, 1e-6))
    assert_grad_close(dW, central_diff(lambda w: J(W=w), W, 1e-6))
    assert_grad_close(db, central_diff(lambda bb: J(b=bb), b, 1e-6))
    # loss_grad does not move the parameters
    np.testing.assert_array_equal(clf.W, W)


def test_softmax_regression_scaler_freezes_standardisation():
    rng = np.random.default_rng(12)
    X = rng.normal(loc=[1, -2, 5], scale=[0.1, 2.0, 10.0], size=(50, 3))
    X[:, 1] = 4.0  # a constant column must not divide by zero
    clf = SoftmaxRegression(3, 2)
    clf.fit_scaler(X)
    Z = (X - clf.mean) / clf.scale
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(Z[:, [0, 2]].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:, [0, 2]].std(0), 1, rtol=1e-12)


def test_inputs_constant_but_for_rounding_keep_their_units():
    """Every bag with the same representation but for rounding (standard deviations of
    1e-17): divided by that noise, the encoder's first step blew the inputs up by 1e16 and
    training diverged whatever the learning rate."""
    X = np.full((12, 6), 0.88079708) + np.random.default_rng(0).normal(scale=1e-17, size=(12, 6))
    clf = SoftmaxRegression(6, 2)
    clf.fit_scaler(X)
    np.testing.assert_array_equal(clf.scale, 1.0)
    X[:, 2] += np.linspace(0, 1e-3, 12)  # a spread rounding does not make: standardised as before
    clf.fit_scaler(X)
    assert clf.scale[2] == pytest.approx(X[:, 2].std()) and np.all(clf.scale[[0, 1, 3, 4, 5]] < 1e-3)
    y = np.arange(12) % 2
    bags = [np.array([[0.0, 0.0]] * 4 + [[1.0, 1.0]] * (1 + i % 2)) for i in range(12)]
    lfagg.LearnedBoW(2, pooling="max", n_epochs=1, random_state=0, n_threads=1).fit(bags, y)  # diverged


def test_softmax_regression_fit_matches_sklearn_logistic_regression():
    """J = mean CE + l2/2 ||W||^2 (b unpenalised) equals sklearn's objective
    (C * sum CE + 1/2 ||W||^2) divided by C n when l2 = 1 / (C n): same minimum."""
    rng = np.random.default_rng(13)
    n, d, k = 120, 5, 3
    centres = rng.normal(scale=1.5, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = centres[y] + rng.normal(size=(n, d))
    clf = SoftmaxRegression(d, k, l2=0.02)
    clf.fit_scaler(X)
    clf.fit(X, y)
    Z = (X - clf.mean) / clf.scale
    sk = LogisticRegression(C=1 / (clf.l2 * n), tol=1e-10, max_iter=5000).fit(Z, y)
    ours = ref_softmax_loss(X, y, clf.W, clf.b, clf.mean, clf.scale, clf.l2)
    theirs = ref_softmax_loss(Z, y, sk.coef_.T, sk.intercept_, 0.0, 1.0, clf.l2)
    assert ours <= theirs + 1e-7
    assert ours == pytest.approx(theirs, rel=1e-5)
    np.testing.assert_allclose(clf.decision_function(X) - clf.decision_function(X).mean(1, keepdims=True),
                               sk.decision_function(Z) - sk.decision_function(Z).mean(1, keepdims=True),
                               atol=2e-3)
    # The gradient at the solution vanishes.
    _, _, (dW, db) = clf.loss_grad(X, y)
    assert np.max(np.abs(dW)) < 1e-4 and np.max(np.abs(db)) < 1e-4


def wide_problem(rows: str):
    """(X (60, 400), y): many more inputs than examples. rows "distinct"; "repeated": rows
    1 and 2 repeat row 0 (rank 58, null directions that RowSpace drops); "nearly
    repeated": row 1 is row 0 moved by 1e-5 (an eigenvalue of X X^T about 1e-11 of the
    largest, which the eigendecomposition resolves too coarsely: the QR path)."""
    rng = np.random.default_rng(21)
    n, d, k = 60, 400, 3
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * 0.3 + rng.normal(size=(n, d))
    if rows == "repeated":
        X[1:3], y[1:3] = X[0], y[0]
    elif rows == "nearly repeated":
        X[1], y[1] = X[0] + 1e-5 * rng.normal(size=d), y[0]
    return X, y


ROWS = ["distinct", "repeated", "nearly repeated"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", ROWS)
def test_row_space_is_an_orthonormal_basis_of_the_rows(rows, dtype):
    X = wide_problem(rows)[0]
    Z = (X - X.mean(axis=0)).astype(dtype)  # standardised inputs: their rows sum to zero, one null direction
    space = heads.RowSpace(Z)
    rank = space.inputs.shape[1]
    assert rank == (57 if rows == "repeated" else 59 if rows == "distinct" else 60)  # "nearly": the QR, rank n
    Q = space.expand(np.eye(rank))
    np.testing.assert_allclose(Q.T @ Q, np.eye(rank), atol=1e-9)
    Z = Z.astype(np.float64)
    scale = np.abs(Z).max()
    np.testing.assert_allclose(Z @ Q, space.inputs, atol=1e-9 * scale)
    # It spans every row, but for what float32's rounding left along the dropped null direction.
    np.testing.assert_allclose(Q @ (Q.T @ Z.T), Z.T, atol=(1e-9 if dtype == np.float64 else 1e-6) * scale)
    np.testing.assert_allclose(space.coordinates(Z.T[:, :5]), Q.T @ Z.T[:, :5], atol=1e-9 * scale)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("l2", [0.05, 0.0])
def test_a_fit_with_many_more_inputs_than_examples_reaches_scikit_learns_minimum(rows, l2):
    X, y = wide_problem(rows)
    clf = SoftmaxRegression(X.shape[1], 3, l2=l2)
    clf.fit_scaler(X)
    start = np.random.default_rng(3).normal(size=clf.W.shape)
    clf.W[...] = start
    clf.fit(X, y, max_iter=5000)
    Z = (X - clf.mean) / clf.scale
    if l2 == 0:  # separable: no minimum; the part of W outside the rows' span is kept as it was
        space = heads.RowSpace(Z)
        Q = space.expand(np.eye(space.inputs.shape[1]))
        np.testing.assert_allclose(clf.W - Q @ (Q.T @ clf.W), start - Q @ (Q.T @ start), atol=1e-9)
        assert np.all(np.argmax(clf.decision_function(X), axis=1) == y)
        return
    sk = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-12, max_iter=20_000).fit(Z, y)
    ours = ref_softmax_loss(X, y, clf.W, clf.b, clf.mean, clf.scale, l2)
    theirs = ref_softmax_loss(Z, y, sk.coef_.T, sk.intercept_, 0.0, 1.0, l2)
    assert ours == pytest.approx(theirs, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_batch_loss_grad_is_the_reference_over_several_blocks(dtype, monkeypatch):
    """The blocked evaluation of L-BFGS (blocks of block_rows() rows, float32 inputs
    computed on in float64) gives the reference loss and its finite-difference gradient."""
    rng = np.random.default_rng(14)
    d, k = 6, 4
    monkeypatch.setattr(heads, "BLOCK_INPUTS", 100 * d)  # blocks of 100 rows
    n = 2 * block_rows(d) + 37
    Z = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, k, size=n)
    clf = SoftmaxRegression(d, k, l2=0.1)
    clf.W[...], clf.b[...] = rng.normal(size=(d, k)), rng.normal(size=k)
    W, b = clf.W.copy(), clf.b.copy()
    loss, (dW, db) = clf._full_batch_loss_grad(Z, y)

    def J(W=W, b=b):
        return ref_softmax_loss(Z.astype(np.float64), y, W, b, 0.0, 1.0, clf.l2)

    assert loss == pytest.approx(J(), rel=1e-12)
    assert_grad_close(dW, central_diff(lambda w: J(W=w), W, 1e-6))
    assert_grad_close(db, central_diff(lambda bb: J(b=bb), b, 1e-6))


def test_softmax_regression_fit_is_the_same_for_any_thread_count(monkeypatch):
    rng = np.random.default_rng(15)
    d, k = 8, 3
    monkeypatch.setattr(heads, "BLOCK_INPUTS", 64 * d)
    n = 3 * block_rows(d) + 5
    y = rng.integers(0, k, size=n)
    X = rng.normal(scale=0.8, size=(k, d))[y] + rng.normal(size=(n, d))
    fits = []
    for n_threads in (1, 2, 3, 0):
        clf = SoftmaxRegression(d, k, l2=1e-3)
        clf.fit_scaler(X)
        clf.fit(X, y, n_threads=n_threads)
        fits.append((clf.W, clf.b))
    for W, b in fits[1:]:
        np.testing.assert_array_equal(W, fits[0][0])
        np.testing.assert_array_equal(b, fits[0][1])


def weak_inputs(rng, n, n_inputs=200, shift=0.08):
    """Two classes, each of the n_inputs inputs shifted by +-shift: every input is weak,
    together they separate the classes."""
    y = np.arange(n) % 2
    return rng.standard_normal((n, n_inputs)) + shift * (2 * y[:, None] - 1), y


def test_select_l2_penalises_a_classifier_that_would_memorise():
    # 300 examples of 200 inputs: little more than the classifier can memorise, where a
    # weak penalty fits the noise. The chosen penalty must classify fresh data better
    # than the weakest one of the grid.
    rng = np.random.default_rng(0)
    X, y = weak_inputs(rng, 300)
    X_new, y_new = weak_inputs(rng, 4000)
    chosen = select_l2(X, y, 2, random_state=0)
    assert chosen in L2_GRID and chosen >= 1e-2

    def fresh_accuracy(l2):
        clf = SoftmaxRegression(X.shape[1], 2, l2)
        clf.fit_scaler(X)
        clf.fit(X, y)
        return np.mean(np.argmax(clf.decision_function(X_new), axis=1) == y_new)

    assert fresh_accuracy(chosen) > fresh_accuracy(min(L2_GRID)) + 0.02


def test_select_l2_prefers_a_penalty_that_fits_and_the_larger_of_equals():
    rng = np.random.default_rng(1)
    y = np.arange(200) % 2
    shared = 5 * rng.standard_normal(200)
    X = np.column_stack([shared + (2 * y - 1), shared])  # x1 - x2 separates the classes
    # A huge penalty leaves W along the difference of the class means, i.e. x1 alone
    # (about 58% accuracy): the weak penalty, which finds x1 - x2, must win.
    assert select_l2(X, y, 2, grid=(1e3, 1e-4)) == 1e-4
    # Both classify the held-out rows perfectly: the tie goes to the larger penalty.
    assert select_l2(X, y, 2, grid=(1e-4, 1e-3)) == 1e-3
    # Deterministic for a given split seed; a class with one example is allowed.
    X_noisy, y_noisy = weak_inputs(rng, 120)
    assert select_l2(X_noisy, y_noisy, 2, random_state=4) == select_l2(X_noisy, y_noisy, 2, random_state=4)
    y_single = y_noisy.copy()
    y_single[0] = 2
    assert select_l2(X_noisy, y_single, 3) in L2_GRID


def test_select_l2_stops_after_patience_penalties_classify_worse(monkeypatch):
    """Strongest first; L2_PATIENCE penalties in a row below the best end the search, a
    tie does not (the fits are stubbed: +1 classifies every held-out row, -1 none)."""
    rng = np.random.default_rng(2)
    y = np.arange(100) % 2
    X = (2 * y - 1)[:, None] + 0.1 * rng.standard_normal((100, 1))
    fitted = []

    def fake_fit(self, Z, y, max_iter=500, n_threads=1, space=None):
        fitted.append(self.l2)
        self.W[...] = sign[self.l2] * np.array([[-1.0, 1.0]])

    monkeypatch.setattr(SoftmaxRegression, "_fit_standardized", fake_fit)
    assert L2_PATIENCE == 2
    sign = {5.0: -1, 4.0: 1, 3.0: -1, 2.0: -1, 1.0: 1}
    assert select_l2(X, y, 2, grid=(1.0, 2.0, 3.0, 4.0, 5.0)) == 4.0
    assert fitted == [5.0, 4.0, 3.0, 2.0]  # 1.0 would tie with 4.0, but is never fitted
    fitted.clear()
    sign = {5.0: 1, 4.0: -1, 3.0: 1, 2.0: -1, 1.0: -1}
    assert select_l2(X, y, 2, grid=(1.0, 2.0, 3.0, 4.0, 5.0)) == 5.0  # ties go to the larger
    assert fitted == [5.0, 4.0, 3.0, 2.0, 1.0]  # the tie at 3.0 broke the row


def test_select_l2_on_wide_inputs_builds_one_row_space_for_every_penalty(monkeypatch):
    """The same choice and weights as each penalty's fit building its own basis of the
    same Z (deterministic), from one eigendecomposition instead of one per penalty."""
    import lfagg.models.l2 as l2_module

    X, y = weak_inputs(np.random.default_rng(4), 60, n_inputs=500)
    built = []
    original_init = heads.RowSpace.__init__
    monkeypatch.setattr(heads.RowSpace, "__init__", lambda self, Z: built.append(Z.shape) or original_init(self, Z))
    shared = select_l2(X, y, 2, random_state=0, return_weights=True)
    assert built == [(48, 500)]  # the 48 training rows of the split, once
    monkeypatch.setattr(l2_module, "fits_in_row_space", lambda Z: False)  # each fit builds its own
    built.clear()
    separate = select_l2(X, y, 2, random_state=0, return_weights=True)
    assert len(built) > 1 and shared[0] == separate[0]
    for ours, theirs in zip(shared[1], separate[1]):
        np.testing.assert_array_equal(ours, theirs)


def test_select_l2_returns_the_chosen_fit_as_a_start_for_the_fit_on_all_rows():
    rng = np.random.default_rng(3)
    X, y = weak_inputs(rng, 300, n_inputs=20)
    l2, (W, b) = select_l2(X, y, 2, random_state=0, return_weights=True)
    assert l2 == select_l2(X, y, 2, random_state=0) and W.shape == (20, 2) and b.shape == (2,)
    fits = []
    for start in (None, (W, b)):
        clf = SoftmaxRegression(20, 2, l2)
        clf.fit_scaler(X)
        if start is not None:
            clf.W[...], clf.b[...] = start
        clf.fit(X, y)
        fits.append(ref_softmax_loss(X, y, clf.W, clf.b, clf.mean, clf.scale, l2))
    assert fits[1] == pytest.approx(fits[0], rel=1e-7)  # the same optimum from either start
    with pytest.warns(UserWarning, match="too few to choose l2"):
        assert select_l2(np.zeros((3, 2)), np.array([0, 1, 1]), 2, return_weights=True) == (L2_FEW_EXAMPLES, None)


def test_select_l2_and_estimators_reject_bad_input():
    with pytest.warns(UserWarning, match="too few to choose l2"):
        assert select_l2(np.zeros((3, 2)), np.array([0, 1, 1]), 2) == L2_FEW_EXAMPLES
    for grid in ((), (1e-3, -1.0)):
        with pytest.raises(ValueError, match="grid must hold|l2 must be"):
            select_l2(np.zeros((30, 2)), np.arange(30) % 2, 2, grid=grid)
    bags, y = make_circles_bags(20, 10, random_state=0)
    for bad in (-1.0, float("nan"), "large", True):
        with pytest.raises(ValueError, match="l2 must be 'auto' or a finite number >= 0"):
            lfagg.LearnedBoW(2, l2=bad, n_epochs=0, random_state=0).fit(bags, y)
    model = lfagg.LearnedBoW(2, n_epochs=0, random_state=0).fit(bags, y)
    assert model.l2_ in L2_GRID and model.classifier_.l2 == model.l2_


# ---------------------------------------------------------------------------------------
# train_encoder on the circles bags
# ---------------------------------------------------------------------------------------
def circles_setup(seed, n_bags=40, n_per_bag=30, K=3):
    """Algorithm 1's start: K-Means codebook, unit precisions, auto gamma, W0 fitted."""
    bags, y = make_circles_bags(n_bags, n_per_bag, random_state=seed)
    codebook = fit_codebook(bags.features, K, "kmeans", seed)
    C, P = codebook.centers, codebook.precisions
    gamma = auto_gamma(bags.features, C, P)
    fmap = AdditiveChi2Map()
    clf = SoftmaxRegression(fmap.output_dim(K), 2, l2=1e-4)
    X0 = fmap.transform(encode(bags, C, P, gamma))
    clf.fit_scaler(X0)
    clf.fit(X0, y)
    return bags, y, C, P, gamma, MappedHead(fmap, clf)


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("sgd", 0.01)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_loss_decreases(optimizer, lr, seed):
    bags, y, C, P, gamma, head = circles_setup(seed)
    res = train_encoder(bags, y, head, "bow", C, P, gamma, n_epochs=15, batch_size=8, n_samples_per_bag=20,
                        optimizer=optimizer, learning_rate=lr, random_state=seed)
    loss = np.asarray(res.history["loss"])
    assert loss.shape == (15,) and np.all(np.isfinite(loss))
    assert np.mean(loss[-4:]) < np.mean(loss[:4])
    assert res.history["epoch"] == list(range(1, 16))
    assert len(res.history["time"]) == 15
    assert res.centers.shape == C.shape and res.precisions.shape == P.shape
    assert res.centers.dtype == np.float64 and res.precisions.dtype == np.float64
    assert np.all(res.precisions > 0)


def test_train_encoder_is_deterministic():
    def run(seed):
        bags, y, C, P, gamma, head = circles_setup(0)
        res = train_encoder(bags, y, head, "bow", C, P, gamma, n_epochs=4, batch_size=8, n_samples_per_bag=10,
                            learning_rate=0.05, learn_gamma=True, random_state=seed)
        return res, head.head.W.copy()

    (a, Wa), (b, Wb), (c, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.precisions, b.precisions)
    assert a.gamma == b.gamma
    assert a.history["loss"] == b.history["loss"]
    np.testing.assert_array_equal(Wa, Wb)
    # The seed matters (bag order and subsampling).
    assert not np.array_equal(a.centers, c.centers)


@pytest.mark.parametrize("encoder", ["bow", "vlad"])
def test_training_with_and_without_kept_assignments_agree(encoder, monkeypatch):
    """Steps whose assignments are too large to keep recompute them in the backward pass;
    both paths give the same parameters (up to rounding of the gamma gradient)."""
    def run(max_bytes):
        monkeypatch.setattr(lfagg.training.loop, "MAX_KEPT_ASSIGNMENTS_BYTES", max_bytes)
        bags, y, C, P, gamma, head = circles_setup(0)
        if encoder == "vlad":
            head = SoftmaxRegression(len(C) * bags.dim, 2)
        return train_encoder(bags, y, head, encoder, C, P, gamma, n_epochs=3, batch_size=8, n_samples_per_bag=10,
                             learning_rate=0.05, learn_gamma=True, random_state=1)

    kept, recomputed = run(1 << 40), run(0)
    np.testing.assert_allclose(kept.centers, recomputed.centers, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(kept.precisions, recomputed.precisions, rtol=1e-9)
    np.testing.assert_allclose(kept.gamma, recomputed.gamma, rtol=1e-9)
    assert not np.allclose(kept.centers, circles_setup(0)[2])  # training moved the centres


@pytest.mark.parametrize("cls", [lfagg.LearnedBoW, lfagg.LearnedVLAD])
def test_estimators_are_deterministic(cls):
    bags, y = make_circles_bags(30, 20, random_state=3)
    test_bags, _ = make_circles_bags(20, 20, random_state=4)

    def fit(seed):
        return cls(3, n_epochs=3, batch_size=8, n_samples_per_bag=10, learning_rate=0.05, learn_gamma=True,
                   random_state=seed).fit(bags, y)

    a, b, c = fit(1), fit(1), fit(2)
    np.testing.assert_array_equal(a.centers_, b.centers_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.gamma_ == b.gamma_
    assert a.history_["loss"] == b.history_["loss"]
    np.testing.assert_array_equal(a.predict(test_bags), b.predict(test_bags))
    np.testing.assert_array_equal(a.predict_proba(test_bags), b.predict_proba(test_bags))
    assert not np.array_equal(a.centers_, c.centers_)


def test_learn_gamma_changes_gamma_and_keeps_it_positive():
    bags, y, C, P, gamma, head = circles_setup(1)
    res = train_encoder(bags, y, head, "bow", C, P, gamma, n_epochs=5, batch_size=8, n_samples_per_bag=20,
                        learning_rate=0.1, learn_gamma=True, random_state=0)
    assert res.gamma != gamma
    assert res.gamma > 0 and np.isfinite(res.gamma)
    # learn_gamma=False (the default) leaves it exactly where it started
    bags, y, C, P, gamma, head = circles_setup(1)
    res = train_encoder(bags, y, head, "bow", C, P, gamma, n_epochs=2, batch_size=8, n_samples_per_bag=20,
                        learning_rate=0.1, random_state=0)
    assert res.gamma == gamma


def test_learn_gamma_in_estimator():
    bags, y = make_circles_bags(30, 20, random_state=5)
    kwargs = dict(n_epochs=4, batch_size=8, n_samples_per_bag=10, learning_rate=0.1, random_state=0)
    initial = lfagg.LearnedBoW(3, n_epochs=0, random_state=0).fit(bags, y).gamma_
    fixed = lfagg.LearnedBoW(3, learn_gamma=False, **kwargs).fit(bags, y).gamma_
    learned = lfagg.LearnedBoW(3, learn_gamma=True, **kwargs).fit(bags, y).gamma_
    assert fixed == initial
    assert learned != pytest.approx(initial, rel=1e-6)
    assert learned > 0 and np.isfinite(learned)


def test_learn_covariances_false_keeps_unit_covariances():
    bags, y = make_circles_bags(30, 20, random_state=6)
    kwargs = dict(n_epochs=4, batch_size=8, n_samples_per_bag=10, learning_rate=0.1, random_state=0)
    frozen = lfagg.LearnedBoW(3, learn_covariances=False, **kwargs).fit(bags, y)
    np.testing.assert_array_equal(frozen.covariances_, np.ones((3, 2)))
    initial = lfagg.LearnedBoW(3, n_epochs=0, random_state=0).fit(bags, y)
    assert not np.allclose(frozen.centers_, initial.centers_)  # the centres still moved
    learned = lfagg.LearnedBoW(3, learn_covariances=True, **kwargs).fit(bags, y)
    assert not np.allclose(learned.covariances_, 1.0)
    assert np.all(learned.covariances_ > 0)
    # the same switch at the train_encoder level
    bags2, y2, C, P, gamma, head = circles_setup(2)
    res = train_encoder(bags2, y2, head, "bow", C, P, gamma, n_epochs=2, batch_size=8, learning_rate=0.1,
                        learn_precisions=False, learn_centers=False, random_state=0)
    np.testing.assert_array_equal(res.precisions, P)
    np.testing.assert_array_equal(res.centers, C)


# ---------------------------------------------------------------------------------------
# The generic entry point: regression with a user loss
# ---------------------------------------------------------------------------------------
def regression_problem(seed):
    """Bags of circle points; the target of a bag is the fraction of its points on the inner circle."""
    bags, _ = make_circles_bags(60, 30, purity=0.7, random_state=seed)
    inner = (np.linalg.norm(bags.features, axis=1) < 0.75).astype(np.float64)
    target = np.add.reduceat(inner, bags.offsets[:-1]) / bags.sizes
    # A deliberately poor start: two codewords on the outer circle, left and right.
    C0 = np.array([[1.0, 0.0], [-1.0, 0.0]])
    P0 = np.ones((2, 2))
    return bags, target, C0, P0, auto_gamma(bags.features, C0, P0)


def least_squares_mse(R, t):
    """Mean squared error of the best affine prediction of t from R (a fresh linear regression)."""
    A = np.c_[R, np.ones(len(R))]
    coef, *_ = np.linalg.lstsq(A, t, rcond=None)
    return float(np.mean((A @ coef - t) ** 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_generic_callable_loss_regression(seed):
    """Style 1: a plain callable loss(R, targets) -> (J, dJ/dR): squared error of a fixed
    linear readout R[:, 0] (the share of soft mass on codeword 0) against the target."""
    bags, target, C0, P0, gamma0 = regression_problem(seed)
    readout = np.array([1.0, 0.0])
    calls = []

    def squared_loss(R, t):
        calls.append((R.shape, R.dtype))
        residual = R @ readout - t
        return 0.5 * np.mean(residual ** 2), np.outer(residual, readout) / len(t)

    R_start = encode(bags, C0, P0, gamma0)
    res = train_encoder(bags, target, squared_loss, "bow", C0, P0, gamma0, n_epochs=20, batch_size=10,
                        learning_rate=0.05, random_state=seed)
    R_end = encode(bags, res.centers, res.precisions, res.gamma)
    assert all(shape[1] == 2 and dtype == np.float64 for shape, dtype in calls)
    assert len(calls) == 20 * 6
    loss = np.asarray(res.history["loss"])
    assert np.mean(loss[-4:]) < 0.7 * np.mean(loss[:4])
    mse_start = np.mean((R_start @ readout - target) ** 2)
    mse_end = np.mean((R_end @ readout - target) ** 2)
    assert mse_end < 0.6 * mse_start
    assert least_squares_mse(R_end, target) < 0.6 * least_squares_mse(R_start, target)


class LinearRegressionHead:
    """Style 2: a user-written head with its own parameters, learned jointly."""

    def __init__(self, n_inputs):
        self.w = np.zeros(n_inputs)
        self.c = np.zeros(1)

    @property
    def params(self):
        return [self.w, self.c]

    def predict(self, R):
        return R @ self.w + self.c[0]

    def loss_grad(self, R, t):
        residual = self.predict(R) - t
        n = len(t)
        return (0.5 * np.mean(residual ** 2), np.outer(residual, self.w) / n,
                [R.T @ residual / n, np.array([residual.sum() / n])])


def test_linear_regression_head_gradient():
    rng = np.random.default_rng(0)
    R, t = rng.normal(size=(7, 3)), rng.normal(size=7)
    head = LinearRegressionHead(3)
    head.w[...] = rng.normal(size=3)
    head.c[...] = 0.3
    _, dR, (dw, dc) = head.loss_grad(R, t)

    def J(R=R, w=head.w, c=head.c):
        return 0.5 * np.mean((R @ w + c[0] - t) ** 2)

    assert_grad_close(dR, central_diff(lambda r: J(R=r), R, 1e-6))
    assert_grad_close(dw, central_diff(lambda w: J(w=w), head.w, 1e-6))
    assert_grad_close(dc, central_diff(lambda c: J(c=c), head.c, 1e-6))


@pytest.mark.parametrize("seed", [0, 1])
def test_generic_head_object_regression(seed):
    bags, target, C0, P0, gamma0 = regression_problem(seed)
    head = LinearRegressionHead(2)
    R_start = encode(bags, C0, P0, gamma0)
    res = train_encoder(bags, target, head, "bow", C0, P0, gamma0, n_epochs=20, batch_size=10,
                        learning_rate=0.05, random_state=seed)
    R_end = encode(bags, res.centers, res.precisions, res.gamma)
    loss = np.asarray(res.history["loss"])
    assert np.mean(loss[-4:]) < 0.5 * np.mean(loss[:4])
    assert np.any(head.w != 0)  # the head's parameters were optimised too
    # The learned representation is more predictive of the target than the initial one,
    # for the jointly trained head and for a freshly fitted linear regression.
    assert np.mean((head.predict(R_end) - target) ** 2) < 0.5 * np.var(target)
    assert least_squares_mse(R_end, target) < 0.6 * least_squares_mse(R_start, target)


def test_generic_loss_with_vlad_and_two_dimensional_targets():
    """Targets may be 2-D (rows per bag) and the encoder T2: regress each bag's mean feature."""
    bags, target, C0, P0, gamma0 = regression_problem(0)
    means = np.add.reduceat(bags.features, bags.offsets[:-1]) / bags.sizes[:, None]
    rng = np.random.default_rng(0)
    readout = rng.normal(size=(4, 2))  # fixed (K * D = 4) -> 2 map

    def loss(R, t):
        residual = R @ readout - t
        return 0.5 * np.mean(np.sum(residual ** 2, axis=1)), residual @ readout.T / len(t)

    res = train_encoder(bags, means, loss, "vlad", C0, P0, gamma0, n_epochs=10, batch_size=10,
                        learning_rate=0.05, random_state=0)
    loss_values = np.asarray(res.history["loss"])
    assert np.all(np.isfinite(loss_values))
    assert np.mean(loss_values[-3:]) < np.mean(loss_values[:3])


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
def _args():
    bags, y = make_circles_bags(6, 5, random_state=0)
    C = bags.features[:2].copy()
    return bags, y, C, np.ones_like(C), 1.0


def _squared(R, t):
    return 0.0, np.zeros_like(R)


def test_error_targets_length_mismatch():
    bags, y, C, P, g = _args()
    with pytest.raises(ValueError, match="targets"):
        train_encoder(bags, y[:-1], _squared, "bow", C, P, g, n_epochs=1)


@pytest.mark.parametrize("encoder", ["fisher", "BOW", "", None])
def test_error_bad_encoder(encoder):
    bags, y, C, P, g = _args()
    with pytest.raises(ValueError, match="encoder"):
        train_encoder(bags, y, _squared, encoder, C, P, g, n_epochs=1)


@pytest.mark.parametrize("optimizer", ["rmsprop", "SGD", ""])
def test_error_bad_optimizer(optimizer):
    bags, y, C, P, g = _args()
    with pytest.raises(ValueError, match="optimizer"):
        train_encoder(bags, y, _squared, "bow", C, P, g, n_epochs=1, optimizer=optimizer)


@pytest.mark.parametrize("n_epochs", [-1, 1.5, "3", None])
def test_error_bad_n_epochs(n_epochs):
    bags, y, C, P, g = _args()
    with pytest.raises(ValueError, match="n_epochs"):
        train_encoder(bags, y, _squared, "bow", C, P, g, n_epochs=n_epochs)


@pytest.mark.parametrize("batch_size", [0, -4, 2.0, None])
def test_error_bad_batch_size(batch_size):
    bags, y, C, P, g = _args()
    with pytest.raises(ValueError, match="batch_size"):
        train_encoder(bags, y, _squared, "bow", C, P, g, n_epochs=1, batch_size=batch_size)


def test_error_diverging_loss_is_reported():
    bags, y, C, P, g = _args()
    with pytest.raises(FloatingPointError, match="diverged"):
        train_encoder(bags, y, lambda R, t: (np.nan, np.zeros_like(R)), "bow", C, P, g, n_epochs=1)


def test_gradients_that_overflow_adam_are_reported():
    """Gradients beyond 1e154 overflowed Adam's average of their squares to infinity, and
    its steps became 0: training stopped moving without a word (SGD's step overflows the
    parameters, which was reported)."""
    bags, y, C, P, g = _args()
    huge = lambda R, t: (0.5, np.full_like(R, 1e300))  # noqa: E731
    with pytest.raises(TrainingDiverged, match="the gradients overflowed the optimizer"):
        train_encoder(bags, y, huge, "bow", C, P, g, n_epochs=1, optimizer="adam")
    with pytest.raises(TrainingDiverged, match="the parameters overflowed"):
        train_encoder(bags, y, huge, "bow", C, P, g, n_epochs=1, optimizer="sgd")


def test_zero_epochs_returns_the_initial_parameters():
    bags, y, C, P, g = _args()
    res = train_encoder(bags, y, _squared, "bow", C, P, g, n_epochs=0)
    np.testing.assert_array_equal(res.centers, C)
    np.testing.assert_allclose(res.precisions, P)
    assert res.gamma == pytest.approx(g)
    assert res.history == {}


def test_on_epoch_end_can_stop_and_extend_records():
    bags, y, C, P, g = _args()
    seen = []

    def on_epoch_end(epoch, record, result):
        seen.append(epoch)
        record["extra"] = 10 * epoch
        return epoch == 1

    res = train_encoder(bags, y, _squared, "bow", C, P, g, n_epochs=5, batch_size=2, on_epoch_end=on_epoch_end)
    assert seen == [0, 1]
    assert res.history["extra"] == [0, 10]
    assert len(res.history["loss"]) == 2
