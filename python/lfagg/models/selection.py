"""Model selection built in: LearnedBoWCV and LearnedVLADCV choose the codebook size, the
gamma scale, the learning rate, the number of epochs and (when asked) the pooling on
held-out folds of the training bags only, then refit on all of them (as scikit-learn's
``LogisticRegressionCV``).

A search costs far less than its grid of separate fits: per fold, the K-Means codebook of
each codebook size is fitted once and shared by every gamma scale and learning rate, W0
(and the choice of its penalty) once per gamma scale, and one run of ``max_epochs`` epochs
per learning rate scores every number of epochs it passes at the checkpoints 0 (the
initialisation: learning can only be kept when it beats its start), 1, 2, 4, ...,
``max_epochs``. A checkpoint is scored as the model a fit stopped there would be: the
classifier refitted (L-BFGS) on the fold's full representations, then the held-out bags.

The chosen candidate is then refitted ``n_estimators`` times on all the bags, each with its
own seed (codebook initialisation, bag order, subsampling), and the refits' class
probabilities are averaged: on tens to hundreds of bags single fits are overconfident, and
their log loss on test bags varies with the seed by up to 4x; the average of five is far
better calibrated (10 outer folds, test log loss of one fit / of five: Musk1 T1 0.34 /
0.29, T2 0.38 / 0.34; Elephant T1 0.66 / 0.37, T2 0.94 / 0.33). Its accuracy is that of
one fit within the folds' noise (Musk1 T1 0.880 -> 0.903, T2 0.892 -> 0.892; Elephant T1
0.835 -> 0.810, T2 0.855 -> 0.835; other seeds for the four extra refits gave 0.902,
0.891, 0.855, 0.855).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
from joblib import delayed
from scipy.special import log_softmax, logsumexp
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from .._progress import Stopwatch, progress_bar
from .._tags import BagsTags
from .._threads import as_they_finish, single_threaded_blas
from .._validation import (check_bags, check_classes, check_labels, choice, forget_fit, n_jobs_arg, n_threads_arg,
                           is_auto, nonnegative_int, positive_int, positive_real, spawn_seeds, unfitted_on_failure,
                           verbosity)
from ..store import BLOCK_MAPPER, BagStore
from ..training.loop import TrainingDiverged
from .classifier import BagClassifierMixin
from .learned import LearnedBoW, LearnedVLAD


#: The codebook sizes LearnedVLADCV searches by default (``n_codewords="auto"``; also
#: :mod:`lfagg.mil`'s VLAD and FV). One or two codewords, a bag's mean (residual) feature
#: and little more, are what a few tens of bags can support: adding them to 4, 16 and 64
#: raised the baselines on Musk1 / Elephant (5 x 10-fold CV: VLAD 0.836 -> 0.860 and 0.786
#: -> 0.814, FV 0.865 -> 0.871 and 0.794 -> 0.804; README) for 1.5-1.9x the search's time.
VLAD_CODEBOOK_SIZES = (1, 2, 4, 16, 64)
#: ... and LearnedBoWCV (also :mod:`lfagg.mil`'s BoW): a soft BoW of one codeword is the
#: same for every bag.
BOW_CODEBOOK_SIZES = (2, 4, 16, 64)
#: The multiples of the auto gamma searched by default (with a fixed gamma: that gamma alone).
DEFAULT_GAMMA_SCALES = (0.125, 0.5, 2.0, 8.0)
#: The folds of a search by default.
DEFAULT_FOLDS = 5
#: The refits of the chosen candidate averaged by default.
DEFAULT_ESTIMATORS = 5
#: What a search can maximise (scikit-learn's names): minus the mean log loss of the
#: held-out bags, or their accuracy. Log loss is the default: a proper score, it varies
#: less than accuracy over folds of tens of bags, so the best of many candidates is less
#: often a lucky one (10 outer folds, test accuracy selected by log loss / by accuracy:
#: Musk1 T1 0.880 / 0.837, T2 0.892 / 0.892; Elephant T1 0.835 / 0.845, T2 0.855 / 0.850).
SCORINGS = ("neg_log_loss", "accuracy")


def _grid(values, name: str, check) -> list:
    """``values`` (a value, or a list, tuple, range or 1-D array of them) as a list of
    checked, distinct values; ValueError for a set (its order would decide ties)."""
    if isinstance(values, (set, frozenset)):
        raise ValueError(f"{name} must be a value or a list of values to search, got a set: give a list (their order "
                         "breaks ties between equal scores)")
    if isinstance(values, np.ndarray) and values.ndim == 0:
        values = values.item()
    values = list(values) if isinstance(values, (list, tuple, range)) or np.ndim(values) == 1 else [values]
    if not values:
        raise ValueError(f"{name} must hold at least one value to search")
    return list(dict.fromkeys(check(v, name) for v in values))


def checkpoints(max_epochs: int) -> list[int]:
    """The epochs scored in a search: 0, the powers of two below ``max_epochs``, and it."""
    return sorted({0, max_epochs} | {2 ** i for i in range(max_epochs.bit_length()) if 2 ** i < max_epochs})


def fewest_training_features(bags, folds) -> int:
    """The fewest local features of the training parts of ``folds`` ((train, test) index
    pairs of ``bags``): the largest codebook every fold can learn."""
    return min(int(np.sum(bags.sizes[train])) for train, _ in folds)


def _refit(model, bags, y):
    """``model`` fitted on ``bags``, which the search validated already (a refit in a
    worker process also runs with single-threaded BLAS)."""
    with single_threaded_blas():
        model._fit(bags, y, None, model._check_params())
    return model


class _LearnedAggregationCV(BagsTags, BagClassifierMixin, BaseEstimator):
    """Shared implementation; see LearnedBoWCV and LearnedVLADCV. ``_estimator`` is the
    class searched, ``_AUTO_CODEBOOK_SIZES`` its sizes of ``n_codewords="auto"``."""

    _estimator = None
    _AUTO_CODEBOOK_SIZES: tuple = ()

    def __init__(self, n_codewords="auto", *, gamma_scale=DEFAULT_GAMMA_SCALES,
                 learning_rate=(1e-3, 1e-2), max_epochs=16, cv=DEFAULT_FOLDS, scoring="neg_log_loss",
                 n_estimators=DEFAULT_ESTIMATORS, pooling="mean", gamma="auto", learn_gamma=False,
                 learn_covariances=True, init="kmeans", feature_map="auto", batch_size="auto", n_samples_per_bag=128,
                 optimizer="adam", classifier_learning_rate=None, l2="auto", max_init_features=100_000,
                 random_state=None, n_jobs=None, n_threads=None, verbose=0):
        self.n_codewords = n_codewords
        self.gamma_scale = gamma_scale
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.cv = cv
        self.scoring = scoring
        self.n_estimators = n_estimators
        self.pooling = pooling
        self.gamma = gamma
        self.learn_gamma = learn_gamma
        self.learn_covariances = learn_covariances
        self.init = init
        self.feature_map = feature_map
        self.batch_size = batch_size
        self.n_samples_per_bag = n_samples_per_bag
        self.optimizer = optimizer
        self.classifier_learning_rate = classifier_learning_rate
        self.l2 = l2
        self.max_init_features = max_init_features
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.n_threads = n_threads
        self.verbose = verbose

    _FIXED = ("gamma", "learn_gamma", "learn_covariances", "init", "feature_map", "batch_size",
              "n_samples_per_bag", "optimizer", "classifier_learning_rate", "l2", "max_init_features", "n_threads")

    def _candidate(self, seed: int, **searched):
        """The estimator searched with the fixed parameters, ``seed`` and the ``searched`` ones."""
        return self._estimator(**{name: getattr(self, name) for name in self._FIXED}, random_state=seed, **searched)

    def fit(self, X, y):
        """Search the grid on folds of (X, y), then refit the best candidate on all of it.

        Parameters
        ----------
        X : Bags or list of (N_i, D) float arrays, the training bags.
        y : (n_bags,) class labels; every class needs at least ``cv`` bags.

        Returns
        -------
        self
        """
        forget_fit(self)
        poolings = _grid(self.pooling, "pooling", lambda v, name: choice(v, name, tuple(self._estimator._POOLINGS)))
        Ks = _grid(self._AUTO_CODEBOOK_SIZES if is_auto(self.n_codewords) else self.n_codewords, "n_codewords",
                   positive_int)
        scales = _grid(self.gamma_scale, "gamma_scale", positive_real)
        if not is_auto(self.gamma):  # the scales multiply gamma="auto"; a fixed gamma is used as given
            if scales == list(DEFAULT_GAMMA_SCALES):
                scales = [1.0]
            elif scales != [1.0]:
                raise ValueError(f"gamma_scale searches multiples of gamma='auto'; with gamma={self.gamma!r} give "
                                 "gamma_scale=1.0 (or leave its default), or several gamma values in separate searches")
        rates = _grid(self.learning_rate, "learning_rate", positive_real)
        epochs = checkpoints(nonnegative_int(self.max_epochs, "max_epochs"))
        n_splits = positive_int(self.cv, "cv", minimum=2)
        scoring = choice(self.scoring, "scoring", SCORINGS)
        n_estimators = positive_int(self.n_estimators, "n_estimators")
        n_jobs = n_jobs_arg(self.n_jobs)
        if n_jobs not in (None, 1) and isinstance(X, BagStore) and BLOCK_MAPPER.get() is not None:
            warnings.warn("lfagg.dask.encode_on_dask() does not reach the n_jobs processes of the search: its folds "
                          "and refits encode the store in those processes (n_jobs=1 encodes on Dask)", stacklevel=2)
        verbose = verbosity(self.verbose)
        split_seed, model_seed, ensemble_seed = spawn_seeds(self.random_state, 3)
        for pooling in poolings:  # every parameter is checked before any data is touched
            for K in Ks:
                self._candidate(model_seed, pooling=pooling, n_codewords=K, gamma_scale=scales[0],
                                learning_rate=rates[0], n_epochs=epochs[-1])._check_params()
        with single_threaded_blas(), unfitted_on_failure(self):
            bags = check_bags(X, n_threads=n_threads_arg(self.n_threads))
            classes, y_index = check_classes(check_labels(y, len(bags)))
            counts = np.bincount(y_index)
            if counts.min() < n_splits:
                raise ValueError(f"too few bags to search on {n_splits} folds: class "
                                 f"{classes.tolist()[counts.argmin()]!r} has {counts.min()} bag(s); every class needs "
                                 f"at least cv = {n_splits}")
            folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=split_seed).split(y_index, y_index))
            Ks = self._feasible(Ks, bags, folds)
            grid = [(p, K, s, r) for p in poolings for K in Ks for s in scales for r in rates]
            searches = as_they_finish(n_jobs, (
                delayed(self._search_fold)(bags.subset(train), y_index[train], bags.subset(val), y_index[val],
                                           classes, grid, epochs, model_seed) for train, val in folds))
            scores = []
            with progress_bar(f"{type(self).__name__}: {len(grid)} candidates, {n_splits} folds", n_splits,
                              verbose, announce=True) as bar:
                for fold_scores in searches:
                    scores.append(fold_scores)
                    bar.update()
            self._select(grid, epochs, scoring, *(np.stack(s) for s in zip(*scores)))
            seeds = [model_seed, *spawn_seeds(ensemble_seed, n_estimators - 1)]
            refits = as_they_finish(n_jobs, (
                delayed(_refit)(self._candidate(seed, **self.best_params_, verbose=verbose if len(seeds) == 1 else 0),
                                bags, y) for seed in seeds))
            with progress_bar(f"{type(self).__name__}: refitting {self.best_params_} with {len(seeds)} seed(s)",
                              len(seeds), verbose if len(seeds) > 1 else 0, announce=True) as bar:
                self.estimators_ = []
                for refit in refits:
                    self.estimators_.append(refit)
                    bar.update()
            self.best_estimator_ = self.estimators_[0]
            self.classes_, self.n_features_in_ = self.best_estimator_.classes_, self.best_estimator_.n_features_in_
        return self

    def _feasible(self, Ks: list, bags, folds) -> list:
        """The codebook sizes that every training fold has enough local features for."""
        fewest = fewest_training_features(bags, folds)
        feasible = [K for K in Ks if K <= fewest]
        if not feasible:
            raise ValueError(f"n_codewords {Ks} are all larger than the {fewest} local features of the smallest "
                             "training fold: search smaller codebooks")
        if len(feasible) < len(Ks):
            warnings.warn(f"n_codewords {sorted(set(Ks) - set(feasible))} skipped: the smallest training fold holds "
                          f"only {fewest} local features", stacklevel=3)
        return feasible

    def _search_fold(self, train_bags, y_train, val_bags, y_val, classes, grid, epochs, seed):
        """(accuracy, log loss) of one fold: two (n_candidates, n_checkpoints) arrays; a warning
        for each candidate whose training diverged."""
        scores = (np.zeros((len(grid), len(epochs))), np.zeros((len(grid), len(epochs))))
        quiet = Stopwatch()
        codebooks, starts = {}, {}
        for c, (pooling, K, scale, rate) in enumerate(grid):
            model = self._candidate(seed, pooling=pooling, n_codewords=K, gamma_scale=scale, learning_rate=rate,
                                    n_epochs=epochs[-1])
            plan = model._check_params()
            split_seed, init_seed, sgd_seed = spawn_seeds(seed, 3)  # those of model.fit: the refit's stages
            if (pooling, K, scale) not in starts:  # W0 on the codebook, shared by the learning rates
                if K not in codebooks:  # shared by the poolings too
                    codebooks[K] = model._initial_codebook(train_bags, plan, init_seed)
                model.classes_ = classes
                model._initialise(train_bags, y_train, plan, split_seed, init_seed, quiet, codebook=codebooks[K])
                starts[pooling, K, scale] = model
            model = copy.deepcopy(starts[pooling, K, scale])
            model.learning_rate = rate
            score = _CheckpointScores(model, train_bags, y_train, val_bags, y_val, epochs, scores, c)
            score(0)

            def on_epoch_end(epoch, record, result, model=model, score=score):
                model._set_encoder(result.centers, result.precisions, result.gamma)
                score(epoch + 1)
                return False

            try:
                model._train(train_bags, y_train, model._check_params(), sgd_seed, quiet, on_epoch_end)
            except TrainingDiverged as exc:  # the candidate loses; the search goes on
                score.diverged()
                warnings.warn(f"pooling={pooling!r}, n_codewords={K}, gamma_scale={scale:g}, learning_rate={rate:g} "
                              f"scored as the worst candidate from the epoch it diverged: {exc}", stacklevel=2)
        return scores

    def _select(self, grid, epochs, scoring, accuracy, log_loss) -> None:
        """The best mean held-out score; ties go to the lower mean log loss, then to the
        smaller learning rate (candidates stopped at epoch 0 are the same model whatever
        their rate: best_params_ then names the safest), then to the earlier candidate
        (pooling in the order given, smaller codebook, scale) and the fewer epochs."""
        n_splits = accuracy.shape[0]
        params = [dict(pooling=p, n_codewords=K, gamma_scale=s, learning_rate=r, n_epochs=e)
                  for p, K, s, r in grid for e in epochs]
        score = (-log_loss if scoring == "neg_log_loss" else accuracy).reshape(n_splits, -1)
        with np.errstate(invalid="ignore"):  # a diverged candidate's infinite log loss: its std is NaN
            mean_score, std_score = score.mean(axis=0), score.std(axis=0)
        mean_log_loss = log_loss.mean(axis=0).ravel()
        rates = np.array([p["learning_rate"] for p in params])
        preference = np.lexsort((np.arange(mean_score.size), rates, mean_log_loss, -mean_score))
        best, rank = int(preference[0]), np.empty(mean_score.size, dtype=np.int32)
        rank[preference] = np.arange(1, mean_score.size + 1)
        self.cv_results_ = {"params": params, "mean_test_score": mean_score, "std_test_score": std_score,
                            "rank_test_score": rank,
                            "mean_test_accuracy": accuracy.mean(axis=0).ravel(), "mean_test_log_loss": mean_log_loss,
                            **{f"split{f}_test_score": score[f] for f in range(n_splits)}}
        self.best_index_, self.best_params_, self.best_score_ = best, params[best], float(mean_score[best])

    # -- the refits of the chosen candidate --------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """(n_bags, n_classes) float64 class probabilities: the mean of the refits'."""
        return np.mean(np.exp(self._refits_log_proba(X)), axis=0)

    def predict(self, X) -> np.ndarray:
        """(n_bags,) predicted labels: the class of the highest mean probability."""
        proba = self.predict_proba(X)  # first: it says when the model is not fitted
        return self.classes_[proba.argmax(axis=1)]

    def decision_function(self, X) -> np.ndarray:
        """Log mean probabilities of the refits (n_bags, n_classes); for two classes the
        log odds of the second class, (n_bags,). A single refit's are its logits up to a
        per-bag constant."""
        log_probas = self._refits_log_proba(X)  # their logsumexp: finite where a probability rounds to 0
        scores = logsumexp(log_probas, axis=0) - np.log(len(log_probas))
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def _refits_log_proba(self, X) -> list:
        """Each refit's (n_bags, n_classes) log probabilities, the bags checked once for all."""
        check_is_fitted(self, "estimators_")
        bags = self.best_estimator_._check_bags(X)
        with single_threaded_blas():
            return [log_softmax(refit._validated_logits(bags), axis=1) for refit in self.estimators_]

    def transform(self, X) -> np.ndarray:
        """The learned representation of each bag by ``best_estimator_`` (the first refit)."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.transform(X)

    def _check_fitted_state(self) -> None:
        """ValueError unless the refits are ones fit leaves (for a model read from a file)."""
        if not isinstance(self.estimators_, list) or not self.estimators_:
            raise ValueError("estimators_ must be a non-empty list of refits")
        for refit in [self.best_estimator_, *self.estimators_]:
            if type(refit) is not self._estimator:
                raise ValueError(f"best_estimator_ and estimators_ must be {self._estimator.__name__}s, "
                                 f"got {type(refit).__name__}")
            refit._check_fitted_state()
            if not np.array_equal(refit.classes_, self.classes_) or refit.n_features_in_ != self.n_features_in_:
                raise ValueError("best_estimator_ and estimators_ must have the classes_ and n_features_in_ "
                                 "of the search")


class _CheckpointScores:
    """Scores a model under training at its checkpoints, as a fit stopped there would end:
    a copy of its classifier refitted on the training bags' full representations, then
    the accuracy and log loss of the held-out bags, into ``scores[k][candidate, checkpoint]``."""

    def __init__(self, model, train_bags, y_train, val_bags, y_val, epochs, scores, candidate: int):
        self.model, self.train, self.val = model, (train_bags, y_train), (val_bags, y_val)
        self.column = {e: i for i, e in enumerate(epochs)}
        self.scores, self.candidate = scores, candidate
        self.last_scored = -1

    def __call__(self, epoch: int) -> None:
        if epoch not in self.column:
            return
        trial = copy.copy(self.model)  # shares the encoder's arrays: scored now, before training goes on
        trial.classifier_ = copy.deepcopy(self.model.classifier_)
        if epoch > 0:  # W0 is already the fit on the initial representation
            trial._fine_tune(*self.train, Stopwatch(), epoch)
        val_bags, y_val = self.val
        logp = log_softmax(trial._validated_logits(val_bags), axis=1)
        accuracy, log_loss = self.scores
        accuracy[self.candidate, self.column[epoch]] = np.mean(logp.argmax(axis=1) == y_val)
        log_loss[self.candidate, self.column[epoch]] = -np.mean(logp[np.arange(len(y_val)), y_val])
        self.last_scored = epoch

    def diverged(self) -> None:
        """Training diverged: the checkpoints not reached score accuracy 0 and log loss inf."""
        accuracy, log_loss = self.scores
        for epoch, column in self.column.items():
            if epoch > self.last_scored:
                accuracy[self.candidate, column], log_loss[self.candidate, column] = 0.0, np.inf


_DOC = """{what} with its hyper-parameters chosen by cross-validation on the training bags.

    Every combination of ``n_codewords``, ``gamma_scale`` and ``learning_rate`` is trained
    for ``max_epochs`` epochs on each of ``cv`` stratified folds, and scored on the held-out
    fold at epochs 0 (the initialisation), 1, 2, 4, ..., ``max_epochs``; the combination
    and number of epochs of the best mean held-out score (``scoring``; ties: the lower log
    loss) are then refitted on all the bags ``n_estimators`` times with different seeds, and
    the refits' probabilities averaged (module :mod:`lfagg.models.selection`).

    Parameters
    ----------
    n_codewords, gamma_scale, learning_rate : values (or one value) to search; see
        :class:`{base}`. ``n_codewords="auto"``: {auto_sizes}. Codebook sizes larger than a training fold's
        local features are skipped with a warning. ``gamma_scale`` multiplies ``gamma="auto"``;
        with a fixed ``gamma`` its default grid is dropped and that gamma alone is used.
    pooling : "mean", "max" or both to search, as ("mean", "max"); see :class:`{base}`.
        Both double the search (the codebooks are shared). With the codebook sizes 4, 16 and
        64 it did not pay on Musk1 and Elephant (T2, one repeat of 10 folds: 0.859 and 0.835
        against 0.892 and 0.835 for the mean alone; benchmarks/RESULTS.md); the max helped T2
        there with one codeword.
    max_epochs : int >= 0, the most epochs searched.
    cv : int >= 2, the folds (stratified, shuffled by ``random_state``); every class needs
        at least this many bags.
    scoring : "neg_log_loss" (default: minus the held-out bags' mean log loss, steadier on
        small data) or "accuracy", the score maximised.
    n_estimators : int >= 1, the refits averaged (5: far better calibrated probabilities
        on small data for five times the refit's cost, small beside the search's; 1: the
        single refit).
    gamma, learn_gamma, learn_covariances, init, feature_map, batch_size,
    n_samples_per_bag, optimizer, classifier_learning_rate, l2, max_init_features,
    n_threads : fixed for every candidate; see :class:`{base}`.
    random_state : None, int or numpy random generator: the folds and every candidate's
        initialisation, bag order and subsampling (the refits' too; the first refit has
        the candidates' seed).
    n_jobs : folds searched, then refits fitted, in parallel processes (joblib; None: 1,
        -1: all cores); give each then ``n_threads=1`` unless the bags are large. The
        result does not depend on it.
    verbose : > 0 shows the progress of the search (folds done), then the refit's, on stderr.

    Attributes
    ----------
    estimators_ : list of the ``n_estimators`` fitted {base}s (predict, predict_proba,
    decision_function and score average their probabilities); best_estimator_ : the
    first of them (transform uses it); best_params_ : dict, the chosen pooling,
    n_codewords, gamma_scale, learning_rate and n_epochs; best_score_ : its mean held-out score; best_index_ :
    its row in cv_results_; cv_results_ : dict of arrays over every (candidate, epochs):
    "params", "mean_test_score", "std_test_score" (NaN for a candidate that diverged in
    a fold: its score there is -inf) and "split<i>_test_score" (of ``scoring``),
    "rank_test_score" (1 for best_index_, then in the order of the choice's ties, so
    every rank is distinct), "mean_test_accuracy" and "mean_test_log_loss"; classes_,
    n_features_in_ : those of best_estimator_.
    """


class LearnedBoWCV(_LearnedAggregationCV):
    __doc__ = _DOC.format(what="LearnedBoW (T1)", base="LearnedBoW",
                          auto_sizes=f"{BOW_CODEBOOK_SIZES} (:data:`BOW_CODEBOOK_SIZES`)")
    _estimator = LearnedBoW
    _AUTO_CODEBOOK_SIZES = BOW_CODEBOOK_SIZES


class LearnedVLADCV(_LearnedAggregationCV):
    __doc__ = _DOC.format(what="LearnedVLAD (T2)", base="LearnedVLAD",
                          auto_sizes=f"{VLAD_CODEBOOK_SIZES} (:data:`VLAD_CODEBOOK_SIZES`)")
    _estimator = LearnedVLAD
    _AUTO_CODEBOOK_SIZES = VLAD_CODEBOOK_SIZES
