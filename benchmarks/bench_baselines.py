"""Benchmark lfagg's Fisher Vector and VLAD encoders against VLFeat (cyvlfeat) and scikit-image.

One bag of 22,000 x 108 float32 features (an Improved Dense Trajectories video), K = 64:
a diagonal GMM (fitted by scikit-learn on a sample of the features) for the Fisher
Vectors, its means as the VLAD codebook. Measurements:

* ``fv``: improved Fisher Vector. lfagg.normalize.improved_fisher_normalize of
  lfagg.ops.fisher_vector (the raw encoding), cyvlfeat's vl_fisher
  (``improved=True``) and skimage.feature.fisher_vector (``improved=True``; it also
  computes the K weight gradients, and its variance block has the opposite sign);
* ``vlad_weights``: unnormalised VLAD from given soft assignments (the GMM posteriors),
  lfagg.ops.vlad and cyvlfeat's vl_vlad (``unnormalized=True``);
* ``vlad_hard``: hard VLAD including the nearest-centre search: lfagg.ops.vlad in one
  call, against VLFeat's kmeans_quantize + one-hot assignments + vl_vlad.

Before timing, every output is compared with lfagg's float64 result (max |difference| /
max |reference|, after flipping scikit-image's variance sign and dropping its weight block). Each
timing is one warm-up call, then the median of ``--repeats`` calls, the implementations
of a measurement called in turn within each repeat. Ratios are peer time / lfagg time
(> 1: lfagg is faster). Results go to benchmarks/results/baselines-<stamp>.json.
``run_suite.py`` runs this as part (c) of the suite.

Usage::

    python benchmarks/bench_baselines.py [--repeats 7] [--threads N] [--quick]
"""

import argparse
import os
import sys

import numpy as np

try:
    from . import _common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common

N_FEATURES, N_DIMS, N_COMPONENTS = 22_000, 108, 64
QUICK = (3_000, 32, 16)
SEED = 0


def make_problem(n_features, n_dims, n_components, n_threads):
    """The bag's features (float32) and a diagonal GMM fitted on other features of the
    same kind. The bag uses a subset of the blobs the training features come from, as a
    video shows some of a dataset's content: encoding the GMM's own training data would
    give Fisher Vectors near zero (the likelihood's gradient at its maximum), pure noise."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(SEED)
    blob_means = rng.normal(scale=2.0, size=(2 * n_components, n_dims))
    spread = rng.uniform(0.5, 1.5, size=n_dims)

    def draw(n, blobs):
        return (blob_means[rng.choice(blobs, size=n)] + rng.normal(size=(n, n_dims)) * spread).astype(np.float32)

    train = draw(10_000, np.arange(len(blob_means)))
    bag = draw(n_features, rng.choice(len(blob_means), size=n_components // 2, replace=False))
    with threadpool_limits(limits=n_threads):
        gmm = GaussianMixture(n_components, covariance_type="diag", max_iter=20, random_state=SEED).fit(train)
    return bag, gmm


def implementations(features, gmm, n_threads, with_peers=True):
    """{measurement: {implementation: (callable, output -> lfagg's layout)}}: lfagg, and
    with_peers, the peers that import. Everything computes in the features' dtype."""
    import lfagg.ops as ops
    from lfagg.normalize import improved_fisher_normalize

    offsets = np.array([0, len(features)], dtype=np.int64)
    means, variances, weights = (np.ascontiguousarray(a, dtype=features.dtype)
                                 for a in (gmm.means_, gmm.covariances_, gmm.weights_))
    posteriors = gmm.predict_proba(features).astype(features.dtype)
    same = np.ravel
    impl = {
        "fv": {"lfagg": (lambda: improved_fisher_normalize(ops.fisher_vector(
            features, offsets, means, variances, weights, n_threads=n_threads)), same)},
        "vlad_weights": {"lfagg": (lambda: ops.vlad(features, offsets, means, posteriors, n_threads=n_threads),
                                   same)},
        "vlad_hard": {"lfagg": (lambda: ops.vlad(features, offsets, means, n_threads=n_threads), same)},
    }
    if not with_peers:
        return impl
    try:
        from cyvlfeat.fisher import fisher
        from cyvlfeat.kmeans import kmeans_quantize
        from cyvlfeat.vlad import vlad
    except ImportError as exc:
        print(f"note: cyvlfeat not importable ({exc}); VLFeat skipped")
    else:
        eye = np.eye(len(means), dtype=np.float32)
        impl["fv"]["vlfeat"] = (lambda: fisher(features, means, variances, weights, improved=True), same)
        impl["vlad_weights"]["vlfeat"] = (lambda: vlad(features, means, posteriors, unnormalized=True), same)
        impl["vlad_hard"]["vlfeat"] = (
            lambda: vlad(features, means, eye[kmeans_quantize(features, means)], unnormalized=True), same)
    try:
        from skimage.feature import fisher_vector
    except ImportError as exc:
        print(f"note: skimage.feature.fisher_vector not importable ({exc}); scikit-image skipped")
    else:
        k, kd = len(means), means.size

        def skimage_layout(fv):
            # drop the weight block, flip the variance block's sign, renormalise the rest
            out = np.concatenate([fv[k:k + kd], -fv[k + kd:]])
            return out / np.linalg.norm(out)

        impl["fv"]["scikit-image"] = (lambda: fisher_vector(features, gmm, improved=True), skimage_layout)
    return impl


def errors_vs_float64(impl, impl64):
    """max |x - x64| / max |x64| of every implementation's float32 output, x64 being
    lfagg's float64 result (itself checked against numpy references by the tests)."""
    errors = {}
    for name, peers in impl.items():
        reference = np.ravel(impl64[name]["lfagg"][0]())
        for peer, (fn, to_lfagg) in peers.items():
            diff = np.abs(to_lfagg(fn()).astype(np.float64) - reference).max()
            errors[f"{name}/{peer}"] = float(diff / np.abs(reference).max())
    return errors


def set_peer_threads(n_threads):
    """VLFeat's OpenMP pool to n_threads (scikit-image's BLAS is limited by threadpoolctl)."""
    try:
        from cyvlfeat.generic import set_num_threads
    except ImportError:
        return
    set_num_threads(n_threads)


def run(args):
    """Check and time every measurement; print a table. ``args`` needs ``quick``,
    ``threads`` and ``repeats``. Returns (sizes, float32 errors, result rows)."""
    from threadpoolctl import threadpool_limits

    n_features, n_dims, n_components = QUICK if args.quick else (N_FEATURES, N_DIMS, N_COMPONENTS)
    features, gmm = make_problem(n_features, n_dims, n_components, args.threads)
    impl = implementations(features, gmm, args.threads)
    set_peer_threads(args.threads)
    rows = []
    with threadpool_limits(limits=args.threads):
        impl64 = implementations(features.astype(np.float64), gmm, args.threads, with_peers=False)
        errors = errors_vs_float64(impl, impl64)
        for key, error in errors.items():
            print(f"float32 error {key}: max |x - x64| / max |x64| = {error:.2e}")
        print(f"{'measurement':<14}{'implementation':<16}{'median ms':>11}{'peer / lfagg':>14}")
        for name, peers in impl.items():
            timed = _common.time_interleaved({peer: fn for peer, (fn, _) in peers.items()}, args.repeats)
            for peer, (ms, runs) in timed.items():
                ratio = ms / timed["lfagg"][0]
                rows.append(dict(measurement=name, implementation=peer, ms=ms, runs_ms=runs, ratio=ratio))
                print(f"{name:<14}{peer:<16}{ms:>11.2f}{ratio:>14.2f}", flush=True)
    return dict(n_features=n_features, n_dims=n_dims, n_components=n_components), errors, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (default: 7)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every implementation (default: all cores, %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    machine = _common.machine_info(args.threads)
    print(f"{_common.describe_machine(machine)}; median of {args.repeats} after a warm-up")
    sizes, errors, rows = run(args)
    path = _common.write_json("baselines", dict(config=dict(vars(args), **sizes), machine=machine,
                                                float32_errors=errors, results=rows))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
