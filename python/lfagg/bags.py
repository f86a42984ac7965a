"""Ragged bags of local features: one feature matrix plus CSR-style offsets."""
from __future__ import annotations

import numpy as np

from ._validation import as_generator, as_offsets, check_offsets, float_array, positive_int

__all__ = ["Bags"]


class Bags:
    """A sequence of bags of D-dimensional local features, stored without padding.

    Parameters
    ----------
    features : (N, D) array-like; float32 stays float32, any other real dtype becomes
        float64. Stored C-contiguous (copied only when needed).
    offsets : (n_bags + 1,) integer array-like: bag b is ``features[offsets[b]:offsets[b + 1]]``;
        offsets[0] == 0, non-decreasing, offsets[-1] == N. Stored as int64.

    Indexing with an int gives bag i's (N_i, D) feature array (a view); with a slice,
    an integer array or a boolean mask it gives a new Bags. Empty bags are allowed.
    """

    def __init__(self, features, offsets):
        features = float_array(features, "features")
        offsets = as_offsets(offsets)
        if features.ndim != 2:
            raise ValueError(f"features must be a 2-D array (n_features, dim), got shape {features.shape}")
        check_offsets(offsets, features.shape[0])
        self._features = features
        self._offsets = offsets.copy()  # the caller's array (8 bytes a bag), reused, would move the bags unchecked

    @classmethod
    def _trusted(cls, features: np.ndarray, offsets: np.ndarray) -> "Bags":
        """Bags of arrays already in Bags' form (C-contiguous float, int64 offsets that
        delimit them), unchecked: the parts a validated Bags is cut into."""
        bags = cls.__new__(cls)
        bags._features, bags._offsets = features, offsets
        return bags

    @classmethod
    def from_arrays(cls, arrays) -> "Bags":
        """Bags from a sequence of (N_i, D) arrays with the same D (N_i may be 0).

        The dtype is float32 when every array is float32, float64 otherwise.
        """
        if isinstance(arrays, np.ndarray) and arrays.ndim == 2:  # its rows would pass for 1-D bags
            raise ValueError(f"bags must be a Bags or a sequence of (N_i, D) arrays, got one {arrays.shape} array: "
                             "[array] for one bag, or lfagg.Bags(features, offsets) for several")
        try:
            arrays = [np.asarray(a) for a in arrays]
        except TypeError:
            raise ValueError(f"bags must be a Bags or a sequence of (N_i, D) arrays, got {type(arrays).__name__}") \
                from None
        if not arrays:
            raise ValueError("arrays must hold at least one bag")
        for i, a in enumerate(arrays):
            if a.dtype.kind not in "biuf":  # complex would lose its imaginary part, strings parse as numbers
                raise ValueError(f"arrays[{i}] must hold real numbers, got dtype {a.dtype}")
            if a.ndim != 2:
                raise ValueError(f"arrays[{i}] must be a 2-D array (n_features, dim), got shape {a.shape}")
            if a.shape[1] != arrays[0].shape[1]:
                raise ValueError(
                    f"every array must have dim = {arrays[0].shape[1]} columns, arrays[{i}] has shape {a.shape}")
        dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
        return cls(np.concatenate(arrays).astype(dtype, copy=False), offsets)

    @property
    def features(self) -> np.ndarray:
        """(n_features, dim) float32 or float64, C-contiguous: all bags concatenated."""
        return self._features

    @property
    def offsets(self) -> np.ndarray:
        """(n_bags + 1,) int64: bag b is ``features[offsets[b]:offsets[b + 1]]``."""
        return self._offsets

    @property
    def dtype(self) -> np.dtype:
        """The features' dtype, float32 or float64."""
        return self._features.dtype

    @property
    def dim(self) -> int:
        """D, the dimension of a local feature."""
        return self._features.shape[1]

    @property
    def n_features(self) -> int:
        """Total number of local features over all bags."""
        return self._features.shape[0]

    @property
    def sizes(self) -> np.ndarray:
        """(n_bags,) int64, the number of local features of each bag."""
        return np.diff(self._offsets)

    def __len__(self) -> int:
        return self._offsets.size - 1

    def __iter__(self):
        for b in range(len(self)):
            yield self._features[self._offsets[b]:self._offsets[b + 1]]

    def __getitem__(self, index):
        if (b := scalar_index(index)) is not None:
            if not -len(self) <= b < len(self):
                raise IndexError(f"bag index {index} out of range for {len(self)} bags")
            b %= len(self)
            return self._features[self._offsets[b]:self._offsets[b + 1]]
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(len(self))
            stop = max(start, stop)
            lo, hi = self._offsets[start], self._offsets[stop]
            return Bags._trusted(self._features[lo:hi], self._offsets[start:stop + 1] - lo)
        return self._take(pick_bags(len(self), index))  # slices with steps, integer arrays, boolean masks

    def subset(self, indices) -> "Bags":
        """``self[indices]`` as a Bags (the counterpart of :meth:`lfagg.BagStore.subset`,
        which reads nothing until its bags are read)."""
        return self._take(pick_bags(len(self), indices))

    def _take(self, bag_ids: np.ndarray) -> "Bags":
        """The bags bag_ids, in that order, as a new Bags (features gathered without a Python loop)."""
        rows, offsets = gather_rows(self._offsets[bag_ids], self.sizes[bag_ids])
        return Bags._trusted(self._features[rows], offsets)

    def subsample(self, n_per_bag: int, random_state=None) -> "Bags":
        """Each bag reduced to ``min(n_per_bag, N_b)`` of its features (eq. 5 of the paper).

        Features are drawn without replacement and kept in their original order; bags
        that are not larger than ``n_per_bag`` are kept whole (and ``self`` is returned
        when no bag is larger).

        Parameters
        ----------
        n_per_bag : positive int.
        random_state : None, int, numpy.random.Generator or numpy.random.RandomState.
        """
        if not np.any(self.sizes > positive_int(n_per_bag, "n_per_bag")):
            return self
        return self.read_subsampled(slice(None), n_per_bag, random_state)

    def read_subsampled(self, indices, n_per_bag: int, random_state=None) -> "Bags":
        """``self[indices].subsample(n_per_bag, random_state)``, gathering only the sampled
        rows: what one SGD step of the learned encoders reads (as
        :meth:`lfagg.BagStore.read_subsampled`). Each bag larger than ``n_per_bag`` draws
        its rows in the order of ``indices``, sorted: ``random_state.choice(N_b, n_per_bag,
        replace=False)``."""
        n_per_bag = positive_int(n_per_bag, "n_per_bag")
        rng = as_generator(random_state)
        chosen = pick_bags(len(self), indices)
        starts, sizes = self._offsets[chosen], self.sizes[chosen]
        n_per_bag = min(n_per_bag, int(sizes.max(initial=0)))  # beyond int64 (2**70, say): every bag whole
        rows, offsets = gather_rows(starts, np.minimum(sizes, n_per_bag))
        for i in np.flatnonzero(sizes > n_per_bag):
            picked = rng.choice(sizes[i], size=n_per_bag, replace=False)
            picked.sort()
            rows[offsets[i]:offsets[i + 1]] = picked + starts[i]
        return Bags._trusted(self._features[rows], offsets)

    def __repr__(self) -> str:
        return f"Bags(n_bags={len(self)}, n_features={self.n_features}, dim={self.dim}, dtype={self.dtype})"


def scalar_index(index) -> int | None:
    """``index`` as an int when it names one bag as NumPy reads a scalar index (an int, a
    NumPy integer or a 0-d integer array; not a bool), else None."""
    if isinstance(index, np.ndarray) and index.ndim == 0 and index.dtype.kind in "iu":
        return int(index)
    return int(index) if isinstance(index, (int, np.integer)) and not isinstance(index, bool) else None


def pick_bags(n_bags: int, index) -> np.ndarray:
    """The (m,) int ids of the bags among ``n_bags`` that ``index`` picks: a slice, an
    integer array (negative ids count from the end) or a boolean mask; IndexError for
    anything else (numpy would read True or None as a new axis)."""
    if index is None or isinstance(index, (bool, np.bool_)):
        raise IndexError(f"bags are picked by an integer, a slice, an integer array or a boolean mask, got {index!r}")
    ids = np.atleast_1d(np.arange(n_bags)[index])
    if ids.ndim != 1:
        raise IndexError(f"bags are picked by a 1-D index, got one of shape {np.shape(index)}")
    return ids


def gather_rows(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, offsets) of bags that start at rows ``starts`` and hold ``sizes`` features:
    the feature rows of those bags in order (no Python loop) and their new int64 offsets."""
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1]), offsets


def as_bags(bags) -> Bags:
    """``bags`` if it already is a Bags, else Bags.from_arrays(bags)."""
    return bags if isinstance(bags, Bags) else Bags.from_arrays(bags)
