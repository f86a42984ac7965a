"""LearnedBoW (T1) and LearnedVLAD (T2) as scikit-learn estimators: outputs, learning
beats the initial (K-Means) parameters, history and validation, early stopping,
initialisations, gamma="auto", clone/get_params/pickle, verbosity, input types, errors."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import lfagg
from conftest import three_class_bags
from lfagg.datasets import make_circles_bags

ESTIMATORS = [lfagg.LearnedBoW, lfagg.LearnedVLAD]
FAST = dict(n_epochs=3, batch_size=8, n_samples_per_bag=10, learning_rate=0.05)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def circles():
    train = make_circles_bags(30, 20, random_state=0)
    test = make_circles_bags(12, 20, random_state=1)
    return train, test




def out_dim(cls, K, D):
    return K if cls is lfagg.LearnedBoW else K * D


# ---------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_binary_outputs(cls, circles):
    (bags, y), (test_bags, test_y) = circles
    model = cls(3, random_state=0, **FAST)
    assert model.fit(bags, y) is model
    n = len(test_bags)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    assert model.n_features_in_ == 2

    R = model.transform(test_bags)
    assert R.shape == (n, out_dim(cls, 3, 2)) and R.dtype == np.float64
    if cls is lfagg.LearnedBoW:
        np.testing.assert_allclose(R.sum(axis=1), 1.0, rtol=1e-12)  # soft assignments are normalised
        assert np.all(R >= 0)

    proba = model.predict_proba(test_bags)
    assert proba.shape == (n, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((proba >= 0) & (proba <= 1))

    scores = model.decision_function(test_bags)
    assert scores.shape == (n,) and scores.dtype == np.float64
    pred = model.predict(test_bags)
    assert pred.shape == (n,)
    np.testing.assert_array_equal(pred, model.classes_[(scores > 0).astype(int)])
    np.testing.assert_array_equal(pred, model.classes_[np.argmax(proba, axis=1)])
    # For two classes the decision function is the log-odds of classes_[1].
    np.testing.assert_allclose(scores, np.log(proba[:, 1] / proba[:, 0]), rtol=1e-8, atol=1e-10)
    assert model.score(test_bags, test_y) == pytest.approx(np.mean(pred == test_y))

    assert model.centers_.shape == (3, 2) and model.centers_.dtype == np.float64
    assert model.covariances_.shape == (3, 2) and model.covariances_.dtype == np.float64
    assert np.all(model.covariances_ > 0)
    assert isinstance(model.gamma_, float) and model.gamma_ > 0


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_multiclass_outputs_and_string_labels(cls):
    bags, y = three_class_bags(0, n_bags=24)
    labels = np.array(["cat", "dog", "eel"])[y]
    model = cls(3, random_state=0, **FAST).fit(bags, labels)
    np.testing.assert_array_equal(model.classes_, ["cat", "dog", "eel"])
    test_bags, test_y = three_class_bags(1, n_bags=9)
    proba = model.predict_proba(test_bags)
    assert proba.shape == (9, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    scores = model.decision_function(test_bags)
    assert scores.shape == (9, 3)
    pred = model.predict(test_bags)
    assert set(pred) <= {"cat", "dog", "eel"}
    np.testing.assert_array_equal(pred, model.classes_[np.argmax(scores, axis=1)])
    np.testing.assert_array_equal(pred, model.classes_[np.argmax(proba, axis=1)])
    assert model.score(test_bags, np.array(["cat", "dog", "eel"])[test_y]) > 0.5


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_float32_bags(cls, circles):
    (bags, y), (test_bags, _) = circles
    bags32 = lfagg.Bags(bags.features.astype(np.float32), bags.offsets)
    test32 = lfagg.Bags(test_bags.features.astype(np.float32), test_bags.offsets)
    model = cls(3, random_state=0, **FAST).fit(bags32, y)
    R = model.transform(test32)
    assert R.dtype == np.float32 and R.shape == (len(test32), out_dim(cls, 3, 2))
    proba = model.predict_proba(test32)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    # float32 and float64 inputs of the same fitted model agree up to float32 precision
    np.testing.assert_allclose(model.transform(test_bags), R, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Learning beats the initial parameters (the paper's Table I "initial" rows, Fig. 1)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_bow_beats_initial_kmeans_parameters(seed):
    train_bags, train_y = make_circles_bags(60, 30, random_state=seed)
    test_bags, test_y = make_circles_bags(100, 30, random_state=seed + 100)
    initial = lfagg.LearnedBoW(3, n_epochs=0, random_state=seed).fit(train_bags, train_y)
    learned = lfagg.LearnedBoW(3, n_epochs=15, batch_size=8, n_samples_per_bag=20, learning_rate=0.05,
                               random_state=seed).fit(train_bags, train_y)
    # The same start (same seed: same K-Means codebook, hence the same auto gamma, not learned) ...
    assert learned.gamma_ == pytest.approx(initial.gamma_, rel=1e-12)
    # ... but K-Means codewords on concentric circles do not separate inner from outer
    # points: the initial representation is near chance, the learned one is not.
    acc_initial = initial.score(test_bags, test_y)
    acc_learned = learned.score(test_bags, test_y)
    assert acc_learned >= 0.85
    assert acc_learned >= acc_initial + 0.25
    assert not np.allclose(learned.centers_, initial.centers_)


@pytest.mark.parametrize("seed", [0, 1])
def test_learned_vlad_is_not_worse_than_initial(seed):
    train_bags, train_y = make_circles_bags(60, 30, random_state=seed)
    test_bags, test_y = make_circles_bags(100, 30, random_state=seed + 100)
    initial = lfagg.LearnedVLAD(3, n_epochs=0, random_state=seed).fit(train_bags, train_y)
    learned = lfagg.LearnedVLAD(3, n_epochs=10, batch_size=8, n_samples_per_bag=20, learning_rate=0.05,
                                random_state=seed).fit(train_bags, train_y)
    assert learned.score(test_bags, test_y) >= initial.score(test_bags, test_y) - 0.03
    assert learned.score(test_bags, test_y) >= 0.9


# ---------------------------------------------------------------------------------------
# History, validation, early stopping
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_history_without_validation(cls, circles):
    (bags, y), _ = circles
    model = cls(3, random_state=0, **{**FAST, "n_epochs": 4}).fit(bags, y)
    assert len(model.history_["loss"]) == 4
    assert all(np.isfinite(model.history_["loss"]))
    assert "val_accuracy" not in model.history_


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_history_with_validation_data(cls, circles):
    (bags, y), (test_bags, test_y) = circles
    model = cls(3, random_state=0, **{**FAST, "n_epochs": 4}).fit(bags, y, validation_data=(test_bags, test_y))
    assert len(model.history_["loss"]) == 4
    acc = model.history_["val_accuracy"]
    assert len(acc) == 4
    # accuracies on 12 bags: multiples of 1/12 in [0, 1]
    assert all(0 <= a <= 1 for a in acc)
    np.testing.assert_allclose(np.asarray(acc) * 12, np.round(np.asarray(acc) * 12), atol=1e-9)


def test_history_with_validation_fraction(circles):
    (bags, y), _ = circles
    model = lfagg.LearnedBoW(3, validation_fraction=0.25, random_state=0, **FAST).fit(bags, y)
    assert len(model.history_["loss"]) == FAST["n_epochs"]
    acc = np.asarray(model.history_["val_accuracy"])
    assert acc.shape == (FAST["n_epochs"],)
    # 30 bags, 25 % held out: accuracy on 8 bags (multiples of 1/8)
    np.testing.assert_allclose(acc * 8, np.round(acc * 8), atol=1e-9)


def two_blob_bags(seed, n_bags=20, n_per_bag=20, purity=0.8):
    """Class 0 bags draw `purity` of their points from a blob at the origin, class 1 from a
    blob at (4, 4): separable from the first epoch on, so validation accuracy is 1 and cannot improve."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_bags) % 2
    arrays = []
    for c in y:
        from_a = rng.random(n_per_bag) < (purity if c == 0 else 1 - purity)
        arrays.append(np.where(from_a[:, None], 0.0, 4.0) + rng.normal(scale=0.5, size=(n_per_bag, 2)))
    return lfagg.Bags.from_arrays(arrays), y


def test_early_stopping_stops_and_restores_best(capsys):
    bags, y = two_blob_bags(0)
    val = two_blob_bags(50)
    # gamma small enough that the soft assignments are not saturated: the parameters keep moving.
    kwargs = dict(batch_size=5, n_samples_per_bag=10, learning_rate=0.05, l2=1.0, gamma=0.2, random_state=0)
    stopped = lfagg.LearnedBoW(2, n_epochs=10, early_stopping=True, n_iter_no_change=2, **kwargs).fit(
        bags, y, validation_data=val)
    # The initial state (W0 on the K-Means codebook) already classifies every validation
    # bag: it competes with the epochs, so the two epochs after it are stale and it is kept.
    assert stopped.history_["val_accuracy"][0] == 1.0
    assert len(stopped.history_["loss"]) == 2 < 10  # n_iter_no_change stale epochs after the start
    start = lfagg.LearnedBoW(2, n_epochs=0, **kwargs).fit(bags, y, validation_data=val)
    one_epoch = lfagg.LearnedBoW(2, n_epochs=1, **kwargs).fit(bags, y, validation_data=val)
    assert not np.allclose(one_epoch.centers_, start.centers_)  # training did move them
    np.testing.assert_array_equal(stopped.centers_, start.centers_)
    np.testing.assert_array_equal(stopped.covariances_, start.covariances_)
    assert stopped.gamma_ == start.gamma_
    np.testing.assert_allclose(stopped.predict_proba(val[0]), start.predict_proba(val[0]), rtol=1e-10)
    capsys.readouterr()
    lfagg.LearnedBoW(2, n_epochs=10, early_stopping=True, n_iter_no_change=2, verbose=1, **kwargs).fit(
        bags, y, validation_data=val)
    said = capsys.readouterr().err
    assert "early stopping kept the parameters after epoch 0 of 2 (validation accuracy 1.0000)" in said


def test_early_stopping_with_validation_fraction_runs():
    bags, y = two_blob_bags(1, n_bags=24)
    model = lfagg.LearnedBoW(2, n_epochs=8, early_stopping=True, n_iter_no_change=1, validation_fraction=0.25,
                             batch_size=6, n_samples_per_bag=10, learning_rate=0.05, gamma=0.2,
                             random_state=0).fit(bags, y)
    assert len(model.history_["val_accuracy"]) == len(model.history_["loss"]) < 8


def test_without_early_stopping_runs_all_epochs():
    bags, y = two_blob_bags(0)
    model = lfagg.LearnedBoW(2, n_epochs=5, n_iter_no_change=1, batch_size=5, n_samples_per_bag=10,
                             gamma=0.2, random_state=0).fit(bags, y, validation_data=two_blob_bags(50))
    assert len(model.history_["loss"]) == 5


# ---------------------------------------------------------------------------------------
# Initialisations and gamma
# ---------------------------------------------------------------------------------------
def blob_mixture_bags(seed):
    """Three well-separated blobs of different spreads, mixed in every bag."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    stds = np.array([0.1, 0.5, 1.0])
    arrays = []
    for _ in range(30):
        comp = rng.integers(0, 3, 40)
        arrays.append(means[comp] + rng.normal(size=(40, 2)) * stds[comp, None])
    return arrays, np.arange(30) % 2, means, stds


def test_init_gmm_gives_gmm_means_and_covariances():
    arrays, y, means, stds = blob_mixture_bags(0)
    model = lfagg.LearnedBoW(3, init="gmm", n_epochs=0, random_state=0).fit(arrays, y)
    order = np.argsort(model.centers_[:, 0] + 2 * model.centers_[:, 1])  # blob order: origin, (5,0), (0,5)
    np.testing.assert_allclose(model.centers_[order], means, atol=0.3)
    np.testing.assert_allclose(model.covariances_[order], np.repeat(stds[:, None] ** 2, 2, axis=1), rtol=0.35)
    # and it trains
    trained = lfagg.LearnedBoW(3, init="gmm", random_state=0, **FAST).fit(arrays, y)
    assert np.all(np.isfinite(trained.centers_)) and np.all(trained.covariances_ > 0)
    assert trained.predict(arrays).shape == (30,)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_init_random_samples_distinct_features(cls):
    arrays, y, _, _ = blob_mixture_bags(1)
    features = np.concatenate(arrays)
    model = cls(4, init="random", n_epochs=0, random_state=0).fit(arrays, y)
    for c in model.centers_:
        assert np.any(np.all(features == c, axis=1))  # each centre is a training feature
    assert len(np.unique(model.centers_, axis=0)) == 4
    np.testing.assert_array_equal(model.covariances_, 1.0)
    trained = cls(4, init="random", random_state=0, **FAST).fit(arrays, y)
    assert np.all(np.isfinite(trained.predict_proba(arrays)))


def test_init_kmeans_has_unit_covariances(circles):
    (bags, y), _ = circles
    model = lfagg.LearnedBoW(3, init="kmeans", n_epochs=0, random_state=0).fit(bags, y)
    np.testing.assert_array_equal(model.covariances_, 1.0)


def test_gamma_auto_is_positive_and_scales_as_inverse_square(circles):
    (bags, y), _ = circles
    gammas = {}
    for s in (1.0, 10.0, 0.1):
        scaled = lfagg.Bags(bags.features * s, bags.offsets)
        model = lfagg.LearnedBoW(3, gamma="auto", n_epochs=0, random_state=0).fit(scaled, y)
        assert np.isfinite(model.gamma_) and model.gamma_ > 0
        gammas[s] = model.gamma_
        # documented default: 1 / median over features of the distance to the nearest codeword
        d = (((scaled.features[:, None, :] - model.centers_[None]) ** 2) / model.covariances_[None]).sum(-1)
        assert model.gamma_ == pytest.approx(1 / np.median(d.min(axis=1)), rel=1e-9)
    assert gammas[10.0] == pytest.approx(gammas[1.0] / 100, rel=1e-6)
    assert gammas[0.1] == pytest.approx(gammas[1.0] * 100, rel=1e-6)


def test_gamma_auto_does_not_depend_on_bag_order():
    """The documented default uses the median over local features: reordering the bags
    (e.g. a data set sorted by class) must not change it beyond sampling noise."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(scale=0.1 if b < 20 else 1.0, size=(500, 2)) for b in range(30)]  # 15,000 features
    y = np.arange(30) % 2
    features = np.concatenate(arrays)
    for order in (np.arange(30), np.arange(30)[::-1]):
        model = lfagg.LearnedBoW(3, n_epochs=0, random_state=0).fit([arrays[i] for i in order], y[order])
        d = (((features[:, None, :] - model.centers_[None]) ** 2) / model.covariances_[None]).sum(-1)
        assert model.gamma_ == pytest.approx(1 / np.median(d.min(axis=1)), rel=0.15)


def test_gamma_scale_multiplies_the_auto_gamma(circles):
    (bags, y), _ = circles
    for scale in (1.0, 4.0, 0.5):
        model = lfagg.LearnedBoW(3, gamma_scale=scale, n_epochs=0, random_state=0).fit(bags, y)
        d = (((bags.features[:, None, :] - model.centers_[None]) ** 2) / model.covariances_[None]).sum(-1)
        d_min = np.median(d.min(axis=1))  # the same K-Means codebook for every scale (same seed)
        assert model.gamma_ == pytest.approx(scale / d_min, rel=1e-9)


def test_explicit_gamma_is_used(circles):
    (bags, y), _ = circles
    assert lfagg.LearnedBoW(3, gamma=2.5, n_epochs=0, random_state=0).fit(bags, y).gamma_ == 2.5
    model = lfagg.LearnedBoW(3, gamma=2.5, learn_gamma=False, random_state=0, **FAST).fit(bags, y)
    assert model.gamma_ == 2.5


@pytest.mark.parametrize("feature_map", [None, "chi2"])
def test_feature_map_choice(feature_map, circles):
    (bags, y), (test_bags, _) = circles
    model = lfagg.LearnedBoW(3, feature_map=feature_map, random_state=0, **FAST).fit(bags, y)
    assert (model.feature_map_ is None) == (feature_map is None)
    np.testing.assert_allclose(model.predict_proba(test_bags).sum(axis=1), 1.0)


def test_default_feature_maps():
    bags, y = make_circles_bags(10, 10, random_state=0)
    assert lfagg.LearnedBoW(2, n_epochs=0, random_state=0).fit(bags, y).feature_map_ is not None
    assert lfagg.LearnedVLAD(2, n_epochs=0, random_state=0).fit(bags, y).feature_map_ is None


# ---------------------------------------------------------------------------------------
# A fit continued from the same model's initial fit (Table I's initial and learned rows)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("init", ["kmeans", "gmm"])
def test_fit_from_initial_equals_fit(cls, init, circles):
    (bags, y), (test_bags, _) = circles
    params = dict(FAST, init=init, validation_fraction=0.2, random_state=3)
    initial = cls(3, **dict(params, n_epochs=0)).fit(bags, y)
    state = [a.copy() for a in (initial.centers_, initial.covariances_, initial.classifier_.W)]
    fresh = cls(3, **params).fit(bags, y)
    resumed = cls(3, **params)._fit_from_initial(initial, bags, y)
    for name in ("centers_", "covariances_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(fresh, name))
    np.testing.assert_array_equal(resumed.classifier_.W, fresh.classifier_.W)
    np.testing.assert_array_equal(resumed.predict_proba(test_bags), fresh.predict_proba(test_bags))
    assert resumed.gamma_ == fresh.gamma_ and resumed.l2_ == fresh.l2_
    for key in ("loss", "val_accuracy"):
        assert resumed.history_[key] == fresh.history_[key]
    assert set(resumed.timings_) == set(fresh.timings_)
    assert resumed.timings_["codebook"] == initial.timings_["codebook"]  # not fitted again
    assert not np.array_equal(resumed.centers_, initial.centers_)  # it learned ...
    for before, after in zip(state, (initial.centers_, initial.covariances_, initial.classifier_.W)):
        np.testing.assert_array_equal(after, before)  # ... on copies: the initial model is untouched


@pytest.mark.parametrize("change", [dict(n_epochs=1), dict(learning_rate=0.5), dict(n_codewords=4)])
def test_fit_from_initial_rejects_another_model(change, circles):
    (bags, y), _ = circles
    initial = lfagg.LearnedBoW(3, **dict(FAST, n_epochs=0), random_state=0)
    initial.set_params(**change).fit(bags, y)
    with pytest.raises(ValueError, match="initial must be this LearnedBoW fitted with n_epochs=0"):
        lfagg.LearnedBoW(3, **FAST, random_state=0)._fit_from_initial(initial, bags, y)
    with pytest.raises(ValueError, match="initial must be this LearnedVLAD"):
        lfagg.LearnedVLAD(3, **FAST, random_state=0)._fit_from_initial(initial, bags, y)


@pytest.mark.parametrize("random_state", [None, np.random.default_rng(0)])
def test_fit_from_initial_needs_an_integer_random_state(random_state, circles):
    (bags, y), _ = circles
    initial = lfagg.LearnedBoW(3, **dict(FAST, n_epochs=0), random_state=random_state).fit(bags, y)
    model = clone(initial).set_params(n_epochs=2)
    model.random_state = initial.random_state  # clone copies a Generator: the params would differ
    with pytest.raises(ValueError, match="integer random_state"):
        model._fit_from_initial(initial, bags, y)


def test_fit_from_initial_rejects_other_data(circles):
    (bags, y), _ = circles
    initial = lfagg.LearnedBoW(3, **dict(FAST, n_epochs=0), random_state=0).fit(bags, y)
    model = lfagg.LearnedBoW(3, **FAST, random_state=0)
    with pytest.raises(ValueError, match="other bags or labels"):
        model._fit_from_initial(initial, bags, np.where(y == y[0], 7, 9))
    with pytest.raises(NotFittedError):
        model._fit_from_initial(lfagg.LearnedBoW(3, **dict(FAST, n_epochs=0)), bags, y)


def test_a_learning_rate_that_wrecks_the_encoder_without_diverging_is_warned_about():
    """At learning_rate 1 the training loss stayed finite (45, 13, 8 by epoch) while the
    precisions went to 1e-26 ... 1e35: the model predicted one class of three after
    starting at 100% training accuracy, without a word."""
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(2)
    bags = lfagg.Bags.from_arrays([(rng.normal(size=(rng.integers(5, 30), 4)) + (i % 3) * 0.8).astype(np.float32)
                                   for i in range(60)])
    y = np.arange(60) % 3
    with pytest.warns(ConvergenceWarning, match=r"fits its training bags worse than its initial state .*"
                                                r"learning_rate \(1\) is probably too large"):
        wrecked = lfagg.LearnedBoW(4, n_epochs=3, learning_rate=1.0, random_state=0).fit(bags, y)
    assert len(np.unique(wrecked.predict(bags))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a sound step: no warning
        assert lfagg.LearnedBoW(4, n_epochs=3, learning_rate=0.01, random_state=0).fit(bags, y).score(bags, y) > 0.9


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_refit_refused_for_its_parameters_or_bags_leaves_the_model_unfitted(cls, circles):
    """The old fit stayed (n_codewords 4 with the parameters saying 8), and save refused it."""
    (bags, y), _ = circles
    model = cls(4, random_state=0, **FAST).fit(bags, y)
    for params, X in ((dict(n_codewords=0), bags), (dict(n_codewords=8), [np.full((3, 2), np.nan)])):
        with pytest.raises(ValueError):
            model.set_params(**params).fit(X, y[:len(X)])
        with pytest.raises(NotFittedError):
            model.predict(bags)
        model.set_params(n_codewords=4).fit(bags, y)


# ---------------------------------------------------------------------------------------
# scikit-learn conventions: clone, params, pickle, verbosity, inputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_clone_and_params_round_trip(cls, circles):
    model = cls(5, gamma=0.3, learn_gamma=True, init="random", n_epochs=2, optimizer="sgd", l2=0.01,
                random_state=7)
    params = model.get_params()
    assert params["n_codewords"] == 5 and params["gamma"] == 0.3 and params["optimizer"] == "sgd"
    twin = cls(**params)
    assert twin.get_params() == params
    cloned = clone(model)
    assert cloned is not model and cloned.get_params() == params
    other = cls()
    assert other.set_params(**params) is other
    assert other.get_params() == params
    # clone of a fitted model is unfitted
    (bags, y), _ = circles
    fitted = cls(3, random_state=0, **FAST).fit(bags, y)
    unfitted = clone(fitted)
    assert not hasattr(unfitted, "centers_") and not hasattr(unfitted, "classifier_")
    with pytest.raises(NotFittedError):
        unfitted.transform(bags)
    # __init__ stores parameters only
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(cls(3)))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_pickle_round_trip(cls, circles):
    (bags, y), (test_bags, _) = circles
    model = cls(3, random_state=0, **FAST).fit(bags, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(test_bags), model.predict(test_bags))
    np.testing.assert_array_equal(restored.predict_proba(test_bags), model.predict_proba(test_bags))
    np.testing.assert_array_equal(restored.transform(test_bags), model.transform(test_bags))
    np.testing.assert_array_equal(restored.centers_, model.centers_)
    assert restored.history_ == model.history_
    assert restored.get_params() == model.get_params()


def test_verbose_prints_progress(capsys, circles):
    (bags, y), _ = circles
    lfagg.LearnedBoW(3, verbose=1, random_state=0, **FAST).fit(bags, y)
    captured = capsys.readouterr()
    assert "epoch" in captured.err and "loss" in captured.err
    assert f"{FAST['n_epochs']}/{FAST['n_epochs']}" in captured.err
    assert captured.out == ""


def test_verbose_zero_prints_nothing(capsys, circles):
    (bags, y), (test_bags, _) = circles
    model = lfagg.LearnedVLAD(3, verbose=0, random_state=0, **FAST).fit(bags, y)
    model.predict(test_bags)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_list_of_arrays_equals_bags(cls, circles):
    (bags, y), (test_bags, _) = circles
    from_bags = cls(3, random_state=0, **FAST).fit(bags, y)
    from_list = cls(3, random_state=0, **FAST).fit(list(bags), list(y))
    np.testing.assert_array_equal(from_list.centers_, from_bags.centers_)
    np.testing.assert_array_equal(from_list.predict(list(test_bags)), from_bags.predict(test_bags))
    np.testing.assert_array_equal(from_list.transform(list(test_bags)), from_bags.transform(test_bags))


def test_bags_of_different_sizes(circles):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 2)) + (n % 2) * 2 for n in (3, 17, 1, 40, 8, 9, 22, 5)]
    y = [n % 2 for n in (3, 17, 1, 40, 8, 9, 22, 5)]
    model = lfagg.LearnedBoW(2, random_state=0, **FAST).fit(arrays, y)
    assert model.transform(arrays).shape == (8, 2)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_one_class_only(cls, circles):
    (bags, _), _ = circles
    with pytest.raises(ValueError, match="two classes"):
        cls(3, **FAST).fit(bags, np.zeros(len(bags), dtype=int))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_y_length_mismatch(cls, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="y"):
        cls(3, **FAST).fit(bags, y[:-1])
    with pytest.raises(ValueError, match="y"):
        cls(3, **FAST).fit(bags, y[:, None])


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_too_many_codewords(cls):
    arrays = [np.random.default_rng(i).normal(size=(2, 3)) for i in range(3)]  # 6 local features
    with pytest.raises(ValueError, match="n_codewords"):
        cls(7, **FAST).fit(arrays, [0, 1, 0])


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_wrong_dimension_at_inference(cls, circles):
    (bags, y), _ = circles
    model = cls(3, random_state=0, **FAST).fit(bags, y)
    wrong = [np.ones((4, 3)), np.ones((5, 3))]
    for method in (model.transform, model.predict, model.predict_proba, model.decision_function):
        with pytest.raises(ValueError, match="dimension"):
            method(wrong)
    with pytest.raises(ValueError, match="dimension"):
        model.score(wrong, [0, 1])


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_wrong_dimension_of_validation_data(cls, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="dimension"):
        cls(3, **FAST).fit(bags, y, validation_data=([np.ones((4, 3)), np.ones((5, 3))], [0, 1]))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_validation_labels_of_other_classes_or_early_stopping_without_validation_are_errors(cls, circles):
    """Both once passed silently: a validation accuracy of 0 every epoch (the labels as
    strings, the training ones integers), and early stopping that watched nothing."""
    (bags, y), (test_bags, test_y) = circles
    for labels in (test_y.astype(str), np.where(test_y == test_y[0], 7, test_y)):
        with pytest.raises(ValueError, match="validation_data's labels hold classes the training bags do not"):
            cls(3, **FAST).fit(bags, y, validation_data=(test_bags, labels))
    with pytest.raises(ValueError, match="early_stopping=True needs held-out bags"):
        cls(3, early_stopping=True, **FAST).fit(bags, y)
    float_labels = cls(3, **FAST).fit(bags, y, validation_data=(test_bags, test_y.astype(float)))  # 1.0 is 1
    assert len(float_labels.history_["val_accuracy"]) == FAST["n_epochs"]
    objects = cls(3, **FAST).fit(bags, y.astype(object), validation_data=(test_bags, test_y))  # ints either way
    assert len(objects.history_["val_accuracy"]) == FAST["n_epochs"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_non_finite_bags(cls, bad, circles):
    (bags, y), (test_bags, _) = circles
    features = bags.features.copy()
    features[5, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        cls(3, **FAST).fit(lfagg.Bags(features, bags.offsets), y)
    model = cls(3, random_state=0, **FAST).fit(bags, y)
    test_features = test_bags.features.copy()
    test_features[0, 0] = bad
    with pytest.raises(ValueError, match="NaN"):
        model.predict(lfagg.Bags(test_features, test_bags.offsets))


@pytest.mark.parametrize("method", ["transform", "predict", "predict_proba", "decision_function", "score"])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_not_fitted(cls, method, circles):
    _, (test_bags, test_y) = circles
    args = (test_bags, test_y) if method == "score" else (test_bags,)
    with pytest.raises(NotFittedError):
        getattr(cls(3), method)(*args)


@pytest.mark.parametrize("gamma", [0, -1.0, np.nan, np.inf, "big", None, "AUTO"])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_bad_gamma(cls, gamma, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="gamma"):
        cls(3, gamma=gamma, **FAST).fit(bags, y)


@pytest.mark.parametrize("gamma_scale", [0, -2.0, np.nan, np.inf, "4", None, True])
def test_error_bad_gamma_scale(gamma_scale, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="gamma_scale must be a positive finite number"):
        lfagg.LearnedBoW(3, gamma_scale=gamma_scale, **FAST).fit(bags, y)


def test_error_gamma_scale_with_a_numeric_gamma(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="gamma_scale multiplies gamma='auto' only"):
        lfagg.LearnedVLAD(3, gamma=0.5, gamma_scale=2.0, **FAST).fit(bags, y)
    assert lfagg.LearnedVLAD(3, gamma=0.5, gamma_scale=1, n_epochs=0, random_state=0).fit(bags, y).gamma_ == 0.5


@pytest.mark.parametrize("init", ["k-means", "KMEANS", "", None])
def test_error_bad_init(init, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="init"):
        lfagg.LearnedBoW(3, init=init, **FAST).fit(bags, y)


@pytest.mark.parametrize("feature_map", ["rbf", "CHI2", 3])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_error_bad_feature_map(cls, feature_map, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="feature_map"):
        cls(3, feature_map=feature_map, **FAST).fit(bags, y)


def test_error_bad_training_parameters(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="optimizer"):
        lfagg.LearnedBoW(3, **{**FAST, "optimizer": "rmsprop"}).fit(bags, y)
    with pytest.raises(ValueError, match="n_epochs"):
        lfagg.LearnedBoW(3, **{**FAST, "n_epochs": -1}).fit(bags, y)
    with pytest.raises(ValueError, match="batch_size"):
        lfagg.LearnedBoW(3, **{**FAST, "batch_size": 0}).fit(bags, y)
    with pytest.raises(ValueError, match="n_codewords = 3 needs max_init_features .* >= 3, got 2: lower n_codewords"):
        lfagg.LearnedBoW(3, max_init_features=2, **FAST).fit(bags, y)
