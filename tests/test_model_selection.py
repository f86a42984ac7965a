"""scikit-learn's model selection with bags as X: cross_val_score and GridSearchCV index the
bags per fold (a Bags becomes the fold's list of bag arrays) and split them stratified by
the labels; their scores equal a plain loop over the same folds."""

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

import lfagg
from lfagg.datasets import make_circles_bags


def folds(y):
    return list(StratifiedKFold(3, shuffle=True, random_state=0).split(np.zeros(len(y)), y))


def loop_scores(make, bags, y, splits):
    return [make().fit(bags.subset(train), y[train]).score(bags.subset(test), y[test]) for train, test in splits]


def test_cross_val_score_equals_a_loop_over_the_folds():
    bags, y = make_circles_bags(60, 20, random_state=0)
    splits = folds(y)
    make = lambda: lfagg.BagClassifier(lfagg.VLAD(3, random_state=0), random_state=0)  # noqa: E731
    np.testing.assert_allclose(cross_val_score(make(), bags, y, cv=splits), loop_scores(make, bags, y, splits))


def test_grid_search_over_a_learned_encoder():
    bags, y = make_circles_bags(48, 20, random_state=1)
    splits = folds(y)
    grid = {"gamma_scale": [0.5, 4.0]}
    search = GridSearchCV(lfagg.LearnedBoW(4, n_epochs=1, random_state=0), grid, cv=splits).fit(bags, y)
    means = {scale: np.mean(loop_scores(lambda s=scale: lfagg.LearnedBoW(4, n_epochs=1, gamma_scale=s,
                                                                         random_state=0), bags, y, splits))
             for scale in grid["gamma_scale"]}
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [means[s] for s in grid["gamma_scale"]])
    assert search.best_params_["gamma_scale"] == max(means, key=means.get)
    assert search.best_estimator_.n_features_in_ == 2
