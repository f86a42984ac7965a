"""Plain-numpy float64 references for the baseline encoders, written from the papers and
independent of lfagg's C++ core (direct distances, one bag at a time):

    hard BoW (Csurka 2004):  R_b[k] = #{n in b : k = argmin_k' |f_n - C_k'|^2} / N_b
    VLAD (Jegou 2010):       R_b[k] = sum_n a_nk (f_n - C_k)
    Fisher Vector (Perronnin, Sanchez & Mensink 2010, eq. 7-8, and VLFeat's layout):
        q_nk = w_k N(f_n; mu_k, sigma_k^2) / sum_k' ...      (log-sum-exp)
        u_k  = 1/(N_b sqrt(w_k))   sum_n q_nk (f_n - mu_k) / sigma_k
        v_k  = 1/(N_b sqrt(2 w_k)) sum_n q_nk ((f_n - mu_k)^2 / sigma_k^2 - 1)
        a_k  = 1/(N_b sqrt(w_k))   sum_n (q_nk - w_k)          (Sanchez et al. 2013)
        FV   = [u_1 .. u_K, v_1 .. v_K], with_weights followed by [a_1 .. a_K]

Empty bags encode to zero rows.
"""

import numpy as np
from scipy.special import logsumexp


def bag_slices(offsets):
    offsets = np.asarray(offsets, dtype=np.int64)
    return [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]


def nearest_center(features, centers):
    f, c = np.asarray(features, np.float64), np.asarray(centers, np.float64)
    return np.argmin(((f[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), axis=1)


def ref_bow(features, offsets, centers):
    k = len(centers)
    labels = nearest_center(features, centers)
    rows = []
    for s in bag_slices(offsets):
        hist, _ = np.histogram(labels[s], bins=np.arange(k + 1))
        rows.append(hist / max(s.stop - s.start, 1))
    return np.array(rows)


def ref_vlad(features, offsets, centers, assignments=None):
    f, c = np.asarray(features, np.float64), np.asarray(centers, np.float64)
    if assignments is None:
        assignments = np.eye(len(c))[nearest_center(f, c)]
    a = np.asarray(assignments, np.float64)
    return np.array([np.einsum("nk,nkd->kd", a[s], f[s, None, :] - c[None]).ravel() for s in bag_slices(offsets)])


def posteriors(features, means, variances, weights):
    f, mu, var = (np.asarray(x, np.float64) for x in (features, means, variances))
    log_n = -0.5 * (((f[:, None, :] - mu[None]) ** 2 / var[None]).sum(axis=2) + np.log(2 * np.pi * var).sum(axis=1))
    log_joint = np.log(np.asarray(weights, np.float64)) + log_n
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def ref_fisher_vector(features, offsets, means, variances, weights, with_weights=False):
    f, mu, var, w = (np.asarray(x, np.float64) for x in (features, means, variances, weights))
    sigma = np.sqrt(var)
    q = posteriors(f, mu, var, w)
    rows = []
    for s in bag_slices(offsets):
        n = s.stop - s.start
        if n == 0:
            rows.append(np.zeros(2 * mu.size + (len(w) if with_weights else 0)))
            continue
        z = (f[s, None, :] - mu[None]) / sigma[None]  # (N_b, K, D)
        u = np.einsum("nk,nkd->kd", q[s], z) / (n * np.sqrt(w)[:, None])
        v = np.einsum("nk,nkd->kd", q[s], z**2 - 1) / (n * np.sqrt(2 * w)[:, None])
        a = (q[s] - w).sum(axis=0) / (n * np.sqrt(w))
        rows.append(np.concatenate([u.ravel(), v.ravel()] + ([a] if with_weights else [])))
    return np.array(rows)
