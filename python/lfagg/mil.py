"""The multiple-instance learning benchmark protocol, on any set of bags with bag labels
(Musk1, Elephant, ...): stratified k-fold cross-validation repeated with different
splits, the local features standardised on each training fold, and every method choosing
its hyper-parameters on that training fold alone.

Methods: "T1" and "T2" are :class:`lfagg.LearnedBoWCV` and :class:`lfagg.LearnedVLADCV`
with their defaults; "BoW", "VLAD" and "FV" are :class:`lfagg.BagClassifier` over
:class:`lfagg.BagOfWords`, :class:`lfagg.VLAD` and :class:`lfagg.FisherVector`, their
codebook size chosen among the same sizes (BoW: T1's; VLAD, FV: T2's) by scikit-learn's
``GridSearchCV`` on the same number of inner folds by the same score (the held-out log loss). When the methods
include both T1 and T2, "T1+T2" is scored too: the mean of their class probabilities on
each test fold (a model average, no fit of its own).

From the command line, ``python -m lfagg.mil FILE.npz [FILE.npz ...] [--methods ...]
[--folds 10] [--repeats 5] [--seed 0] [--jobs N]`` prints the table of each file, then
of all; ``benchmarks/mil_benchmark.py`` does the same and writes every fold's results to
``benchmarks/results/mil-<timestamp>.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from joblib import delayed
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from ._progress import progress_bar
from ._threads import as_they_finish
from ._validation import (check_bags, check_labels, choice, n_jobs_arg, n_threads_arg, nonnegative_int, positive_int,
                          verbosity)
from .bags import Bags
from .encoders import VLAD, BagOfWords, FisherVector
from .models import BagClassifier, LearnedBoWCV, LearnedVLADCV
from .models.selection import BOW_CODEBOOK_SIZES, DEFAULT_FOLDS, VLAD_CODEBOOK_SIZES, fewest_training_features

__all__ = ["METHODS", "AVERAGES", "make_method", "standardize", "mil_benchmark", "format_mil_table", "parse_args",
           "run_files", "main"]

#: The methods compared, by name.
METHODS = ("T1", "T2", "BoW", "VLAD", "FV")
#: Model averages scored when all their members are among the methods: name -> members.
AVERAGES = {"T1+T2": ("T1", "T2")}
#: The baselines' encoders and the codebook sizes they search: those of LearnedBoWCV for
#: BoW, of LearnedVLADCV for VLAD and FV.
_ENCODERS = {"BoW": (BagOfWords, BOW_CODEBOOK_SIZES), "VLAD": (VLAD, VLAD_CODEBOOK_SIZES),
             "FV": (FisherVector, VLAD_CODEBOOK_SIZES)}


def make_method(name: str, random_state: int, n_threads: int | None = 1):
    """The unfitted classifier of bags that method ``name`` (one of :data:`METHODS`) is: a
    LearnedBoWCV (T1) or LearnedVLADCV (T2), or a scikit-learn GridSearchCV over the
    codebook size of a BagClassifier (BoW, VLAD, FV)."""
    choice(name, "method", METHODS)
    if name in ("T1", "T2"):
        return (LearnedBoWCV if name == "T1" else LearnedVLADCV)(random_state=random_state, n_threads=n_threads)
    encoder, sizes = _ENCODERS[name]
    return GridSearchCV(BagClassifier(encoder(sizes[0], random_state=random_state, n_threads=n_threads),
                                      random_state=random_state),
                        {"encoder__n_codewords": list(sizes)},
                        scoring="neg_log_loss",
                        cv=StratifiedKFold(DEFAULT_FOLDS, shuffle=True, random_state=random_state))


def standardize(train: Bags, test: Bags) -> tuple[Bags, Bags]:
    """Both bag sets with every feature dimension centred and scaled by the mean and
    standard deviation of the training bags' local features (constant dimensions: 1)."""
    mean = train.features.mean(axis=0)
    std = train.features.std(axis=0)
    std[std == 0] = 1.0
    return tuple(Bags((b.features - mean) / std, b.offsets) for b in (train, test))


def _run_fold(method: str, bags: Bags, y: np.ndarray, train, test, seed: int, n_threads) -> dict:
    train_bags, test_bags = standardize(bags.subset(train), bags.subset(test))
    model = make_method(method, seed, n_threads)
    if isinstance(model, GridSearchCV):  # as the searches of T1 and T2 skip them
        model.set_params(param_grid={"encoder__n_codewords": _feasible_sizes(model, train_bags, y[train])})
    start = time.perf_counter()
    model.fit(train_bags, y[train])
    accuracy = float(np.mean(model.predict(test_bags) == y[test]))
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start, "params": model.best_params_,
            "proba": model.predict_proba(test_bags), "classes": model.classes_}


def _feasible_sizes(search: GridSearchCV, bags: Bags, y: np.ndarray) -> list:
    """The codebook sizes of a baseline's search that every inner training fold has enough
    local features for (a larger one failed, with a traceback on stderr, in each of its
    fits; the searches of T1 and T2 skip them with a warning); the smallest when none is,
    whose failure then says why."""
    sizes = search.param_grid["encoder__n_codewords"]
    fewest = fewest_training_features(bags, search.cv.split(y, y))
    return [K for K in sizes if K <= fewest] or [min(sizes)]


def _check_inner_folds(y: np.ndarray, trains: list, n_splits: int) -> None:
    """ValueError, before any fit, when a training fold holds fewer bags of a class than the
    inner folds every method searches on (it failed in the first fit of the first method,
    a baseline's naming GridSearchCV's n_splits=5 as if given for the outer split)."""
    classes = np.unique(y)
    fewest, label = min((int(np.sum(y[train] == c)), c) for train in trains for c in classes)
    if fewest < DEFAULT_FOLDS:
        raise ValueError(f"too few bags: a training fold of the {n_splits}-fold split holds {fewest} bag(s) of class "
                         f"{np.asarray(label).item()!r}, and every method searches its hyper-parameters on "
                         f"{DEFAULT_FOLDS} stratified folds of it: pass more bags, or a larger n_splits (larger "
                         "training folds)")


def _averaged_accuracy(runs: list, y_test: np.ndarray) -> float:
    """The test accuracy of the mean of the ``runs``' class probabilities (same classes)."""
    proba = np.mean([run["proba"] for run in runs], axis=0)
    return float(np.mean(runs[0]["classes"][proba.argmax(axis=1)] == y_test))


def mil_benchmark(bags, y, methods=METHODS, n_splits: int = 10, n_repeats: int = 5, random_state: int = 0,
                  n_jobs: int | None = None, n_threads: int | None = 1, verbose: int = 0) -> dict:
    """Accuracy of each method under ``n_repeats`` x ``n_splits``-fold stratified CV.

    Repeat r splits with ``StratifiedKFold(shuffle=True, random_state=random_state + r)``
    and seeds every model of its folds with ``random_state + r``.

    Parameters
    ----------
    bags : Bags or list of (N_i, D) float arrays; y : (n_bags,) class labels.
    methods : names from :data:`METHODS` (or one name); random_state : int >= 0.
    n_jobs : (method, fold) fits run in parallel processes (joblib; None: 1).
    n_threads : the core's threads per fit (1 suits n_jobs > 1 on small bags).
    verbose : > 0 shows the fits done on stderr.

    Returns
    -------
    dict method -> {"mean": mean accuracy over all folds, "se": standard error (of the
    repeats' means over their standard deviation, or of the folds' with one repeat),
    "accuracy": (n_repeats, n_splits) list, "seconds": mean fit time, "params": the
    chosen hyper-parameters of every fold}, also for each of :data:`AVERAGES` whose
    members are all among ``methods`` (its seconds: its members' together; its params:
    theirs).
    """
    bags = check_bags(bags)
    y = check_labels(y, len(bags))
    methods = [methods] if isinstance(methods, str) else methods  # one name, not its letters
    methods = list(dict.fromkeys(choice(m, "method", METHODS) for m in methods))  # each once
    if not methods:
        raise ValueError(f"methods must name at least one of {', '.join(METHODS)}")
    n_splits, n_repeats = positive_int(n_splits, "n_splits", minimum=2), positive_int(n_repeats, "n_repeats")
    random_state = nonnegative_int(random_state, "random_state")  # repeat r uses random_state + r
    if random_state + n_repeats - 1 >= 2 ** 32:  # numpy's seeds of the splits stop there
        raise ValueError(f"random_state + n_repeats - 1 must be below 2**32 (repeat r seeds its folds with "
                         f"random_state + r), got random_state={random_state} with n_repeats={n_repeats}")
    n_threads = None if n_threads is None else n_threads_arg(n_threads)  # before any fit, not in every one
    tasks = [(m, r, f, train, test) for r in range(n_repeats)
             for f, (train, test) in enumerate(StratifiedKFold(n_splits, shuffle=True, random_state=random_state + r)
                                               .split(y, y))
             for m in methods]
    _check_inner_folds(y, [train for _, _, _, train, _ in tasks], n_splits)
    runs = as_they_finish(n_jobs_arg(n_jobs), (
        delayed(_run_fold)(m, bags, y, train, test, random_state + r, n_threads) for m, r, f, train, test in tasks))
    averages = {name: members for name, members in AVERAGES.items() if set(members) <= set(methods)}
    results = {m: {"accuracy": np.zeros((n_repeats, n_splits)), "seconds": [], "params": []}
               for m in [*methods, *averages]}
    fold_runs = {}  # (repeat, fold) -> {method: run}, for the averages
    with progress_bar(f"MIL benchmark: {len(methods)} methods, {n_repeats} x {n_splits} folds", len(tasks),
                      verbosity(verbose), announce=True) as bar:
        for (m, r, f, _, test), run in zip(tasks, runs):
            results[m]["accuracy"][r, f] = run["accuracy"]
            results[m]["seconds"].append(run["seconds"])
            results[m]["params"].append(run["params"])
            fold_runs.setdefault((r, f), {})[m] = run
            for name, members in averages.items():
                if m in members and all(member in fold_runs[r, f] for member in members):
                    member_runs = [fold_runs[r, f][member] for member in members]
                    results[name]["accuracy"][r, f] = _averaged_accuracy(member_runs, y[test])
                    results[name]["seconds"].append(sum(run["seconds"] for run in member_runs))
                    results[name]["params"].append([run["params"] for run in member_runs])
            bar.update()
    for result in results.values():
        accuracy = result["accuracy"]
        spread = accuracy.mean(axis=1) if n_repeats > 1 else accuracy.ravel()
        result.update(mean=float(accuracy.mean()), se=float(spread.std(ddof=1) / np.sqrt(spread.size)),
                      accuracy=accuracy.tolist(), seconds=float(np.mean(result["seconds"])))
    return results


def format_mil_table(results_by_dataset: dict) -> str:
    """A Markdown table: one row per data set, one column per method, "mean ± se";
    ``results_by_dataset`` maps a data set's name to what :func:`mil_benchmark` returned."""
    def table(results):  # mil_benchmark's, method -> a summary of its folds
        return isinstance(results, dict) and all(isinstance(r, dict) and {"mean", "se"} <= set(r)
                                                 for r in results.values())

    if not (isinstance(results_by_dataset, dict) and all(map(table, results_by_dataset.values()))):
        raise ValueError("results_by_dataset must be a dict: data set name -> mil_benchmark's results (method -> "
                         "a dict with 'mean' and 'se')")
    methods = list(dict.fromkeys(m for results in results_by_dataset.values() for m in results))
    if not methods:
        raise ValueError("results_by_dataset holds no results to tabulate")
    lines = ["| data set | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name, results in results_by_dataset.items():
        cells = [f"{results[m]['mean']:.3f} ± {results[m]['se']:.3f}" if m in results else "" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None, prog: str | None = None):
    """(args, data): the command line's options and its files' bags, data set name (the file
    name) -> (Bags, labels), every file read and its folds checked before the first run
    (argparse's one-line usage error, exit status 2, otherwise)."""
    from .cli import _int_at_least, _processes
    from .datasets import load_npz_bags

    parser = argparse.ArgumentParser(prog=prog, description="The multiple-instance benchmark protocol (lfagg.mil): "
                                     "T1, T2 and BoW / VLAD / FV under repeated stratified k-fold cross-validation, on "
                                     ".npz bag files with labels; prints mean accuracy +- standard error.")
    parser.add_argument("files", nargs="+", help=".npz bag files with labels (lfagg.datasets.save_npz_bags)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--folds", type=_int_at_least(2), default=10)
    parser.add_argument("--repeats", type=_int_at_least(1), default=5)
    parser.add_argument("--seed", type=_int_at_least(0), default=0)
    parser.add_argument("--jobs", type=_processes, default=None, help="fits in parallel processes (default 1)")
    args = parser.parse_args(argv)
    data, paths = {}, {}
    for path in args.files:  # every file read and its folds checked before the first hour-long benchmark
        try:
            bags, labels = load_npz_bags(path)
            if labels is None:
                raise ValueError(f"{path} holds no labels")
            next(StratifiedKFold(args.folds).split(labels, labels))
        except ValueError as exc:
            parser.error(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
        name = os.path.splitext(os.path.basename(path))[0]  # the table's row and the results' key
        if name in data:
            parser.error(f"{paths[name]} and {path} are both named {name}: their rows would have one name "
                         "(give each file once, under names of their own)")
        data[name], paths[name] = (bags, labels), path
    return args, data


def run_files(args, data: dict) -> dict:
    """:func:`mil_benchmark` of every data set of :func:`parse_args`, each table printed as it
    ends, then all of them; returns data set name -> its results."""
    results = {}
    for name, (bags, labels) in data.items():
        results[name] = mil_benchmark(bags, labels, args.methods, n_splits=args.folds, n_repeats=args.repeats,
                                      random_state=args.seed, n_jobs=args.jobs, verbose=1)
        print(format_mil_table({name: results[name]}), flush=True)
    print(format_mil_table(results))
    return results


def main(argv=None) -> int:
    """``python -m lfagg.mil``: see the module's docstring."""
    run_files(*parse_args(argv, prog="python -m lfagg.mil"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
