"""The unsupervised baselines as scikit-learn transformers: Bag of Words (hard, or the
kernel-codebook soft BoW of van Gemert et al.), VLAD and Fisher Vectors.

``fit(bags)`` learns a codebook (K-Means) or a diagonal Gaussian mixture on a random
sample of at most ``max_init_features`` local features pooled over all bags, as the
learned encoders initialise theirs (:mod:`lfagg.encoders.codebook`; the same
``random_state`` gives LearnedBoW's initial codebook); ``transform(bags)`` encodes every
bag with the C++ kernels into one row, then applies the selected normalisations
(:mod:`lfagg.normalize`). Bags are a :class:`lfagg.Bags` or a list of (N_i, D) arrays; the
output dtype is the features' dtype (float32 stays float32, anything else becomes float64).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .. import normalize
from .._native import core
from .._tags import BagsTags
from .._validation import (boolean, check_bags, choice, fitted_array, forget_fit, n_threads_arg, nonnegative_real,
                           positive_int, positive_real, real_in, spawn_seeds)
from .._kernels import run_validated
from ..store import blockwise
from .codebook import GMM_TOL, check_gamma, check_sizes, fit_codebook, resolve_gamma, sample_features
from .soft import SOFT_BOW, SOFT_VLAD

__all__ = ["BagOfWords", "VLAD", "FisherVector"]

ASSIGNMENTS = ("hard", "soft")


class _CodebookTransformer(BagsTags, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """fit: sample local features, learn the codebook; transform: encode every bag.

    Subclasses set ``nonnegative`` (whether every output value is >= 0) and implement
    ``_check_params()`` (returns what ``_fit_codebook`` needs), ``_fit_codebook(sample,
    seed, n_threads, params)``, ``_check_codebook(dim)`` (ValueError unless the fitted codebook
    is consistent) and ``_encode(bags, n_threads)``. ``_fit_validated`` and
    ``_transform_validated`` take bags already checked, as BagClassifier passes them.
    A fitted one's ``_n_features_out``, the representation's columns, is what
    ``get_feature_names_out`` names (``bagofwords0``, ...) and ``set_output`` needs.
    """

    nonnegative = False

    def fit(self, X, y=None):
        """Learns the codebook on a random sample of the bags' local features.

        Parameters
        ----------
        X : Bags or list of (N_i, D) arrays.
        y : ignored; present for Pipeline compatibility.

        Returns
        -------
        self
        """
        return self._fit_validated(check_bags(X, n_threads=n_threads_arg(self.n_threads)))

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X).transform(X)``, the bags checked once: (n_bags, output_dim)."""
        bags = check_bags(X, n_threads=n_threads_arg(self.n_threads))
        return self._fit_validated(bags)._transform_validated(bags)

    def _fit_validated(self, bags):
        """:meth:`fit` on bags already checked finite."""
        forget_fit(self)
        K, max_features = check_sizes(self.n_codewords, self.max_init_features)
        n_threads = n_threads_arg(self.n_threads)
        positive_int(self.max_iter, "max_iter")
        positive_int(self.n_init, "n_init")
        params = self._check_params()
        self._refuse_ignored_params()
        seed = spawn_seeds(self.random_state, 3)[1]  # the codebook's seed in every estimator
        self._fit_codebook(sample_features(bags, K, max_features, seed, n_threads), seed, n_threads, params)
        self.n_features_in_ = bags.dim
        return self

    def transform(self, X) -> np.ndarray:
        """Encodes every bag.

        Parameters
        ----------
        X : Bags or list of (N_i, D) arrays, D as in fit.

        Returns
        -------
        (n_bags, output_dim) float32 array for float32 features, float64 otherwise.
        """
        check_is_fitted(self)
        return self._transform_validated(check_bags(X, self.n_features_in_, n_threads_arg(self.n_threads)))

    def _transform_validated(self, bags) -> np.ndarray:
        """:meth:`transform` of bags already checked (finite, of dimension n_features_in_)."""
        n_threads = n_threads_arg(self.n_threads)
        return blockwise(bags, lambda block: self._encode(block, n_threads))

    def _check_params(self):
        """Checks the parameters beyond the codebook's size, before any fit."""

    def _refuse_ignored_params(self) -> None:
        """ValueError for parameters the fit would ignore (a search over them would repeat
        one fit); checked by fit only: models saved before the check hold such values."""

    def _check_fitted_state(self) -> None:
        """ValueError unless the parameters and fitted attributes are what ``fit`` leaves
        (for a model read from a file)."""
        check_sizes(self.n_codewords, self.max_init_features)
        n_threads_arg(self.n_threads)
        self._check_params()
        self._check_codebook(positive_int(self.n_features_in_, "n_features_in_"))


class _KMeansTransformer(_CodebookTransformer):
    """A K-Means codebook with hard or soft (kernel-codebook) assignment."""

    def _check_params(self):
        """(gamma, gamma_scale) checked."""
        choice(self.assignment, "assignment", ASSIGNMENTS)
        return check_gamma(self.gamma, self.gamma_scale)

    def _refuse_ignored_params(self) -> None:
        if self.assignment == "hard" and check_gamma(self.gamma, self.gamma_scale) != (None, 1.0):
            raise ValueError(f"gamma ({self.gamma!r}) and gamma_scale ({self.gamma_scale!r}) set the softness of "
                             "assignment='soft'; hard assignment has none: leave them at 'auto' and 1")

    def _fit_codebook(self, sample, seed, n_threads, gamma):
        codebook = fit_codebook(sample, self.n_codewords, "kmeans", seed, max_iter=self.max_iter, n_init=self.n_init,
                                n_threads=n_threads)
        self.cluster_centers_ = codebook.centers
        self.gamma_ = resolve_gamma(*gamma, sample, codebook, seed) if self.assignment == "soft" else None

    def _check_codebook(self, dim: int) -> None:
        fitted_array(self.cluster_centers_, "cluster_centers_", (self.n_codewords, dim))
        if self.assignment == "soft":
            positive_real(self.gamma_, "gamma_")

    def _soft(self, encoder, bags, n_threads):
        """The soft encoder's representation with unit precisions (Euclidean distances)."""
        return encoder.forward(bags, self.cluster_centers_, np.ones_like(self.cluster_centers_), self.gamma_,
                               n_threads)


_GAMMA_DOC = """gamma : positive float or "auto", the inverse bandwidth of soft assignment; "auto"
        is ``gamma_scale`` / the median squared distance of a sampled feature to its
        nearest codeword (:func:`lfagg.encoders.codebook.auto_gamma`, as LearnedBoW's).
    gamma_scale : positive float multiplying the "auto" gamma. Hard assignment has no
        softness: it refuses any gamma but "auto" and any gamma_scale but 1."""


class BagOfWords(_KMeansTransformer):
    __doc__ = f"""Bag of Words: the histogram of the codewords of each bag's features.

    Parameters
    ----------
    n_codewords : int, K, the codebook size (K-Means clusters).
    assignment : "hard" (Csurka et al. 2004: each feature votes for its nearest codeword)
        or "soft" (van Gemert et al. 2010: a_nk = softmax_k(-gamma |f_n - C_k|^2)).
    {_GAMMA_DOC}
    max_init_features : int, the most local features K-Means is fitted on (a random sample).
    max_iter : the most Lloyd iterations of K-Means (fewer once the centres or the inertia
        settle, see :func:`lfagg.encoders.codebook.lloyd`); n_init : K-Means runs, the best kept.
    random_state : None, int or numpy random generator, for sampling and K-Means.
    n_threads : int or None (all cores), for fitting and encoding.

    Attributes
    ----------
    cluster_centers_ : (K, D) float64 array.
    gamma_ : float, the gamma used (None for hard assignment).
    n_features_in_ : int, D.

    ``transform`` returns (n_bags, K): the fraction of each bag's features per codeword
    (rows sum to 1; zeros for an empty bag).
    """

    nonnegative = True

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.shape[0]

    def __init__(self, n_codewords=256, assignment="hard", gamma="auto", gamma_scale=1.0, max_init_features=100_000,
                 max_iter=20, n_init=1, random_state=None, n_threads=None):
        self.n_codewords = n_codewords
        self.assignment = assignment
        self.gamma = gamma
        self.gamma_scale = gamma_scale
        self.max_init_features = max_init_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads

    def _encode(self, bags, n_threads):
        if self.assignment == "soft":
            return self._soft(SOFT_BOW, bags, n_threads)
        return run_validated(core.bow, bags, self.cluster_centers_, n_threads=n_threads)


class VLAD(_KMeansTransformer):
    __doc__ = f"""VLAD (Jegou et al. 2010): per codeword, the sum of the residuals f_n - C_k of the
    features assigned to it, then the selected normalisations, in VLFeat's order.

    Parameters
    ----------
    n_codewords : int, K, the codebook size (K-Means clusters).
    assignment : "hard" (nearest codeword) or "soft" (a_nk = softmax_k(-gamma |f_n - C_k|^2)).
    {_GAMMA_DOC}
    power_alpha : float in (0, 1] or None: sign(x) |x|^alpha first (0.5: signed square root).
    intra_normalize : bool, L2-normalise each codeword's block (Arandjelovic & Zisserman 2013).
    l2_normalize : bool, finally L2-normalise the whole vector.
    max_init_features, max_iter, n_init, random_state, n_threads : as in :class:`BagOfWords`.

    Attributes
    ----------
    cluster_centers_ : (K, D) float64 array.
    gamma_ : float, the gamma used (None for hard assignment).
    n_features_in_ : int, D.

    ``transform`` returns (n_bags, K * D), k-major.
    """

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.size

    def __init__(self, n_codewords=64, assignment="hard", gamma="auto", gamma_scale=1.0, power_alpha=None,
                 intra_normalize=True, l2_normalize=True, max_init_features=100_000, max_iter=20, n_init=1,
                 random_state=None, n_threads=None):
        self.n_codewords = n_codewords
        self.assignment = assignment
        self.gamma = gamma
        self.gamma_scale = gamma_scale
        self.power_alpha = power_alpha
        self.intra_normalize = intra_normalize
        self.l2_normalize = l2_normalize
        self.max_init_features = max_init_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads

    def _check_params(self):
        boolean(self.intra_normalize, "intra_normalize")
        boolean(self.l2_normalize, "l2_normalize")
        self._power_alpha()
        return super()._check_params()

    def _power_alpha(self) -> float | None:
        """power_alpha checked: None or a float in (0, 1]."""
        if self.power_alpha is None:
            return None
        return real_in(self.power_alpha, "power_alpha", 0, 1, include_low=False, include_high=True)

    def _encode(self, bags, n_threads):
        if self.assignment == "soft":
            # T2 averages the residuals over the bag (the paper's eq. 9); VLAD sums them.
            v = self._soft(SOFT_VLAD, bags, n_threads)
            v *= bags.sizes[:, None].astype(v.dtype)
        else:
            v = run_validated(core.vlad, bags, self.cluster_centers_, None, n_threads=n_threads)
        # the core's output is finite (it raises on an overflow) and the parameters checked: no scans
        if self.power_alpha is not None:
            v = normalize.power(v, self._power_alpha())
        if self.intra_normalize:
            v = normalize.intra(v, self.cluster_centers_.shape[0])
        return normalize.l2(v) if self.l2_normalize else v


class FisherVector(_CodebookTransformer):
    """Fisher Vectors (Perronnin et al. 2010) of a diagonal Gaussian mixture, with VLFeat's
    vl_fisher layout and scaling (see :func:`lfagg.ops.fisher_vector`).

    Parameters
    ----------
    n_codewords : int, K, the number of Gaussians.
    improved : bool, the improved FV: signed square root, then L2 normalisation
        (:func:`lfagg.normalize.improved_fisher_normalize`).
    with_weights : bool, append the K gradients with respect to the mixture weights.
    max_init_features : int, the most local features the mixture is fitted on (a random sample).
    max_iter : at most this many EM iterations of the diagonal Gaussian mixture (lfagg's
        :func:`lfagg.encoders.codebook.em_gmm`, scikit-learn's M-step, started from at most 20 Lloyd
        iterations of K-Means); n_init : K-Means runs; reg_covar : added to the variances.
    tol : EM stops once an iteration raises the sample's mean log-likelihood by less than
        ``tol`` per feature dimension (``tol * D`` per feature; scikit-learn's rule, 1e-3 per
        feature, is ``tol=1e-3 / D``: 9-20x the EM iterations at D = 108 for Fisher Vectors
        no better on CIFAR-10; see lfagg.encoders.codebook.GMM_TOL).
    random_state : None, int or numpy random generator, for sampling and the mixture.
    n_threads : int or None (all cores), for fitting and encoding.

    Attributes
    ----------
    means_, variances_ : (K, D) float64 arrays.
    weights_ : (K,) float64 array.
    n_features_in_ : int, D.

    ``transform`` returns (n_bags, 2 * K * D): the K mean blocks, then the K variance blocks
    (and with_weights, K more columns).
    """

    @property
    def _n_features_out(self) -> int:
        return 2 * self.means_.size + (len(self.weights_) if self.with_weights else 0)

    def __init__(self, n_codewords=64, improved=True, with_weights=False, max_init_features=100_000, max_iter=100,
                 n_init=1, reg_covar=1e-6, tol=GMM_TOL, random_state=None, n_threads=None):
        self.n_codewords = n_codewords
        self.improved = improved
        self.with_weights = with_weights
        self.max_init_features = max_init_features
        self.max_iter = max_iter
        self.n_init = n_init
        self.reg_covar = reg_covar
        self.tol = tol
        self.random_state = random_state
        self.n_threads = n_threads

    def _check_params(self):
        nonnegative_real(self.reg_covar, "reg_covar")
        nonnegative_real(self.tol, "tol")
        boolean(self.improved, "improved")
        boolean(self.with_weights, "with_weights")

    def _fit_codebook(self, sample, seed, n_threads, params):
        gmm = fit_codebook(sample, self.n_codewords, "gmm", seed, max_iter=self.max_iter, n_init=self.n_init,
                           reg_covar=self.reg_covar, tol=self.tol, n_threads=n_threads)
        self.means_, self.variances_, self.weights_ = gmm.centers, gmm.variances, gmm.weights

    def _check_codebook(self, dim: int) -> None:
        K = fitted_array(self.means_, "means_", (self.n_codewords, dim)).shape[0]
        fitted_array(self.variances_, "variances_", (K, dim), positive=True)
        fitted_array(self.weights_, "weights_", (K,), positive=True)

    def _encode(self, bags, n_threads):
        fv = run_validated(core.fisher_vector, bags, self.means_, self.variances_, self.weights_,
                           bool(self.with_weights), n_threads=n_threads)
        return normalize.improved(fv) if self.improved else fv  # the core's output: finite
