"""The codebooks lfagg fits (k-means++ seeds on a subsample, a few Lloyd iterations; a GMM
started from those clusters) against scikit-learn's KMeans and GaussianMixture run the
usual way on the same sample: the inertia within 1%, the log-likelihood as good."""

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from conftest import CIFAR
from lfagg.datasets import cifar10_patch_bags
from lfagg.encoders import codebook
from lfagg.encoders.codebook import SEEDING_MAX, SEEDING_MIN, fit_codebook, lloyd, seeding_rows


def blobs(seed, n=30_000, dim=16, n_blobs=40):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(n_blobs, dim))
    return (means[rng.integers(n_blobs, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def inertia(X, centers):
    X = X.astype(np.float64)
    d = (X ** 2).sum(1)[:, None] - 2 * X @ centers.T + (centers ** 2).sum(1)[None]
    return float(np.maximum(d.min(1), 0).sum())


@pytest.mark.parametrize("seed,K", [(1, 64), (2, 300)])
def test_kmeans_inertia_within_one_percent_of_scikit_learn(seed, K):
    X = blobs(seed)
    assert len(X) > SEEDING_MIN  # the seeds are drawn on a subsample
    ours = fit_codebook(X, K, "kmeans", seed).centers
    theirs = KMeans(K, n_init=1, random_state=seed).fit(X).cluster_centers_
    assert ours.shape == (K, X.shape[1]) and len(np.unique(ours, axis=0)) == K
    assert inertia(X, ours) <= 1.01 * inertia(X, theirs)


@pytest.mark.skipif(not CIFAR.exists(), reason=f"the CIFAR-10 arrays file {CIFAR} is absent")
def test_kmeans_inertia_within_one_percent_on_image_patches():
    """Real local features have no blobs to find, and the seeds decide the optimum: here
    0.3-0.6% above scikit-learn for seeds 0-3 (0.5-0.75% with seeds drawn from 20 features
    per codeword, which reached 1.00% on 100,000 patches at K = 256)."""
    bags = cifar10_patch_bags(CIFAR, n_train=200, n_test=10)[0]
    X, K = bags.features, 128
    assert len(X) > seeding_rows(K)  # the seeds are drawn on a subsample
    ours = fit_codebook(X, K, "kmeans", 0).centers
    theirs = KMeans(K, n_init=1, random_state=0).fit(X).cluster_centers_
    assert inertia(X, ours) <= 1.01 * inertia(X, theirs)


def test_kmeans_seeds_on_a_weighted_subsample(monkeypatch):
    seeded, original = [], codebook.kmeans_plusplus

    def recording_kmeans_plusplus(X, n_clusters, seed, n_threads=0, weights=None):
        seeded.append((X, weights))
        return original(X, n_clusters, seed, n_threads, weights)

    monkeypatch.setattr(codebook, "kmeans_plusplus", recording_kmeans_plusplus)
    X = blobs(4, n=20_000)
    rows = {row.tobytes() for row in X}
    for K in (8, 64, 300):
        fit_codebook(X, K, "kmeans", 0)
        subsample, weights = seeded[-1]
        if len(X) <= seeding_rows(K):
            assert subsample is X and weights is None
        else:  # about m rows (Poisson sampling), whose weights stand for the whole sample
            assert abs(len(subsample) - seeding_rows(K)) < 0.05 * seeding_rows(K)
            assert abs(weights.sum() - len(X)) < 0.05 * len(X) and weights.min() >= 1
        assert all(row.tobytes() in rows for row in subsample)  # drawn from the sample


@pytest.mark.parametrize("outliers, scale, K", [(30, 100.0, 64), (20, 1e4, 32)])
def test_kmeans_with_a_few_far_outliers_is_as_good_as_scikit_learns(outliers, scale, K):
    """k-means++ on a uniform subsample missed most of a few far outliers, which Lloyd
    never recovers from: 30 patches scaled by 100 among 30,000 left 4.4-4.7 times
    scikit-learn's inertia; 20 blob points scaled by 1e4 among 10,000 (the far ones
    near the mean's direction), 8e4 times, and 2,500 times with the first coreset alone."""
    rng = np.random.default_rng(1)
    if scale == 100.0:
        X = cifar10_patch_bags(CIFAR, n_train=200, n_test=10)[0].features[:30_000].astype(np.float64)
    else:
        X = rng.normal(size=(10_000, 8)) + rng.integers(0, 5, size=(10_000, 1)) * 3
    X[rng.choice(len(X), outliers, replace=False)] *= scale
    for seed in range(3):
        ours = inertia(X, fit_codebook(X, K, "kmeans", seed).centers)
        assert ours <= 1.015 * KMeans(K, n_init=1, random_state=seed).fit(X).inertia_


def test_both_seeding_coresets_hold_at_least_one_row_per_codeword(monkeypatch):
    """The re-seeding coreset had seeding_rows(K) rows where the first has max(that, K):
    above SEEDING_MAX codewords it drew fewer rows than seeds and never re-seeded. With
    the bounds lowered to 20 rows, K = 32 shows it."""
    sizes, poisson_rows, covering = [], codebook._poisson_rows, codebook._seeds_covering_the_far_rows
    monkeypatch.setattr(codebook, "SEEDING_MIN", 20)
    monkeypatch.setattr(codebook, "SEEDING_MAX", 20)
    monkeypatch.setattr(codebook, "_poisson_rows", lambda *a: sizes.append(a[2]) or poisson_rows(*a))
    monkeypatch.setattr(codebook, "_seeds_covering_the_far_rows", lambda *a: sizes.append(a[2]) or covering(*a))
    X = np.random.default_rng(1).normal(size=(2_000, 4))
    for seed in range(20):  # a coreset of about K rows holds fewer than K half the time: then no re-seeding
        sizes.clear()
        fit_codebook(X, 32, "kmeans", seed)
        if len(sizes) > 1:
            break
    assert sizes == [32, 32]  # the first coreset's size, then the one the re-seeding would draw


def kmeans_plusplus_reference(X, uniforms, weights=None):
    """Greedy k-means++ in float64 NumPy, replaying the uniforms (K, trials) as the core
    does: seed 0 at row floor(u n), then per seed the candidates np.searchsorted(cumulative
    potential, u * potential) (scikit-learn's draw) and the one leaving the least potential;
    with ``weights``, seed 0 by cumulative weight and each potential times its row's weight."""
    X = X.astype(np.float64)
    w = np.ones(len(X)) if weights is None else weights.astype(np.float64)
    if weights is None:
        first = min(len(X) - 1, int(uniforms[0, 0] * len(X)))
    else:  # in proportion to the weights
        first = min(len(X) - 1, int(np.searchsorted(np.cumsum(w), uniforms[0, 0] * w.sum())))
    chosen, potential = [first], w * ((X - X[first]) ** 2).sum(1)
    for u in uniforms[1:]:
        cumulative = np.cumsum(potential)
        candidates = np.minimum(np.searchsorted(cumulative, u * cumulative[-1]), len(X) - 1)
        left = np.minimum(w[:, None] * ((X[:, None, :] - X[candidates][None]) ** 2).sum(-1), potential[:, None])
        best = int(np.argmin(left.sum(0)))
        chosen.append(int(candidates[best]))
        potential = left[:, best]
    return np.array(chosen)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,dim,K,trials", [(1_300, 7, 30, 4), (2_049, 37, 64, 6), (40, 3, 40, 1), (700, 130, 20, 9)])
def test_kmeans_plusplus_replays_the_numpy_reference(dtype, n, dim, K, trials):
    """Rows not a multiple of the core's tiles (512) nor of its blocks (8-32 rows), one
    tile, every row a seed, candidates in one, two and three groups (of 4); on every
    instruction set this CPU runs (their blocks differ in size)."""
    from lfagg import _native
    rng = np.random.default_rng(n)
    X = (rng.normal(scale=3.0, size=(n, dim)) + rng.integers(4, size=(n, 1)) * 10).astype(dtype)
    uniforms = rng.random((K, trials))
    weights = rng.uniform(0.5, 4.0, size=n).astype(dtype)  # a coreset's
    expected = kmeans_plusplus_reference(X, uniforms)
    weighted = kmeans_plusplus_reference(X, uniforms, weights)
    for core in map(_native.load, _native.available()):
        for n_threads in (1, 2, 3):
            np.testing.assert_array_equal(core.kmeans_plusplus(X, uniforms, n_threads=n_threads), expected)
            np.testing.assert_array_equal(core.kmeans_plusplus(X, uniforms, n_threads=n_threads, weights=weights),
                                          weighted)


def test_kmeans_plusplus_weights_are_checked():
    from lfagg import _native
    X, uniforms = np.ones((5, 2)), np.full((2, 3), 0.5)
    for weights, message in ((np.ones(4), "one value per feature"), (np.array([1, 1, -1, 1, 1.0]), "strictly positive"),
                             (np.array([1, 1, np.nan, 1, 1]), "NaN")):
        with pytest.raises(ValueError, match=message):
            _native.core.kmeans_plusplus(X, uniforms, weights=weights)


def test_kmeans_plusplus_with_fewer_distinct_rows_than_seeds():
    """Once every distinct row is a seed the potential is zero (up to rounding: the core's
    distances are expanded products), and further seeds repeat rows."""
    from lfagg import _native
    X = np.repeat(np.eye(3), 5, axis=0)
    uniforms = np.random.default_rng(0).random((6, 3))
    chosen = _native.core.kmeans_plusplus(X, uniforms)
    np.testing.assert_array_equal(chosen[:3], kmeans_plusplus_reference(X, uniforms)[:3])
    assert chosen.min() >= 0 and chosen.max() < len(X) and len({tuple(X[i]) for i in chosen[:3]}) == 3


def test_kmeans_plusplus_potential_as_scikit_learns():
    """The same distribution of seeds as scikit-learn's kmeans_plusplus: over 8 seeds the
    mean potential (sum of squared distances to the nearest seed) agrees within 3%."""
    from sklearn.cluster import kmeans_plusplus
    X = blobs(5, n=6_000)
    ours = np.mean([inertia(X, codebook.kmeans_plusplus(X, 50, s).astype(np.float64)) for s in range(8)])
    theirs = np.mean([inertia(X, kmeans_plusplus(X.astype(np.float64), 50, random_state=s)[0]) for s in range(8)])
    assert abs(ours / theirs - 1) < 0.03


@pytest.mark.parametrize("uniforms,match", [
    (np.full((3, 2), 1.0), r"uniforms must lie in \[0, 1\)"),
    (np.full((3, 2), np.nan), r"uniforms must lie in \[0, 1\)"),
    (np.zeros((0, 2)), "at least one row"),
    (np.zeros(3), "uniforms must be a 2-D array"),
    (np.zeros((11, 2)), "cannot seed 11 centers from 10 features"),
])
def test_kmeans_plusplus_rejects_bad_uniforms(uniforms, match):
    from lfagg import _native
    with pytest.raises(ValueError, match=match):
        _native.core.kmeans_plusplus(np.zeros((10, 2)), uniforms)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_take_rows_gathers_as_numpy_indexing(dtype):
    """The core's gather of the codebooks' sample: rows in any order, repeated, none, more
    rows than its threads' share; on every instruction set, for 1-3 threads; and memory of
    its own, which outlives the features it was taken from."""
    from lfagg import _native
    rng = np.random.default_rng(7)
    X = rng.normal(size=(5_000, 13)).astype(dtype)
    for rows in (rng.integers(len(X), size=4_100), np.array([4_999, 0, 0, 7]), np.zeros(0, dtype=np.int64)):
        for core in map(_native.load, _native.available()):
            for n_threads in (1, 2, 3):
                taken = core.take_rows(X, rows, n_threads=n_threads)
                assert taken.dtype == dtype and taken.flags.c_contiguous and taken.flags.writeable
                np.testing.assert_array_equal(taken, X[rows])
    taken = _native.core.take_rows(X, np.arange(3, dtype=np.int64))
    expected, X = X[:3].copy(), None
    np.testing.assert_array_equal(taken, expected)


@pytest.mark.parametrize("rows", [np.array([0, 10]), np.array([-1]), np.array([[0]])])
def test_take_rows_rejects_rows_out_of_range(rows):
    from lfagg import _native
    with pytest.raises(ValueError, match="rows must"):
        _native.core.take_rows(np.zeros((10, 2)), rows.astype(np.int64))


def test_seeding_rows_grow_with_k_between_their_bounds():
    sizes = [seeding_rows(K) for K in (1, 8, 64, 256, 499, 500, 501, 1024, 4096)]
    assert sizes == sorted(sizes) and sizes[0] > 1 and sizes[-1] == SEEDING_MAX
    assert sizes[3] == 100 * 256  # between the bounds, 100 per codeword


def test_kmeans_inertia_on_average_when_clusters_must_merge():
    """Fewer codewords than blobs: each run's local optimum varies by up to 4%, for
    scikit-learn as for lfagg (over 12 seeds lfagg's mean was 0.5% above, over the first 8
    1.7%); over 16 seeds the means must agree within 2%."""
    X = blobs(0)
    ours = np.mean([inertia(X, fit_codebook(X, 32, "kmeans", s).centers) for s in range(16)])
    theirs = np.mean([inertia(X, KMeans(32, n_init=1, random_state=s).fit(X).cluster_centers_) for s in range(16)])
    assert ours <= 1.02 * theirs


def test_kmeans_is_reproducible_and_n_init_keeps_the_best():
    X = blobs(3, n=8000)
    one = fit_codebook(X, 16, "kmeans", 5).centers
    np.testing.assert_array_equal(fit_codebook(X, 16, "kmeans", 5).centers, one)
    three = fit_codebook(X, 16, "kmeans", 5, n_init=3).centers
    assert inertia(X, three) <= inertia(X, one) * (1 + 1e-12)


def gmm_score(X, weights, means, variances):
    model = GaussianMixture(len(weights), covariance_type="diag")
    model.weights_, model.means_, model.covariances_ = weights, means, variances
    model.precisions_cholesky_ = 1 / np.sqrt(variances)
    return model.score(X)


def test_gmm_is_as_likely_as_scikit_learns_on_average():
    X = blobs(4, n=10_000, dim=8, n_blobs=12)
    ours = [fit_codebook(X, 12, "gmm", s, max_iter=50) for s in range(6)]
    assert all(np.isclose(c.weights.sum(), 1) and (c.variances > 0).all() for c in ours)
    mean_ours = np.mean([gmm_score(X, c.weights, c.centers, c.variances) for c in ours])
    mean_theirs = np.mean([GaussianMixture(12, covariance_type="diag", max_iter=50, random_state=s).fit(X).score(X)
                           for s in range(6)])
    assert mean_ours >= mean_theirs - 0.005 * abs(mean_theirs)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_em_iterations_equal_scikit_learns_from_the_same_start(monkeypatch, dtype, rtol):
    rng = np.random.default_rng(7)
    X = blobs(5, n=3_000, dim=6, n_blobs=4) * rng.uniform(0.5, 3.0, 6)
    K = 5  # one component more than the blobs
    start = codebook.Codebook(X[rng.choice(len(X), K, replace=False)], rng.uniform(0.5, 2.0, (K, 6)),
                              rng.dirichlet(np.ones(K)))
    for n_iter in (1, 6):
        with pytest.warns(ConvergenceWarning, match=f"did not settle in {n_iter} EM iterations"):
            ours = codebook.em_gmm(X.astype(dtype), start, max_iter=n_iter, reg_covar=1e-4, tol=-np.inf, n_threads=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations, on purpose
            theirs = GaussianMixture(K, covariance_type="diag", max_iter=n_iter, tol=0, reg_covar=1e-4,
                                     means_init=start.centers, weights_init=start.weights,
                                     precisions_init=1 / start.variances).fit(X)
        np.testing.assert_allclose(ours.centers, theirs.means_, rtol=rtol, atol=rtol * np.abs(X).max())
        np.testing.assert_allclose(ours.variances, theirs.covariances_, rtol=rtol * 10)
        np.testing.assert_allclose(ours.weights, theirs.weights_, rtol=rtol, atol=1e-12)


class CountingCore:
    """lfagg's core, counting the calls of its Fisher Vector kernel (one per EM iteration)."""

    def __init__(self, core):
        self.core, self.calls = core, 0

    def __getattr__(self, name):
        return getattr(self.core, name)

    def fisher_vector(self, *args, **kwargs):
        self.calls += 1
        return self.core.fisher_vector(*args, **kwargs)


@pytest.mark.parametrize("tol", [codebook.GMM_TOL, 1e-5])
def test_em_stops_once_a_step_gains_less_than_tol_per_dimension_and_keeps_a_component_without_mass(monkeypatch, tol):
    # Overlapping blobs: the gains shrink over tens of iterations, so tol and tol * D stop apart.
    X = blobs(6, n=2_000, dim=6, n_blobs=8).astype(np.float64)
    far = codebook.Codebook(np.vstack([X[:2], np.full((1, 6), 1e3)]), np.ones((3, 6)), np.full(3, 1 / 3))
    core = CountingCore(codebook._native.core)
    monkeypatch.setattr(codebook._native, "core", core)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it settles: no warning
        fitted = codebook.em_gmm(X, far, max_iter=500, tol=tol)
    np.testing.assert_array_equal(fitted.centers[2], far.centers[2])  # no feature is near it: it stays
    np.testing.assert_array_equal(fitted.variances[2], far.variances[2])
    n_iter = core.calls
    assert 3 < n_iter < 500

    def score(n):  # the mean log-likelihood after n iterations, by scikit-learn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # cut short on purpose
            c = codebook.em_gmm(X, far, max_iter=n, tol=tol)
        return gmm_score(X, c.weights, c.centers, c.variances)

    # It stops after the M-step of the first E-step whose likelihood gained less than tol * D.
    D = X.shape[1]
    assert score(n_iter - 1) - score(n_iter - 2) < tol * D <= score(n_iter - 2) - score(n_iter - 3)


def test_a_collapsed_gaussian_is_a_clear_error_without_reg_covar():
    import lfagg
    X = np.repeat(np.arange(6.0)[:, None], 50, axis=0) * np.ones((1, 2))  # 6 distinct features, 300 rows
    bags = lfagg.Bags(X, [0, 150, 300])
    assert (lfagg.FisherVector(4, random_state=0).fit(bags).variances_ > 0).all()  # reg_covar 1e-6
    with pytest.raises(ValueError, match="collapsed onto identical features .* reg_covar > 0"):
        lfagg.FisherVector(4, reg_covar=0, random_state=0).fit(bags)
    float32 = lfagg.Bags(X.astype(np.float32), [0, 150, 300])  # a reg_covar float32 holds as 0 is named so
    with pytest.raises(ValueError, match=r"reg_covar > 0 \(it is 1e-50, 0 in the features' float32\)"):
        lfagg.FisherVector(4, reg_covar=1e-50, random_state=0).fit(float32)


def test_fisher_vector_kernel_gives_each_bags_mean_log_likelihood():
    from lfagg import _native
    rng = np.random.default_rng(9)
    X, K = blobs(8, n=1_500, dim=4, n_blobs=3).astype(np.float64), 3
    means, variances, weights = rng.normal(size=(K, 4)), rng.uniform(0.5, 2.0, (K, 4)), rng.dirichlet(np.ones(K))
    offsets = np.array([0, 700, 700, 1_500])
    out = _native.core.fisher_vector(X, offsets, means, variances, weights, with_log_likelihood=True)
    for b, (s, e) in enumerate(zip(offsets[:-1], offsets[1:])):
        if e > s:
            assert out[b, -1] == pytest.approx(gmm_score(X[s:e], weights, means, variances), rel=1e-12)
    assert out[1, -1] == 0  # an empty bag
    np.testing.assert_array_equal(out[:, :-1], _native.core.fisher_vector(X, offsets, means, variances, weights))


def nearest(X, centers):
    """(labels, squared distances) of the rows of X to their nearest centre, in float64."""
    X, centers = X.astype(np.float64), centers.astype(np.float64)
    d = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lloyd_step_matches_numpy(dtype):
    from lfagg import _native
    rng = np.random.default_rng(3)
    X, centers = blobs(3, n=2_001, dim=7).astype(dtype), rng.normal(scale=2.0, size=(37, 7)).astype(dtype)
    counts, means, total, labels, distances = _native.core.kmeans_step(X, centers, return_labels=True)
    ref_labels, ref_distances = nearest(X, centers)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-4)
    np.testing.assert_array_equal(counts, np.bincount(ref_labels, minlength=len(centers)))
    ref_means = np.array([X[ref_labels == k].mean(0) if counts[k] else centers[k] for k in range(len(centers))])
    np.testing.assert_allclose(means, ref_means, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert total == pytest.approx(ref_distances.sum(), rel=1e-5)


def test_lloyd_equals_scikit_learns_lloyd_from_the_same_seeds():
    X = blobs(4, n=5_000).astype(np.float64)
    seeds = X[np.random.default_rng(4).choice(len(X), 24, replace=False)]
    for max_iter in (1, 3, 100):  # cut short, and run until the centres settle (the same tol)
        ours = lloyd(X, seeds, max_iter, inertia_tol=0)
        theirs = KMeans(24, init=seeds, n_init=1, max_iter=max_iter, algorithm="lloyd").fit(X)
        np.testing.assert_allclose(ours.centers, theirs.cluster_centers_, rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(ours.labels, theirs.labels_)
        assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-10)


@pytest.mark.parametrize("inertia_tol", [1e-2, 1e-3])
def test_lloyd_stops_at_the_first_iteration_that_gains_less_than_inertia_tol(inertia_tol):
    X = blobs(4, n=5_000).astype(np.float64)
    seeds = X[np.random.default_rng(4).choice(len(X), 24, replace=False)]
    inertias = [KMeans(24, init=seeds, n_init=1, max_iter=t, algorithm="lloyd").fit(X).inertia_
                for t in range(1, 30)]
    inertias.insert(0, ((X[:, None] - seeds) ** 2).sum(-1).min(1).sum())  # of the seeds themselves
    stop = next(t for t in range(1, 30) if inertias[t - 1] - inertias[t] < inertia_tol * inertias[t])
    assert 1 < stop < 20  # a test of the rule, not of the centres settling or of max_iter
    ours = lloyd(X, seeds, 100, inertia_tol=inertia_tol)
    theirs = KMeans(24, init=seeds, n_init=1, max_iter=stop, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(ours.centers, theirs.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert ours.inertia == pytest.approx(inertias[stop], rel=1e-10)


def test_lloyd_moves_a_centre_left_without_features():
    X = blobs(5, n=3_000)
    seeds = X[:8].copy()
    seeds[5] = seeds[2]  # ties go to the lowest index: centre 5 starts with no features
    fit = lloyd(X, seeds, 1)
    assert np.bincount(fit.labels, minlength=8).min() > 0
    _, distances = nearest(X, seeds)
    np.testing.assert_array_equal(fit.centers[5], X[distances.argmax()])


def test_lloyd_is_the_same_for_every_thread_count():
    X = blobs(6, n=20_000)
    seeds = X[:64].copy()
    one, two = lloyd(X, seeds, 5, n_threads=1), lloyd(X, seeds, 5, n_threads=2)
    np.testing.assert_array_equal(one.centers, two.centers)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.inertia == two.inertia


def test_auto_gamma_is_exact_far_from_the_origin():
    """Features and codewords 1e6 away from the origin, 0.01 apart: the same gamma as at the
    origin (the expanded distance would cancel to noise there), the median of the exact
    squared distances computed directly."""
    rng = np.random.default_rng(3)
    X, C, P = rng.normal(scale=0.01, size=(500, 3)), rng.normal(scale=0.01, size=(4, 3)), rng.uniform(1, 2, (4, 3))
    exact = 1 / np.median((((X[:, None] - C[None]) ** 2) * P[None]).sum(-1).min(1))
    assert codebook.auto_gamma(X, C, P) == pytest.approx(exact, rel=1e-9)
    assert codebook.auto_gamma(X + 1e6, C + 1e6, P) == pytest.approx(exact, rel=1e-6)


def test_auto_gamma_when_most_features_are_codewords():
    """Over half the features on a codeword: the median of the others' distances, not 1."""
    C = np.array([[0.0, 0.0], [10.0, 0.0]])
    X = np.vstack([np.repeat(C, 30, axis=0), [[0.0, 0.5], [10.0, 0.6], [0.0, 2.0]]])
    assert codebook.auto_gamma(X, C, np.ones_like(C)) == pytest.approx(1 / 0.36)  # median of 0.25, 0.36, 4


def test_auto_gamma_of_features_on_codewords_that_do_not_round_to_them():
    """Distances of features on their codewords, computed by the expanded product, are
    rounding noise (1e-15): gamma was 1 / that (2**50) instead of the fallback."""
    rng = np.random.default_rng(0)
    C = rng.normal(size=(6, 5))
    X = C[rng.integers(0, 6, 1200)]
    assert codebook.auto_gamma(X, C, np.ones_like(C)) == 1.0  # all on codewords: no spread to take
    off = np.vstack([X, X[:400] + 0.1])  # a third of them 0.1 off theirs in each of 5 dimensions
    assert codebook.auto_gamma(off, C, np.ones_like(C)) == pytest.approx(1 / 0.05)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_lloyds_tolerance_scale_is_the_variance_also_far_from_the_origin(offset):
    """Lloyd's KMEANS_TOL is relative to the sample's mean variance per dimension: the same
    as numpy's (two-pass) at the origin and 1e6 away from it, where the mean of the
    squares less the squared mean would cancel (it gave 23x the variance here)."""
    X = np.random.default_rng(4).normal(scale=0.01, size=(20_000, 8)) + offset
    assert codebook.mean_variance(X) == pytest.approx(X.var(axis=0).mean(), rel=1e-9)


@pytest.mark.parametrize("dtype,small,workable", [(np.float32, -66, -33), (np.float64, -560, -460)])
def test_features_too_small_for_the_dtypes_distances_are_an_error(dtype, small, workable):
    """Features of 2**small (1e-20 in float32, 1e-169 in float64): their squared distances
    flush to zero and every feature would tie with codeword 0; a ValueError that says to
    rescale, from the estimators' K-Means. At 2**workable they cluster exactly as at unit
    scale (powers of two scale every operation exactly)."""
    import lfagg
    X = blobs(6, n=2_000, dim=3)
    bags = lfagg.Bags(X.astype(dtype) * dtype(2.0 ** small), np.array([0, 1_000, 2_000]))
    with pytest.raises(ValueError, match="spread too little for .* rescale them"):
        lfagg.BagOfWords(4, random_state=0).fit(bags)
    big = lfagg.Bags(X.astype(dtype) * dtype(2.0 ** workable), bags.offsets)
    unit = lfagg.Bags(X.astype(dtype), bags.offsets)
    np.testing.assert_array_equal(lfagg.BagOfWords(4, random_state=0).fit_transform(big),
                                  lfagg.BagOfWords(4, random_state=0).fit_transform(unit))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_codewords=0), "n_codewords must be a positive integer"),  # OverflowError / ZeroDivisionError
    (dict(n_init=0), "n_init must be a positive integer"),  # AttributeError on None
    (dict(max_iter=0), "max_iter must be a positive integer"),  # silently the default 20
    (dict(max_iter=-1, init="gmm"), "max_iter must be a positive integer"),  # silently the K-Means start
    (dict(sample="int"), "sample must be a float32 or float64"),  # a pybind TypeError
    (dict(sample="nan", init="random"), "sample contains NaN or infinity"),  # NaN codewords, silently
])
def test_fit_codebook_checks_its_arguments(kwargs, message):
    """Called directly (the estimators check their own): each failed in another library's
    words, or passed silently."""
    X = np.random.default_rng(0).normal(size=(200, 3))
    sample = {"int": X.astype(np.int64), "nan": np.where(np.arange(200)[:, None] == 5, np.nan, X)}.get(
        kwargs.pop("sample", None), X)
    with pytest.raises(ValueError, match=message):
        fit_codebook(sample, **{"n_codewords": 4, "init": "kmeans", "seed": 0, **kwargs})


def test_fewer_distinct_features_than_codewords_is_warned_about():
    """It passed silently (scikit-learn's KMeans warns): 10 codewords of 5 distinct rows."""
    X = np.repeat(np.random.default_rng(0).normal(size=(5, 4)), 200, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"found [1-9] distinct clusters, fewer than n_codewords = 10"):
        centers = fit_codebook(X, 10, "kmeans", 0).centers
    assert len(np.unique(centers, axis=0)) < 10
