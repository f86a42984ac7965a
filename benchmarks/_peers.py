"""Peer implementations of lfagg's soft BoW (T1) and soft VLAD (T2) for the benchmarks.

Both peers implement exactly the maths of ``lfagg.ops`` (the docstrings of
``lfagg.ops.soft_bow`` and ``soft_vlad``; eqs. 6-9 of Katharopoulos et al., "Learning
local feature aggregation functions with backpropagation", EUSIPCO 2017):

    d_nk = sum_j P_kj (f_nj - C_kj)^2
    a_nk = softmax_k(-gamma d_nk)                     (stable softmax)
    T1:  R_b[k]    = (1/N_b) sum_n a_nk               shape K
    T2:  R_b[k, :] = (1/N_b) sum_n a_nk (f_n - C_k)   shape K*D, k-major

* :class:`NumpyPeer` is what a competent numpy user would write: a loop over bags,
  distances in the expanded GEMM form ``f^2 P^T - 2 f (C P)^T + sum(C^2 P)``, and a
  hand-written backward that reuses the forward's assignments and accumulates the
  per-bag sums ``E^T F``, ``E^T F^2`` so the parameter gradients are finalised once.
* :class:`TorchPeer` is the same forward in PyTorch with centres, precisions and gamma
  as leaf tensors; the backward is autograd's, driven by ``(R * G).sum().backward()``.

Every peer computes in the dtype of the features it is given (float32 stays float32).
Bags must be non-empty: the per-bag mean is undefined for an empty bag.
"""

import numpy as np

ENCODERS = ("soft_bow", "soft_vlad")


def _check_inputs(encoder, offsets):
    """Validate the encoder name and the offsets; return the offsets as int64."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0:
        raise ValueError(f"offsets must be 1-D, start at 0 and hold n_bags + 1 entries, got {offsets}")
    if np.any(np.diff(offsets) <= 0):
        raise ValueError("every bag must hold at least one feature")
    return offsets


class NumpyPeer:
    """Vectorised numpy soft BoW / soft VLAD with a hand-written backward.

    Parameters
    ----------
    encoder : {"soft_bow", "soft_vlad"}
    features : ndarray, shape (N_total, D)
        Concatenated features of all bags; its dtype is the compute dtype.
    offsets : ndarray, shape (n_bags + 1,)
        Bag b holds ``features[offsets[b]:offsets[b + 1]]``.
    centers, precisions : ndarray, shape (K, D)
    gamma : float
    """

    def __init__(self, encoder, features, offsets, centers, precisions, gamma):
        self.encoder = encoder
        self.offsets = _check_inputs(encoder, offsets)
        dtype = features.dtype
        self.features = features
        self.centers = np.ascontiguousarray(centers, dtype=dtype)
        self.precisions = np.ascontiguousarray(precisions, dtype=dtype)
        # A numpy scalar of the compute dtype, so float32 arrays are never promoted.
        self.gamma = dtype.type(gamma)

    def _bags(self):
        """Yield (bag index, bag features) for every bag."""
        for b in range(len(self.offsets) - 1):
            yield b, self.features[self.offsets[b]:self.offsets[b + 1]]

    def _assign(self, f, f2, cp_t, c2p):
        """Soft assignments and distances of one bag, both shape (N_b, K)."""
        dist = f2 @ self.precisions.T
        dist -= 2 * (f @ cp_t)
        dist += c2p
        logits = -self.gamma * dist
        logits -= logits.max(axis=1, keepdims=True)
        a = np.exp(logits, out=logits)
        a /= a.sum(axis=1, keepdims=True)
        return a, dist

    def _constants(self):
        """Bag-independent terms of the expanded distance: (C*P)^T and sum_j C^2 P."""
        cp = self.centers * self.precisions
        return np.ascontiguousarray(cp.T), np.sum(cp * self.centers, axis=1)

    def _encode(self, f, a):
        """Representation of one bag from its features and soft assignments."""
        n = f.shape[0]
        if self.encoder == "soft_bow":
            return a.sum(axis=0) / n
        mass = a.sum(axis=0)
        return ((a.T @ f - mass[:, None] * self.centers) / n).ravel()

    def forward(self):
        """Return R, shape (n_bags, K) for soft BoW or (n_bags, K*D) for soft VLAD."""
        cp_t, c2p = self._constants()
        out = []
        for _, f in self._bags():
            a, _ = self._assign(f, f * f, cp_t, c2p)
            out.append(self._encode(f, a))
        return np.stack(out)

    def forward_backward(self, grad_output):
        """Forward pass and gradients of J given ``grad_output`` = dJ/dR.

        Returns ``(R, grad_centers, grad_precisions, grad_gamma)``.
        """
        k, d = self.centers.shape
        dtype = self.features.dtype
        grad_output = np.asarray(grad_output, dtype=dtype)
        cp_t, c2p = self._constants()
        sum_e = np.zeros(k, dtype)  # sum_n e_nk over all bags
        sum_ef = np.zeros((k, d), dtype)  # sum_n e_nk f_nj
        sum_ef2 = np.zeros((k, d), dtype)  # sum_n e_nk f_nj^2
        direct = np.zeros((k, d), dtype)  # T2's direct dJ/dC term
        grad_gamma = dtype.type(0)
        out = []
        for b, f in self._bags():
            n = f.shape[0]
            f2 = f * f
            a, dist = self._assign(f, f2, cp_t, c2p)
            out.append(self._encode(f, a))
            # e_nk = a_nk (g_nk - sum_k' a_nk' g_nk'), the softmax backward
            if self.encoder == "soft_bow":
                g_b = grad_output[b] / n  # g_nk = G_bk / N_b, the same for every n
                e = a * (g_b - (a @ g_b)[:, None])
            else:
                g_b = grad_output[b].reshape(k, d) / n
                g = f @ g_b.T - np.sum(g_b * self.centers, axis=1)
                e = a * (g - np.sum(a * g, axis=1, keepdims=True))
                direct -= a.sum(axis=0)[:, None] * g_b
            sum_e += e.sum(axis=0)
            sum_ef += e.T @ f
            sum_ef2 += e.T @ f2
            grad_gamma -= np.sum(e * dist)
        c, p, gamma = self.centers, self.precisions, self.gamma
        grad_centers = 2 * gamma * p * (sum_ef - c * sum_e[:, None]) + direct
        grad_precisions = -gamma * (sum_ef2 - 2 * c * sum_ef + c * c * sum_e[:, None])
        return np.stack(out), grad_centers, grad_precisions, float(grad_gamma)


class TorchPeer:
    """PyTorch soft BoW / soft VLAD; gradients from autograd.

    The forward works on the concatenated features at once (distances and softmax over
    all N_total rows); per-bag sums of the assignments use ``index_add``, and soft
    VLAD's ``A_b^T F_b`` products a matmul per bag. Centres, precisions (raw, so their
    gradients compare directly with lfagg's) and gamma are leaf tensors with
    ``requires_grad=True``; features carry no gradient. Takes the same arguments as
    :class:`NumpyPeer`; numpy inputs are wrapped without copies.
    """

    def __init__(self, encoder, features, offsets, centers, precisions, gamma):
        import torch

        self.torch = torch
        self.encoder = encoder
        offsets = _check_inputs(encoder, offsets)
        dtype = features.dtype
        self.features = torch.from_numpy(features)
        counts = np.diff(offsets)
        self.bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        self.bag_index = torch.repeat_interleave(torch.arange(len(counts)), torch.from_numpy(counts))
        self.inv_counts = torch.from_numpy((1.0 / counts).astype(dtype))
        self.centers = torch.tensor(centers, dtype=self.features.dtype, requires_grad=True)
        self.precisions = torch.tensor(precisions, dtype=self.features.dtype, requires_grad=True)
        self.gamma = torch.tensor(gamma, dtype=self.features.dtype, requires_grad=True)

    def _forward(self):
        """Differentiable forward; returns R as a tensor."""
        torch = self.torch
        f, c, p = self.features, self.centers, self.precisions
        cp = c * p
        dist = (f * f) @ p.T - 2 * (f @ cp.T) + (cp * c).sum(dim=1)
        a = torch.softmax(-self.gamma * dist, dim=1)
        n_bags, k = len(self.bounds), c.shape[0]
        mass = torch.zeros(n_bags, k, dtype=f.dtype).index_add(0, self.bag_index, a)
        if self.encoder == "soft_bow":
            return mass * self.inv_counts[:, None]
        af = torch.stack([a[s:e].T @ f[s:e] for s, e in self.bounds])
        r = (af - mass[:, :, None] * c) * self.inv_counts[:, None, None]
        return r.reshape(n_bags, -1)

    def forward(self):
        """Inference forward (no autograd graph); returns R as an ndarray."""
        with self.torch.no_grad():
            return self._forward().numpy()

    def forward_backward(self, grad_output):
        """Forward pass and autograd gradients given ``grad_output`` = dJ/dR.

        Returns ``(R, grad_centers, grad_precisions, grad_gamma)`` as numpy objects.
        """
        leaves = (self.centers, self.precisions, self.gamma)
        for leaf in leaves:
            leaf.grad = None
        r = self._forward()
        grad_output = self.torch.as_tensor(grad_output, dtype=r.dtype)
        (r * grad_output).sum().backward()
        return (r.detach().numpy(), leaves[0].grad.numpy(), leaves[1].grad.numpy(),
                float(leaves[2].grad))
