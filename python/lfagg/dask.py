"""Encoding and prediction of bags on Dask: one task per bag-aligned block, on any Dask
scheduler (threads, processes, or a ``distributed.Client``, local or remote).

The fitted model enters the task graph once, as one key (``dask.delayed(model)``), which
the scheduler sends to each worker that needs it once, not with every task; so does a
:class:`lfagg.BagStore`'s handle, and each task reads its block of the store itself (the
workers must reach the store's path or URL), or takes its chunk of a Dask array of
features. ``transform`` and ``predict`` are bitwise those of the model's own method in one
process with the default blocks; ``predict_proba`` and ``decision_function`` may differ by
an ulp there (the classifier's matrix product of one block's rows against all the bags'
at once: BLAS groups rows differently at a block's end). Other ``block_features`` or
chunks group a bag's features with other bags' in the core's tiles differently, which
changes the results by rounding: in float32 about 1e-7 of the encodings' scale, more in
a small entry of an improved Fisher Vector, whose signed square root magnifies it near 0
(FisherVector(4) of 32-D float32 features, block_features 1000: an entry of -0.00090
against -0.00095, where the largest is 0.21 and the float64 value -0.00091; float64 bags
differ by 3e-14).

    import lfagg, lfagg.dask
    store = lfagg.BagStore.open("videos.zarr")
    X = lfagg.dask.transform(model, store)          # a dask array (n_bags, width)
    X.to_zarr("encodings.zarr")                     # or .compute(), on the active scheduler

Install with ``pip install "lfagg[dask]"``; lfagg itself never imports dask.
"""
from __future__ import annotations

import contextlib

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError('lfagg.dask needs dask: pip install "lfagg[dask]"') from exc

from ._validation import as_offsets, check_finite_bags, check_offsets, positive_int
from .bags import Bags
from .store import BLOCK_MAPPER, BagStore

__all__ = ["transform", "predict", "predict_proba", "decision_function", "apply", "encode_on_dask", "map_blocks"]

METHODS = ("transform", "predict", "predict_proba", "decision_function")


def _run(model, method, bags):
    return getattr(model, method)(bags)


def _store_block(model, method, store, start, end):
    return _run(model, method, store._scratch_block(start, end))


def _array_block(model, method, features, offsets, first_bag):
    bags = Bags(features, offsets)
    check_finite_bags(bags, 1, first_bag)  # numbered as in the whole array; one thread: tasks run side by side
    return _run(model, method, bags)


def apply(model, bags, method="transform", *, offsets=None, block_features=None):
    """``model.<method>(bags)`` as a Dask array, one task per bag-aligned block.

    Parameters
    ----------
    model : a fitted lfagg estimator (or any object with that method taking Bags).
    bags : a BagStore, or a Dask array of features (N, D) whose row chunks start and end
        at bag boundaries, with ``offsets`` (n_bags + 1,) its bags' offsets.
    method : "transform", "predict", "predict_proba" or "decision_function".
    block_features : the most features per task for a BagStore (default: the store's
        ``block_features()``, 64 MiB of features); a larger bag makes a task of its own.

    Returns
    -------
    dask.array.Array of n_bags rows, its chunks one per block; nothing runs until it is
    computed (``.compute()``, ``.to_zarr()``, ``dask.compute``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(bags, (BagStore, da.Array)):
        raise ValueError(f"bags must be a lfagg.BagStore or a Dask array of features, got {type(bags).__name__}")
    shared = dask.delayed(model, pure=True)  # one key: each worker receives the model once
    if isinstance(bags, BagStore):
        if offsets is not None:  # the store holds its own: others would be ignored without a word
            raise ValueError("offsets must be None with a BagStore (it holds its own)")
        block_features = bags.block_features() if block_features is None else positive_int(block_features,
                                                                                             "block_features")
        bounds, dim = bags.block_bounds(block_features), bags.dim
        store = dask.delayed(bags, pure=True)  # as the model: the store's handle (its offsets) once
        parts = [dask.delayed(_store_block, pure=True)(shared, method, store, start, end) for start, end in bounds]
        sizes = [end - start for start, end in bounds]
    else:
        if offsets is None:
            raise ValueError("offsets must be given with a Dask array of features")
        offsets = as_offsets(offsets)
        if bags.ndim != 2:
            raise ValueError(f"features must be a 2-D Dask array (N, D), got shape {bags.shape}")
        if np.isnan(bags.shape[0]):
            raise ValueError("the features' chunk sizes are unknown (nan, as after boolean indexing): call "
                             "features.compute_chunk_sizes() first")
        check_offsets(offsets, bags.shape[0])
        edges = np.concatenate([[0], np.cumsum(bags.chunks[0])])
        firsts = np.searchsorted(offsets, edges)
        if not np.array_equal(offsets[np.minimum(firsts, offsets.size - 1)], edges):
            raise ValueError("the features' row chunks must start and end at bag boundaries (offsets); rechunk "
                             "them, e.g. features.rechunk({0: tuple(np.diff(offsets_of_blocks))})")
        bags, dim = bags.rechunk({1: -1}), bags.shape[1]
        parts, sizes = [], []
        blocks = bags.to_delayed().ravel()
        for i, block in enumerate(blocks):
            first, last = _bag_range(offsets, edges[i], edges[i + 1], i == len(blocks) - 1)
            parts.append(dask.delayed(_array_block, pure=True)(shared, method, block,
                                                               offsets[first:last + 1] - offsets[first], first))
            sizes.append(last - first)
    # The result's columns and dtype: the method applied to one empty bag.
    probe = _run(model, method, Bags(np.zeros((0, dim), bags.dtype), np.zeros(2, np.int64)))
    if not parts:  # no bags
        return da.from_array(probe[:0])
    return da.concatenate([da.from_delayed(part, shape=(n,) + probe.shape[1:], dtype=probe.dtype)
                           for part, n in zip(parts, sizes)])


def _bag_range(offsets, row_start, row_end, last_block):
    """(first bag, end bag) of the bags whose rows are [row_start, row_end); empty bags at
    a boundary go to the block that starts there, the trailing ones to the last block
    (only: blocks of no rows may end there too)."""
    first = int(np.searchsorted(offsets, row_start, side="left"))
    last = offsets.size - 1 if last_block else int(np.searchsorted(offsets, row_end, side="left"))
    return first, last


def transform(model, bags, **kwargs):
    """:func:`apply` with ``method="transform"``: (n_bags, width) encodings."""
    return apply(model, bags, "transform", **kwargs)


def predict(model, bags, **kwargs):
    """:func:`apply` with ``method="predict"``: (n_bags,) labels."""
    return apply(model, bags, "predict", **kwargs)


def predict_proba(model, bags, **kwargs):
    """:func:`apply` with ``method="predict_proba"``: (n_bags, n_classes) probabilities."""
    return apply(model, bags, "predict_proba", **kwargs)


def decision_function(model, bags, **kwargs):
    """:func:`apply` with ``method="decision_function"``: (n_bags,) scores for two classes,
    (n_bags, n_classes) otherwise, as the model's own."""
    return apply(model, bags, "decision_function", **kwargs)


@contextlib.contextmanager
def encode_on_dask():
    """Within this context, every encoding of a whole :class:`lfagg.BagStore` by lfagg's
    estimators runs as Dask tasks on the current scheduler (a ``distributed.Client``
    when one is active), one per block of the store: the passes of ``fit`` that encode
    the collection (W0, the choice of l2, the final classifier fit, early stopping's
    validation) as well as ``transform`` and ``predict``. The SGD steps, which read a few
    samples of a few bags each, stay in this process, and so do the encodings of
    LearnedBoWCV / LearnedVLADCV with ``n_jobs`` other than 1 (their folds run in joblib's
    processes, which this context does not reach: they warn). Results equal those in
    process::

        with distributed.Client(address), lfagg.dask.encode_on_dask():
            model = lfagg.LearnedBoW(256).fit(store, store.labels)
    """
    token = BLOCK_MAPPER.set(map_blocks)
    try:
        yield
    finally:
        BLOCK_MAPPER.reset(token)


def _block_of(fn, store, start, end):
    return fn(store._scratch_block(start, end))


def map_blocks(fn, bags, bounds=None):
    """[fn(bags[start:end]) for (start, end) in bounds] (default: the store's blocks of
    ``block_features()``), computed now as Dask tasks on the current scheduler, the function
    (e.g. an estimator's method in its current state) and the store's handle one key each.
    Each block's features are read only (``BagStore.blocks`` with ``scratch``): ``fn``
    returns what it computes from them and keeps nothing of them."""
    bounds = bags.block_bounds(bags.block_features()) if bounds is None else bounds
    shared, store = dask.delayed(fn, pure=False), dask.delayed(bags, pure=True)
    return dask.compute(*[dask.delayed(_block_of, pure=True)(shared, store, start, end) for start, end in bounds])
