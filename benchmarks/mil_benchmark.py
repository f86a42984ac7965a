"""The multiple-instance learning benchmarks (lfagg.mil): T1, T2 (LearnedBoWCV,
LearnedVLADCV) and BoW / VLAD / FV (codebook size chosen by GridSearchCV) under repeated
stratified 10-fold cross-validation, on bag files of ``features``, ``offsets`` and
``labels`` (``../shared/data/mil/*.npz``, or any written by ``lfagg.datasets.save_npz_bags``).

Prints a Markdown table of mean accuracy ± standard error per data set and method (as
``python -m lfagg.mil`` does), and writes every fold's accuracy, fit time and chosen
hyper-parameters to ``benchmarks/results/mil-<timestamp>.json``.

Usage::

    python benchmarks/mil_benchmark.py ../shared/data/mil/musk1.npz ../shared/data/mil/elephant.npz --jobs 2
    python benchmarks/mil_benchmark.py BAGS.npz --methods T1 T2 --repeats 1
"""

import sys

from _common import machine_info, write_json

from lfagg.mil import parse_args, run_files


def main(argv=None) -> int:
    args, data = parse_args(argv)
    results = run_files(args, data)
    out = write_json("mil", {"machine": machine_info(1), "args": vars(args), "results": results})
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
