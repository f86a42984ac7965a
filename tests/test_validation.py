"""The shared validation module (lfagg._validation) and "validation once per public call":
numpy integers accepted wherever ints are, booleans and strings rejected as numbers with a
ValueError naming the argument, random_state types, one finiteness scan per public call,
training kernels called without their own feature scan (and bitwise equal to the ops on
finite data), and Bags cut from validated Bags equal to Bags built from scratch."""

import numpy as np
import pytest

import lfagg
import lfagg._validation
import lfagg.ops as ops
from lfagg._native import core
from lfagg.datasets import make_circles_bags
from lfagg.encoders.soft import SoftEncoder
from lfagg.training import train_encoder

FAST = dict(n_epochs=1, batch_size=8, n_samples_per_bag=5, l2=0.01)
C0 = np.array([[0.0, 0.0], [0.8, 0.0], [0.0, -0.8]])
P0 = np.ones((3, 2))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def circles():
    train = make_circles_bags(24, 12, random_state=0)
    test = make_circles_bags(10, 12, random_state=1)
    return train, test


def squared_loss(R, targets):
    """A callable loss for train_encoder: J = mean_b |R_b - t_b e_0|^2 / 2."""
    T = np.zeros_like(R)
    T[:, 0] = targets
    diff = R - T
    return 0.5 * np.mean(np.sum(diff ** 2, axis=1)), diff / len(R)


def train(bags, y, **kwargs):
    kwargs = {"n_epochs": 1, "batch_size": 8, **kwargs}
    gamma = kwargs.pop("gamma", 1.0)
    return train_encoder(bags, y, squared_loss, "bow", C0, P0, gamma, **kwargs)


def learned(**kwargs):
    return lfagg.LearnedBoW(**{"n_codewords": 3, "random_state": 0, **FAST, **kwargs})


# ---------------------------------------------------------------------------------------
# NumPy integers are integers
# ---------------------------------------------------------------------------------------
def test_numpy_integers_are_accepted_by_learned_bow(circles):
    (bags, y), (test_bags, _) = circles
    a = lfagg.LearnedBoW(np.int64(3), n_epochs=np.int64(1), batch_size=np.int64(8), n_samples_per_bag=np.int32(5),
                         max_init_features=np.int64(1000), n_threads=np.int64(1), l2=0.01,
                         random_state=np.int64(0)).fit(bags, y)
    b = lfagg.LearnedBoW(3, n_epochs=1, batch_size=8, n_samples_per_bag=5, max_init_features=1000, n_threads=1,
                         l2=0.01, random_state=0).fit(bags, y)
    assert a.centers_.shape == (3, 2)
    np.testing.assert_array_equal(a.predict_proba(test_bags), b.predict_proba(test_bags))


def test_zero_dimensional_arrays_are_numbers_and_other_arrays_are_not(circles):
    (bags, _), _ = circles
    args = (bags.features, bags.offsets, C0, P0)
    np.testing.assert_array_equal(ops.soft_bow(*args, np.array(0.5)), ops.soft_bow(*args, 0.5))
    assert lfagg._validation.positive_real(np.float32(2), "x") == 2.0
    assert lfagg._validation.positive_int(np.array(3), "n_codewords") == 3
    for bad in (np.array([0.5]), np.array(True), np.array("0.5"), np.array(-1.0)):
        with pytest.raises(ValueError, match="gamma must be a positive finite number"):
            ops.soft_bow(*args, bad)


def test_numpy_integers_are_accepted_by_train_encoder(circles):
    (bags, y), _ = circles
    a = train(bags, y, n_epochs=np.int64(2), batch_size=np.int16(8), n_samples_per_bag=np.uint8(5),
              n_threads=np.int64(1), random_state=np.int64(0))
    b = train(bags, y, n_epochs=2, batch_size=8, n_samples_per_bag=5, n_threads=1, random_state=0)
    assert len(a.history["loss"]) == 2
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.precisions, b.precisions)


def test_numpy_integer_momentum_is_accepted(circles):
    """momentum=0 is valid, so is np.int64(0)."""
    (bags, y), _ = circles
    a = train(bags, y, optimizer="sgd", momentum=np.int64(0), random_state=0)
    b = train(bags, y, optimizer="sgd", momentum=0, random_state=0)
    np.testing.assert_array_equal(a.centers, b.centers)


def test_numpy_integers_are_accepted_by_baselines_ops_and_bags(circles):
    (bags, _), _ = circles
    est = lfagg.BagOfWords(np.int32(4), max_init_features=np.int64(100), max_iter=np.int64(50),
                           random_state=np.int64(0)).fit(bags)
    ref = lfagg.BagOfWords(4, max_init_features=100, max_iter=50, random_state=0).fit(bags)
    np.testing.assert_array_equal(est.transform(bags), ref.transform(bags))
    R = ops.soft_bow(bags.features, bags.offsets, C0, P0, np.int64(2), n_threads=np.int64(1))
    np.testing.assert_array_equal(R, ops.soft_bow(bags.features, bags.offsets, C0, P0, 2.0, n_threads=1))
    np.testing.assert_array_equal(bags.subsample(np.int64(3), 0).sizes, 3)


@pytest.mark.parametrize("make", [lambda nt: lfagg.BagOfWords(4, n_threads=nt, random_state=0),
                                  lambda nt: lfagg.VLAD(3, n_threads=nt, random_state=0),
                                  lambda nt: lfagg.FisherVector(2, n_threads=nt, random_state=0)],
                         ids=["BagOfWords", "VLAD", "FisherVector"])
def test_numpy_integer_n_threads_is_accepted_by_baselines(make, circles):
    (bags, _), _ = circles
    np.testing.assert_array_equal(make(np.int64(1)).fit(bags).transform(bags), make(1).fit(bags).transform(bags))


# ---------------------------------------------------------------------------------------
# Booleans and strings are not numbers
# ---------------------------------------------------------------------------------------
BOOLEANS = [
    ("LearnedBoW", lambda b, y: learned(n_codewords=True).fit(b, y), "n_codewords"),
    ("LearnedBoW", lambda b, y: learned(n_epochs=True).fit(b, y), "n_epochs"),
    ("LearnedBoW", lambda b, y: learned(batch_size=True).fit(b, y), "batch_size"),
    ("LearnedBoW", lambda b, y: learned(n_samples_per_bag=True).fit(b, y), "n_samples_per_bag"),
    ("LearnedBoW", lambda b, y: learned(gamma=True).fit(b, y), "gamma"),
    ("LearnedBoW", lambda b, y: learned(gamma_scale=True).fit(b, y), "gamma_scale"),
    ("LearnedBoW", lambda b, y: learned(n_threads=True).fit(b, y), "n_threads"),
    ("LearnedBoW", lambda b, y: learned(learning_rate=True).fit(b, y), "learning_rate"),
    ("LearnedBoW", lambda b, y: learned(l2=True).fit(b, y), "l2"),
    ("LearnedVLAD", lambda b, y: lfagg.LearnedVLAD(True).fit(b, y), "n_codewords"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords(True).fit(b), "n_codewords"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords(3, assignment="soft", gamma=True).fit(b), "gamma"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords(3, n_threads=True).fit(b), "n_threads"),
    ("train_encoder", lambda b, y: train(b, y, n_epochs=True), "n_epochs"),
    ("train_encoder", lambda b, y: train(b, y, batch_size=True), "batch_size"),
    ("train_encoder", lambda b, y: train(b, y, learning_rate=True), "learning_rate"),
    ("train_encoder", lambda b, y: train(b, y, n_threads=True), "n_threads"),
    ("ops.soft_bow", lambda b, y: ops.soft_bow(b.features, b.offsets, C0, P0, 1.0, n_threads=True), "n_threads"),
    ("Bags.subsample", lambda b, y: b.subsample(True, 0), "n_per_bag"),
]


@pytest.mark.parametrize("where, call, name", BOOLEANS, ids=[f"{w}-{n}" for w, _, n in BOOLEANS])
def test_booleans_are_rejected_as_numbers(where, call, name, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match=name):
        call(bags, y)


@pytest.mark.parametrize("op", [ops.soft_bow, ops.soft_vlad])
def test_ops_reject_a_boolean_gamma(op, circles):
    """gamma is a positive real: True is not (it would silently be gamma = 1)."""
    (bags, _), _ = circles
    with pytest.raises(ValueError, match="gamma"):
        op(bags.features, bags.offsets, C0, P0, True)


def test_train_encoder_rejects_a_boolean_gamma(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="gamma"):
        train(bags, y, gamma=True)


def test_train_encoder_rejects_a_negative_gamma_naming_its_value(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match=r"gamma.*-1"):
        train(bags, y, gamma=-1.0)


def test_sgd_momentum_rejects_a_boolean(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="momentum"):
        train(bags, y, optimizer="sgd", momentum=False)


@pytest.mark.parametrize("value", [True, "3"])
def test_learned_rejects_a_bad_n_iter_no_change(value, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="n_iter_no_change"):
        learned(n_iter_no_change=value, early_stopping=True, validation_fraction=0.25).fit(bags, y)


@pytest.mark.parametrize("value", [True, 1.5, 1e-3, 0.999])  # the last two: fewer bags than classes on a side
def test_learned_rejects_a_bad_validation_fraction(value, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="validation_fraction"):
        learned(validation_fraction=value).fit(bags, y)


STRINGS = [
    ("LearnedBoW", lambda b, y: learned(n_codewords="8").fit(b, y), "n_codewords"),
    ("LearnedBoW", lambda b, y: learned(n_epochs="2").fit(b, y), "n_epochs"),
    ("LearnedBoW", lambda b, y: learned(batch_size="8").fit(b, y), "batch_size"),
    ("LearnedBoW", lambda b, y: learned(gamma="1").fit(b, y), "gamma"),
    ("LearnedBoW", lambda b, y: learned(learning_rate="0.1").fit(b, y), "learning_rate"),
    ("LearnedBoW", lambda b, y: learned(n_threads="2").fit(b, y), "n_threads"),
    ("LearnedBoW", lambda b, y: learned(l2="0.1").fit(b, y), "l2"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords("8").fit(b), "n_codewords"),
    ("train_encoder", lambda b, y: train(b, y, n_epochs="2"), "n_epochs"),
    ("train_encoder", lambda b, y: train(b, y, learning_rate="0.1"), "learning_rate"),
    ("train_encoder", lambda b, y: train(b, y, momentum="0.5", optimizer="sgd"), "momentum"),
    ("ops.soft_bow", lambda b, y: ops.soft_bow(b.features, b.offsets, C0, P0, 1.0, n_threads="2"), "n_threads"),
    ("Bags.subsample", lambda b, y: b.subsample("5", 0), "n_per_bag"),
    ("LearnedBoW", lambda b, y: learned(verbose="x").fit(b, y), "verbose"),
    ("train_encoder", lambda b, y: train(b, y, verbose=None), "verbose"),
    ("LearnedBoW", lambda b, y: learned(gamma=10 ** 400).fit(b, y), "gamma"),
    ("LearnedBoW", lambda b, y: learned().fit(b, y, validation_data=5), "validation_data"),
    ("LearnedBoW", lambda b, y: learned().fit(b, y, validation_data=(b,)), "validation_data"),
    ("LearnedBoW", lambda b, y: learned().fit(None, y), "bags"),
    ("VLAD", lambda b, y: lfagg.VLAD(3, power_alpha="x").fit(b), "power_alpha"),
    ("VLAD", lambda b, y: lfagg.VLAD(3, power_alpha=True).fit(b), "power_alpha"),
    ("FisherVector", lambda b, y: lfagg.FisherVector(2, reg_covar=-1.0).fit(b), "reg_covar"),
    ("FisherVector", lambda b, y: lfagg.FisherVector(2, tol=float("nan")).fit(b), "tol"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords(4, max_iter=True).fit(b), "max_iter"),
    ("BagOfWords", lambda b, y: lfagg.BagOfWords(4, n_init="2").fit(b), "n_init"),
    ("BagClassifier", lambda b, y: lfagg.BagClassifier(None).fit(b, y), "encoder"),
    ("BagClassifier", lambda b, y: lfagg.BagClassifier(lfagg.BagOfWords).fit(b, y), "encoder"),
    ("train_encoder", lambda b, y: train_encoder(b, y, squared_loss, "bow", None, P0, 1.0), "centers"),
    ("train_encoder", lambda b, y: train_encoder(b, 5, squared_loss, "bow", C0, P0, 1.0), "targets"),
    ("train_encoder", lambda b, y: train_encoder(b, y, squared_loss, "bow", C0, -P0, 1.0), "precisions"),
    ("normalize.power_normalize", lambda b, y: lfagg.normalize.power_normalize(np.ones((2, 2)), "x"), "alpha"),
    ("normalize.intra_normalize", lambda b, y: lfagg.normalize.intra_normalize(np.ones((2, 4)), 2.0), "n_blocks"),
    ("make_circles_bags", lambda b, y: lfagg.datasets.make_circles_bags("x"), "n_bags"),
    ("extract_patches", lambda b, y: lfagg.datasets.extract_patches(np.ones((1, 8, 8)), 2.5), "patch_size"),
    ("balanced_subset", lambda b, y: lfagg.datasets.balanced_subset(np.arange(5), -1), "n"),
    ("ZCAWhitening", lambda b, y: lfagg.datasets.ZCAWhitening(eps=-1.0), "eps"),
]


@pytest.mark.parametrize("where, call, name", STRINGS, ids=[f"{w}-{n}" for w, _, n in STRINGS])
def test_strings_are_rejected_with_value_error(where, call, name, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match=name):  # a TypeError would not do
        call(bags, y)


@pytest.mark.parametrize("op", [ops.soft_bow, ops.soft_vlad])
def test_ops_reject_a_string_gamma(op, circles):
    (bags, _), _ = circles
    with pytest.raises(ValueError, match="gamma"):
        op(bags.features, bags.offsets, C0, P0, "1")


def test_learned_names_classifier_learning_rate_in_its_error(circles):
    (bags, y), _ = circles
    for value in (-1, 0, True, "0.1"):
        with pytest.raises(ValueError, match="classifier_learning_rate"):
            learned(classifier_learning_rate=value).fit(bags, y)


HUGE_THREADS = [
    ("LearnedBoW", lambda b, y: learned(n_threads=2 ** 40).fit(b, y)),
    ("LearnedVLAD", lambda b, y: lfagg.LearnedVLAD(3, n_threads=2 ** 40, **FAST).fit(b, y)),
    ("VLAD", lambda b, y: lfagg.VLAD(3, n_threads=2 ** 40).fit(b)),
    ("train_encoder", lambda b, y: train(b, y, n_threads=2 ** 40)),
    ("ops.soft_bow", lambda b, y: ops.soft_bow(b.features, b.offsets, C0, P0, 1.0, n_threads=2 ** 40)),
    ("ops.soft_vlad_backward", lambda b, y: ops.soft_vlad_backward(b.features, b.offsets, C0, P0, 1.0,
                                                                   np.zeros((len(b), 6)), n_threads=2 ** 40)),
    ("ops.bow", lambda b, y: ops.bow(b.features, b.offsets, C0, n_threads=2 ** 40)),
    ("ops.fisher_vector", lambda b, y: ops.fisher_vector(b.features, b.offsets, C0, P0, np.full(3, 1 / 3),
                                                         n_threads=2 ** 40)),
]


@pytest.mark.parametrize("where, call", HUGE_THREADS, ids=[w for w, _ in HUGE_THREADS])
def test_huge_n_threads_is_rejected(where, call, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="n_threads"):
        call(bags, y)


# ---------------------------------------------------------------------------------------
# learning_rate and momentum
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-1, 0, 0.0, np.nan, np.inf])
def test_learning_rate_must_be_positive_and_finite(value, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="learning_rate"):
        learned(learning_rate=value).fit(bags, y)
    with pytest.raises(ValueError, match="learning_rate"):
        train(bags, y, learning_rate=value)


@pytest.mark.parametrize("value", [-0.1, 1, 1.0, 1.5, np.nan, np.inf, None])
def test_momentum_outside_zero_one_is_rejected(value, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="momentum"):
        train(bags, y, optimizer="sgd", momentum=value)


@pytest.mark.parametrize("value", [0, 0.0, 0.5, np.float32(0.9), 0.999])
def test_momentum_in_zero_one_is_accepted(value, circles):
    (bags, y), _ = circles
    assert np.all(np.isfinite(train(bags, y, optimizer="sgd", momentum=value).centers))


# ---------------------------------------------------------------------------------------
# random_state
# ---------------------------------------------------------------------------------------
RANDOM_STATES = {
    "None": lambda: None,
    "int": lambda: 7,
    "numpy_int": lambda: np.int32(7),
    "Generator": lambda: np.random.default_rng(7),
    "RandomState": lambda: np.random.RandomState(7),
}
ESTIMATOR_FITS = {
    "LearnedBoW": lambda rs, b, y: learned(random_state=rs).fit(b, y).predict_proba(b),
    "LearnedVLAD": lambda rs, b, y: lfagg.LearnedVLAD(2, random_state=rs, **FAST).fit(b, y).predict_proba(b),
    "BagOfWords": lambda rs, b, y: lfagg.BagOfWords(4, random_state=rs).fit(b).transform(b),
    "VLAD": lambda rs, b, y: lfagg.VLAD(3, random_state=rs).fit(b).transform(b),
    "FisherVector": lambda rs, b, y: lfagg.FisherVector(2, random_state=rs).fit(b).transform(b),
    "BagClassifier": lambda rs, b, y: lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0),
                                                          random_state=rs).fit(b, y).predict_proba(b),
    "train_encoder": lambda rs, b, y: train(b, y, n_samples_per_bag=4, random_state=rs).centers,
    "Bags.subsample": lambda rs, b, y: b.subsample(5, rs).features,
}


@pytest.mark.parametrize("kind", list(RANDOM_STATES))
@pytest.mark.parametrize("where", list(ESTIMATOR_FITS))
def test_random_state_types_are_accepted(where, kind, circles):
    (bags, y), _ = circles
    first = ESTIMATOR_FITS[where](RANDOM_STATES[kind](), bags, y)
    assert np.all(np.isfinite(first))
    if kind != "None":  # a fresh generator of the same seed gives the same result
        np.testing.assert_array_equal(ESTIMATOR_FITS[where](RANDOM_STATES[kind](), bags, y), first)


@pytest.mark.parametrize("bad", ["seed", "0", 1.5, True, [0]])
@pytest.mark.parametrize("where", list(ESTIMATOR_FITS))
def test_bad_random_state_is_rejected(where, bad, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="random_state"):
        ESTIMATOR_FITS[where](bad, bags, y)


# ---------------------------------------------------------------------------------------
# Validation once per public call
# ---------------------------------------------------------------------------------------
class _CountingCore:
    """Stands in for the compiled core in lfagg._validation: counts the finiteness scans."""

    def __init__(self, real):
        self._real = real
        self.scans = []

    def all_finite(self, a, *args, **kwargs):
        self.scans.append(a.shape)
        return self._real.all_finite(a, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def scans(monkeypatch):
    counter = _CountingCore(lfagg._validation.core)
    monkeypatch.setattr(lfagg._validation, "core", counter)
    return counter


def test_the_counting_proxy_sees_the_scan(scans, circles):
    (bags, _), _ = circles
    lfagg._validation.check_bags(bags)
    assert scans.scans == [bags.features.shape]


def test_learned_fit_without_validation_data_scans_once(scans, circles):
    (bags, y), _ = circles
    learned(n_epochs=2).fit(bags, y)
    assert scans.scans == [bags.features.shape]


def test_learned_fit_with_validation_data_scans_twice(scans, circles):
    (bags, y), (val_bags, val_y) = circles
    model = learned(n_epochs=2).fit(bags, y, validation_data=(val_bags, val_y))
    assert len(model.history_["val_accuracy"]) == 2
    assert sorted(scans.scans) == sorted([bags.features.shape, val_bags.features.shape])


def test_learned_fit_with_validation_fraction_scans_once(scans, circles):
    """The held-out bags are cut from the validated training bags: no second scan."""
    (bags, y), _ = circles
    model = learned(n_epochs=2, validation_fraction=0.25).fit(bags, y)
    assert len(model.history_["val_accuracy"]) == 2
    assert scans.scans == [bags.features.shape]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "transform"])
def test_learned_inference_scans_once(method, scans, circles):
    (bags, y), (test_bags, _) = circles
    model = learned().fit(bags, y)
    scans.scans.clear()
    getattr(model, method)(test_bags)
    assert scans.scans == [test_bags.features.shape]


def test_learned_score_scans_once(scans, circles):
    (bags, y), (test_bags, test_y) = circles
    model = learned().fit(bags, y)
    scans.scans.clear()
    model.score(test_bags, test_y)
    assert scans.scans == [test_bags.features.shape]


def test_bag_classifier_fit_scans_once(scans, circles):
    """BagClassifier validates the bags, then fits its encoder on them: one scan in all."""
    (bags, y), _ = circles
    lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0), l2=0.01).fit(bags, y)
    assert scans.scans == [bags.features.shape]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "transform"])
def test_bag_classifier_inference_scans_once(method, scans, circles):
    (bags, y), (test_bags, _) = circles
    clf = lfagg.BagClassifier(lfagg.VLAD(3, random_state=0), l2=0.01).fit(bags, y)
    scans.scans.clear()
    getattr(clf, method)(test_bags)
    assert scans.scans == [test_bags.features.shape]


def test_train_encoder_scans_once(scans, circles):
    (bags, y), _ = circles
    train(bags, y, n_epochs=3, n_samples_per_bag=4)
    assert scans.scans == [bags.features.shape]


class _Recorder:
    """Wraps a core kernel, recording the check_features keyword of every call."""

    def __init__(self, kernel):
        self.kernel, self.check_features = kernel, []

    def __call__(self, *args, **kwargs):
        self.check_features.append(kwargs.get("check_features", "not given"))
        return self.kernel(*args, **kwargs)


@pytest.mark.parametrize("kept", [True, False])
def test_training_kernels_skip_their_feature_scan(kept, circles, monkeypatch):
    """Every forward and backward call of the training loop passes check_features=False
    (the bags were validated once by train_encoder), with and without kept assignments."""
    (bags, y), _ = circles
    if not kept:
        monkeypatch.setattr(lfagg.training.loop, "MAX_KEPT_ASSIGNMENTS_BYTES", 0)
    fwd, bwd = _Recorder(core.soft_bow), _Recorder(core.soft_bow_backward)
    encoder = SoftEncoder("soft_bow", True, lambda K, D: K, fwd, bwd)
    result = train_encoder(bags, y, squared_loss, encoder, C0, P0, 1.0, n_epochs=2, batch_size=8,
                           n_samples_per_bag=5, random_state=0)
    n_steps = 2 * -(-len(bags) // 8)
    assert len(fwd.check_features) == n_steps and len(bwd.check_features) == n_steps
    assert set(fwd.check_features) == {False} and set(bwd.check_features) == {False}
    # and the wrapped encoder is the T1 encoder: same result as train_encoder with "bow"
    reference = train_encoder(bags, y, squared_loss, "bow", C0, P0, 1.0, n_epochs=2, batch_size=8,
                              n_samples_per_bag=5, random_state=0)
    np.testing.assert_array_equal(result.centers, reference.centers)


def test_learned_estimator_kernels_skip_their_feature_scan(circles, monkeypatch):
    """A whole LearnedVLAD fit and predict: initial encoding, SGD, final encoding, inference."""
    (bags, y), (test_bags, _) = circles
    fwd, bwd = _Recorder(core.soft_vlad), _Recorder(core.soft_vlad_backward)
    monkeypatch.setattr(lfagg.LearnedVLAD, "_encoder",
                        SoftEncoder("soft_vlad", False, lambda K, D: K * D, fwd, bwd))
    model = lfagg.LearnedVLAD(3, random_state=0, **FAST).fit(bags, y)
    model.predict(test_bags)
    assert len(fwd.check_features) > 2 and len(bwd.check_features) > 0
    assert set(fwd.check_features) == {False} and set(bwd.check_features) == {False}


def test_baseline_kernels_skip_their_feature_scan(circles, monkeypatch):
    (bags, y), (test_bags, _) = circles
    recorders = {name: _Recorder(getattr(core, name)) for name in ("bow", "vlad", "fisher_vector")}

    class Core:
        def __getattr__(self, name):
            return recorders.get(name) or getattr(core, name)

    monkeypatch.setattr(lfagg.encoders.baselines, "core", Core())
    for encoder in (lfagg.BagOfWords(4, random_state=0), lfagg.VLAD(3, random_state=0),
                    lfagg.FisherVector(2, random_state=0)):
        lfagg.BagClassifier(encoder, l2=0.01).fit(bags, y).predict(test_bags)
    for name, recorder in recorders.items():
        assert recorder.check_features and set(recorder.check_features) == {False}, name


@pytest.mark.parametrize("op", ["soft_bow", "soft_vlad", "bow", "vlad", "fisher_vector"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_public_ops_still_reject_non_finite_features(op, value, circles):
    (bags, _), _ = circles
    f = bags.features.copy()
    f[5, 1] = value
    args = {"soft_bow": (C0, P0, 1.0), "soft_vlad": (C0, P0, 1.0), "bow": (C0,), "vlad": (C0,),
            "fisher_vector": (C0, P0, np.full(3, 1 / 3))}[op]
    with pytest.raises(ValueError, match="features"):
        getattr(ops, op)(f, bags.offsets, *args)
    for dtype in (np.float32,):
        with pytest.raises(ValueError, match="features"):
            getattr(ops, op)(f.astype(dtype), bags.offsets, *args)


# ---------------------------------------------------------------------------------------
# check_features=False is the same computation
# ---------------------------------------------------------------------------------------
def _kernel_cases(f, o, dtype):
    C = np.ascontiguousarray(C0 + 0.05, dtype=dtype)
    P = np.ascontiguousarray(P0 * 1.5, dtype=dtype)
    W = np.full(3, 1 / 3, dtype=dtype)
    rng = np.random.default_rng(0)
    g_bow = rng.normal(size=(len(o) - 1, 3)).astype(dtype)
    g_vlad = rng.normal(size=(len(o) - 1, 6)).astype(dtype)
    gamma = 1.3
    return {
        "soft_bow": (lambda **kw: core.soft_bow(f, o, C, P, gamma, 0, False, **kw),
                     lambda: ops.soft_bow(f, o, C, P, gamma)),
        "soft_bow_assignments": (lambda **kw: core.soft_bow(f, o, C, P, gamma, 0, True, **kw),
                                 lambda: ops.soft_bow(f, o, C, P, gamma, return_assignments=True)),
        "soft_vlad": (lambda **kw: core.soft_vlad(f, o, C, P, gamma, 0, False, **kw),
                      lambda: ops.soft_vlad(f, o, C, P, gamma)),
        "soft_bow_backward": (lambda **kw: core.soft_bow_backward(f, o, C, P, gamma, g_bow, None, 0, **kw),
                              lambda: ops.soft_bow_backward(f, o, C, P, gamma, g_bow)),
        "soft_vlad_backward": (lambda **kw: core.soft_vlad_backward(f, o, C, P, gamma, g_vlad, None, 0, **kw),
                               lambda: ops.soft_vlad_backward(f, o, C, P, gamma, g_vlad)),
        "bow": (lambda **kw: core.bow(f, o, C, 0, **kw), lambda: ops.bow(f, o, C)),
        "vlad": (lambda **kw: core.vlad(f, o, C, None, 0, **kw), lambda: ops.vlad(f, o, C)),
        "fisher_vector": (lambda **kw: core.fisher_vector(f, o, C, P, W, False, 0, **kw),
                          lambda: ops.fisher_vector(f, o, C, P, W)),
    }


KERNELS = ["soft_bow", "soft_bow_assignments", "soft_vlad", "soft_bow_backward", "soft_vlad_backward", "bow",
           "vlad", "fisher_vector"]


def _flat(out):
    return [np.asarray(x) for x in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", KERNELS)
def test_unchecked_kernels_equal_the_ops_bitwise(kernel, dtype, circles):
    (bags, _), _ = circles
    f = np.ascontiguousarray(bags.features, dtype=dtype)
    unchecked, public = _kernel_cases(f, bags.offsets, dtype)[kernel]
    got, expected = _flat(unchecked(check_features=False)), _flat(public())
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
        if e.dtype.kind == "f" and e.ndim:
            assert e.dtype == dtype


# ---------------------------------------------------------------------------------------
# Bags cut from validated Bags equal Bags built from scratch
# ---------------------------------------------------------------------------------------
SIZES = [5, 0, 3, 8, 1, 0, 6, 2, 4]


def _arrays(dtype):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(s, 3)).astype(dtype) for s in SIZES]


def _from_scratch(arrays):
    """lfagg.Bags built directly from the selected arrays (features and offsets)."""
    sizes = [len(a) for a in arrays]
    features = np.concatenate(arrays) if arrays else np.empty((0, 3))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return lfagg.Bags(features.astype(arrays[0].dtype if arrays else np.float64), offsets)


def _assert_same_bags(got, expected):
    assert isinstance(got, lfagg.Bags)
    assert got.dtype == expected.dtype and got.dim == expected.dim
    assert got.features.shape == expected.features.shape
    assert got.features.flags.c_contiguous
    assert got.offsets.dtype == np.int64
    np.testing.assert_array_equal(got.features, expected.features)
    np.testing.assert_array_equal(got.offsets, expected.offsets)
    # and it is a valid Bags: the constructor takes its arrays unchanged
    rebuilt = lfagg.Bags(got.features, got.offsets)
    np.testing.assert_array_equal(rebuilt.features, got.features)
    np.testing.assert_array_equal(rebuilt.offsets, got.offsets)


SELECTIONS = {
    "int_array": np.array([6, 0, 3, 3, 8, -2]),
    "list": [2, 4],
    "empty_bags_only": np.array([1, 5]),
    "none": np.array([], dtype=np.int64),
    "bool_mask": np.array([True, False, True, True, False, False, True, True, False]),
    "slice_2_5": slice(2, 5),
    "slice_open_start": slice(None, 4),
    "slice_negative": slice(-3, None),
    "slice_empty": slice(5, 2),
    "slice_beyond": slice(7, 20),
    "slice_step": slice(1, None, 3),
    "slice_reversed": slice(None, None, -1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_selections_equal_bags_built_from_scratch(selection, dtype):
    arrays = _arrays(dtype)
    bags = lfagg.Bags.from_arrays(arrays)
    index = SELECTIONS[selection]
    chosen = np.arange(len(arrays))[index]
    _assert_same_bags(bags[index], _from_scratch([arrays[i] for i in chosen]) if len(chosen) else
                      lfagg.Bags(np.empty((0, 3), dtype=dtype), [0]))


def test_slice_of_a_slice_equals_bags_built_from_scratch():
    arrays = _arrays(np.float64)
    bags = lfagg.Bags.from_arrays(arrays)
    _assert_same_bags(bags[2:8][1:4], _from_scratch(arrays[3:6]))
    _assert_same_bags(bags[2:8][[3, 0]], _from_scratch([arrays[5], arrays[2]]))
    _assert_same_bags(bags[[8, 6, 3, 0]][1:3], _from_scratch([arrays[6], arrays[3]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_per_bag", [1, 3, 100])
def test_subsample_equals_bags_built_from_scratch(n_per_bag, dtype):
    arrays = _arrays(dtype)
    bags = lfagg.Bags.from_arrays(arrays)
    sub = bags.subsample(n_per_bag, random_state=np.random.default_rng(4))
    kept = []
    for b, a in enumerate(arrays):
        rows = sub[b]
        # which rows of the original bag were kept (every row of these bags is distinct)
        idx = np.array([int(np.flatnonzero((a == r).all(axis=1))[0]) for r in rows], dtype=int)
        assert len(idx) == min(n_per_bag, len(a))
        assert np.all(np.diff(idx) > 0)
        kept.append(a[idx])
    _assert_same_bags(sub, _from_scratch(kept))
    # and the subsample of a slice is the slice of a subsample built from scratch
    part = bags[3:7].subsample(2, random_state=0)
    for b in range(len(part)):
        assert len(part[b]) == min(2, SIZES[3 + b])


def test_cut_bags_give_the_estimators_the_same_results(circles):
    """Cut (unscanned) Bags and Bags built from scratch encode and classify alike."""
    (bags, y), _ = circles
    model = learned().fit(bags, y)
    idx = np.array([5, 1, 9, 2])
    cut = bags[idx]
    scratch = _from_scratch([bags[i] for i in idx])
    np.testing.assert_array_equal(model.transform(cut), model.transform(scratch))
    np.testing.assert_array_equal(model.predict_proba(bags[3:9]), model.predict_proba(_from_scratch(list(bags)[3:9])))


# ---------------------------------------------------------------------------------------
# fit_transform checks once; a failed refit leaves the model unfitted
# ---------------------------------------------------------------------------------------
FIT_TRANSFORMS = {
    "BagOfWords": lambda: lfagg.BagOfWords(4, random_state=0),
    "FisherVector": lambda: lfagg.FisherVector(2, random_state=0),
    "LearnedBoW": lambda: learned(),
}


@pytest.mark.parametrize("name", list(FIT_TRANSFORMS))
def test_fit_transform_scans_once_and_equals_fit_then_transform(name, scans, circles):
    (bags, y), _ = circles
    args = (bags, y) if name.startswith("Learned") else (bags,)
    got = FIT_TRANSFORMS[name]().fit_transform(*args)
    assert scans.scans == [bags.features.shape]
    np.testing.assert_array_equal(got, FIT_TRANSFORMS[name]().fit(*args).transform(bags))


@pytest.mark.parametrize("make", [lambda: lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0), l2=0.01),
                                  lambda: learned()], ids=["BagClassifier", "LearnedBoW"])
def test_a_failed_refit_leaves_the_model_unfitted(make, circles):
    from sklearn.exceptions import NotFittedError

    (bags, y), (test_bags, _) = circles
    model = make().fit(bags, y)
    too_few = [np.ones((1, 2)), np.zeros((1, 2))]  # 2 local features for 3 or 4 codewords
    with pytest.raises(ValueError, match="too few local features"):
        model.fit(too_few, np.array(["a", "b"]))
    with pytest.raises(NotFittedError):
        model.predict(test_bags)


def test_learned_k_means_runs_on_n_threads(circles, monkeypatch):
    import lfagg.encoders.codebook as codebook

    limits = []
    real = codebook.limit_threads
    monkeypatch.setattr(codebook, "limit_threads", lambda n: limits.append(n) or real(n))
    (bags, y), _ = circles
    learned(n_threads=1).fit(bags, y)
    learned(n_threads=None).fit(bags, y)
    assert limits == [1, 0]


@pytest.mark.parametrize("verbose", [0, 1])
def test_on_epoch_end_may_add_any_value_to_the_record(verbose, circles, capsys):
    (bags, y), _ = circles

    def note(epoch, record, result):
        record["note"], record["scores"] = "x", [1, 2]

    result = train(bags, y, n_epochs=2, verbose=verbose, on_epoch_end=note)
    assert result.history["note"] == ["x", "x"] and result.history["scores"] == [[1, 2], [1, 2]]
    err = capsys.readouterr().err
    assert (err == "") == (verbose == 0)


# ---------------------------------------------------------------------------------------
# Wrong input that used to pass, or failed in foreign terms
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, None, 0.5])
def test_nan_none_or_continuous_labels_are_refused(bad, circles):
    (bags, y), _ = circles
    labels = y.astype(object if bad is None else float)
    labels[3] = bad
    for model in (learned(), lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0))):
        with pytest.raises(ValueError, match=r"y must hold class labels \(integers, whole reals"):
            model.fit(bags, labels)


def test_whole_real_labels_are_classes(circles):
    (bags, y), (test_bags, test_y) = circles
    model = lfagg.BagClassifier(lfagg.VLAD(3, random_state=0)).fit(bags, y.astype(float) - 1)
    np.testing.assert_array_equal(model.classes_, [-1.0, 0.0])
    assert model.score(test_bags, test_y.astype(float) - 1) > 0.5


def test_an_object_array_of_integer_labels_is_read_as_integers(circles):
    """As a pandas object column gives them: fit and predict kept the object dtype, which
    scikit-learn's metrics refuse ("unknown is not supported"), so score and
    cross_val_score failed or gave NaN."""
    from sklearn.model_selection import cross_val_score

    (bags, y), (test_bags, test_y) = circles
    as_objects = np.array(y.tolist(), dtype=object)
    for model in (learned(), lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0))):
        model.fit(bags, as_objects)
        assert model.classes_.dtype == np.int64 and model.predict(test_bags).dtype == np.int64
        assert model.score(test_bags, np.array(test_y.tolist(), dtype=object)) == model.score(test_bags, test_y)
        assert np.all(np.isfinite(cross_val_score(model, bags, as_objects, cv=2)))


def test_an_object_array_of_boolean_labels_is_read_as_booleans(circles):
    """It was refused with a message saying that booleans are accepted."""
    (bags, y), (test_bags, test_y) = circles
    model = lfagg.BagClassifier(lfagg.BagOfWords(4, random_state=0))
    model.fit(bags, np.array([bool(v == y[0]) for v in y], dtype=object))
    assert model.classes_.dtype == bool and model.predict(test_bags).dtype == bool
    expected = model.score(test_bags, test_y == y[0])
    assert model.score(test_bags, np.array((test_y == y[0]).tolist(), dtype=object)) == expected
    with pytest.raises(ValueError, match="of one kind"):
        model.fit(bags, np.array([True, *([1] * (len(y) - 1))], dtype=object))


def test_one_2d_array_given_as_bags_is_named(circles):
    """Its rows would each pass for a bag of one dimension: the message says how to give bags."""
    (bags, y), _ = circles
    model = lfagg.BagOfWords(4, random_state=0).fit(bags)
    with pytest.raises(ValueError, match=r"got one \(4, 2\) array: \[array\] for one bag"):
        model.transform(np.zeros((4, 2)))


@pytest.mark.parametrize("seed", [-1, np.int64(-5)])
def test_a_negative_random_state_is_named(seed, circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match="random_state must be None, a non-negative integer"):
        learned(random_state=seed).fit(bags, y)


@pytest.mark.parametrize("value", ["no", 1, None, np.array([True, False])])
@pytest.mark.parametrize("make", [
    lambda v: lfagg.LearnedBoW(3, learn_gamma=v, **FAST), lambda v: lfagg.LearnedVLAD(3, learn_covariances=v, **FAST),
    lambda v: lfagg.LearnedBoW(3, early_stopping=v, **FAST), lambda v: lfagg.VLAD(3, intra_normalize=v),
    lambda v: lfagg.VLAD(3, l2_normalize=v), lambda v: lfagg.FisherVector(3, improved=v),
    lambda v: lfagg.FisherVector(3, with_weights=v)])
def test_boolean_parameters_take_only_booleans(make, value, circles):
    # "no" is true: taken as a flag it would silently do the opposite
    (bags, y), _ = circles
    with pytest.raises(ValueError, match=r"must be True or False, got"):
        make(value).fit(bags, y)


@pytest.mark.parametrize("flag", ["return_assignments", "return_grad_features"])
def test_ops_flags_take_only_booleans(flag):
    f, off = np.ones((4, 2)), np.array([0, 4])
    C, P = np.ones((2, 2)), np.ones((2, 2))
    call = {"return_assignments": lambda: lfagg.ops.soft_bow(f, off, C, P, 1.0, return_assignments="no"),
            "return_grad_features": lambda: lfagg.ops.soft_bow_backward(f, off, C, P, 1.0, np.ones((1, 2)),
                                                                        return_grad_features="no")}[flag]
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        call()


@pytest.mark.parametrize("make", [lambda: learned(), lambda: lfagg.LearnedVLAD(2, **FAST),
                                  lambda: lfagg.BagClassifier(lfagg.BagOfWords(2)), lambda: lfagg.FisherVector(2)])
def test_features_of_dimension_zero_are_refused_in_lfaggs_terms(make):
    with pytest.raises(ValueError, match="local features of dimension 0"):
        make().fit([np.ones((3, 0))] * 6, np.arange(6) % 2)


@pytest.mark.parametrize("array", [np.ones((3, 2), dtype=complex), np.array([["1", "2"]]),
                                   np.ones((2, 2), dtype=object)])
def test_non_real_features_are_refused(array):
    with pytest.raises(ValueError, match=r"arrays\[1\] must hold real numbers"):
        lfagg.Bags.from_arrays([np.ones((2, 2)), array])


def test_a_huge_learning_rate_says_training_diverged(circles):
    (bags, y), _ = circles
    with pytest.raises(ValueError, match=r"training diverged .* lower learning_rate \(1e\+06\)"):
        learned(learning_rate=1e6, n_epochs=3).fit(bags, y)
    with pytest.raises(FloatingPointError, match="diverged"):  # still an arithmetic error, for the CLI
        learned(learning_rate=1e6, n_epochs=3).fit(bags, y)


@pytest.mark.parametrize("rates, named", [
    (dict(optimizer="sgd", classifier_learning_rate=1.0), r"lower learning_rate \(0.001\) or the classifier's learning "
                                                          r"rate \(1\)"),  # a finite loss of 1e26, then 1e57, ...
    (dict(classifier_learning_rate=1e300, batch_size=1000, n_epochs=1), r"classifier's loss inf after the last step"),
    (dict(learning_rate=1e6, batch_size=1000), r"the parameters overflowed.*lower learning_rate \(1e\+06\)")])
@pytest.mark.filterwarnings("error")  # and no NumPy overflow warnings on the way
def test_a_training_that_explodes_diverges_and_leaves_no_model(circles, rates, named):
    # the loss was checked for NaN only, and the parameters before a step, not after the last one
    (bags, y), _ = circles
    model = lfagg.LearnedBoW(4, **{"n_epochs": 3, "random_state": 0, **rates})
    with pytest.raises(lfagg.training.TrainingDiverged, match=named):
        model.fit(bags, y)
    assert not hasattr(model, "classifier_")  # not a half-trained model that predicts one class


def test_small_batches_without_a_penalty_are_not_taken_for_divergence():
    # one or two bags misclassified by the wide margins of an l2 = 0 fit put a mini-batch's
    # loss in the thousands (2,161 here), which a threshold of 1e3 log n_classes refused
    rng, means = np.random.default_rng(0), np.random.default_rng(99).normal(size=(2, 8)) * 1.5
    y = rng.integers(0, 2, 200)
    bags = lfagg.Bags.from_arrays([rng.normal(size=(rng.integers(5, 30), 8)) + means[c] * (rng.random() < 0.7)
                                   for c in y])
    model = lfagg.LearnedVLAD(8, n_epochs=3, optimizer="sgd", learning_rate=1e-2, l2=0.0, batch_size=8,
                              random_state=0).fit(bags, y)
    assert max(model.history_["loss"]) > 100 and model.score(bags, y) > 0.8


def test_validation_data_is_named_in_its_errors(circles):
    (bags, y), (test_bags, test_y) = circles
    nan = lfagg.Bags(test_bags.features.copy(), test_bags.offsets)
    nan.features[0, 0] = np.nan
    for val, message in [((nan, test_y), r"validation_data's bags: bags contain NaN or infinity \(bag 0\)"),
                         ((lfagg.Bags(test_bags.features[:, :1].copy(), test_bags.offsets), test_y),
                          "validation_data's bags: .* dimension 1, but the training bags have dimension 2")]:
        with pytest.raises(ValueError, match=message):
            learned().fit(bags, y, validation_data=val)


@pytest.mark.parametrize("estimator", [lfagg.LearnedBoW, lfagg.LearnedVLAD])
@pytest.mark.parametrize("dtype, learning_rate, learn_gamma", [
    (np.float32, 30.0, False), (np.float32, 100.0, False), (np.float32, 300.0, True)])
def test_a_learning_rate_that_overflows_the_features_dtype_says_training_diverged(estimator, dtype, learning_rate,
                                                                                 learn_gamma):
    # the float64 parameters overflow float32, where the kernels use them, long before
    # they overflow themselves
    rng = np.random.default_rng(0)
    bags = [(rng.standard_normal((5, 3)) + i % 2).astype(dtype) for i in range(20)]
    model = estimator(2, n_epochs=3, learning_rate=learning_rate, learn_gamma=learn_gamma, random_state=0)
    with pytest.raises(FloatingPointError, match=rf"training diverged .*lower learning_rate \({learning_rate:g}\)"):
        model.fit(bags, np.arange(20) % 2)


def test_auto_gamma_beyond_the_dtype_names_the_features_scale(circles):
    (bags, y), _ = circles
    tiny = lfagg.Bags(bags.features * 1e-160, bags.offsets)
    with pytest.raises(ValueError, match=r"spread too little for float64 distances .* rescale them"):
        learned().fit(tiny, y)  # K-Means refuses them first
    with pytest.raises(ValueError, match=r"gamma='auto' .* rescale the features"):
        learned(init="random").fit(tiny, y)
    with pytest.raises(ValueError, match=r"gamma = 1e-300 is 0.0 in float32"):
        learned(gamma=1e-300).fit(lfagg.Bags(bags.features.astype(np.float32), bags.offsets), y)


def test_an_unknown_lfagg_isa_warns_and_uses_the_best_one():
    import os
    import subprocess
    import sys

    env = dict(os.environ, LFAGG_ISA="no-such-isa", PYTHONPATH=os.path.dirname(os.path.dirname(lfagg.__file__)))
    done = subprocess.run([sys.executable, "-c", "import lfagg; print(lfagg.ops.isa)"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == lfagg._native.available()[0]
    assert "LFAGG_ISA='no-such-isa' is not available here" in done.stderr and "Traceback" not in done.stderr
