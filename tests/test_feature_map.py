"""lfagg.models.feature_map.AdditiveChi2Map: values against scikit-learn's AdditiveChi2Sampler,
backward pass against central finite differences, the clamp at 0, and errors."""

import numpy as np
import pytest
from sklearn.kernel_approximation import AdditiveChi2Sampler

from lfagg.models.feature_map import AdditiveChi2Map


def inputs_with_zeros(rng, n=7, dim=5):
    x = rng.uniform(0, 3, size=(n, dim))
    x[0, 1] = 0.0          # a single zero
    x[2, :] = 0.0          # a whole row of zeros (a bag with no mass anywhere)
    x[:, 3] = 0.0          # a whole column of zeros (a codeword with no mass)
    x[4, 0] = 1e-300       # positive but tiny
    x[5, 2] = 1e3          # large
    return x


@pytest.mark.parametrize("steps, interval", [(1, None), (2, None), (3, None), (2, 0.3), (4, 0.25), (1, 1.7)])
def test_transform_matches_sklearn(steps, interval):
    rng = np.random.default_rng(steps * 10 + int(10 * (interval or 0)))
    x = inputs_with_zeros(rng)
    expected = AdditiveChi2Sampler(sample_steps=steps, sample_interval=interval).fit_transform(x)
    fmap = AdditiveChi2Map(sample_steps=steps, sample_interval=interval)
    got = fmap.transform(x)
    assert got.shape == expected.shape == (x.shape[0], x.shape[1] * (2 * steps - 1))
    assert got.shape[1] == fmap.output_dim(x.shape[1])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # 0 maps to 0 in every output block
    for block in range(2 * steps - 1):
        cols = slice(block * x.shape[1], (block + 1) * x.shape[1])
        assert np.all(got[:, cols][x == 0] == 0)


def test_transform_float32_keeps_dtype_and_values():
    rng = np.random.default_rng(1)
    x = inputs_with_zeros(rng)[:, [0, 1, 2, 3]].astype(np.float32)
    x[4, 0] = 1e-30
    got = AdditiveChi2Map(sample_steps=2).transform(x)
    assert got.dtype == np.float32
    expected = AdditiveChi2Sampler(sample_steps=2).fit_transform(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_chi2_kernel_is_approximated():
    """The explicit map approximates k(x, y) = sum_i 2 x_i y_i / (x_i + y_i) (sanity of the formula)."""
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0.05, 1, size=(2, 6))
    fmap = AdditiveChi2Map(sample_steps=5, sample_interval=0.4)
    approx = float(np.sum(fmap.transform(x[None]) * fmap.transform(y[None])))
    exact = float(np.sum(2 * x * y / (x + y)))
    assert approx == pytest.approx(exact, rel=2e-2)


def central_diff_map(fmap, x, grad_output, h):
    """dJ/dx of J(x) = <grad_output, fmap.transform(x)> by central differences per entry."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        grad[idx] = (np.sum(grad_output * fmap.transform(xp)) - np.sum(grad_output * fmap.transform(xm))) / (2 * h)
    return grad


@pytest.mark.parametrize("steps, interval", [(1, None), (2, None), (3, None), (4, 0.3)])
def test_backward_matches_finite_differences(steps, interval):
    rng = np.random.default_rng(100 + steps)
    x = rng.uniform(0.05, 2.0, size=(4, 3))
    x[1, 2] = 0.01  # small but far from the clamp
    fmap = AdditiveChi2Map(sample_steps=steps, sample_interval=interval)
    grad_output = rng.normal(size=(4, fmap.output_dim(3)))
    got = fmap.backward(x, grad_output)
    assert got.shape == x.shape and got.dtype == np.float64
    expected = central_diff_map(fmap, x, grad_output, h=1e-7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_backward_is_linear_in_grad_output():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 1, size=(3, 4))
    fmap = AdditiveChi2Map(sample_steps=3)
    g1, g2 = rng.normal(size=(2, 3, fmap.output_dim(4)))
    np.testing.assert_allclose(fmap.backward(x, 2 * g1 - g2), 2 * fmap.backward(x, g1) - fmap.backward(x, g2),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_gradient_finite_at_zero_and_tiny(steps):
    rng = np.random.default_rng(4)
    x = np.array([[0.0, 1e-300, 1e-20, 1e-8, 0.5]])
    fmap = AdditiveChi2Map(sample_steps=steps)
    grad_output = rng.normal(size=(1, fmap.output_dim(5)))
    grad = fmap.backward(x, grad_output)
    assert np.all(np.isfinite(grad))
    # Below the clamp the gradient is the one evaluated at the clamp: identical for 0, 1e-300, 1e-20, 1e-8.
    at_clamp = fmap.backward(np.full((1, 5), fmap.clamp), grad_output)
    np.testing.assert_allclose(grad[0, :4], at_clamp[0, :4], rtol=1e-12)
    # With a single unit upstream gradient on the sqrt block the value is d/dx sqrt(L x) at the clamp.
    g = np.zeros((1, fmap.output_dim(5)))
    g[0, :5] = 1.0
    L = fmap.sample_interval
    np.testing.assert_allclose(fmap.backward(x, g)[0, :4], 0.5 * np.sqrt(L / fmap.clamp), rtol=1e-12)


def test_custom_clamp_bounds_gradient():
    x = np.zeros((2, 3))
    g = np.ones((2, 9))
    small = AdditiveChi2Map(sample_steps=2, clamp=1e-2).backward(x, g)
    large = AdditiveChi2Map(sample_steps=2, clamp=1e-8).backward(x, g)
    assert np.all(np.isfinite(small)) and np.all(np.isfinite(large))
    assert np.max(np.abs(small)) < np.max(np.abs(large))


def test_negative_input_rejected():
    fmap = AdditiveChi2Map()
    with pytest.raises(ValueError, match="non-negative"):
        fmap.transform(np.array([[0.5, -1e-12]]))


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_steps": 0}, "sample_steps|sample_interval"),
    ({"sample_steps": -1, "sample_interval": 0.5}, "sample_steps"),
    ({"sample_steps": 0, "sample_interval": 0.5}, "sample_steps"),
    ({"sample_steps": 2.5, "sample_interval": 0.5}, "sample_steps"),
    ({"sample_steps": 4}, "sample_interval"),
    ({"sample_steps": 2, "sample_interval": 0.0}, "sample_interval"),
    ({"sample_steps": 2, "sample_interval": -0.5}, "sample_interval"),
    ({"sample_steps": 2, "sample_interval": float("nan")}, "sample_interval"),
    ({"clamp": 0.0}, "clamp"),
    ({"clamp": -1e-6}, "clamp"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdditiveChi2Map(**kwargs)
