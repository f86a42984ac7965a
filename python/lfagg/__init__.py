"""lfagg: learnable local feature aggregation (Katharopoulos et al., 2017).

Bags of local descriptors are encoded by soft Bag of Words (T1) and soft VLAD (T2) whose
codebook, per-codeword precisions and gamma are learned by backpropagation.
"""
from . import datasets, ops
from ._bags import Bags
from .learned import LearnedBoW, LearnedVLAD
from .training import train_encoder

__version__ = "0.1.0"
__all__ = ["Bags", "LearnedBoW", "LearnedVLAD", "datasets", "ops", "train_encoder", "__version__"]
