"""Every compiled core this CPU can run (baseline, AVX2, AVX-512) agrees with the
float64 reference, so a dispatch to any of them is safe."""
import numpy as np
import pytest

from lfagg import _native
from reference import ref_soft_bow, ref_soft_bow_backward, ref_soft_vlad, ref_soft_vlad_backward

CASES = [("soft_bow", ref_soft_bow, ref_soft_bow_backward), ("soft_vlad", ref_soft_vlad, ref_soft_vlad_backward)]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    sizes = [700, 0, 3, 1500, 17]  # crosses tile boundaries, includes an empty bag
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    features = rng.normal(size=(offsets[-1], 9)) + 2.0
    centers = features[rng.choice(len(features), 33, replace=False)]
    precisions = rng.uniform(0.5, 1.5, size=centers.shape)
    return features, offsets, centers, precisions, 0.3


@pytest.mark.parametrize("isa", _native.available())
@pytest.mark.parametrize("name,ref_forward,ref_backward", CASES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_every_isa_matches_reference(problem, isa, name, ref_forward, ref_backward, dtype, rtol):
    core = _native.load(isa)
    features, offsets, centers, precisions, gamma = problem
    args = [features.astype(dtype), offsets, centers.astype(dtype), precisions.astype(dtype), gamma]
    expected = ref_forward(features, offsets, centers, precisions, gamma)
    out = getattr(core, name)(*args, 0)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())

    grad_output = np.random.default_rng(1).normal(size=expected.shape)
    exp_c, exp_p, exp_g = ref_backward(features, offsets, centers, precisions, gamma, grad_output)
    _, kept = getattr(core, name)(*args, 0, True)
    tol = 10 * rtol
    for assignments in (None, kept):  # recomputed, then kept from the forward pass
        g_c, g_p, g_g = getattr(core, name + "_backward")(*args, grad_output.astype(dtype), assignments, n_threads=0)
        np.testing.assert_allclose(g_c, exp_c, rtol=tol, atol=tol * np.abs(exp_c).max())
        np.testing.assert_allclose(g_p, exp_p, rtol=tol, atol=tol * np.abs(exp_p).max())
        np.testing.assert_allclose(g_g, exp_g, rtol=tol, atol=tol * abs(exp_g))


def test_forcing_an_unavailable_isa_is_a_clear_error():
    with pytest.raises(ValueError, match="not available"):
        _native.load("no-such-isa")
