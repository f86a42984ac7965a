"""Encodings written to disk as they are computed, so that an interrupted encode of a large
collection resumes where it stopped (what ``lfagg encode --out X.zarr`` does).

The output is a Zarr v3 group: ``encodings`` (n_bags, width), ``done`` (one flag per block
of bags, each its own chunk) and, in the attributes, what was encoded (the model file's
SHA-256, the bags' path and their store's uid, their number, the block size) and, once
every block is written, ``lfagg_complete: true``. Each block's rows are written,
then its flag: a rerun with the same model and bags skips the flagged blocks, and one
with another model or other bags is refused instead of mixing them. Rows not written yet
read as NaN: zeros, what an empty bag encodes to, passed for results when an interrupted
output was read with zarr or Dask.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ._progress import bags_count, progress_bar
from .store import BagStore, _zarr

__all__ = ["encode_to_zarr"]

#: Blocks computed at once with a Dask scheduler: enough to keep its workers busy.
BLOCKS_PER_WAVE = 8


def file_digest(path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for part in iter(lambda: fh.read(1 << 20), b""):
            digest.update(part)
    return digest.hexdigest()


def encode_to_zarr(model, bags: BagStore, out, *, model_id: str, bags_id: str, use_dask=False, verbose=1):
    """Writes ``model.transform`` of every bag of ``bags`` to the Zarr group ``out``,
    block by block, resuming a previous run of the same encode.

    Parameters
    ----------
    model : a fitted lfagg estimator; bags : a BagStore; out : the output path.
    model_id, bags_id : strings naming the model and the bags (e.g. the model file's
        digest and the bags' path): a rerun must give the same ones.
    use_dask : compute the blocks with lfagg.dask on Dask's current scheduler (a
        ``distributed.Client`` when one is active), BLOCKS_PER_WAVE at a time.

    Returns
    -------
    (n_bags, width, blocks computed now, blocks in all).
    """
    zarr = _zarr()
    bounds = bags.block_bounds(bags.block_features())
    probe = model.transform(bags[:0] if len(bags) == 0 else bags[0:1])
    identity = dict(model=model_id, bags=bags_id, store=bags.uid, n_bags=len(bags), width=int(probe.shape[1]),
                    blocks=[list(map(int, b)) for b in bounds])
    if os.path.exists(out):
        try:
            group = zarr.open_group(out, mode="r+", zarr_format=3)
            previous = group.attrs.get("lfagg_encoding")
        except Exception:
            previous = None
        if previous != identity:
            raise ValueError(f"{out}: exists and does not hold an unfinished encode of this model and these bags: "
                             "remove it or choose another --out")
    else:  # the identity first: a run interrupted before its arrays exist is resumed, not refused
        group = zarr.open_group(out, mode="w-", zarr_format=3, attributes={"lfagg_encoding": identity})
    new_rows = "encodings" not in group
    if new_rows:
        rows = max((end - start for start, end in bounds), default=1)
        group.create_array("encodings", shape=(len(bags), identity["width"]), dtype=probe.dtype,
                           chunks=(rows, identity["width"]), fill_value=np.nan)
    if new_rows or "done" not in group:  # flags anew with new rows: none may claim rows that no longer exist
        group.create_array("done", shape=(len(bounds),), chunks=(1,), dtype=bool, fill_value=False, overwrite=True)
    encodings, done = group["encodings"], group["done"]
    todo = [i for i, flag in enumerate(np.asarray(done[:])) if not flag]
    with progress_bar(f"lfagg encode: {bags_count(len(bags))} into {out}", len(bounds), verbose) as bar:
        bar.update(len(bounds) - len(todo))
        step = BLOCKS_PER_WAVE if use_dask else 1
        for wave_start in range(0, len(todo), step):
            wave = todo[wave_start:wave_start + step]
            for i, values in zip(wave, _compute(model, bags, [bounds[i] for i in wave], use_dask)):
                start, end = bounds[i]
                encodings[start:end] = values
                done[i] = True  # after the rows: a flagged block is complete
                bar.update(1)
    group.attrs["lfagg_complete"] = True
    return len(bags), identity["width"], len(todo), len(bounds)


def _compute(model, bags, bounds, use_dask):
    if not use_dask:
        return [model.transform(bags._scratch_block(start, end)) for start, end in bounds]
    from .dask import map_blocks

    return map_blocks(model.transform, bags, bounds)
