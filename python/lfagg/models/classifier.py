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

from .._tags import BagsTags
from .._threads import single_threaded_blas
from .._progress import Stopwatch, bags_count
from .._validation import (check_bags, check_classes, check_labels, fitted_array, forget_fit, is_auto, n_threads_arg,
                           positive_int, spawn_seeds, verbosity)
from ..bags import Bags
from ..store import blockwise
from .feature_map import AdditiveChi2Map, make_feature_map
from .heads import SoftmaxRegression
from .l2 import check_l2, select_l2


class BagClassifierMixin(ClassifierMixin):
    """scikit-learn's ClassifierMixin whose ``score`` reads labels as ``fit`` does: an object
    array of integers (a pandas column's), which scikit-learn's metrics refuse as of an
    "unknown" type, is compared as the integers it holds."""

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against the labels ``y`` (n_bags,)."""
        return super().score(X, check_labels(y, len(y)), sample_weight)


class SoftmaxHead(BagClassifierMixin):
    """Prediction and the classifier fit shared by every classifier of bags.

    A subclass sets ``classes_``, ``n_features_in_``, ``feature_map_`` (None or a feature
    map) and ``classifier_`` (a :class:`SoftmaxRegression`) when fitted, has an ``l2``
    parameter, and implements ``_represent(bags)``, the (n_bags, width) representation of
    already validated bags, ``_n_threads()``, the core's thread argument, and
    ``_check_encoder_state(dim)``, ValueError unless its fitted encoder is consistent.
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
        check_is_fitted(self, "classifier_")
        return self._validated_predict(self._check_bags(X))

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        return self._validated_logits(self._check_bags(X))

    def _check_bags(self, X):
        return check_bags(X, self.n_features_in_, self._n_threads())

    def _validated_predict(self, bags) -> np.ndarray:
        return self.classes_[np.argmax(self._validated_logits(bags), axis=1)]

    def _validated_logits(self, bags) -> np.ndarray:
        with single_threaded_blas():
            return self.classifier_.decision_function(self._classifier_inputs(bags))

    def _classifier_inputs(self, bags) -> np.ndarray:
        """(n_bags, n_inputs) float64: the representation of validated bags, feature-mapped."""
        R = blockwise(bags, self._represent).astype(np.float64)
        return self.feature_map_.transform(R) if self.feature_map_ is not None else R

    def _check_fitted_state(self) -> None:
        """ValueError unless the parameters and fitted attributes are what ``fit`` leaves
        (for a model read from a file): the encoder's (``_check_encoder_state(dim)``), the
        classes, the feature map, and a classifier whose shapes match what they output."""
        classes = self.classes_
        if not isinstance(classes, np.ndarray) or classes.ndim != 1:
            raise ValueError(f"classes_ must be a 1-D array, got {type(classes).__name__}")
        distinct, _ = check_classes(check_labels(classes, classes.size))
        if distinct.size != classes.size or (distinct != classes).any():
            raise ValueError(f"classes_ must be distinct sorted labels, got {classes.tolist()}")
        dim = positive_int(self.n_features_in_, "n_features_in_")
        self._check_encoder_state(dim)
        if self.feature_map_ is not None:
            if type(self.feature_map_) is not AdditiveChi2Map:
                raise ValueError(f"feature_map_ must be None or the chi2 map, got {type(self.feature_map_).__name__}")
            AdditiveChi2Map(self.feature_map_.sample_steps, self.feature_map_.sample_interval,
                            self.feature_map_.clamp)  # its constructor's checks
        head = self.classifier_
        if type(head) is not SoftmaxRegression:
            raise ValueError(f"classifier_ must be a SoftmaxRegression, got {type(head).__name__}")
        width = self._classifier_inputs(Bags(np.zeros((1, dim)), np.array([0, 1]))).shape[1]
        fitted_array(head.W, "classifier_.W", (width, classes.size))
        fitted_array(head.b, "classifier_.b", (classes.size,))
        fitted_array(head.mean, "classifier_.mean", (width,))
        fitted_array(head.scale, "classifier_.scale", (width,), positive=True)

    def _check_l2(self) -> float | None:
        """The penalty ``l2`` as a float, or None for "auto"; fails before any encoding is computed."""
        return None if is_auto(self.l2) else check_l2(self.l2)

    def _fit_classifier(self, X: np.ndarray, y_index: np.ndarray, l2: float | None, seed: int,
                        watch: Stopwatch) -> SoftmaxRegression:
        """The softmax regression on inputs X (n, n_inputs) of classes y_index (n,), its
        scaler frozen to X and its penalty ``l2`` (from :meth:`_check_l2`; None: chosen by
        :func:`select_l2` on the held-out split ``seed``), kept as ``l2_``, its L-BFGS
        evaluations on the estimator's threads; the phases "l2" and "classifier" are timed
        in ``watch``."""
        n_threads = self._n_threads()
        self.l2_, start = l2, None
        with watch("l2", None if l2 is not None else f"choosing l2 on held-out bags ({X.shape[1]:,} inputs)"):
            if l2 is None:
                self.l2_, start = select_l2(X, y_index, self.classes_.size, random_state=seed, n_threads=n_threads,
                                            return_weights=True)
        with watch("classifier", "fitting the classifier (L-BFGS)"):
            classifier = SoftmaxRegression(X.shape[1], self.classes_.size, self.l2_)
            classifier.fit_scaler(X)
            if start is not None:  # the held-out fit's solution: the same problem on most of the rows
                classifier.W[...], classifier.b[...] = start
            classifier.fit(X, y_index, n_threads=n_threads)
        return classifier


def _fit_foreign_encoder(encoder, bags):
    """``encoder.fit(bags)`` for an encoder not of lfagg's; its failure on Bags (a
    transformer of feature rows, as PCA, refuses the bags in its own terms) names it."""
    try:
        return encoder.fit(bags)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"encoder {type(encoder).__name__} could not fit the bags (lfagg.Bags): {exc}; encoder "
                         "must be a transformer of bags such as lfagg.BagOfWords(256)") from exc


class BagClassifier(BagsTags, SoftmaxHead, BaseEstimator):
    """An unsupervised encoder of bags, optionally a feature map, then the softmax
    regression of LearnedBoW/LearnedVLAD (standardised inputs, L2 penalty, L-BFGS): the
    baselines of Table I.

    Parameters
    ----------
    encoder : an unfitted transformer of bags with ``fit(bags)`` / ``transform(bags)``,
        e.g. ``lfagg.BagOfWords(256)``; cloned when fitted. lfagg's own encoders are fitted
        and applied to the bags this classifier has checked without checking them again.
        The encoder's ``n_threads`` (all cores when it has none) also runs the classifier's
        L-BFGS evaluations.
    feature_map : "auto" (the chi2 map when the encoder's ``nonnegative`` attribute is
        True, as BagOfWords', else none), "chi2" or None.
    l2 : float >= 0 or "auto", the L2 penalty of the classifier weights ("auto": chosen
        on held-out training bags, :func:`lfagg.models.l2.select_l2`).
    random_state : None, int or numpy random generator; seeds the split of l2="auto".
    verbose : int, > 0 reports each phase of the fit on stderr.

    Attributes
    ----------
    encoder_ : the fitted encoder; feature_map_ : the chi2 map or None; classes_ :
    (n_classes,); l2_ : float, the penalty; classifier_ : SoftmaxRegression;
    n_features_in_ : int, D; timings_ : dict of the fit's wall seconds per phase
    ("codebook": the encoder's fit, "encode", "l2", "classifier"), as LearnedBoW's.
    """

    def __init__(self, encoder, feature_map="auto", l2="auto", random_state=None, verbose=0):
        self.encoder = encoder
        self.feature_map = feature_map
        self.l2 = l2
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        """Fit the encoder on the bags' features, then the classifier on their encodings.

        Parameters
        ----------
        X : Bags or list of (N_i, D) float arrays; y : (n_bags,) labels, two classes or more.

        Returns
        -------
        self
        """
        forget_fit(self)
        encoder = self.encoder
        if isinstance(encoder, type) or not all(hasattr(encoder, m) for m in ("fit", "transform", "get_params")):
            raise ValueError(f"encoder must be a transformer of bags such as lfagg.BagOfWords(256), got {encoder!r}")
        if isinstance(encoder, ClassifierMixin):  # its fit needs labels; it is a whole bag classifier already
            raise ValueError(f"encoder must be a transformer of bags such as lfagg.BagOfWords(256), got the classifier "
                             f"{type(encoder).__name__}: fit and predict with it directly")
        l2 = self._check_l2()
        feature_map = make_feature_map(self.feature_map, getattr(encoder, "nonnegative", False),
                                       type(encoder).__name__)
        bags = check_bags(X, n_threads=self._n_threads())
        self.classes_, y_index = check_classes(check_labels(y, len(bags)))
        encoder = clone(encoder)
        watch = Stopwatch(f"BagClassifier({type(encoder).__name__})", verbosity(self.verbose))
        with watch("codebook", f"fitting the encoder on {bags.n_features:,} local features"):
            # lfagg's encoders skip a second check of these bags
            if hasattr(encoder, "_fit_validated"):
                self.encoder_ = encoder._fit_validated(bags)
            else:
                self.encoder_ = _fit_foreign_encoder(encoder, bags)
        self.feature_map_, self.n_features_in_ = feature_map, bags.dim
        with watch("encode", f"encoding {bags_count(len(bags))}"):
            X = self._classifier_inputs(bags)
        self.classifier_ = self._fit_classifier(X, y_index, l2, spawn_seeds(self.random_state, 3)[0], watch)
        self.timings_ = dict(watch)
        return self

    def transform(self, X) -> np.ndarray:
        """The encoder's representation of each bag (before the feature map)."""
        check_is_fitted(self, "classifier_")
        return self._represent(self._check_bags(X))  # the encoder gets Bags, as in fit and predict

    def _represent(self, bags) -> np.ndarray:
        # lfagg's encoders skip a second check of bags validated here
        return getattr(self.encoder_, "_transform_validated", self.encoder_.transform)(bags)

    def _n_threads(self) -> int:
        return n_threads_arg(getattr(self.encoder, "n_threads", None))

    def _check_encoder_state(self, dim: int) -> None:
        check = getattr(self.encoder_, "_check_fitted_state", None)
        if check is None:
            raise ValueError(f"encoder_ must be a fitted lfagg encoder, got {type(self.encoder_).__name__}")
        check()
        if self.encoder_.n_features_in_ != dim:
            raise ValueError(f"encoder_ was fitted on dimension {self.encoder_.n_features_in_}, "
                             f"the classifier on {dim}")
