"""lfagg.torch: the autograd functions against torch.autograd.gradcheck and against the same
maths written in plain torch ops (an independent reference), jagged nested tensors, the
layers as PyTorch users use them (state_dict, no_grad, dtypes, threads, an optimizer),
from_estimator, and every bad input."""

import types
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lt = pytest.importorskip("lfagg.torch")

import lfagg  # noqa: E402
from lfagg.datasets import make_circles_bags  # noqa: E402

FUNCTIONS = {"bow": lt.soft_bow, "vlad": lt.soft_vlad}
LAYERS = {"bow": lt.SoftBoW, "vlad": lt.SoftVLAD}
SIZES = (4, 0, 1, 6)


def reference(encoder, features, offsets, centers, precisions, gamma):
    """The encoder in plain torch ops (the full N x K x D tensor, fine at these sizes)."""
    diff = features[:, None, :] - centers[None]
    a = torch.softmax(-gamma * (diff ** 2 * precisions[None]).sum(-1), dim=1)
    per_feature = a if encoder == "bow" else (a[:, :, None] * diff).flatten(1)
    rows = [per_feature[lo:hi].mean(0) if hi > lo else per_feature.new_zeros(per_feature.shape[1])
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return torch.stack(rows)


def problem(seed=0, sizes=SIZES, D=3, K=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    features = torch.randn(int(offsets[-1]), D, generator=g, dtype=dtype)
    centers = torch.randn(K, D, generator=g, dtype=dtype)
    precisions = torch.rand(K, D, generator=g, dtype=dtype) + 0.5
    return features, offsets, centers, precisions, torch.tensor(0.3, dtype=dtype)


def with_grad(*tensors):
    return [t.clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("encoder", FUNCTIONS)
def test_gradcheck_float64(encoder, keep):
    features, offsets, centers, precisions, gamma = problem()
    f, c, p, g = with_grad(features, centers, precisions, gamma)
    assert torch.autograd.gradcheck(
        lambda f, c, p, g: FUNCTIONS[encoder](f, offsets, c, p, g, keep_assignments=keep), (f, c, p, g))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("encoder", FUNCTIONS)
def test_values_and_gradients_equal_plain_torch(encoder, dtype, tol):
    features, offsets, centers, precisions, gamma = problem(1, sizes=(30, 0, 1, 200), D=5, K=6, dtype=dtype)
    ours, theirs = with_grad(features, centers, precisions, gamma), with_grad(features, centers, precisions, gamma)
    weights = torch.randn(len(offsets) - 1, 6 if encoder == "bow" else 30, dtype=dtype)
    out = FUNCTIONS[encoder](ours[0], offsets, *ours[1:])
    ref = reference(encoder, theirs[0], offsets, *theirs[1:])
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for mine, other in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, other.grad, rtol=10 * tol, atol=10 * tol * other.grad.abs().max())


@pytest.mark.parametrize("encoder", FUNCTIONS)
def test_forward_is_lfagg_ops_bitwise(encoder):
    features, offsets, centers, precisions, gamma = problem(2, dtype=torch.float32)
    out = FUNCTIONS[encoder](features, offsets, centers, precisions, gamma)
    op = getattr(lfagg.ops, f"soft_{encoder}")
    expected = op(features.numpy(), offsets.numpy(), centers.numpy(), precisions.numpy(), float(gamma))
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("encoder", LAYERS)
def test_a_jagged_nested_tensor_is_the_same_bags(encoder):
    features, offsets, *_ = problem(3)
    layer = LAYERS[encoder](4, 3, dtype=torch.float64)
    bags = [features[lo:hi].clone().requires_grad_() for lo, hi in zip(offsets[:-1], offsets[1:])]
    nested = torch.nested.as_nested_tensor(bags, layout=torch.jagged)
    flat = features.clone().requires_grad_()
    out_nested, out_flat = layer(nested), layer(flat, offsets)
    torch.testing.assert_close(out_nested, out_flat, rtol=0, atol=0)
    out_nested.square().sum().backward()
    out_flat.square().sum().backward()
    torch.testing.assert_close(torch.cat([b.grad for b in bags]), flat.grad)


@pytest.mark.parametrize("encoder", LAYERS)
def test_a_nested_tensor_with_holes_pools_only_its_bags_rows(encoder):
    """torch.nested.narrow's bags are windows of a padded tensor (lengths(), offsets() of
    the windows' starts): only the rows inside each window are features, and the gradient
    reaches the padded tensor there alone."""
    layer = LAYERS[encoder](4, 3, dtype=torch.float64)
    padded = torch.randn(3, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    starts, lengths = [0, 2, 1], [2, 4, 0]
    windows = padded.clone().requires_grad_()
    nested = torch.nested.narrow(windows, 1, torch.tensor(starts), torch.tensor(lengths), layout=torch.jagged)
    assert nested.lengths() is not None
    flat = torch.cat([padded[b, s:s + n] for b, (s, n) in enumerate(zip(starts, lengths))]).requires_grad_()
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    out_nested, out_flat = layer(nested), layer(flat, offsets)
    torch.testing.assert_close(out_nested, out_flat, rtol=0, atol=0)
    out_nested.square().sum().backward()
    out_flat.square().sum().backward()
    expected = torch.zeros_like(padded)
    for b, (s, n) in enumerate(zip(starts, lengths)):
        expected[b, s:s + n] = flat.grad[offsets[b]:offsets[b + 1]]
    torch.testing.assert_close(windows.grad, expected, rtol=0, atol=0)


def test_layer_parameters_and_state_dict_round_trip():
    torch.manual_seed(0)
    layer = lt.SoftVLAD(5, 3, gamma=0.5, learn_gamma=True)
    assert {n for n, _ in layer.named_parameters()} == {"centers", "log_precisions", "log_gamma"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a learnable gamma read as a float once warned (requires_grad)
        assert layer.gamma == pytest.approx(0.5) and "SoftVLAD" in repr(layer)
    fixed = lt.SoftBoW(5, 3, gamma=0.5)
    assert {n for n, _ in fixed.named_parameters()} == {"centers", "log_precisions"}
    assert "log_gamma" in fixed.state_dict() and fixed.gamma == pytest.approx(0.5)
    features, offsets, *_ = problem(4, dtype=torch.float32)
    copy = lt.SoftVLAD(5, 3, learn_gamma=True)
    copy.load_state_dict(layer.state_dict())
    torch.testing.assert_close(copy(features, offsets), layer(features, offsets), rtol=0, atol=0)


def test_no_grad_inference_dtypes_and_threads():
    features, offsets, *_ = problem(5, sizes=(700, 3, 0, 900), D=8)
    layer = lt.SoftBoW(16, 8).double()
    assert layer.centers.dtype == torch.float64
    with torch.no_grad():
        out = layer(features, offsets)
    assert not out.requires_grad and out.dtype == torch.float64
    assert layer(features, offsets).requires_grad
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = layer(features, offsets)
        torch.set_num_threads(2)
        two = layer(features, offsets)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    three = lt.SoftBoW(16, 8, n_threads=3).double()
    three.load_state_dict(layer.state_dict())
    torch.testing.assert_close(three(features, offsets), one, rtol=0, atol=0)
    single = layer.float()(features.float(), offsets)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), one, rtol=1e-4, atol=1e-5)


def test_trains_end_to_end_in_a_model_with_an_optimizer():
    """A linear map of the local features (learning needs dJ/dF), the soft BoW and a
    linear classifier, trained with Adam on bags whose classes differ in feature radius."""
    bags, y = make_circles_bags(60, 20, random_state=0)
    features = torch.from_numpy(bags.features.astype(np.float32))
    offsets, target = torch.from_numpy(bags.offsets), torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(0)
    project = torch.nn.Linear(2, 2)
    pool = lt.SoftBoW(4, 2, gamma=1.0)
    head = torch.nn.Linear(4, 2)
    model = torch.nn.ModuleList([project, pool, head])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    before = project.weight.detach().clone()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(pool(project(features), offsets)), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert project.weight.grad is not None and not torch.equal(project.weight.detach(), before)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        accuracy = (head(pool(project(features), offsets)).argmax(1) == target).float().mean().item()
    assert accuracy > 0.9


def test_from_estimator():
    bags, y = make_circles_bags(30, 15, random_state=0)
    model = lfagg.LearnedVLAD(3, n_epochs=1, random_state=0).fit(bags, y)
    layer = lt.SoftVLAD.from_estimator(model, dtype=torch.float64)
    features, offsets = torch.from_numpy(bags.features), torch.from_numpy(bags.offsets)
    with torch.no_grad():
        np.testing.assert_allclose(layer(features, offsets).numpy(), model.transform(bags), rtol=1e-12, atol=1e-12)
    bow = lfagg.BagOfWords(4, assignment="soft", random_state=0).fit(bags)
    layer = lt.SoftBoW.from_estimator(bow, dtype=torch.float64)
    np.testing.assert_array_equal(layer.centers.detach().numpy(), bow.cluster_centers_)
    assert layer.gamma == pytest.approx(bow.gamma_) and not layer.log_precisions.detach().any()
    from sklearn.cluster import KMeans

    kmeans = KMeans(3, n_init=1, random_state=0).fit(bags.features)
    assert lt.SoftBoW.from_estimator(kmeans, gamma=2.0).centers.shape == (3, 2)
    with pytest.raises(ValueError, match="give gamma"):
        lt.SoftBoW.from_estimator(kmeans)
    with pytest.raises(ValueError, match="estimator must be a fitted"):
        lt.SoftBoW.from_estimator(lfagg.LearnedBoW(3), gamma=1.0)
    trained = torch.randn(3, 2, requires_grad=True)  # another layer's centres, say
    np.testing.assert_array_equal(lt.SoftVLAD.from_estimator(trained, gamma=1.0).centers.detach(), trained.detach())
    from sklearn.mixture import GaussianMixture

    points = np.random.default_rng(0).normal(size=(60, 3))
    for kind in ("tied", "full", "spherical"):  # tied with K == D: its (D, D) matrix passed for K diagonals
        mixture = GaussianMixture(3, covariance_type=kind, random_state=0).fit(points)
        with pytest.raises(ValueError, match=f"covariance_type='diag' .*, got '{kind}'"):
            lt.SoftBoW.from_estimator(mixture, gamma=1.0)
    diag = GaussianMixture(3, covariance_type="diag", random_state=0).fit(points)
    np.testing.assert_allclose(lt.SoftBoW.from_estimator(diag, gamma=1.0, dtype=torch.float64).log_precisions.detach(),
                               -np.log(diag.covariances_))
    huge, ones = np.full((2, 2), 1e300), np.ones((2, 2))
    for centers, covariances in ((huge, ones), (0 * ones, 1 / huge)):
        with pytest.raises(ValueError, match="overflow the layer's torch.float32"):  # float64 values beyond float32
            lt.SoftBoW.from_estimator(types.SimpleNamespace(centers_=centers, covariances_=covariances, gamma_=1.0))


BAD_INPUTS = {
    "features float64, layer float32": (lambda f, o, c, p, g: (f.double(), o, c, p, g), TypeError, "centers is"),
    "precisions float64": (lambda f, o, c, p, g: (f, o, c, p.double(), g), TypeError, "precisions is"),
    "integer features": (lambda f, o, c, p, g: (f.long(), o, c, p, g), TypeError, "features must be"),
    "3-D features": (lambda f, o, c, p, g: (f[None], o, c, p, g), TypeError, "features must be"),
    "float offsets with grad": (lambda f, o, c, p, g: (f, o.double().requires_grad_(), c, p, g), TypeError,
                                "offsets must be a 1-D int64 or int32"),
    "int16 offsets": (lambda f, o, c, p, g: (f, o.short(), c, p, g), TypeError,
                      r"offsets must be a 1-D int64 or int32 tensor .*, got torch.int16"),  # "integer" it said
    "offsets not matching N": (lambda f, o, c, p, g: (f[:-1], o, c, p, g), ValueError, "offsets"),
    "decreasing offsets": (lambda f, o, c, p, g: (f, o.flip(0), c, p, g), ValueError, "offsets"),
    "NaN features": (lambda f, o, c, p, g: (f.index_fill(0, torch.tensor([2]), float("nan")), o, c, p, g),
                     ValueError, "features"),
    "negative precisions": (lambda f, o, c, p, g: (f, o, c, -p, g), ValueError, "precisions"),
    "gamma not 0-d": (lambda f, o, c, p, g: (f, o, c, p, g.reshape(1)), ValueError, "gamma must be a 0-d"),
    "features of another dimension": (lambda f, o, c, p, g: (f[:, :2], o, c, p, g), ValueError,
                                      "features have 2 dimensions per row, the centers 3: "),
    "an array, not a tensor": (lambda f, o, c, p, g: (f.numpy(), o, c, p, g), TypeError, "features must be a torch"),
    "meta device (as CUDA)": (lambda f, o, c, p, g: (f.to("meta"), o, c, p, g), ValueError, "CPU tensors"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("encoder", FUNCTIONS)
def test_bad_input_is_named(encoder, case):
    change, error, message = BAD_INPUTS[case]
    args = change(*problem(6, dtype=torch.float32))
    with pytest.raises(error, match=message):
        FUNCTIONS[encoder](*args)


def test_non_contiguous_features_are_accepted():
    features, offsets, centers, precisions, gamma = problem(7)
    transposed = features.t().contiguous().t()
    assert not transposed.is_contiguous()
    torch.testing.assert_close(lt.soft_bow(transposed, offsets, centers, precisions, gamma),
                               lt.soft_bow(features, offsets, centers, precisions, gamma), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_nested_tensor_errors():
    features, offsets, centers, precisions, gamma = problem(8)
    jagged = torch.nested.nested_tensor([features[:4], features[4:]], layout=torch.jagged)
    with pytest.raises(ValueError, match="offsets must be None"):
        lt.soft_bow(jagged, offsets, centers, precisions, gamma)
    strided = torch.nested.nested_tensor([features[:4], features[4:]])
    with pytest.raises(ValueError, match="layout=torch.jagged"):
        lt.soft_bow(strided, None, centers, precisions, gamma)
    with pytest.raises(ValueError, match="ragged in dimension 1; got one of 3 dimensions ragged in dimension 2"):
        lt.soft_bow(jagged.transpose(1, 2), None, centers, precisions, gamma)
    for starts, lengths in (([0, 2], [2, 10]), ([-1, 2], [2, 2]), ([0, 2], [2, -1])):  # torch builds them all
        holes = torch.nested.nested_tensor_from_jagged(features, torch.tensor(starts + [4]),
                                                       lengths=torch.tensor(lengths))
        with pytest.raises(ValueError, match="bags \\(offsets and lengths\\) lie outside its 11 rows"):  # IndexError
            lt.soft_bow(holes, None, centers, precisions, gamma)


def test_a_nested_tensor_of_part_of_its_values_pools_that_part():
    features, _, centers, precisions, gamma = problem(9)
    for offsets in ([2, 5, 9], [0, 5, 9], [3, 3, 11]):  # torch accepts bags of part of the values
        leaf = features.clone().requires_grad_()
        nested = torch.nested.nested_tensor_from_jagged(leaf, torch.tensor(offsets))
        out = lt.soft_vlad(nested, None, centers, precisions, gamma)
        expected = reference("vlad", features[offsets[0]:offsets[-1]], torch.tensor(offsets) - offsets[0], centers,
                             precisions, gamma)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        out.sum().backward()
        outside = torch.ones(len(features), dtype=torch.bool)
        outside[offsets[0]:offsets[-1]] = False
        assert leaf.grad[outside].abs().sum() == 0 and leaf.grad[~outside].abs().sum() > 0


@pytest.mark.filterwarnings("ignore")  # torch's on nested tensors moved to the meta device
def test_a_nested_tensor_off_the_cpu_is_named():
    features, _, centers, precisions, gamma = problem(10)
    holes = torch.nested.narrow(torch.randn(3, 4, 3, dtype=features.dtype), 1, torch.tensor([0, 2, 1]),
                                torch.tensor([2, 2, 0]), layout=torch.jagged)
    with pytest.raises(ValueError, match="features is on meta: lfagg.torch runs on CPU tensors"):
        lt.soft_bow(holes.to("meta"), None, centers, precisions, gamma)


@pytest.mark.parametrize("encoder", FUNCTIONS)
def test_second_derivatives_raise_instead_of_being_zero(encoder):
    features, offsets, centers, precisions, gamma = problem(11)
    # a constant upstream gradient (out.sum()): torch's once_differentiable returned gradients without a graph
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.functional.hessian(
            lambda c: FUNCTIONS[encoder](features, offsets, c, precisions, gamma)[:, 0].sum(), centers)
    leaf = features.clone().requires_grad_()

    def loss():  # a weighted sum: a soft BoW's plain sum is constant
        out = FUNCTIONS[encoder](leaf, offsets, centers, precisions, gamma)
        return (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape)).sum()

    grad, = torch.autograd.grad(loss(), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        grad.square().sum().backward()
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, torch.autograd.grad(loss(), leaf)[0], rtol=0, atol=0)  # the first is unchanged


def test_the_kept_assignments_are_freed_by_the_backward():
    features, offsets, centers, precisions, gamma = problem(12)
    c = centers.clone().requires_grad_()
    out = lt.soft_bow(features, offsets, c, precisions, gamma)
    assert out.grad_fn.saved_tensors[-1].shape == (len(features), len(centers))  # saved, so autograd frees them
    out.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        out.grad_fn.saved_tensors
    weights, c.grad = torch.rand(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0)), None
    lt.soft_bow(features, offsets, c, precisions, gamma).backward(weights._neg_view())  # -weights, lazily negated
    expected, = torch.autograd.grad(-(lt.soft_bow(features, offsets, c, precisions, gamma) * weights).sum(), c)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(c.grad, expected, rtol=1e-12, atol=1e-14)


def test_layer_arguments_are_checked():
    for kwargs, name in ((dict(n_codewords=0, dim=3), "n_codewords"), (dict(n_codewords=2, dim=3, gamma=-1), "gamma"),
                         (dict(n_codewords=2, dim=3, gamma=1e300), "out of the range of torch.float32"),
                         (dict(n_codewords=2, dim=3, n_threads=0), "n_threads"),
                         (dict(n_codewords=2, dim=3, n_threads=2 ** 40), "n_threads must be None or an integer from 1"),
                         (dict(n_codewords=2, dim=3, learn_gamma="no"), "learn_gamma must be True or False"),
                         (dict(n_codewords=2, dim=3, learn_precisions=1), "learn_precisions must be True or False"),
                         (dict(n_codewords=2, dim=3, keep_assignments=None), "keep_assignments must be True or False")):
        with pytest.raises(ValueError, match=name):
            lt.SoftBoW(**kwargs)
    for dtype in (torch.int64, torch.float16):
        with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
            lt.SoftBoW(2, 3, dtype=dtype)
    assert lt.SoftBoW(2, 3, gamma=torch.tensor(0.5)).gamma == 0.5  # a 0-d tensor as a number
    assert lt.SoftBoW(2, 3, device="cpu").centers.device.type == "cpu"  # as torch's layers take it
    for device in ("meta", "bogus", 3.5):
        with pytest.raises(ValueError, match="device must be 'cpu'"):
            lt.SoftVLAD(2, 3, device=device)
    assert lt.SoftBoW(2, 3, gamma=1e-300, dtype=torch.float64).gamma == pytest.approx(1e-300)
    with torch.device("meta"):  # as init_empty_weights builds models: the gamma check failed on .item()
        assert all(t.device.type == "cpu" for t in lt.SoftVLAD(2, 3, learn_gamma=True).state_dict().values())


def test_replaced_centres_give_the_layer_its_size():
    layer = lt.SoftVLAD(4, 3)
    layer.centers = torch.nn.Parameter(torch.randn(6, 2))
    layer.log_precisions = torch.nn.Parameter(torch.zeros(6, 2))
    assert (layer.n_codewords, layer.dim) == (6, 2) and "n_codewords=6, dim=2" in repr(layer)
    assert layer(torch.randn(5, 2), torch.tensor([0, 5])).shape == (1, 12)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_and_mkldnn_inputs_are_named():
    features, offsets, centers, precisions, gamma = problem(10, dtype=torch.float32)
    for name, args in (("features", (features.to_sparse(), offsets)), ("features", (features.to_sparse_csr(), offsets)),
                       ("features", (features.to_mkldnn(), offsets)), ("offsets", (features, offsets.to_sparse()))):
        with pytest.raises(TypeError, match=f"{name} must be a dense \\(strided\\) tensor"):
            lt.soft_bow(*args, centers, precisions, gamma)


@pytest.mark.parametrize("encoder", LAYERS)
def test_a_nan_gradient_on_an_empty_bags_row_is_not_read(encoder):
    """The signed square root of a batch with an empty bag (its row of zeros) sends NaN to
    that row, which no feature reads: plain torch's gradients are finite, the layer's
    backward refused the NaN."""
    features, offsets, centers, precisions, gamma = problem(11)  # bag 1 is empty
    layer = LAYERS[encoder].from_estimator(centers, gamma=float(gamma), dtype=torch.float64)
    with torch.no_grad():
        layer.log_precisions.copy_(precisions.log())
    ours, theirs = features.clone().requires_grad_(), features.clone().requires_grad_()

    def signed_sqrt(r):
        return r.sign() * r.abs().sqrt()

    signed_sqrt(layer(ours, offsets)).sum().backward()
    signed_sqrt(reference(encoder, theirs, offsets, centers, precisions, gamma)).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    assert torch.isfinite(ours.grad).all() and torch.isfinite(layer.centers.grad).all()
    grad = torch.ones(len(offsets) - 1, layer(features, offsets).shape[1], dtype=torch.float64)
    grad[0, 0] = float("nan")  # a bag that has features: every gradient NaN (it was a ValueError)
    layer.zero_grad()
    ours.grad = None
    layer(ours, offsets).backward(grad)
    assert torch.isnan(ours.grad).all() and torch.isnan(layer.centers.grad).all()


def test_a_grad_scaler_overflow_skips_the_step_instead_of_failing():
    """An infinite gradient raised "grad_output contains NaN or infinity", so mixed-precision
    training with torch.amp.GradScaler crashed where a plain-torch pooling lets the scaler
    skip the step and lower its scale."""
    torch.manual_seed(0)
    layer, fc = lt.SoftBoW(8, 4, learn_gamma=True), torch.nn.Linear(8, 3)
    features, offsets = torch.randn(20, 4, requires_grad=True), torch.tensor([0, 5, 5, 20])
    optimizer = torch.optim.SGD([*fc.parameters(), *layer.parameters()], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)
    before = [p.detach().clone() for p in layer.parameters()]
    with torch.autocast("cpu", dtype=torch.float16):
        loss = fc(layer(features, offsets)).float().sum()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() < 2.0 ** 120  # the overflow was seen
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))  # and the step skipped


def test_half_precision_features_under_autocast_are_computed_in_float32():
    """A bfloat16 conv output under torch.autocast was refused ("must be a 2-D float32 or
    float64 tensor"); the gradient reaches the conv's half-precision output."""
    torch.manual_seed(0)
    conv, layer = torch.nn.Conv2d(3, 4, 3), lt.SoftVLAD(5, 4)
    images, offsets = torch.randn(2, 3, 6, 6), torch.tensor([0, 16, 32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = conv(images)
        out = layer(maps.permute(0, 2, 3, 1).reshape(-1, 4), offsets)
    assert maps.dtype == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, layer(maps.detach().float().permute(0, 2, 3, 1).reshape(-1, 4), offsets))
    out.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    with pytest.raises(TypeError, match="float32 or float64"):  # outside autocast: the dtype is the caller's
        layer(maps.detach().permute(0, 2, 3, 1).reshape(-1, 4), offsets)


def test_meta_initialisation_resets_gamma_and_prints():
    """to_empty + reset_parameters (torch's meta-device pattern) left log_gamma as whatever
    memory it got; repr of a meta layer raised "Tensor.item() cannot be called on meta tensors"."""
    layer = lt.SoftBoW(4, 3, gamma=3.0, learn_gamma=True).to("meta")
    assert "gamma=(meta)" in repr(layer)
    layer = layer.to_empty(device="cpu")
    layer.reset_parameters()
    assert layer.gamma == pytest.approx(3.0) and torch.equal(layer.log_precisions, torch.zeros(4, 3))


def test_first_order_gradients_with_create_graph_warn_of_nothing():
    layer = lt.SoftBoW(4, 3, learn_gamma=True)
    features = torch.randn(6, 3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Converting a tensor with requires_grad=True to a scalar"
        torch.autograd.grad((layer(features, torch.tensor([0, 6])) ** 2).sum(), layer.centers, create_graph=True)


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("encoder", LAYERS)
def test_torch_compile_and_export_trace_through_the_layers(encoder, pooling):
    """The core's kernels are torch custom operators: torch.compile(fullgraph=True) takes a
    model around a layer (the layer was a graph break, an error under fullgraph), with the
    eager values and gradients bit for bit, and torch.export exports it."""
    features, offsets, *_ = problem(9)
    for keep in (True, False):
        layer = LAYERS[encoder](4, 3, dtype=torch.float64, learn_gamma=True, keep_assignments=keep, pooling=pooling)
        weights = torch.randn(len(offsets) - 1, layer(features, offsets).shape[1], dtype=torch.float64)
        x = features.clone().requires_grad_()

        def loss(x):
            return (layer(x, offsets) * weights).sum()

        eager = torch.autograd.grad(loss(x), [x, *layer.parameters()])
        torch._dynamo.reset()
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        value = compiled(x)
        assert torch.equal(value, loss(x))
        for mine, other in zip(torch.autograd.grad(value, [x, *layer.parameters()]), eager):
            assert torch.equal(mine, other)
    exported = torch.export.export(layer, (features, offsets))
    assert torch.equal(exported.module()(features, offsets), layer(features, offsets))
