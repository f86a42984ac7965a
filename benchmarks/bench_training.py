"""End-to-end: the wall time of ``lfagg.LearnedBoW.fit`` and where it goes.

Part (f) of the benchmark suite (``run_suite.py --parts f``). A synthetic problem of 400
bags x 2,000 local features x D = 108 (float32, 4 classes; ``--quick``: 64 bags x 500,
K = 64, 2 epochs, K-Means on 5,000 features) is fitted with ``LearnedBoW(n_codewords=256, n_epochs=5)`` (the other
parameters at their defaults: K-Means initialisation, 128 features per bag and 32 bags
per SGD step, chi2 feature map, Adam), after the features are generated.

Features come from 32 Gaussian blobs shared by all classes; each class draws its bags'
blobs with its own weights (a common uniform part plus a class-specific Dirichlet part),
so a bag's class shows in how its features spread over the blobs, as with real
descriptors, and the problem is neither trivial nor degenerate.

The time is split by shims wrapped around the functions that ``fit`` reaches through
module or class attributes (``lfagg.training.ENCODERS``, ``lfagg.learned.initial_codebook``,
``SoftmaxRegression.fit``, ...), each charged its own time exclusive of the other shims
it calls; what no shim covers is the Python overhead of the loops and glue. Groups:

* encoder: the C++ kernels, forward and backward on the SGD mini-batches, and forward
  over the full bags (W0 before SGD and the final classifier fit);
* classifier: the chi2 feature map (forward and backward), the softmax regression's loss
  and gradients in the SGD steps, its L-BFGS fits (W0, final) and input scaler;
* initialisation: K-Means on the sampled features and the data-driven gamma;
* overhead: mini-batch assembly (bags[idx], subsampling), the optimiser's steps, input
  checks and everything else (the rest of the wall time).
"""

import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from unittest import mock

import numpy as np

SIZES = {"full": dict(n_bags=400, n_per_bag=2_000, n_dims=108, n_codewords=256, n_epochs=5),
         "quick": dict(n_bags=64, n_per_bag=500, n_dims=108, n_codewords=64, n_epochs=2)}
#: LearnedBoW parameters beyond the defaults, per mode (--quick: a smaller K-Means sample)
PARAMS = {"full": {}, "quick": dict(max_init_features=5_000)}
N_CLASSES, N_BLOBS, SEED = 4, 32, 0
GROUPS = {
    "encoder": ("encoder fwd (SGD steps)", "encoder bwd (SGD steps)", "encoder fwd (full bags: W0, final)"),
    "classifier": ("chi2 feature map", "classifier loss/grad (SGD steps)", "classifier L-BFGS fits + scaler"),
    "initialisation": ("init: K-Means", "init: gamma"),
    "overhead": ("batch assembly (bags[idx], subsample)", "optimiser steps", "input checks",
                 "rest (Python overhead)"),
}


def make_problem(n_bags, n_per_bag, n_dims, seed=SEED):
    """(lfagg.Bags of float32 features, labels) of the synthetic problem above."""
    import lfagg

    rng = np.random.default_rng(seed)
    blob_means = rng.normal(scale=1.0, size=(N_BLOBS, n_dims)).astype(np.float32)
    class_weights = 0.5 / N_BLOBS + 0.5 * rng.dirichlet(np.full(N_BLOBS, 0.5), size=N_CLASSES)
    labels = np.arange(n_bags) % N_CLASSES
    rng.shuffle(labels)
    features = rng.standard_normal((n_bags * n_per_bag, n_dims), dtype=np.float32)
    for b, label in enumerate(labels):
        rows = slice(b * n_per_bag, (b + 1) * n_per_bag)
        features[rows] += blob_means[rng.choice(N_BLOBS, n_per_bag, p=class_weights[label])]
    offsets = np.arange(n_bags + 1, dtype=np.int64) * n_per_bag
    return lfagg.Bags(features, offsets), labels


class Profiler:
    """Exclusive wall time per category of the wrapped callables."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._children = []  # per active shim: time spent in nested shims

    def wrap(self, fn, category):
        """``fn`` timed into ``category`` (a string or a callable(args, kwargs) -> string)."""
        def shim(*args, **kwargs):
            name = category(args, kwargs) if callable(category) else category
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[name] += elapsed - self._children.pop()
                self.calls[name] += 1
                if self._children:
                    self._children[-1] += elapsed
        return shim


def instrument(stack, profiler):
    """Install the shims (undone when ``stack`` closes)."""
    from lfagg import _bags, feature_map, heads, learned, optim, training

    in_sgd = []

    def forward_category(args, kwargs):
        return "encoder fwd (SGD steps)" if in_sgd else "encoder fwd (full bags: W0, final)"

    train_encoder = learned.train_encoder

    def sgd(*args, **kwargs):
        in_sgd.append(True)
        try:
            return train_encoder(*args, **kwargs)
        finally:
            in_sgd.pop()

    forward, backward = training.ENCODERS["bow"]
    stack.enter_context(mock.patch.dict(training.ENCODERS, {"bow": (
        profiler.wrap(forward, forward_category), profiler.wrap(backward, "encoder bwd (SGD steps)"))}))
    stack.enter_context(mock.patch.object(learned, "train_encoder", sgd))
    stack.enter_context(mock.patch.object(learned, "initial_codebook",
                                          profiler.wrap(learned.initial_codebook, "init: K-Means")))
    stack.enter_context(mock.patch.object(learned, "auto_gamma", profiler.wrap(learned.auto_gamma, "init: gamma")))
    for cls, method, name in [
            (feature_map.AdditiveChi2Map, "transform", "chi2 feature map"),
            (feature_map.AdditiveChi2Map, "backward", "chi2 feature map"),
            (heads.SoftmaxRegression, "loss_grad", "classifier loss/grad (SGD steps)"),
            (heads.SoftmaxRegression, "fit", "classifier L-BFGS fits + scaler"),
            (heads.SoftmaxRegression, "fit_scaler", "classifier L-BFGS fits + scaler"),
            (_bags.Bags, "__getitem__", "batch assembly (bags[idx], subsample)"),
            (_bags.Bags, "subsample", "batch assembly (bags[idx], subsample)"),
            (optim.SGD, "step", "optimiser steps"),
            (optim.Adam, "step", "optimiser steps")]:
        stack.enter_context(mock.patch.object(cls, method, profiler.wrap(getattr(cls, method), name)))
    check = learned._LearnedAggregation._check_bags
    stack.enter_context(mock.patch.object(learned._LearnedAggregation, "_check_bags",
                                          staticmethod(profiler.wrap(check, "input checks"))))


def run_training(args, ops=None):
    """Part (f). ``args`` needs ``quick`` and ``threads``. Returns a dict."""
    import lfagg

    mode = "quick" if args.quick else "full"
    sizes, params = SIZES[mode], PARAMS[mode]
    start = time.perf_counter()
    bags, labels = make_problem(sizes["n_bags"], sizes["n_per_bag"], sizes["n_dims"])
    make_s = time.perf_counter() - start
    model = lfagg.LearnedBoW(n_codewords=sizes["n_codewords"], n_epochs=sizes["n_epochs"], random_state=SEED,
                             n_threads=args.threads, **params)
    extra = "".join(f", {key}={value}" for key, value in params.items())
    print(f"LearnedBoW(n_codewords={sizes['n_codewords']}, n_epochs={sizes['n_epochs']}{extra}) on {sizes['n_bags']} "
          f"bags x {sizes['n_per_bag']} x {sizes['n_dims']} float32, {N_CLASSES} classes "
          f"(generated in {make_s:.1f} s), {args.threads} thread(s)")
    profiler = Profiler()
    with ExitStack() as stack:
        instrument(stack, profiler)
        start = time.perf_counter()
        model.fit(bags, labels)
        wall = time.perf_counter() - start
    accuracy = float(model.score(bags, labels))
    seconds = dict(profiler.seconds)
    seconds["rest (Python overhead)"] = wall - sum(seconds.values())
    print(f"fit: {wall:.2f} s wall; training accuracy {accuracy:.3f}; "
          f"loss per epoch {', '.join(f'{v:.3f}' for v in model.history_['loss'])}")
    print(f"{'group':<15} {'category':<40} {'calls':>6} {'s':>8} {'fraction':>9}")
    groups = {}
    for group, categories in GROUPS.items():
        for name in categories:
            print(f"{group:<15} {name:<40} {profiler.calls.get(name, 0):6d} {seconds.get(name, 0.0):8.3f} "
                  f"{seconds.get(name, 0.0) / wall:9.3f}")
        groups[group] = sum(seconds.get(name, 0.0) for name in categories)
    print("by group: " + ", ".join(f"{group} {s:.2f} s ({s / wall:.0%})" for group, s in groups.items()))
    unknown = set(seconds) - {name for names in GROUPS.values() for name in names}
    assert not unknown, f"categories missing from GROUPS: {unknown}"
    return dict(config=dict(sizes, **params), wall_s=wall, generate_s=make_s, training_accuracy=accuracy,
                loss_history=model.history_["loss"], seconds=seconds, calls=dict(profiler.calls),
                group_seconds=groups, group_fractions={g: s / wall for g, s in groups.items()})


if __name__ == "__main__":
    import run_suite

    sys.exit(run_suite.main(["--parts", "f", *sys.argv[1:]]))
