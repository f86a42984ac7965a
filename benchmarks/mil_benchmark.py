"""The multiple-instance learning benchmarks (lfagg.mil): T1, T2 (LearnedBoWCV,
LearnedVLADCV) and BoW / VLAD / FV (codebook size chosen by GridSearchCV) under repeated
stratified 10-fold cross-validation, on bag files of ``features``, ``offsets`` and
``labels`` (``../shared/data/mil/*.npz``, or any written by ``lfagg.datasets.save_npz_bags``).

Prints a Markdown table of mean accuracy ± standard error per data set and method, and
writes every fold's accuracy, fit time and chosen hyper-parameters to
``benchmarks/results/mil-<timestamp>.json``.

Usage::

    python benchmarks/mil_benchmark.py ../shared/data/mil/musk1.npz ../shared/data/mil/elephant.npz --jobs 2
    python benchmarks/mil_benchmark.py BAGS.npz --methods T1 T2 --repeats 1
"""

import argparse
import os
import sys

from _common import machine_info, write_json

from sklearn.model_selection import StratifiedKFold

from lfagg.cli import _int_at_least
from lfagg.datasets import load_npz_bags
from lfagg.mil import METHODS, format_mil_table, mil_benchmark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help=".npz bag files with labels")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--folds", type=_int_at_least(2), default=10)
    parser.add_argument("--repeats", type=_int_at_least(1), default=5)
    parser.add_argument("--seed", type=_int_at_least(0), default=0)
    parser.add_argument("--jobs", type=_int_at_least(1), default=None, help="fits in parallel processes (default 1)")
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
    results = {}
    for name, (bags, labels) in data.items():
        results[name] = mil_benchmark(bags, labels, args.methods, n_splits=args.folds, n_repeats=args.repeats,
                                      random_state=args.seed, n_jobs=args.jobs, verbose=1)
        print(format_mil_table({name: results[name]}), flush=True)
    print(format_mil_table(results))
    out = write_json("mil", {"machine": machine_info(1), "args": vars(args), "results": results})
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
