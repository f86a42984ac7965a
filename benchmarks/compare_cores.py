"""The backward kernels (kept assignments, no dJ/dF: what training calls) of two builds of
lfagg's core, to check that a change to the core costs nothing where it should not.

    python benchmarks/compare_cores.py OLD_core.so NEW_core.so [--pairs 8]

Each build runs in its own process (the modules share a name), in turn, ``--pairs``
times; each run prints the median of 15 calls after 3 warm-ups at the minibatch size
(soft BoW, K = 1024) and the IDT size (soft VLAD, K = 64), float32, 2 threads.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

CASES = {"minibatch soft_bow K=1024": (32, 1000, 108, 1024, "soft_bow"),
         "idt soft_vlad K=64": (1, 22000, 108, 64, "soft_vlad")}


def time_build(path):
    """{case: median ms} of one build's backward."""
    name = os.path.basename(path).split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    rng = np.random.default_rng(0)
    result = {}
    for case, (n_bags, n, dim, k, encoder) in CASES.items():
        forward, backward = getattr(core, encoder), getattr(core, encoder + "_backward")
        features = rng.standard_normal((n_bags * n, dim), dtype=np.float32)
        offsets = np.arange(n_bags + 1, dtype=np.int64) * n
        centers = features[rng.choice(len(features), k, replace=False)].copy()
        precisions = np.ones((k, dim), np.float32)
        out, assignments = forward(features, offsets, centers, precisions, 0.05, 2, True)
        grad = rng.standard_normal(out.shape).astype(np.float32)
        args = (features, offsets, centers, precisions, 0.05, grad, assignments, 2)
        for _ in range(3):
            backward(*args)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            backward(*args)
            times.append(time.perf_counter() - start)
        result[case] = float(np.median(times) * 1e3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_build(args.old)))
        return 0
    runs = {"old": [], "new": []}
    for _ in range(args.pairs):
        for label in runs:
            out = subprocess.run([sys.executable, __file__, getattr(args, label), "-", "--child"], check=True,
                                 capture_output=True, text=True).stdout
            runs[label].append(json.loads(out))
    for case in CASES:
        old, new = (np.median([r[case] for r in runs[label]]) for label in ("old", "new"))
        print(f"{case}: old {old:.1f} ms, new {new:.1f} ms (new / old {new / old:.2f}), medians of {args.pairs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
