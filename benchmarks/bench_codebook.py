"""lfagg's codebooks against scikit-learn's, on the sample a LearnedBoW fit draws at the
part-(f) size: time and quality, in one process, interleaved.

    python benchmarks/bench_codebook.py [--quick] [--threads N] [--repeats R] [--patches NPZ] [--gmm]

On the 100,000 features ``LearnedBoW(256)`` samples from part (f)'s 400 bags x 2,000 x 108:

* K-Means: ``lfagg.encoders.codebook.fit_codebook(sample, 256, "kmeans")`` (k-means++
  seeds on a subsample, up to 20 Lloyd iterations on lfagg's core) against
  ``sklearn.cluster.KMeans(256, n_init=1)`` (k-means++ over the whole sample, Lloyd to
  convergence), both under the fit's thread limits; the inertia of each on the sample.
  With ``--patches cifar10_subset.npz``, the same on 100,000 CIFAR-10 patches of 1,000
  training images, as Table I extracts them (real local features, where the k-means++
  seeds decide the local optimum).
* GMM (``--gmm``, minutes at K = 256): ``fit_codebook(..., "gmm")`` (K-Means, then EM on
  lfagg's core) against ``GaussianMixture(256, covariance_type="diag")`` (its own K-Means
  start, then EM), each with its defaults (at most 100 EM iterations, fewer once one gains
  less in mean log-likelihood than 1e-3 per dimension for lfagg, 1e-3 per feature for
  scikit-learn); the mean log-likelihood of each.

Writes ``benchmarks/results/codebook-<timestamp>.json``.
"""

import argparse
import sys

import numpy as np

try:
    from . import _common, bench_training
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common
    import bench_training


def inertia(X, centers):
    X = X.astype(np.float64)
    d = (X ** 2).sum(1)[:, None] - 2 * X @ centers.T + (centers ** 2).sum(1)[None]
    return float(np.maximum(d.min(1), 0).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_run_options(parser)
    parser.add_argument("--gmm", action="store_true", help="also the GMM codebook (slow)")
    parser.add_argument("--patches", metavar="NPZ", help="also K-Means on CIFAR-10 patches from this arrays file")
    args = _common.check_run_options(parser, parser.parse_args(argv))
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    from threadpoolctl import threadpool_limits

    from lfagg.datasets import cifar10_patch_bags
    from lfagg.encoders.codebook import fit_codebook, sample_features

    fitted = {}

    def run(name, fn):
        def call():
            with threadpool_limits(limits=args.threads):  # scikit-learn's OpenMP and BLAS, numpy's BLAS
                fitted[name] = fn()
        return call

    def compare_kmeans(sample, K, seed, label):
        fns = {"lfagg kmeans": run("lfagg kmeans", lambda: fit_codebook(sample, K, "kmeans", seed).centers),
               "sklearn KMeans": run("sklearn KMeans",
                                     lambda: KMeans(K, n_init=1, random_state=seed).fit(sample).cluster_centers_)}
        times = _common.time_interleaved(fns, args.repeats, steady_calls=0, steady_s=0)
        ratio = inertia(sample, fitted["lfagg kmeans"]) / inertia(sample, fitted["sklearn KMeans"])
        print(f"K-Means on {label} ({sample.shape[0]:,} x {sample.shape[1]}, K = {K}): lfagg "
              f"{times['lfagg kmeans'][0] / 1e3:.2f} s, scikit-learn {times['sklearn KMeans'][0] / 1e3:.2f} s "
              f"({times['sklearn KMeans'][0] / times['lfagg kmeans'][0]:.1f}x); inertia lfagg / scikit-learn = "
              f"{ratio:.4f} ({'met' if ratio <= 1.01 else 'missed'}: within 1%)")
        return dict(kmeans_ms={k: v[0] for k, v in times.items()}, kmeans_inertia_ratio=ratio)

    mode = "quick" if args.quick else "full"
    sizes = bench_training.SIZES[mode]
    K = sizes["n_codewords"]
    bags, _ = bench_training.make_problem(sizes["n_bags"], sizes["n_per_bag"], sizes["n_dims"])
    seed = 0  # the same sample and K-Means++ seed for both implementations
    sample = sample_features(bags, K, 5_000 if args.quick else 100_000, seed)
    machine = _common.machine_info(args.threads)
    print(_common.describe_machine(machine) + f"; median of {args.repeats} after a warm-up")
    result = compare_kmeans(sample, K, seed, "the part-(f) sample")
    if args.patches:  # 196 patches per training image
        train_bags = cifar10_patch_bags(args.patches, n_train=100 if args.quick else 1_000, n_test=10)[0]
        patches = sample_features(train_bags, K, len(sample), seed)
        result["patches"] = compare_kmeans(patches, K, seed, "CIFAR-10 patches")
    if args.gmm:
        gmm_fns = {"lfagg gmm": run("lfagg gmm", lambda: fit_codebook(sample, K, "gmm", seed)),
                   "sklearn GMM": run("sklearn GMM", lambda: GaussianMixture(K, covariance_type="diag",
                                                                               random_state=seed).fit(sample))}
        gmm_times = _common.time_interleaved(gmm_fns, 1, warmup=0, settle=0, steady_calls=0, steady_s=0)
        ms = {name: value[0] for name, value in gmm_times.items()}
        ours = fitted["lfagg gmm"]
        model = GaussianMixture(K, covariance_type="diag")
        model.weights_, model.means_, model.covariances_ = ours.weights, ours.centers, ours.variances
        model.precisions_cholesky_ = 1 / np.sqrt(ours.variances)
        loglik = dict(lfagg=float(model.score(sample)), sklearn=float(fitted["sklearn GMM"].score(sample)))
        within = abs(loglik["lfagg"] - loglik["sklearn"]) <= 0.01 * abs(loglik["sklearn"])
        result.update(gmm_ms=ms, gmm_loglik=loglik,
                      gmm_sklearn_iterations=int(fitted["sklearn GMM"].n_iter_))
        print(f"GMM: lfagg {ms['lfagg gmm'] / 1e3:.1f} s, scikit-learn {ms['sklearn GMM'] / 1e3:.1f} s "
              f"({ms['sklearn GMM'] / ms['lfagg gmm']:.1f}x, "
              f"{fitted['sklearn GMM'].n_iter_} EM iterations); mean log-likelihood {loglik['lfagg']:.4f} vs "
              f"{loglik['sklearn']:.4f} ({'met' if within else 'missed'}: within 1%)")
    path = _common.write_json("codebook", dict(config=vars(args), machine=machine, K=K, n=len(sample), **result))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
