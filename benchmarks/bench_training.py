"""End-to-end: the wall time of ``lfagg.LearnedBoW.fit`` and where it goes.

Part (f) of the benchmark suite (``run_suite.py --parts f``; run alone,
``python benchmarks/bench_training.py [--quick] [--threads N]`` writes
``benchmarks/results/training-<timestamp>.json``). A synthetic problem of 400 bags x
2,000 local features x D = 108 (float32, 4 classes; ``--quick``: 64 bags x 500, K = 64,
2 epochs, K-Means on 5,000 features) is fitted with ``LearnedBoW(n_codewords=256,
n_epochs=5)`` (the other parameters at their defaults: K-Means initialisation, 128
features per bag and 32 bags per SGD step, chi2 feature map, Adam), after the features
are generated, with every thread pool (BLAS, scikit-learn's OpenMP) at ``--threads``.

Features come from 32 Gaussian blobs shared by all classes; each class draws its bags'
blobs with its own weights (a common uniform part plus a class-specific Dirichlet part),
so a bag's class shows in how its features spread over the blobs, as with real
descriptors, and the problem is neither trivial nor degenerate.

Then the Gaussian mixture's share of two more fits on the same bags (the issue's target:
at most 25% of the fit, as for the K-Means): ``BagClassifier(FisherVector(K))`` and
``LearnedBoW(K, init="gmm")`` with the same K, epochs and sample, each split by its
``timings_``.

Then, unless ``--quick``, Algorithm 1 as a PyTorch user would write it
(:func:`torch_algorithm1`) on the same problem, batches and epochs, timed after lfagg's
fit in the same process, with scikit-learn's ``KMeans`` at its defaults (the issue's
target: lfagg at least 4x faster) and with lfagg's K-Means (the rest of the fit alone).

The split of the wall time comes from the estimator's documented hook: ``timings_``,
the wall seconds of each fit phase, and ``history_["encoder_time"]``, the seconds of
each SGD epoch spent in the encoder's C++ kernels. Groups:

* initialisation: feature sampling, K-Means and the data-driven gamma ("codebook");
* encoder: the full bags' initial and final representations with the chi2 map
  ("encode"), and the kernels' forward and backward in the SGD steps (encoder_time);
* classifier: the choice of the L2 penalty ("l2") and the L-BFGS fits of W0 and of the
  final classifier ("classifier");
* SGD rest: the rest of the SGD epochs ("sgd" less encoder_time): the chi2 map and the
  classifier's loss and gradients on the mini-batches, mini-batch assembly, the
  optimiser and Python;
* untimed: the wall time outside every phase (input checks, glue).
"""

import sys
import time

import numpy as np

try:
    from . import _common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common

SIZES = {"full": dict(n_bags=400, n_per_bag=2_000, n_dims=108, n_codewords=256, n_epochs=5),
         "quick": dict(n_bags=64, n_per_bag=500, n_dims=108, n_codewords=64, n_epochs=2)}
#: LearnedBoW parameters beyond the defaults, per mode (--quick: a smaller K-Means sample)
PARAMS = {"full": {}, "quick": dict(max_init_features=5_000)}
N_CLASSES, N_BLOBS, SEED = 4, 32, 0
#: the phases of LearnedBoW.timings_, and the groups of the report with what each adds up
PHASES = ("codebook", "encode", "l2", "classifier", "sgd")
GROUPS = {
    "initialisation": "codebook",
    "encoder": "encode + SGD encoder_time",
    "classifier": "l2 + classifier",
    "SGD rest": "sgd - SGD encoder_time",
    "untimed": "wall - all phases",
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


def time_groups(wall, timings, encoder_seconds):
    """Seconds per group of GROUPS from the fit's wall time, its ``timings_`` and the SGD
    epochs' total encoder time."""
    if set(timings) != set(PHASES):  # a phase renamed or added would be misattributed
        raise RuntimeError(f"LearnedBoW.timings_ has the phases {sorted(timings)}, GROUPS expects {PHASES}")
    return {"initialisation": timings["codebook"],
            "encoder": timings["encode"] + encoder_seconds,
            "classifier": timings["l2"] + timings["classifier"],
            "SGD rest": timings["sgd"] - encoder_seconds,
            "untimed": wall - sum(timings.values())}


def torch_algorithm1(bags, labels, sizes, l2, codebook="sklearn", seed=SEED):
    """Algorithm 1 as a PyTorch user would write it, on the same problem, the same
    batches and epochs as LearnedBoW's defaults: the K-Means codebook from scikit-learn
    (``codebook="sklearn"``: ``KMeans(K)`` at its defaults on the same 100,000-feature
    sample; ``"lfagg"``: lfagg's own codebook function on it, to time the rest alone),
    unit precisions, gamma = 1 / median nearest squared distance; a torch autograd soft
    BoW, the chi2 map (2 steps) and a linear softmax head on standardised inputs; W0 and
    the final classifier by ``torch.optim.LBFGS`` at LearnedBoW's chosen L2 penalty
    ``l2``; SGD with ``torch.optim.Adam`` (centres at lr x the features' std, log
    precisions and the head at lr = 1e-3), 128 features drawn per bag. Returns (wall
    seconds, training accuracy, seconds per phase)."""
    import torch
    from sklearn.cluster import KMeans

    from lfagg.encoders.codebook import fit_codebook, random_rows
    from lfagg.models.learned import auto_batch_size

    K, n_classes = sizes["n_codewords"], int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    phases, start = {}, time.perf_counter()
    sample = bags.features[random_rows(bags.n_features, 100_000, seed)]
    centers = (KMeans(K, random_state=seed).fit(sample).cluster_centers_ if codebook == "sklearn"
               else fit_codebook(sample, K, "kmeans", seed).centers)
    C = torch.tensor(centers, dtype=torch.float32, requires_grad=True)
    log_p = torch.zeros_like(C, requires_grad=True)
    probe = torch.from_numpy(sample[random_rows(len(sample), 10_000, seed)])
    gamma = float(1 / torch.cdist(probe, C.detach()).min(1).values.square().median())
    phases["codebook"] = time.perf_counter() - start

    def soft_bow(f, n_bags):  # f: (n_bags * n, D) bags of n features each -> (n_bags, K)
        p = log_p.exp()
        d = (f * f) @ p.T - 2 * f @ (C * p).T + (C * C * p).sum(1)
        return torch.softmax(-gamma * d, dim=1).reshape(n_bags, -1, K).mean(1)

    def chi2(x, L=0.5):  # scikit-learn's AdditiveChi2Sampler(sample_steps=2), differentiable
        x = x.clamp_min(1e-12)
        c = (2 * L / np.cosh(np.pi * L)) ** 0.5
        root, phase = x.sqrt(), L * x.log()
        return torch.cat([(L * x).sqrt(), c * root * torch.cos(phase), c * root * torch.sin(phase)], 1)

    features = torch.from_numpy(bags.features)
    y = torch.from_numpy(labels.astype(np.int64))
    n_per_bag = sizes["n_per_bag"]

    def encode_all():
        with torch.no_grad():
            return torch.cat([chi2(soft_bow(features[b * n_per_bag:(b + 50) * n_per_bag], min(50, len(y) - b)))
                              for b in range(0, len(y), 50)])

    head = torch.nn.Linear(3 * K, n_classes)

    def fit_head(X):
        opt = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (torch.nn.functional.cross_entropy(head((X - mean) / scale), y)
                    + 0.5 * l2 * head.weight.square().sum())
            loss.backward()
            return loss
        opt.step(closure)

    start = time.perf_counter()
    X0 = encode_all()
    mean, scale = X0.mean(0), X0.std(0).clamp_min(1e-6)
    fit_head(X0)
    phases["W0"] = time.perf_counter() - start
    start = time.perf_counter()
    lr, feature_std = 1e-3, float(sample.std())
    opt = torch.optim.Adam([{"params": [C], "lr": lr * feature_std}, {"params": [log_p], "lr": lr},
                            {"params": head.parameters(), "lr": lr}])
    batch = auto_batch_size(len(y))
    for _ in range(sizes["n_epochs"]):
        order = rng.permutation(len(y))
        for first in range(0, len(y), batch):
            chosen = order[first:first + batch]
            rows = np.concatenate([b * n_per_bag + rng.choice(n_per_bag, 128, replace=False) for b in chosen])
            R = chi2(soft_bow(features[torch.from_numpy(rows)], len(chosen)))
            loss = (torch.nn.functional.cross_entropy(head((R - mean) / scale), y[torch.from_numpy(chosen)])
                    + 0.5 * l2 * head.weight.square().sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
    phases["sgd"] = time.perf_counter() - start
    start = time.perf_counter()
    X = encode_all()
    fit_head(X)
    with torch.no_grad():
        accuracy = float((head((X - mean) / scale).argmax(1) == y).float().mean())
    phases["final"] = time.perf_counter() - start
    return sum(phases.values()), accuracy, phases


#: the fits whose Gaussian-mixture codebook part (f) times
GMM_FITS = ("BagClassifier(FisherVector)", "LearnedBoW(init=gmm)")


def gmm_fits(sizes, params, threads):
    """The unfitted estimators of GMM_FITS, by name."""
    import lfagg

    K, common = sizes["n_codewords"], dict(random_state=SEED, n_threads=threads, **params)
    return dict(zip(GMM_FITS, (lfagg.BagClassifier(lfagg.FisherVector(K, **common), random_state=SEED),
                               lfagg.LearnedBoW(K, n_epochs=sizes["n_epochs"], init="gmm", **common))))


def run_training(args, ops=None):
    """Part (f). ``args`` needs ``quick`` and ``threads``. Returns a dict."""
    import lfagg
    from threadpoolctl import threadpool_limits

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
    with threadpool_limits(limits=args.threads):
        start = time.perf_counter()
        model.fit(bags, labels)
        wall = time.perf_counter() - start
        accuracy = float(model.score(bags, labels))
    timings = dict(model.timings_)
    encoder_time = list(model.history_["encoder_time"])
    groups = time_groups(wall, timings, sum(encoder_time))
    print(f"fit: {wall:.2f} s wall; training accuracy {accuracy:.3f}; "
          f"loss per epoch {', '.join(f'{v:.3f}' for v in model.history_['loss'])}")
    print("phases (timings_): " + ", ".join(f"{name} {s:.3f} s" for name, s in timings.items())
          + f"; SGD encoder_time {sum(encoder_time):.3f} s")
    print(f"{'group':<15} {'from':<28} {'s':>8} {'fraction':>9}")
    for group, seconds in groups.items():
        print(f"{group:<15} {GROUPS[group]:<28} {seconds:8.3f} {seconds / wall:9.3f}")
    gmm = {}
    for name, estimator in gmm_fits(sizes, params, args.threads).items():
        with threadpool_limits(limits=args.threads):
            start = time.perf_counter()
            estimator.fit(bags, labels)
            gmm[name] = dict(wall_s=time.perf_counter() - start, codebook_s=estimator.timings_["codebook"])
        print(f"{name}: fit {gmm[name]['wall_s']:.2f} s, Gaussian mixture {gmm[name]['codebook_s']:.2f} s "
              f"({gmm[name]['codebook_s'] / gmm[name]['wall_s']:.0%})")
    peers = {}
    if not getattr(args, "no_torch", False) and not args.quick:
        with threadpool_limits(limits=args.threads):
            import torch

            torch.set_num_threads(args.threads)
            for codebook in ("sklearn", "lfagg"):
                seconds, peer_accuracy, peer_phases = torch_algorithm1(bags, labels, sizes, model.l2_, codebook)
                peers[codebook] = dict(wall_s=seconds, training_accuracy=peer_accuracy, phases=peer_phases)
                print(f"Algorithm 1 in PyTorch ({codebook} K-Means): {seconds:.2f} s, training accuracy "
                      f"{peer_accuracy:.3f} ({', '.join(f'{k} {v:.2f} s' for k, v in peer_phases.items())}); "
                      f"lfagg {seconds / wall:.2f}x faster")
        print(f"target: lfagg >= 4x the PyTorch Algorithm 1: {peers['sklearn']['wall_s'] / wall:.2f}x "
              f"({'met' if peers['sklearn']['wall_s'] / wall >= 4 else 'missed'})")
    return dict(config=dict(sizes, **params), wall_s=wall, generate_s=make_s, training_accuracy=accuracy, torch=peers,
                gmm=gmm, loss_history=model.history_["loss"], timings=timings, encoder_time=encoder_time,
                group_seconds=groups, group_fractions={g: s / wall for g, s in groups.items()})


if __name__ == "__main__":
    sys.exit(_common.run_parts_main("training", __doc__.split("\n\n")[0], {"f": run_training}, repeats=False))
