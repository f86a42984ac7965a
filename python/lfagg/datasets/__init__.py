"""Datasets of bags of local features: users' files (:mod:`.files`, what the command line
reads), synthetic bags (:mod:`.synthetic`) and image patches / CIFAR-10 (:mod:`.images`)."""
from .files import load_bags, load_labels, load_npy_dir, load_npz_bags, save_npz_bags
from .images import (ZCAWhitening, balanced_subset, cifar10_patch_bags, extract_patches, load_cifar10,
                     normalize_patches)
from .synthetic import make_circles_bags, make_moons_bags

__all__ = ["load_bags", "load_labels", "load_npy_dir", "load_npz_bags", "save_npz_bags", "make_circles_bags",
           "make_moons_bags", "extract_patches", "normalize_patches", "ZCAWhitening", "load_cifar10",
           "balanced_subset", "cifar10_patch_bags"]
