"""Bags larger than memory: LearnedBoW fitted and applied from a BagStore on disk, its peak
memory, and the overhead of the store and of Dask against in-memory work.

Not part of ``run_suite.py`` (it writes gigabytes to disk); run it alone::

    python benchmarks/bench_store.py --dir /tmp/lfagg-bench   # full: 424 bags x 22,000 x 108 float32 (4.0 GB)
    python benchmarks/bench_store.py --quick                 # 40 bags x 2,000 x 108, a smoke test

Steps, each timed; the memory ones in a fresh process (peak RSS, VmHWM):

1. build: an IDT-shaped store written block by block (never whole in memory): bags of
   22,000 standard normal 108-d features, half of them of class 1, whose bags hold 3% of
   features from a shifted cluster (a difference a soft BoW can learn);
2. fit (fresh process): ``LearnedBoW(64, n_epochs=3)`` from the store, peak RSS (target:
   under 1 GB), then the transform of the whole store and its training accuracy;
3. equality on a subset that fits in memory (the first 40 bags, half of them with --quick): the same fit from the
   store's subset and from those bags in memory; their test predictions must agree;
4. overhead on that subset: ``model.transform`` of the store's subset against the same
   bags in memory (target: within 1.25x), and ``lfagg.dask.transform`` on a
   ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)`` against the in-process
   transform of the store (target: within 1.3x at 2 cores), medians of ``--repeats``;
5. the same Dask comparison on the whole store (tens of tasks, where the subset makes six:
   Dask's scheduler hands each one-thread worker a second task before it needs it, so
   with few tasks one worker often runs four of six).
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

try:
    from . import _common, bench_memory
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common
    import bench_memory

FULL = dict(n_bags=424, n_per_bag=22_000, dim=108)
QUICK = dict(n_bags=40, n_per_bag=2_000, dim=108)
SUBSET = 40
MODEL = dict(n_codewords=64, n_epochs=3, random_state=0)


def synthetic_bag(rng, label, n_per_bag, dim, shift):
    features = rng.standard_normal((n_per_bag, dim), dtype=np.float32)
    if label:
        n = int(0.03 * n_per_bag)
        features[:n] = rng.standard_normal((n, dim), dtype=np.float32) * 0.5 + shift
    return features


def build(path, n_bags, n_per_bag, dim, seed=0):
    import lfagg

    rng = np.random.default_rng(seed)
    shift = rng.standard_normal(dim).astype(np.float32)
    labels = np.arange(n_bags) % 2
    store = lfagg.BagStore.create(path, dim=dim, overwrite=True)
    per_append = max(1, (64 << 20) // (n_per_bag * dim * 4))
    for start in range(0, n_bags, per_append):
        end = min(n_bags, start + per_append)
        store.append([synthetic_bag(rng, labels[b], n_per_bag, dim, shift) for b in range(start, end)],
                     labels=labels[start:end])
    return store


def child_fit(path, threads):
    """In a fresh process: fit from the store, transform it; prints JSON."""
    import lfagg

    store = lfagg.BagStore.open(path)
    start = time.perf_counter()
    model = lfagg.LearnedBoW(**MODEL, n_threads=threads, verbose=0).fit(store, store.labels)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = float(np.mean(model.predict(store) == store.labels))
    predict_s = time.perf_counter() - start
    print(json.dumps(dict(fit_s=fit_s, predict_s=predict_s, train_accuracy=accuracy,
                          peak_rss_mib=bench_memory._peak_kib() / 1024, timings=model.timings_)))


def equality_and_overhead(path, threads, repeats, quick):
    import distributed

    import lfagg
    import lfagg.dask

    store = lfagg.BagStore.open(path)
    subset = store.subset(np.arange(min(SUBSET, len(store) // 2)))
    in_memory = subset[:]
    labels = subset.labels
    from_store = lfagg.LearnedBoW(**MODEL, n_threads=threads).fit(subset, labels)
    from_memory = lfagg.LearnedBoW(**MODEL, n_threads=threads).fit(in_memory, labels)
    test = store.subset(np.arange(len(subset), min(len(store), 2 * len(subset))))
    agree = float(np.mean(from_store.predict(test) == from_memory.predict(test)))
    max_diff = float(np.abs(from_store.predict_proba(in_memory) - from_memory.predict_proba(in_memory)).max())
    model = from_memory
    times = _common.time_interleaved({"store": lambda: model.transform(subset),
                                      "memory": lambda: model.transform(in_memory)}, repeats)
    on_workers = copy.deepcopy(model).set_params(n_threads=1)  # one thread in each of the two workers
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        dask_times = _common.time_interleaved(
            {"dask": lambda: client.compute(lfagg.dask.transform(on_workers, subset)).result(),
             "in-process": lambda: model.transform(subset)}, repeats)
        whole = _common.time_interleaved(
            {"dask": lambda: client.compute(lfagg.dask.transform(on_workers, store)).result(),
             "in-process": lambda: model.transform(store)}, repeats)
    return dict(n_subset=len(subset), agree=agree, max_proba_diff=max_diff, store_ms=times["store"][0],
                memory_ms=times["memory"][0],
                store_over_memory=times["store"][0] / times["memory"][0], dask_ms=dask_times["dask"][0],
                in_process_ms=dask_times["in-process"][0],
                dask_over_in_process=dask_times["dask"][0] / dask_times["in-process"][0],
                n_tasks_subset=len(subset.block_bounds(subset.block_features())),
                n_tasks_whole=len(store.block_bounds(store.block_features())), whole_dask_ms=whole["dask"][0],
                whole_in_process_ms=whole["in-process"][0],
                whole_dask_over_in_process=whole["dask"][0] / whole["in-process"][0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/lfagg-bench-store", help="where the store is written")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    _common.add_run_options(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = _common.check_run_options(parser, parser.parse_args(argv))
    if args.child:
        return child_fit(args.child, args.threads)
    sizes = QUICK if args.quick else FULL
    path = os.path.join(args.dir, "idt.zarr")
    os.makedirs(args.dir, exist_ok=True)
    machine = _common.machine_info(args.threads)
    print(_common.describe_machine(machine))
    start = time.perf_counter()
    store = build(path, **sizes)
    build_s = time.perf_counter() - start
    gb = store.n_features * store.dim * 4 / 1e9
    print(f"build: {len(store)} bags x {sizes['n_per_bag']:,} x {sizes['dim']} float32 = {gb:.2f} GB in "
          f"{build_s:.1f} s", flush=True)
    out = subprocess.run([sys.executable, __file__, "--child", path, "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True)
    fit = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"fit from the store (fresh process): {fit['fit_s']:.1f} s, predict {fit['predict_s']:.1f} s, training "
          f"accuracy {fit['train_accuracy']:.3f}, peak RSS {fit['peak_rss_mib']:.0f} MiB "
          f"({'met' if fit['peak_rss_mib'] < 1024 else 'missed'}: < 1 GB); phases "
          + ", ".join(f"{k} {v:.1f} s" for k, v in fit["timings"].items()), flush=True)
    overhead = equality_and_overhead(path, args.threads, args.repeats, args.quick)
    print(f"subset of {overhead['n_subset']} bags: fit from the store vs in memory: test predictions agree on "
          f"{overhead['agree']:.1%}, max |proba difference| {overhead['max_proba_diff']:.2e}")
    print(f"transform: store {overhead['store_ms']:.0f} ms vs memory {overhead['memory_ms']:.0f} ms = "
          f"{overhead['store_over_memory']:.2f}x ({'met' if overhead['store_over_memory'] <= 1.25 else 'missed'}: "
          f"<= 1.25x); Dask LocalCluster (2 workers) {overhead['dask_ms']:.0f} ms vs in-process "
          f"{overhead['in_process_ms']:.0f} ms = {overhead['dask_over_in_process']:.2f}x "
          f"({'met' if overhead['dask_over_in_process'] <= 1.3 else 'missed'}: <= 1.3x; "
          f"{overhead['n_tasks_subset']} tasks)")
    print(f"the whole store, {overhead['n_tasks_whole']} tasks: Dask LocalCluster (2 workers) "
          f"{overhead['whole_dask_ms']:.0f} ms vs in-process {overhead['whole_in_process_ms']:.0f} ms = "
          f"{overhead['whole_dask_over_in_process']:.2f}x "
          f"({'met' if overhead['whole_dask_over_in_process'] <= 1.3 else 'missed'}: <= 1.3x)")
    result = _common.write_json("store", dict(config=vars(args), machine=machine, sizes=sizes, gb=gb,
                                              build_s=build_s, fit=fit, overhead=overhead))
    print(f"results written to {result}")
    if not args.keep:
        shutil.rmtree(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
