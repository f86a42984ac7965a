"""lfagg: learnable local feature aggregation (Katharopoulos et al., 2017).

Bags of local descriptors are encoded by soft Bag of Words (T1) and soft VLAD (T2) whose
codebook, per-codeword precisions and gamma are learned by backpropagation
(LearnedBoW, LearnedVLAD). The unsupervised baselines BagOfWords, VLAD and FisherVector
share the same codebooks and, through BagClassifier, the same classifier. ``save`` and
``load`` write and read model files whose loading runs no code.
"""
try:  # written by the build from the git tag (setuptools-scm)
    from ._version import __version__
except ImportError:  # the source tree used without building it
    __version__ = "0+source"

from . import datasets, encoders, models, normalize, ops, training  # noqa: E402 (the version first: files record it)
from .bags import Bags  # noqa: E402
from .encoders import VLAD, BagOfWords, FisherVector  # noqa: E402
from .models import BagClassifier, LearnedBoW, LearnedVLAD  # noqa: E402
from .persistence import load, save  # noqa: E402
from .store import BagStore  # noqa: E402
from .training import train_encoder  # noqa: E402

__all__ = [
    "Bags", "BagStore", "BagOfWords", "FisherVector", "VLAD", "BagClassifier", "LearnedBoW", "LearnedVLAD", "save", "load",
    "datasets", "encoders", "models", "normalize", "ops", "training", "train_encoder", "__version__",
]
