"""Images as bags of dense patches (Coates et al., 2011): extraction, per-patch
normalisation, ZCA whitening, and the CIFAR-10 arrays of Table I."""
from __future__ import annotations

import numpy as np

from .._validation import as_generator, positive_int, positive_real
from ..bags import Bags
from .files import read_npz


def extract_patches(images: np.ndarray, patch_size: int = 6, stride: int = 2) -> Bags:
    """Dense square patches of each image as a bag of local features (Coates et al., 2011).

    Parameters
    ----------
    images : (n_images, height, width, channels) or (n_images, height, width) array.
    patch_size, stride : patch side and step in pixels.

    Returns
    -------
    Bags of float32 features, one bag per image with one row per patch position
    (row-major over positions), each row the patch flattened as (y, x, channel):
    patch_size**2 * channels values.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, height, width[, channels]), got {images.shape}")
    patch_size = positive_int(patch_size, "patch_size")
    stride = positive_int(stride, "stride")
    if patch_size > min(images.shape[1:3]):
        raise ValueError(f"patch_size must be at most the image side {min(images.shape[1:3])}, got {patch_size}")
    windows = np.lib.stride_tricks.sliding_window_view(images, (patch_size, patch_size), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (n, py, px, channels, patch, patch)
    n, py, px = windows.shape[:3]
    features = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * py * px, -1).astype(np.float32)
    return Bags(features, np.arange(n + 1) * (py * px))


def normalize_patches(features: np.ndarray, eps: float = 10.0) -> np.ndarray:
    """Per-patch brightness and contrast normalisation: (x - mean(x)) / sqrt(var(x) + eps),
    with eps = 10 for 0-255 pixel values as in Coates et al. (2011). (n, d) -> (n, d)."""
    features = np.asarray(features, dtype=np.float32)
    centred = features - features.mean(axis=1, keepdims=True)
    return centred / np.sqrt(centred.var(axis=1, keepdims=True) + eps)


class ZCAWhitening:
    """ZCA whitening of local features, fitted on training features.

    transform(x) = (x - mean) U diag(1 / sqrt(lambda + eps)) U^T, with (U, lambda) the
    eigen-decomposition of the training covariance.
    """

    def __init__(self, eps: float = 0.1):
        self.eps = positive_real(eps, "eps")

    def fit(self, features: np.ndarray, max_samples: int = 200_000, random_state=0) -> "ZCAWhitening":
        """Estimate the mean and whitening matrix from at most max_samples rows of (n, d)."""
        features = np.asarray(features)
        rng = as_generator(random_state)
        if len(features) > max_samples:
            features = features[rng.choice(len(features), max_samples, replace=False)]
        x = features.astype(np.float64)
        self.mean_ = x.mean(axis=0)
        eigval, eigvec = np.linalg.eigh(np.cov(x - self.mean_, rowvar=False))
        self.matrix_ = (eigvec / np.sqrt(np.maximum(eigval, 0) + self.eps)) @ eigvec.T
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float32 whitened features."""
        return ((np.asarray(features) - self.mean_) @ self.matrix_).astype(np.float32)


def load_cifar10(path):
    """The CIFAR-10 arrays of an .npz file with train_images (n, 32, 32, 3) uint8,
    train_labels (n,), test_images, test_labels and optionally class_names.

    Returns
    -------
    dict with those arrays (class_names as a list of str when present).
    """
    out = read_npz(path, ("train_images", "train_labels", "test_images", "test_labels"), ("class_names",))
    if "class_names" in out:
        out["class_names"] = [str(c) for c in out["class_names"]]
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"{path}: {split}_images must be (n, 32, 32, 3) colour images, got shape {images.shape}")
        if images.dtype != np.uint8:  # the patches' normalisation (and Table I's) assumes pixels of 0-255:
            # images scaled to [0, 1] passed, their patches flattened (T2 35% -> 23%, without a word)
            raise ValueError(f"{path}: {split}_images must be uint8 pixels (0-255, as CIFAR-10 is distributed), "
                             f"got {images.dtype}")
        if not len(images):  # else a reshape of the patches fails in numpy's words
            raise ValueError(f"{path}: {split}_images holds no images")
        if labels.ndim != 1 or len(images) != len(labels):  # Keras saves (n, 1) labels
            raise ValueError(f"{path}: {split}_labels must be ({len(images)},), one per image, got shape "
                             f"{labels.shape}")
    return out


def balanced_subset(labels: np.ndarray, n, random_state=0, name: str = "n") -> np.ndarray:
    """Sorted indices of n items (all when n is None) with the classes as balanced as
    possible, drawn at random: files sorted by class must not give one class only.
    ValueError (naming the argument ``name``) when n exceeds the items or is fewer than
    the classes, which would leave a class out."""
    labels = np.asarray(labels)
    if n is None:
        return np.arange(len(labels))
    positive_int(n, name)
    n_classes = len(np.unique(labels))
    if not n_classes <= n <= len(labels):
        raise ValueError(f"{name}={n}: choose from {n_classes} (one item of each of the {n_classes} classes) "
                         f"to {len(labels)} (all of them)")
    if n == len(labels):
        return np.arange(len(labels))
    rng = as_generator(random_state)
    order = rng.permutation(len(labels))
    # Rank of each item within its class in the random order; take the lowest ranks first.
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        ranks[members] = np.arange(len(members))
    return np.sort(order[np.argsort(ranks[order], kind="stable")[:n]])


def cifar10_patch_bags(path, patch_size: int = 6, stride: int = 2, n_train=None, n_test=None, random_state=0,
                       at_most: bool = False):
    """CIFAR-10 images as bags of normalised, ZCA-whitened dense patches (whitening fitted
    on the training patches).

    n_train, n_test : use class-balanced random subsets of that many images (None: all);
        more than the file holds is a ValueError, unless ``at_most``: then a smaller file
        gives all of its images (figure2's sizes, which are at most sizes).

    Returns
    -------
    (train_bags, train_labels, test_bags, test_labels); bags are float32 with
    patch_size**2 * 3 dimensions (108 for 6x6 patches).
    """
    data = load_cifar10(path)
    bags, labels = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        if at_most and n is not None:
            n = min(positive_int(n, f"n_{split}"), len(data[f"{split}_labels"]))
        keep = balanced_subset(data[f"{split}_labels"], n, random_state, name=f"n_{split}")
        raw = extract_patches(data[f"{split}_images"][keep], patch_size, stride)
        bags[split] = Bags(normalize_patches(raw.features), raw.offsets)
        labels[split] = data[f"{split}_labels"][keep]
    zca = ZCAWhitening().fit(bags["train"].features)
    return (Bags(zca.transform(bags["train"].features), bags["train"].offsets), labels["train"],
            Bags(zca.transform(bags["test"].features), bags["test"].offsets), labels["test"])
