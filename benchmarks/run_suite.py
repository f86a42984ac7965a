"""The lfagg benchmark suite: every part in one process, a summary of ratios, the targets.

Parts (``--parts``, default all; each also runs alone as its script, which imports
``_common`` but not this module):

  a  soft_bow / soft_vlad forward, fwd+bwd and fwd+bwd (recompute) against numpy and
     PyTorch autograd, float32 and float64, at the idt, minibatch and conv sizes
     (bench_encoders.py)
  b  numpy matmul peak (GFLOP/s) and the fraction of it lfagg's soft BoW forward
     reaches at K = 1024, counting 4 N K D flops (bench_scaling.py)
  c  Fisher Vector and VLAD against VLFeat (cyvlfeat) and scikit-image (bench_baselines.py)
  d  soft BoW forward time against N, K, D and the thread count (bench_scaling.py)
  e  peak memory of encoding one 22,000 x 108 bag with K = 2048, beyond inputs and
     outputs, each in a fresh process (bench_memory.py)
  f  end-to-end LearnedBoW fit, 400 bags x 2,000 x 108, K = 256, 5 epochs, and where
     its time goes, from the estimator's timings_ hook (bench_training.py)
  g  lfagg.torch's layers, forward + backward with dJ/dF, against lfagg.ops, torch
     autograd and a padded NetVLAD-style layer; peak memory at K = 1024
     (bench_torch_layer.py)

Every timing is a warm-up call, then the median of ``--repeats`` calls; ratios are peer
time / lfagg time (> 1: lfagg is faster), measured in this one process on the same data,
the implementations of a measurement called in turn. lfagg, torch and numpy's BLAS use
``--threads`` threads (default: all cores). Optional peers (torch, cyvlfeat,
scikit-image) are skipped with a note when absent. Each part prints its own table as it
runs; at the end come a summary table of ratios and the targets of the performance issue
(met / missed, with the measured figure; float32). Everything, with the machine's
description and the load average before and after, goes to
``benchmarks/results/suite-<timestamp>.json``.

``--quick`` shrinks every size (about a minute on two cores): a smoke test, whose
figures do not measure the targets.

Usage::

    python benchmarks/run_suite.py                  # everything, full sizes
    python benchmarks/run_suite.py --quick          # smoke test
    python benchmarks/run_suite.py --parts a,b --threads 1
"""

import argparse
import os
import sys
import time
import traceback

try:
    from . import (_common, bench_baselines, bench_encoders, bench_memory, bench_scaling, bench_torch_layer,
                   bench_training)
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common
    import bench_baselines
    import bench_encoders
    import bench_memory
    import bench_scaling
    import bench_torch_layer
    import bench_training


def run_encoders(args, ops, torch):
    """Part (a): bench_encoders' benchmark, both dtypes, all cases."""
    if ops is None:
        raise RuntimeError("lfagg is not importable")
    options = ["--dtype", "both", "--threads", str(args.threads), "--repeats", str(args.repeats)]
    encoder_args = bench_encoders.parse_args(options + ["--quick"] * args.quick + ["--no-torch"] * args.no_torch)
    return dict(rows=bench_encoders.run_benchmark(encoder_args, ops, torch),
                cases=bench_encoders.QUICK_CASES if args.quick else bench_encoders.CASES,
                codewords=bench_encoders.QUICK_CODEWORDS if args.quick else bench_encoders.N_CODEWORDS)


def run_baselines(args, ops, torch):
    """Part (c): bench_baselines' measurements."""
    sizes, errors, rows = bench_baselines.run(args)
    return dict(sizes=sizes, float32_errors=errors, rows=rows)


def run_peak(args, ops, torch):
    return bench_scaling.run_peak(args, ops)


def run_scaling(args, ops, torch):
    return bench_scaling.run_scaling(args, ops)


def run_memory(args, ops, torch):
    return bench_memory.run_memory(args)


def run_training(args, ops, torch):
    return bench_training.run_training(args)


class PartSkipped(Exception):
    """A part that cannot run here (a peer it needs is off or missing): noted, not a failure."""


def run_torch_layer(args, ops, torch):
    if torch is None:  # --no-torch asked for that (it failed the whole run, rc 1)
        raise PartSkipped("part g compares lfagg.torch's layers with torch: torch is off (--no-torch) or missing")
    return bench_torch_layer.run(args, ops)

PARTS = {
    "a": ("soft encoders vs numpy and torch autograd", run_encoders),
    "b": ("matmul peak and the forward's fraction of it", run_peak),
    "c": ("Fisher Vector and VLAD vs VLFeat and scikit-image", run_baselines),
    "d": ("scaling in N, K, D and threads", run_scaling),
    "e": ("peak memory beyond inputs and outputs", run_memory),
    "f": ("end-to-end LearnedBoW fit", run_training),
    "g": ("lfagg.torch layers vs lfagg.ops, torch autograd, a padded layer", run_torch_layer),
}


# -- summary ---------------------------------------------------------------------------
def summary_lines(results):
    """The summary table: ratios and key figures of every part that ran."""
    lines = []
    if "a" in results:
        lines.append("(a) peer time / lfagg time (> 1: lfagg faster)")
        header = f"    {'case':<10} {'encoder':<10} {'op':<20}"
        dtypes = ("float32", "float64")
        for dtype in dtypes:
            header += f" {'torch f' + dtype[-2:]:>9} {'numpy f' + dtype[-2:]:>9}"
        lines.append(header)
        table = {}
        for row in results["a"]["rows"]:
            table.setdefault((row["case"], row["encoder"], row["op"]), {})[row["dtype"]] = row["ratio"]
        for (case, encoder, op), by_dtype in table.items():
            line = f"    {case:<10} {encoder:<10} {op:<20}"
            for dtype in dtypes:
                ratio = by_dtype.get(dtype, {})
                line += (f" {_common.format_ratio(ratio.get('torch/lfagg')):>9}"
                         f" {_common.format_ratio(ratio.get('numpy/lfagg')):>9}")
            lines.append(line)
    if "b" in results:
        for row in results["b"]["rows"]:
            lines.append(f"(b) {row['dtype']}: matmul {row['matmul_gflops']:.0f} GFLOP/s; soft_bow forward "
                         f"(N={row['n_features']}, K={row['n_codewords']}) {row['forward_gflops']:.0f} GFLOP/s "
                         f"= {row['fraction_of_peak']:.0%} of it")
    if "c" in results:
        for row in results["c"]["rows"]:
            if row["implementation"] != "lfagg":
                lines.append(f"(c) {row['measurement']:<13} {row['implementation']:<13} / lfagg: {row['ratio']:.2f}")
    if "d" in results:
        linearity = results["d"]["ns_per_nkd_max_over_min"]
        lines.append("(d) time per N K D, max / min over each sweep (1 = linear): "
                     + ", ".join(f"{dim} {value:.2f}" for dim, value in linearity.items()))
        most = max(row["threads"] for row in results["d"]["threads"])
        for row in results["d"]["threads"]:
            if row["threads"] == most > 1:
                lines.append(f"(d) {row['op']:<18} {most} threads: speed-up {row['speedup']:.2f}, "
                             f"parallel efficiency {row['efficiency']:.2f}")
    if "e" in results:
        nk = results["e"]["nk_matrix_mib"]
        for row in results["e"]["rows"]:
            beyond = row["beyond_inputs_outputs_bytes"] / bench_memory.MiB
            lines.append(f"(e) {row['operation']:<44} {beyond:7.1f} MiB beyond inputs/outputs "
                         f"({beyond / nk:.3f} of the N x K matrix)")
    if "f" in results:
        f = results["f"]
        lines.append(f"(f) LearnedBoW fit {f['wall_s']:.1f} s: "
                     + ", ".join(f"{group} {fraction:.0%}" for group, fraction in f["group_fractions"].items()))
        lines += [f"(f) {name} fit {fit['wall_s']:.1f} s: Gaussian mixture {fit['codebook_s'] / fit['wall_s']:.0%}"
                  for name, fit in f["gmm"].items()]
    for row in results.get("g", {}).get("rows", []):
        lines.append(f"(g) {row['case']:<10} {row['encoder']:<10} K={row['k']:<5} layer/ops {row['layer_over_ops']:.2f}"
                     f", torch/layer {row['torch_over_layer']:.2f}, padded/layer "
                     f"{_common.format_ratio(row['padded_over_layer'])}")
    return lines


#: Matrix-product flops of forward + backward per N K D: soft BoW's distances (4) and
#: sums e^T [f'^2, f'] (4); soft VLAD adds sum_n a_nk f'_n (2) and dJ/da = f' G^T (2),
#: f' being the shifted features (see soft_assign.hpp).
FWD_BWD_FLOPS_PER_NKD = {"soft_bow": 8, "soft_vlad": 12}


def ratio_bound(row, peak_part):
    """The largest torch/lfagg ratio a fwd+bwd row of part (a) could show: torch's time
    over that of lfagg's matrix products alone at part (b)'s float32 matmul peak
    (None without both parts or torch)."""
    peak = _find(peak_part["rows"], dtype="float32") if peak_part else None
    if row is None or peak is None or row["ms"].get("torch") is None:
        return None
    nkd = row["n_bags"] * row["features_per_bag"] * row["n_codewords"] * row["n_dims"]
    floor_ms = FWD_BWD_FLOPS_PER_NKD[row["encoder"]] * nkd / (peak["matmul_gflops"] * 1e9) * 1e3
    return row["ms"]["torch"] / floor_ms


def _find(rows, **match):
    return next((row for row in rows if all(row.get(key) == value for key, value in match.items())), None)


def targets(results, errors, cpu_count):
    """The performance issue's targets measured by the parts that ran (or failed):
    list of dicts (target, status, figure, note)."""
    out = []

    def add(name, part, measure, threshold, describe, why_missing=None):
        if part not in results:
            if part in errors:
                out.append(dict(target=name, status="not measured", figure=None, note=f"part ({part}) failed"))
            return  # a part not run: its targets are left out
        value = measure(results[part])
        if value is None:
            out.append(dict(target=name, status="not measured", figure=None, note=why_missing))
            return
        out.append(dict(target=name, status="met" if threshold(value) else "missed", figure=value,
                        note=describe(value)))

    def fwd_bwd_row(case, encoder):
        return _find(results["a"]["rows"], case=case, encoder=encoder, dtype="float32", op="fwd+bwd")

    def encoder_ratio(case, encoder):
        def measure(part):
            row = fwd_bwd_row(case, encoder)
            return row["ratio"]["torch/lfagg"] if row else None
        return measure

    def describe_ratio(case, encoder):
        def describe(value):
            bound = ratio_bound(fwd_bwd_row(case, encoder), results.get("b"))
            return f"torch/lfagg = {value:.2f}x" + (f" (at most {bound:.2f}x at the measured matmul peak)"
                                                      if bound else "")
        return describe

    for case, encoder, goal in (("idt", "soft_bow", 3), ("minibatch", "soft_bow", 5), ("idt", "soft_vlad", 3)):
        add(f"{encoder} fwd+bwd vs torch autograd at {case}: >= {goal}x", "a", encoder_ratio(case, encoder),
            lambda v, goal=goal: v >= goal, describe_ratio(case, encoder), "torch not available")
    add("soft_bow forward at K=1024: >= 50% of the measured matmul peak", "b",
        lambda part: _find(part["rows"], dtype="float32")["fraction_of_peak"], lambda v: v >= 0.5,
        lambda v: f"{v:.0%} of peak")
    add("Fisher Vector (K=64, 22,000 x 108): no slower than vl_fisher", "c",
        lambda part: (_find(part["rows"], measurement="fv", implementation="vlfeat") or {}).get("ratio"),
        lambda v: v >= 1, lambda v: f"vl_fisher / lfagg = {v:.2f}x", "cyvlfeat not installed")
    add("parallel efficiency 1 -> 2 threads: >= 80%", "d",
        lambda part: (_find(part["threads"], op="fwd", threads=2) or {}).get("efficiency"), lambda v: v >= 0.8,
        lambda v: f"soft_bow forward efficiency {v:.0%}", f"only {cpu_count} core(s)")
    add("memory of encoding 22,000 x 108, K=2048: < 32 MB beyond inputs/outputs", "e",
        lambda part: _find(part["rows"], operation="soft_bow fwd")["beyond_inputs_outputs_bytes"],
        lambda v: v < bench_memory.TARGET_BYTES, lambda v: f"{v / 1e6:.1f} MB")
    # the end-to-end speed issue's
    for case, goal in (("conv", 2.5), ("minibatch", 4.5)):
        add(f"soft_bow fwd+bwd vs torch autograd at {case}: >= {goal}x (end-to-end issue)", "a",
            encoder_ratio(case, "soft_bow"), lambda v, goal=goal: v >= goal, describe_ratio(case, "soft_bow"),
            "torch not available")
    add("end-to-end fit (f): codebook at most 25% of it", "f",
        lambda part: part["timings"]["codebook"] / part["wall_s"], lambda v: v <= 0.25,
        lambda v: f"codebook {v:.0%} of the fit")
    for name in bench_training.GMM_FITS:
        add(f"end-to-end fit (f): Gaussian mixture at most 25% of {name}", "f",
            lambda part, name=name: part["gmm"][name]["codebook_s"] / part["gmm"][name]["wall_s"],
            lambda v: v <= 0.25, lambda v: f"mixture {v:.0%} of the fit")
    add("end-to-end fit (f): >= 4x the PyTorch Algorithm 1", "f",
        lambda part: part["torch"]["sklearn"]["wall_s"] / part["wall_s"] if part["torch"] else None,
        lambda v: v >= 4, lambda v: f"{v:.2f}x", "the PyTorch peer did not run (--quick or no torch)")
    add("end-to-end fit (f): >= 3x faster than at 9069df2 (11.3 s)", "f", lambda part: None, None, None,
        "needs 9069df2 built beside this version: RESULTS.md, part (f)")
    goals = bench_torch_layer.TARGETS
    add(f"torch layer within {goals['layer_over_ops']}x of lfagg.ops (every size)", "g",
        lambda part: max(row["layer_over_ops"] for row in part["rows"]), lambda v: v <= goals["layer_over_ops"],
        lambda v: f"worst layer/ops = {v:.2f}x")
    add(f"torch layer >= {goals['torch_over_layer']}x torch autograd at minibatch and idt", "g",
        lambda part: min(row["torch_over_layer"] for row in part["rows"] if row["case"] != "conv"),
        lambda v: v >= goals["torch_over_layer"], lambda v: f"worst torch/layer = {v:.2f}x")
    add(f"torch layer memory at K=1024 < {goals['memory_fraction']} of a padded layer's", "g",
        lambda part: max(row["fraction"] for row in part["memory"]), lambda v: v < goals["memory_fraction"],
        lambda v: f"worst layer/padded = {v:.3f}")
    return out


def target_lines(target_rows, quick):
    lines = ["targets (float32" + ("; --quick sizes: indicative only, not the targets' conditions)" if quick
                                   else ", full sizes)")]
    if not target_rows:
        lines.append("  (none among the parts run)")
    for row in target_rows:
        lines.append(f"  [{row['status']:<12}] {row['target']}: {row['note']}")
    return lines


# -- entry point -----------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="parts: " + "; ".join(f"{key} = {text}" for key, (text, _) in
                                                                  PARTS.items()))
    parser.add_argument("--parts", type=_common.comma_list(tuple(PARTS)), default=list(PARTS),
                        help="comma-separated parts to run (default: all)")
    _common.add_run_options(parser)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    return _common.check_run_options(parser, parser.parse_args(argv))


def main(argv=None):
    """Run the selected parts; return 0, or 1 when a part failed."""
    args = parse_args(argv)
    ops, torch, blas_limit, notes = _common.load_implementations(args.no_torch, args.threads)
    machine = _common.machine_info(args.threads, torch)
    print(f"lfagg benchmark suite, parts {','.join(args.parts)}{' (--quick)' if args.quick else ''}; "
          f"median of {args.repeats} after a warm-up")
    print(_common.describe_machine(machine))
    notes = [note for note in notes + [_common.busy_note()] if note]
    for note in notes:
        print("note:", note)
    results, errors, seconds = {}, {}, {}
    with blas_limit:
        for part in args.parts:
            title, fn = PARTS[part]
            print(f"\n== ({part}) {title}", flush=True)
            start = time.perf_counter()
            try:
                results[part] = fn(args, ops, torch)
            except PartSkipped as exc:
                notes.append(str(exc))
                print(f"part ({part}) skipped: {exc}")
            except Exception as exc:  # report and go on with the other parts
                traceback.print_exc()
                errors[part] = f"{type(exc).__name__}: {exc}"
                print(f"part ({part}) FAILED: {errors[part]}")
            seconds[part] = time.perf_counter() - start
            print(f"({part}) took {seconds[part]:.1f} s; load average {_common.load1():.2f}", flush=True)
    target_rows = targets(results, errors, os.cpu_count())
    lines = summary_lines(results) + [""] + target_lines(target_rows, args.quick)
    print("\n== summary (threads {}; load average before {:.2f}, after {:.2f})".format(
        args.threads, (machine["load_average"] or [float("nan")])[0], _common.load1()))
    print("\n".join(lines))
    payload = dict(config=vars(args), machine=machine, notes=notes, seconds=seconds, errors=errors,
                   targets=target_rows, summary=lines, parts={key: results[key] for key in results})
    path = _common.write_json("suite", payload)
    print(f"\nresults written to {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
