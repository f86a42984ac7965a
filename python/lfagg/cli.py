"""The ``lfagg`` command line."""
from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    """Learned soft BoW against its K-Means initialisation on the synthetic circles bags."""
    from .datasets import make_circles_bags
    from .learned import LearnedBoW

    train_bags, train_y = make_circles_bags(args.n_bags, args.n_per_bag, random_state=args.seed)
    test_bags, test_y = make_circles_bags(args.n_bags, args.n_per_bag, random_state=args.seed + 1)
    print(f"concentric circles: {len(train_bags)} training and {len(test_bags)} test bags of "
          f"{args.n_per_bag} 2-D local features, two classes")
    print(f"{'representation':<28}{'test accuracy':>14}{'time (s)':>10}")
    for label, epochs in ((f"T1-{args.codewords} initial (K-Means)", 0), (f"T1-{args.codewords} learned", args.epochs)):
        start = time.perf_counter()
        model = LearnedBoW(args.codewords, n_epochs=epochs, n_samples_per_bag=20, learning_rate=1e-2,
                           random_state=args.seed, verbose=args.verbose).fit(train_bags, train_y)
        print(f"{label:<28}{model.score(test_bags, test_y):>14.3f}{time.perf_counter() - start:>10.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfagg", description="Learnable local feature aggregation.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="learn a soft BoW on an embedded synthetic dataset and compare")
    demo.add_argument("--codewords", type=int, default=4, help="codebook size K (default 4)")
    demo.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    demo.add_argument("--n-bags", type=int, default=400, help="bags per split (default 400)")
    demo.add_argument("--n-per-bag", type=int, default=50, help="local features per bag (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--verbose", type=int, default=1, help="1 shows progress bars (default), 0 hides them")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:
        print(f"lfagg {args.command}: error: {exc}", file=sys.stderr)
        return 2
