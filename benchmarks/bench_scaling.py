"""How close lfagg's soft BoW forward comes to the hardware, and how its cost scales.

Parts (b) and (d) of the benchmark suite (``run_suite.py --parts b,d``; run alone,
``python benchmarks/bench_scaling.py [--quick] [--threads N] [--repeats R]`` writes
``benchmarks/results/scaling-<timestamp>.json``):

* :func:`run_peak` (b): the machine's matrix-multiply peak, measured as numpy's matmul
  of two large square matrices (``n x n``, 2 n^3 flops) in float32 and float64 with the
  suite's thread count, and the fraction of it that ``lfagg.ops.soft_bow``'s forward
  pass reaches at the IDT-video size (1 bag x 22,000 x 108, K = 1024), counting its GEMM
  flops: 2 N K D for the cross term f.(C P) plus 2 N K D for the squared term f^2.P.
  The matmul and the forward are timed in turn, so that both see the same load.
* :func:`run_scaling` (d): the float32 soft BoW forward time against N, K and D (with
  the time per N K D, which stays flat when the cost is linear in each) and against the
  thread count (1, 2, 4, ... and os.cpu_count()), with the parallel efficiency
  t_1 / (p t_p), for each of THREAD_OPS: the soft BoW forward and forward+backward of one
  IDT-size bag (the assignments kept in a buffer reused across calls, as in training),
  the same forward+backward over a mini-batch of many small bags (parallel over bags, not
  within one), soft VLAD forward+backward, Fisher Vectors and one Lloyd iteration of
  lfagg's K-Means; beside them numpy's matmul, whose scaling is what the machine allows
  (a core's clock drops as more cores run vector code).

The problems are those of ``bench_encoders.make_problem`` (standard normal features,
gamma times the median distance = 10).
"""

import os
import sys

import numpy as np

try:
    from . import _common
    from .bench_encoders import CASES, N_CODEWORDS, QUICK_CASES, QUICK_CODEWORDS, LfaggImpl, make_problem
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common
    from bench_encoders import CASES, N_CODEWORDS, QUICK_CASES, QUICK_CODEWORDS, LfaggImpl, make_problem

#: (matmul size, (N, K, D) of the forward) per mode
PEAK = {"full": (4096, (22_000, 1024, 108)), "quick": (2048, (5_000, 1024, 108))}
#: sweeps: the base (N, K, D) and the values each dimension takes in turn
SCALING = {
    "full": dict(base=(22_000, 1024, 108), N=(5_000, 10_000, 20_000, 40_000), K=(128, 256, 512, 1024, 2048),
                 D=(32, 64, 128, 256)),
    "quick": dict(base=(4_000, 256, 108), N=(1_000, 2_000, 4_000, 8_000), K=(64, 128, 256, 512), D=(32, 64, 128)),
}
#: the thread sweep's operations: (name, what it runs) in the order printed
THREAD_OPS = (("matmul", "numpy's float32 matmul, n x n (SWEEP_MATMUL): the machine's own scaling"),
              ("fwd", "soft_bow forward, one IDT-size bag (the sweeps' base)"),
              ("fwd+bwd", "soft_bow forward + backward, kept assignments, the same bag"),
              ("minibatch fwd+bwd", "soft_bow forward + backward, part (a)'s mini-batch of small bags"),
              ("soft_vlad fwd+bwd", "soft_vlad forward + backward, IDT-size bag, part (a)'s K"),
              ("fisher_vector", "ops.fisher_vector, IDT-size bag, part (a)'s soft_vlad K (64, as part (c))"),
              ("kmeans_step", "one Lloyd iteration of lfagg's K-Means, 100,000 x 108, K = 256 (part (f); quick: less)"))
#: the thread sweep's matmul size n per mode
SWEEP_MATMUL = {"full": 2048, "quick": 1024}
#: the Lloyd iteration's sample size and K per mode
KMEANS_STEP = {"full": (100_000, 108, 256), "quick": (10_000, 108, 64)}


def matmul_timer(n, dtype):
    """A callable computing numpy's ``a @ b`` for two n x n matrices of ``dtype`` (2 n^3 flops)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    return lambda: np.matmul(a, b, out=out)


def forward_timer(problem, ops, n_threads, backward=False):
    """A callable running lfagg's forward of ``problem.encoder`` (and, with ``backward``,
    its backward with the assignments kept in a buffer reused across calls, as in
    training) on ``problem``."""
    impl = LfaggImpl(ops, n_threads, problem.encoder, problem.features, problem.offsets, problem.centers,
                     problem.precisions, problem.gamma)
    return (lambda: impl.forward_backward(problem.grad_output)) if backward else impl.forward


def forward_gflop(n, k, d):
    """GEMM flops of the soft BoW forward, 4 N K D, in GFLOP."""
    return 4 * n * k * d / 1e9


def run_peak(args, ops):
    """Part (b). ``args`` needs ``quick``, ``threads``, ``repeats``. Returns a dict."""
    size, (n, k, d) = PEAK["quick" if args.quick else "full"]
    rows = []
    print(f"numpy matmul {size} x {size} vs lfagg soft_bow forward, 1 bag x {n} x {d}, K={k}, "
          f"{args.threads} thread(s); forward flops 4 N K D")
    print(f"{'dtype':<8} {'matmul GFLOP/s':>15} {'forward ms':>11} {'forward GFLOP/s':>16} {'fraction':>9}")
    for dtype in ("float32", "float64"):
        problem = make_problem("soft_bow", [n], d, k, dtype)
        with _common.blas_threads(args.threads)[0]:  # matmul and forward in turn: the same load for both
            timed = _common.time_interleaved({"matmul": matmul_timer(size, dtype),
                                              "forward": forward_timer(problem, ops, args.threads)}, args.repeats)
        (peak_ms, peak_runs), (ms, runs) = timed["matmul"], timed["forward"]
        peak = 2 * size ** 3 / (peak_ms * 1e-3) / 1e9
        gflops = forward_gflop(n, k, d) / (ms * 1e-3)
        rows.append(dict(dtype=dtype, matmul_size=size, matmul_ms=peak_ms, matmul_runs_ms=peak_runs,
                         matmul_gflops=peak, n_features=n, n_codewords=k, n_dims=d, forward_ms=ms,
                         forward_runs_ms=runs, forward_gflops=gflops, fraction_of_peak=gflops / peak))
        print(f"{dtype:<8} {peak:15.1f} {ms:11.2f} {gflops:16.1f} {gflops / peak:9.2f}", flush=True)
    return dict(rows=rows)


def run_scaling(args, ops):
    """Part (d). ``args`` needs ``quick``, ``threads``, ``repeats``. Returns a dict."""
    sweep = SCALING["quick" if args.quick else "full"]
    base = dict(zip("NKD", sweep["base"]))
    print(f"lfagg soft_bow forward, float32, {args.threads} thread(s), one bag; base N={base['N']}, "
          f"K={base['K']}, D={base['D']}; ns/NKD = time / (N K D), flat when linear")
    print(f"{'vary':<5} {'N':>7} {'K':>6} {'D':>5} {'ms':>10} {'ns/NKD':>9} {'GFLOP/s':>9}")
    sizes = []
    for dim in "NKD":
        for value in sweep[dim]:
            n, k, d = (dict(base, **{dim: value})[key] for key in "NKD")
            problem = make_problem("soft_bow", [n], d, k, np.float32)
            ms, runs = _common.time_ms(forward_timer(problem, ops, args.threads), args.repeats)
            per_nkd = ms * 1e6 / (n * k * d)
            sizes.append(dict(vary=dim, n_features=n, n_codewords=k, n_dims=d, ms=ms, runs_ms=runs,
                              ns_per_nkd=per_nkd, gflops=forward_gflop(n, k, d) / (ms * 1e-3)))
            print(f"{dim:<5} {n:7d} {k:6d} {d:5d} {ms:10.2f} {per_nkd:9.4f} {sizes[-1]['gflops']:9.1f}", flush=True)
    linearity = {}
    for dim in "NKD":
        per = [row["ns_per_nkd"] for row in sizes if row["vary"] == dim]
        linearity[dim] = max(per) / min(per)
    print("max/min of ns/NKD (1 = perfectly linear): "
          + ", ".join(f"{dim} {value:.2f}" for dim, value in linearity.items()))

    n, k, d = sweep["base"]
    counts = thread_counts(os.cpu_count() or 1)
    print(f"threads {', '.join(map(str, counts))}, float32; efficiency = t1 / (p tp); operations:")
    for op, what in THREAD_OPS:
        print(f"  {op:<18} {what}")
    print(f"{'op':<18} {'threads':>7} {'ms':>10} {'speed-up':>9} {'efficiency':>11}")
    threads = []
    for op, make_timer in thread_timers(args.quick, ops, sweep["base"]).items():
        timed = _common.time_interleaved({p: make_timer(p) for p in counts}, args.repeats)
        t1 = timed[1][0]
        for p, (ms, runs) in timed.items():
            threads.append(dict(op=op, threads=p, ms=ms, runs_ms=runs, speedup=t1 / ms, efficiency=t1 / (p * ms)))
            print(f"{op:<18} {p:7d} {ms:10.2f} {t1 / ms:9.2f} {t1 / (p * ms):11.2f}", flush=True)
    return dict(sizes=sizes, ns_per_nkd_max_over_min=linearity, threads=threads,
                base=dict(n_features=n, n_codewords=k, n_dims=d))


def thread_counts(max_threads):
    """The thread counts of the sweep: 1, 2, 4, ... below ``max_threads``, then ``max_threads``."""
    counts = [1]
    while counts[-1] * 2 < max_threads:
        counts.append(counts[-1] * 2)
    return sorted({*counts, max_threads})


def thread_timers(quick, ops, base):
    """{THREAD_OPS name: function of the thread count returning a timed callable}, float32;
    ``base`` is the sweeps' (N, K, D) of one bag."""
    import lfagg._native  # the core itself for the Lloyd iteration, as lfagg's K-Means calls it

    n, k, d = base
    cases, codewords = (QUICK_CASES, QUICK_CODEWORDS) if quick else (CASES, N_CODEWORDS)
    bag = make_problem("soft_bow", [n], d, k, np.float32)
    n_bags, per_bag, batch_d = cases["minibatch"]
    batch = make_problem("soft_bow", [per_bag] * n_bags, batch_d, codewords["soft_bow"], np.float32)
    vlad = make_problem("soft_vlad", [n], d, codewords["soft_vlad"], np.float32)
    fv_args = (vlad.features, vlad.offsets, vlad.centers, 1 / vlad.precisions,
               np.full(len(vlad.centers), 1 / len(vlad.centers), np.float32))
    n_sample, kmeans_d, kmeans_k = KMEANS_STEP["quick" if quick else "full"]
    sample = make_problem("soft_bow", [n_sample], kmeans_d, kmeans_k, np.float32)
    kmeans_step = lfagg._native.core.kmeans_step
    matmul = matmul_timer(SWEEP_MATMUL["quick" if quick else "full"], np.float32)

    def limited_matmul(p):
        def run():
            with _common.blas_threads(p)[0]:
                matmul()
        return run
    return {"matmul": limited_matmul,
            "fwd": lambda p: forward_timer(bag, ops, p),
            "fwd+bwd": lambda p: forward_timer(bag, ops, p, backward=True),
            "minibatch fwd+bwd": lambda p: forward_timer(batch, ops, p, backward=True),
            "soft_vlad fwd+bwd": lambda p: forward_timer(vlad, ops, p, backward=True),
            "fisher_vector": lambda p: lambda: ops.fisher_vector(*fv_args, n_threads=p),
            "kmeans_step": lambda p: lambda: kmeans_step(sample.features, sample.centers, n_threads=p)}


if __name__ == "__main__":
    sys.exit(_common.run_parts_main("scaling", __doc__.split("\n\n")[0], {"b": run_peak, "d": run_scaling}))
