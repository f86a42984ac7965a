"""LearnedBoWCV / LearnedVLADCV: every score of the search is that of a plain LearnedBoW /
LearnedVLAD fitted on the fold's training bags alone (so the held-out bags never reach a
codebook, a W0 or a step of training), the best of them is refitted with several seeds
and averaged, the search is
reproducible, and bad searches fail with clear errors."""

import copy

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

import lfagg
from lfagg._validation import spawn_seeds
from lfagg.datasets import make_circles_bags

SMALL = dict(n_codewords=(2, 3), gamma_scale=(0.5, 2.0), learning_rate=(1e-2,), max_epochs=2, cv=3, n_threads=1)


@pytest.fixture(scope="module")
def data():
    return make_circles_bags(36, 12, random_state=3)


@pytest.fixture(scope="module")
def search(data):
    return lfagg.LearnedBoWCV(**SMALL, random_state=7).fit(*data)


def test_every_score_is_a_plain_fit_on_the_training_part_of_its_fold(data, search):
    bags, y = data
    split_seed, model_seed = spawn_seeds(7, 2)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=split_seed).split(y, y))
    results = search.cv_results_
    assert len(results["params"]) == 2 * 2 * 3  # n_codewords x gamma_scale x the checkpoints 0, 1, 2
    for i in (0, 4, 7, 11):  # initial states and trained ones, of both codebook sizes
        params = results["params"][i]
        accuracies = []
        for f, (train, val) in enumerate(folds):
            model = lfagg.LearnedBoW(**params, n_threads=1, random_state=model_seed)
            model.fit(bags.subset(train), y[train])  # the held-out bags are not given to it
            held_out = -log_loss(y[val], model.predict_proba(bags.subset(val)), labels=[0, 1])
            assert results[f"split{f}_test_score"][i] == pytest.approx(held_out, rel=1e-9)
            accuracies.append(model.score(bags.subset(val), y[val]))
        assert results["mean_test_accuracy"][i] == pytest.approx(np.mean(accuracies), abs=1e-12)
        assert results["mean_test_log_loss"][i] == pytest.approx(-results["mean_test_score"][i], abs=1e-12)


def test_a_search_by_accuracy_scores_accuracy(data, search):
    bags, y = data
    by_accuracy = lfagg.LearnedBoWCV(**SMALL, scoring="accuracy", random_state=7).fit(bags, y)
    results = by_accuracy.cv_results_
    np.testing.assert_array_equal(results["mean_test_score"], results["mean_test_accuracy"])
    np.testing.assert_array_equal(results["mean_test_accuracy"], search.cv_results_["mean_test_accuracy"])
    best = by_accuracy.best_index_
    tied = results["mean_test_score"] == results["mean_test_score"].max()
    assert tied[best] and results["mean_test_log_loss"][best] == results["mean_test_log_loss"][tied].min()
    rank = results["rank_test_score"]  # as GridSearchCV's: 1 for the best, scores never rising with the rank
    assert rank[best] == 1 and sorted(rank) == list(range(1, len(rank) + 1))
    assert np.all(np.diff(results["mean_test_score"][np.argsort(rank)]) <= 0)


def test_the_best_candidate_is_refitted_with_every_seed_and_averaged(data, search):
    bags, y = data
    results = search.cv_results_
    best = search.best_index_
    assert search.best_score_ == results["mean_test_score"].max() == results["mean_test_score"][best]
    assert search.best_params_ == results["params"][best]
    _, model_seed, ensemble_seed = spawn_seeds(7, 3)
    seeds = [model_seed, *spawn_seeds(ensemble_seed, 4)]
    refits = [lfagg.LearnedBoW(**search.best_params_, n_threads=1, random_state=s).fit(bags, y) for s in seeds]
    assert len(search.estimators_) == 5 and search.best_estimator_ is search.estimators_[0]
    probabilities = [refit.predict_proba(bags) for refit in refits]
    assert not np.array_equal(probabilities[0], probabilities[1])  # the seeds give different refits
    mean = np.mean(probabilities, axis=0)
    np.testing.assert_allclose(search.predict_proba(bags), mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(search.predict(bags), mean.argmax(axis=1))
    np.testing.assert_allclose(search.decision_function(bags), np.log(mean[:, 1] / mean[:, 0]), rtol=1e-9)
    np.testing.assert_array_equal(search.transform(bags), refits[0].transform(bags))
    np.testing.assert_array_equal(search.classes_, [0, 1])


def test_decision_function_stays_finite_where_probabilities_round_to_zero(data, search):
    # logits scaled up: every refit's probability of one class is exactly 0 in float64
    bags, _ = data
    sharp = copy.deepcopy(search)
    for refit in sharp.estimators_:
        refit.classifier_.W, refit.classifier_.b = refit.classifier_.W * 1e4, refit.classifier_.b * 1e4
    assert (sharp.predict_proba(bags) == 0).any()
    scores = sharp.decision_function(bags)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores > 0, sharp.predict(bags) == sharp.classes_[1])


def test_one_estimator_is_the_single_refit(data):
    bags, y = data
    search = lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": 2}, n_estimators=1, random_state=7).fit(bags, y)
    refit = lfagg.LearnedBoW(**search.best_params_, n_threads=1, random_state=spawn_seeds(7, 2)[1]).fit(bags, y)
    np.testing.assert_allclose(search.predict_proba(bags), refit.predict_proba(bags), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(search.decision_function(bags), refit.decision_function(bags), rtol=1e-9, atol=1e-9)
    assert search.score(bags, y) == refit.score(bags, y)


def test_search_is_reproducible_and_independent_of_n_jobs(data, search):
    again = lfagg.LearnedBoWCV(**SMALL, random_state=7, n_jobs=2).fit(*data)
    assert again.best_params_ == search.best_params_
    np.testing.assert_array_equal(again.cv_results_["mean_test_log_loss"], search.cv_results_["mean_test_log_loss"])
    np.testing.assert_array_equal(again.predict_proba(data[0]), search.predict_proba(data[0]))


def test_a_search_over_both_poolings_scores_each_as_a_plain_fit_and_refits_the_chosen(data, tmp_path):
    bags, y = data
    search = lfagg.LearnedVLADCV(n_codewords=2, gamma_scale=1.0, learning_rate=1e-2, max_epochs=1, cv=3,
                                 pooling=("mean", "max"), n_estimators=1, n_threads=1, random_state=5).fit(bags, y)
    results = search.cv_results_
    assert [(p["pooling"], p["n_epochs"]) for p in results["params"]] == [("mean", 0), ("mean", 1), ("max", 0),
                                                                          ("max", 1)]
    split_seed, model_seed = spawn_seeds(5, 2)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=split_seed).split(y, y))
    for i in (2, 3):  # the max-pooled candidates, whose codebooks the search shared with the mean's
        for f, (train, val) in enumerate(folds):
            model = lfagg.LearnedVLAD(**results["params"][i], n_threads=1, random_state=model_seed)
            model.fit(bags.subset(train), y[train])
            held_out = -log_loss(y[val], model.predict_proba(bags.subset(val)), labels=[0, 1])
            assert results[f"split{f}_test_score"][i] == pytest.approx(held_out, rel=1e-9)
    assert search.best_params_ == results["params"][int(np.argmax(results["mean_test_score"]))]
    assert search.best_estimator_.pooling == search.best_params_["pooling"]
    lfagg.save(search, tmp_path / "poolings.lfagg")
    loaded = lfagg.load(tmp_path / "poolings.lfagg")
    assert loaded.pooling == ("mean", "max")
    np.testing.assert_array_equal(loaded.predict_proba(bags), search.predict_proba(bags))


def test_vlad_search_and_model_file(data, tmp_path):
    bags, y = data
    model = lfagg.LearnedVLADCV(n_codewords=2, gamma_scale=1.0, learning_rate=1e-2, max_epochs=1, cv=2,
                                n_threads=1, random_state=0).fit(bags, y)
    assert [p["n_epochs"] for p in model.cv_results_["params"]] == [0, 1]
    assert {p["pooling"] for p in model.cv_results_["params"]} == {"mean"}
    lfagg.save(model, tmp_path / "m.lfagg")
    loaded = lfagg.load(tmp_path / "m.lfagg")
    np.testing.assert_array_equal(loaded.predict_proba(bags), model.predict_proba(bags))


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.estimators_.__setitem__(1, lfagg.LearnedVLAD()), "must be LearnedBoWs, got LearnedVLAD"),
    (lambda m: setattr(m, "estimators_", []), "non-empty list"),
    (lambda m: setattr(m.estimators_[1], "classes_", np.array([0, 2])), "classes_"),
    (lambda m: setattr(m.estimators_[1], "centers_", None), "centers_"),
])
def test_a_model_file_with_inconsistent_refits_is_refused(data, damage, message, tmp_path):
    from test_persistence import model_file, skops_io

    model = lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": 2}, n_estimators=2, random_state=0).fit(*data)
    damage(model)
    path = model_file(tmp_path / "broken.lfagg", meta={"format": "lfagg-model", "version": 1,
                                                       "lfagg": lfagg.__version__, "class": "LearnedBoWCV"},
                      payload=skops_io.dumps(model))
    with pytest.raises(ValueError, match=r"fitted state is inconsistent \(.*" + message):
        lfagg.load(path)
    with pytest.raises(ValueError, match=r"cannot be saved: load would refuse its fitted state \(.*" + message):
        lfagg.save(model, tmp_path / "again.lfagg")


def test_codebooks_larger_than_a_fold_are_skipped_with_a_warning(data):
    bags, y = data  # 36 bags of at most 12 features: a training fold holds far fewer than 10,000
    with pytest.warns(UserWarning, match=r"n_codewords \[10000\] skipped"):
        model = lfagg.LearnedBoWCV(n_codewords=(2, 10_000), gamma_scale=1.0, learning_rate=1e-2, max_epochs=0,
                                   cv=2, n_threads=1, random_state=0, max_init_features=10_000).fit(bags, y)
    assert {p["n_codewords"] for p in model.cv_results_["params"]} == {2}


def test_grids_given_as_ranges_and_0_d_arrays(data):
    """A 0-d array (as numpy reductions give values) failed in NumPy's words ("iteration over
    a 0-d array", "unhashable"); a range was called not a positive integer."""
    bags, y = data
    params = dict(SMALL, max_epochs=0, cv=2)
    expected = lfagg.LearnedBoWCV(**{**params, "n_codewords": [2, 3], "learning_rate": 0.01, "pooling": "max"},
                                  random_state=0).fit(bags, y)
    model = lfagg.LearnedBoWCV(**{**params, "n_codewords": range(2, 4), "learning_rate": np.array(0.01),
                                  "pooling": np.array("max")}, random_state=0).fit(bags, y)
    assert model.cv_results_["params"] == expected.cv_results_["params"]


@pytest.mark.parametrize("params, labels, message", [
    (dict(n_codewords=()), None, "n_codewords must hold at least one value"),
    (dict(gamma_scale=[]), None, "gamma_scale must hold at least one value"),
    (dict(pooling=()), None, "pooling must hold at least one value"),
    (dict(pooling=("mean", "sum")), None, "pooling must be one of"),
    (dict(learning_rate=(1e-2, -1.0)), None, "learning_rate must be a positive"),
    (dict(n_codewords=(2, 0)), None, "n_codewords must be a positive integer"),
    (dict(max_epochs=-1), None, "max_epochs must be a non-negative integer"),
    (dict(cv=1), None, "cv must be an integer >= 2"),
    (dict(scoring="roc_auc"), None, "scoring must be one of"),
    (dict(n_estimators=0), None, "n_estimators must be a positive integer"),
    (dict(), "one class", "at least two classes"),
    (dict(cv=20), None, "too few bags to search on 20 folds"),
    (dict(cv=20), "strings", r"20 folds: class '(cat|dog)' has"),  # the label as written, not np.str_(...)
    (dict(n_codewords=(5_000,), max_init_features=5_000), None, "all larger than"),
    (dict(n_jobs=0), None, "n_jobs must be None, a number of processes"),
    (dict(n_jobs=2 ** 40), None, "n_jobs must be None"),
    (dict(n_jobs=True), None, "n_jobs must be None"),
    (dict(n_jobs="8"), None, "n_jobs must be None"),
    (dict(n_codewords={2, 3}), None, "n_codewords must be a value or a list of values to search, got a set"),
])
def test_bad_searches_fail_clearly(data, params, labels, message):
    bags, y = data
    if labels == "one class":
        y = np.zeros_like(y)
    elif labels == "strings":
        y = np.array(["cat", "dog"], dtype=object)[y]  # as pandas gives them
    with pytest.raises(ValueError, match=message):
        lfagg.LearnedBoWCV(**{**SMALL, **params}, random_state=0).fit(bags, y)


def test_a_fixed_gamma_searches_without_the_default_scales(data):
    """The default gamma_scale grid multiplies gamma="auto": with a fixed gamma it is dropped
    (the search once failed on it, blaming a gamma_scale the user never set); explicit
    scales other than 1 are an error that says what to give."""
    bags, y = data
    small = {**SMALL, "n_codewords": (2,), "n_estimators": 1}
    del small["gamma_scale"]
    search = lfagg.LearnedBoWCV(**small, gamma=0.5, random_state=0).fit(bags, y)
    assert {p["gamma_scale"] for p in search.cv_results_["params"]} == {1.0}
    assert search.best_estimator_.gamma_ == 0.5
    with pytest.raises(ValueError, match="gamma_scale searches multiples of gamma='auto'"):
        lfagg.LearnedBoWCV(**small, gamma=0.5, gamma_scale=(1.0, 2.0)).fit(bags, y)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_diverging_candidate_loses_and_the_search_goes_on(data, n_jobs):
    # the warning reaches the caller also when the folds were searched in worker processes
    bags, y = data
    rates = (1e-2, 1e6)
    with pytest.warns(UserWarning, match=r"learning_rate=1e\+06 scored as the worst candidate .* diverged"):
        search = lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": (2,), "gamma_scale": (1.0,), "learning_rate": rates},
                                    n_estimators=1, n_jobs=n_jobs, random_state=0).fit(bags, y)
    results = search.cv_results_
    diverged = [i for i, p in enumerate(results["params"]) if p["learning_rate"] == 1e6 and p["n_epochs"] > 0]
    assert diverged and np.all(results["mean_test_log_loss"][diverged] == np.inf)
    assert np.all(results["mean_test_accuracy"][diverged] == 0)
    assert search.best_params_["learning_rate"] == 1e-2 or search.best_params_["n_epochs"] == 0
    assert search.score(bags, y) > 0.5


def test_a_search_whose_refit_fails_is_left_unfitted(data, monkeypatch):
    bags, y = data  # it kept cv_results_ and best_params_, without best_estimator_ (AttributeError at predict)

    def fail(*args):
        raise RuntimeError("the refit failed")

    monkeypatch.setattr(lfagg.models.selection, "_refit", fail)
    search = lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": (2,), "gamma_scale": (1.0,)}, n_estimators=1, random_state=0)
    with pytest.raises(RuntimeError, match="the refit failed"):
        search.fit(bags, y)
    assert not [name for name in vars(search) if name.endswith("_") and not name.startswith("_")]
    with pytest.raises(NotFittedError):
        search.predict(bags)


def test_candidates_that_tie_at_epoch_zero_report_the_smallest_rate(data):
    bags, y = data  # at epoch 0 every rate is the same model: best_params_ named the first rate of the grid
    search = lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": (2,), "gamma_scale": (1.0,), "learning_rate": (1e6, 1e-2),
                                   "max_epochs": 0}, n_estimators=1, random_state=0).fit(bags, y)
    assert search.best_params_["n_epochs"] == 0 and search.best_params_["learning_rate"] == 1e-2


def test_a_candidate_diverging_on_an_epochs_last_step_loses_too(data):
    # one step per epoch: its overflow was found only by the next kernel, a plain ValueError that aborted the search
    bags, y = data
    with pytest.warns(UserWarning, match=r"learning_rate=1e\+06 scored as the worst candidate .* diverged"):
        lfagg.LearnedBoWCV(**{**SMALL, "n_codewords": (2,), "gamma_scale": (1.0,), "learning_rate": (1e-2, 1e6)},
                           batch_size=1000, n_estimators=1, random_state=0).fit(bags, y)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function", "transform", "score"])
def test_an_unfitted_search_says_so(data, method):
    from sklearn.exceptions import NotFittedError

    bags, y = data
    model = lfagg.LearnedBoWCV(**SMALL)
    with pytest.raises(NotFittedError):
        getattr(model, method)(*((bags, y) if method == "score" else (bags,)))


@pytest.mark.parametrize("cls, sizes", [(lfagg.LearnedBoWCV, (2, 4, 16, 64)), (lfagg.LearnedVLADCV, (1, 2, 4, 16, 64))])
def test_the_default_codebook_sizes_are_the_classes_own(data, cls, sizes):
    # T1 leaves out one codeword (a soft BoW of one codeword is the same for every bag)
    search = cls(gamma_scale=1.0, learning_rate=1e-2, max_epochs=0, cv=2, n_estimators=1, n_threads=1,
                 random_state=0).fit(*data)
    assert search.get_params()["n_codewords"] == "auto"
    assert tuple(p["n_codewords"] for p in search.cv_results_["params"]) == sizes


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_a_search_runs_on_any_joblib_backend_and_its_warnings_reach_the_caller(data, backend):
    """joblib's multiprocessing backend made every search fail ("does not support
    return_as=generator"), even with n_jobs=1; warnings raised in the worker processes of
    n_jobs=2 went to their stderr, out of reach of the caller's filters."""
    from joblib import parallel_config

    bags, y = data
    few = np.r_[np.flatnonzero(y == y[0])[:2], np.flatnonzero(y != y[0])[:2]]  # 2 training bags per fold
    expected = lfagg.LearnedBoWCV(**{**SMALL, "cv": 2}, random_state=0).fit(bags[few], y[few]).predict_proba(bags)
    with parallel_config(backend=backend):
        for n_jobs in (1, 2):
            with pytest.warns(UserWarning, match="too few to choose l2"):
                model = lfagg.LearnedBoWCV(**{**SMALL, "cv": 2}, n_jobs=n_jobs, random_state=0).fit(bags[few], y[few])
            np.testing.assert_array_equal(model.predict_proba(bags), expected)
