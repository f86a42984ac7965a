"""Algorithm 1 of the paper as scikit-learn classifiers: LearnedBoW (T1) and LearnedVLAD (T2).

The encoder's codebook, diagonal covariances and (optionally) gamma are learned jointly
with a softmax logistic regression by backpropagation: initialisation (K-Means, GMM or
random features, :mod:`lfagg.encoders.codebook`), W0 fitted on the initial
representation, SGD with every bag subsampled per step (:mod:`lfagg.training`), and a
final fit of the classifier on the full, unsampled representations. The classifier is
the head every classifier of bags shares (:class:`lfagg.models.classifier.SoftmaxHead`).
"""
from __future__ import annotations

import copy
import dataclasses
import numbers
import sys
import warnings
from types import SimpleNamespace

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from .._tags import BagsTags
from .._threads import single_threaded_blas
from .._progress import Stopwatch, bags_count
from .._validation import (boolean, check_bags, check_classes, check_labels, choice, fitted_array, forget_fit,
                           holds_text, is_auto, n_threads_arg, positive_int, positive_real, real_in, spawn_seeds,
                           unfitted_on_failure, verbosity)
from ..store import blockwise
from ..encoders.codebook import (INIT_NAMES, INITS, check_gamma, check_sizes, fit_codebook, resolve_gamma,
                                 sample_features)
from ..encoders.soft import SOFT_BOW, SOFT_BOW_MAX, SOFT_VLAD, SOFT_VLAD_MAX
from ..training.loop import SGDSettings, TrainingDiverged, run_sgd
from .classifier import SoftmaxHead
from .feature_map import make_feature_map
from .heads import MappedHead


#: The mini-batch of batch_size="auto" on large training sets (the paper's).
MAX_AUTO_BATCH = 32

#: A learned model whose training loss (penalty included) ends more than this fraction
#: above W0's gets a warning: L-BFGS refits the classifier to the same objective on the
#: learned representation, so SGD that kept the encoder sound ends near or below W0's.
WORSE_THAN_W0 = 0.05


def auto_batch_size(n_bags: int) -> int:
    """batch_size="auto": about 16 steps per epoch, between 4 and :data:`MAX_AUTO_BATCH`
    bags each. A fixed 32 gave the 83 training bags of a Musk1 fold 3 steps per epoch: in
    10 epochs the encoder hardly moved."""
    return min(MAX_AUTO_BATCH, max(4, n_bags // 16))


class _LearnedAggregation(BagsTags, SoftmaxHead, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          BaseEstimator):
    """Shared implementation; see LearnedBoW and LearnedVLAD. ``_POOLINGS`` maps each
    ``pooling`` the class offers to its SoftEncoder."""

    _POOLINGS: dict = {}

    @property
    def _n_features_out(self) -> int:  # the columns of transform, which get_feature_names_out names
        return self._encoder.output_dim(*self.centers_.shape)

    def __init__(self, n_codewords=64, *, pooling="mean", gamma="auto", gamma_scale=1.0, learn_gamma=False,
                 learn_covariances=True, init="kmeans", feature_map="auto", n_epochs=10, batch_size="auto",
                 n_samples_per_bag=128,
                 optimizer="adam", learning_rate=1e-3, classifier_learning_rate=None, l2="auto",
                 max_init_features=100_000, validation_fraction=None, early_stopping=False,
                 n_iter_no_change=3, random_state=None, n_threads=None, verbose=0):
        self.n_codewords = n_codewords
        self.pooling = pooling
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

    @property
    def _encoder(self):
        """The SoftEncoder of ``pooling``."""
        return self._POOLINGS[self.pooling]

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y, validation_data=None):
        """Learn the encoder and the classifier (Algorithm 1).

        BLAS runs single-threaded meanwhile (see :func:`lfagg._threads.single_threaded_blas`).

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
        self._checked_fit(X, y, validation_data)
        return self

    def fit_transform(self, X, y, validation_data=None) -> np.ndarray:
        """``fit(X, y, validation_data).transform(X)``, the bags checked once: (n_bags, width)."""
        return blockwise(self._checked_fit(X, y, validation_data), self._represent)

    def _checked_fit(self, X, y, validation_data, initial=None):
        """The parameters and X checked, then the fit with BLAS single-threaded; returns the checked bags."""
        with single_threaded_blas(), unfitted_on_failure(self):  # bad parameters or bags too: the old fit is
            plan = self._check_params()  # not the model these parameters describe
            bags = check_bags(X, n_threads=plan.n_threads)
            self._fit(bags, y, validation_data, plan, initial=initial)
        return bags

    def _fit_from_initial(self, initial, X, y):
        """``fit(X, y)`` started from ``initial``, a copy of this model that differs only by
        n_epochs=0 (and verbose), fitted by ``initial.fit(X, y)`` on the same X and y: the
        same integer random_state gives the same seeds, hence the same result as ``fit``,
        without fitting the codebook, gamma and W0 again (Table I's initial and learned
        rows). ``timings_`` holds the initial fit's phases too.

        Returns
        -------
        self
        """
        check_is_fitted(initial, "classifier_")
        if type(initial) is not type(self) or initial.n_epochs != 0 or (
                dict(initial.get_params(), n_epochs=self.n_epochs, verbose=self.verbose) != self.get_params()):
            raise ValueError(f"initial must be this {type(self).__name__} fitted with n_epochs=0")
        if not isinstance(self.random_state, numbers.Integral):  # else each fit draws other seeds
            raise ValueError(f"continuing a fit needs an integer random_state, got {self.random_state!r}")
        self._checked_fit(X, y, None, initial)
        return self

    def _check_params(self) -> SimpleNamespace:
        """Every parameter, before any data is touched: the checked values the fit uses."""
        K, max_features = check_sizes(self.n_codewords, self.max_init_features)
        gamma, gamma_scale = check_gamma(self.gamma, self.gamma_scale)
        choice(self.pooling, "pooling", tuple(self._POOLINGS))
        choice(self.init, "init", INITS)
        positive_int(self.n_iter_no_change, "n_iter_no_change")
        boolean(self.early_stopping, "early_stopping")
        boolean(self.learn_covariances, "learn_covariances")
        if self.validation_fraction is not None:
            real_in(self.validation_fraction, "validation_fraction", 0, 1, include_low=False)
        if self.classifier_learning_rate is not None:
            positive_real(self.classifier_learning_rate, "classifier_learning_rate")
        auto_batch = is_auto(self.batch_size)
        settings = SGDSettings.checked(
            n_epochs=self.n_epochs, batch_size=MAX_AUTO_BATCH if auto_batch else self.batch_size,
            n_samples_per_bag=self.n_samples_per_bag,
            optimizer=self.optimizer, learning_rate=self.learning_rate,
            head_learning_rate=self.classifier_learning_rate, learn_precisions=self.learn_covariances,
            learn_gamma=self.learn_gamma)
        return SimpleNamespace(
            K=K, max_features=max_features, gamma=gamma, gamma_scale=gamma_scale, l2=self._check_l2(),
            settings=settings, auto_batch=auto_batch,
            feature_map=make_feature_map(self.feature_map, self._encoder.nonnegative, type(self).__name__),
            n_threads=n_threads_arg(self.n_threads), verbose=verbosity(self.verbose))

    def _fit(self, bags, y, validation_data, plan: SimpleNamespace, initial=None) -> None:
        """Algorithm 1 on validated bags with the checked parameters of ``plan``, from the
        initial state of ``initial`` (see :meth:`_fit_from_initial`) when given."""
        forget_fit(self)
        y = check_labels(y, len(bags))
        if validation_data is not None and not (isinstance(validation_data, (tuple, list))
                                                and len(validation_data) == 2):
            raise ValueError("validation_data must be a pair (bags, labels)")
        split_seed, init_seed, sgd_seed = spawn_seeds(self.random_state, 3)
        val_bags = val_y = None
        if validation_data is None and self.validation_fraction:
            try:
                train, val = train_test_split(np.arange(len(bags)), test_size=self.validation_fraction,
                                              stratify=y, random_state=split_seed)
            except ValueError as e:  # too few bags held out (or kept) for each class to have one
                raise ValueError(f"validation_fraction={self.validation_fraction} cannot split these {len(bags)} "
                                 f"bags by class: {e}") from None
            (val_bags, val_y), (bags, y) = (bags.subset(val), y[val]), (bags.subset(train), y[train])
        elif validation_data is not None:
            try:
                val_bags = check_bags(validation_data[0], bags.dim, plan.n_threads, "the training bags have")
            except ValueError as exc:
                raise ValueError(f"validation_data's bags: {exc}") from None
            val_y = check_labels(validation_data[1], len(val_bags), "validation_data's labels")
        if self.early_stopping and val_bags is None:  # else it would silently run every epoch
            raise ValueError("early_stopping=True needs held-out bags to watch: give validation_fraction "
                             "(e.g. 0.1) or fit(..., validation_data=(bags, labels))")
        self.classes_, y_index = check_classes(y)
        if val_y is not None:
            comparable = holds_text(val_y) == holds_text(y)  # numbers (any dtype) or strings, both
            unknown = np.unique(val_y[~np.isin(val_y, self.classes_)] if comparable else val_y)
            if len(unknown):  # scored as always wrong, they would make the validation accuracy meaningless
                raise ValueError(f"validation_data's labels hold classes the training bags do not: "
                                 f"{unknown[:5].tolist()} (the training classes: {self.classes_[:5].tolist()})")
        name = f"{type(self).__name__}(n_codewords={plan.K})"
        watch = Stopwatch(name, plan.verbose)
        initial_loss = None  # W0's training loss, which learning should not end above
        if initial is None:
            initial_loss = self._initialise(bags, y_index, plan, split_seed, init_seed, watch)
        else:
            self._adopt_initial(initial, bags.dim, watch)
        # the initial state competes with every epoch: learning cannot end below its start
        best = {"score": -np.inf, "state": None, "stale": 0, "epoch": None}

        def on_epoch_end(epoch, record, result):
            self._set_encoder(result.centers, result.precisions, result.gamma)
            if val_bags is None:
                return False
            record["val_accuracy"] = self._score_state(val_bags, val_y, best, epoch + 1)
            return self.early_stopping and best["stale"] >= self.n_iter_no_change

        if val_bags is not None:
            self._score_state(val_bags, val_y, best, 0)
        self.history_ = self._train(bags, y_index, plan, sgd_seed, watch, on_epoch_end).history
        trained = len(self.history_.get("loss", ()))
        if self.early_stopping and best["state"] is not None:
            self._restore_state(best["state"])
            trained = best["epoch"]
            if plan.verbose:
                ran = len(self.history_["loss"])
                print(f"{name}: early stopping kept the parameters after epoch {trained} of {ran} (validation accuracy "
                      f"{best['score']:.4f})", file=sys.stderr, flush=True)
        if trained:  # else the classifier is W0, already fitted to these representations
            self._fine_tune(bags, y_index, watch, trained, initial_loss)
        self.timings_ = dict(watch)

    def _score_state(self, val_bags, val_y, best: dict, epoch: int) -> float:
        """The validation accuracy of the state after ``epoch`` epochs, kept in ``best``
        when it is the best so far."""
        accuracy = float(np.mean(self._validated_predict(val_bags) == val_y))
        if accuracy > best["score"]:
            best.update(score=accuracy, state=self._copy_state(), stale=0, epoch=epoch)
        else:
            best["stale"] += 1
        return accuracy

    def _initialise(self, bags, y_index, plan: SimpleNamespace, split_seed: int, init_seed: int, watch,
                    codebook=None) -> float:
        """The codebook (fitted on a sample of the bags' features unless ``codebook``, a
        (sample, Codebook) pair, is given), gamma, and W0 on the initial representation;
        returns W0's training loss."""
        self.n_features_in_ = bags.dim
        self.feature_map_ = plan.feature_map
        if codebook is None:
            n_sample = min(plan.max_features, bags.n_features)
            with watch("codebook", f"{INIT_NAMES[self.init]} codebook on {n_sample:,} local features"):
                codebook = self._initial_codebook(bags, plan, init_seed)
        sample, codebook = codebook
        gamma = resolve_gamma(plan.gamma, plan.gamma_scale, sample, codebook, init_seed)
        self._set_encoder(codebook.centers, codebook.precisions, gamma)
        # W0 on the initial representation, with the penalty chosen on it
        with watch("encode", f"encoding {bags_count(len(bags))}"):
            X0 = self._classifier_inputs(bags)
        self.classifier_ = self._fit_classifier(X0, y_index, plan.l2, split_seed, watch)
        return self.classifier_.loss(X0, y_index)

    def _adopt_initial(self, initial, dim: int, watch: Stopwatch) -> None:
        """A copy of the state of ``initial`` (fitted with n_epochs=0 on bags of dimension
        ``dim`` and these classes), its phases' times in ``watch``."""
        if initial.n_features_in_ != dim or not np.array_equal(initial.classes_, self.classes_):
            raise ValueError("initial was fitted on other bags or labels")
        self.n_features_in_, self.feature_map_, self.l2_ = dim, initial.feature_map_, initial.l2_
        self.centers_, self.covariances_, self.gamma_, self.classifier_ = copy.deepcopy(
            (initial.centers_, initial.covariances_, initial.gamma_, initial.classifier_))
        watch.update(initial.timings_)

    def _initial_codebook(self, bags, plan: SimpleNamespace, init_seed: int):
        """(sample, Codebook): the features sampled for the initialisation and what ``init`` fits on them."""
        sample = sample_features(bags, plan.K, plan.max_features, init_seed, plan.n_threads)
        return sample, fit_codebook(sample, plan.K, self.init, init_seed, n_threads=plan.n_threads)

    def _train(self, bags, y_index, plan: SimpleNamespace, sgd_seed: int, watch, on_epoch_end):
        """The SGD epochs of Algorithm 1 from the current state; ``on_epoch_end`` as run_sgd's."""
        head = MappedHead(self.feature_map_, self.classifier_) if self.feature_map_ is not None else self.classifier_
        settings = plan.settings
        if plan.auto_batch:
            settings = dataclasses.replace(settings, batch_size=auto_batch_size(len(bags)))
        with watch("sgd"):
            return run_sgd(bags, y_index, head, self._encoder, self.centers_, 1 / self.covariances_, self.gamma_,
                           settings, random_state=sgd_seed, n_threads=plan.n_threads, verbose=plan.verbose,
                           on_epoch_end=on_epoch_end, name=f"{type(self).__name__}(n_codewords={plan.K})")

    def _fine_tune(self, bags, y_index, watch, epochs: int, initial_loss: float | None = None) -> None:
        """The classifier refitted (L-BFGS, from its current weights) on the full, unsampled
        representations, after ``epochs`` epochs of SGD; TrainingDiverged when the last
        step left a classifier whose loss L-BFGS cannot bring back (run_sgd checks the loss
        before each step, not after the last). A ConvergenceWarning when the model then fits
        its training bags clearly worse than W0 did (``initial_loss``): SGD wrecked the
        encoder (precisions 1e-26 to 1e35, one class predicted) at a step too large to
        diverge outright."""
        with watch("encode", f"encoding {bags_count(len(bags))}"):
            X = self._classifier_inputs(bags)
        with np.errstate(over="ignore", invalid="ignore"):  # said below
            loss = self.classifier_.loss(X, y_index)
        if not loss <= self.classifier_.diverged_above:
            raise TrainingDiverged.at(f"the classifier's loss {loss:g} after the last step", epochs - 1,
                                      self.learning_rate, self.classifier_learning_rate)
        with watch("classifier", "fine-tuning the classifier"):
            self.classifier_.fit(X, y_index, n_threads=self._n_threads())
        if initial_loss is not None:
            final_loss = self.classifier_.loss(X, y_index)
            if final_loss > (1 + WORSE_THAN_W0) * initial_loss:
                warnings.warn(f"{type(self).__name__}: the learned model fits its training bags worse than its "
                              f"initial state (training loss {final_loss:.4g} against {initial_loss:.4g}): "
                              f"learning_rate ({self.learning_rate:g}) is probably too large; lower it, or give "
                              "validation_data with early_stopping=True to keep the best epoch",
                              ConvergenceWarning, stacklevel=4)

    # -- inference ---------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """The learned representation of each bag, over all of its features: (n_bags, K)
        soft BoW (LearnedBoW, pooled by ``pooling``) or (n_bags, K * D) soft VLAD
        (LearnedVLAD), in the bags' dtype (float32 or float64), before the feature map."""
        check_is_fitted(self, "classifier_")
        return blockwise(self._check_bags(X), self._represent)

    def _represent(self, bags) -> np.ndarray:
        return self._encoder.forward(bags, self.centers_, 1 / self.covariances_, self.gamma_, self._n_threads())

    def _n_threads(self) -> int:
        return n_threads_arg(self.n_threads)

    def _check_encoder_state(self, dim: int) -> None:
        self._check_params()
        K = fitted_array(self.centers_, "centers_", (self.n_codewords, dim)).shape[0]
        covariances = fitted_array(self.covariances_, "covariances_", (K, dim), positive=True)
        with np.errstate(over="ignore"):  # a subnormal covariance: its precision is reported below
            fitted_array(1 / covariances, "1 / covariances_", (K, dim))
        positive_real(self.gamma_, "gamma_")

    # -- state -------------------------------------------------------------------------
    def _set_encoder(self, centers, precisions, gamma):
        self.centers_, self.covariances_, self.gamma_ = centers, 1 / precisions, float(gamma)

    def _copy_state(self):
        return copy.deepcopy((self.centers_, self.covariances_, self.gamma_, self.classifier_))

    def _restore_state(self, state):
        self.centers_, self.covariances_, self.gamma_, classifier = state
        self.classifier_.W[...], self.classifier_.b[...] = classifier.W, classifier.b


class LearnedBoW(_LearnedAggregation):
    """T1: a soft Bag of Words with learned codebook, diagonal covariances and gamma,
    classified by softmax logistic regression after the chi2 feature map (default).

    Parameters
    ----------
    n_codewords : K, the size of the codebook (and of the representation).
    pooling : "mean", the paper's T1 (eq. 6: R_b[k] = (1/N_b) sum_n a_nk), or "max":
        R_b[k] = max_n a_nk, each codeword's largest assignment in the bag, for bags that
        are labelled by whether they hold some kind of feature at all (multiple-instance
        learning), where the mean dilutes one telling feature among many others.
        LearnedVLAD: "mean" (eq. 9) or "max": R_b[k, j] = max_n a_nk (f_nj - C_kj)
        (formed by NumPy, N K D operations a pass: for multiple-instance data, not large
        collections; see :func:`lfagg.encoders.soft.soft_vlad_max`).
    gamma : positive float or "auto" (see :func:`lfagg.encoders.codebook.auto_gamma`).
    gamma_scale : positive float multiplying the "auto" gamma (only with gamma="auto"):
        above 1, sharper assignments. The paper finds the encoders very sensitive to gamma
        and chooses it on validation data; on CIFAR-10 patches 4 to 8 classified held-out
        training images best (see :data:`lfagg.experiments.T1_PARAMS`).
    learn_gamma : also learn gamma (beyond the paper; through its logarithm).
    learn_covariances : learn the diagonal covariances (else they stay at their init).
    init : "kmeans" (unit covariances), "gmm" (GMM means and covariances) or "random".
        A GMM start trailed the K-Means one by 2-13 points on CIFAR-10 patches and the
        multiple-instance sets (the encoders have neither the mixture's weights nor its
        log-determinants; benchmarks/RESULTS.md).
    feature_map : "auto" (chi2 for LearnedBoW, none for LearnedVLAD), "chi2" or None.
    n_epochs : SGD passes over the training bags.
    batch_size : bags per step, or "auto": 32 from 512 training bags on, fewer below
        (about 16 steps per epoch, at least 4 bags; :func:`auto_batch_size`).
    n_samples_per_bag : local features drawn from each bag per step (eq. 5), None = all.
    optimizer : "adam" or "sgd" (momentum 0.9).
    learning_rate : encoder step size (centres: this times the features' spread, the root
        of their mean variance per dimension).
    classifier_learning_rate : classifier step size (default learning_rate).
    l2 : L2 penalty of the classifier weights (on standardised inputs), or "auto": the
        value of :data:`lfagg.models.l2.L2_GRID` that best classifies about a fifth of the
        training bags, held out, from their initial representation
        (:func:`lfagg.models.l2.select_l2`; its own split, also when validation data are given).
    max_init_features : local features sampled for the K-Means/GMM initialisation.
    validation_fraction : fraction of bags held out for per-epoch validation accuracy.
    early_stopping : stop when validation accuracy has not improved for
        ``n_iter_no_change`` epochs and keep the best epoch's parameters (the first epoch
        of the highest ``history_["val_accuracy"]``, or the initial state, epoch 0, when
        no epoch beat it; ``verbose`` says which).
    random_state : None, int or numpy random generator; fixes initialisation, bag order
        and subsampling (the same value gives BagOfWords/VLAD the same K-Means codebook).
    n_threads : threads of the C++ kernels, the input scan, K-Means/GMM and the classifier's
        L-BFGS evaluations (None = all cores).
    verbose : > 0 reports each phase of the fit on stderr, and the progress of each epoch
        (a tqdm bar on a terminal, one line per epoch otherwise).

    Attributes
    ----------
    n_features_in_ : int, D; centers_ : (K, D) float64; covariances_ : (K, D) float64 diagonal covariances;
    gamma_ : float; l2_ : float, the classifier's penalty; classes_ : (n_classes,);
    history_ : dict of per-epoch lists ("epoch", "loss", "time", "encoder_time" and,
    with validation, "val_accuracy"); timings_ : dict of the fit's wall seconds per phase
    ("codebook": sampling and K-Means/GMM (the auto gamma, milliseconds, follows it outside
    every phase); "encode": the full bags' initial and
    final representations; "l2": the choice of the penalty; "classifier": the L-BFGS fits
    of W0 and of the final classifier; "sgd": the training epochs, with their validation
    when validation data are given); classifier_ : the
    softmax regression; feature_map_ : the chi2 map or None.
    """

    _POOLINGS = {"mean": SOFT_BOW, "max": SOFT_BOW_MAX}


class LearnedVLAD(_LearnedAggregation):
    """T2: a soft VLAD with learned codebook, diagonal covariances and gamma, classified
    by softmax logistic regression on the (K * D) representation.

    Parameters and attributes are those of :class:`LearnedBoW`; the feature map defaults
    to none.
    """

    _POOLINGS = {"mean": SOFT_VLAD, "max": SOFT_VLAD_MAX}
