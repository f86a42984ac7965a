"""lfagg: learnable local feature aggregation (Katharopoulos et al., 2017).

Bags of local descriptors are encoded by soft Bag of Words (T1) and soft VLAD (T2) whose
codebook, per-codeword precisions and gamma are learned by backpropagation. The
unsupervised baselines BagOfWords, VLAD and FisherVector share the same data structures.
"""
from . import datasets, normalize, ops
from ._bags import Bags
from .baselines import VLAD, BagOfWords, FisherVector
from .learned import LearnedBoW, LearnedVLAD
from .training import train_encoder

__version__ = "0.1.0"
__all__ = [
    "Bags", "BagOfWords", "FisherVector", "VLAD", "LearnedBoW", "LearnedVLAD",
    "datasets", "normalize", "ops", "train_encoder", "__version__",
]
