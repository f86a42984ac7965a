"""ops.bow / vlad / fisher_vector and lfagg.normalize against independent references:
numpy (baseline_reference.py), scikit-image's fisher_vector and VLFeat through cyvlfeat
(skipped when not installed); thread-count determinism; every bad argument named."""

import warnings

import numpy as np
import pytest

import lfagg.ops as ops
from baseline_reference import bag_slices, nearest_center, ref_bow, ref_fisher_vector, ref_vlad
from lfagg.normalize import MIN_NORM, improved_fisher_normalize, intra_normalize, l2_normalize, power_normalize

# one bag crossing many 512-row tiles, and small ragged bags with empty ones
LAYOUTS = {"one_big_bag": [3000], "ragged_with_empty": [5, 0, 1, 17, 0, 600, 3, 0, 129, 2, 31, 0]}
DTYPES = [np.float64, np.float32]


def offsets_of(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def clustered(rng, sizes, d=12, k=6, dtype=np.float64, offset=0.0):
    """Features drawn around k well-separated centres, so float32 rounding never changes
    the nearest centre; returns (features, offsets, centers)."""
    offsets = offsets_of(sizes)
    centers = rng.normal(scale=4.0, size=(k, d)) + offset
    labels = rng.integers(0, k, size=offsets[-1])
    features = centers[labels] + rng.normal(scale=0.5, size=(offsets[-1], d))
    return features.astype(dtype), offsets, centers


def gmm_params(rng, k, d):
    return rng.normal(scale=2.0, size=(k, d)), rng.uniform(0.3, 2.0, size=(k, d)), rng.dirichlet(np.full(k, 2.0))


def tolerance(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)


# ----------------------------------------------------------------------------- Bag of Words


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bow_matches_numpy_histogram(layout, dtype):
    f, offsets, c = clustered(np.random.default_rng(1), LAYOUTS[layout], dtype=dtype)
    out = ops.bow(f, offsets, c)
    assert out.dtype == dtype and out.shape == (len(offsets) - 1, len(c))
    np.testing.assert_allclose(out, ref_bow(f, offsets, c), rtol=1e-6)
    sizes = np.diff(offsets)
    np.testing.assert_allclose(out.sum(axis=1), (sizes > 0).astype(float), rtol=1e-6)


def test_bow_far_from_origin_float32():
    # the shift by the mean centre keeps |f|^2 - 2 f.c + |c|^2 from cancelling
    f, offsets, c = clustered(np.random.default_rng(2), [700, 50], dtype=np.float32, offset=1e4)
    np.testing.assert_array_equal(ops.bow(f, offsets, c), ref_bow(f, offsets, c).astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bow_ties_go_to_the_lowest_index(dtype):
    # every codeword twice: each feature ties between k and k + 6, and counts only for k
    f, offsets, c = clustered(np.random.default_rng(5), LAYOUTS["ragged_with_empty"], dtype=dtype)
    out = ops.bow(f, offsets, np.vstack([c, c]))
    np.testing.assert_array_equal(out[:, len(c):], 0)
    np.testing.assert_allclose(out[:, :len(c)], ref_bow(f, offsets, c), rtol=1e-6)


def test_bow_many_codewords_matches_numpy():
    # K and the bags' sizes not multiples of the vector width; nearest centres far from tied
    rng = np.random.default_rng(6)
    sizes = [1, 37, 1000, 5]
    f, c = rng.normal(size=(sum(sizes), 9)), rng.normal(size=(301, 9))
    np.testing.assert_allclose(ops.bow(f, offsets_of(sizes), c), ref_bow(f, offsets_of(sizes), c), rtol=1e-12)


def test_bow_overflow_in_float32_is_an_error():
    f = np.full((4, 3), 3e38, dtype=np.float32)
    f[1] = -3e38
    with pytest.raises(ValueError, match="overflowed"):
        ops.bow(f, [0, 4], np.zeros((2, 3)) + [[1.0], [-1.0]])


def test_fisher_vector_names_values_beyond_float32_range():
    """A subnormal variance's precision overflows: the message said the inputs were "too
    large" and ended in a garbled "(float32 ones: or use float64)"; a weight of 1e-300,
    0 in float32, was reported as "found 0.000000"."""
    f = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    means, weights = np.zeros((2, 3)), np.full(2, 0.5)
    with pytest.raises(ValueError, match=r"variances are out of this floating-point type's range; rescale them, "
                                         r"or compute in float64 \(float64 arrays\)$"):
        ops.fisher_vector(f, [0, 10], means, np.full((2, 3), 1e-40), weights)
    with pytest.raises(ValueError, match=r"variances are out of this floating-point type's range; rescale them$"):
        ops.fisher_vector(f.astype(np.float64), [0, 10], means, np.full((2, 3), 1e-320), weights)  # no float64 advice
    big = np.array([[1e200, 0.0], [0.0, 1e200]])  # the nearest-centre twin of the message advised float64 too
    with pytest.raises(ValueError, match=r"nearest-centre distances overflowed: .* rescale them$"):
        ops.bow(big, [0, 2], big)
    with pytest.raises(ValueError, match=r"rescale them, or compute in float64 \(float64 arrays\)$"):
        ops.bow(np.array([[3e38, 0], [0, 3e38]], np.float32), [0, 2], np.array([[-3e38, 0], [0, -3e38]], np.float32))
    with pytest.raises(ValueError, match=r"weights must be strictly positive, found 0 \(a positive value below "
                                         r"this floating-point type's range reads as 0\)"):
        ops.fisher_vector(f, [0, 10], means, np.ones((2, 3)), np.array([0.5, 1e-300]))
    with pytest.raises(ValueError, match=r"weights must be strictly positive, found -2.5e-07$"):
        ops.fisher_vector(f, [0, 10], means, np.ones((2, 3)), np.array([0.5, -2.5e-7]))


@pytest.mark.parametrize("row", [0, 45, 99])  # in the first / a middle block of rows, in the tail
@pytest.mark.parametrize("x", [-2e38, 2e38], ids=["least", "other"])
def test_one_overflowing_score_among_finite_ones_is_an_error(row, x):
    # Scores |C_k|^2 - 2 f.C_k of the row f = (x, 0) (the centres' mean is 0): 0.26 - x twice
    # and 1 + 2x. x = -2e38: the least score overflows to -inf; x = 2e38: only a score that
    # is not the least overflows (to +inf). Either must be caught wherever the row lies.
    f = np.random.default_rng(row).normal(size=(100, 2)).astype(np.float32)
    c = np.array([[0.5, 0.1], [0.5, -0.1], [-1.0, 0.0]])
    np.testing.assert_allclose(ops.bow(f, [0, 100], c), ref_bow(f, [0, 100], c), atol=1e-6)
    f[row] = [x, 0]
    with pytest.raises(ValueError, match="overflowed"):
        ops.bow(f, [0, 100], c)


# ----------------------------------------------------------------------------- VLAD
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_vlad_residuals_are_exact_when_the_centres_spread_far_wider_than_the_features(dtype):
    """Formed as sum f' - mass C' about the centres' mean, the residuals lost what the
    rounding of both terms at the codebook's scale leaves: 100 features one ulp below a
    centre 1,000 away from the other gave -0.0039 instead of -0.0061 in float32 (the
    difference of two float32 this close is exact)."""
    p = dtype(1000.3366)
    c0 = np.nextafter(p, dtype(np.inf))
    out = ops.vlad(np.full((100, 1), p, dtype), [0, 100], np.array([[c0], [p + dtype(1000)]], dtype))
    assert out[0, 0] == dtype(100 * (float(p) - float(c0)))
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 255, size=(16, 8)).astype(dtype)
    labels = rng.integers(0, 16, size=400)
    features = (centres[labels] + rng.normal(scale=0.01, size=(400, 8))).astype(dtype)
    offsets = np.array([0, 150, 400])
    ref = np.zeros((2, 16, 8))
    for b in range(2):
        for n in range(offsets[b], offsets[b + 1]):
            ref[b, labels[n]] += features[n].astype(np.float64) - centres[labels[n]]
    np.testing.assert_allclose(ops.vlad(features, offsets, centres).reshape(2, 16, 8), ref,
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-12)




@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "weights"])
def test_vlad_matches_numpy(layout, dtype, soft):
    rng = np.random.default_rng(3)
    f, offsets, c = clustered(rng, LAYOUTS[layout], dtype=dtype)
    a = rng.dirichlet(np.ones(len(c)), size=len(f)) if soft else None
    out = ops.vlad(f, offsets, c, a)
    ref = ref_vlad(f, offsets, c, a)
    assert out.dtype == dtype and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=tolerance(dtype)["rtol"], atol=1e-5 * np.abs(ref).max())


def test_vlad_with_one_hot_weights_equals_hard():
    f, offsets, c = clustered(np.random.default_rng(4), LAYOUTS["ragged_with_empty"])
    one_hot = np.eye(len(c))[nearest_center(f, c)]
    np.testing.assert_allclose(ops.vlad(f, offsets, c, one_hot), ops.vlad(f, offsets, c), atol=1e-10)


VLAD_FLAGS = {
    "unnormalized": dict(unnormalized=True),
    "l2": dict(),
    "sqrt_l2": dict(square_root=True),
    "intra_l2": dict(normalize_components=True),
    "sqrt_intra_unnormalized": dict(square_root=True, normalize_components=True, unnormalized=True),
}


def normalized_like_vl_vlad(v, k, unnormalized=False, square_root=False, normalize_components=False):
    """lfagg's normalisations, composed in vl_vlad's order."""
    if square_root:
        v = power_normalize(v, 0.5)
    if normalize_components:
        v = intra_normalize(v, k)
    return v if unnormalized else l2_normalize(v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("flags", VLAD_FLAGS)
def test_vlad_matches_vlfeat(flags, soft, dtype):
    cy_vlad = pytest.importorskip("cyvlfeat.vlad").vlad
    rng = np.random.default_rng(5)
    f, offsets, c = clustered(rng, [300, 7, 1200], dtype=dtype)
    c = c.astype(dtype)
    a = (rng.dirichlet(np.ones(len(c)), size=len(f)) if soft else np.eye(len(c))[nearest_center(f, c)]).astype(dtype)
    ours = normalized_like_vl_vlad(ops.vlad(f, offsets, c, None if not soft else a), len(c), **VLAD_FLAGS[flags])
    for b, s in enumerate(bag_slices(offsets)):
        theirs = cy_vlad(f[s], c, a[s], **VLAD_FLAGS[flags]).ravel()
        # float32 sums of 1200 features, rounded differently, then square-rooted
        atol = (1e-4 if dtype == np.float32 else 1e-12) * np.abs(theirs).max()
        np.testing.assert_allclose(ours[b], theirs, rtol=tolerance(dtype)["rtol"], atol=atol)


# ----------------------------------------------------------------------------- Fisher Vectors


@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fisher_vector_matches_numpy(layout, dtype, with_weights):
    rng = np.random.default_rng(6)
    sizes = LAYOUTS[layout]
    means, variances, weights = gmm_params(rng, 5, 9)
    f = rng.normal(scale=2.0, size=(sum(sizes), 9)).astype(dtype)
    offsets = offsets_of(sizes)
    args = (f, offsets, means, variances, weights)
    raw = ops.fisher_vector(*args, with_weights=with_weights)
    ref = ref_fisher_vector(*args, with_weights=with_weights)
    assert raw.dtype == dtype and raw.shape == (len(sizes), 2 * 5 * 9 + (5 if with_weights else 0))
    np.testing.assert_allclose(raw, ref, rtol=tolerance(dtype)["rtol"], atol=1e-5 * np.abs(ref).max())
    improved = improved_fisher_normalize(raw)
    ref_improved = np.sign(ref) * np.sqrt(np.abs(ref))
    norms = np.linalg.norm(ref_improved, axis=1, keepdims=True)
    ref_improved = np.divide(ref_improved, norms, out=np.zeros_like(ref_improved), where=norms > 0)
    np.testing.assert_allclose(improved, ref_improved, atol=1e-4 if dtype == np.float32 else 1e-9)


def test_fisher_vector_posteriors_are_stable_far_from_every_component():
    # exp(-d/2) underflows to 0 for every component here; log-space posteriors do not
    rng = np.random.default_rng(7)
    means, variances, weights = gmm_params(rng, 4, 6)
    f = rng.normal(size=(50, 6)) + 60.0
    ref = ref_fisher_vector(f, [0, 50], means, variances, weights)
    out = ops.fisher_vector(f, [0, 50], means, variances, weights)
    assert np.isfinite(out).all()
    # entries of about 1e-310 (subnormal) are flushed to zero by the kernels, by design
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=np.finfo(np.float64).tiny)
    assert np.abs(out).max() > 1e-3


def test_fisher_vector_far_from_origin_float32():
    rng = np.random.default_rng(8)
    means, variances, weights = gmm_params(rng, 4, 6)
    f = rng.normal(scale=2.0, size=(2000, 6))
    ref = ref_fisher_vector(f, [0, 2000], means, variances, weights)
    shift = 1e3  # the same problem translated: the encoding must not change
    out = ops.fisher_vector((f + shift).astype(np.float32), [0, 2000], means + shift, variances, weights)
    np.testing.assert_allclose(out, ref, atol=2e-3 * np.abs(ref).max())


def fitted_gmm(rng, features, k):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, covariance_type="diag", random_state=0).fit(features)


def from_scikit_image_layout(fv, k, kd):
    """scikit-image's [d_pi (K), d_mu (K*D), d_sigma (K*D)] in lfagg's [u, v, a] layout.

    scikit-image's variance block is the negative of Perronnin's (and VLFeat's): it uses
    (sigma^2 - (x - mu)^2) where the gradient of the log-likelihood has ((x - mu)^2 - sigma^2).
    Both the signed square root and the L2 normalisation commute with this map.
    """
    return np.concatenate([fv[k:k + kd], -fv[k + kd:], fv[:k]])


@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fisher_vector_matches_scikit_image(dtype, improved):
    skimage_feature = pytest.importorskip("skimage.feature")
    if not hasattr(skimage_feature, "fisher_vector"):
        pytest.skip("this scikit-image has no fisher_vector")
    rng = np.random.default_rng(9)
    train = rng.normal(size=(3000, 7)) * rng.uniform(0.5, 3.0, size=7)
    gmm = fitted_gmm(rng, train, 5)
    bags = [train[:400], rng.normal(size=(900, 7)) * 2.0]
    offsets = offsets_of([len(b) for b in bags])
    ours = ops.fisher_vector(np.concatenate(bags).astype(dtype), offsets, gmm.means_, gmm.covariances_,
                             gmm.weights_, with_weights=True)
    if improved:
        ours = improved_fisher_normalize(ours)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=2e-4, atol=1e-5)
    for b, bag in enumerate(bags):
        theirs = skimage_feature.fisher_vector(bag, gmm, improved=improved)
        np.testing.assert_allclose(ours[b], from_scikit_image_layout(theirs, 5, 5 * 7), **tol)


@pytest.mark.parametrize("improved", [False, True])
def test_fisher_vector_matches_vlfeat(improved):
    cy_fisher = pytest.importorskip("cyvlfeat.fisher").fisher
    rng = np.random.default_rng(10)
    means, variances, weights = (x.astype(np.float32) for x in gmm_params(rng, 6, 8))
    f = (rng.normal(scale=2.0, size=(1500, 8))).astype(np.float32)
    offsets = offsets_of([1000, 13, 487])
    ours = ops.fisher_vector(f, offsets, means, variances, weights)
    if improved:
        ours = improved_fisher_normalize(ours)
    for b, s in enumerate(bag_slices(offsets)):
        theirs = cy_fisher(f[s], means, variances, weights, improved=improved).ravel()
        # VLFeat drops posteriors below 1e-6; lfagg keeps them: a few 1e-6 of difference
        np.testing.assert_allclose(ours[b], theirs, atol=2e-5 * max(1.0, np.abs(theirs).max()))


# ----------------------------------------------------------------------------- all encoders


def encoders(rng, f, k=7):
    means, variances, weights = gmm_params(rng, k, f.shape[1])
    weights_nk = rng.dirichlet(np.ones(k), size=len(f))
    return {
        "bow": lambda **kw: ops.bow(f, OFFSETS, means, **kw),
        "vlad": lambda **kw: ops.vlad(f, OFFSETS, means, **kw),
        "vlad_weights": lambda **kw: ops.vlad(f, OFFSETS, means, weights_nk, **kw),
        "fisher_vector": lambda **kw: ops.fisher_vector(f, OFFSETS, means, variances, weights, **kw),
        "fisher_vector_weights": lambda **kw: ops.fisher_vector(f, OFFSETS, means, variances, weights,
                                                                with_weights=True, **kw),
    }


OFFSETS = offsets_of([2500, 0, 3, 1700, 511, 513])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["bow", "vlad", "vlad_weights", "fisher_vector", "fisher_vector_weights"])
def test_results_identical_for_every_thread_count(name, dtype):
    rng = np.random.default_rng(11)
    f = rng.normal(scale=2.0, size=(OFFSETS[-1], 10)).astype(dtype)
    # 300 codewords: 128-row tiles, so bags cross tiles and waves of tiles (16 per thread)
    encode = encoders(rng, f, k=300)[name]
    serial = encode(n_threads=1)
    for n_threads in (2, 3, 5, None):
        np.testing.assert_array_equal(encode(n_threads=n_threads), serial)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_bags_crossing_waves_of_tiles(n_threads):
    rng = np.random.default_rng(13)
    f = rng.normal(scale=2.0, size=(OFFSETS[-1], 10))
    means, variances, weights = gmm_params(rng, 300, 10)  # 41 tiles of 128 rows: 3 waves on one thread
    np.testing.assert_allclose(ops.bow(f, OFFSETS, means, n_threads=n_threads), ref_bow(f, OFFSETS, means))
    np.testing.assert_allclose(ops.fisher_vector(f, OFFSETS, means, variances, weights, n_threads=n_threads),
                               ref_fisher_vector(f, OFFSETS, means, variances, weights), rtol=1e-9, atol=1e-12)


def test_float32_features_give_float32():
    rng = np.random.default_rng(12)
    f = rng.normal(size=(OFFSETS[-1], 4)).astype(np.float32)
    for encode in encoders(rng, f).values():
        assert encode().dtype == np.float32


# ----------------------------------------------------------------------------- normalisations


def test_normalisations_follow_their_formulas():
    x = np.array([[4.0, -9.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(power_normalize(x), [[2.0, -3.0, 0.0, 0.5], [0, 0, 0, 0]])
    np.testing.assert_allclose(power_normalize(x, 1.0), x)
    np.testing.assert_allclose(l2_normalize(x)[0], x[0] / np.sqrt(16 + 81 + 0.0625))
    np.testing.assert_array_equal(l2_normalize(x)[1], 0.0)  # a zero row stays zero
    blocks = intra_normalize(x, 2)
    np.testing.assert_allclose(blocks[0], [4 / np.sqrt(97), -9 / np.sqrt(97), 0.0, 1.0])
    np.testing.assert_allclose(improved_fisher_normalize(x)[0], [2, -3, 0, 0.5] / np.sqrt(4 + 9 + 0.25))
    assert power_normalize(x.astype(np.float32)).dtype == np.float32
    for normalize in (l2_normalize, improved_fisher_normalize, lambda v: intra_normalize(v, 2)):
        half = normalize(x.astype(np.float16))  # float16 once held MIN_NORM as 0: a zero row became NaN
        assert half.dtype == np.float16 and not half[1].any()
        np.testing.assert_allclose(half[0], normalize(x)[0], rtol=2e-3)


@pytest.mark.parametrize("dtype,big", [(np.float32, 3e20), (np.float64, 3e200)])
def test_l2_normalisation_of_rows_whose_norm_overflows_the_dtype(dtype, big):
    """Rows whose squared norm is beyond the dtype's range still come out of unit norm (not
    zero), a row below MIN_NORM is divided by MIN_NORM as before, a zero row stays zero."""
    x = np.array([[big, 4 * big / 3, 0], [1e-14, 0, 0], [0, 0, 0]], dtype=dtype)
    out = l2_normalize(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, [[0.6, 0.8, 0], [0.01, 0, 0], [0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(intra_normalize(np.hstack([x, x / big]), 2)[0], [0.6, 0.8, 0, 0.6, 0.8, 0], rtol=1e-6)


@pytest.mark.filterwarnings("error")
def test_l2_normalisation_of_subnormal_rows():
    """A row of subnormal values is divided by MIN_NORM as any row below it: MIN_NORM over
    the row's scale overflowed, which gave 0 with a RuntimeWarning."""
    tiny = np.finfo(np.float64).smallest_subnormal
    out = l2_normalize(np.array([[tiny, 0.0], [3 * tiny, -4 * tiny], [3.0, 4.0]]))
    np.testing.assert_array_equal(out[:2], np.array([[tiny, 0], [3 * tiny, -4 * tiny]]) / MIN_NORM)
    np.testing.assert_allclose(out[2], [0.6, 0.8])


@pytest.mark.parametrize("call, name", [
    (lambda: power_normalize(np.ones(3)), "x"),
    (lambda: power_normalize(np.ones((2, 2)), 0.0), "alpha"),
    (lambda: l2_normalize(np.array([["a"]])), "x"),
    (lambda: intra_normalize(np.ones((2, 6)), 4), "n_blocks"),
    (lambda: intra_normalize(np.ones((2, 6)), 0), "n_blocks"),
    (lambda: l2_normalize(np.array([[np.inf, 1.0]])), "x contains NaN or infinity"),  # was [[nan, nan]]
    (lambda: improved_fisher_normalize(np.array([[1.0, np.nan]], dtype=np.float32)), "x contains NaN"),
    (lambda: power_normalize(np.array([[1.0, 0.0, np.nan, 0.0]])[:, ::2]), "x contains NaN"),  # not contiguous
])
def test_normalisation_errors(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ----------------------------------------------------------------------------- errors

N, D, K = 10, 3, 4
ERR_OFFSETS = np.array([0, 4, 4, 10])


def call_op(op, **overrides):
    rng = np.random.default_rng(0)
    args = dict(features=rng.normal(size=(N, D)), offsets=ERR_OFFSETS, n_threads=None)
    if op == "fisher_vector":
        args.update(means=rng.normal(size=(K, D)), variances=np.ones((K, D)), weights=np.full(K, 1 / K))
    else:
        args["centers"] = rng.normal(size=(K, D))
    if op == "vlad":
        args["assignments"] = np.full((N, K), 0.25)
    args.update(overrides)
    return getattr(ops, op)(**args)


def nan_at(shape, index, value=np.nan):
    a = np.ones(shape)
    a[index] = value
    return a


COMMON_CASES = [
    ("features_1d", dict(features=np.ones(N)), "features"),
    ("features_no_columns", dict(features=np.ones((N, 0))), "features"),
    ("features_nan", dict(features=nan_at((N, D), (3, 1))), "features"),
    ("features_inf_float32", dict(features=nan_at((N, D), (9, 0), np.inf).astype(np.float32)), "features"),
    ("features_strings", dict(features=np.array([["a"]])), "features"),
    ("offsets_float", dict(offsets=ERR_OFFSETS.astype(float)), "offsets"),
    ("offsets_first_nonzero", dict(offsets=np.array([1, 4, 4, 10])), "offsets"),
    ("offsets_decreasing", dict(offsets=np.array([0, 6, 4, 10])), "offsets"),
    ("offsets_last_wrong", dict(offsets=np.array([0, 4, 4, 9])), "offsets"),
    ("offsets_empty", dict(offsets=np.array([], dtype=np.int64)), "offsets"),
    ("offsets_0d", dict(features=np.ones((0, D)), offsets=np.array(0)), "offsets must be a 1-D"),  # was one bag
    ("n_threads_zero", dict(n_threads=0), "n_threads"),
]
CODEBOOK_CASES = [
    ("centers_1d", dict(centers=np.ones(D)), "centers"),
    ("centers_wrong_dim", dict(centers=np.ones((K, D + 1))), "centers"),
    ("centers_no_rows", dict(centers=np.ones((0, D))), "centers"),
    ("centers_nan", dict(centers=nan_at((K, D), (0, 2))), "centers"),
]
VLAD_CASES = [
    ("assignments_wrong_rows", dict(assignments=np.ones((N - 1, K))), "assignments"),
    ("assignments_wrong_cols", dict(assignments=np.ones((N, K + 1))), "assignments"),
    ("assignments_1d", dict(assignments=np.ones(N * K)), "assignments"),
    ("assignments_nan", dict(assignments=nan_at((N, K), (2, 2))), "assignments"),
    ("assignments_negative", dict(assignments=nan_at((N, K), (2, 2), -0.1)), "assignments"),
]
FISHER_CASES = [
    ("means_wrong_dim", dict(means=np.ones((K, D + 1))), "means"),
    ("means_no_rows", dict(means=np.ones((0, D)), variances=np.ones((0, D)), weights=np.ones(0)), "means"),
    ("means_inf", dict(means=nan_at((K, D), (1, 1), np.inf)), "means"),
    ("variances_wrong_shape", dict(variances=np.ones((K - 1, D))), "variances"),
    ("variances_zero", dict(variances=nan_at((K, D), (1, 0), 0.0)), "variances"),
    ("variances_negative", dict(variances=nan_at((K, D), (1, 0), -1.0)), "variances"),
    ("variances_nan", dict(variances=nan_at((K, D), (1, 0))), "variances"),
    ("weights_wrong_shape", dict(weights=np.ones(K + 1)), "weights"),
    ("weights_2d", dict(weights=np.ones((K, 1))), "weights"),
    ("weights_zero", dict(weights=nan_at(K, 2, 0.0)), "weights"),
    ("weights_nan", dict(weights=nan_at(K, 2)), "weights"),
]
ERROR_CASES = (
    [("bow", *c) for c in COMMON_CASES + CODEBOOK_CASES]
    + [("vlad", *c) for c in COMMON_CASES + CODEBOOK_CASES + VLAD_CASES]
    + [("fisher_vector", *c) for c in COMMON_CASES + FISHER_CASES]
)


@pytest.mark.parametrize("op, case, overrides, name", ERROR_CASES, ids=[f"{c[0]}-{c[1]}" for c in ERROR_CASES])
def test_bad_argument_raises_value_error_naming_it(op, case, overrides, name):
    with pytest.raises(ValueError, match=name):
        call_op(op, **overrides)


@pytest.mark.parametrize("op", ["bow", "vlad", "fisher_vector"])
def test_valid_call_and_empty_input(op):
    assert call_op(op).shape[0] == len(ERR_OFFSETS) - 1
    empty = call_op(op, features=np.ones((0, D)), offsets=np.array([0, 0]),
                    **({"assignments": np.ones((0, K))} if op == "vlad" else {}))
    assert empty.shape[0] == 1 and not empty.any()


@pytest.mark.parametrize("dtype,small,workable", [(np.float32, -66, -33), (np.float64, -560, -460)])
def test_codebooks_too_small_for_the_dtypes_distances_are_an_error(dtype, small, workable):
    """Features and centres of 2**small: their squared distances flush to zero and every
    feature would tie with codeword 0 (silently: BoW all in bin 0); a ValueError that says
    to rescale. At 2**workable the result is the unit scale's, scaled (powers of two scale
    every operation exactly); VLAD with given assignments computes no distances."""
    rng = np.random.default_rng(0)
    F, C = rng.normal(size=(60, 5)).astype(dtype), rng.normal(size=(4, 5)).astype(dtype)
    offsets = np.array([0, 25, 60])
    for scale in (small, workable):
        s = dtype(2.0 ** scale)
        if scale == small:
            for encode in (ops.bow, ops.vlad):
                with pytest.raises(ValueError, match=r"centers spread too little for .* rescale the features"):
                    encode(F * s, offsets, C * s)
            hard = np.eye(4, dtype=dtype)[np.zeros(60, dtype=int)]
            assert np.all(np.isfinite(ops.vlad(F * s, offsets, C * s, assignments=hard)))
        else:
            np.testing.assert_array_equal(ops.bow(F * s, offsets, C * s), ops.bow(F, offsets, C))
            np.testing.assert_array_equal(ops.vlad(F * s, offsets, C * s), ops.vlad(F, offsets, C) * s)


@pytest.mark.parametrize("dtype,centers", [(np.float64, [[0.0], [1e300]]), (np.float32, [[-3e38], [3e38]])])
def test_centres_spread_beyond_the_dtypes_range_pass_the_underflow_check(dtype, centers):
    """Their span squared overflows (or the span itself): the underflow check must neither
    raise (Python's float ** did: OverflowError, found by the long fuzz) nor warn, and leave
    the overflowing distances to the core's own ValueError."""
    F, C = np.array([[0.0], [1.0]], dtype=dtype), np.array(centers, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="distances overflowed.* rescale them"):
            ops.bow(F, np.array([0, 2]), C)
