"""Peak memory of encoding one bag with lfagg, beyond its inputs and outputs.

Part (e) of the benchmark suite (``run_suite.py --parts e``; run alone,
``python benchmarks/bench_memory.py [--threads N]`` writes
``benchmarks/results/memory-<timestamp>.json``). Every measurement runs in a fresh Python
process (``python bench_memory.py --child ...``) that

1. imports lfagg and creates the inputs: one bag of N = 22,000 x D = 108 standard normal
   float32 features (created in float32, no float64 temporary), K = 2048 centres
   sampled from them, unit precisions, gamma = 1 / median distance;
2. runs the operation once on the bag's first 64 features (OpenMP starts its threads);
3. resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``) and reads the
   resident set size, RSS0;
4. runs the operation on the whole bag and reads the peak resident set size, HWM
   (``VmHWM`` of /proc/self/status);

and reports HWM - RSS0 - (bytes of the operation's outputs), the memory the operation
needed beyond its inputs (already resident) and outputs, next to the N x K matrix of soft
assignments it must not hold (N K 4 bytes = 172 MiB). Without /proc (not Linux) the
peak comes from ``resource.getrusage`` and cannot be reset, so step 1's temporaries may
hide a smaller peak.

Operations: the soft BoW forward (the suite's target), the soft VLAD forward, the soft
BoW backward called alone (so recomputing the assignments; grad_output = 1/K), and, as
a control that the method sees an N x K matrix, the soft BoW forward with
``return_assignments=True`` (its output is that matrix; here it is not subtracted).
"""

import json
import os
import subprocess
import sys

import numpy as np

try:
    from . import _common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common

#: (N, K, D), the same with --quick: one measurement takes about a second
SIZE = (22_000, 2048, 108)
OPERATIONS = {
    "soft_bow fwd": "the forward pass",
    "soft_vlad fwd": "the forward pass",
    "soft_bow bwd (recompute)": "the backward pass, recomputing the assignments",
    "soft_bow fwd, return_assignments (control)": "returns the N x K assignments: must show them",
}
TARGET_BYTES = 32_000_000  # the 32 MB
WARMUP_FEATURES = 64
MiB = 1 << 20


def _proc_status_kib(field):
    """A ``kB`` field of /proc/self/status in KiB, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak():
    """Reset the peak RSS counter to the current RSS; False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _peak_kib():
    """Peak RSS of this process in KiB: VmHWM, else ru_maxrss."""
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def child(operation, n, k, d, n_threads):
    """Run one measurement in this (fresh) process; return the result dict."""
    import gc

    import lfagg.ops as ops

    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, d), dtype=np.float32)
    centers = features[rng.choice(n, k, replace=False)].copy()
    precisions = np.ones((k, d), np.float32)
    sample, c64 = features[:500].astype(np.float64), centers.astype(np.float64)
    dist = (sample ** 2).sum(1)[:, None] - 2 * sample @ c64.T + (c64 ** 2).sum(1)
    gamma = 10.0 / float(np.median(dist))  # as bench_encoders: gamma times the median distance = 10
    encoder = operation.split()[0]
    forward, backward = getattr(ops, encoder), getattr(ops, encoder + "_backward")
    kept = "return_assignments" in operation
    grad_output = np.ones((1, k if encoder == "soft_bow" else k * d), np.float32) / k

    def run(f):
        offsets = np.array([0, len(f)], np.int64)
        if "bwd" in operation:
            return backward(f, offsets, centers, precisions, gamma, grad_output, n_threads=n_threads)
        return forward(f, offsets, centers, precisions, gamma, n_threads=n_threads, return_assignments=kept)

    run(features[:WARMUP_FEATURES])
    del sample, c64, dist
    gc.collect()
    reset = _reset_peak()
    rss0 = _proc_status_kib("VmRSS")
    peak0 = _peak_kib()
    out = run(features)
    peak1 = _peak_kib()
    outputs = out if isinstance(out, tuple) else (out,)
    output_bytes = sum(o.nbytes for o in outputs if isinstance(o, np.ndarray))
    if kept:
        output_bytes = 0  # the control: the assignments (an output) are what it must show
    base_kib = rss0 if reset and rss0 is not None else peak0
    beyond = max(peak1 - base_kib, 0) * 1024 - output_bytes
    return dict(operation=operation, n_features=n, n_codewords=k, n_dims=d, n_threads=n_threads,
                peak_reset=reset, rss_before_kib=rss0, peak_before_kib=peak0, peak_after_kib=peak1,
                output_bytes=output_bytes, beyond_inputs_outputs_bytes=beyond,
                nk_matrix_bytes=n * k * features.itemsize, input_bytes=features.nbytes + centers.nbytes * 2)


def measure(operation, n, k, d, n_threads):
    """Run :func:`child` in a fresh interpreter that imports the same lfagg; return its dict."""
    import lfagg

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(lfagg.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, os.path.abspath(__file__), "--child", operation, str(n), str(k), str(d),
               str(n_threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {operation!r} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(args, ops=None):
    """Part (e). ``args`` needs ``threads``; the sizes do not change with ``quick``. Returns a dict."""
    n, k, d = SIZE
    nk_mib = n * k * 4 / MiB
    print(f"one bag of {n} x {d} float32, K={k}, {args.threads} thread(s), each in a fresh process; "
          f"beyond = peak RSS - RSS before - outputs; the N x K float32 matrix is {nk_mib:.0f} MiB")
    print(f"{'operation':<44} {'beyond MiB':>11} {'/ N x K':>8}")
    rows = []
    for operation in OPERATIONS:
        row = measure(operation, n, k, d, args.threads)
        rows.append(row)
        beyond = row["beyond_inputs_outputs_bytes"] / MiB
        print(f"{operation:<44} {beyond:11.2f} {beyond / nk_mib:8.3f}"
              + ("" if row["peak_reset"] else "  (peak not resettable: upper bound hidden by set-up)"), flush=True)
    return dict(rows=rows, nk_matrix_mib=nk_mib, target_bytes=TARGET_BYTES)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        operation, n, k, d, n_threads = sys.argv[2], *map(int, sys.argv[3:7])
        print(json.dumps(child(operation, n, k, d, n_threads)))
        sys.exit(0)
    sys.exit(_common.run_parts_main("memory", __doc__.split("\n\n")[0], {"e": run_memory}, repeats=False))
