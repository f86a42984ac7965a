"""Benchmark lfagg's soft BoW / soft VLAD kernels against numpy and PyTorch peers.

For every case, encoder and dtype this times the forward pass alone and forward plus
backward (the gradients with respect to centres, precisions and gamma given a random
dJ/dR) for ``lfagg.ops``, a vectorised numpy implementation with a hand-written backward
and PyTorch autograd (see ``_peers.py``; all three implement the same maths, DESIGN.md).
Each measurement is one warm-up call, then the median of ``--repeats`` calls timed with
``time.perf_counter``. A table is printed and the results are written as JSON to
``benchmarks/results/encoders-<timestamp>.json`` together with machine information.

Cases (D = 108, K = 1024 for soft BoW and 64 for soft VLAD):

* ``idt``: one video of 22,000 Improved Dense Trajectory descriptors;
* ``minibatch``: 32 bags of 1,000 features, a training mini-batch.

Features are standard normal, centres are sampled from the features, precisions are
uniform in [0.5, 1.5] and gamma is set so that gamma times the median distance is 10, so
the soft assignments are neither uniform nor one-hot.

``--check`` compares every implementation with the numpy peer in float64 (and float32)
on small ragged bags, verifies the numpy backward by finite differences, and exits.

Usage::

    python benchmarks/bench_encoders.py                 # all cases, float32
    python benchmarks/bench_encoders.py --check
    python benchmarks/bench_encoders.py --quick --dtype both --no-torch
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from . import _peers
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _peers

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None

CASES = {"idt": (1, 22_000), "minibatch": (32, 1_000)}  # (n_bags, features per bag)
QUICK_CASES = {"idt": (1, 2_000), "minibatch": (8, 250)}
N_CODEWORDS = {"soft_bow": 1024, "soft_vlad": 64}
QUICK_CODEWORDS = {"soft_bow": 128, "soft_vlad": 16}
N_DIMS = 108
GAMMA_TIMES_MEDIAN_DISTANCE = 10.0
IMPLEMENTATIONS = ("lfagg", "numpy", "torch")
OPS = ("fwd", "fwd+bwd")
OUTPUTS = ("R", "grad_centers", "grad_precisions", "grad_gamma")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
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

    def forward(self):
        """Return R."""
        return self.forward_op(*self.args, n_threads=self.n_threads)

    def forward_backward(self, grad_output):
        """Return ``(R, grad_centers, grad_precisions, grad_gamma)``."""
        r = self.forward_op(*self.args, n_threads=self.n_threads)
        grad_c, grad_p, grad_gamma = self.backward_op(*self.args, grad_output,
                                                      n_threads=self.n_threads)
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


def load_lfagg():
    """Return (lfagg.ops or None, a note saying why it is missing)."""
    try:
        import lfagg.ops
    except ImportError as exc:
        return None, f"lfagg not importable ({exc}); its columns are left empty"
    return lfagg.ops, None


def load_torch(disabled):
    """Return (torch or None, a note saying why it is skipped)."""
    if disabled:
        return None, "torch skipped (--no-torch)"
    try:
        import torch
    except ImportError as exc:
        return None, f"torch not importable ({exc}); skipped"
    return torch, None


def lfagg_isa(ops):
    """The instruction set lfagg dispatched to, if it exposes one."""
    isa = getattr(ops, "isa", None)
    return isa() if callable(isa) else isa


def cpu_model():
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def numpy_blas():
    """Name and version of the BLAS numpy was built against."""
    with contextlib.suppress(Exception):
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    return None


def machine_info(ops, torch, n_threads):
    """Platform, CPU and library versions recorded with the results."""
    try:
        lfagg_version = importlib.metadata.version("lfagg")
    except importlib.metadata.PackageNotFoundError:
        lfagg_version = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "n_threads": n_threads,
        "numpy": np.__version__,
        "numpy_blas": numpy_blas(),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "lfagg": lfagg_version if ops is not None else None,
        "lfagg_isa": lfagg_isa(ops) if ops is not None else None,
        "threadpoolctl": threadpool_info() if threadpool_info is not None else None,
        "load_average": os.getloadavg(),
    }


def time_ms(fn, repeats):
    """One warm-up call, then ``repeats`` timed calls; return (median ms, all ms)."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs), runs


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
    print(f"{'encoder':<10} {'impl':<6} {'dtype':<8} {'output':<20} {'error':>10} {'tol':>8}")
    failures = 0

    def report(encoder, impl, dtype, output, error, tol):
        nonlocal failures
        ok = error <= tol
        failures += not ok
        print(f"{encoder:<10} {impl:<6} {dtype:<8} {output:<20} {error:10.2e} {tol:8.0e}"
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
                results = impl.forward_backward(problem.grad_output)
                report(encoder, name, dtype, "R (fwd only)", normwise_error(forward_only, reference[0]), tol)
                for output, value, ref in zip(OUTPUTS, results, reference):
                    report(encoder, name, dtype, output, normwise_error(value, ref), tol)
    print("check passed" if not failures else f"check FAILED: {failures} comparison(s) out of tolerance")
    return 1 if failures else 0


def format_ms(value):
    """Milliseconds for the table; '-' when the implementation did not run."""
    return f"{value:.1f}" if value is not None else "-"


def format_ratio(value):
    """Ratio for the table; '-' when undefined."""
    return f"{value:.2f}" if value is not None else "-"


TABLE_HEADER = (f"{'case':<10} {'encoder':<10} {'dtype':<8} {'op':<8} {'lfagg ms':>10} "
                f"{'numpy ms':>10} {'torch ms':>10} {'numpy/lfagg':>12} {'torch/lfagg':>12}")


def format_row(row):
    """One table line for a result row."""
    ms, ratio = row["ms"], row["ratio"]
    return (f"{row['case']:<10} {row['encoder']:<10} {row['dtype']:<8} {row['op']:<8} "
            f"{format_ms(ms['lfagg']):>10} {format_ms(ms['numpy']):>10} {format_ms(ms['torch']):>10} "
            f"{format_ratio(ratio['numpy/lfagg']):>12} {format_ratio(ratio['torch/lfagg']):>12}")


def run_benchmark(args, ops, torch):
    """Time every case, encoder, dtype and op; print each row as it completes; return rows."""
    cases = QUICK_CASES if args.quick else CASES
    codewords = QUICK_CODEWORDS if args.quick else N_CODEWORDS
    print(TABLE_HEADER)
    rows = []
    for case in args.cases:
        n_bags, per_bag = cases[case]
        for encoder in args.encoders:
            for dtype in args.dtypes:
                problem = make_problem(encoder, [per_bag] * n_bags, N_DIMS, codewords[encoder], dtype)
                impls = make_implementations(problem, ops, torch, args.threads)
                for op in OPS:
                    ms, runs = dict.fromkeys(IMPLEMENTATIONS), {}
                    for name, impl in impls.items():
                        fn = impl.forward if op == "fwd" else (
                            lambda impl=impl: impl.forward_backward(problem.grad_output))
                        ms[name], runs[name] = time_ms(fn, args.repeats)
                    ratio = {f"{peer}/lfagg": ms[peer] / ms["lfagg"]
                             if ms[peer] is not None and ms["lfagg"] is not None else None
                             for peer in ("numpy", "torch")}
                    row = dict(case=case, encoder=encoder, dtype=dtype, op=op, n_bags=n_bags,
                               features_per_bag=per_bag, n_dims=N_DIMS, n_codewords=codewords[encoder],
                               gamma=problem.gamma, ms=ms, runs_ms=runs, ratio=ratio)
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


def write_results(args, rows, machine, notes):
    """Write the run's configuration, machine information and rows as JSON; return the path.

    ``machine`` was taken before the run; the load average after it is added, since
    other processes on the machine make the timings noisy.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"encoders-{stamp}.json"
    config = {key: value for key, value in vars(args).items() if key != "check"}
    machine = dict(machine, load_average_end=os.getloadavg())
    payload = dict(created=stamp, config=config, machine=machine, notes=notes, results=rows)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def comma_list(choices):
    """argparse type: a comma-separated subset of ``choices``, order kept."""
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {text!r}")
        return items
    return parse


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=comma_list(tuple(CASES)), default=list(CASES),
                        help="comma-separated cases (default: %(default)s)")
    parser.add_argument("--encoders", type=comma_list(_peers.ENCODERS), default=list(_peers.ENCODERS),
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
    ops, lfagg_note = load_lfagg()
    torch, torch_note = load_torch(args.no_torch)
    if torch is not None:
        torch.set_num_threads(args.threads)
    if threadpool_limits is not None:
        blas_limit = threadpool_limits(limits=args.threads, user_api="blas")
        blas_note = f"BLAS limited to {args.threads} thread(s) with threadpoolctl"
    else:
        blas_limit = contextlib.nullcontext()
        blas_note = "threadpoolctl not installed: numpy's BLAS threads are not limited"
    notes = [note for note in (lfagg_note, torch_note, blas_note) if note]
    for note in notes:
        print("note:", note)
    with blas_limit:
        if args.check:
            return run_check(args.encoders, ops, torch, args.threads)
        machine = machine_info(ops, torch, args.threads)
        print(f"threads {args.threads}; cpu {machine['cpu_model']} ({machine['cpu_count']} cores); "
              f"numpy {machine['numpy']} ({machine['numpy_blas']}); torch {machine['torch']}; "
              f"lfagg {machine['lfagg']} isa {machine['lfagg_isa']}; "
              f"median of {args.repeats} after a warm-up; fwd = forward only "
              f"(torch under no_grad), fwd+bwd = forward and all gradients; "
              f"load average {machine['load_average'][0]:.2f}")
        rows = run_benchmark(args, ops, torch)
    path = write_results(args, rows, machine, notes)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
