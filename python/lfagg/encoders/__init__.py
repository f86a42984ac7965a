"""Encoders of bags: the learnable soft BoW and soft VLAD, each mean or max pooled (:mod:`.soft`),
the unsupervised baselines BagOfWords, VLAD and FisherVector (:mod:`.baselines`), and the
codebooks all of them start from (:mod:`.codebook`)."""
from .baselines import VLAD, BagOfWords, FisherVector
from .codebook import Codebook, auto_gamma, fit_codebook
from .soft import SOFT_BOW, SOFT_BOW_MAX, SOFT_VLAD, SOFT_VLAD_MAX, SoftEncoder, soft_encoder

__all__ = ["BagOfWords", "VLAD", "FisherVector", "SoftEncoder", "SOFT_BOW", "SOFT_BOW_MAX", "SOFT_VLAD",
           "SOFT_VLAD_MAX", "soft_encoder", "Codebook", "auto_gamma", "fit_codebook"]
