"""Encoders of bags: the learnable soft BoW and soft VLAD, each mean or max pooled (:mod:`.soft`),
the unsupervised baselines BagOfWords, VLAD and FisherVector (:mod:`.baselines`), and the
codebooks all of them start from (:mod:`.codebook`)."""
import importlib

#: Names imported on first use, so that ``lfagg.ops`` (which needs only :mod:`.soft`) does not
#: import scikit-learn through the baselines. name -> the submodule defining it.
_LAZY = {"BagOfWords": "baselines", "VLAD": "baselines", "FisherVector": "baselines",
         "Codebook": "codebook", "auto_gamma": "codebook", "fit_codebook": "codebook",
         "SoftEncoder": "soft", "SOFT_BOW": "soft", "SOFT_BOW_MAX": "soft", "SOFT_VLAD": "soft",
         "SOFT_VLAD_MAX": "soft", "soft_encoder": "soft"}

__all__ = list(_LAZY)


#: The submodules, also attributes of the package once asked for (``lfagg.encoders.codebook``).
_SUBMODULES = ("baselines", "codebook", "soft")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import makes it an attribute
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
