"""Classifiers of bags: any encoder, optionally a feature map, then softmax regression.

:class:`BagClassifier` puts the head on an unsupervised encoder (BagOfWords, VLAD,
FisherVector, or any transformer of bags); LearnedBoW and LearnedVLAD share the same
head code (:class:`SoftmaxHead`) and also learn their encoder through it.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._threads import single_threaded_blas
from .._timing import Stopwatch
from .._validation import check_bags, check_classes, check_labels, is_auto, spawn_seeds
from .feature_map import make_feature_map
from .heads import SoftmaxRegression
from .l2 import check_l2, resolve_l2


class SoftmaxHead(ClassifierMixin):
    """Prediction and the classifier fit shared by every classifier of bags.

    A subclass sets ``classes_``, ``n_features_in_``, ``feature_map_`` (None or a feature
    map) and ``classifier_`` (a :class:`SoftmaxRegression`) when fitted, has an ``l2``
    parameter, and implements ``_represent(bags)``: the (n_bags, width) representation of
    already validated bags.
    """

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

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        return self._validated_logits(check_bags(X, self.n_features_in_))

    def _validated_logits(self, bags) -> np.ndarray:
        with single_threaded_blas():
            return self.classifier_.decision_function(self._classifier_inputs(bags))

    def _classifier_inputs(self, bags) -> np.ndarray:
        """(n_bags, n_inputs) float64: the representation of validated bags, feature-mapped."""
        R = self._represent(bags).astype(np.float64)
        return self.feature_map_.transform(R) if self.feature_map_ is not None else R

    def _check_l2(self) -> None:
        """Fails on a bad ``l2`` before any encoding is computed."""
        if not is_auto(self.l2):
            check_l2(self.l2)

    def _fit_classifier(self, X: np.ndarray, y_index: np.ndarray, seed: int,
                        watch: Stopwatch) -> SoftmaxRegression:
        """The softmax regression on inputs X (n, n_inputs) of classes y_index (n,), its
        scaler frozen to X and its penalty resolved from ``l2`` (held-out split ``seed``;
        the chosen value becomes ``l2_``); the phases "l2" and "classifier" are timed in ``watch``."""
        with watch("l2"):
            self.l2_ = resolve_l2(self.l2, X, y_index, self.classes_.size, seed)
        with watch("classifier"):
            classifier = SoftmaxRegression(X.shape[1], self.classes_.size, self.l2_)
            classifier.fit_scaler(X)
            classifier.fit(X, y_index)
        return classifier


class BagClassifier(SoftmaxHead, BaseEstimator):
    """An unsupervised encoder of bags, optionally a feature map, then the softmax
    regression of LearnedBoW/LearnedVLAD (standardised inputs, L2 penalty, L-BFGS): the
    baselines of Table I.

    Parameters
    ----------
    encoder : an unfitted transformer of bags with ``fit(bags)`` / ``transform(bags)``,
        e.g. ``lfagg.BagOfWords(256)``; cloned when fitted.
    feature_map : "auto" (the chi2 map when the encoder's ``nonnegative`` attribute is
        True, as BagOfWords', else none), "chi2" or None.
    l2 : float >= 0 or "auto", the L2 penalty of the classifier weights ("auto": chosen
        on held-out training bags, :func:`lfagg.models.l2.select_l2`).
    random_state : None, int or numpy random generator; seeds the split of l2="auto".

    Attributes
    ----------
    encoder_ : the fitted encoder; feature_map_ : the chi2 map or None; classes_ :
    (n_classes,); l2_ : float, the penalty; classifier_ : SoftmaxRegression;
    n_features_in_ : int, D; timings_ : dict of the fit's wall seconds per phase
    ("codebook": the encoder's fit, "encode", "l2", "classifier"), as LearnedBoW's.
    """

    def __init__(self, encoder, feature_map="auto", l2="auto", random_state=None):
        self.encoder = encoder
        self.feature_map = feature_map
        self.l2 = l2
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the encoder on the bags' features, then the classifier on their encodings.

        Parameters
        ----------
        X : Bags or list of (N_i, D) float arrays; y : (n_bags,) labels, two classes or more.

        Returns
        -------
        self
        """
        bags = check_bags(X)
        self.classes_, y_index = check_classes(check_labels(y, len(bags)))
        self._check_l2()
        encoder = clone(self.encoder)
        self.feature_map_ = make_feature_map(self.feature_map, getattr(encoder, "nonnegative", False),
                                             type(encoder).__name__)
        self.timings_ = watch = Stopwatch()
        with watch("codebook"):  # lfagg's encoders skip a second check of these bags
            self.encoder_ = getattr(encoder, "_fit_validated", encoder.fit)(bags)
        self.n_features_in_ = bags.dim
        with watch("encode"):
            X = self._classifier_inputs(bags)
        self.classifier_ = self._fit_classifier(X, y_index, spawn_seeds(self.random_state, 3)[0], watch)
        return self

    def transform(self, X) -> np.ndarray:
        """The encoder's representation of each bag (before the feature map)."""
        check_is_fitted(self, "classifier_")
        return self.encoder_.transform(X)

    def _represent(self, bags) -> np.ndarray:
        # lfagg's encoders skip a second check of bags validated here
        return getattr(self.encoder_, "_transform_validated", self.encoder_.transform)(bags)
