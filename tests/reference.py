"""Plain-numpy float64 reference for the soft encoders of lfagg.

Written directly from the maths of eqs 6-9 of Katharopoulos et al. 2017 (as the lfagg.ops docstrings state them),
deliberately naive and independent of the C++ core:

    d_nk = sum_j P_kj (f_nj - C_kj)^2              (direct form, by broadcasting)
    a_nk = softmax_k(-gamma d_nk)                  (stable: subtract the row max)
    soft BoW : R_b[k]    = 1/N_b sum_n a_nk
    soft VLAD: R_b[k, :] = 1/N_b sum_n a_nk (f_n - C_k)   flattened k-major

Empty bags encode to zero rows and contribute nothing to the gradients.
The backward passes are derived by hand with the chain rule, one bag at a time.
"""

import numpy as np

__all__ = [
    "distances",
    "assignments",
    "ref_soft_bow",
    "ref_soft_vlad",
    "ref_soft_bow_backward",
    "ref_soft_vlad_backward",
    "central_diff",
]


def _as64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def distances(features, centers, precisions):
    """d[n, k] = sum_j P[k, j] (f[n, j] - C[k, j])^2, shape (N, K)."""
    f, c, p = _as64(features, centers, precisions)
    diff = f[:, None, :] - c[None, :, :]  # (N, K, D)
    return np.einsum("nkj,kj->nk", diff * diff, p)


def assignments(features, centers, precisions, gamma):
    """Stable softmax of -gamma * d over the codewords, shape (N, K)."""
    z = -float(gamma) * distances(features, centers, precisions)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _bags(offsets):
    offsets = np.asarray(offsets, dtype=np.int64)
    for b in range(len(offsets) - 1):
        yield b, int(offsets[b]), int(offsets[b + 1])


def ref_soft_bow(features, offsets, centers, precisions, gamma):
    f, c, p = _as64(features, centers, precisions)
    n_bags = len(offsets) - 1
    out = np.zeros((n_bags, c.shape[0]))
    for b, lo, hi in _bags(offsets):
        if hi == lo:
            continue
        a = assignments(f[lo:hi], c, p, gamma)
        out[b] = a.sum(axis=0) / (hi - lo)
    return out


def ref_soft_vlad(features, offsets, centers, precisions, gamma):
    f, c, p = _as64(features, centers, precisions)
    n_bags = len(offsets) - 1
    K, D = c.shape
    out = np.zeros((n_bags, K, D))
    for b, lo, hi in _bags(offsets):
        if hi == lo:
            continue
        fb = f[lo:hi]
        a = assignments(fb, c, p, gamma)  # (N, K)
        diff = fb[:, None, :] - c[None, :, :]  # (N, K, D)
        out[b] = (a[:, :, None] * diff).sum(axis=0) / (hi - lo)
    return out.reshape(n_bags, K * D)


def _backward_from_g(fb, c, p, gamma, a, g):
    """Gradients of J through a = softmax(-gamma d) given g = dJ/da (N, K): dJ/dC, dJ/dP,
    dJ/dgamma and dJ/df (N, D)."""
    # softmax backward: dJ/dz_nk with z = -gamma d
    e = a * (g - (a * g).sum(axis=1, keepdims=True))
    diff = fb[:, None, :] - c[None, :, :]  # (N, K, D)
    d = np.einsum("nkj,kj->nk", diff * diff, p)
    # dJ/dd_nk = -gamma e_nk
    # dd_nk/dC_kj = -2 P_kj (f_nj - C_kj);  dd_nk/dP_kj = (f_nj - C_kj)^2;  dd_nk/df_nj = 2 P_kj (f_nj - C_kj)
    gC = 2.0 * gamma * p * np.einsum("nk,nkj->kj", e, diff)
    gP = -gamma * np.einsum("nk,nkj->kj", e, diff * diff)
    ggamma = -np.sum(e * d)
    gF = -2.0 * gamma * np.einsum("nk,kj,nkj->nj", e, p, diff)
    return gC, gP, ggamma, gF


def ref_soft_bow_backward(features, offsets, centers, precisions, gamma, grad_output, with_features=False):
    """(dJ/dC, dJ/dP, dJ/dgamma), and dJ/dF (N, D) too with_features."""
    f, c, p, G = _as64(features, centers, precisions, grad_output)
    gamma = float(gamma)
    gC = np.zeros_like(c)
    gP = np.zeros_like(p)
    gF = np.zeros_like(f)
    ggamma = 0.0
    for b, lo, hi in _bags(offsets):
        if hi == lo:
            continue
        fb = f[lo:hi]
        a = assignments(fb, c, p, gamma)
        g = np.broadcast_to(G[b] / (hi - lo), a.shape)  # dJ/da_nk
        dC, dP, dg, gF[lo:hi] = _backward_from_g(fb, c, p, gamma, a, g)
        gC += dC
        gP += dP
        ggamma += dg
    return (gC, gP, ggamma, gF) if with_features else (gC, gP, ggamma)


def ref_soft_vlad_backward(features, offsets, centers, precisions, gamma, grad_output, with_features=False):
    """(dJ/dC, dJ/dP, dJ/dgamma), and dJ/dF (N, D) too with_features."""
    f, c, p, G = _as64(features, centers, precisions, grad_output)
    gamma = float(gamma)
    K, D = c.shape
    G = G.reshape(len(offsets) - 1, K, D)
    gC = np.zeros_like(c)
    gP = np.zeros_like(p)
    gF = np.zeros_like(f)
    ggamma = 0.0
    for b, lo, hi in _bags(offsets):
        if hi == lo:
            continue
        n = hi - lo
        fb = f[lo:hi]
        a = assignments(fb, c, p, gamma)
        diff = fb[:, None, :] - c[None, :, :]
        g = np.einsum("kj,nkj->nk", G[b], diff) / n  # dJ/da_nk
        dC, dP, dg, dF = _backward_from_g(fb, c, p, gamma, a, g)
        # direct dependence of (f_n - C_k) on C_k and on f_n
        dC -= a.sum(axis=0)[:, None] * G[b] / n
        gF[lo:hi] = dF + np.einsum("nk,kj->nj", a, G[b]) / n
        gC += dC
        gP += dP
        ggamma += dg
    return (gC, gP, ggamma, gF) if with_features else (gC, gP, ggamma)


def central_diff(f, x, eps=1e-6):
    """Central finite differences of the scalar function f at x.

    x may be a scalar (returns a float) or an array (returns an array of the same
    shape with the partial derivative for each entry).  f is called with arrays
    (copies) of x's shape, or with a float when x is a scalar.
    """
    if np.ndim(x) == 0:
        x = float(x)
        return (f(x + eps) - f(x - eps)) / (2.0 * eps)
    x = np.array(x, dtype=np.float64)
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        out[idx] = (f(xp) - f(xm)) / (2.0 * eps)
    return out
