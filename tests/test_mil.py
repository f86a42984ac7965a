"""lfagg.mil, the multiple-instance benchmark protocol: standardisation from the training
bags only, every (repeat, fold) accuracy that of the method fitted on its training part,
the summary computed from them, and its runs on the real MIL bag files."""

import os

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

import lfagg
from conftest import SHARED_DATA
from lfagg.datasets import load_npz_bags, make_circles_bags
from lfagg.mil import format_mil_table, make_method, mil_benchmark, standardize

MIL_DIR = SHARED_DATA / "mil"


def test_standardize_uses_the_training_bags_statistics_only():
    rng = np.random.default_rng(0)
    train = lfagg.Bags(rng.normal(3.0, 2.0, size=(40, 3)), [0, 10, 25, 40])
    test = lfagg.Bags(rng.normal(-5.0, 9.0, size=(7, 3)), [0, 3, 7])
    train_z, test_z = standardize(train, test)
    features = train.features.astype(np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    np.testing.assert_allclose(train_z.features, (features - mean) / std)
    np.testing.assert_allclose(test_z.features, (test.features - mean) / std)
    np.testing.assert_array_equal(test_z.offsets, test.offsets)


def test_every_fold_is_the_method_fitted_on_its_training_part():
    bags, y = make_circles_bags(40, 10, random_state=2)
    results = mil_benchmark(bags, y, methods=["BoW"], n_splits=2, n_repeats=2, random_state=5)["BoW"]
    accuracy = np.array(results["accuracy"])
    assert accuracy.shape == (2, 2)
    for r in range(2):
        for f, (train, test) in enumerate(StratifiedKFold(2, shuffle=True, random_state=5 + r).split(y, y)):
            train_bags, test_bags = standardize(bags.subset(train), bags.subset(test))
            model = make_method("BoW", 5 + r).fit(train_bags, y[train])
            assert accuracy[r, f] == np.mean(model.predict(test_bags) == y[test])
            assert results["params"][2 * r + f] == model.best_params_
    repeat_means = accuracy.mean(axis=1)
    assert results["mean"] == pytest.approx(accuracy.mean())
    assert results["se"] == pytest.approx(np.std(repeat_means, ddof=1) / np.sqrt(2))
    assert "| data set | BoW |" in format_mil_table({"circles": {"BoW": results}})


def test_t1_plus_t2_is_the_mean_of_their_probabilities_on_each_test_fold(monkeypatch):
    def small_method(name, random_state, n_threads=1):  # the defaults' grids, cut down for speed
        cls = lfagg.LearnedBoWCV if name == "T1" else lfagg.LearnedVLADCV
        return cls(n_codewords=(2,), gamma_scale=(1.0,), learning_rate=(1e-2,), max_epochs=1, cv=2, n_estimators=2,
                   random_state=random_state, n_threads=n_threads)

    monkeypatch.setattr(lfagg.mil, "make_method", small_method)
    bags, y = make_circles_bags(24, 8, random_state=3)
    results = mil_benchmark(bags, y, methods=["T1", "T2"], n_splits=2, n_repeats=1, random_state=1)
    assert list(results) == ["T1", "T2", "T1+T2"]
    for f, (train, test) in enumerate(StratifiedKFold(2, shuffle=True, random_state=1).split(y, y)):
        train_bags, test_bags = standardize(bags.subset(train), bags.subset(test))
        models = [small_method(m, 1).fit(train_bags, y[train]) for m in ("T1", "T2")]
        probas = [model.predict_proba(test_bags) for model in models]
        for m, model in zip(("T1", "T2"), models):
            assert results[m]["accuracy"][0][f] == np.mean(model.predict(test_bags) == y[test])
        averaged = models[0].classes_[np.argmax((probas[0] + probas[1]) / 2, axis=1)]
        assert results["T1+T2"]["accuracy"][0][f] == np.mean(averaged == y[test])
        assert results["T1+T2"]["params"][f] == [model.best_params_ for model in models]
    assert "T1+T2" not in mil_benchmark(bags, y, methods=["T1"], n_splits=2, n_repeats=1, random_state=1)


def test_unknown_method_and_bad_folds_fail_clearly():
    bags, y = make_circles_bags(20, 5, random_state=0)
    with pytest.raises(ValueError, match="method must be one of"):
        mil_benchmark(bags, y, methods=["T3"])
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2"):
        mil_benchmark(bags, y, n_splits=1)
    for seed in (None, np.random.default_rng(0), -1):  # repeat r seeds with random_state + r
        with pytest.raises(ValueError, match="random_state must be"):
            mil_benchmark(bags, y, methods=["BoW"], random_state=seed)
    with pytest.raises(ValueError, match=r"random_state \+ n_repeats - 1 must be below 2\*\*32"):  # numpy's words
        mil_benchmark(bags, y, methods=["BoW"], random_state=2 ** 32 - 2, n_repeats=3)
    with pytest.raises(ValueError, match="methods must name at least one"):
        mil_benchmark(bags, y, methods=[])
    with pytest.raises(ValueError, match="no results to tabulate"):
        format_mil_table({})
    for bad in ([{"BoW": {"mean": 0.5, "se": 0.1}}], {"musk1": {"BoW": {"mean": 0.5}}}):  # AttributeError, KeyError
        with pytest.raises(ValueError, match="results_by_dataset must be a dict"):
            format_mil_table(bad)
    with pytest.raises(ValueError, match="n_threads"):  # before any fit: it failed in every one of them
        mil_benchmark(bags, y, methods=["BoW"], n_threads=0)
    small, y_small = make_circles_bags(16, 5, random_state=0)  # 4 training bags per class in 2 folds
    for method in ("BoW", "FV", "T1"):  # the baselines named GridSearchCV's n_splits=5 as the outer split's
        with pytest.raises(ValueError, match="a training fold of the 2-fold split holds 4 bag.s. of class 0, and "
                                             "every method searches its hyper-parameters on 5 stratified folds"):
            mil_benchmark(small, y_small, methods=[method], n_splits=2, n_repeats=1)


def test_one_method_name_or_a_repeated_one_runs_once():
    """A name, not its letters ('B' was refused); a method named twice once (every fit ran
    twice, and its params held two per fold)."""
    bags, y = make_circles_bags(40, 10, random_state=2)
    single = mil_benchmark(bags, y, methods="BoW", n_splits=2, n_repeats=1)
    twice = mil_benchmark(bags, y, methods=["BoW", "BoW"], n_splits=2, n_repeats=1)
    assert list(single) == list(twice) == ["BoW"] and len(twice["BoW"]["params"]) == 2
    assert single["BoW"]["accuracy"] == twice["BoW"]["accuracy"]


@pytest.mark.filterwarnings("error")  # scikit-learn's FitFailedWarning, with a traceback per failed fit
def test_baselines_search_only_the_codebooks_their_folds_can_fit():
    bags, y = make_circles_bags(30, 2, random_state=3)  # 60 features: about 24 in an inner training fold
    results = mil_benchmark(bags, y, methods=["BoW", "VLAD"], n_splits=2, n_repeats=1)
    assert all(p["encoder__n_codewords"] <= 16 for m in ("BoW", "VLAD") for p in results[m]["params"])


@pytest.mark.skipif(not os.path.isdir(MIL_DIR), reason="the MIL bag files are not in ../shared/data/mil")
def test_learned_search_on_musk1_beats_chance_on_held_out_bags():
    bags, y = load_npz_bags(os.path.join(MIL_DIR, "musk1.npz"))
    results = mil_benchmark(bags, y, methods=["T1"], n_splits=3, n_repeats=1, random_state=0, n_jobs=2)["T1"]
    assert results["mean"] > 0.7  # 47 of 92 bags are positive: chance is 0.51


def test_the_benchmark_script_checks_every_file_and_setting_before_it_runs(tmp_path):
    """A missing second file, or more folds than a file's bags, ended an hour-long run with
    a traceback after the first file's benchmark; now a one-line usage error at once."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "mil_benchmark.py")
    bags, y = make_circles_bags(6, 3, random_state=0)
    lfagg.datasets.save_npz_bags(tmp_path / "small.npz", bags, y)
    (tmp_path / "again").mkdir()
    lfagg.datasets.save_npz_bags(tmp_path / "again" / "small.npz", bags, y)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(lfagg.__path__[0]),
                                                                         os.environ.get("PYTHONPATH")]))}
    for args, message in (([str(tmp_path / "small.npz"), str(tmp_path / "missing.npz"), "--folds", "2"],
                           "missing.npz: not a readable"),
                          ([str(tmp_path / "small.npz")], "small.npz: Cannot have number of splits n_splits=10"),
                          ([str(tmp_path / "small.npz"), "--repeats", "0"], "--repeats: expected an integer >= 1"),
                          ([str(tmp_path / "small.npz"), str(tmp_path / "again" / "small.npz"), "--folds", "2"],
                           "again/small.npz are both named small")):
        for command in ([script], ["-m", "lfagg.mil"]):  # the installed command too (it did nothing)
            run = subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, env=env,
                                 timeout=120)
            assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
            assert message in run.stderr.splitlines()[-1]
    bags, y = make_circles_bags(24, 3, random_state=0)  # 12 bags a class: 6 in a training fold of 2, >= 5 inner folds
    lfagg.datasets.save_npz_bags(tmp_path / "circles.npz", bags, y)
    run = subprocess.run([sys.executable, "-m", "lfagg.mil", str(tmp_path / "circles.npz"), "--methods", "BoW",
                          "--folds", "2", "--repeats", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:3] == ["| data set | BoW |", "|---|---|", run.stdout.splitlines()[2]]
    assert run.stdout.splitlines()[2].startswith("| circles | ")
