"""The chi-square additive kernel feature map (Vedaldi & Zisserman, 2012), differentiable.

Values equal scikit-learn's ``AdditiveChi2Sampler`` for the same ``sample_steps`` and
``sample_interval``; the backward pass makes it usable between a learned encoder and a
classifier (the paper's T1 + chi2 + logistic regression).
"""
from __future__ import annotations

import numpy as np

from .._validation import is_auto, positive_int, positive_real

#: scikit-learn's default sampling interval for sample_steps = 1, 2, 3.
_DEFAULT_INTERVAL = {1: 0.8, 2: 0.5, 3: 0.4}


class AdditiveChi2Map:
    """x -> [sqrt(x L), c_1 cos(L log x), c_1 sin(L log x), ..., c_{s-1} sin((s-1) L log x)]
    per input column, with c_j = sqrt(2 x L / cosh(pi j L)); 0 maps to 0.

    Parameters
    ----------
    sample_steps : int >= 1, the output has ``dim * (2 * sample_steps - 1)`` columns.
    sample_interval : float > 0 or None (scikit-learn's default for 1-3 steps).
    clamp : float > 0. The map's derivative is infinite at 0; the backward pass evaluates
        it at ``max(x, clamp)`` so that a codeword that receives no mass still gets a
        finite gradient.
    """

    def __init__(self, sample_steps: int = 2, sample_interval: float | None = None, clamp: float = 1e-6):
        self.sample_steps = positive_int(sample_steps, "sample_steps")
        if sample_interval is None:
            if sample_steps not in _DEFAULT_INTERVAL:
                raise ValueError(f"sample_interval must be given when sample_steps={sample_steps} is not 1, 2 or 3")
            sample_interval = _DEFAULT_INTERVAL[sample_steps]
        self.sample_interval = positive_real(sample_interval, "sample_interval")
        self.clamp = positive_real(clamp, "clamp")

    def output_dim(self, dim: int) -> int:
        return dim * (2 * self.sample_steps - 1)

    def _factors(self):
        """(j, sqrt(2 L / cosh(pi j L))) for the cosine/sine pairs."""
        L = self.sample_interval
        return [(j, np.sqrt(2 * L / np.cosh(np.pi * j * L))) for j in range(1, self.sample_steps)]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) non-negative array -> (n, dim * (2 * sample_steps - 1)), same float dtype."""
        x = np.asarray(x)
        if np.any(x < 0):
            raise ValueError("the chi2 feature map needs non-negative input")
        L = self.sample_interval
        root = np.sqrt(x)
        with np.errstate(divide="ignore"):
            phase = L * np.log(np.where(x > 0, x, 1))
        blocks = [np.sqrt(L) * root]
        for j, c in self._factors():
            blocks += [c * root * np.cos(j * phase), c * root * np.sin(j * phase)]
        return np.hstack(blocks).astype(x.dtype, copy=False)

    def backward(self, x: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
        """dJ/dx (n, dim) given x (n, dim) and grad_output = dJ/d transform(x)."""
        x = np.asarray(x)
        dim = x.shape[1]
        xc = np.maximum(x, self.clamp)
        inv_root = 1 / np.sqrt(xc)
        L = self.sample_interval
        phase = L * np.log(xc)
        grad = grad_output[:, :dim] * (0.5 * np.sqrt(L) * inv_root)
        for j, c in self._factors():
            cos, sin = np.cos(j * phase), np.sin(j * phase)
            g_cos = grad_output[:, (2 * j - 1) * dim:2 * j * dim]
            g_sin = grad_output[:, 2 * j * dim:(2 * j + 1) * dim]
            # d/dx sqrt(x) cos(jL log x) = (cos/2 - jL sin) / sqrt(x), and likewise for sin.
            grad += c * inv_root * (g_cos * (0.5 * cos - j * L * sin) + g_sin * (0.5 * sin + j * L * cos))
        return grad.astype(x.dtype, copy=False)


def make_feature_map(feature_map, nonnegative: bool, encoder_name: str):
    """The feature map a classifier applies to an encoder's representation.

    feature_map : "auto" (the chi2 map for non-negative representations such as BoW's,
        none for signed ones such as VLAD's), "chi2" or None.
    nonnegative : whether the encoder's representation is non-negative.
    encoder_name : named in the error for "chi2" on a signed representation.

    Returns an :class:`AdditiveChi2Map` or None.
    """
    if is_auto(feature_map):
        feature_map = "chi2" if nonnegative else None
    if feature_map is None:
        return None
    if isinstance(feature_map, str) and feature_map == "chi2":
        if not nonnegative:
            raise ValueError(f"feature_map='chi2' needs non-negative representations, but {encoder_name}'s are "
                             "signed: use feature_map=None")
        return AdditiveChi2Map()
    raise ValueError(f"feature_map must be 'auto', 'chi2' or None, got {feature_map!r}")
