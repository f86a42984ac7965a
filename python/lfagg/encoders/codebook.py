"""Codebooks for every encoder: the sample of local features they are learned on,
K-Means / Gaussian-mixture / random initialisation, and the default softness gamma."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning

from .. import _native
from .._threads import limit_threads
from .._validation import check_gamma_dtype, check_resolvable_distances, is_auto, positive_int, positive_real
from ..store import BagStore

#: The ways :func:`fit_codebook` learns a codebook, and their names in progress messages.
INIT_NAMES = {"kmeans": "K-Means", "gmm": "GMM", "random": "random"}
INITS = tuple(INIT_NAMES)


@dataclass
class Codebook:
    """K codewords with diagonal covariances and mixture weights, all float64.

    centers : (K, D); variances : (K, D), ones unless fitted as a Gaussian mixture;
    weights : (K,), uniform unless fitted as a Gaussian mixture.
    """

    centers: np.ndarray
    variances: np.ndarray
    weights: np.ndarray

    @property
    def precisions(self) -> np.ndarray:
        """(K, D) float64, the inverse variances."""
        return 1 / self.variances


def check_sizes(n_codewords, max_init_features) -> tuple[int, int]:
    """(n_codewords, max_init_features) as ints; ValueError unless 1 <= n_codewords <= max_init_features."""
    K = positive_int(n_codewords, "n_codewords")
    try:
        return K, positive_int(max_init_features, "max_init_features", minimum=K)
    except ValueError:
        # names both: a command-line user sets only the codebook size
        raise ValueError(f"n_codewords = {K} needs max_init_features (the features sampled for the codebook) "
                         f"to be an integer >= {K}, got {max_init_features!r}: lower n_codewords or raise "
                         f"max_init_features") from None


def random_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n, max_rows) of n rows drawn at random without replacement."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))


def sample_features(bags, n_codewords: int, max_init_features: int, seed: int, n_threads: int = 0) -> np.ndarray:
    """A random sample of at most ``max_init_features`` of the bags' local features, in
    their order (bags, an already validated Bags, must hold at least ``n_codewords``),
    gathered on ``n_threads`` threads (0: all cores)."""
    n = bags.n_features
    if n < n_codewords:
        raise ValueError(f"too few local features to learn {n_codewords} codewords: the bags hold {n} features "
                         "in all; lower n_codewords or pass more bags")
    if isinstance(bags, BagStore):  # reads a random part of the store, all of it when max_init_features >= n
        return bags.sample_features(max_init_features, seed)
    return _native.core.take_rows(bags.features, random_rows(n, max_init_features, seed), n_threads=n_threads)


#: Lloyd iterations of the K-Means codebooks by default: 20 reached the inertia of a
#: converged K-Means (74 iterations) within 0.04% on the part-(f) benchmark's sample
#: (100,000 x 108, K = 256), in a fifth of the time; a start for SGD needs no more: T1-256
#: on CIFAR-10 patches (T1_PARAMS, 2,000 held-out training images) learned to 51.6 / 52.6%
#: from 20 iterations and 51.7 / 52.2% from 100 (seeds 0 / 1).
KMEANS_MAX_ITER = 20

#: Lloyd stops earlier once the centres move less in all (sum of squared shifts) than this
#: fraction of the sample's mean variance per dimension: scikit-learn's criterion and tol.
KMEANS_TOL = 1e-4

#: ... or once an iteration lowers the inertia by less than this fraction of it (each pass
#: computes the inertia anyway). Inertia over scikit-learn's converged KMeans (max_iter 300,
#: tol 0) on the same 100,000 features and seeds, and the passes run (seeds 0-2,
#: 2026-12-05): on part (f)'s sample at K = 256,
#: 1.0013-1.0017 after 9 passes (1e-4: 1.0005-1.0010 after 14; 1e-3: 1.003 after 5), at
#: K = 64 within 0.1% after 5; on CIFAR-10 patches (K = 64, 256, 1024) 1.005-1.007 after
#: 16-19 passes, where the 20 iterations of KMEANS_MAX_ITER leave 1.004-1.007.
KMEANS_INERTIA_TOL = 3e-4


#: EM iterations of the GMM codebooks at most by default (scikit-learn's default).
GMM_MAX_ITER = 100

#: EM stops earlier once an iteration raises the sample's mean log-likelihood by less than
#: this per dimension of the features (nats per feature and dimension: the same for any
#: units and D). scikit-learn's rule, 1e-3 per feature whatever D, ran 39 / 81 E-steps at
#: D = 108, K = 256 (part (f)'s sample / CIFAR-10 patches) where this one runs 2 / 9, for
#: a mean log-likelihood 0.2% / 1.8% lower (0.01 nats per dimension) and Fisher Vectors
#: no worse: FV-64 on Table I's patches (l2 0.3, seeds 0 / 1) 58.6 / 58.9% with
#: scikit-learn's rule (86 E-steps), 60.1 / 60.1% with this one, 59.8 / 59.0% after a
#: single EM iteration (RESULTS.md, 2026-12-05).
GMM_TOL = 1e-3


def fit_codebook(sample: np.ndarray, n_codewords: int, init: str, seed: int, *, max_iter: int | None = None,
                 n_init: int = 1, reg_covar: float = 1e-6, tol: float = GMM_TOL, n_threads: int = 0) -> Codebook:
    """The codebook ``init`` learns from the (n, D) sample.

    "kmeans": the centres of :func:`kmeans` (lfagg's Lloyd from k-means++ seeds
    drawn on a coreset); "gmm": the means, variances and weights of a diagonal
    Gaussian mixture fitted by :func:`em_gmm` from those clusters (``reg_covar`` added to
    the variances; EM stops as ``tol`` says there);
    "random": ``n_codewords`` features sampled without replacement (equal features give
    equal codewords). ``max_iter`` bounds the Lloyd
    iterations of "kmeans" (default KMEANS_MAX_ITER) or the EM iterations of "gmm"
    (default GMM_MAX_ITER; its K-Means start runs KMEANS_MAX_ITER), ``n_init`` the K-Means
    runs; they run on ``n_threads`` threads (0: no limit). ValueError for a sample that is
    not a finite float32/float64 (n, D) array of at least ``n_codewords`` rows, or a count
    that is not a positive integer.
    """
    n_codewords, n_init = positive_int(n_codewords, "n_codewords"), positive_int(n_init, "n_init")
    max_iter = None if max_iter is None else positive_int(max_iter, "max_iter")
    sample = np.asarray(sample)
    if sample.ndim != 2 or sample.dtype not in (np.float32, np.float64) or len(sample) < n_codewords:
        raise ValueError(f"sample must be a float32 or float64 (n, D) array of at least n_codewords = {n_codewords} "
                         f"rows, got {sample.dtype} of shape {sample.shape}")
    sample = np.ascontiguousarray(sample)  # once, for the check and the fit
    if not _native.core.all_finite(sample, n_threads=n_threads):
        raise ValueError("sample contains NaN or infinity")
    with limit_threads(n_threads):
        return _fit_codebook(sample, n_codewords, init, seed, max_iter, n_init, reg_covar, tol, n_threads)


def _fit_codebook(sample, n_codewords, init, seed, max_iter, n_init, reg_covar, tol, n_threads) -> Codebook:
    K, D = n_codewords, sample.shape[1]
    if init == "kmeans":
        km = kmeans(sample, K, seed, max_iter or KMEANS_MAX_ITER, n_init, n_threads)
        return Codebook(km.centers.astype(np.float64), np.ones((K, D)), np.full(K, 1 / K))
    if init == "gmm":
        return _gmm(sample, K, seed, max_iter or GMM_MAX_ITER, n_init, reg_covar, tol, n_threads)
    if init == "random":
        picked = np.random.default_rng(seed).choice(len(sample), K, replace=False)
        return Codebook(sample[picked].astype(np.float64), np.ones((K, D)), np.full(K, 1 / K))
    raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")


#: k-means++ seeds the centres on a weighted subsample of the sample (a lightweight coreset,
#: see :func:`seeding_coreset`): this many features per
#: codeword, at least SEEDING_MIN and at most SEEDING_MAX. On 100,000 CIFAR-10 patches
#: (a uniform subsample then), after 20 Lloyd iterations, the inertia was above a converged scikit-learn KMeans (seeded
#: on all of them) by 0.2-0.4% with seeds from 25,600 features at K = 256 and 0.6% from
#: 12,800; at K = 1024 by 0.2% from all 100,000 and 0.4% from 51,200, where the seeding
#: took half the time (its cost grows with K times the rows: 10 s from all 100,000).
#: benchmarks/bench_codebook.py --patches measures it.
SEEDING_PER_CODEWORD, SEEDING_MIN, SEEDING_MAX = 100, 5_000, 50_000


def seeding_rows(n_codewords: int) -> int:
    """How many features k-means++ seeds ``n_codewords`` centres on (see SEEDING_PER_CODEWORD)."""
    return min(SEEDING_MAX, max(SEEDING_MIN, SEEDING_PER_CODEWORD * n_codewords))


def seeding_coreset(sample: np.ndarray, squared: np.ndarray, m: int, seed: int, n_threads: int = 0):
    """(rows (about m, D), weights) of the (n, D) sample for k-means++ to seed on, or (sample,
    None) when n <= m: a lightweight coreset (Bachem, Lucic & Krause, KDD 2018) of the
    importance q = 1/2n + d^2 / 2 sum(d^2), d^2 the (n,) ``squared`` distances to the
    sample's mean (:func:`_to_the_mean`), each row
    kept with probability p = min(1, m q) and weighted 1 / p (Poisson sampling: a row of
    m q >= 1 is always kept; drawn m times with replacement, an outlier expected twice was
    missed one time in seven). A uniform subsample missed the few far outliers that
    k-means++ on the whole sample seeds on: 30 features scaled by 100 among 30,000 CIFAR-10
    patches left Lloyd at 4.4-4.7 times scikit-learn's inertia."""
    n = len(sample)
    if n <= m:
        return sample, None
    squared = squared.astype(np.float64)
    total = squared.sum()
    return _poisson_rows(sample, 0.5 / n + (0.5 * squared / total if total > 0 else 0.5 / n), m, seed, n_threads)


def _poisson_rows(sample: np.ndarray, importance: np.ndarray, m: int, seed: int, n_threads: int):
    """The rows kept with probabilities min(1, m importance) (importance sums to 1) and their
    weights, 1 / those probabilities."""
    kept = np.minimum(1.0, m * importance)
    rows = np.flatnonzero(np.random.default_rng(seed).random(len(sample)) < kept)
    return _native.core.take_rows(sample, rows, n_threads=n_threads), (1 / kept[rows]).astype(sample.dtype)


def _seeds_covering_the_far_rows(sample: np.ndarray, seeds: np.ndarray, m: int, seed: int, n_threads: int):
    """(seeds, their kmeans_step on the sample: Lloyd's first pass), the ``seeds`` given
    unless some feature lies farther from them than a cluster's mean cost (the inertia
    over K): then k-means++ seeds again on a coreset of importance 1/2 d^2 / inertia +
    1/2K |cluster| to these seeds (Bachem et al.'s sensitivity sampling), where the
    features the first coreset missed (outliers near the mean's direction, kept with
    probability below 1: 20 features scaled by 1e4 among 10,000 left 2,500 times
    scikit-learn's inertia) weigh what they cost."""
    K = len(seeds)
    step = _native.core.kmeans_step(sample, seeds, n_threads=n_threads, return_labels=True, check_features=False)
    counts, _, inertia, labels, squared = step
    if not squared.max() > inertia / K:
        return seeds, step
    importance = 0.5 * squared.astype(np.float64) / inertia + 0.5 / (K * counts.astype(np.float64)[labels])
    rows, weights = _poisson_rows(sample, importance / importance.sum(), m, seed + 1, n_threads)
    return (kmeans_plusplus(rows, K, seed + 1, n_threads, weights), None) if len(rows) >= K else (seeds, step)


@dataclass
class KMeansFit:
    """A K-Means clustering of a sample: centers (K, D) of the sample's dtype, labels
    (n,) int64 (each feature's nearest centre) and the inertia (the sum of the squared
    distances of the features to their nearest centre)."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float


def kmeans(sample: np.ndarray, n_codewords: int, seed: int, max_iter: int = KMEANS_MAX_ITER, n_init: int = 1,
           n_threads: int = 0) -> KMeansFit:
    """K-Means of the (n, D) float sample: :func:`kmeans_plusplus` seeds drawn on a coreset
    (:func:`seeding_coreset`, SEEDING_PER_CODEWORD), then :func:`lloyd`; of ``n_init`` runs
    the one of least inertia."""
    best, sample = None, np.ascontiguousarray(sample)
    squared, total = _to_the_mean(sample, n_threads)  # the coreset's importance and Lloyd's scale: one pass
    m = max(seeding_rows(n_codewords), n_codewords)  # both coresets' size: above 50,000 codewords, one per codeword
    for run_seed in np.random.default_rng(seed).integers(2 ** 31, size=n_init):
        rows, weights = seeding_coreset(sample, squared, m, int(run_seed), n_threads)
        if len(rows) < n_codewords:  # a draw of fewer rows than seeds (m = K of a tiny sample)
            rows, weights = sample, None
        seeds, step = kmeans_plusplus(rows, n_codewords, int(run_seed), n_threads, weights), None
        if weights is not None:
            seeds, step = _seeds_covering_the_far_rows(sample, seeds, m, int(run_seed), n_threads)
        fit = lloyd(sample, seeds, max_iter, n_threads, first_step=step, variance=total / sample.size)
        if best is None or fit.inertia < best.inertia:
            best = fit
    distinct = len(np.unique(best.centers, axis=0))
    if distinct < n_codewords:  # as scikit-learn's KMeans warns
        warnings.warn(f"K-Means found {distinct} distinct clusters, fewer than n_codewords = {n_codewords}: the "
                      "sample holds fewer distinct features; the other codewords repeat them", ConvergenceWarning,
                      stacklevel=3)
    return best


def kmeans_plusplus(sample: np.ndarray, n_codewords: int, seed: int, n_threads: int = 0,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """``n_codewords`` rows of the (n, D) float32/float64 sample (finite, n >= n_codewords)
    chosen by greedy k-means++, as scikit-learn's ``kmeans_plusplus`` chooses them: each
    seed the best of 2 + ln K candidates drawn in proportion to their squared distance
    to the seeds so far, the one that leaves the least sum of those distances; with
    ``weights`` (n,) of the sample's dtype, a weighted sample (distances times weights,
    the first seed in proportion to them). Runs on lfagg's core in the sample's dtype,
    the same rows for every thread count: 0.13 s against scikit-learn's 1.08 on 25,600 x
    108 float32 features, K = 256, 2 threads. Returns the (K, D) seeds in the sample's dtype."""
    trials = 2 + int(np.log(n_codewords))
    uniforms = np.random.default_rng(seed).random((n_codewords, trials))
    sample = np.ascontiguousarray(sample)
    return sample[_native.core.kmeans_plusplus(sample, uniforms, n_threads=n_threads, check_features=False,
                                               weights=weights)]


def lloyd(sample: np.ndarray, seeds: np.ndarray, max_iter: int = KMEANS_MAX_ITER, n_threads: int = 0,
          inertia_tol: float = KMEANS_INERTIA_TOL, first_step: tuple | None = None,
          variance: float | None = None) -> KMeansFit:
    """Lloyd's iterations from the (K, D) seeds on the (n, D) float32/float64 sample (finite,
    as lfagg validated it): at most ``max_iter``, fewer once the centres settle (KMEANS_TOL)
    or an iteration lowers the inertia by less than ``inertia_tol`` of it (0: never).

    Each iteration is one pass of lfagg's core (a matrix product for the distances, the
    nearest centre, the clusters' sums), threaded on ``n_threads`` (0: all cores) and
    bitwise the same for every thread count: 27 ms per iteration against scikit-learn's
    45-50 at 100,000 x 108, K = 256, on 2 threads. A centre left without features moves
    to the feature farthest from its centre, as in scikit-learn. Returns a KMeansFit
    whose labels and inertia are those of the returned centres; ValueError for a sample
    whose squared distances would underflow the dtype (features of 1e-19 in float32).
    ``first_step``: the core's ``kmeans_step(sample, seeds, return_labels=True)``, and
    ``variance``: :func:`mean_variance` of the sample, when the caller has them already."""
    sample = np.ascontiguousarray(sample)
    variance = mean_variance(sample, n_threads) if variance is None else variance
    check_resolvable_distances(variance * sample.shape[1], sample.dtype, lambda: np.ptp(sample, axis=0).max(),
                               "the local features", "them")
    tol = KMEANS_TOL * variance
    centers, previous, settled = np.ascontiguousarray(seeds, dtype=sample.dtype), np.inf, False
    for iteration in range(max_iter + 1):  # the last pass only scores the centres
        counts, means, inertia, labels, distances = first_step if iteration == 0 and first_step else \
            _native.core.kmeans_step(sample, centers, n_threads=n_threads, return_labels=True,
                                     check_features=False)  # of `centers`
        if settled or iteration == max_iter or previous - inertia < inertia_tol * inertia:
            return KMeansFit(centers, labels, inertia)
        previous = inertia
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            means[empty] = sample[np.argsort(distances, kind="stable")[::-1][:len(empty)]]
        settled = float(np.sum((means.astype(np.float64) - centers) ** 2)) <= tol
        centers = means


def mean_variance(sample: np.ndarray, n_threads: int = 0) -> float:
    """The variance of the (n, D) sample's columns, averaged over the D columns: the
    inertia of one centre at the mean, one threaded pass of the core without a temporary
    copy (np.var's took 10x longer), exact also far from the origin, where the mean of
    the squares less the squared mean cancels."""
    return _to_the_mean(sample, n_threads)[1] / sample.size


def _to_the_mean(sample: np.ndarray, n_threads: int = 0) -> tuple:
    """(the (n,) squared distances of the sample's rows to its mean, in its dtype, and their
    float sum): the inertia of one centre at the mean, one threaded pass of the core."""
    mean = sample.mean(axis=0, dtype=np.float64).astype(sample.dtype)[None]
    _, _, total, _, squared = _native.core.kmeans_step(sample, mean, n_threads=n_threads, return_labels=True,
                                                       check_features=False)
    return squared, total


def _gmm(sample, K, seed, max_iter, n_init, reg_covar, tol, n_threads) -> Codebook:
    """A diagonal Gaussian mixture fitted by :func:`em_gmm`, started from :func:`kmeans`'s
    clusters (their weights, means and variances)."""
    km = kmeans(sample, K, seed, KMEANS_MAX_ITER, n_init, n_threads)
    counts = np.bincount(km.labels, minlength=K).astype(np.float64)
    sums, squares = _cluster_sums(sample, km.labels, K)
    safe = np.maximum(counts, 1)
    variances = np.maximum(squares / safe[:, None] - (sums / safe[:, None]) ** 2, 0)
    variances[counts < 2] = sample.var(axis=0)  # a cluster of one feature has no spread of its own
    return em_gmm(sample, Codebook(km.centers.astype(np.float64), variances + reg_covar, safe / safe.sum()),
                  max_iter, reg_covar, tol, n_threads)


def _cluster_sums(sample: np.ndarray, labels: np.ndarray, K: int, rows: int = 4096) -> tuple:
    """The (K, D) float64 sums of the features and of their squares per cluster, over blocks
    of ``rows``: float64 copies of the whole sample (two of 86 MB at 100,000 x 108, K = 256)
    took 0.5 s in a fresh process, most of it the first touch of their pages (0.07 s once
    warm), the blocks 0.03 s."""
    sums, squares = np.zeros((K, sample.shape[1])), np.zeros((K, sample.shape[1]))
    for start in range(0, len(sample), rows):
        block, block_labels = sample[start:start + rows].astype(np.float64), labels[start:start + rows]
        members = sparse.csr_matrix((np.ones(len(block)), (block_labels, np.arange(len(block)))),
                                    shape=(K, len(block)))
        sums += members @ block
        block *= block
        squares += members @ block
    return sums, squares


def em_gmm(sample: np.ndarray, start: Codebook, max_iter: int = GMM_MAX_ITER, reg_covar: float = 1e-6,
           tol: float = GMM_TOL, n_threads: int = 0) -> Codebook:
    """EM of a diagonal Gaussian mixture on the (n, D) float sample (finite, as lfagg
    validated it) from ``start``: at most ``max_iter`` iterations, fewer once one raises the
    sample's mean log-likelihood by less than ``tol`` times D (see GMM_TOL; scikit-learn's
    rule is ``tol=1e-3 / D``). The M-step is scikit-learn's
    ``GaussianMixture(covariance_type="diag")`` (``reg_covar`` added to the variances);
    the E-step is one pass of lfagg's Fisher Vector kernel over the sample as a single bag,
    whose unnormalised statistics are the sums the M-step needs, taken around the current
    means (12x faster than scikit-learn's E-step and M-step at 100,000 x 108, K = 64, on
    one thread; in the sample's dtype). A component left without mass keeps its mean and
    variance (one whose mass is below what the kernel's precision resolves); a variance of 0
    (only possible with ``reg_covar=0``) is a ValueError, as in scikit-learn. Returns the
    fitted Codebook (centers = the means): values of the sample's dtype, held as float64."""
    sample = np.ascontiguousarray(sample)
    n = len(sample)
    offsets, dtype = np.array([0, n], dtype=np.int64), sample.dtype
    means, variances, weights = start.centers, start.variances, start.weights
    tiny = 10 * np.finfo(np.float64).eps  # scikit-learn's floor of a component's mass
    log_likelihood = -np.inf  # of the parameters before the last M-step
    for _ in range(max_iter):
        params = [np.ascontiguousarray(a, dtype=dtype) for a in (means, variances, weights)]
        if not np.all(params[1] > 0):
            lost = f", 0 in the features' {dtype.name}" if reg_covar > 0 and dtype.type(reg_covar) == 0 else ""
            raise ValueError(f"a Gaussian of the mixture has collapsed onto identical features (a variance of 0): "
                             f"give reg_covar > 0 (it is {reg_covar:g}{lost}) or fewer components")
        fv = _native.core.fisher_vector(sample, offsets, *params, with_weights=True, n_threads=n_threads,
                                        check_features=False, with_log_likelihood=True)[0].astype(np.float64)
        u, v = fv[:means.size].reshape(means.shape), fv[means.size:2 * means.size].reshape(means.shape)
        a, settled = fv[2 * means.size:-1], fv[-1] - log_likelihood < tol * means.shape[1]
        log_likelihood = fv[-1]
        root_w = np.sqrt(weights)
        mass = n * (root_w * a + weights)                                        # sum_n q_nk
        centred = n * root_w[:, None] * u                                        # sum_n q_nk (f_n - mu_k) / sigma_k
        squared = n * np.sqrt(2) * root_w[:, None] * v + mass[:, None]           # sum_n q_nk (f_n - mu_k)^2 / var_k
        # The mass comes back as N w_k plus the kernel's sum of q_nk - w_k, good to its dtype's
        # precision of N w_k: below that a component has lost its features.
        alive = mass > 100 * np.finfo(dtype).eps * n * weights
        mass = np.maximum(mass, 0) + tiny
        sigma = np.sqrt(variances)
        step = np.where(alive[:, None], sigma * centred / mass[:, None], 0.0)
        variances = np.where(alive[:, None],
                             np.maximum(variances * squared / mass[:, None] - step ** 2, 0) + reg_covar, variances)
        means, weights = means + step, mass / mass.sum()
        if settled:  # as scikit-learn, after the M-step of the E-step that found it
            break
    else:
        if max_iter > 0:
            warnings.warn(f"the Gaussian mixture did not settle in {max_iter} EM iterations (its last E-step's mean "
                          f"log-likelihood was not within {tol:g} per dimension of the one before); a larger max_iter "
                          "(FisherVector, fit_codebook) lets it settle", ConvergenceWarning, stacklevel=2)
    # Values of the sample's dtype, as the K-Means centres: the core computes with them in
    # that dtype, and a float64 encoding of the same model must use the same values (FV of
    # features near 1e4 differed by 9e-3 between a float32 and a float64 transform).
    return Codebook(*(np.asarray(a, dtype=dtype).astype(np.float64) for a in (means, variances, weights)))


def check_gamma(gamma, gamma_scale) -> tuple[float | None, float]:
    """(gamma as a float, or None for "auto"; gamma_scale as a float), checked before any fit."""
    scale = positive_real(gamma_scale, "gamma_scale")
    if is_auto(gamma):
        return None, scale
    value = positive_real(gamma, "gamma", allow_auto=True)
    if scale != 1:
        raise ValueError(f"gamma_scale multiplies gamma='auto' only; with gamma={gamma!r}, "
                         "give the scaled value as gamma")
    return value, scale


def auto_gamma(sample: np.ndarray, centers: np.ndarray, precisions: np.ndarray, random_state=0) -> float:
    """The data-driven default of gamma: 1 / median over local features of the squared
    distance (weighted by the precisions) to their nearest codeword, so a typical
    feature's nearest codeword weighs e times more than a codeword at twice that squared
    distance (the median over the features off the
    codewords when most lie on one). Scale-free: multiplying the features by s divides it
    by s^2 (the paper's values range from 5e-8 to 70 for this reason), and unmoved by a
    shift of features and codewords.

    sample : (n, D) local features; centers, precisions : (K, D). Returns a float.
    """
    # a random subset: the sample may be ordered by bag, hence by class
    sample = sample[random_rows(len(sample), 10_000, random_state)].astype(np.float64)
    # centred first: the expanded distance of features far from the origin cancels
    shift = sample.mean(axis=0)
    sample, centers = sample - shift, centers - shift
    terms = (sample ** 2) @ precisions.T + (centers ** 2 * precisions).sum(1)  # what the expansion cancels
    d = terms - 2 * sample @ (centers * precisions).T
    rows, closest = np.arange(len(d)), d.argmin(axis=1)
    nearest = d[rows, closest]
    # a feature on its codeword is at 0 within the rounding of those terms (its d was that
    # noise, and gamma = 1 / 1e-15 followed from it)
    nearest[nearest <= 64 * np.finfo(np.float64).eps * terms[rows, closest]] = 0.0
    typical = np.median(nearest)
    if typical == 0:  # most features are codewords: the spread of the others
        typical = np.median(nearest[nearest > 0]) if np.any(nearest > 0) else 1.0
    return 1.0 / typical


def resolve_gamma(gamma: float | None, gamma_scale: float, sample: np.ndarray, codebook: Codebook,
                  seed: int) -> float:
    """``gamma`` (from :func:`check_gamma`), or ``gamma_scale`` times :func:`auto_gamma` for
    None; ValueError when it is not a positive finite number in the sample's dtype."""
    if gamma is not None:
        return check_gamma_dtype(gamma, sample.dtype)
    with np.errstate(over="ignore", divide="ignore"):
        value = gamma_scale * auto_gamma(sample, codebook.centers, codebook.precisions, seed)
    return check_gamma_dtype(value, sample.dtype, "gamma='auto' (1 / the median squared distance of a feature to "
                                                  "its nearest codeword, times gamma_scale)")
