"""T1 and T2 with max pooling (LearnedBoW/LearnedVLAD(pooling="max"), SOFT_BOW_MAX,
SOFT_VLAD_MAX): R_b[k] = max_n a_nk and R_b[k, j] = max_n a_nk (f_nj - C_kj) against
float64 numpy references, their gradients against central finite differences of them,
the tie rule, blocks of rows and thread counts; the estimators, ops and torch forms."""

import numpy as np
import pytest

import lfagg
from lfagg.bags import Bags
from lfagg.encoders import SOFT_BOW_MAX, SOFT_VLAD_MAX
from lfagg.encoders import soft as soft_module
from reference import assignments, central_diff
from test_soft_encoders import make_problem, offsets_from_sizes

SIZES = [5, 0, 1, 7, 3, 0, 12]


def ref_max_pooled(features, offsets, centers, precisions, gamma):
    """(n_bags, K): each bag's largest soft assignment per codeword, zeros for an empty bag."""
    out = np.zeros((len(offsets) - 1, len(centers)))
    for b in range(len(offsets) - 1):
        if offsets[b + 1] > offsets[b]:
            out[b] = assignments(features[offsets[b]:offsets[b + 1]], centers, precisions, gamma).max(axis=0)
    return out


def ref_vlad_max(features, offsets, centers, precisions, gamma):
    """(n_bags, K * D): each bag's largest a_nk (f_nj - C_kj) per (k, j), zeros for an empty bag."""
    K, D = np.shape(centers)
    out = np.zeros((len(offsets) - 1, K, D))
    for b in range(len(offsets) - 1):
        f = np.asarray(features[offsets[b]:offsets[b + 1]], dtype=np.float64)
        if len(f):
            a = assignments(f, centers, precisions, gamma)
            out[b] = (a[:, :, None] * (f[:, None, :] - np.asarray(centers, dtype=np.float64))).max(axis=0)
    return out.reshape(len(out), K * D)


#: (encoder, its float64 reference)
ENCODERS = [pytest.param(SOFT_BOW_MAX, ref_max_pooled, id="T1"), pytest.param(SOFT_VLAD_MAX, ref_vlad_max, id="T2")]


def problem(seed, dtype=np.float64, D=4, K=3, encoder=SOFT_BOW_MAX):
    rng = np.random.default_rng(seed)
    f, off, C, P, gamma = make_problem(rng, SIZES, D=D, K=K, dtype=dtype, gamma_times_d=1.5)
    G = rng.normal(size=(len(SIZES), encoder.output_dim(K, D)))
    return f, off, C.astype(dtype), P.astype(dtype), gamma, G.astype(dtype)


@pytest.mark.parametrize("encoder, reference", ENCODERS)
def test_forward_matches_reference_and_empty_bags_are_zero(encoder, reference):
    f, off, C, P, gamma, _ = problem(0, encoder=encoder)
    R, A = encoder.forward(Bags(f, off), C, P, gamma, 2, return_assignments=True)
    np.testing.assert_allclose(R, reference(f, off, C, P, gamma), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(A, assignments(f, C, P, gamma), rtol=1e-12, atol=1e-14)
    assert not R[np.diff(off) == 0].any()


@pytest.mark.parametrize("op", ["soft_bow", "soft_vlad"])
def test_no_bags_at_all_encode_to_an_empty_representation(op):
    """As mean pooling: (0, width). The max's reshape of zero bags was ambiguous (a ValueError)."""
    f, C, P = np.zeros((0, 3), np.float32), np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    R = getattr(lfagg.ops, op)(f, np.array([0]), C, P, 1.0, pooling="max")
    assert R.shape == (0, 2 if op == "soft_bow" else 6) and R.dtype == np.float32
    model = (lfagg.LearnedBoW if op == "soft_bow" else lfagg.LearnedVLAD)(2, pooling="max", n_epochs=1,
                                                                           random_state=0)
    bags, y = lfagg.datasets.make_circles_bags(8, 5, random_state=0)
    assert model.fit(bags, y).predict(bags[:0]).shape == (0,)


@pytest.mark.parametrize("encoder, reference", ENCODERS)
def test_float32_forward_close_to_reference(encoder, reference):
    f, off, C, P, gamma, _ = problem(1, np.float32, encoder=encoder)
    R = encoder.forward(Bags(f, off), C, P, gamma, 1)
    assert R.dtype == np.float32
    np.testing.assert_allclose(R, reference(f, off, C, P, gamma), atol=1e-5)


@pytest.mark.parametrize("encoder, reference", ENCODERS)
def test_gradients_match_finite_differences_of_the_reference(encoder, reference):
    f, off, C, P, gamma, G = problem(2, encoder=encoder)
    gC, gP, gg, gF = encoder.backward(Bags(f, off), C, P, gamma, G, 2, return_grad_features=True)

    def loss(features=f, centers=C, precisions=P, g=gamma):
        return float(np.sum(G * reference(features, off, centers, precisions, g)))

    np.testing.assert_allclose(gC, central_diff(lambda c: loss(centers=c), C), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gP, central_diff(lambda p: loss(precisions=p), P), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gg, central_diff(lambda g: loss(g=g), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gF, central_diff(lambda x: loss(features=x), f), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("encoder, reference", ENCODERS)
def test_blocks_kept_assignments_and_thread_counts_agree_bitwise(monkeypatch, encoder, reference):
    f, off, C, P, gamma, G = problem(3, np.float32, D=9, K=6, encoder=encoder)
    bags = Bags(f, off)
    R, A = encoder.forward(bags, C, P, gamma, 1, return_assignments=True)
    expected = encoder.backward(bags, C, P, gamma, G, 1, assignments=A, return_grad_features=True)
    monkeypatch.setattr(soft_module, "_VLAD_MAX_BLOCK", 2 * C.size)  # T2: the largest bag in 6 blocks of 2 rows
    for n_threads in (1, 2, 3):
        np.testing.assert_array_equal(encoder.forward(bags, C, P, gamma, n_threads), R)
        for kept in (A, None):
            grads = encoder.backward(bags, C, P, gamma, G, n_threads, assignments=kept, return_grad_features=True)
            for mine, theirs in zip(grads, expected):
                np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("block_rows", [1, 3, 100])
@pytest.mark.parametrize("encoder, reference", ENCODERS)
def test_a_repeated_feature_takes_no_gradient(monkeypatch, encoder, reference, block_rows):
    """Of equal maxima the bag's first feature takes dJ/dR (for T2 also when the repeat
    falls in another block of rows): a bag with a feature repeated has the gradients of the
    bag without the repeat."""
    f, _, C, P, gamma, G = problem(4, encoder=encoder)
    monkeypatch.setattr(soft_module, "_VLAD_MAX_BLOCK", block_rows * C.size)
    once, twice = f[:4], np.concatenate([f[:4], f[2:3]])
    g_once = encoder.backward(Bags(once, [0, 4]), C, P, gamma, G[:1], 1, return_grad_features=True)
    g_twice = encoder.backward(Bags(twice, [0, 5]), C, P, gamma, G[:1], 1, return_grad_features=True)
    for a, b in zip(g_once[:3], g_twice[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(g_twice[3][:4], g_once[3])
    assert not g_twice[3][4].any()


def mil_bags(n_bags=40, seed=0):
    """Positive bags hold one feature near a point that negative bags never come near."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 10, n_bags)
    y = np.arange(n_bags) % 2
    features = rng.normal(size=(int(sizes.sum()), 5))
    starts = offsets_from_sizes(sizes)[:-1]
    features[starts[y == 1]] = 6.0 + 0.1 * rng.normal(size=(int(y.sum()), 5))
    return Bags(features, offsets_from_sizes(sizes)), y


@pytest.mark.parametrize("estimator, K, reference, least_score", [
    (lfagg.LearnedBoW, 4, ref_max_pooled, 1.0), (lfagg.LearnedVLAD, 2, ref_vlad_max, 0.9)])
def test_estimators_with_max_pooling_fit_transform_and_round_trip(tmp_path, estimator, K, reference, least_score):
    bags, y = mil_bags()
    model = estimator(K, pooling="max", n_epochs=3, random_state=0, n_threads=1).fit(bags, y)
    expected = reference(bags.features, bags.offsets, model.centers_, 1 / model.covariances_, model.gamma_)
    np.testing.assert_allclose(model.transform(bags), expected, rtol=1e-10, atol=1e-12)
    assert model.score(bags, y) >= least_score  # the telling feature is each positive bag's largest
    lfagg.save(model, tmp_path / "max.lfagg")
    loaded = lfagg.load(tmp_path / "max.lfagg")
    assert loaded.pooling == "max"
    np.testing.assert_array_equal(loaded.predict_proba(bags), model.predict_proba(bags))


def test_bad_pooling_is_a_value_error_naming_it():
    bags, y = mil_bags(8)
    with pytest.raises(ValueError, match="pooling"):
        lfagg.LearnedBoW(2, pooling="sum").fit(bags, y)
    with pytest.raises(ValueError, match="pooling"):
        lfagg.LearnedVLAD(2, pooling="sum").fit(bags, y)


def test_train_encoder_takes_bow_max_by_name():
    bags, y = mil_bags(12)
    rng = np.random.default_rng(0)
    centers = bags.features[rng.choice(bags.n_features, 3, replace=False)]
    targets = np.repeat(y[:, None], 3, axis=1).astype(float)

    def squared_loss(R, t):
        return 0.5 * float(np.sum((R - t) ** 2)), R - t

    result = lfagg.train_encoder(bags, targets, squared_loss, "bow_max", centers, np.ones((3, 5)), 0.5,
                                 n_epochs=2, batch_size=4, random_state=0)
    assert np.all(np.isfinite(result.centers)) and not np.array_equal(result.centers, centers)
    with pytest.raises(TypeError, match="loss must be"):
        lfagg.train_encoder(bags, targets, "softmax", "bow_max", centers, np.ones((3, 5)), 0.5)


def test_the_search_fits_every_candidate_and_refit_with_its_pooling():
    bags, y = mil_bags(30)
    search = lfagg.LearnedBoWCV(n_codewords=(2,), gamma_scale=(1.0,), learning_rate=(1e-2,), max_epochs=1, cv=3,
                                n_estimators=2, pooling="max", random_state=0, n_threads=1).fit(bags, y)
    assert [refit.pooling for refit in search.estimators_] == ["max", "max"]
    refit = search.best_estimator_
    expected = ref_max_pooled(bags.features, bags.offsets, refit.centers_, 1 / refit.covariances_, refit.gamma_)
    np.testing.assert_allclose(search.transform(bags), expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ lfagg.ops and lfagg.torch


@pytest.mark.parametrize("name, encoder, reference", [("soft_bow", SOFT_BOW_MAX, ref_max_pooled),
                                                     ("soft_vlad", SOFT_VLAD_MAX, ref_vlad_max)])
def test_ops_max_pooling_is_the_encoders_and_checks_its_input(name, encoder, reference):
    f, off, C, P, gamma, G = problem(5, encoder=encoder)
    forward, backward = getattr(lfagg.ops, name), getattr(lfagg.ops, name + "_backward")
    R, A = forward(f, off, C, P, gamma, pooling="max", return_assignments=True)
    np.testing.assert_allclose(R, reference(f, off, C, P, gamma), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(R, encoder.forward(Bags(f, off), C, P, gamma))
    out = np.empty_like(A)
    assert forward(f, off, C, P, gamma, pooling="max", assignments_out=out)[1] is out
    np.testing.assert_array_equal(out, A)
    grads = backward(f, off, C, P, gamma, G, pooling="max", assignments=A, return_grad_features=True)
    expected = encoder.backward(Bags(f, off), C, P, gamma, G, return_grad_features=True)
    for mine, theirs in zip(grads, expected):
        np.testing.assert_array_equal(mine, theirs)

    bad_features = f.copy()
    bad_features[3, 1] = np.nan
    nan_for_a_bag = G.copy()
    nan_for_a_bag[0] = np.nan  # bag 0 has features (an empty bag's row is not read)
    read_only = np.empty_like(A)
    read_only.flags.writeable = False
    bad_calls = [
        ("features", lambda: forward(bad_features, off, C, P, gamma, pooling="max")),
        ("pooling", lambda: forward(f, off, C, P, gamma, pooling="sum")),
        ("grad_output", lambda: backward(f, off, C, P, gamma, G[:, :-1], pooling="max")),
        ("grad_output", lambda: backward(f, off, C, P, gamma, nan_for_a_bag, pooling="max", assignments=A)),
        ("assignments", lambda: backward(f, off, C, P, gamma, G, pooling="max", assignments=A[1:])),
        ("assignments_out", lambda: forward(f, off, C, P, gamma, pooling="max", assignments_out=out[1:])),
        ("assignments_out", lambda: forward(f, off, C, P, gamma, pooling="max", assignments_out=read_only)),
    ]
    for bad_offsets in ([0, 2, 1, len(f)], [0, 3], [1, len(f)], [[0, len(f)]]):
        bad_calls += [("offsets", lambda o=bad_offsets: forward(f, o, C, P, gamma, pooling="max")),
                      ("offsets", lambda o=bad_offsets: backward(f, o, C, P, gamma, G[:1], pooling="max")),
                      ("offsets", lambda o=bad_offsets: backward(f, o, C, P, gamma, G[:1], pooling="max",
                                                                  assignments=A))]
    for name, call in bad_calls:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("name, reference", [("soft_bow", ref_max_pooled), ("soft_vlad", ref_vlad_max)])
def test_torch_max_pooling_passes_gradcheck(name, reference, keep):
    torch = pytest.importorskip("torch")
    lt = pytest.importorskip("lfagg.torch")
    function = getattr(lt, name)
    f, off, C, P, gamma, _ = (torch.from_numpy(np.asarray(a)) for a in problem(6))
    inputs = [t.clone().requires_grad_() for t in (f, C, P, gamma)]
    out = function(*inputs[:1], off, *inputs[1:], pooling="max")
    np.testing.assert_allclose(out.detach().numpy(), reference(*problem(6)[:5]), rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda f, c, p, g: function(f, off, c, p, g, keep_assignments=keep, pooling="max"), inputs)


@pytest.mark.parametrize("estimator, layer_class", [("LearnedBoW", "SoftBoW"), ("LearnedVLAD", "SoftVLAD")])
def test_torch_layer_takes_the_pooling_of_its_estimator(estimator, layer_class):
    torch = pytest.importorskip("torch")
    lt = pytest.importorskip("lfagg.torch")
    bags, y = mil_bags()
    model = getattr(lfagg, estimator)(4, pooling="max", n_epochs=1, random_state=0, n_threads=1).fit(bags, y)
    layer = getattr(lt, layer_class).from_estimator(model, dtype=torch.float64)
    assert layer.pooling == "max" and "pooling='max'" in repr(layer)
    out = layer(torch.from_numpy(bags.features), torch.from_numpy(bags.offsets))
    np.testing.assert_allclose(out.detach().numpy(), model.transform(bags), rtol=1e-10, atol=1e-12)
    nested = torch.nested.nested_tensor([torch.from_numpy(bags.features[lo:hi])
                                         for lo, hi in zip(bags.offsets[:-1], bags.offsets[1:])], layout=torch.jagged)
    torch.testing.assert_close(layer(nested), out, rtol=0, atol=0)
    assert getattr(lt, layer_class).from_estimator(model, pooling="mean").pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        getattr(lt, layer_class)(4, 5, pooling="sum")
