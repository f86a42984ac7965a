"""Algorithm 1 of the paper as scikit-learn classifiers: LearnedBoW (T1) and LearnedVLAD (T2).

The encoder's codebook, diagonal covariances and (optionally) gamma are learned jointly
with a softmax logistic regression by backpropagation: initialisation (K-Means, GMM or
random features), W0 fitted on the initial representation, SGD with every bag subsampled
per step, and a final fit of the classifier on the full, unsampled representations.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ._bags import as_bags
from .feature_map import AdditiveChi2Map
from .heads import MappedHead, SoftmaxRegression, check_l2, resolve_l2, single_threaded_blas
from .training import encode, train_encoder


def initial_codebook(sample: np.ndarray, n_codewords: int, init: str, random_state: int):
    """Initial (centers, precisions), each (K, D) float64, from a sample of local features.

    "kmeans": K-Means centres, unit precisions; "gmm": means and inverse variances of a
    diagonal GMM; "random": K distinct sampled features, unit precisions.
    """
    if init == "kmeans":
        km = KMeans(n_clusters=n_codewords, n_init=1, max_iter=100, random_state=random_state).fit(sample)
        return km.cluster_centers_.astype(np.float64), np.ones((n_codewords, sample.shape[1]))
    if init == "gmm":
        gmm = GaussianMixture(n_codewords, covariance_type="diag", random_state=random_state).fit(sample)
        return gmm.means_, 1 / gmm.covariances_
    if init == "random":
        rng = np.random.default_rng(random_state)
        return sample[rng.choice(len(sample), n_codewords, replace=False)].astype(np.float64), \
            np.ones((n_codewords, sample.shape[1]))
    raise ValueError(f"init must be 'kmeans', 'gmm' or 'random', got {init!r}")


def auto_gamma(sample: np.ndarray, centers: np.ndarray, precisions: np.ndarray, random_state=0) -> float:
    """The data-driven default of gamma: 1 / median over local features of the distance
    to their nearest codeword, so a typical feature's nearest codeword weighs e times
    more than a codeword at twice that distance. Scale-free: multiplying the features by
    s divides it by s^2 (the paper's values range from 5e-8 to 70 for this reason)."""
    if len(sample) > 10_000:  # a random subset: the sample may be ordered by bag, hence by class
        sample = sample[np.random.default_rng(random_state).choice(len(sample), 10_000, replace=False)]
    sample = sample.astype(np.float64)
    d = (sample ** 2) @ precisions.T - 2 * sample @ (centers * precisions).T + (centers ** 2 * precisions).sum(1)
    nearest = np.median(np.maximum(d.min(axis=1), 0))
    return 1.0 / nearest if nearest > 0 else 1.0


class _LearnedAggregation(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Shared implementation; see LearnedBoW and LearnedVLAD."""

    _encoder = ""
    _default_feature_map = None

    def __init__(self, n_codewords=64, *, gamma="auto", gamma_scale=1.0, learn_gamma=False, learn_covariances=True,
                 init="kmeans", feature_map="auto", n_epochs=10, batch_size=32, n_samples_per_bag=128,
                 optimizer="adam", learning_rate=1e-3, classifier_learning_rate=None, l2="auto",
                 max_init_features=100_000, validation_fraction=None, early_stopping=False,
                 n_iter_no_change=3, random_state=None, n_threads=None, verbose=0):
        self.n_codewords = n_codewords
        self.gamma = gamma
        self.gamma_scale = gamma_scale
        self.learn_gamma = learn_gamma
        self.learn_covariances = learn_covariances
        self.init = init
        self.feature_map = feature_map
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.n_samples_per_bag = n_samples_per_bag
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.classifier_learning_rate = classifier_learning_rate
        self.l2 = l2
        self.max_init_features = max_init_features
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y, validation_data=None):
        """Learn the encoder and the classifier (Algorithm 1).

        BLAS runs single-threaded meanwhile (see :func:`single_threaded_blas`).

        Parameters
        ----------
        X : Bags or list of (N_i, D) float arrays, the training bags.
        y : (n_bags,) class labels (at least two classes).
        validation_data : optional (bags, labels) evaluated after every epoch (accuracy
            in ``history_["val_accuracy"]``); otherwise ``validation_fraction`` of the
            training bags is held out when it is set.

        Returns
        -------
        self
        """
        with single_threaded_blas():
            return self._fit(X, y, validation_data)

    def _fit(self, X, y, validation_data):
        bags, y = self._check_bags_labels(X, y)
        seeds = np.random.default_rng(self.random_state).integers(2 ** 31, size=3)
        if validation_data is None and self.validation_fraction:
            train, val = train_test_split(np.arange(len(bags)), test_size=self.validation_fraction,
                                          stratify=y, random_state=int(seeds[0]))
            validation_data = (bags[val], y[val])
            bags, y = bags[train], y[train]
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y must hold at least two classes, got only {self.classes_.tolist()}")
        if validation_data is not None:
            val_bags, val_y = self._check_bags_labels(*validation_data, dim=bags.dim)
        self.n_features_in_ = bags.dim

        gamma = None if _is_auto(self.gamma) else self._check_gamma()
        gamma_scale = self._check_gamma_scale(gamma)
        sample = self._init_sample(bags, int(seeds[1]))
        centers, precisions = initial_codebook(sample, self.n_codewords, self.init, int(seeds[1]))
        if gamma is None:
            gamma = gamma_scale * auto_gamma(sample, centers, precisions, int(seeds[1]))
        if not _is_auto(self.l2):
            check_l2(self.l2)  # fail before the initial encoding, not after it
        self.feature_map_ = self._make_feature_map()
        classifier = SoftmaxRegression(self._n_classifier_inputs(bags.dim), self.classes_.size)
        head = MappedHead(self.feature_map_, classifier) if self.feature_map_ is not None else classifier
        self._set_state(centers, precisions, gamma, classifier)

        X0 = self._features_for_classifier(bags)  # W0 on the initial representation
        self.l2_ = classifier.l2 = resolve_l2(self.l2, X0, y_index, self.classes_.size, int(seeds[0]))
        classifier.fit_scaler(X0)
        classifier.fit(X0, y_index)

        best = {"score": -np.inf, "state": None, "stale": 0}

        def on_epoch_end(epoch, record, result):
            self._set_state(result.centers, result.precisions, result.gamma, classifier)
            if validation_data is None:
                return False
            record["val_accuracy"] = self.score(val_bags, val_y)
            if record["val_accuracy"] > best["score"]:
                best.update(score=record["val_accuracy"], state=self._copy_state(), stale=0)
            else:
                best["stale"] += 1
            return self.early_stopping and best["stale"] >= self.n_iter_no_change

        result = train_encoder(
            bags, y_index, head, self._encoder, centers, precisions, gamma, n_epochs=self.n_epochs,
            batch_size=self.batch_size, n_samples_per_bag=self.n_samples_per_bag, optimizer=self.optimizer,
            learning_rate=self.learning_rate, head_learning_rate=self.classifier_learning_rate,
            learn_precisions=self.learn_covariances, learn_gamma=self.learn_gamma, random_state=int(seeds[2]),
            n_threads=self.n_threads, verbose=self.verbose, on_epoch_end=on_epoch_end)
        self.history_ = result.history
        if self.early_stopping and best["state"] is not None:
            self._restore_state(best["state"])
        # Classifier fine-tuning on the full, unsampled representations.
        self.classifier_.fit(self._features_for_classifier(bags), y_index)
        return self

    # -- inference ---------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """The learned representation of each bag, over all of its features: (n_bags, K)
        soft BoW (LearnedBoW) or (n_bags, K * D) soft VLAD (LearnedVLAD), in the bags'
        dtype (float32 or float64), before the feature map."""
        check_is_fitted(self, "classifier_")
        bags = self._check_bags(X, dim=self.n_features_in_)
        return encode(bags, self._encoder, self.centers_, 1 / self.covariances_, self.gamma_, self.n_threads)

    def decision_function(self, X) -> np.ndarray:
        """Class scores (logits): (n_bags, n_classes), or (n_bags,) for two classes
        (positive for classes_[1]), float64."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        """(n_bags, n_classes) float64 class probabilities."""
        return softmax(self._logits(X), axis=1)

    def predict(self, X) -> np.ndarray:
        """(n_bags,) predicted labels from classes_."""
        logits = self._logits(X)  # checks that the model is fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    # -- helpers -----------------------------------------------------------------------
    def _logits(self, X):
        check_is_fitted(self, "classifier_")
        with single_threaded_blas():
            return self.classifier_.decision_function(self._features_for_classifier(X))

    def _features_for_classifier(self, X):
        R = self.transform(X).astype(np.float64)
        return self.feature_map_.transform(R) if self.feature_map_ is not None else R

    def _n_classifier_inputs(self, dim):
        out = self.n_codewords if self._encoder == "bow" else self.n_codewords * dim
        return self.feature_map_.output_dim(out) if self.feature_map_ is not None else out

    def _make_feature_map(self):
        name = self._default_feature_map if _is_auto(self.feature_map) else self.feature_map
        if name is None:
            return None
        if name == "chi2":
            if self._encoder == "vlad":
                raise ValueError("feature_map='chi2' needs non-negative representations, but soft VLAD's are "
                                 "signed: use feature_map=None")
            return AdditiveChi2Map()
        raise ValueError(f"feature_map must be 'auto', 'chi2' or None, got {self.feature_map!r}")

    def _set_state(self, centers, precisions, gamma, classifier):
        self.centers_, self.covariances_, self.gamma_ = centers, 1 / precisions, float(gamma)
        self.classifier_ = classifier

    def _copy_state(self):
        return copy.deepcopy((self.centers_, self.covariances_, self.gamma_, self.classifier_))

    def _restore_state(self, state):
        self.centers_, self.covariances_, self.gamma_, classifier = state
        self.classifier_.W[...], self.classifier_.b[...] = classifier.W, classifier.b

    def _init_sample(self, bags, seed):
        n = bags.n_features
        if n < self.n_codewords:
            raise ValueError(f"too few local features ({n}) for n_codewords={self.n_codewords}")
        if not (isinstance(self.max_init_features, numbers.Integral) and self.max_init_features >= self.n_codewords):
            raise ValueError(f"max_init_features must be an integer >= n_codewords, got {self.max_init_features!r}")
        rows = np.random.default_rng(seed).choice(n, min(n, self.max_init_features), replace=False)
        return bags.features[np.sort(rows)]

    def _check_gamma(self):
        if isinstance(self.gamma, numbers.Real) and np.isfinite(self.gamma) and self.gamma > 0:
            return float(self.gamma)
        raise ValueError(f"gamma must be 'auto' or a positive number, got {self.gamma!r}")

    def _check_gamma_scale(self, gamma):
        """gamma_scale as a float, given the checked numeric gamma (None for "auto")."""
        scale = self.gamma_scale
        if not (isinstance(scale, numbers.Real) and not isinstance(scale, bool) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"gamma_scale must be a positive number, got {scale!r}")
        if gamma is not None and scale != 1:
            raise ValueError(f"gamma_scale multiplies gamma='auto' only; with gamma={gamma!r}, "
                             "give the scaled value as gamma")
        return float(scale)

    @staticmethod
    def _check_bags(X, dim=None):
        bags = as_bags(X)
        if dim is not None and bags.dim != dim:
            raise ValueError(f"bags have local features of dimension {bags.dim}, but the model was fitted "
                             f"on dimension {dim}")
        if not np.isfinite(bags.features).all():
            raise ValueError("bags contain NaN or infinity")
        return bags

    def _check_bags_labels(self, X, y, dim=None):
        bags = self._check_bags(X, dim)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(bags):
            raise ValueError(f"y must be a 1-D array with one label per bag: got shape {y.shape} for {len(bags)} bags")
        return bags, y


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


class LearnedBoW(_LearnedAggregation):
    """T1: a soft Bag of Words with learned codebook, diagonal covariances and gamma,
    classified by softmax logistic regression after the chi2 feature map (default).

    Parameters
    ----------
    n_codewords : K, the size of the codebook (and of the representation).
    gamma : positive float or "auto" (see :func:`auto_gamma`).
    gamma_scale : positive float multiplying the "auto" gamma (only with gamma="auto"):
        above 1, sharper assignments. The paper finds the encoders very sensitive to gamma
        and chooses it on validation data; on CIFAR-10 patches 4 to 8 classified held-out
        training images best (see :data:`lfagg.experiments.T1_PARAMS`).
    learn_gamma : also learn gamma (beyond the paper; through its logarithm).
    learn_covariances : learn the diagonal covariances (else they stay at their init).
    init : "kmeans" (unit covariances), "gmm" (GMM means and covariances) or "random".
    feature_map : "auto" (chi2 for LearnedBoW, none for LearnedVLAD), "chi2" or None.
    n_epochs, batch_size : SGD passes and bags per step.
    n_samples_per_bag : local features drawn from each bag per step (eq. 5), None = all.
    optimizer : "adam" or "sgd" (momentum 0.9).
    learning_rate : encoder step size (centres: this times the features' std).
    classifier_learning_rate : classifier step size (default learning_rate).
    l2 : L2 penalty of the classifier weights (on standardised inputs), or "auto": the
        value of :data:`lfagg.heads.L2_GRID` that best classifies about a fifth of the
        training bags, held out, from their initial representation
        (:func:`lfagg.heads.select_l2`; its own split, also when validation data are given).
    max_init_features : local features sampled for the K-Means/GMM initialisation.
    validation_fraction : fraction of bags held out for per-epoch validation accuracy.
    early_stopping : stop when validation accuracy has not improved for
        ``n_iter_no_change`` epochs and keep the best epoch's parameters.
    random_state : int or None; fixes initialisation, bag order and subsampling.
    n_threads : threads of the C++ kernels (None = all cores).
    verbose : > 0 shows a progress bar per epoch.

    Attributes
    ----------
    centers_ : (K, D) float64; covariances_ : (K, D) float64 diagonal covariances;
    gamma_ : float; l2_ : float, the classifier's penalty; classes_ : (n_classes,);
    history_ : dict of per-epoch lists ("loss", "time" and, with validation,
    "val_accuracy"); classifier_ : the softmax regression; feature_map_ : the chi2 map
    or None.
    """

    _encoder = "bow"
    _default_feature_map = "chi2"


class LearnedVLAD(_LearnedAggregation):
    """T2: a soft VLAD with learned codebook, diagonal covariances and gamma, classified
    by softmax logistic regression on the (K * D) representation.

    Parameters and attributes are those of :class:`LearnedBoW`; the feature map defaults
    to none.
    """

    _encoder = "vlad"
    _default_feature_map = None
