"""Benchmark lfagg's soft BoW / soft VLAD kernels against numpy and PyTorch peers.

For every case, encoder and dtype this times the forward pass alone and forward plus
backward (the gradients with respect to centres, precisions and gamma given a random
dJ/dR) for ``lfagg.ops``, a vectorised numpy implementation with a hand-written backward
and PyTorch autograd (see ``_peers.py``; all three implement the same maths: the
``lfagg.ops`` docstrings, eqs. 6-9 of Katharopoulos et al. 2017).
Ops:

* ``fwd``: the forward pass alone (torch under ``no_grad``);
* ``fwd+bwd``: forward and all gradients as in lfagg's training loop: lfagg's forward
  writes the soft assignments into a buffer reused across calls (``assignments_out``) and
  its backward reuses them (``assignments=A``), as numpy and torch autograd keep their
  forward's intermediates;
* ``fwd+bwd (recompute)``: lfagg's low-memory variant, whose backward recomputes the
  assignments instead of holding the N x K matrix; the peers' columns repeat their
  ``fwd+bwd`` measurement (they have no such variant).

Each measurement is one warm-up call, then the median of ``--repeats`` calls timed with
``time.perf_counter``, the implementations called in turn within each repeat (so that a
change of the shared machine's load affects them alike). A table is printed and the
results are written as JSON to ``benchmarks/results/encoders-<timestamp>.json`` together
with machine information.
``run_suite.py`` runs this as part (a) of the suite.

Cases (K = 1024 for soft BoW and 64 for soft VLAD):

* ``idt``: one video of 22,000 Improved Dense Trajectory descriptors, D = 108;
* ``minibatch``: 32 bags of 1,000 features, D = 108, a training mini-batch;
* ``conv``: 256 CIFAR images, each a bag of 5 x 5 = 25 conv features of D = 256.

Features are standard normal, centres are sampled from the features, precisions are
uniform in [0.5, 1.5] and gamma is set so that gamma times the median distance is 10, so
the soft assignments are neither uniform nor one-hot.

``--check`` compares every implementation with the numpy peer in float64 (and float32)
on small ragged bags, verifies the numpy backward by finite differences, and exits.

Usage::

    python benchmarks/bench_encoders.py                 # all cases, float32
    python benchmarks/bench_encoders.py --check
    python benchmarks/bench_encoders.py --quick --dtype both --no-torch
    python benchmarks/bench_encoders.py --cases conv --encoders soft_bow
"""

import argparse
import dataclasses
import os
import sys

import numpy as np

try:
    from . import _common, _peers
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common
    import _peers

format_ms, format_ratio, time_interleaved = _common.format_ms, _common.format_ratio, _common.time_interleaved

# case -> (n_bags, features per bag, D)
CASES = {"idt": (1, 22_000, 108), "minibatch": (32, 1_000, 108), "conv": (256, 25, 256)}
QUICK_CASES = {"idt": (1, 2_000, 108), "minibatch": (8, 250, 108), "conv": (32, 25, 256)}
N_CODEWORDS = {"soft_bow": 1024, "soft_vlad": 64}
QUICK_CODEWORDS = {"soft_bow": 128, "soft_vlad": 16}
GAMMA_TIMES_MEDIAN_DISTANCE = 10.0
IMPLEMENTATIONS = ("lfagg", "numpy", "torch")
RECOMPUTE = "fwd+bwd (recompute)"
OPS = ("fwd", "fwd+bwd", RECOMPUTE)
OUTPUTS = ("R", "grad_centers", "grad_precisions", "grad_gamma")
SEED = 0

# --check: bag sizes (ragged, one single-feature bag, one spanning several feature blocks),
# dimensions, codewords and the tolerated normwise relative error per dtype.
CHECK_BAG_SIZES = (37, 1, 300, 5)
CHECK_DIMS, CHECK_CODEWORDS = 13, 33
CHECK_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
FD_STEP, FD_TOLERANCE = 1e-6, 1e-7


@dataclasses.dataclass
class Problem:
    """One benchmark input: bags, parameters and the upstream gradient dJ/dR."""

    encoder: str
    features: np.ndarray
    offsets: np.ndarray
    centers: np.ndarray
    precisions: np.ndarray
    gamma: float
    grad_output: np.ndarray

    def params(self):
        """Keyword arguments shared by every implementation's constructor."""
        return dict(encoder=self.encoder, features=self.features, offsets=self.offsets,
                    centers=self.centers, precisions=self.precisions, gamma=self.gamma)


def median_distance(features, centers, precisions, n_sample, rng):
    """Median Mahalanobis distance between centres and a random subset of features."""
    rows = rng.choice(len(features), min(n_sample, len(features)), replace=False)
    f = features[rows].astype(np.float64)
    cp = centers * precisions
    dist = (f * f) @ precisions.T - 2 * (f @ cp.T) + np.sum(cp * centers, axis=1)
    return float(np.median(dist))


def make_problem(encoder, bag_sizes, n_dims, n_codewords, dtype, seed=SEED):
    """Random problem as described in the module docstring, in ``dtype``.

    The same seed gives the same problem (up to rounding) in every dtype.
    """
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(bag_sizes)]).astype(np.int64)
    features = rng.standard_normal((offsets[-1], n_dims))
    centers = features[rng.choice(len(features), n_codewords, replace=False)]
    precisions = rng.uniform(0.5, 1.5, size=(n_codewords, n_dims))
    gamma = GAMMA_TIMES_MEDIAN_DISTANCE / median_distance(features, centers, precisions, 1000, rng)
    out_dim = n_codewords if encoder == "soft_bow" else n_codewords * n_dims
    grad_output = rng.standard_normal((len(bag_sizes), out_dim))
    return Problem(encoder, features.astype(dtype), offsets, centers.astype(dtype),
                   precisions.astype(dtype), gamma, grad_output.astype(dtype))


class LfaggImpl:
    """``lfagg.ops`` behind the peers' interface (``forward``, ``forward_backward``)."""

    def __init__(self, ops, n_threads, encoder, features, offsets, centers, precisions, gamma):
        self.forward_op = getattr(ops, encoder)
        self.backward_op = getattr(ops, encoder + "_backward")
        self.args = (features, offsets, centers, precisions, gamma)
        self.n_threads = n_threads
        self.assignments = np.empty((len(features), len(centers)), features.dtype)  # reused, as in training

    def forward(self):
        """Return R."""
        return self.forward_op(*self.args, n_threads=self.n_threads)

    def forward_backward(self, grad_output, recompute=False):
        """Return ``(R, grad_centers, grad_precisions, grad_gamma)``.

        As in lfagg's training loop, the forward writes the soft assignments into a buffer
        reused across steps and the backward reuses them; ``recompute`` is the low-memory
        variant whose backward recomputes them.
        """
        if recompute:
            r, assignments = self.forward_op(*self.args, n_threads=self.n_threads), None
        else:
            r, assignments = self.forward_op(*self.args, n_threads=self.n_threads,
                                             assignments_out=self.assignments)
        grad_c, grad_p, grad_gamma = self.backward_op(*self.args, grad_output, n_threads=self.n_threads,
                                                      assignments=assignments)
        return r, grad_c, grad_p, float(grad_gamma)


def make_implementations(problem, ops, torch, n_threads):
    """Instantiate every available implementation for ``problem``: name -> object."""
    impls = {}
    if ops is not None:
        impls["lfagg"] = LfaggImpl(ops, n_threads, **problem.params())
    impls["numpy"] = _peers.NumpyPeer(**problem.params())
    if torch is not None:
        impls["torch"] = _peers.TorchPeer(**problem.params())
    return impls


def normwise_error(value, reference):
    """max |value - reference| / max |reference|."""
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    if value.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(value - reference)) / max(np.max(np.abs(reference)), 1e-300))


def finite_difference_errors(problem, grads):
    """Relative error of the numpy gradients along random directions (central differences).

    For each parameter, compares <grad, V> with (J(theta + hV) - J(theta - hV)) / 2h,
    J = sum(R * G), for a random direction V; ``problem`` must be float64.
    """
    rng = np.random.default_rng(SEED + 1)
    base = problem.params()

    def objective(**changed):
        r = _peers.NumpyPeer(**{**base, **changed}).forward()
        return float(np.sum(r * problem.grad_output))

    errors = {}
    for name, grad in zip(("centers", "precisions", "gamma"), grads):
        value = base[name]
        direction = rng.standard_normal(np.shape(value))
        step = FD_STEP * direction
        numeric = (objective(**{name: value + step}) - objective(**{name: value - step})) / (2 * FD_STEP)
        analytic = float(np.sum(grad * direction))
        errors["grad_" + name] = abs(numeric - analytic) / max(abs(analytic), 1e-300)
    return errors


def run_check(encoders, ops, torch, n_threads):
    """Compare every implementation with the float64 numpy peer; return the exit status."""
    print(f"check: bags {CHECK_BAG_SIZES}, D={CHECK_DIMS}, K={CHECK_CODEWORDS}, "
          f"gamma * median distance = {GAMMA_TIMES_MEDIAN_DISTANCE:g}; "
          f"normwise relative error vs numpy float64")
    print(f"{'encoder':<10} {'impl':<17} {'dtype':<8} {'output':<20} {'error':>10} {'tol':>8}")
    failures = 0

    def report(encoder, impl, dtype, output, error, tol):
        nonlocal failures
        ok = error <= tol
        failures += not ok
        print(f"{encoder:<10} {impl:<17} {dtype:<8} {output:<20} {error:10.2e} {tol:8.0e}"
              f"{'' if ok else '  FAIL'}")

    for encoder in encoders:
        reference_problem = make_problem(encoder, CHECK_BAG_SIZES, CHECK_DIMS, CHECK_CODEWORDS, np.float64)
        reference = _peers.NumpyPeer(**reference_problem.params()).forward_backward(
            reference_problem.grad_output)
        for output, error in finite_difference_errors(reference_problem, reference[1:]).items():
            report(encoder, "numpy", "float64", output + " (fd)", error, FD_TOLERANCE)
        for dtype, tol in CHECK_TOLERANCE.items():
            problem = make_problem(encoder, CHECK_BAG_SIZES, CHECK_DIMS, CHECK_CODEWORDS, dtype)
            for name, impl in make_implementations(problem, ops, torch, n_threads).items():
                if name == "numpy" and dtype == "float64":
                    continue  # the reference itself
                forward_only = impl.forward()
                report(encoder, name, dtype, "R (fwd only)", normwise_error(forward_only, reference[0]), tol)
                variants = {name: impl.forward_backward(problem.grad_output)}
                if name == "lfagg":
                    variants["lfagg (recompute)"] = impl.forward_backward(problem.grad_output, recompute=True)
                for label, results in variants.items():
                    for output, value, ref in zip(OUTPUTS, results, reference):
                        report(encoder, label, dtype, output, normwise_error(value, ref), tol)
    print("check passed" if not failures else f"check FAILED: {failures} comparison(s) out of tolerance")
    return 1 if failures else 0


TABLE_HEADER = (f"{'case':<10} {'encoder':<10} {'dtype':<8} {'op':<20} {'lfagg ms':>10} "
                f"{'numpy ms':>10} {'torch ms':>10} {'numpy/lfagg':>12} {'torch/lfagg':>12}")


def format_row(row):
    """One table line for a result row."""
    ms, ratio = row["ms"], row["ratio"]
    return (f"{row['case']:<10} {row['encoder']:<10} {row['dtype']:<8} {row['op']:<20} "
            f"{format_ms(ms['lfagg']):>10} {format_ms(ms['numpy']):>10} {format_ms(ms['torch']):>10} "
            f"{format_ratio(ratio['numpy/lfagg']):>12} {format_ratio(ratio['torch/lfagg']):>12}")


def operation(impl, name, op, grad_output):
    """The call that ``op`` times for implementation ``name``."""
    if op == "fwd":
        return impl.forward
    if name == "lfagg":
        return lambda: impl.forward_backward(grad_output, recompute=op == RECOMPUTE)
    return lambda: impl.forward_backward(grad_output)


def run_benchmark(args, ops, torch):
    """Time every case, encoder, dtype and op; print each row as it completes; return rows.

    ``args`` needs ``quick``, ``cases``, ``encoders``, ``dtypes``, ``threads`` and
    ``repeats`` (see :func:`parse_args`). The peers are timed once for ``fwd+bwd``; the
    ``fwd+bwd (recompute)`` row repeats their figures against lfagg's low-memory variant.
    """
    cases = QUICK_CASES if args.quick else CASES
    codewords = QUICK_CODEWORDS if args.quick else N_CODEWORDS
    print(TABLE_HEADER)
    rows = []
    for case in args.cases:
        n_bags, per_bag, n_dims = cases[case]
        for encoder in args.encoders:
            for dtype in args.dtypes:
                problem = make_problem(encoder, [per_bag] * n_bags, n_dims, codewords[encoder], dtype)
                impls = make_implementations(problem, ops, torch, args.threads)
                # two interleaved rounds: the forwards, then every fwd+bwd variant together
                timed = {}
                for ops_in_round in (("fwd",), ("fwd+bwd", RECOMPUTE)):
                    fns = {(name, op): operation(impl, name, op, problem.grad_output)
                           for op in ops_in_round for name, impl in impls.items()
                           if op != RECOMPUTE or name == "lfagg"}
                    timed.update(time_interleaved(fns, args.repeats))
                for op in OPS:
                    ms, runs = dict.fromkeys(IMPLEMENTATIONS), {}
                    for name in impls:  # the peers have no recompute variant: their fwd+bwd is repeated
                        ms[name], runs[name] = timed.get((name, op), timed.get((name, "fwd+bwd")))
                    ratio = {f"{peer}/lfagg": _common.ratio(ms[peer], ms["lfagg"]) for peer in ("numpy", "torch")}
                    row = dict(case=case, encoder=encoder, dtype=dtype, op=op, n_bags=n_bags,
                               features_per_bag=per_bag, n_dims=n_dims, n_codewords=codewords[encoder],
                               gamma=problem.gamma, ms=ms, runs_ms=runs, ratio=ratio,
                               peers_op="fwd+bwd" if op == RECOMPUTE else op)
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=_common.comma_list(tuple(CASES)), default=list(CASES),
                        help="comma-separated cases (default: %(default)s)")
    parser.add_argument("--encoders", type=_common.comma_list(_peers.ENCODERS), default=list(_peers.ENCODERS),
                        help="comma-separated encoders (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="float32",
                        help="compute dtype (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (default: 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for lfagg, torch and (with threadpoolctl) numpy's BLAS "
                             "(default: all cores, %(default)s)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--check", action="store_true",
                        help="check the peers against lfagg on small sizes, then exit")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    args.dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    return args


def main(argv=None):
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    ops, torch, blas_limit, notes = _common.load_implementations(args.no_torch, args.threads)
    for note in notes:
        print("note:", note)
    with blas_limit:
        if args.check:
            return run_check(args.encoders, ops, torch, args.threads)
        machine = _common.machine_info(args.threads, torch)
        print(f"{_common.describe_machine(machine)}; median of {args.repeats} after a warm-up; "
              f"fwd = forward only (torch under no_grad), fwd+bwd = forward and all gradients")
        rows = run_benchmark(args, ops, torch)
    config = {key: value for key, value in vars(args).items() if key != "check"}
    path = _common.write_json("encoders", dict(config=config, machine=machine, notes=notes, results=rows))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
