"""lfagg.BagClassifier: an unsupervised encoder (BagOfWords, VLAD, FisherVector), the chi2
map for non-negative representations, then the shared softmax regression. Outputs, an
independent scikit-learn reference (standardised encodings + LogisticRegression, and
AdditiveChi2Sampler for the chi2 path), the scikit-learn protocol (NotFittedError, clone,
params, pickle, GridSearchCV on Bags), errors, timings_ and determinism."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.kernel_approximation import AdditiveChi2Sampler
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import lfagg
from conftest import three_class_bags
from lfagg.datasets import make_circles_bags
from lfagg.models.feature_map import AdditiveChi2Map
from lfagg.models.l2 import L2_GRID

ENCODERS = {
    "bow": lambda **kw: lfagg.BagOfWords(8, **kw),
    "vlad": lambda **kw: lfagg.VLAD(3, **kw),
    "fisher": lambda **kw: lfagg.FisherVector(2, **kw),
}
# (n_bags, width) of each encoder's representation of 2-D local features
WIDTH = {"bow": 8, "vlad": 3 * 2, "fisher": 2 * 2 * 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def circles():
    train = make_circles_bags(40, 20, random_state=0)
    test = make_circles_bags(30, 20, random_state=1)
    return train, test




def standardise(train, *others):
    """(train, *others) standardised by the training columns' mean and population std
    (columns constant on the training set are only centred), plain float64 NumPy."""
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)  # ddof=0
    std = np.where(std > 1e-12 * max(1.0, std.max()), std, 1.0)
    return [(np.asarray(a, dtype=np.float64) - mean) / std for a in (train, *others)]


def sklearn_reference(Z_train, y, l2, n_classes):
    """scikit-learn's LogisticRegression minimising the same objective as
    mean cross-entropy + l2/2 ||W||^2 (intercept unpenalised).

    Multinomial (3+ classes): sklearn minimises C * sum CE + 1/2 ||W||^2, i.e. ours times
    C n when C = 1 / (l2 n). Binary: sklearn fits one weight vector d; the two-class
    softmax only depends on d = w1 - w0, and for a given d the penalty l2/2 (|w0|^2 + |w1|^2)
    is smallest at w1 = -w0 = d/2, where it is l2/4 |d|^2: sklearn with C = 2 / (l2 n)."""
    n = len(y)
    C = (2.0 if n_classes == 2 else 1.0) / (l2 * n)
    return LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(Z_train, y)


# ---------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENCODERS))
def test_binary_outputs(name, circles):
    (bags, y), (test_bags, test_y) = circles
    clf = lfagg.BagClassifier(ENCODERS[name](random_state=0), random_state=0)
    assert clf.fit(bags, y) is clf
    n = len(test_bags)
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    assert clf.n_features_in_ == 2
    # "auto" maps BoW (non-negative) through chi2, VLAD and FV (signed) through nothing
    if name == "bow":
        assert lfagg.BagOfWords.nonnegative is True
        assert isinstance(clf.feature_map_, AdditiveChi2Map)
    else:
        assert clf.feature_map_ is None

    R = clf.transform(test_bags)
    assert R.shape == (n, WIDTH[name])
    np.testing.assert_array_equal(R, clf.encoder_.transform(test_bags))

    proba = clf.predict_proba(test_bags)
    assert proba.shape == (n, 2) and proba.dtype == np.float64
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)

    scores = clf.decision_function(test_bags)
    assert scores.shape == (n,) and scores.dtype == np.float64
    # two classes: the difference of the logits, i.e. the log-odds of classes_[1]
    np.testing.assert_allclose(scores, np.log(proba[:, 1]) - np.log(proba[:, 0]), rtol=1e-8, atol=1e-9)
    pred = clf.predict(test_bags)
    assert pred.shape == (n,)
    np.testing.assert_array_equal(pred, clf.classes_[(scores > 0).astype(int)])
    np.testing.assert_array_equal(pred, clf.classes_[np.argmax(proba, axis=1)])
    assert clf.score(test_bags, test_y) == pytest.approx(np.mean(pred == test_y))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_three_classes_and_string_labels(name):
    bags, y = three_class_bags(0, n_bags=30)
    labels = np.array(["cat", "dog", "eel"])
    clf = lfagg.BagClassifier(ENCODERS[name](random_state=0), random_state=0).fit(bags, labels[y])
    np.testing.assert_array_equal(clf.classes_, labels)
    test_bags, test_y = three_class_bags(1, n_bags=15)
    proba = clf.predict_proba(test_bags)
    assert proba.shape == (15, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    scores = clf.decision_function(test_bags)
    assert scores.shape == (15, 3)
    # softmax of the scores is the probability
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(axis=1, keepdims=True), rtol=1e-10, atol=1e-14)
    pred = clf.predict(test_bags)
    assert pred.dtype.kind == "U" and set(pred) <= set(labels)
    np.testing.assert_array_equal(pred, clf.classes_[np.argmax(scores, axis=1)])
    assert clf.score(test_bags, labels[test_y]) == pytest.approx(np.mean(pred == labels[test_y]))
    if name == "bow":  # intra-normalised VLAD with a codeword per blob loses the blob proportions
        assert clf.score(test_bags, labels[test_y]) > 0.6


def test_list_of_arrays_and_bags_agree(circles):
    (bags, y), (test_bags, _) = circles
    a = lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), l2=0.01).fit(bags, y)
    b = lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), l2=0.01).fit(list(bags), list(y))
    np.testing.assert_array_equal(a.predict_proba(list(test_bags)), b.predict_proba(test_bags))


def test_learns_separable_bags():
    bags, y = make_circles_bags(60, 30, random_state=3)
    test_bags, test_y = make_circles_bags(100, 30, random_state=4)
    clf = lfagg.BagClassifier(lfagg.BagOfWords(16, random_state=0), random_state=0).fit(bags, y)
    assert clf.score(test_bags, test_y) > 0.8


# ---------------------------------------------------------------------------------------
# Independent reference: scikit-learn on the standardised encodings
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", list(ENCODERS))
def test_probabilities_equal_sklearn_logistic_regression(name, n_classes, circles):
    if n_classes == 2:
        (bags, y), (test_bags, _) = circles
    else:
        bags, y = three_class_bags(2, n_bags=30)
        test_bags, _ = three_class_bags(3, n_bags=12)
    l2 = 0.05
    clf = lfagg.BagClassifier(ENCODERS[name](random_state=0), feature_map=None, l2=l2, random_state=0).fit(bags, y)
    assert clf.feature_map_ is None and clf.l2_ == l2
    # the encoder's own output is the input (the encodings are tested elsewhere)
    Z_train, Z_test = standardise(clf.encoder_.transform(bags), clf.encoder_.transform(test_bags))
    sk = sklearn_reference(Z_train, y, l2, n_classes)
    np.testing.assert_array_equal(sk.classes_, clf.classes_)
    np.testing.assert_allclose(clf.predict_proba(test_bags), sk.predict_proba(Z_test), atol=1e-4)
    np.testing.assert_allclose(clf.predict_proba(bags), sk.predict_proba(Z_train), atol=1e-4)


def test_chi2_path_equals_sklearn_additive_chi2_sampler(circles):
    """feature_map="auto" on BoW: scikit-learn's AdditiveChi2Sampler (sample_steps=2, its
    default interval), standardised, then the same logistic regression."""
    (bags, y), (test_bags, _) = circles
    l2 = 0.05
    clf = lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), l2=l2).fit(bags, y)
    sampler = AdditiveChi2Sampler(sample_steps=2)
    M_train = sampler.fit_transform(clf.encoder_.transform(bags).astype(np.float64))
    M_test = sampler.transform(clf.encoder_.transform(test_bags).astype(np.float64))
    assert M_train.shape[1] == 8 * 3
    Z_train, Z_test = standardise(M_train, M_test)
    sk = sklearn_reference(Z_train, y, l2, 2)
    np.testing.assert_allclose(clf.predict_proba(bags), sk.predict_proba(Z_train), atol=1e-4)
    # L-BFGS stops at a gradient of 1e-5, which leaves the weights uncertain by about that
    # over the curvature (l2 / 2) where the training bags say little; test bags lying
    # there move by up to 2e-4 (with this codebook; 1e-4 passed with others)
    np.testing.assert_allclose(clf.predict_proba(test_bags), sk.predict_proba(Z_test), atol=5e-4)


# ---------------------------------------------------------------------------------------
# scikit-learn protocol
# ---------------------------------------------------------------------------------------
def test_not_fitted_error(circles):
    (bags, _), _ = circles
    clf = lfagg.BagClassifier(lfagg.BagOfWords(4))
    for method in (clf.predict, clf.predict_proba, clf.decision_function, clf.transform):
        with pytest.raises(NotFittedError):
            method(bags)


def test_clone_get_params_set_params(circles):
    (bags, y), _ = circles
    clf = lfagg.BagClassifier(lfagg.VLAD(3, random_state=1), feature_map=None, l2=0.1, random_state=5)
    params = clf.get_params()
    assert params["feature_map"] is None and params["l2"] == 0.1 and params["random_state"] == 5
    assert params["encoder__n_codewords"] == 3 and params["encoder__random_state"] == 1
    cloned = clone(clf)
    assert cloned is not clf and cloned.encoder is not clf.encoder
    assert {k: v for k, v in cloned.get_params().items() if k != "encoder"} == \
        {k: v for k, v in params.items() if k != "encoder"}
    assert clf.set_params(l2=0.01, encoder__n_codewords=5) is clf
    assert clf.l2 == 0.01 and clf.encoder.n_codewords == 5
    assert cloned.get_params()["encoder__n_codewords"] == 3  # the clone is independent
    clf.fit(bags, y)
    assert clf.encoder_.n_codewords == 5 and clf.transform(bags[:2]).shape == (2, 5 * 2)
    assert not hasattr(clf.encoder, "cluster_centers_")  # the encoder parameter is cloned, not fitted
    with pytest.raises(NotFittedError):
        clone(clf).predict(bags)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_pickle_round_trip(name, circles):
    (bags, y), (test_bags, _) = circles
    clf = lfagg.BagClassifier(ENCODERS[name](random_state=0), random_state=0).fit(bags, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(test_bags), clf.predict_proba(test_bags))
    np.testing.assert_array_equal(restored.predict(test_bags), clf.predict(test_bags))
    assert restored.l2_ == clf.l2_


def test_grid_search_over_the_encoder_on_bags(circles):
    (bags, y), _ = circles
    assert isinstance(bags, lfagg.Bags)
    clf = lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0), l2=0.01, random_state=0)
    search = GridSearchCV(clf, {"encoder__n_codewords": [2, 6]}, cv=3).fit(bags, y)
    assert search.best_params_["encoder__n_codewords"] in (2, 6)
    assert search.best_estimator_.encoder_.n_codewords == search.best_params_["encoder__n_codewords"]
    assert search.predict(bags[:5]).shape == (5,)
    # each cross-validation score is that of the classifier fitted on the integer-indexed folds
    folds = list(StratifiedKFold(3).split(np.zeros(len(y)), y))
    for i, K in enumerate(search.cv_results_["param_encoder__n_codewords"]):
        expected = [clone(clf).set_params(encoder__n_codewords=K).fit(bags[train], y[train]).score(bags[test], y[test])
                    for train, test in folds]
        assert search.cv_results_["mean_test_score"][i] == pytest.approx(np.mean(expected), abs=1e-12)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
def test_single_class_is_an_error(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="two classes"):
        lfagg.BagClassifier(lfagg.BagOfWords(4)).fit(bags, np.zeros(len(bags), dtype=int))


@pytest.mark.parametrize("bad_y", ["short", "long", "2d"])
def test_wrong_labels_shape_is_an_error(bad_y, circles):
    (bags, y), _ = circles
    labels = {"short": y[:-1], "long": np.r_[y, 0], "2d": np.c_[y, y]}[bad_y]
    with pytest.raises(ValueError, match="one label per bag"):
        lfagg.BagClassifier(lfagg.BagOfWords(4)).fit(bags, labels)


@pytest.fixture
def no_encoder_fit(monkeypatch):
    """Makes every encoder's fit fail loudly: an error must come before any fit work."""
    def fit(self, X, y=None):
        raise AssertionError(f"{type(self).__name__}.fit ran before the parameter check")

    for cls in (lfagg.BagOfWords, lfagg.VLAD, lfagg.FisherVector):
        monkeypatch.setattr(cls, "fit", fit)


@pytest.mark.parametrize("make", [lambda: lfagg.VLAD(3), lambda: lfagg.FisherVector(2)])
def test_chi2_on_a_signed_encoder_is_an_error_before_fitting(make, circles, no_encoder_fit):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="feature_map"):
        lfagg.BagClassifier(make(), feature_map="chi2").fit(bags, y)


def pca():
    from sklearn.decomposition import PCA  # a transformer of rows: it refused the bags in its own terms

    return PCA(2)


@pytest.mark.parametrize("encoder", [lambda: lfagg.LearnedBoW(2), lambda: lfagg.LearnedVLADCV(n_codewords=2),
                                     lambda: lfagg.BagClassifier(lfagg.BagOfWords(2)), lambda: lfagg.BagOfWords, pca])
def test_a_classifier_or_a_class_as_the_encoder_is_an_error(encoder, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="encoder must be a transformer of bags"):
        lfagg.BagClassifier(encoder()).fit(bags, y)


class MeanEncoder:
    """A duck-typed encoder (fit / transform / get_params, no scikit-learn base class):
    each bag's mean feature."""

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self

    def fit(self, X, y=None):
        return self

    def transform(self, X):  # X: the validated Bags (features, offsets), whatever the caller gave
        return np.add.reduceat(X.features, X.offsets[:-1]) / np.diff(X.offsets)[:, None]


def test_a_duck_typed_encoder_is_accepted():
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(5, 2)) + i % 2 for i in range(20)]
    y = np.arange(20) % 2
    model = lfagg.BagClassifier(MeanEncoder(), random_state=0).fit(bags, y)
    assert model.score(bags, y) > 0.8
    # transform, too, hands the encoder Bags (it once passed the list on as it came)
    np.testing.assert_allclose(model.transform(bags), [bag.mean(axis=0) for bag in bags], rtol=1e-12)


@pytest.mark.parametrize("feature_map", ["rbf", "CHI2", True, 0])
def test_unknown_feature_map_is_an_error(feature_map, circles, no_encoder_fit):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="feature_map"):
        lfagg.BagClassifier(lfagg.BagOfWords(4), feature_map=feature_map).fit(bags, y)


@pytest.mark.parametrize("l2", [-1, -1e-9, True, "big", np.nan, np.inf, None, [0.1]])
def test_bad_l2_is_an_error_before_fitting(l2, circles, no_encoder_fit):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="l2"):
        lfagg.BagClassifier(lfagg.BagOfWords(4), l2=l2).fit(bags, y)


def test_l2_zero_and_numpy_values_are_accepted(circles):
    (bags, y), _ = circles
    for l2 in (0, 0.0, np.float32(0.5), np.int64(1)):
        clf = lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0), l2=l2).fit(bags, y)
        assert clf.l2_ == float(l2) and isinstance(clf.l2_, float)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_wrong_dimension_at_predict(name, circles):
    (bags, y), _ = circles
    clf = lfagg.BagClassifier(ENCODERS[name](random_state=0), l2=0.01).fit(bags, y)
    wrong = [np.ones((4, 3))]
    for method in (clf.predict, clf.predict_proba, clf.decision_function, clf.transform):
        with pytest.raises(ValueError, match="dimension"):
            method(wrong)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_bags_are_an_error(value, circles):
    (bags, y), (test_bags, _) = circles
    bad = lfagg.Bags(test_bags.features.copy(), test_bags.offsets)
    bad.features[7, 1] = value
    with pytest.raises(ValueError, match="NaN or infinity"):
        lfagg.BagClassifier(lfagg.BagOfWords(4)).fit(lfagg.Bags(np.r_[bags.features, bad.features[:20]],
                                                                 np.r_[bags.offsets, bags.offsets[-1] + 20]),
                                                     np.r_[y, 1])
    clf = lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0), l2=0.01).fit(bags, y)
    for method in (clf.predict, clf.predict_proba, clf.decision_function, clf.transform):
        with pytest.raises(ValueError, match="NaN or infinity"):
            method(bad)


# ---------------------------------------------------------------------------------------
# timings_, l2_, determinism
# ---------------------------------------------------------------------------------------
def test_timings_and_auto_l2(circles):
    (bags, y), _ = circles
    clf = lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), random_state=0).fit(bags, y)
    assert set(clf.timings_) == {"codebook", "encode", "l2", "classifier"}
    for value in clf.timings_.values():
        assert isinstance(value, float) and value >= 0.0
    assert clf.l2_ in L2_GRID
    fixed = lfagg.BagClassifier(lfagg.BagOfWords(8, random_state=0), l2=0.3).fit(bags, y)
    assert fixed.l2_ == 0.3
    assert set(fixed.timings_) == {"codebook", "encode", "l2", "classifier"}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_same_random_state_gives_identical_predictions(name, circles):
    (bags, y), (test_bags, _) = circles

    def fit():
        return lfagg.BagClassifier(ENCODERS[name](random_state=3), random_state=3).fit(bags, y)

    a, b = fit(), fit()
    assert a.l2_ == b.l2_
    np.testing.assert_array_equal(a.predict_proba(test_bags), b.predict_proba(test_bags))
    np.testing.assert_array_equal(a.decision_function(test_bags), b.decision_function(test_bags))
