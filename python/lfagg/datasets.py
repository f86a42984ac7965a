"""Datasets of bags of local features."""
from __future__ import annotations

import csv
import os

import numpy as np

from ._bags import Bags, as_bags


def _two_class_bags(sample_a, sample_b, n_bags, n_per_bag, purity, random_state):
    """Bags whose features come from population a with probability `purity` for class 0
    and 1 - purity for class 1 (the rest from population b); classes alternate."""
    if not 0.5 < purity <= 1:
        raise ValueError(f"purity must be in (0.5, 1], got {purity!r}")
    if n_bags < 2 or n_per_bag < 1:
        raise ValueError(f"need n_bags >= 2 and n_per_bag >= 1, got {n_bags} and {n_per_bag}")
    rng = np.random.default_rng(random_state)
    y = np.arange(n_bags) % 2
    p_a = np.where(y == 0, purity, 1 - purity)
    from_a = rng.random((n_bags, n_per_bag)) < p_a[:, None]
    n_a = int(from_a.sum())
    features = np.empty((n_bags * n_per_bag, 2))
    flat = from_a.ravel()
    features[flat] = sample_a(rng, n_a)
    features[~flat] = sample_b(rng, flat.size - n_a)
    return Bags(features, np.arange(n_bags + 1) * n_per_bag), y


def make_circles_bags(n_bags: int = 200, n_per_bag: int = 50, purity: float = 0.8, noise: float = 0.1,
                      random_state=None):
    """Two-class bags of 2-D points on two concentric circles (Fig. 1a of the paper).

    Class 0 bags draw each point from the inner circle (radius 0.5) with probability
    ``purity`` and from the outer circle (radius 1) otherwise; class 1 bags the reverse.
    Gaussian noise of std ``noise`` is added to each point.

    Returns
    -------
    (Bags of float64 features (n_bags * n_per_bag, 2), labels (n_bags,) int64 in {0, 1})
    """
    def circle(radius):
        def sample(rng, n):
            angle = rng.uniform(0, 2 * np.pi, n)
            return radius * np.c_[np.cos(angle), np.sin(angle)] + rng.normal(scale=noise, size=(n, 2))
        return sample

    return _two_class_bags(circle(0.5), circle(1.0), n_bags, n_per_bag, purity, random_state)


def make_moons_bags(n_bags: int = 200, n_per_bag: int = 50, purity: float = 0.8, noise: float = 0.1,
                    random_state=None):
    """Two-class bags of 2-D points on two interleaved half circles ("moons").

    Like :func:`make_circles_bags`, with the upper moon as class 0's main population.
    """
    def moon(upper):
        def sample(rng, n):
            t = rng.uniform(0, np.pi, n)
            pts = np.c_[np.cos(t), np.sin(t)] if upper else np.c_[1 - np.cos(t), 0.5 - np.sin(t)]
            return pts + rng.normal(scale=noise, size=(n, 2))
        return sample

    return _two_class_bags(moon(True), moon(False), n_bags, n_per_bag, purity, random_state)


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
    if not (1 <= patch_size <= min(images.shape[1:3]) and stride >= 1):
        raise ValueError(f"need 1 <= patch_size <= image side and stride >= 1, got {patch_size}, {stride}")
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
        self.eps = eps

    def fit(self, features: np.ndarray, max_samples: int = 200_000, random_state=0) -> "ZCAWhitening":
        """Estimate the mean and whitening matrix from at most max_samples rows of (n, d)."""
        features = np.asarray(features)
        rng = np.random.default_rng(random_state)
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
    out = _read_npz(path, ("train_images", "train_labels", "test_images", "test_labels"), ("class_names",))
    if "class_names" in out:
        out["class_names"] = [str(c) for c in out["class_names"]]
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"{path}: {split}_images {images.shape} and {split}_labels {labels.shape} do not match")
    return out


def balanced_subset(labels: np.ndarray, n, random_state=0) -> np.ndarray:
    """Sorted indices of n items (all when n is None) with the classes as balanced as
    possible, drawn at random: files sorted by class must not give one class only."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(labels))
    # Rank of each item within its class in the random order; take the lowest ranks first.
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        ranks[members] = np.arange(len(members))
    return np.sort(order[np.argsort(ranks[order], kind="stable")[:n]])


def cifar10_patch_bags(path, patch_size: int = 6, stride: int = 2, n_train=None, n_test=None, random_state=0):
    """CIFAR-10 images as bags of normalised, ZCA-whitened dense patches (whitening fitted
    on the training patches).

    n_train, n_test : use class-balanced random subsets of that many images (None: all).

    Returns
    -------
    (train_bags, train_labels, test_bags, test_labels); bags are float32 with
    patch_size**2 * 3 dimensions (108 for 6x6 patches).
    """
    data = load_cifar10(path)
    bags, labels = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        keep = balanced_subset(data[f"{split}_labels"], n, random_state)
        raw = extract_patches(data[f"{split}_images"][keep], patch_size, stride)
        bags[split] = Bags(normalize_patches(raw.features), raw.offsets)
        labels[split] = data[f"{split}_labels"][keep]
    zca = ZCAWhitening().fit(bags["train"].features)
    return (Bags(zca.transform(bags["train"].features), bags["train"].offsets), labels["train"],
            Bags(zca.transform(bags["test"].features), bags["test"].offsets), labels["test"])


# ---------------------------------------------------------------------------------------
# Users' own features
# ---------------------------------------------------------------------------------------
#: A first row whose label field is one of these (any case) is a header.
_LABEL_HEADERS = ("label", "labels", "class", "target", "y")


def _read_npz(path, required, optional=()) -> dict:
    """The arrays ``required`` (all must be present) and those of ``optional`` that are
    present in the .npz file at path; ValueError naming the path for anything unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with data:
            out = {k: data[k] for k in (*required, *optional) if k in data.files}
    except Exception as exc:  # a damaged file fails in zipfile, zlib or the .npy header parser alike
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; expected {list(required)}")
    return out


def _check_finite(bags: Bags, path, names=None) -> Bags:
    """bags, or ValueError naming path and the first bag holding NaN or infinity."""
    if not np.isfinite(bags.features).all():
        row = np.flatnonzero(~np.isfinite(bags.features).all(axis=1))[0]
        b = int(np.searchsorted(bags.offsets, row, side="right")) - 1
        raise ValueError(f"{path}: bag {b}{f' ({names[b]})' if names else ''} contains NaN or infinity")
    return bags


def load_npy_dir(path):
    """Bags from a directory of .npy files, one bag per file.

    Parameters
    ----------
    path : str or os.PathLike, a directory holding one ``<name>.npy`` file per bag: a
        2-D (n_i, D) array of real numbers (any integer or float dtype), the same D in
        every file; n_i may be 0. Files are memory-mapped and taken in the order of their
        sorted names (zero-pad numbers: "bag10" sorts before "bag2"); other files are
        ignored.

    Returns
    -------
    bags : Bags holding every file's rows, concatenated: (sum n_i, D) float32 features
        when every file is float32, float64 otherwise.
    names : list of str, the file names without ".npy", in bag order (see :func:`load_labels`).

    Raises
    ------
    ValueError naming the path: no such directory, no .npy file, an unreadable file, a
    file that is not a 2-D real array, differing D, NaN or infinity.
    """
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such directory (expected a directory of .npy files, one per bag)")
    files = sorted(f for f in os.listdir(path) if f.endswith(".npy") and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise ValueError(f"{path}: no .npy files in this directory")
    arrays = []
    for name in files:
        file = os.path.join(path, name)
        try:
            a = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"{file}: not a readable .npy file ({exc})") from None
        if a.ndim != 2 or a.shape[1] == 0 or a.dtype.kind not in "biuf":
            raise ValueError(f"{file}: expected a 2-D (n_features, dim) array of real numbers, got shape "
                             f"{a.shape} and dtype {a.dtype}")
        if arrays and a.shape[1] != arrays[0].shape[1]:
            raise ValueError(f"{file}: local features of dimension {a.shape[1]}, but {files[0]} has "
                             f"{arrays[0].shape[1]}")
        arrays.append(a)
    names = [f[:-len(".npy")] for f in files]
    return _check_finite(Bags.from_arrays(arrays), path, names), names


def load_npz_bags(path):
    """Bags (and labels) from one .npz file, as written by :func:`save_npz_bags`.

    Parameters
    ----------
    path : str or os.PathLike, an .npz file with "features" (N, D) real numbers,
        "offsets" (n_bags + 1,) integers (bag b is ``features[offsets[b]:offsets[b + 1]]``,
        see :class:`lfagg.Bags`) and optionally "labels" (n_bags,) numbers or strings.

    Returns
    -------
    bags : Bags, float32 features when stored as float32, float64 otherwise.
    labels : (n_bags,) array as stored, or None.

    Raises
    ------
    ValueError naming the path for a missing or unreadable file, missing arrays, bad
    shapes or offsets, NaN or infinity.
    """
    data = _read_npz(path, ("features", "offsets"), ("labels",))
    try:
        bags = Bags(data["features"], data["offsets"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    labels = data.get("labels")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(bags)):
        raise ValueError(f"{path}: labels must hold one entry per bag, got shape {labels.shape} for {len(bags)} bags")
    return _check_finite(bags, path), labels


def save_npz_bags(path, bags, labels=None) -> None:
    """Write bags (and labels) to an .npz file that :func:`load_npz_bags` reads.

    Parameters
    ----------
    path : str or os.PathLike; numpy appends ".npz" when it lacks that suffix.
    bags : Bags or list of (N_i, D) arrays; stored as "features" (N, D) in their dtype
        (float32 or float64) and "offsets" (n_bags + 1,) int64.
    labels : None or (n_bags,) numbers or strings, stored as "labels".
    """
    bags = as_bags(bags)
    arrays = {"features": bags.features, "offsets": bags.offsets}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(bags) or labels.dtype.kind not in "biufU":
            raise ValueError(f"labels must be one number or string per bag: got shape {labels.shape} and "
                             f"dtype {labels.dtype} for {len(bags)} bags")
        arrays["labels"] = labels
    np.savez(path, **arrays)


def load_labels(path, names=None) -> np.ndarray:
    """Class labels of bags from a text file.

    Parameters
    ----------
    path : str or os.PathLike, a ``.txt`` file with one label per line, or a ``.csv`` file
        with one column (one label per row) or two columns ``name,label``. A first row
        whose label field is "label", "labels", "class", "target" or "y" (any case) is a
        header; blank lines at the end are ignored.
    names : list of str or None, the bag names given by :func:`load_npy_dir`. Two-column
        files need them: each bag takes the label of its name's row (a ".npy" suffix on
        the name is allowed; rows of other names are ignored). A one-column file must
        then hold exactly ``len(names)`` labels, in bag order.

    Returns
    -------
    (n_bags,) int64 array when every label is an integer, else an array of str.

    Raises
    ------
    ValueError naming the path: missing or unreadable file, other suffix, no labels,
    an empty field, a wrong number of columns or labels, a bag without a label or
    listed twice.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".txt", ".csv"):
        raise ValueError(f"{path}: labels must be a .txt or .csv file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh)) if suffix == ".csv" else [[line] for line in fh]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read labels ({exc})") from None
    rows = [[field.strip() for field in row] for row in rows]
    while rows and not any(rows[-1]):
        rows.pop()
    start = 1 if rows and rows[0] and rows[0][-1].lower() in _LABEL_HEADERS else 0
    if len(rows) == start:
        raise ValueError(f"{path}: no labels in this file")
    width = len(rows[start])
    for i in range(start, len(rows)):
        if len(rows[i]) != width or not all(rows[i]):
            raise ValueError(f"{path}: line {i + 1} has {rows[i]!r}, expected {width} non-empty field(s) like line "
                             f"{start + 1}")
    rows = rows[start:]
    if width == 1:
        labels = [label for label, in rows]
        if names is not None and len(labels) != len(names):
            raise ValueError(f"{path}: {len(labels)} labels for {len(names)} bags")
    elif width == 2:
        if names is None:
            raise ValueError(f"{path}: two columns (name,label) need bag names, which only a directory of .npy "
                             f"files has; give one label per line instead")
        by_name = {}
        for name, label in rows:
            name = name[:-len(".npy")] if name.endswith(".npy") else name
            if name in by_name:
                raise ValueError(f"{path}: bag {name!r} is listed twice")
            by_name[name] = label
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{path}: no label for {len(missing)} bag(s): {', '.join(missing[:5])}"
                             + (", ..." if len(missing) > 5 else ""))
        labels = [by_name[n] for n in names]
    else:
        raise ValueError(f"{path}: expected one column (label) or two (name,label), got {width}")
    try:
        return np.array([int(label) for label in labels], dtype=np.int64)
    except (ValueError, OverflowError):
        return np.array(labels)


def load_bags(path, labels=None):
    """Bags, and their labels, from users' files (what the ``lfagg`` command line reads).

    Parameters
    ----------
    path : str or os.PathLike, a directory of .npy files (:func:`load_npy_dir`) or an
        .npz file (:func:`load_npz_bags`).
    labels : None or the path of a .txt/.csv labels file (:func:`load_labels`, matched
        by name for a directory); it takes precedence over labels stored in the .npz.

    Returns
    -------
    bags : Bags.
    labels : (n_bags,) array, or None when there is no labels file and the .npz has none.
    """
    names = stored = None
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        bags, names = load_npy_dir(path)
    elif os.fspath(path).lower().endswith(".npz"):
        bags, stored = load_npz_bags(path)
    else:
        raise ValueError(f"{path}: expected a directory of .npy files (one per bag) or an .npz file")
    if labels is None:
        return bags, stored
    y = load_labels(labels, names)
    if len(y) != len(bags):
        raise ValueError(f"{labels}: {len(y)} labels for the {len(bags)} bags of {path}")
    return bags, y
