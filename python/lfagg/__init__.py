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

import importlib  # noqa: E402 (the version first: files record it)

from . import normalize, ops  # noqa: E402
from .bags import Bags  # noqa: E402
from .store import BagStore  # noqa: E402

#: What scikit-learn backs is imported on first use (``lfagg.LearnedBoW``, ``from lfagg
#: import save``): importing scikit-learn takes over a second, which ``lfagg.ops``,
#: ``lfagg.torch`` and ``lfagg --help`` need not pay. name -> the module defining it.
_LAZY = {"BagOfWords": "encoders", "VLAD": "encoders", "FisherVector": "encoders", "BagClassifier": "models",
         "LearnedBoW": "models", "LearnedVLAD": "models", "LearnedBoWCV": "models", "LearnedVLADCV": "models",
         "save": "persistence", "load": "persistence",
         "train_encoder": "training", "datasets": None, "encoders": None, "models": None, "training": None,
         "experiments": None, "mil": None}

__all__ = [
    "Bags", "BagStore", "BagOfWords", "FisherVector", "VLAD", "BagClassifier", "LearnedBoW", "LearnedVLAD",
    "LearnedBoWCV", "LearnedVLADCV", "save", "load",
    "datasets", "encoders", "models", "normalize", "ops", "training", "train_encoder", "__version__",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'lfagg' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
