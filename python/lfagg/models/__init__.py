"""Classifiers of bags: :class:`BagClassifier` (any encoder + softmax regression) and
Algorithm 1's :class:`LearnedBoW` / :class:`LearnedVLAD`, their cross-validated
:class:`LearnedBoWCV` / :class:`LearnedVLADCV`, with the heads, the chi2 feature
map and the choice of the L2 penalty they share."""
from .classifier import BagClassifier
from .learned import LearnedBoW, LearnedVLAD
from .selection import LearnedBoWCV, LearnedVLADCV

__all__ = ["BagClassifier", "LearnedBoW", "LearnedVLAD", "LearnedBoWCV", "LearnedVLADCV"]
