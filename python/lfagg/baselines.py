"""The unsupervised baselines as scikit-learn transformers: Bag of Words (hard, or the
kernel-codebook soft BoW of van Gemert et al.), VLAD and Fisher Vectors.

``fit(bags)`` learns a codebook (KMeans) or a diagonal Gaussian mixture on a random
sample of at most ``max_features`` local features pooled over all bags; ``transform(bags)``
encodes every bag with the C++ kernels of :mod:`lfagg.ops` into one row. Bags are a
:class:`lfagg.Bags` or a list of (N_i, D) arrays; the output dtype is the features' dtype
(float32 stays float32, anything else becomes float64).
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import normalize, ops
from ._bags import Bags, as_bags

__all__ = ["BagOfWords", "VLAD", "FisherVector"]

ASSIGNMENTS = ("hard", "soft")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _thread_limit(n_threads):
    """Limits scikit-learn's OpenMP and BLAS pools to n_threads while fitting (None: no limit)."""
    if n_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=_positive_int(n_threads, "n_threads"))


def _finite_bags(bags) -> Bags:
    bags = as_bags(bags)
    if not np.isfinite(bags.features).all():
        raise ValueError("bags contain NaN or infinity in their features")
    return bags


def _soft_gamma(gamma, kmeans: KMeans, n_samples: int) -> float:
    """gamma, or by default 1 / the mean squared distance of the sample to its nearest codeword."""
    if gamma is not None:
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < gamma < np.inf:
            raise ValueError(f"gamma must be a positive finite number or None, got {gamma!r}")
        return float(gamma)
    mean_sq = kmeans.inertia_ / n_samples
    return 1.0 / mean_sq if mean_sq > 0 else 1.0


class _BaselineEncoder(TransformerMixin, BaseEstimator):
    """fit: sample local features, learn the model; transform: encode every bag."""

    def _n_clusters(self) -> int:
        """Number of codewords or mixture components to learn."""
        raise NotImplementedError

    def _fit_model(self, sample: np.ndarray, rng: np.random.RandomState) -> None:
        """Learns the fitted attributes from the (n_samples, D) sample."""
        raise NotImplementedError

    def _encode(self, bags: Bags) -> np.ndarray:
        """(n_bags, out_dim) encoding of validated bags."""
        raise NotImplementedError

    def fit(self, bags, y=None):
        """Learns the model on a random sample of the bags' local features.

        Parameters
        ----------
        bags : Bags or list of (N_i, D) arrays.
        y : ignored; present for Pipeline compatibility.

        Returns
        -------
        self
        """
        n_clusters = self._n_clusters()
        max_features = _positive_int(self.max_features, "max_features")
        if max_features < n_clusters:
            raise ValueError(f"max_features ({max_features}) must be at least the number of clusters ({n_clusters})")
        bags = _finite_bags(bags)
        if bags.n_features < n_clusters:
            raise ValueError(
                f"too few local features to learn {n_clusters} clusters: the bags hold {bags.n_features} "
                f"features in all; lower the number of clusters or pass more bags")
        rng = check_random_state(self.random_state)
        sample = bags.features
        if bags.n_features > max_features:
            sample = sample[np.sort(rng.choice(bags.n_features, size=max_features, replace=False))]
        with _thread_limit(self.n_threads):
            self._fit_model(sample, rng)
        self.dim_ = bags.dim
        return self

    def transform(self, bags) -> np.ndarray:
        """Encodes every bag.

        Parameters
        ----------
        bags : Bags or list of (N_i, D) arrays, D as in fit.

        Returns
        -------
        (n_bags, out_dim) float32 array for float32 features, float64 otherwise.
        """
        check_is_fitted(self)
        bags = as_bags(bags)
        if bags.dim != self.dim_:
            raise ValueError(f"bags have features of dim {bags.dim}, but {type(self).__name__} was fitted on dim "
                             f"{self.dim_}")
        return self._encode(bags)


class _CodebookEncoder(_BaselineEncoder):
    """An encoder whose model is a KMeans codebook, with hard or soft (kernel-codebook) assignment."""

    def _n_clusters(self) -> int:
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}")
        return _positive_int(self.n_codewords, "n_codewords")

    def _fit_model(self, sample, rng):
        kmeans = KMeans(self.n_codewords, n_init=self.n_init, max_iter=self.max_iter, random_state=rng)
        kmeans.fit(sample)
        self.cluster_centers_ = kmeans.cluster_centers_.astype(np.float64)
        self.gamma_ = _soft_gamma(self.gamma, kmeans, sample.shape[0]) if self.assignment == "soft" else None

    def _soft_args(self, bags: Bags):
        """Arguments of the soft kernels: unit precisions (Euclidean distances) and gamma_."""
        return (bags.features, bags.offsets, self.cluster_centers_, np.ones_like(self.cluster_centers_),
                self.gamma_)


class BagOfWords(_CodebookEncoder):
    """Bag of Words: the histogram of the codewords of each bag's features.

    Parameters
    ----------
    n_codewords : int, K, the codebook size (KMeans clusters).
    assignment : "hard" (Csurka et al. 2004: each feature votes for its nearest codeword)
        or "soft" (van Gemert et al. 2010: a_nk = softmax_k(-gamma |f_n - C_k|^2)).
    gamma : float or None, the inverse bandwidth of soft assignment; None sets it to 1 /
        the mean squared distance of the training sample to its nearest codeword.
    max_features : int, the most local features KMeans is fitted on (a random sample).
    max_iter, n_init : passed to sklearn.cluster.KMeans.
    random_state : None, int or numpy.random.RandomState, for sampling and KMeans.
    n_threads : int or None (all cores), for fitting and encoding.

    Attributes
    ----------
    cluster_centers_ : (K, D) float64 array.
    gamma_ : float, the gamma used (None for hard assignment).
    dim_ : int, D.

    ``transform`` returns (n_bags, K): the fraction of each bag's features per codeword
    (rows sum to 1; zeros for an empty bag).
    """

    def __init__(self, n_codewords=256, assignment="hard", gamma=None, max_features=100_000, max_iter=100,
                 n_init=1, random_state=None, n_threads=None):
        self.n_codewords = n_codewords
        self.assignment = assignment
        self.gamma = gamma
        self.max_features = max_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads

    def _encode(self, bags):
        if self.assignment == "soft":
            return ops.soft_bow(*self._soft_args(bags), n_threads=self.n_threads)
        return ops.bow(bags.features, bags.offsets, self.cluster_centers_, n_threads=self.n_threads)


class VLAD(_CodebookEncoder):
    """VLAD (Jegou et al. 2010): per codeword, the sum of the residuals f_n - C_k of the
    features assigned to it, then the selected normalisations, in VLFeat's order.

    Parameters
    ----------
    n_codewords : int, K, the codebook size (KMeans clusters).
    assignment : "hard" (nearest codeword) or "soft" (a_nk = softmax_k(-gamma |f_n - C_k|^2)).
    gamma : float or None, as in :class:`BagOfWords`.
    power_alpha : float in (0, 1] or None: sign(x) |x|^alpha first (0.5: signed square root).
    intra_normalize : bool, L2-normalise each codeword's block (Arandjelovic & Zisserman 2013).
    l2_normalize : bool, finally L2-normalise the whole vector.
    max_features, max_iter, n_init, random_state, n_threads : as in :class:`BagOfWords`.

    Attributes
    ----------
    cluster_centers_ : (K, D) float64 array.
    gamma_ : float, the gamma used (None for hard assignment).
    dim_ : int, D.

    ``transform`` returns (n_bags, K * D), k-major.
    """

    def __init__(self, n_codewords=64, assignment="hard", gamma=None, power_alpha=None, intra_normalize=True,
                 l2_normalize=True, max_features=100_000, max_iter=100, n_init=1, random_state=None,
                 n_threads=None):
        self.n_codewords = n_codewords
        self.assignment = assignment
        self.gamma = gamma
        self.power_alpha = power_alpha
        self.intra_normalize = intra_normalize
        self.l2_normalize = l2_normalize
        self.max_features = max_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads

    def _encode(self, bags):
        if self.assignment == "soft":
            # soft_vlad averages over the bag; VLAD sums
            v = ops.soft_vlad(*self._soft_args(bags), n_threads=self.n_threads)
            v *= bags.sizes[:, None].astype(v.dtype)
        else:
            v = ops.vlad(bags.features, bags.offsets, self.cluster_centers_, n_threads=self.n_threads)
        if self.power_alpha is not None:
            v = normalize.power_normalize(v, self.power_alpha)
        if self.intra_normalize:
            v = normalize.intra_normalize(v, self.cluster_centers_.shape[0])
        return normalize.l2_normalize(v) if self.l2_normalize else v


class FisherVector(_BaselineEncoder):
    """Fisher Vectors (Perronnin et al. 2010) of a diagonal Gaussian mixture, with VLFeat's
    vl_fisher layout and scaling (see :func:`lfagg.ops.fisher_vector`).

    Parameters
    ----------
    n_components : int, K, the number of Gaussians.
    improved : bool, the improved FV: signed square root, then L2 normalisation.
    with_weights : bool, append the K gradients with respect to the mixture weights.
    max_features : int, the most local features the mixture is fitted on (a random sample).
    max_iter, n_init, reg_covar : passed to sklearn.mixture.GaussianMixture(covariance_type="diag").
    random_state : None, int or numpy.random.RandomState, for sampling and the mixture.
    n_threads : int or None (all cores), for fitting and encoding.

    Attributes
    ----------
    means_, variances_ : (K, D) float64 arrays.
    weights_ : (K,) float64 array.
    dim_ : int, D.

    ``transform`` returns (n_bags, 2 * K * D): the K mean blocks, then the K variance blocks
    (and with_weights, K more columns).
    """

    def __init__(self, n_components=64, improved=True, with_weights=False, max_features=100_000, max_iter=100,
                 n_init=1, reg_covar=1e-6, random_state=None, n_threads=None):
        self.n_components = n_components
        self.improved = improved
        self.with_weights = with_weights
        self.max_features = max_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.reg_covar = reg_covar
        self.random_state = random_state
        self.n_threads = n_threads

    def _n_clusters(self) -> int:
        return _positive_int(self.n_components, "n_components")

    def _fit_model(self, sample, rng):
        gmm = GaussianMixture(self.n_components, covariance_type="diag", max_iter=self.max_iter,
                              n_init=self.n_init, reg_covar=self.reg_covar, random_state=rng)
        gmm.fit(sample)
        self.means_ = gmm.means_.astype(np.float64)
        self.variances_ = gmm.covariances_.astype(np.float64)
        self.weights_ = gmm.weights_.astype(np.float64)

    def _encode(self, bags):
        return ops.fisher_vector(bags.features, bags.offsets, self.means_, self.variances_, self.weights_,
                                 improved=self.improved, n_threads=self.n_threads, with_weights=self.with_weights)
