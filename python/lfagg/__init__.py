"""lfagg: learnable local feature aggregation (Katharopoulos et al., 2017).

Bags of local descriptors are encoded by soft Bag of Words (T1) and soft VLAD (T2) whose
codebook, per-codeword precisions and gamma are learned by backpropagation
(LearnedBoW, LearnedVLAD). The unsupervised baselines BagOfWords, VLAD and FisherVector
share the same codebooks and, through BagClassifier, the same classifier.
"""
from . import datasets, encoders, models, normalize, ops, training
from .bags import Bags
from .encoders import VLAD, BagOfWords, FisherVector
from .models import BagClassifier, LearnedBoW, LearnedVLAD
from .training import train_encoder

__version__ = "0.1.0"
__all__ = [
    "Bags", "BagOfWords", "FisherVector", "VLAD", "BagClassifier", "LearnedBoW", "LearnedVLAD",
    "datasets", "encoders", "models", "normalize", "ops", "training", "train_encoder", "__version__",
]
