"""Helpers shared by the benchmark scripts: timing, optional peers, thread limits,
machine information, the JSON results files and the command line of the suite's parts.

Every script of ``benchmarks/`` times with :func:`time_ms` (warm-up, then the median of
the repeats), records :func:`machine_info` and the load average before and after its run
(the machines are shared: a high load average makes the figures noisy) and writes its
results with :func:`write_json` under ``benchmarks/results/`` (git-ignored). The scripts
that hold parts of ``run_suite.py`` run them alone through :func:`run_parts_main`, so
that none of them imports the suite.
"""

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VERSIONED_PACKAGES = ("lfagg", "numpy", "scipy", "scikit-learn", "torch", "cyvlfeat", "scikit-image", "threadpoolctl")


def time_ms(fn, repeats, warmup=1):
    """``warmup`` untimed calls, then ``repeats`` timed calls; return (median ms, all ms)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1e3)
    return statistics.median(runs), runs


#: Pause before each timed call of time_interleaved: OpenBLAS's worker threads keep
#: spinning for about 2^28 cycles (~0.1 s) after a call, which would take cores away from
#: whichever implementation runs next (numpy's matmul made lfagg's forward look 40%
#: slower in turn with it than alone).
SETTLE_S = 0.15

#: Untimed calls between the pause and the timed call: at least STEADY_CALLS of them, and
#: for at least STEADY_S seconds. After an idle pause the first calls of every
#: implementation ran up to 1.8x slower than the calls that follow them (sleeping OpenMP
#: workers and idle cores waking up: lfagg soft_vlad at the idt size 18.6, 22.0, then 15.3
#: ms; torch 35.6, 27.3, then 22.8 ms), and a count alone did not reach the steady state of
#: short calls: lfagg's 4.5 ms soft_vlad forward (idt) still took 8.1 ms after two calls,
#: 8.0 after three (20 ms busy), 4.6 after 50 ms busy. The timed call is in the steady
#: state of a training loop, which calls the encoder back to back.
STEADY_CALLS = 2
STEADY_S = 0.1


def time_interleaved(fns, repeats, warmup=1, settle=SETTLE_S, steady_calls=STEADY_CALLS, steady_s=STEADY_S):
    """Time several callables round-robin: ``warmup`` untimed calls of each, then
    ``repeats`` rounds timing each once, so that a change of the machine's load during
    the measurement affects them all alike. In a round, each callable gets a
    ``settle``-second pause (see SETTLE_S), untimed calls for at least ``steady_s``
    seconds and at least ``steady_calls`` of them (see STEADY_CALLS), then the timed one.
    ``fns``: {name: callable}; returns {name: (median ms, all ms)}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(settle)
            busy_since, calls = time.perf_counter(), 0
            while calls < steady_calls or time.perf_counter() - busy_since < steady_s:
                fn()
                calls += 1
            start = time.perf_counter()
            fn()
            runs[name].append((time.perf_counter() - start) * 1e3)
    return {name: (statistics.median(values), values) for name, values in runs.items()}


def load_average():
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    with contextlib.suppress(OSError, AttributeError):
        return list(os.getloadavg())
    return None


def load1():
    """The 1-minute load average, NaN where the OS has none."""
    load = load_average()
    return load[0] if load else float("nan")


#: a load average above this fraction of the cores before a run gets a warning
BUSY_LOAD = 0.5


def busy_note():
    """A warning when the load average shows other processes competing for the cores, else None."""
    busy, cores = load1(), os.cpu_count() or 1
    if busy < BUSY_LOAD * cores:
        return None
    return (f"load average {busy:.2f} before the run on {cores} cores: other processes compete for the cores "
            "and the timings (of multithreaded code above all: a thread descheduled at a barrier stalls the "
            "others) are unreliable")


def load_lfagg():
    """Return (lfagg.ops or None, a note saying why it is missing)."""
    try:
        import lfagg.ops
    except ImportError as exc:
        return None, f"lfagg not importable ({exc}); its columns are left empty"
    return lfagg.ops, None


def load_torch(disabled=False, n_threads=None):
    """Return (torch or None, a note saying why it is skipped); sets torch's intra-op
    thread count to ``n_threads`` when given."""
    if disabled:
        return None, "torch skipped (--no-torch)"
    try:
        import torch
    except ImportError as exc:
        return None, f"torch not importable ({exc}); skipped (pip install torch)"
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    return torch, None


def load_implementations(no_torch, n_threads):
    """lfagg.ops and torch (either None when absent), the BLAS thread limit and the notes
    saying what is missing: (ops, torch, blas_limit, notes)."""
    ops, lfagg_note = load_lfagg()
    torch, torch_note = load_torch(no_torch, n_threads)
    blas_limit, blas_note = blas_threads(n_threads)
    return ops, torch, blas_limit, [note for note in (lfagg_note, torch_note, blas_note) if note]


def blas_threads(n_threads):
    """Return (context manager limiting numpy's BLAS to ``n_threads`` while it is entered
    (once), a note)."""
    if threadpool_limits is None:
        return contextlib.nullcontext(), "threadpoolctl not installed: numpy's BLAS threads are not limited"

    @contextlib.contextmanager
    def limit():
        with threadpool_limits(limits=n_threads, user_api="blas"):
            yield

    return limit(), f"BLAS limited to {n_threads} thread(s) with threadpoolctl"


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


def lfagg_build():
    """(instruction set of the compiled core in use, the imported package's directory), or Nones."""
    try:
        import lfagg.ops
    except ImportError:
        return None, None
    return lfagg.ops.isa, str(Path(lfagg.__file__).parent)


def package_versions(packages=VERSIONED_PACKAGES):
    """{distribution: installed version or None}."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    # The lfagg imported, which a source tree on PYTHONPATH puts before an installed one:
    # its own version, and the commit of the tree it was imported from.
    with contextlib.suppress(ImportError):
        import lfagg

        versions["lfagg"] = lfagg.__version__
        commit = source_commit(Path(lfagg.__file__).parent)
        if commit:
            versions["lfagg"] += f" at {commit}"
    return versions


def source_commit(directory):
    """The git commit of the work tree that tracks ``directory``'s __init__.py ("-dirty" when
    the tree has changes), or None (not in a work tree, or an installed copy inside one)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git("ls-files", "--error-unmatch", "__init__.py")
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    return None


def machine_info(n_threads, torch=None):
    """Platform, CPU, library versions and the load average, recorded with the results."""
    isa, package_dir = lfagg_build()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "n_threads": n_threads,
        "numpy_blas": numpy_blas(),
        "versions": package_versions(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "lfagg_isa": isa,
        "lfagg_dir": package_dir,
        "threadpoolctl": threadpool_info() if threadpool_info is not None else None,
        # lfagg sets OMP_WAIT_POLICY=PASSIVE unless set, before torch's OpenMP starts too
        "environment": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "LFAGG_ISA")},
        "load_average": load_average(),
    }


def describe_machine(machine):
    """One line for the console: CPU, threads, libraries, load average."""
    versions = machine["versions"]
    load = machine["load_average"]
    load_text = f"load average {load[0]:.2f}" if load else "load average unknown"
    return (f"threads {machine['n_threads']}; cpu {machine['cpu_model']} ({machine['cpu_count']} cores); "
            f"numpy {versions['numpy']} ({machine['numpy_blas']}); torch {versions['torch']}; "
            f"lfagg {versions['lfagg']} (isa {machine['lfagg_isa']}); {load_text}")


def timestamp():
    """Local time as YYYYmmdd-HHMMSS, for file names."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def write_json(prefix, payload):
    """Write ``payload`` to ``benchmarks/results/<prefix>-<timestamp>.json``; return the path.

    The load average at the end of the run is added to ``payload["machine"]``.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = timestamp()
    path = RESULTS_DIR / f"{prefix}-{stamp}.json"
    payload = dict(payload, created=stamp)
    if isinstance(payload.get("machine"), dict):
        payload["machine"] = dict(payload["machine"], load_average_end=load_average())
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    """numpy scalars and arrays, Paths, sets: as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, set, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def comma_list(choices):
    """argparse type: a comma-separated subset of ``choices``, order kept."""
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {text!r}")
        return items
    return parse


def format_ms(value):
    """Milliseconds for a table; '-' when not measured."""
    return f"{value:.1f}" if value is not None else "-"


def format_ratio(value):
    """A ratio for a table; '-' when undefined."""
    return f"{value:.2f}" if value is not None else "-"


def ratio(numerator, denominator):
    """numerator / denominator, None when either is missing."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


# -- command line of the suite's parts -------------------------------------------------
def add_run_options(parser, repeats=True):
    """The options the parts of the suite read: --quick, --threads and, for parts that
    time repeated calls, --repeats."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for lfagg, torch, numpy's BLAS and the peers (default: all cores, %(default)s)")
    if repeats:
        parser.add_argument("--repeats", type=int, default=None,
                            help="timed calls per measurement (default: 5, 3 with --quick)")


def check_run_options(parser, args):
    """Fill in --repeats' default and reject non-positive counts (through ``parser``)."""
    if "repeats" in args and args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.threads < 1 or getattr(args, "repeats", 1) < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def run_parts_main(prefix, description, parts, repeats=True, argv=None):
    """Entry point of a script run alone on parts of the suite: parse the suite's options
    (``repeats``: whether the parts time repeated calls), run ``parts`` ({letter: fn(args,
    ops)}, each printing its table) in order as ``run_suite.py --parts`` would, and write
    ``benchmarks/results/<prefix>-<timestamp>.json`` shaped like the suite's (config,
    machine, notes, parts). Returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    add_run_options(parser, repeats)
    args = check_run_options(parser, parser.parse_args(argv))
    ops, lfagg_note = load_lfagg()
    if ops is None:
        parser.error(lfagg_note)
    blas_limit, blas_note = blas_threads(args.threads)
    machine = machine_info(args.threads)
    print(describe_machine(machine) + (f"; median of {args.repeats} after a warm-up" if repeats else ""))
    notes = [note for note in (blas_note, busy_note()) if note]
    for note in notes:
        print("note:", note)
    results = {}
    with blas_limit:
        for part, fn in parts.items():
            results[part] = fn(args, ops)
    path = write_json(prefix, dict(config=vars(args), machine=machine, notes=notes, parts=results))
    print(f"results written to {path}")
    return 0
